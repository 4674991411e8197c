//! `ferry serve`: serve every version in the store over HTTP, and keep converging on the store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{HostConfig, PredictionSink};
use crate::engine::EngineSettings;
use crate::registry::audit::AuditLog;
use crate::registry::sync::SyncOptions;
use crate::registry::{Registry, Store};
use crate::runtime::ModelRuntime;
use crate::server::{ServeOptions, Token};
use crate::serving::{
    LogOptions, LogSink, PredictionLog, Serving, ServingPolicy, ShadowOptions, Shadows,
};
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
    /// Bearer token of an admin on every model (audit records name it `admin`). With neither this
    /// nor --tokens, management routes are open.
    #[arg(long, env = "FERRY_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Teams' credentials (TOML): each a name, the sha256 of its bearer token, model-name patterns
    /// and roles (read, deploy, promote, admin); read again every 2 s while serving (see docs/teams.md).
    #[arg(long, env = "FERRY_TOKENS_FILE", value_name = "FILE")]
    tokens: Option<PathBuf>,
    /// Bearer token required on inference routes.
    #[arg(long, env = "FERRY_INFERENCE_TOKEN", hide_env_values = true)]
    inference_token: Option<String>,
    /// Bearer token that may read /metrics and nothing else (a scraper's; audit records name it
    /// `metrics`). With any token configured, /metrics needs one: this, a team's or the inference
    /// token.
    #[arg(long, env = "FERRY_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
}

/// The warning due when management is open (no admin token, no tokens file) while the host
/// listens beyond this machine.
fn open_management_warning(management_open: bool, listen: &SocketAddr) -> Option<String> {
    (management_open && !listen.ip().is_loopback()).then(|| {
        format!(
            "management is open: anyone who can reach {listen} may upload, promote and delete models; pass --admin-token or --tokens (see docs/teams.md)"
        )
    })
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

/// The prediction log's sink and limits: files beside a local store, objects in an object store,
/// unless the config says otherwise.
fn prediction_log(
    config: &HostConfig,
    store: &str,
    storage: std::sync::Arc<dyn crate::storage::Storage>,
    host: &str,
) -> LogOptions {
    let p = &config.predictions;
    let remote = store.contains("://");
    let sink = match p.sink.unwrap_or(if remote {
        PredictionSink::Store
    } else {
        PredictionSink::Files
    }) {
        PredictionSink::Files => {
            Some(LogSink::Files(p.dir.clone().unwrap_or_else(|| {
                std::path::Path::new(store).join("predictions")
            })))
        }
        PredictionSink::Store => Some(LogSink::Store(storage)),
        PredictionSink::Off => None,
    };
    LogOptions {
        queue: p.queue.max(1),
        max_queued_bytes: p.max_queued_bytes,
        batch_records: p.batch_records.max(1),
        flush_interval: Duration::from_millis(p.flush_interval_ms.max(1)),
        max_file_bytes: p.max_file_bytes.max(1),
        max_files: p.max_files.max(1),
        sync_interval: Duration::from_millis(p.sync_interval_ms),
        ..LogOptions::new(sink, host)
    }
}

fn shadow_options(config: &HostConfig) -> ShadowOptions {
    let defaults = ShadowOptions::default();
    let workers = config.shadow.workers.unwrap_or(defaults.workers).max(1);
    ShadowOptions {
        workers,
        queue: config.shadow.queue.unwrap_or(2 * workers),
        nice: config.shadow.nice.unwrap_or(defaults.nice).clamp(0, 19),
    }
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
    // Before anything starts: a host must not serve management with credentials other than the
    // ones its operator wrote.
    let teams = std::sync::Arc::new(crate::teams::Teams::load_with(
        args.admin_token.as_deref(),
        args.metrics_token.as_deref(),
        args.tokens.as_deref(),
    )?);
    if let Some(warning) = open_management_warning(!teams.required(), &args.listen) {
        tracing::warn!("{warning}");
    }
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
                deterministic: config.host.deterministic,
                cache_dir: Some(blobs.compiled_dir()),
                ..Default::default()
            },
            config.host.snapshots,
        )?;
        // Reloads the tokens file for as long as the server runs.
        let _watcher = teams.watch(crate::teams::RELOAD_INTERVAL);
        let options = ServeOptions {
            max_body_bytes: config.host.max_body_bytes,
            http: config.http.clone(),
            request_bytes_in_flight: config.request_bytes_in_flight(),
            audit: AuditLog::new(blobs.storage().clone(), &host),
            teams,
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
            audit: Some(options.audit.clone()),
        };
        let log = prediction_log(&config, &args.store, blobs.storage().clone(), &sync.host);
        let shadows = Shadows::start(shadow_options(&config));
        let policy = ServingPolicy::from_config(&config, crate::server::status::of);
        let registry = Registry::new(Store::new(blobs), models, config);
        let serving = Serving::new(registry, shadows, PredictionLog::start(log), policy);
        crate::server::serve(serving, args.listen, options, sync).await
    })?;
    // Calls still running past the drain deadline end at their own deadlines; the process does
    // not wait for them.
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_management_is_warned_about_beyond_loopback_only() {
        let at = |a: &str| a.parse::<SocketAddr>().unwrap();
        assert!(open_management_warning(true, &at("0.0.0.0:8080"))
            .is_some_and(|w| w.contains("0.0.0.0:8080") && w.contains("--admin-token")));
        assert!(open_management_warning(true, &at("10.1.2.3:80")).is_some());
        assert!(open_management_warning(true, &at("[::]:8080")).is_some());
        assert!(open_management_warning(true, &at("127.0.0.1:8080")).is_none());
        assert!(open_management_warning(true, &at("[::1]:8080")).is_none());
        assert!(open_management_warning(false, &at("0.0.0.0:8080")).is_none());
    }
}
