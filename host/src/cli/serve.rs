//! `ferry serve`: load every version in the store and serve it over HTTP.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::HostConfig;
use crate::engine::{EngineSettings, FerryEngine};
use crate::registry::{Registry, Store};
use crate::server::{ServeOptions, Token};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The store directory (created if missing).
    #[arg(long, default_value = "ferry-store", env = "FERRY_STORE")]
    store: PathBuf,
    /// Host configuration (TOML): host-wide caps and per-model limits.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Bearer token required on management routes (uploads, aliases, deletes, listings).
    #[arg(long, env = "FERRY_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Bearer token required on inference routes.
    #[arg(long, env = "FERRY_INFERENCE_TOKEN", hide_env_values = true)]
    inference_token: Option<String>,
}

pub fn run(args: ServeArgs) -> anyhow::Result<i32> {
    let config = match &args.config {
        Some(path) => HostConfig::load(path)?,
        None => HostConfig::default(),
    };
    let store = Store::open(&args.store)?;
    let engine = FerryEngine::new(EngineSettings {
        max_memory_bytes: config.host.max_memory_mib << 20,
        total_instances: config.host.total_instances,
        fuel: config.host.fuel,
        cache_dir: Some(store.compiled_dir()),
        ..Default::default()
    })?;
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
    let registry = Registry::new(store, engine, config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ferry-http")
        .build()?;
    runtime.block_on(crate::server::serve(registry, args.listen, options))?;
    Ok(0)
}
