//! Model versions and where requests go. The [`Store`] says what exists (versions, aliases, what is
//! unloaded); the [`Registry`] makes this host match it — compile, initialise, self-test, warm pool —
//! and publishes one [`RoutingTable`] that request handlers read without locks and that changes only
//! by being replaced whole.
//!
//! There is one path for every change, on one host or a fleet: a change is written to the store
//! first (conditionally, see [`store`]), then this host reads the model back and [`Registry::apply`]s
//! it; other hosts find the same change through [`sync`] and apply it the same way. Applying is
//! load-before-swap: an alias moves on a host only once its new target is ready there; the version
//! it replaces keeps answering the requests it already has and unloads when the last is done.
//!
//! Which versions a host keeps loaded: every alias target and the newest version of each model that
//! has not failed there (so a fresh upload can be tried by version before it is promoted), and, until
//! that newest one is ready, the newest one that is. Others are listed as unloaded and come back when
//! promoted.

mod routing;
mod store;
pub mod sync;
mod version;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

pub use routing::{ModelEntry, RouteError, RoutingTable, DEFAULT_ALIAS};
pub use store::{
    check_name, unix_ms, Aliases, ChangeRecord, HostStatus, HostVersion, ModelView, Store,
    VersionManifest,
};
pub use sync::SyncHealth;
pub use version::{ModelVersion, VersionArtifacts, VersionState};

use crate::config::HostConfig;
use crate::engine::FerryEngine;
use crate::storage::StorageError;

/// Why a registry change was refused; the server maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// No such model or version (404).
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with the current state (409), e.g. deleting an aliased version.
    #[error("{0}")]
    Conflict(String),
    /// The request itself is wrong (400).
    #[error("{0}")]
    Invalid(String),
    /// The store cannot be reached (503): the host keeps serving, changes wait.
    #[error("{0}")]
    Unavailable(String),
    /// The host's disk has no room for an upload (507).
    #[error("no room to store the upload: {0}")]
    NoRoom(String),
    /// The store failed (500).
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// Why a version did not come up on this host when the store could not give it its blobs: it is
/// tried again once the store answers.
const WAITING_FOR_STORE: &str = "waiting for the store";

/// The versions this host knows and the table that routes requests to them.
pub struct Registry {
    store: Store,
    engine: Arc<FerryEngine>,
    config: HostConfig,
    table: ArcSwap<RoutingTable>,
    /// What the store said of each model, as last read: what [`Registry::apply`] converges on.
    views: Mutex<BTreeMap<String, ModelView>>,
    /// Versions (`model@version`) being loaded right now, so each loads once.
    loading: Mutex<HashSet<String>>,
    /// Versions held loaded while a promote to them is in flight.
    pinned: Mutex<Vec<(String, String)>>,
    /// Serialises table swaps; readers never take it.
    writer: Mutex<()>,
    /// The async runtime, for store reads from loader threads.
    runtime: tokio::runtime::Handle,
    /// How syncing with the store goes.
    pub sync: SyncHealth,
}

