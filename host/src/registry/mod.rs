//! Model versions and where requests go. The [`Store`] keeps what a version is made of; the
//! [`Registry`] brings versions up from it (compile, initialise, self-test, warm pool) and publishes one
//! [`RoutingTable`] that request handlers read without locks and that changes only by being replaced
//! whole. A version only becomes a target once it is ready; the version it replaces keeps answering
//! the requests it already has, and unloads when the last of them is done.
//!
//! Which versions are loaded: every alias target and the newest ready version of each model (so a
//! fresh upload can be tried by version before it is promoted). Others are listed as unloaded and come
//! back when promoted.

mod routing;
mod store;
mod version;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;

pub use routing::{ModelEntry, RouteError, RoutingTable, DEFAULT_ALIAS};
pub use store::{check_name, write_atomically, Aliases, Store, VersionManifest};
pub use version::{ModelVersion, VersionState};

use crate::config::HostConfig;
use crate::engine::FerryEngine;

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
    /// The store failed (500).
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// The versions this host knows and the table that routes requests to them.
pub struct Registry {
    store: Store,
    engine: Arc<FerryEngine>,
    config: HostConfig,
    table: ArcSwap<RoutingTable>,
    /// Serialises changes (store writes and table swaps); readers never take it.
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

    /// The host configuration.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// Loads the store as it was left: every version listed, the targeted ones brought up (from the
    /// compiled cache when present), the rest listed as unloaded.
    pub fn load_all(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        let interrupted = self.store.clean_interrupted_uploads()?;
        if interrupted > 0 {
            tracing::warn!(
                files = interrupted,
                "removed uploads interrupted by a previous stop"
            );
        }
        let all = self.store.versions()?;
        let mut to_load = Vec::new();
        self.update(|table| {
            for (model, versions) in &all {
                let aliases = self.store.aliases(model).unwrap_or_else(|e| {
                    tracing::error!(model, error = %e, "ignoring unreadable aliases");
                    Aliases::default()
                });
                let wanted = targets(
                    &aliases,
                    versions.iter().map(|m| (m.version.as_str(), m.sequence)),
                );
                let unloaded = self.store.is_unloaded(model);
                let entry = table.models.entry(model.clone()).or_default();
                entry.aliases = aliases.current;
                for m in versions {
                    let state = if unloaded {
                        VersionState::Unloaded("unloaded on request".into())
                    } else if wanted.contains(&m.version) {
                        to_load.push(m.clone());
                        VersionState::Loading
                    } else {
                        VersionState::Unloaded(
                            "not targeted by an alias and not the newest version".into(),
                        )
                    };
                    entry.versions.insert(
                        m.version.clone(),
                        Arc::new(ModelVersion::listed(m.clone(), state)),
                    );
                }
            }
        });
        let count = to_load.len();
        for manifest in to_load {
            self.load_and_publish(manifest);
        }
        // A model whose newest version fails falls back to the newest one that comes up.
        for (model, versions) in &all {
            for m in versions.iter().rev() {
                let entry = self.table().models.get(model).cloned().unwrap_or_default();
                if entry.default_version().is_some() || self.store.is_unloaded(model) {
                    break;
                }
                if !matches!(
                    entry.versions.get(&m.version).map(|v| &v.state),
                    Some(VersionState::Unloaded(_))
                ) {
                    continue;
                }
                self.load_and_publish(m.clone());
            }
        }
        tracing::info!(loaded = count, elapsed = ?started.elapsed(), "store loaded");
        Ok(())
    }

