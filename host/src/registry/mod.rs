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
//! What to load, keep, drain and route is decided by a pure function ([`plan`], whose module doc
//! states each rule and whose tests pin them); [`Registry`] only executes plans, under one lock, and
//! publishes the result. Waiting for a version watches the published table (`changed`), never polls.
//!
//! Which versions a host keeps loaded: every alias target and the newest version of each model that
//! has not failed there (so a fresh upload can be tried by version before it is promoted), and, until
//! that newest one is ready, the newest one that is. Others are listed as unloaded and come back when
//! promoted — up to `[store] keep_versions` of them per model: older ones that nothing names are
//! deleted ([`retention`]), and what a version leaves in the host's cache goes with it (`leftovers`).

pub mod audit;
mod budget;
pub mod latency;
mod leftovers;
pub mod names;
pub mod plan;
pub mod retention;
mod routing;
mod series;
mod store;
pub mod sync;
mod traffic;
mod version;
pub mod version_limits;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

pub use budget::{MemoryBudget, ProcessMemory};
pub use plan::{Listing, NotLoaded};
pub use routing::{
    heaviest, ModelEntry, Route, RouteError, Routed, RoutingTable, SplitRoute, DEFAULT_ALIAS,
};
pub use series::{Histogram, VersionSeries, LATENCY_BUCKETS};
pub use store::{
    check_graph_name, check_name, Aliases, ChangeRecord, HostStatus, HostVersion, ModelView, Store,
    VersionManifest,
};
pub use sync::SyncHealth;
pub use traffic::{AliasTarget, LogPolicy, Percent, Shadow, Split, TrafficPolicy};
pub use version::{LoadOptions, ModelVersion, Monitored, Usage, VersionArtifacts, VersionState};
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
    loading: Mutex<BTreeSet<Load>>,
    /// Loads started and not yet followed by their re-apply, by model ([`Registry::settle`] waits
    /// for them).
    loads_in_flight: Mutex<BTreeMap<String, usize>>,
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
            loads_in_flight: Default::default(),
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
        let to_load = self.converge(model, Some((ticket, view)), plan::Retry::No);
        for manifest in to_load {
            self.start_load(manifest);
        }
    }

    /// Applies the last view of `model` again (after a load, or a pin released); `retry` says
    /// whether versions that waited for the store are tried again.
    fn reapply(self: &Arc<Self>, model: &str, retry: plan::Retry) {
        for manifest in self.converge(model, None, retry) {
            self.start_load(manifest);
        }
    }

    /// Tries again every version that could not be loaded while the store was away.
    pub fn retry_waiting(self: &Arc<Self>) {
        let waiting: Vec<String> = self
            .table()
            .models
            .iter()
            // Only wanted versions wait: a plan turns an unwanted one "not wanted".
            .filter(|(_, entry)| {
                entry.versions.values().any(|v| {
                    matches!(
                        v.state,
                        VersionState::Unloaded(NotLoaded::WaitingForStore(_))
                    )
                })
            })
            .map(|(model, _)| model.clone())
            .collect();
        for model in waiting {
            self.reapply(&model, plan::Retry::WaitingForStore);
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

    /// Plans `model` against the view read with `read` (or the last one) and executes the plan:
    /// publishes the entry, collects what left it, and answers the loads to start.
    fn converge(
        &self,
        model: &str,
        read: Option<(u64, ModelView)>,
        retry: plan::Retry,
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
        let old = table.models.get(model);
        let pins = self.pinned_versions(model);
        let desired = plan::Desired {
            view: &view,
            pins: &pins,
        };
        let current = old.map(ModelEntry::planned);
        let in_flight = self.in_flight(model);
        match plan::plan(model, desired, current.as_ref(), &in_flight, retry) {
            plan::Plan::Nothing => Vec::new(),
            plan::Plan::Remove { gone } => {
                self.publish(|t| {
                    t.models.remove(model);
                });
                self.collect_leftovers(gone);
                Vec::new()
            }
            plan::Plan::Publish(plan) => {
                let none = ModelEntry::default();
                self.execute(model, old.unwrap_or(&none), plan)
            }
        }
    }

    /// Publishes what `plan` says of `model` (whose entry was `old`); answers the loads to start.
    fn execute(
        &self,
        model: &str,
        old: &ModelEntry,
        plan: plan::ModelPlan,
    ) -> Vec<VersionManifest> {
        for version in &plan.new_clashes {
            tracing::error!(model, version, "a version in the store has an alias's name: the alias wins, the version is not served");
        }
        if !plan.drained.is_empty() {
            tracing::info!(model, versions = ?plan.drained, "unloading versions nothing targets any more (in-flight requests finish first)");
        }
        if !plan.unchanged {
            let versions = plan
                .versions
                .into_iter()
                .map(|(name, listed)| {
                    let version = match listed {
                        plan::Listed::Keep | plan::Listed::Carry => old.versions[&name].clone(),
                        plan::Listed::Fresh { manifest, state } => {
                            Arc::new(ModelVersion::listed(manifest, state))
                        }
                    };
                    (name, version)
                })
                .collect();
            let entry = ModelEntry {
                versions,
                aliases: plan.aliases,
                traffic: Arc::new(plan.traffic),
            };
            self.publish(|t| {
                t.models.insert(model.to_owned(), entry);
            });
        }
        if !plan.gone.is_empty() {
            self.collect_leftovers(plan.gone);
        }
        plan.loads
    }

    /// The loads of `model` running now.
    fn in_flight(&self, model: &str) -> plan::InFlight {
        self.loading
            .lock()
            .unwrap()
            .iter()
            .filter(|load| load.model == model)
            .map(|load| (load.version.clone(), load.sequence))
            .collect()
    }

    /// Loads a version on a thread of its own, then publishes it and applies the model again (so
    /// aliases waiting for it move and versions it replaces go).
    fn start_load(self: &Arc<Self>, manifest: VersionManifest) {
        // The sequence number tells apart a version deleted and created again under its name.
        let load = Load {
            model: manifest.model.clone(),
            version: manifest.version.clone(),
            sequence: manifest.sequence,
        };
        if !self.loading.lock().unwrap().insert(load.clone()) {
            return;
        }
        *self
            .loads_in_flight
            .lock()
            .unwrap()
            .entry(load.model.clone())
            .or_default() += 1;
        /// Ends the load's bookkeeping however the thread ends (a panic included).
        struct Done {
            registry: Arc<Registry>,
            load: Load,
            /// The load left `loading` already: another load of the same version may be there now.
            released: bool,
        }
        impl Done {
            /// No longer loading (still in flight until its follow-up plan has run).
            fn release(&mut self) {
                self.registry.loading.lock().unwrap().remove(&self.load);
                self.released = true;
            }
        }
        impl Drop for Done {
            fn drop(&mut self) {
                if !self.released {
                    self.registry.loading.lock().unwrap().remove(&self.load);
                }
                let mut in_flight = self.registry.loads_in_flight.lock().unwrap();
                if let Some(n) = in_flight.get_mut(&self.load.model) {
                    *n -= 1;
                    if *n == 0 {
                        in_flight.remove(&self.load.model);
                    }
                }
                drop(in_flight);
                self.registry.changed.send_modify(|n| *n += 1);
            }
        }
        let mut done = Done {
            registry: self.clone(),
            load,
            released: false,
        };
        let registry = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("load-{}", manifest.model))
            .spawn(move || {
                // Loads (compile, init, snapshot, self-tests) give way to calls of ready versions: a
                // version that is ready must answer at its usual speed while others load.
                crate::engine::background::lower_this_thread();
                let model = manifest.model.clone();
                let slot = registry.tokio.block_on(registry.load_slots.acquire());
                // A load that panics fails its version (a bug, said so), rather than leaving it
                // loading with nothing to load it again.
                let attempt = manifest.clone();
                let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    registry.load(attempt)
                }))
                .unwrap_or_else(|panic| {
                    let why = crate::panics::message(panic.as_ref());
                    tracing::error!(model = %manifest.model, version = %manifest.version, panic = %why, "loading a version panicked");
                    ModelVersion::listed(manifest, plan::Listing::Failed(format!("loading panicked: {why}")))
                });
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
                done.release();
                registry.reapply(&model, plan::Retry::No);
                drop(done);
            });
        if let Err(e) = spawned {
            // The version stays listed loading with no load running: the next plan starts it again.
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
                    drift_window: self.config.monitoring.window(),
                },
            ),
            Err(e @ StorageError::Unavailable(_)) => ModelVersion::listed(
                manifest,
                plan::Listing::NotLoaded(NotLoaded::WaitingForStore(e.to_string())),
            ),
            Err(e) => ModelVersion::listed(
                manifest,
                plan::Listing::Failed(format!("reading its files: {e}")),
            ),
        };
        let m = &version.manifest;
        match &version.state {
            VersionState::Ready(_) => {
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
            let read = VersionArtifacts::read_for_instances(&blobs, &manifest);
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
        let listed = table
            .models
            .get(&model)
            .and_then(|e| e.versions.get(&name))
            .map(|v| v.planned());
        match plan::loaded(listed.as_ref(), &version.manifest) {
            plan::Loaded::Publish => {
                let version = Arc::new(version);
                let pool = version.ready().map(|r| r.pool.clone());
                self.publish(|t| {
                    if let Some(entry) = t.models.get_mut(&model) {
                        entry.versions.insert(name, version);
                    }
                });
                pool
            }
            // Unloaded while it loaded: it stays so.
            plan::Loaded::Discard => None,
            // Deleted or replaced while it loaded: what it just wrote to the cache goes with it.
            plan::Loaded::DiscardAndCollect => {
                self.collect_leftovers(vec![version.manifest.clone()]);
                None
            }
        }
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
        self.settle_on(None, limit).await
    }

    /// Waits until no version of `model` (of any, for `None`) is loading, nor any load of it is
    /// still to be followed by the plan that moves its aliases; at most `limit`.
    async fn settle_on(&self, model: Option<&str>, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        // Subscribed before looking, so a change between the look and the wait still wakes it.
        let mut changes = self.changed.subscribe();
        let ours = |m: &str| model.is_none_or(|model| model == m);
        loop {
            let busy = self.loads_in_flight.lock().unwrap().keys().any(|m| ours(m))
                || self
                    .table()
                    .models
                    .iter()
                    .filter(|(m, _)| ours(m))
                    .flat_map(|(_, e)| e.versions.values())
                    .any(|v| v.is_loading());
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
            profile_sha256: None,
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
            .unwrap_or_else(|| Arc::new(ModelVersion::listed(manifest, plan::Listing::Loading))))
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
        let ticket = self.ticket();
        let view = self.store.model(model).await?;
        self.apply(model, view.clone(), ticket);
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

    /// Loads `model` again: its targeted versions come up (this waits for them — for this model's
    /// loads only). Whether any came up is [`Registry::not_serving`]'s to say: the model is loaded
    /// either way, on every host.
    pub async fn load_model(self: &Arc<Self>, model: &str) -> Result<(), ChangeError> {
        self.known_model(model).await?;
        self.store.set_unloaded(model, false).await?;
        self.refresh(model).await?;
        self.settle_on(Some(model), Duration::from_secs(600)).await;
        Ok(())
    }

    /// Why requests without a version find nothing to answer them for `model` here (`None`: they
    /// do): still loading, or every version failed or waits for the store, with each one's reason.
    pub fn not_serving(&self, model: &str) -> Option<ChangeError> {
        let table = self.table();
        let entry = table.models.get(model)?;
        if entry.default_route().is_some() {
            return None;
        }
        if entry.versions.values().any(|v| v.is_loading()) {
            return Some(ChangeError::Unavailable(format!(
                "model `{model}` is still loading"
            )));
        }
        let why: Vec<String> = entry
            .versions
            .values()
            .filter_map(|v| {
                Some(format!(
                    "version `{}` {}",
                    v.manifest.version,
                    v.state.reason()?
                ))
            })
            .collect();
        Some(ChangeError::Unavailable(format!(
            "model `{model}` has no ready version: {}",
            why.join("; ")
        )))
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

    /// Makes sure `version` of `model` is ready here, loading it (and waiting) if needed. The
    /// caller has pinned it, so it is wanted: one plan starts its load (trying once more a version
    /// that waited for the store), and the published table says when it is done.
    async fn ensure_ready(self: &Arc<Self>, model: &str, version: &str) -> Result<(), ChangeError> {
        // Subscribed before the plan, so nothing it publishes is missed.
        let mut changes = self.changed.subscribe();
        self.reapply(model, plan::Retry::WaitingForStore);
        let wait = async {
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
                    VersionState::Ready(_) => return Ok(()),
                    VersionState::Failed(reason) => {
                        return Err(ChangeError::Conflict(format!(
                            "`{model}` version `{version}` failed: {reason}"
                        )))
                    }
                    VersionState::Unloaded(reason @ NotLoaded::WaitingForStore(_)) => {
                        return Err(ChangeError::Unavailable(format!(
                            "`{model}` version `{version}` cannot be loaded: {reason}"
                        )))
                    }
                    VersionState::Unloaded(NotLoaded::OnRequest) => {
                        return Err(ChangeError::ModelUnloaded {
                            model: model.to_owned(),
                        })
                    }
                    // Another plan ran before the pin counted: this one wants it (a plan that
                    // changes nothing publishes nothing, so this never spins).
                    VersionState::Unloaded(_) => self.reapply(model, plan::Retry::No),
                    VersionState::Loading => {}
                }
                drop(table);
                if changes.changed().await.is_err() {
                    return Err(ChangeError::Unavailable("the host is shutting down".into()));
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(600), wait)
            .await
            .unwrap_or_else(|_| {
                Err(ChangeError::Conflict(format!(
                    "`{model}` version `{version}` is still loading"
                )))
            })
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

/// A load running on this host (the sequence tells apart a version deleted and created again under
/// its name).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Load {
    model: String,
    version: String,
    sequence: u64,
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
        self.registry.reapply(&self.model, plan::Retry::No);
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

#[cfg(test)]
mod tests;
