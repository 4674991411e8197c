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
//! promoted — up to `[store] keep_versions` of them per model: older ones that nothing names are
//! deleted ([`retention`]), and what a version leaves in the host's cache goes with it (`leftovers`).

pub mod audit;
mod budget;
mod leftovers;
pub mod names;
pub mod retention;
mod routing;
mod series;
mod store;
pub mod sync;
mod traffic;
mod version;
pub mod version_limits;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

pub use budget::{MemoryBudget, ProcessMemory};
pub use routing::{ModelEntry, Route, RouteError, RoutingTable, SplitRoute, DEFAULT_ALIAS};
pub use series::{Histogram, VersionSeries, LATENCY_BUCKETS};
pub use store::{
    check_graph_name, check_name, Aliases, ChangeRecord, HostStatus, HostVersion, ModelView, Store,
    VersionManifest,
};
pub use sync::SyncHealth;
pub use traffic::{AliasTarget, LogPolicy, Percent, Shadow, Split, TrafficPolicy};
pub use version::{LoadOptions, ModelVersion, NotLoaded, Usage, VersionArtifacts, VersionState};
pub use version_limits::{effective_limits, VersionLimits};

use crate::config::HostConfig;
use crate::runtime::ModelRuntime;
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
    /// The version is the model's shadow: shadowing must stop before it goes.
    #[error("`{model}` version `{version}` is the model's shadow; stop shadowing it first")]
    Shadowed { model: String, version: String },
    /// The model is unloaded on request: its aliases do not move until it is loaded again.
    #[error("model `{model}` is unloaded on request; load it first")]
    ModelUnloaded { model: String },
    /// The host's disk has no room for an upload (507).
    #[error("no room to store the upload: {0}")]
    NoRoom(String),
    /// The store failed (500).
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// The versions this host knows and the table that routes requests to them.
pub struct Registry {
    store: Store,
    models: Arc<ModelRuntime>,
    config: HostConfig,
    /// The host's memory budget over the routed versions.
    budget: Arc<MemoryBudget>,
    table: ArcSwap<RoutingTable>,
    /// What the store said of each model, as last read, with the ticket of that read: what
    /// [`Registry::apply`] converges on.
    views: Mutex<BTreeMap<String, (u64, ModelView)>>,
    /// Tickets order reads of the store: a read that started later saw a later store.
    tickets: AtomicU64,
    /// Versions (`model@version`) being loaded right now, so each loads once.
    loading: Mutex<HashSet<String>>,
    /// Loads started and not yet followed by their re-apply ([`Registry::settle`] waits for them).
    loads_in_flight: AtomicUsize,
    /// Bumped whenever the table is published or a load ends: what waiting for a version watches.
    changed: tokio::sync::watch::Sender<u64>,
    /// Loads that may run at once: a host with thousands of versions to bring up compiles and
    /// initialises a few at a time, not thousands of threads against two cores.
    load_slots: tokio::sync::Semaphore,
    /// Versions held loaded while a promote to them is in flight.
    pinned: Mutex<Vec<(String, String)>>,
    /// Snapshots in this host's compile cache by version (`model@version#sequence` → manifest and
    /// key), so a version's files go with it (see `leftovers`).
    compiled: Mutex<BTreeMap<String, (VersionManifest, String)>>,
    /// Serialises table swaps; readers never take it.
    writer: Mutex<()>,
    /// The tokio runtime, for store reads from loader threads.
    tokio: tokio::runtime::Handle,
    /// How syncing with the store goes.
    pub sync: SyncHealth,
}