    /// Records a new version in the store and lists it as loading; [`Registry::bring_up`] makes it ready.
    pub fn add_version(&self, manifest: VersionManifest) -> Result<Arc<ModelVersion>, ChangeError> {
        let _writer = self.writer.lock().unwrap();
        let table = self.table.load();
        if table
            .models
            .get(&manifest.model)
            .is_some_and(|m| m.versions.contains_key(&manifest.version))
        {
            return Err(ChangeError::Conflict(format!(
                "model `{}` already has a version `{}`; versions are immutable, pick another name",
                manifest.model, manifest.version
            )));
        }
        // The manifest is durable before the version is visible, so a crash from here on still finds it.
        self.store
            .put_version(&manifest)
            .map_err(|e| ChangeError::Invalid(format!("{e:#}")))?;
        let listed = Arc::new(ModelVersion::listed(
            manifest.clone(),
            VersionState::Loading,
        ));
        self.publish(|table| {
            table
                .models
                .entry(manifest.model.clone())
                .or_default()
                .versions
                .insert(manifest.version.clone(), listed.clone());
        });
        Ok(listed)
    }

    /// Brings a listed version up and publishes the outcome; then lets versions that are no longer
    /// targeted go (a new newest version replaces the previous newest).
    pub fn bring_up(&self, manifest: VersionManifest) -> Arc<ModelVersion> {
        let version = self.load_and_publish(manifest);
        self.let_untargeted_go(&version.manifest.model);
        version
    }

    /// Brings a listed version up and publishes the outcome, unloading nothing.
    fn load_and_publish(&self, manifest: VersionManifest) -> Arc<ModelVersion> {
        let limits = manifest
            .limits
            .clone()
            .unwrap_or_else(|| self.config.limits_for(&manifest.model));
        let version = Arc::new(ModelVersion::load(
            &self.engine,
            &self.store,
            manifest,
            limits,
            self.config.host.require_self_tests,
        ));
        let m = &version.manifest;
        match &version.state {
            VersionState::Ready => {
                tracing::info!(model = %m.model, version = %m.version, load_seconds = version.load_seconds, "version ready")
            }
            state => {
                tracing::error!(model = %m.model, version = %m.version, state = %state.describe(), "version did not come up")
            }
        }
        let published = version.clone();
        self.update(|table| {
            // A version deleted while it was loading stays deleted.
            if let Some(entry) = table.models.get_mut(&published.manifest.model) {
                if entry.versions.contains_key(&published.manifest.version) {
                    entry
                        .versions
                        .insert(published.manifest.version.clone(), published.clone());
                }
            }
        });
        version
    }

    /// Points `alias` of `model` at `version`, bringing the version up first if it is unloaded. The
    /// switch is one table swap; the previous target drains and unloads.
    pub fn set_alias(&self, model: &str, alias: &str, version: &str) -> Result<(), ChangeError> {
        check_name("alias", alias).map_err(|e| ChangeError::Invalid(e.to_string()))?;
        self.ensure_ready(model, version)?;
        let _writer = self.writer.lock().unwrap();
        let mut aliases = self.store.aliases(model)?;
        if let Some(previous) = aliases.current.insert(alias.to_owned(), version.to_owned()) {
            if previous != version {
                let history = aliases.history.entry(alias.to_owned()).or_default();
                history.push(previous);
                // Enough to roll back through a bad afternoon, bounded so the file stays small.
                let excess = history.len().saturating_sub(32);
                history.drain(..excess);
            }
        }
        self.save_aliases(model, &aliases, _writer)
    }

    /// Persists and publishes a model's aliases (the caller holds the writer, passed in to be
    /// released), then lets go of versions nothing targets any more.
    fn save_aliases(
        &self,
        model: &str,
        aliases: &Aliases,
        writer: std::sync::MutexGuard<'_, ()>,
    ) -> Result<(), ChangeError> {
        self.store.put_aliases(model, aliases)?;
        self.publish(|table| {
            if let Some(entry) = table.models.get_mut(model) {
                entry.aliases = aliases.current.clone();
            }
        });
        drop(writer);
        self.let_untargeted_go(model);
        Ok(())
    }