impl Registry {
    /// A registry over `store` with an empty routing table. Call from within the tokio runtime.
    pub fn new(store: Store, engine: Arc<FerryEngine>, config: HostConfig) -> Arc<Registry> {
        Arc::new(Registry {
            store,
            engine,
            config,
            table: ArcSwap::from_pointee(RoutingTable::default()),
            views: Default::default(),
            loading: Default::default(),
            pinned: Default::default(),
            writer: Mutex::new(()),
            runtime: tokio::runtime::Handle::current(),
            sync: SyncHealth::default(),
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

    /// The host configuration.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// The models as this host last read them from the store.
    pub fn views(&self) -> BTreeMap<String, ModelView> {
        self.views.lock().unwrap().clone()
    }

    /// Makes this host match `view` for `model` (see the module docs) and starts loading what it
    /// should have loaded and does not. Returns at once; loads run on their own threads.
    pub fn apply(self: &Arc<Self>, model: &str, view: ModelView) {
        let to_load = self.converge(model, view);
        for manifest in to_load {
            self.start_load(manifest);
        }
    }

    /// Forgets models the store no longer has.
    pub fn retain_models(self: &Arc<Self>, present: &BTreeSet<String>) {
        let gone: Vec<String> = self.table().models.keys().filter(|m| !present.contains(*m)).cloned().collect();
        for model in gone {
            self.apply(&model, ModelView::default());
        }
    }

    fn converge(&self, model: &str, view: ModelView) -> Vec<VersionManifest> {
        let _writer = self.writer.lock().unwrap();
        let table = self.table.load();
        let old = table.models.get(model).cloned().unwrap_or_default();
        if view.manifests.is_empty() {
            self.views.lock().unwrap().remove(model);
            if table.models.contains_key(model) {
                self.publish(|t| {
                    t.models.remove(model);
                });
            }
            return Vec::new();
        }
        self.views.lock().unwrap().insert(model.to_owned(), view.clone());

        let mut entry = ModelEntry::default();
        for m in &view.manifests {
            // A version deleted and created again under the same name is a new version.
            let kept = old.versions.get(&m.version).filter(|v| v.manifest == *m).cloned();
            let listed = || Arc::new(ModelVersion::listed(m.clone(), VersionState::Unloaded("not loaded yet".into())));
            entry.versions.insert(m.version.clone(), kept.unwrap_or_else(listed));
        }
        let ready = |v: &str| entry.versions.get(v).is_some_and(|v| v.is_ready());
        // An alias moves here once its new target is ready here; until then it keeps its old one.
        for (alias, target) in &view.aliases.current {
            let published = match old.aliases.get(alias) {
                Some(previous) if !ready(target) && ready(previous) => previous.clone(),
                _ => target.clone(),
            };
            entry.aliases.insert(alias.clone(), published);
        }

        let mut wanted: BTreeSet<String> = BTreeSet::new();
        if !view.unloaded {
            wanted.extend(view.aliases.current.values().cloned());
            wanted.extend(entry.aliases.values().cloned());
            wanted.extend(self.pinned.lock().unwrap().iter().filter(|(m, _)| m == model).map(|(_, v)| v.clone()));
            let failed = |v: &str| matches!(entry.versions.get(v).map(|v| &v.state), Some(VersionState::Failed(_)));
            let newest = view.manifests.iter().rev().find(|m| !failed(&m.version));
            if let Some(newest) = newest {
                wanted.insert(newest.version.clone());
                if !ready(&newest.version) {
                    if let Some(serving) = view.manifests.iter().rev().find(|m| ready(&m.version)) {
                        wanted.insert(serving.version.clone());
                    }
                }
            }
        }

        let mut to_load = Vec::new();
        for (name, v) in entry.versions.iter_mut() {
            let relisted = |state| Arc::new(ModelVersion::listed(v.manifest.clone(), state));
            let next = if view.unloaded {
                match &v.state {
                    VersionState::Unloaded(r) if r == "unloaded on request" => None,
                    _ => Some(relisted(VersionState::Unloaded("unloaded on request".into()))),
                }
            } else if wanted.contains(name) {
                match &v.state {
                    VersionState::Unloaded(_) => {
                        to_load.push(v.manifest.clone());
                        Some(relisted(VersionState::Loading))
                    }
                    _ => None,
                }
            } else {
                match &v.state {
                    VersionState::Ready => Some(relisted(VersionState::Unloaded("replaced as target; drained".into()))),
                    VersionState::Unloaded(r) if r == "not loaded yet" || r == "unloaded on request" || r.starts_with(WAITING_FOR_STORE) => {
                        Some(relisted(VersionState::Unloaded("not targeted by an alias and not the newest version".into())))
                    }
                    _ => None,
                }
            };
            if let Some(next) = next {
                *v = next;
            }
        }
        let unloading: Vec<&String> = old
            .versions
            .iter()
            .filter(|(name, v)| v.is_ready() && !entry.versions.get(*name).is_some_and(|n| n.is_ready()))
            .map(|(name, _)| name)
            .collect();
        if !unloading.is_empty() {
            tracing::info!(model, versions = ?unloading, "unloading versions nothing targets any more (in-flight requests finish first)");
        }
        self.publish(|t| {
            t.models.insert(model.to_owned(), entry);
        });
        to_load
    }

    /// Loads a version on a thread of its own, then publishes it and applies the model again (so
    /// aliases waiting for it move and versions it replaces go).
    fn start_load(self: &Arc<Self>, manifest: VersionManifest) {
        let label = format!("{}@{}", manifest.model, manifest.version);
        if !self.loading.lock().unwrap().insert(label.clone()) {
            return;
        }
        let registry = self.clone();
        let spawned = std::thread::Builder::new().name(format!("load-{}", manifest.model)).spawn(move || {
            let model = manifest.model.clone();
            let loaded = registry.load(manifest);
            registry.finish_load(loaded);
            // Applied again before this load counts as done, so whatever it starts (an older version
            // when this one failed) is already loading when [`Registry::settle`] looks.
            let view = registry.views.lock().unwrap().get(&model).cloned();
            if let Some(view) = view {
                registry.apply(&model, view);
            }
            registry.loading.lock().unwrap().remove(&label);
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a loader thread");
        }
    }

    /// Reads a version's blobs (from the host's cache, or the store) and brings it up.
    fn load(&self, manifest: VersionManifest) -> ModelVersion {
        let limits = manifest.limits.clone().unwrap_or_else(|| self.config.limits_for(&manifest.model));
        let started = Instant::now();
        let artifacts = self.runtime.block_on(VersionArtifacts::read(self.store.blobs(), &manifest));
        let version = match artifacts {
            Ok(artifacts) => ModelVersion::load(&self.engine, manifest, artifacts, limits, self.config.host.require_self_tests),
            Err(e @ StorageError::Unavailable(_)) => ModelVersion::listed(manifest, VersionState::Unloaded(format!("{WAITING_FOR_STORE}: {e}"))),
            Err(e) => ModelVersion::listed(manifest, VersionState::Failed(format!("reading its files: {e}"))),
        };
        let m = &version.manifest;
        match &version.state {
            VersionState::Ready => tracing::info!(model = %m.model, version = %m.version, load_seconds = started.elapsed().as_secs_f64(), "version ready"),
            state => tracing::error!(model = %m.model, version = %m.version, state = %state.describe(), "version did not come up"),
        }
        version
    }

    fn finish_load(&self, version: ModelVersion) {
        let _writer = self.writer.lock().unwrap();
        let (model, name) = (version.manifest.model.clone(), version.manifest.version.clone());
        let table = self.table.load();
        // A version deleted, replaced or unloaded while it was loading stays so.
        let current = table.models.get(&model).and_then(|e| e.versions.get(&name));
        if current.is_some_and(|c| c.manifest == version.manifest && c.state == VersionState::Loading) {
            let version = Arc::new(version);
            self.publish(|t| {
                if let Some(entry) = t.models.get_mut(&model) {
                    entry.versions.insert(name, version);
                }
            });
        }
    }

    /// Applies `change` to a copy of the table and publishes it in one atomic store. Callers hold
    /// `writer`.
    fn publish(&self, change: impl FnOnce(&mut RoutingTable)) {
        let mut next = RoutingTable::clone(&self.table.load());
        change(&mut next);
        self.table.store(Arc::new(next));
    }

    /// Reads `model` from the store and applies it.
    pub async fn refresh(self: &Arc<Self>, model: &str) -> Result<(), ChangeError> {
        let view = self.store.model(model).await?;
        self.apply(model, view);
        Ok(())
    }

    /// Waits until no version is loading (bounded), e.g. before reporting the store loaded.
    pub async fn settle(&self, limit: Duration) {
        let started = Instant::now();
        while started.elapsed() < limit {
            let busy = !self.loading.lock().unwrap().is_empty()
                || self.table().versions().any(|v| v.state == VersionState::Loading);
            if !busy {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A manifest for a new version of `model`, checked: the given name (or none yet) and a fresh
    /// sequence number.
    pub async fn new_manifest(&self, model: &str, version: Option<String>) -> Result<VersionManifest, ChangeError> {
        check_name("model", model).map_err(|e| ChangeError::Invalid(e.to_string()))?;
        if let Some(version) = &version {
            check_version_name(version)?;
        }
        Ok(VersionManifest {
            model: model.to_owned(),
            version: version.unwrap_or_default(),
            sequence: 0,
            component_sha256: String::new(),
            weights_sha256: None,
            config_sha256: None,
            tests_sha256: None,
            limits: None,
        })
    }

    /// Creates a version in the store (its blobs already there) and starts loading it here. An empty
    /// version name takes the next number.
    pub async fn create_version(self: &Arc<Self>, manifest: VersionManifest) -> Result<Arc<ModelVersion>, ChangeError> {
        let manifest = self.store.create_version(&manifest).await?;
        self.refresh(&manifest.model).await?;
        let listed = self.table().models.get(&manifest.model).and_then(|e| e.versions.get(&manifest.version).cloned());
        Ok(listed.unwrap_or_else(|| Arc::new(ModelVersion::listed(manifest, VersionState::Loading))))
    }

    /// Points `alias` of `model` at `version`, bringing the version up here first. The switch is one
    /// table swap; the previous target drains and unloads.
    pub async fn set_alias(self: &Arc<Self>, model: &str, alias: &str, version: &str) -> Result<(), ChangeError> {
        check_name("alias", alias).map_err(|e| ChangeError::Invalid(e.to_string()))?;
        let view = self.store.model(model).await?;
        self.apply(model, view.clone());
        if !view.manifests.iter().any(|m| m.version == version) {
            return Err(self.missing(model, version, &view));
        }
        let _pin = self.pin(model, version);
        self.ensure_ready(model, version).await?;
        self.store
            .update_aliases(model, |aliases| {
                if let Some(previous) = aliases.current.insert(alias.to_owned(), version.to_owned()) {
                    if previous != version {
                        let history = aliases.history.entry(alias.to_owned()).or_default();
                        history.push(previous);
                        // Enough to roll back through a bad afternoon, bounded so the file stays small.
                        let excess = history.len().saturating_sub(32);
                        history.drain(..excess);
                    }
                }
                Ok(())
            })
            .await?;
        self.refresh(model).await
    }

    /// Moves `alias` back to the version it pointed at before.
    pub async fn rollback(self: &Arc<Self>, model: &str, alias: &str) -> Result<String, ChangeError> {
        let view = self.store.model(model).await?;
        if view.manifests.is_empty() {
            return Err(ChangeError::NotFound(format!("unknown model `{model}`")));
        }
        let previous = previous_target(&view, alias).ok_or_else(|| {
            ChangeError::Conflict(format!("alias `{alias}` of `{model}` has no earlier version to roll back to"))
        })?;
        let _pin = self.pin(model, &previous);
        self.ensure_ready(model, &previous).await?;
        self.store
            .update_aliases(model, |aliases| {
                let now = previous_target(&ModelView { aliases: aliases.clone(), ..view.clone() }, alias);
                if now.as_deref() != Some(previous.as_str()) {
                    return Err(ChangeError::Conflict(format!(
                        "alias `{alias}` of `{model}` moved meanwhile; look again before rolling back"
                    )));
                }
                if let Some(history) = aliases.history.get_mut(alias) {
                    if let Some(at) = history.iter().rposition(|v| *v == previous) {
                        history.truncate(at);
                    }
                }
                aliases.current.insert(alias.to_owned(), previous.clone());
                Ok(())
            })
            .await?;
        self.refresh(model).await?;
        Ok(previous)
    }

    /// Deletes a version; refused while an alias points at it.
    pub async fn delete_version(self: &Arc<Self>, model: &str, version: &str) -> Result<(), ChangeError> {
        let view = self.store.model(model).await?;
        if !view.manifests.iter().any(|m| m.version == version) {
            return Err(self.missing(model, version, &view));
        }
        if let Some((alias, _)) = view.aliases.current.iter().find(|(_, v)| *v == version) {
            return Err(ChangeError::Conflict(format!(
                "alias `{alias}` points at `{model}` version `{version}`; move it first"
            )));
        }
        self.store.delete_version(model, version).await?;
        self.refresh(model).await
    }

    /// Unloads every version of `model` (OIP repository extension); it stays unloaded, across
    /// restarts and on every host, until [`Registry::load_model`].
    pub async fn unload_model(self: &Arc<Self>, model: &str) -> Result<(), ChangeError> {
        self.known_model(model).await?;
        self.store.set_unloaded(model, true).await?;
        self.refresh(model).await
    }

    /// Loads `model` again: its targeted versions come up (this waits for them).
    pub async fn load_model(self: &Arc<Self>, model: &str) -> Result<(), ChangeError> {
        self.known_model(model).await?;
        self.store.set_unloaded(model, false).await?;
        self.refresh(model).await?;
        self.settle(Duration::from_secs(600)).await;
        Ok(())
    }

    async fn known_model(&self, model: &str) -> Result<(), ChangeError> {
        if self.store.model(model).await?.manifests.is_empty() {
            return Err(ChangeError::NotFound(format!("unknown model `{model}`")));
        }
        Ok(())
    }

    fn missing(&self, model: &str, version: &str, view: &ModelView) -> ChangeError {
        if view.manifests.is_empty() {
            ChangeError::NotFound(format!("unknown model `{model}`"))
        } else {
            ChangeError::NotFound(format!("model `{model}` has no version `{version}`"))
        }
    }

    /// Keeps `version` loaded until the returned guard drops, whatever the store says meanwhile.
    fn pin(self: &Arc<Self>, model: &str, version: &str) -> Pin {
        self.pinned.lock().unwrap().push((model.to_owned(), version.to_owned()));
        Pin { registry: self.clone(), model: model.to_owned(), version: version.to_owned() }
    }

    /// Makes sure `version` of `model` is ready here, loading it (and waiting) if needed.
    async fn ensure_ready(self: &Arc<Self>, model: &str, version: &str) -> Result<(), ChangeError> {
        let started = Instant::now();
        loop {
            let table = self.table();
            let v = table
                .models
                .get(model)
                .and_then(|e| e.versions.get(version))
                .ok_or_else(|| ChangeError::NotFound(format!("model `{model}` has no version `{version}`")))?;
            match &v.state {
                VersionState::Ready => return Ok(()),
                VersionState::Failed(reason) => {
                    return Err(ChangeError::Conflict(format!("`{model}` version `{version}` failed: {reason}")))
                }
                VersionState::Unloaded(reason) if reason.starts_with(WAITING_FOR_STORE) && started.elapsed() > Duration::from_secs(1) => {
                    return Err(ChangeError::Unavailable(format!("`{model}` version `{version}` cannot be loaded: {reason}")))
                }
                VersionState::Unloaded(_) => {
                    // Pinned: applying the model now marks it wanted and starts its load.
                    let view = self.views.lock().unwrap().get(model).cloned();
                    if let Some(view) = view {
                        self.apply(model, view);
                    }
                }
                VersionState::Loading => {}
            }
            if started.elapsed() > Duration::from_secs(600) {
                return Err(ChangeError::Conflict(format!("`{model}` version `{version}` is still loading")));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The version `alias` pointed at before its current one, among the versions that still exist.
fn previous_target(view: &ModelView, alias: &str) -> Option<String> {
    view.aliases
        .history
        .get(alias)
        .and_then(|h| h.iter().rev().find(|v| view.manifests.iter().any(|m| &m.version == *v)))
        .cloned()
}

/// A version name a user may choose.
fn check_version_name(version: &str) -> Result<(), ChangeError> {
    check_name("version", version).map_err(|e| ChangeError::Invalid(e.to_string()))?;
    if DEFAULT_ALIAS == version {
        // A version named like the alias would make `/versions/production` ambiguous.
        return Err(ChangeError::Invalid(format!("`{version}` is reserved for the alias")));
    }
    Ok(())
}

/// Holds a version loaded while a promote to it is in flight.
struct Pin {
    registry: Arc<Registry>,
    model: String,
    version: String,
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut pinned = self.registry.pinned.lock().unwrap();
        if let Some(at) = pinned.iter().position(|(m, v)| *m == self.model && *v == self.version) {
            pinned.remove(at);
        }
    }
}
