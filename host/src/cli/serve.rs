//! `ferry serve`: serve every version in the store over HTTP, and keep converging on the store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::HostConfig;
use crate::engine::EngineSettings;
use crate::registry::sync::SyncOptions;
use crate::registry::{Registry, Store};
use crate::runtime::ModelRuntime;
use crate::server::{ServeOptions, Token};
use crate::storage::BlobCache;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The store: a directory (created if missing), or `s3://BUCKET/PREFIX` on any S3-compatible
    /// store (endpoint and credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_REGION; AWS_ALLOW_HTTP=true for a plain-http endpoint).
    #[arg(long, default_value = "ferry-store", env = "FERRY_STORE")]
    store: String,
    #[command(flatten)]
    cache: HostCacheArgs,
    /// Host configuration (TOML): host-wide caps, sync, cache bound and per-model limits.
    #[arg(long)]
    config: Option<PathBuf>,
    /// This host's id in the fleet's status (default: hostname and port).
    #[arg(long, env = "FERRY_HOST_ID")]
    host_id: Option<String>,
    /// Bearer token required on management routes (uploads, aliases, deletes, listings).
    #[arg(long, env = "FERRY_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Bearer token required on inference routes.
    #[arg(long, env = "FERRY_INFERENCE_TOKEN", hide_env_values = true)]
    inference_token: Option<String>,
}

/// The host-local cache directory.
#[derive(Debug, Clone, clap::Args)]
pub struct HostCacheArgs {
    /// Host-local cache: downloaded blobs, compiled components, uploads in progress, the last synced
    /// state (default: $FERRY_CACHE_DIR, else ~/.cache/ferry).
    #[arg(long, env = "FERRY_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

impl HostCacheArgs {
    /// The cache directory to use.
    pub fn dir(&self) -> anyhow::Result<PathBuf> {
        self.cache_dir
            .clone()
            .or_else(crate::engine::default_cache_dir)
            .ok_or_else(|| {
                anyhow::anyhow!("no cache directory: pass --cache-dir or set FERRY_CACHE_DIR")
            })
    }
}

/// This machine's name, for a default host id.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into())
}

pub fn run(args: ServeArgs) -> anyhow::Result<i32> {
    let config = match &args.config {
        Some(path) => HostConfig::load(path)?,
        None => HostConfig::default(),
    };
    let cache_dir = args.cache.dir()?;
    let host = args
        .host_id
        .clone()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("{}-{}", hostname(), args.listen.port()));
    crate::registry::check_name("host id", &host)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ferry-http")
        .build()?;
    runtime.block_on(async move {
        let storage = crate::storage::open(&args.store)?;
        let blobs = BlobCache::open(storage, &cache_dir, config.cache.max_bytes)?;
        let models = ModelRuntime::new(
            EngineSettings {
                max_memory_bytes: config.host.max_memory_mib << 20,
                total_instances: config.host.total_instances,
                fuel: config.host.fuel,
                cache_dir: Some(blobs.compiled_dir()),
                ..Default::default()
            },
            config.host.snapshots,
        )?;
        let options = ServeOptions {
            max_body_bytes: config.host.max_body_bytes,
            admin_token: args
                .admin_token
                .as_deref()
                .filter(|t| !t.is_empty())
                .map(Token::new),
            inference_token: args
                .inference_token
                .as_deref()
                .filter(|t| !t.is_empty())
                .map(Token::new),
        };
        let sync = SyncOptions {
            interval: Duration::from_millis(config.store.sync_interval_ms.max(10)),
            heartbeat: Duration::from_millis(config.store.heartbeat_interval_ms.max(100)),
            host,
            address: args.listen.to_string(),
            gc_interval: (config.store.gc_interval_s > 0)
                .then(|| Duration::from_secs(config.store.gc_interval_s)),
            gc_grace: Duration::from_secs(config.store.gc_grace_s),
            reconcile_interval: Duration::from_secs(config.store.reconcile_interval_s.max(1)),
        };
        let registry = Registry::new(Store::new(blobs), models, config);
        crate::server::serve(registry, args.listen, options, sync).await
    })?;
    Ok(0)
}