    /// Moves `alias` back to the version it pointed at before.
    pub fn rollback(&self, model: &str, alias: &str) -> Result<String, ChangeError> {
        let aliases = self.store.aliases(model)?;
        let table = self.table();
        let entry = table
            .models
            .get(model)
            .ok_or_else(|| ChangeError::NotFound(format!("unknown model `{model}`")))?;
        let previous = aliases
            .history
            .get(alias)
            .and_then(|h| h.iter().rev().find(|v| entry.versions.contains_key(*v)))
            .cloned()
            .ok_or_else(|| {
                ChangeError::Conflict(format!(
                    "alias `{alias}` of `{model}` has no earlier version to roll back to"
                ))
            })?;
        self.ensure_ready(model, &previous)?;
        let _writer = self.writer.lock().unwrap();
        let mut aliases = self.store.aliases(model)?;
        if let Some(history) = aliases.history.get_mut(alias) {
            if let Some(at) = history.iter().rposition(|v| *v == previous) {
                history.truncate(at);
            }
        }
        aliases.current.insert(alias.to_owned(), previous.clone());
        self.save_aliases(model, &aliases, _writer)?;
        Ok(previous)
    }

    /// Deletes a version; refused while an alias points at it.
    pub fn delete_version(&self, model: &str, version: &str) -> Result<(), ChangeError> {
        let _writer = self.writer.lock().unwrap();
        let table = self.table.load();
        let entry = table
            .models
            .get(model)
            .ok_or_else(|| ChangeError::NotFound(format!("unknown model `{model}`")))?;
        if !entry.versions.contains_key(version) {
            return Err(ChangeError::NotFound(format!(
                "model `{model}` has no version `{version}`"
            )));
        }
        if let Some((alias, _)) = entry.aliases.iter().find(|(_, v)| *v == version) {
            return Err(ChangeError::Conflict(format!(
                "alias `{alias}` points at `{model}` version `{version}`; move it first"
            )));
        }
        self.store.delete_version(model, version)?;
        self.publish(|table| {
            if let Some(entry) = table.models.get_mut(model) {
                entry.versions.remove(version);
            }
        });
        Ok(())
    }

    /// Unloads every version of `model` (OIP repository extension); it stays unloaded, across
    /// restarts too, until [`Registry::load_model`].
    pub fn unload_model(&self, model: &str) -> Result<(), ChangeError> {
        let _writer = self.writer.lock().unwrap();
        if !self.table.load().models.contains_key(model) {
            return Err(ChangeError::NotFound(format!("unknown model `{model}`")));
        }
        self.store.set_unloaded(model, true)?;
        self.publish(|table| {
            let entry = table.models.get_mut(model).expect("checked above");
            for v in entry.versions.values_mut() {
                *v = Arc::new(ModelVersion::listed(
                    v.manifest.clone(),
                    VersionState::Unloaded("unloaded on request".into()),
                ));
            }
        });
        Ok(())
    }

    /// Loads `model` again: its targeted versions come up (synchronously).
    pub fn load_model(&self, model: &str) -> Result<(), ChangeError> {
        let table = self.table();
        let entry = table
            .models
            .get(model)
            .ok_or_else(|| ChangeError::NotFound(format!("unknown model `{model}`")))?;
        self.store.set_unloaded(model, false)?;
        let aliases = self.store.aliases(model)?;
        let wanted = targets(
            &aliases,
            entry
                .versions
                .values()
                .map(|v| (v.manifest.version.as_str(), v.manifest.sequence)),
        );
        for v in entry
            .versions
            .values()
            .filter(|v| wanted.contains(&v.manifest.version) && !v.is_ready())
        {
            self.bring_up(v.manifest.clone());
        }
        Ok(())
    }

    /// Makes sure `version` of `model` is ready, bringing it up if it is unloaded.
    fn ensure_ready(&self, model: &str, version: &str) -> Result<(), ChangeError> {
        let table = self.table();
        let entry = table
            .models
            .get(model)
            .ok_or_else(|| ChangeError::NotFound(format!("unknown model `{model}`")))?;
        let v = entry.versions.get(version).ok_or_else(|| {
            ChangeError::NotFound(format!("model `{model}` has no version `{version}`"))
        })?;
        match &v.state {
            VersionState::Ready => Ok(()),
            VersionState::Loading => Err(ChangeError::Conflict(format!(
                "`{model}` version `{version}` is still loading"
            ))),
            VersionState::Failed(reason) => Err(ChangeError::Conflict(format!(
                "`{model}` version `{version}` failed: {reason}"
            ))),
            VersionState::Unloaded(_) => {
                // Not `bring_up`: the version is about to become a target, it must not be let go first.
                let up = self.load_and_publish(v.manifest.clone());
                match &up.state {
                    VersionState::Ready => Ok(()),
                    state => Err(ChangeError::Conflict(format!(
                        "`{model}` version `{version}` cannot be loaded: {}",
                        state.describe()
                    ))),
                }
            }
        }
    }