impl Registry {
    /// A registry over `store` with an empty routing table. Call from within the tokio runtime.
    pub fn new(store: Store, models: Arc<ModelRuntime>, config: HostConfig) -> Arc<Registry> {
        let parallel_loads = config
            .host
            .parallel_loads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
            .max(1);
        // Versions being loaded are not in the routing table the budget looks at: keep slots for them.
        let slots = (config.host.total_instances as usize)
            .saturating_sub(4 * parallel_loads)
            .max(1);
        let budget = MemoryBudget::new(config.host.max_resident_bytes, slots);
        let registry = Arc::new(Registry {
            store,
            models,
            config,
            budget: budget.clone(),
            table: ArcSwap::from_pointee(RoutingTable::default()),
            views: Default::default(),
            tickets: AtomicU64::new(1),
            loading: Default::default(),
            loads_in_flight: AtomicUsize::new(0),
            changed: tokio::sync::watch::Sender::new(0),
            load_slots: tokio::sync::Semaphore::new(parallel_loads),
            pinned: Default::default(),
            compiled: Default::default(),
            writer: Mutex::new(()),
            tokio: tokio::runtime::Handle::current(),
            sync: SyncHealth::default(),
        });
        budget.attach(&registry);
        registry
    }

    /// The host's memory budget.
    pub fn budget(&self) -> &Arc<MemoryBudget> {
        &self.budget
    }

    /// The runtime versions run on.
    pub fn runtime(&self) -> &Arc<ModelRuntime> {
        &self.models
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
        self.views
            .lock()
            .unwrap()
            .iter()
            .map(|(m, (_, v))| (m.clone(), v.clone()))
            .collect()
    }

    /// A ticket for a read of the store about to start: pass it with what the read returned to
    /// [`Registry::apply`], so that a slow read never undoes what a later one applied.
    pub fn ticket(&self) -> u64 {
        self.tickets.fetch_add(1, Ordering::SeqCst)
    }

    /// Makes this host match `view` for `model`, read from the store with `ticket` (see the module
    /// docs), and starts loading what it should have loaded and does not. Returns at once; loads run
    /// on their own threads. A view older than the one applied last is ignored.
    pub fn apply(self: &Arc<Self>, model: &str, view: ModelView, ticket: u64) {
        let to_load = self.converge(model, Some((ticket, view)), false);
        for manifest in to_load {
            self.start_load(manifest);
        }
    }

    /// Applies the last view of `model` again (after a load, or a pin released); `retry_waiting`
    /// also tries again versions that waited for the store.
    fn reapply(self: &Arc<Self>, model: &str, retry_waiting: bool) {
        for manifest in self.converge(model, None, retry_waiting) {
            self.start_load(manifest);
        }
    }

    /// Tries again every version that could not be loaded while the store was away.
    pub fn retry_waiting(self: &Arc<Self>) {
        let waiting: BTreeSet<String> = self
            .table()
            .versions()
            .filter(|v| {
                matches!(
                    &v.state,
                    VersionState::Unloaded(NotLoaded::WaitingForStore(_))
                )
            })
            .map(|v| v.manifest.model.clone())
            .collect();
        for model in waiting {
            self.reapply(&model, true);
        }
    }

    /// Forgets models the store no longer has (as read with `ticket`).
    pub fn retain_models(self: &Arc<Self>, present: &BTreeSet<String>, ticket: u64) {
        let gone: Vec<String> = self
            .table()
            .models
            .keys()
            .filter(|m| !present.contains(*m))
            .cloned()
            .collect();
        for model in gone {
            self.apply(&model, ModelView::default(), ticket);
        }
    }

