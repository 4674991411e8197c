//! Model versions and where requests go. The [`Store`] keeps what a version is made of; the
//! [`Registry`] loads versions from it (compile, initialise, self-test, warm pool) and publishes one
//! [`RoutingTable`] that request handlers read without locks and that changes only by being replaced
//! whole.

mod routing;
mod store;
mod version;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;

pub use routing::{ModelEntry, RouteError, RoutingTable, DEFAULT_ALIAS};
pub use store::{check_name, write_atomically, Store, VersionManifest};
pub use version::{ModelVersion, VersionState};

use crate::config::HostConfig;
use crate::engine::FerryEngine;

/// The versions this host knows and the table that routes requests to them.
pub struct Registry {
    store: Store,
    engine: Arc<FerryEngine>,
    config: HostConfig,
    table: ArcSwap<RoutingTable>,
    /// Serialises changes to the table (readers never take it).
    writer: Mutex<()>,
}

impl Registry {
    /// A registry over `store` with an empty routing table.
    pub fn new(store: Store, engine: Arc<FerryEngine>, config: HostConfig) -> Arc<Registry> {
        Arc::new(Registry {
            store,
            engine,
            config,
            table: ArcSwap::from_pointee(RoutingTable::default()),
            writer: Mutex::new(()),
        })
    }

    /// The current routing table.
    pub fn table(&self) -> Arc<RoutingTable> {
        self.table.load_full()
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Loads every version in the store: first lists them all as loading, then brings each up.
    /// A version that fails keeps its reason; the others are unaffected.
    pub fn load_all(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        let all = self.store.versions()?;
        self.update(|table| {
            for (model, versions) in &all {
                let aliases = self.store.aliases(model).unwrap_or_else(|e| {
                    tracing::error!(model, error = %e, "ignoring unreadable aliases");
                    Default::default()
                });
                let entry = table.models.entry(model.clone()).or_default();
                entry.aliases = aliases;
                for m in versions {
                    entry.versions.insert(m.version.clone(), Arc::new(ModelVersion::loading(m.clone())));
                }
            }
        });
        let count: usize = all.values().map(Vec::len).sum();
        for manifest in all.into_values().flatten() {
            self.load_version(manifest);
        }
        tracing::info!(versions = count, elapsed = ?started.elapsed(), "store loaded");
        Ok(())
    }

    /// Brings one version up and publishes its outcome (ready, or failed with the reason).
    pub fn load_version(&self, manifest: VersionManifest) -> Arc<ModelVersion> {
        let limits = manifest.limits.clone().unwrap_or_else(|| self.config.limits_for(&manifest.model));
        let version = Arc::new(ModelVersion::load(&self.engine, &self.store, manifest, limits, self.config.host.require_self_tests));
        match &version.state {
            VersionState::Ready => tracing::info!(model = %version.manifest.model, version = %version.manifest.version, load_seconds = version.load_seconds, "version ready"),
            VersionState::Failed(reason) => tracing::error!(model = %version.manifest.model, version = %version.manifest.version, %reason, "version failed"),
            VersionState::Loading => {}
        }
        let published = version.clone();
        self.update(move |table| {
            table.models.entry(published.manifest.model.clone()).or_default().versions.insert(published.manifest.version.clone(), published);
        });
        version
    }

    /// Applies `change` to a copy of the table and publishes the copy in one atomic store.
    fn update(&self, change: impl FnOnce(&mut RoutingTable)) {
        let _writer = self.writer.lock().unwrap();
        let mut next = RoutingTable::clone(&self.table.load());
        change(&mut next);
        self.table.store(Arc::new(next));
    }
}