    /// Unloads ready versions of `model` that nothing targets any more. Requests already holding them
    /// finish first: the table drops its reference, the last request drops the instances.
    fn let_untargeted_go(&self, model: &str) {
        let _writer = self.writer.lock().unwrap();
        let table = self.table.load();
        let Some(entry) = table.models.get(model) else {
            return;
        };
        let aliases = Aliases {
            current: entry.aliases.clone(),
            history: Default::default(),
        };
        let ready = entry.versions.values().filter(|v| v.is_ready());
        let wanted = targets(
            &aliases,
            ready.map(|v| (v.manifest.version.as_str(), v.manifest.sequence)),
        );
        let idle: Vec<String> = entry
            .versions
            .values()
            .filter(|v| v.is_ready() && !wanted.contains(&v.manifest.version))
            .map(|v| v.manifest.version.clone())
            .collect();
        if idle.is_empty() {
            return;
        }
        tracing::info!(model, versions = ?idle, "unloading versions nothing targets any more");
        self.publish(|table| {
            let entry = table.models.get_mut(model).expect("present above");
            for version in &idle {
                let v = entry.versions.get_mut(version).expect("present above");
                *v = Arc::new(ModelVersion::listed(
                    v.manifest.clone(),
                    VersionState::Unloaded("replaced as target; drained".into()),
                ));
            }
        });
    }

    /// Applies `change` to a copy of the table and publishes it in one atomic store. Callers hold
    /// `writer`.
    fn publish(&self, change: impl FnOnce(&mut RoutingTable)) {
        let mut next = RoutingTable::clone(&self.table.load());
        change(&mut next);
        self.table.store(Arc::new(next));
    }

    fn update(&self, change: impl FnOnce(&mut RoutingTable)) {
        let _writer = self.writer.lock().unwrap();
        self.publish(change);
    }

    /// Loads a version that is listed (loading) in the background and returns at once.
    pub fn bring_up_in_background(self: &Arc<Self>, manifest: VersionManifest) {
        let registry = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("load-{}", manifest.model))
            .spawn(move || {
                registry.bring_up(manifest);
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a loader thread");
        }
    }

    /// A manifest for a new version of `model`: the given name, or the next number.
    pub fn new_manifest(
        &self,
        model: &str,
        version: Option<String>,
    ) -> Result<VersionManifest, ChangeError> {
        check_name("model", model).map_err(|e| ChangeError::Invalid(e.to_string()))?;
        let (sequence, next) = self.store.next_version(model)?;
        let version = version.unwrap_or(next);
        check_name("version", &version).map_err(|e| ChangeError::Invalid(e.to_string()))?;
        if DEFAULT_ALIAS == version {
            // A version named like the alias would make `/versions/production` ambiguous.
            return Err(ChangeError::Invalid(format!(
                "`{version}` is reserved for the alias"
            )));
        }
        Ok(VersionManifest {
            model: model.to_owned(),
            version,
            sequence,
            component_sha256: String::new(),
            weights_sha256: None,
            config_sha256: None,
            tests_sha256: None,
            limits: None,
        })
    }
}

/// The versions a model keeps loaded: its alias targets and its newest version.
fn targets<'a>(
    aliases: &Aliases,
    versions: impl Iterator<Item = (&'a str, u64)>,
) -> BTreeSet<String> {
    let mut wanted: BTreeSet<String> = aliases.current.values().cloned().collect();
    if let Some((newest, _)) = versions.max_by_key(|(_, seq)| *seq) {
        wanted.insert(newest.to_owned());
    }
    wanted
}