    fn converge(
        &self,
        model: &str,
        read: Option<(u64, ModelView)>,
        retry_waiting: bool,
    ) -> Vec<VersionManifest> {
        let _writer = self.writer.lock().unwrap();
        let view = {
            let mut views = self.views.lock().unwrap();
            let applied = views.get(model).map_or(0, |(t, _)| *t);
            match read {
                Some((ticket, _)) if ticket < applied => return Vec::new(),
                Some((ticket, view)) => {
                    views.insert(model.to_owned(), (ticket, view.clone()));
                    view
                }
                None => match views.get(model) {
                    Some((_, view)) => view.clone(),
                    None => return Vec::new(),
                },
            }
        };
        let table = self.table.load();
        let old = table.models.get(model).cloned().unwrap_or_default();
        if view.manifests.is_empty() {
            if table.models.contains_key(model) {
                self.publish(|t| {
                    t.models.remove(model);
                });
                let gone = old.versions.values().map(|v| v.manifest.clone()).collect();
                self.collect_leftovers(gone);
            }
            return Vec::new();
        }

        let mut entry = ModelEntry::default();
        // A version the store holds under an alias's name (written by others): the alias wins, the
        // version is listed failed and never loaded (see `names`).
        let clashing = names::clashing_versions(&view);
        for m in &view.manifests {
            if clashing.contains(&m.version) {
                let reason = names::clash_reason(model, &m.version);
                let failed = VersionState::Failed(reason);
                let kept = old
                    .versions
                    .get(&m.version)
                    .filter(|v| v.manifest == *m && v.state == failed)
                    .cloned();
                let listed = kept.unwrap_or_else(|| {
                    tracing::error!(model, version = %m.version, "a version in the store has an alias's name: the alias wins, the version is not served");
                    Arc::new(ModelVersion::listed(m.clone(), failed))
                });
                entry.versions.insert(m.version.clone(), listed);
                continue;
            }
            // A version deleted and created again under the same name is a new version.
            let kept = old
                .versions
                .get(&m.version)
                .filter(|v| v.manifest == *m)
                .cloned();
            let listed = || {
                Arc::new(ModelVersion::listed(
                    m.clone(),
                    VersionState::Unloaded(NotLoaded::Pending),
                ))
            };
            entry
                .versions
                .insert(m.version.clone(), kept.unwrap_or_else(listed));
        }
        let ready =
            |entry: &ModelEntry, v: &str| entry.versions.get(v).is_some_and(|v| v.is_ready());
        // An alias moves here once its new target is ready here — for a split, every version it
        // gives a share (else a 10 % canary that loads first would take all of it); until then it
        // keeps its old one — even a version deleted from the store meanwhile, which serves until the
        // alias has moved.
        let all_ready = |entry: &ModelEntry, t: &AliasTarget| {
            t.weighted_versions().iter().all(|v| ready(entry, v))
        };
        let serves = |entry: &ModelEntry, t: &AliasTarget| {
            t.weighted_versions().iter().any(|v| ready(entry, v))
        };
        for (alias, target) in &view.aliases.current {
            let previous = old
                .aliases
                .get(alias)
                .filter(|p| !all_ready(&entry, target) && serves(&old, p));
            let published = match previous {
                Some(previous) => {
                    for v in previous.versions() {
                        if !entry.versions.contains_key(v) {
                            if let Some(kept) = old.versions.get(v) {
                                entry.versions.insert(v.to_owned(), kept.clone());
                            }
                        }
                    }
                    previous.clone()
                }
                None => target.clone(),
            };
            entry.aliases.insert(alias.clone(), published);
        }
        entry.traffic = Arc::new(view.traffic.clone());
        // Requests without a version go to the `production` alias, else the newest ready version. If
        // that would find nothing ready now — an alias this host learns of only with its new target,
        // still loading, while the version that answered is deleted — that version keeps answering
        // until one is ready.
        let mut carried = None;
        // Only while there is something to wait for: a version in the store that has not failed.
        let hope = view.manifests.iter().any(|m| {
            !matches!(
                entry.versions.get(&m.version).map(|v| &v.state),
                Some(VersionState::Failed(_))
            )
        });
        if entry.default_version().is_none() && hope && !view.unloaded {
            if let Some(serving) = old.default_version() {
                let serving = &serving;
                let name = serving.manifest.version.clone();
                entry
                    .versions
                    .entry(name.clone())
                    .or_insert_with(|| serving.clone());
                carried = Some(name);
            }
        }
        let ready = |v: &str| ready(&entry, v);

        let mut wanted: BTreeSet<String> = BTreeSet::new();
        if !view.unloaded {
            wanted.extend(carried);
            let named = view.aliases.current.values().chain(entry.aliases.values());
            wanted.extend(named.flat_map(|t| t.versions()).map(str::to_owned));
            // A shadow's candidate serves its copies from its own pool.
            wanted.extend(view.traffic.shadow.as_ref().map(|s| s.version.clone()));
            wanted.extend(self.pinned_versions(model));
            let failed = |v: &str| {
                matches!(
                    entry.versions.get(v).map(|v| &v.state),
                    Some(VersionState::Failed(_))
                )
            };
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
            if clashing.contains(name) {
                continue; // failed for its name, whatever else happens to the model
            }
            let relisted = |state| Arc::new(ModelVersion::listed(v.manifest.clone(), state));
            let waiting = matches!(
                &v.state,
                VersionState::Unloaded(NotLoaded::WaitingForStore(_))
            );
            let next = if view.unloaded {
                match &v.state {
                    VersionState::Unloaded(NotLoaded::OnRequest) => None,
                    _ => Some(relisted(VersionState::Unloaded(NotLoaded::OnRequest))),
                }
            } else if wanted.contains(name) {
                match &v.state {
                    // Tried again when the store answers (the sync loop says when), not in a loop.
                    VersionState::Unloaded(_) if waiting && !retry_waiting => None,
                    VersionState::Unloaded(_) => {
                        to_load.push(v.manifest.clone());
                        Some(relisted(VersionState::Loading))
                    }
                    _ => None,
                }
            } else {
                match &v.state {
                    VersionState::Ready => {
                        Some(relisted(VersionState::Unloaded(NotLoaded::Drained)))
                    }
                    VersionState::Unloaded(
                        NotLoaded::Pending | NotLoaded::OnRequest | NotLoaded::WaitingForStore(_),
                    ) => Some(relisted(VersionState::Unloaded(NotLoaded::NotWanted))),
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
            .filter(|(name, v)| {
                v.is_ready() && !entry.versions.get(*name).is_some_and(|n| n.is_ready())
            })
            .map(|(name, _)| name)
            .collect();
        if !unloading.is_empty() {
            tracing::info!(model, versions = ?unloading, "unloading versions nothing targets any more (in-flight requests finish first)");
        }
        // Versions gone from the model (deleted, or created again under their name): their cached
        // files go too.
        let gone: Vec<VersionManifest> = old
            .versions
            .iter()
            .filter(|(name, v)| {
                !entry
                    .versions
                    .get(*name)
                    .is_some_and(|n| n.manifest == v.manifest)
            })
            .map(|(_, v)| v.manifest.clone())
            .collect();
        self.publish(|t| {
            t.models.insert(model.to_owned(), entry);
        });
        if !gone.is_empty() {
            self.collect_leftovers(gone);
        }
        to_load
    }

    /// Loads a version on a thread of its own, then publishes it and applies the model again (so
    /// aliases waiting for it move and versions it replaces go).
    fn start_load(self: &Arc<Self>, manifest: VersionManifest) {
        // The sequence number tells apart a version deleted and created again under its name.
        let label = format!(
            "{}@{}#{}",
            manifest.model, manifest.version, manifest.sequence
        );
        if !self.loading.lock().unwrap().insert(label.clone()) {
            return;
        }
        self.loads_in_flight.fetch_add(1, Ordering::SeqCst);
        /// Ends the load's bookkeeping however the thread ends (a panic included).
        struct Done(Arc<Registry>, String);
        impl Drop for Done {
            fn drop(&mut self) {
                self.0.loading.lock().unwrap().remove(&self.1);
                self.0.loads_in_flight.fetch_sub(1, Ordering::SeqCst);
                self.0.changed.send_modify(|n| *n += 1);
            }
        }
        let done = Done(self.clone(), label.clone());
        let registry = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("load-{}", manifest.model))
            .spawn(move || {
                // Loads (compile, init, snapshot, self-tests) give way to calls of ready versions: a
                // version that is ready must answer at its usual speed while others load.
                crate::engine::background::lower_this_thread();
                let model = manifest.model.clone();
                let slot = registry.tokio.block_on(registry.load_slots.acquire());
                let loaded = registry.load(manifest);
                drop(slot);
                if let Some(pool) = registry.finish_load(loaded) {
                    // Loads in flight do not see each other: once this one is routed, the budget
                    // looks again at everything routed.
                    crate::runtime::MemoryGovernor::make_room(
                        registry.budget.as_ref(),
                        crate::runtime::Room::default(),
                        &pool,
                    );
                }
                // Done loading before the re-apply, so that a re-apply that wants it again can start it;
                // still in flight until the re-apply has started whatever follows (an older version when
                // this one failed), so that [`Registry::settle`] does not look in between.
                registry.loading.lock().unwrap().remove(&label);
                registry.reapply(&model, false);
                drop(done);
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a loader thread");
        }
    }

    /// Reads a version's blobs (from the host's cache, or the store) and brings it up.
    fn load(&self, manifest: VersionManifest) -> ModelVersion {
        // The operator's limits for the model, lowered where the version asks for less.
        let limits = effective_limits(&self.config, &manifest.model, manifest.limits.as_ref());
        let started = Instant::now();
        let artifacts = self
            .tokio
            .block_on(VersionArtifacts::read(self.store.blobs(), &manifest));
        let refetch = self.refetch(&manifest);
        let version = match artifacts {
            Ok(artifacts) => ModelVersion::load(
                &self.models,
                manifest,
                artifacts,
                limits,
                &LoadOptions {
                    require_self_tests: self.config.host.require_self_tests,
                    governor: Some(self.budget.clone()),
                    refetch: Some(refetch),
                },
            ),
            Err(e @ StorageError::Unavailable(_)) => ModelVersion::listed(
                manifest,
                VersionState::Unloaded(NotLoaded::WaitingForStore(e.to_string())),
            ),
            Err(e) => ModelVersion::listed(
                manifest,
                VersionState::Failed(format!("reading its files: {e}")),
            ),
        };
        let m = &version.manifest;
        match &version.state {
            VersionState::Ready => {
                tracing::info!(model = %m.model, version = %m.version, load_seconds = started.elapsed().as_secs_f64(), "version ready")
            }
            state => {
                tracing::error!(model = %m.model, version = %m.version, state = %state.describe(), "version did not come up")
            }
        }
        version
    }

    /// Reads `manifest`'s files again from the blob cache (or the store), from any thread.
    fn refetch(&self, manifest: &VersionManifest) -> crate::runtime::Refetch {
        let (blobs, manifest, runtime) = (
            self.store.blobs().clone(),
            manifest.clone(),
            self.tokio.clone(),
        );
        Arc::new(move || {
            let read = VersionArtifacts::read(&blobs, &manifest);
            // Called on a loader thread, or on a request's path — usually inside `block_in_place`,
            // but a version evicted between the caller's look and its checkout comes back on the
            // async worker itself, where blocking needs `block_in_place` first.
            let artifacts = if tokio::runtime::Handle::try_current().is_ok() {
                tokio::task::block_in_place(|| runtime.block_on(read))
            } else {
                runtime.block_on(read)
            }?;
            artifacts.into_inputs()
        })
    }

    /// Publishes a loaded version (unless it was deleted, replaced or unloaded meanwhile); returns its
    /// pool when it was published with one.
    fn finish_load(&self, version: ModelVersion) -> Option<Arc<crate::runtime::InstancePool>> {
        let _writer = self.writer.lock().unwrap();
        let (model, name) = (
            version.manifest.model.clone(),
            version.manifest.version.clone(),
        );
        self.note_compiled(&version);
        let table = self.table.load();
        // A version deleted, replaced or unloaded while it was loading stays so.
        let current = table.models.get(&model).and_then(|e| e.versions.get(&name));
        if current
            .is_some_and(|c| c.manifest == version.manifest && c.state == VersionState::Loading)
        {
            let version = Arc::new(version);
            let pool = version.pool.clone();
            self.publish(|t| {
                if let Some(entry) = t.models.get_mut(&model) {
                    entry.versions.insert(name, version);
                }
            });
            return pool;
        }
        // Deleted or replaced while it loaded: what it just wrote to the cache goes with it.
        if !current.is_some_and(|c| c.manifest == version.manifest) {
            self.collect_leftovers(vec![version.manifest.clone()]);
        }
        None
    }

    /// Applies `change` to a copy of the table and publishes it in one atomic store. Callers hold
    /// `writer`.
    fn publish(&self, change: impl FnOnce(&mut RoutingTable)) {
        let mut next = RoutingTable::clone(&self.table.load());
        change(&mut next);
        self.table.store(Arc::new(next));
        self.changed.send_modify(|n| *n += 1);
    }

    /// Reads `model` from the store and applies it.
    pub async fn refresh(self: &Arc<Self>, model: &str) -> Result<(), ChangeError> {
        let ticket = self.ticket();
        let view = self.store.model(model).await?;
        self.apply(model, view, ticket);
        Ok(())
    }

    /// Waits until no version is loading (bounded), e.g. before reporting the store loaded.
    pub async fn settle(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        // Subscribed before looking, so a change between the look and the wait still wakes it.
        let mut changes = self.changed.subscribe();
        loop {
            let busy = self.loads_in_flight.load(Ordering::SeqCst) > 0
                || self
                    .table()
                    .versions()
                    .any(|v| v.state == VersionState::Loading);
            if !busy {
                return;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                // The limit passed (or the registry is going away).
                _ => return,
            }
        }
    }

    /// A manifest for a new version of `model`, checked: the given name (or none yet) and a fresh
    /// sequence number.
    pub async fn new_manifest(
        &self,
        model: &str,
        version: Option<String>,
    ) -> Result<VersionManifest, ChangeError> {
        check_name("model", model).map_err(|e| ChangeError::Invalid(e.to_string()))?;
        if let Some(version) = &version {
            names::check_version_name(version)?;
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
            graphs: Default::default(),
        })
    }

    /// Creates a version in the store (its blobs already there) and starts loading it here. An empty
    /// version name takes the next number.
    pub async fn create_version(
        self: &Arc<Self>,
        manifest: VersionManifest,
    ) -> Result<Arc<ModelVersion>, ChangeError> {
        let manifest = self.store.create_version(&manifest).await?;
        self.refresh(&manifest.model).await?;
        let listed = self
            .table()
            .models
            .get(&manifest.model)
            .and_then(|e| e.versions.get(&manifest.version).cloned());
        Ok(listed
            .unwrap_or_else(|| Arc::new(ModelVersion::listed(manifest, VersionState::Loading))))
    }

    /// Points `alias` of `model` at `target` (a version or a weighted split), bringing every version
    /// it names up here first. The switch is one table swap; the previous target drains and unloads.
    /// Answers where the alias pointed before.
    pub async fn set_alias(
        self: &Arc<Self>,
        model: &str,
        alias: &str,
        target: AliasTarget,
    ) -> Result<Option<AliasTarget>, ChangeError> {
        check_name("alias", alias).map_err(|e| ChangeError::Invalid(e.to_string()))?;
        target.check().map_err(ChangeError::Invalid)?;
        let target = target.simplified();
        let ticket = self.ticket();
        let view = self.store.model(model).await?;
        self.apply(model, view.clone(), ticket);
        // One namespace per model: an alias never takes a version's name.
        if view.manifests.iter().any(|m| m.version == alias) {
            return Err(names::alias_clash(model, alias));
        }
        for version in target.versions() {
            if !view.manifests.iter().any(|m| m.version == version) {
                return Err(self.missing(model, version, &view));
            }
        }
        refuse_unloaded(model, &view)?;
        let _pins: Vec<Pin> = target
            .versions()
            .iter()
            .map(|v| self.pin(model, v))
            .collect();
        for version in target.versions() {
            self.ensure_ready(model, version).await?;
        }
        let (_, previous) = self
            .store
            .update_aliases(model, |aliases| {
                let previous = aliases.current.insert(alias.to_owned(), target.clone());
                if let Some(previous) = &previous {
                    if *previous != target {
                        let history = aliases.history.entry(alias.to_owned()).or_default();
                        history.push(previous.clone());
                        // Enough to roll back through a bad afternoon, bounded so the file stays small.
                        let excess = history.len().saturating_sub(32);
                        history.drain(..excess);
                    }
                }
                Ok(previous)
            })
            .await?;
        // A version deleted while the alias moved to it is put back.
        self.keep_named(model, &view, &target.versions()).await?;
        Ok(previous)
    }

    /// Moves `alias` back to where it pointed before; answers `(from, to)`.
    pub async fn rollback(
        self: &Arc<Self>,
        model: &str,
        alias: &str,
    ) -> Result<(Option<AliasTarget>, AliasTarget), ChangeError> {
        let view = self.store.model(model).await?;
        if view.manifests.is_empty() {
            return Err(ChangeError::NotFound(format!("unknown model `{model}`")));
        }
        refuse_unloaded(model, &view)?;
        let previous = previous_target(&view, alias).ok_or_else(|| {
            ChangeError::Conflict(format!(
                "alias `{alias}` of `{model}` has no earlier version to roll back to"
            ))
        })?;
        let _pins: Vec<Pin> = previous
            .versions()
            .iter()
            .map(|v| self.pin(model, v))
            .collect();
        for version in previous.versions() {
            self.ensure_ready(model, version).await?;
        }
        let (_, from) = self
            .store
            .update_aliases(model, |aliases| {
                let now = previous_target(&ModelView { aliases: aliases.clone(), ..view.clone() }, alias);
                if now.as_ref() != Some(&previous) {
                    return Err(ChangeError::Conflict(format!(
                        "alias `{alias}` of `{model}` moved meanwhile; look again before rolling back"
                    )));
                }
                if let Some(history) = aliases.history.get_mut(alias) {
                    if let Some(at) = history.iter().rposition(|t| *t == previous) {
                        history.truncate(at);
                    }
                }
                Ok(aliases.current.insert(alias.to_owned(), previous.clone()))
            })
            .await?;
        self.keep_named(model, &view, &previous.versions()).await?;
        Ok((from, previous))
    }

    /// Replaces `model`'s traffic policy (shadowing, the prediction log's share), bringing a shadow
    /// candidate up here first; answers the policy it replaced.
    pub async fn set_traffic(
        self: &Arc<Self>,
        model: &str,
        policy: TrafficPolicy,
    ) -> Result<TrafficPolicy, ChangeError> {
        let ticket = self.ticket();
        let view = self.store.model(model).await?;
        self.apply(model, view.clone(), ticket);
        if view.manifests.is_empty() {
            return Err(ChangeError::NotFound(format!("unknown model `{model}`")));
        }
        let mut _pin = None;
        if let Some(shadow) = &policy.shadow {
            if !view.manifests.iter().any(|m| m.version == shadow.version) {
                return Err(self.missing(model, &shadow.version, &view));
            }
            refuse_unloaded(model, &view)?;
            _pin = Some(self.pin(model, &shadow.version));
            self.ensure_ready(model, &shadow.version).await?;
        }
        // Conditional, so a racing change is neither lost nor misreported as what this replaced.
        let previous = self
            .store
            .update_traffic(model, |current| {
                *current = policy.clone();
                Ok(())
            })
            .await?;
        let shadow: Vec<&str> = policy.shadow.iter().map(|s| s.version.as_str()).collect();
        self.keep_named(model, &view, &shadow).await?;
        Ok(previous)
    }

    /// Deletes a version; refused while an alias points at it.
    pub async fn delete_version(
        self: &Arc<Self>,
        model: &str,
        version: &str,
    ) -> Result<(), ChangeError> {
        let view = self.store.model(model).await?;
        if !view.manifests.iter().any(|m| m.version == version) {
            return Err(self.missing(model, version, &view));
        }
        if let Some((alias, _)) = view.aliases.current.iter().find(|(_, t)| t.names(version)) {
            return Err(ChangeError::Conflict(format!(
                "alias `{alias}` points at `{model}` version `{version}`; move it first"
            )));
        }
        if view
            .traffic
            .shadow
            .as_ref()
            .is_some_and(|s| s.version == version)
        {
            return Err(ChangeError::Shadowed {
                model: model.to_owned(),
                version: version.to_owned(),
            });
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
        self.pinned
            .lock()
            .unwrap()
            .push((model.to_owned(), version.to_owned()));
        Pin {
            registry: self.clone(),
            model: model.to_owned(),
            version: version.to_owned(),
        }
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
                .ok_or_else(|| {
                    ChangeError::NotFound(format!("model `{model}` has no version `{version}`"))
                })?;
            match &v.state {
                VersionState::Ready => return Ok(()),
                VersionState::Failed(reason) => {
                    return Err(ChangeError::Conflict(format!(
                        "`{model}` version `{version}` failed: {reason}"
                    )))
                }
                VersionState::Unloaded(reason @ NotLoaded::WaitingForStore(_))
                    if started.elapsed() > Duration::from_secs(1) =>
                {
                    return Err(ChangeError::Unavailable(format!(
                        "`{model}` version `{version}` cannot be loaded: {reason}"
                    )))
                }
                VersionState::Unloaded(_) => {
                    // Pinned: applying the model now marks it wanted and starts its load.
                    self.reapply(model, started.elapsed() < Duration::from_millis(20));
                }
                VersionState::Loading => {}
            }
            if started.elapsed() > Duration::from_secs(600) {
                return Err(ChangeError::Conflict(format!(
                    "`{model}` version `{version}` is still loading"
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Aliases of an unloaded model do not move: nothing would load their target.
fn refuse_unloaded(model: &str, view: &ModelView) -> Result<(), ChangeError> {
    if view.unloaded {
        return Err(ChangeError::ModelUnloaded {
            model: model.to_owned(),
        });
    }
    Ok(())
}

/// Where `alias` pointed before its current target, among the targets whose versions all still exist.
fn previous_target(view: &ModelView, alias: &str) -> Option<AliasTarget> {
    let exists = |v: &str| view.manifests.iter().any(|m| m.version == v);
    view.aliases
        .history
        .get(alias)
        .and_then(|h| {
            h.iter()
                .rev()
                .find(|t| t.versions().into_iter().all(exists))
        })
        .cloned()
}

/// Holds a version loaded while a promote to it is in flight.
struct Pin {
    registry: Arc<Registry>,
    model: String,
    version: String,
}

impl Drop for Pin {
    fn drop(&mut self) {
        {
            let mut pinned = self.registry.pinned.lock().unwrap();
            if let Some(at) = pinned
                .iter()
                .position(|(m, v)| *m == self.model && *v == self.version)
            {
                pinned.remove(at);
            }
        }
        // A version loaded for a promote that did not happen goes again.
        self.registry.reapply(&self.model, false);
    }
}

impl Registry {
    /// The versions of `model` that promotes in flight have pinned.
    fn pinned_versions(&self, model: &str) -> Vec<String> {
        self.pinned
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, _)| m == model)
            .map(|(_, v)| v.clone())
            .collect()
    }
}
