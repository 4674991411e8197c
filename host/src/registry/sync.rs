//! Model sync: every host converges on what the store says, by polling it. One poll is one
//! conditional GET of the change record (`changes.json`): unchanged (the usual case) costs that one
//! request whatever the number of models; changed, the host reads again only the models whose
//! generation moved and applies each ([`Registry::apply`]: load-before-swap). Each host publishes its
//! own status (`hosts/<id>.json`: heartbeat, and per version ready or failed with the reason), which
//! `GET /v1/fleet` reads.
//!
//! Static stability: when the store cannot be reached, nothing that is serving changes — the host
//! keeps its table, stays ready, counts the failures and keeps polling; a host that starts during an
//! outage serves the state it last synced, kept in its cache directory. When the store answers again,
//! the host catches up on what changed meanwhile and retries what was waiting for the store.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::stamps::unix_ms;

use super::{ChangeRecord, HostStatus, HostVersion, ModelView, Registry};
use crate::storage::{ObjectVersion, StorageError};

/// How syncing with the store goes, for `/metrics` and readiness.
#[derive(Debug, Default)]
pub struct SyncHealth {
    /// When the last poll reached the store (Unix ms; 0: never).
    pub last_success_unix_ms: AtomicU64,
    /// Polls that could not reach the store.
    pub failures: AtomicU64,
    /// Models re-read and applied because they changed.
    pub changes_applied: AtomicU64,
    /// The change record generation this host has applied.
    pub generation: AtomicU64,
    /// Whether the last poll reached the store.
    pub reachable: AtomicBool,
    /// Why the last poll failed.
    pub last_error: Mutex<Option<String>>,
}

/// How a host syncs.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Between polls of the change record.
    pub interval: Duration,
    /// Between two publications of this host's status when nothing changed.
    pub heartbeat: Duration,
    /// This host's id in the fleet.
    pub host: String,
    /// Where this host listens.
    pub address: String,
    /// Between garbage collections of the store (`None`: never, from this host).
    pub gc_interval: Option<Duration>,
    /// How old an unnamed blob must be before it is collected.
    pub gc_grace: Duration,
    /// Between listings of every model's files, the safety net for a change the change record
    /// does not name (its writer died between writing it and announcing it).
    pub reconcile_interval: Duration,
    /// Where deletions past retention are recorded (see [`super::retention`]).
    pub audit: Option<super::audit::AuditLog>,
}

/// The state last synced from a store, kept on the host's disk for a start during an outage.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LastSynced {
    record: ChangeRecord,
    models: BTreeMap<String, ModelView>,
}

/// One host's sync with its store.
pub struct Syncer {
    registry: Arc<Registry>,
    options: SyncOptions,
    /// The version of the change record last applied.
    seen: Option<ObjectVersion>,
    /// Model → generation applied.
    applied: BTreeMap<String, u64>,
    record: ChangeRecord,
    /// Read everything at the next successful poll (after a start from the local snapshot).
    needs_full: bool,
    started_unix_ms: u64,
    published: Option<(Vec<HostVersion>, bool)>,
    last_heartbeat: Option<Instant>,
    last_gc: Instant,
    /// Model → fingerprint of its files at the last listing.
    fingerprints: BTreeMap<String, u64>,
    last_reconcile: Instant,
    /// Models to look at for versions past retention (changed since the last look).
    retention_due: BTreeSet<String>,
    /// Whether this host is the one that deletes versions past retention, and when that was asked.
    leads: Option<(bool, Instant)>,
}

impl Syncer {
    /// A syncer for `registry`'s store.
    pub fn new(registry: Arc<Registry>, options: SyncOptions) -> Syncer {
        Syncer {
            registry,
            options,
            seen: None,
            applied: BTreeMap::new(),
            record: ChangeRecord::default(),
            needs_full: true,
            started_unix_ms: unix_ms(SystemTime::now()),
            published: None,
            last_heartbeat: None,
            last_gc: Instant::now(),
            fingerprints: BTreeMap::new(),
            last_reconcile: Instant::now(),
            retention_due: BTreeSet::new(),
            leads: None,
        }
    }

    fn snapshot_path(&self) -> PathBuf {
        let name: String = self
            .registry
            .store()
            .describe()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let digest = crate::stamps::sha256_hex(self.registry.store().describe().as_bytes());
        self.registry.store().blobs().state_dir().join(format!(
            "{}-{}.json",
            &digest[..12],
            name.trim_start_matches('_')
        ))
    }

    /// Loads what the store has — or, when it cannot be reached, what this host last synced from it
    /// — and waits until the targeted versions have come up (readiness follows this). A host that has
    /// never synced with this store waits for it: it has nothing to serve.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            match self.full().await {
                Ok(()) => break,
                Err(e @ StorageError::Unavailable(_)) => {
                    self.failed(&e);
                    let path = self.snapshot_path();
                    let snapshot = tokio::fs::read(&path)
                        .await
                        .ok()
                        .and_then(|b| serde_json::from_slice::<LastSynced>(&b).ok());
                    if let Some(snapshot) = snapshot {
                        tracing::warn!(error = %e, snapshot = %path.display(), models = snapshot.models.len(),
                            "the store is unreachable: serving the state last synced from it");
                        self.record = snapshot.record;
                        let ticket = self.registry.ticket();
                        for (model, view) in snapshot.models {
                            self.registry.apply(&model, view, ticket);
                        }
                        self.needs_full = true;
                        break;
                    }
                    if self.registry.sync.failures.load(Ordering::Relaxed) == 1 {
                        tracing::warn!(error = %e, "the store is unreachable and this host has never synced with it: not ready until it answers");
                    }
                    tokio::time::sleep(self.options.interval).await;
                }
                Err(e) => {
                    return Err(anyhow::anyhow!(
                        "reading the store {}: {e}",
                        self.registry.store().describe()
                    ))
                }
            }
        }
        self.registry.settle(Duration::from_secs(3600)).await;
        let loaded = self
            .registry
            .table()
            .versions()
            .filter(|v| v.is_ready())
            .count();
        tracing::info!(loaded, elapsed = ?started.elapsed(), store = %self.registry.store().describe(), "store loaded");
        self.heartbeat().await;
        Ok(())
    }

    /// Polls until the task is dropped.
    pub async fn run(mut self) {
        loop {
            tokio::time::sleep(self.options.interval).await;
            self.poll().await;
            self.reconcile().await;
            self.heartbeat().await;
            self.retain().await;
            self.collect_garbage().await;
        }
    }

    /// One poll: the change record, then whatever it says changed.
    pub async fn poll(&mut self) {
        let was_reachable = self.registry.sync.reachable.load(Ordering::Relaxed);
        let result = if self.needs_full {
            self.full().await
        } else {
            self.incremental().await
        };
        match result {
            Ok(()) => {
                if !was_reachable {
                    tracing::info!("the store answers again; caught up");
                }
                // Versions that could not be read while the store was away are tried again.
                self.registry.retry_waiting();
            }
            Err(e) => self.failed(&e),
        }
    }

    fn failed(&self, e: &StorageError) {
        let health = &self.registry.sync;
        health.failures.fetch_add(1, Ordering::Relaxed);
        if health.reachable.swap(false, Ordering::Relaxed)
            || health.last_error.lock().unwrap().is_none()
        {
            tracing::warn!(error = %e, "cannot sync with the store; serving what this host has");
        }
        *health.last_error.lock().unwrap() = Some(e.to_string());
    }

    fn succeeded(&mut self, record: ChangeRecord, seen: Option<ObjectVersion>) {
        let health = &self.registry.sync;
        health
            .last_success_unix_ms
            .store(unix_ms(SystemTime::now()), Ordering::Relaxed);
        health.reachable.store(true, Ordering::Relaxed);
        health
            .generation
            .store(record.generation, Ordering::Relaxed);
        *health.last_error.lock().unwrap() = None;
        self.record = record;
        self.seen = seen;
    }

    /// Reads every model (at start, and after starting from the snapshot).
    async fn full(&mut self) -> Result<(), StorageError> {
        let store = self.registry.store().clone();
        let ticket = self.registry.ticket();
        // The record first: a change made after this read shows up as a new record at the next poll.
        let (record, seen) = match store.changes().await? {
            Some((record, version)) => (record, Some(version)),
            None => (ChangeRecord::default(), None),
        };
        self.fingerprints = store.fingerprints().await?;
        self.last_reconcile = Instant::now();
        let models = store.all_models().await?;
        let present: BTreeSet<String> = models.keys().cloned().collect();
        for (model, view) in &models {
            self.registry.apply(model, view.clone(), ticket);
        }
        self.retention_due.extend(present.iter().cloned());
        self.registry.retain_models(&present, ticket);
        self.applied = record.models.clone();
        self.needs_full = false;
        self.succeeded(record, seen);
        self.save_snapshot().await;
        Ok(())
    }

    /// Reads the models whose generation moved since the last poll.
    async fn incremental(&mut self) -> Result<(), StorageError> {
        let store = self.registry.store().clone();
        let changed = match &self.seen {
            Some(seen) => store.changes_since(seen).await?,
            None => store.changes().await?,
        };
        let Some((record, seen)) = changed else {
            let record = self.record.clone();
            let seen = self.seen.clone();
            self.succeeded(record, seen);
            return Ok(());
        };
        let mut applied = 0;
        for (model, generation) in &record.models {
            if self.applied.get(model) == Some(generation) {
                continue;
            }
            // The change record is written by others: a name the full listing would skip is skipped.
            if !super::names::listed_model(model) {
                tracing::debug!(model, "ignoring an invalid model name in the change record");
                continue;
            }
            let ticket = self.registry.ticket();
            let view = store.model(model).await?;
            self.registry.apply(model, view, ticket);
            self.applied.insert(model.clone(), *generation);
            self.retention_due.insert(model.clone());
            applied += 1;
        }
        self.registry
            .sync
            .changes_applied
            .fetch_add(applied, Ordering::Relaxed);
        if applied > 0 {
            tracing::info!(
                models = applied,
                generation = record.generation,
                "applied changes from the store"
            );
        }
        self.succeeded(record, Some(seen));
        if applied > 0 {
            self.save_snapshot().await;
        }
        Ok(())
    }

    /// Every `reconcile_interval`, one listing of every model's files: a model whose files changed
    /// without the change record saying so is read again (O(models / 1000) requests: a listing page
    /// holds 1000 keys).
    async fn reconcile(&mut self) {
        if self.needs_full || self.last_reconcile.elapsed() < self.options.reconcile_interval {
            return;
        }
        self.last_reconcile = Instant::now();
        // Every model, now and then: retention looks at what this host last read (no store reads
        // unless a version is past it).
        self.retention_due.extend(self.registry.views().into_keys());
        let store = self.registry.store().clone();
        let ticket = self.registry.ticket();
        let result: Result<usize, StorageError> = async {
            let now = store.fingerprints().await?;
            let mut changed = 0;
            for model in now
                .keys()
                .chain(self.fingerprints.keys())
                .collect::<BTreeSet<_>>()
            {
                if now.get(model) == self.fingerprints.get(model)
                    || !super::names::listed_model(model)
                {
                    continue;
                }
                let view = store.model(model).await?;
                self.registry.apply(model, view, ticket);
                changed += 1;
            }
            self.fingerprints = now;
            Ok(changed)
        }
        .await;
        match result {
            Ok(0) => {}
            Ok(changed) => {
                // Most are this host's own and others' announced changes seen since the last listing.
                tracing::debug!(models = changed, "reconciled models whose files changed");
                self.save_snapshot().await;
            }
            Err(e) => self.failed(&e),
        }
    }

    async fn save_snapshot(&self) {
        let snapshot = LastSynced {
            record: self.record.clone(),
            models: self.registry.views(),
        };
        let path = self.snapshot_path();
        let bytes = serde_json::to_vec(&snapshot).expect("snapshots serialise");
        let written =
            tokio::task::spawn_blocking(move || crate::files::write_atomically(&path, &bytes))
                .await;
        if let Ok(Err(e)) = written {
            tracing::warn!(error = %e, "cannot keep the synced state on the local disk");
        }
    }

    /// This host's status as it should be published now.
    pub fn status(&self) -> HostStatus {
        let table = self.registry.table();
        let mut versions = Vec::new();
        for (model, entry) in &table.models {
            for (name, v) in &entry.versions {
                let reason = v.state.reason();
                let aliases = entry
                    .aliases
                    .iter()
                    .filter(|(_, t)| t.names(name))
                    .map(|(a, _)| a.clone())
                    .collect();
                versions.push(HostVersion {
                    model: model.clone(),
                    version: name.clone(),
                    state: v.state.name().into(),
                    reason,
                    aliases,
                });
            }
        }
        HostStatus {
            host: self.options.host.clone(),
            address: self.options.address.clone(),
            heartbeat_unix_ms: unix_ms(SystemTime::now()),
            started_unix_ms: self.started_unix_ms,
            generation: self.record.generation,
            store_reachable: self.registry.sync.reachable.load(Ordering::Relaxed),
            versions,
        }
    }

    /// Publishes this host's status when it changed or a heartbeat is due.
    async fn heartbeat(&mut self) {
        let status = self.status();
        let key = (status.versions.clone(), status.store_reachable);
        let due = self
            .last_heartbeat
            .is_none_or(|t| t.elapsed() >= self.options.heartbeat);
        if !due && self.published.as_ref() == Some(&key) {
            return;
        }
        if !status.store_reachable && self.published.is_some() {
            return; // nothing to write to
        }
        match self.registry.store().publish_host(&status).await {
            Ok(()) => {
                self.published = Some(key);
                self.last_heartbeat = Some(Instant::now());
            }
            Err(e) => tracing::debug!(error = %e, "cannot publish this host's status"),
        }
    }

    /// Whether this host deletes versions past retention (see [`super::retention::leader`]),
    /// asked of the store at most every `reconcile_interval`.
    async fn leads(&mut self) -> bool {
        if let Some((leads, at)) = self.leads {
            if at.elapsed() < self.options.reconcile_interval {
                return leads;
            }
        }
        match self.registry.store().hosts().await {
            Ok(hosts) => {
                let staleness = super::retention::leader_staleness(self.options.heartbeat);
                let now = unix_ms(SystemTime::now());
                let leads = super::retention::leader(&self.options.host, &hosts, now, staleness);
                if self.leads.is_none_or(|(was, _)| was != leads) {
                    tracing::info!(
                        leads,
                        "{} the host that deletes versions past retention",
                        if leads { "this is" } else { "another host is" }
                    );
                }
                self.leads = Some((leads, Instant::now()));
                leads
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the fleet's hosts; retention waits");
                false
            }
        }
    }

    /// Deletes the versions past retention of the models due for a look, on the fleet's one
    /// deleting host (see [`super::retention`]).
    async fn retain(&mut self) {
        if self.retention_due.is_empty() {
            return;
        }
        if self.registry.config().store.keep_versions == 0
            || !self.registry.sync.reachable.load(Ordering::Relaxed)
            || !self.leads().await
        {
            self.retention_due.clear();
            return;
        }
        for model in std::mem::take(&mut self.retention_due) {
            let audit = self.options.audit.as_ref();
            if let Err(e) = self.registry.apply_retention(&model, audit).await {
                // Looked at again with the next change, listing or collection.
                tracing::warn!(model, error = %e, "retention could not delete old versions");
            }
        }
    }

    async fn collect_garbage(&mut self) {
        let Some(every) = self.options.gc_interval else {
            return;
        };
        if self.last_gc.elapsed() < every || !self.registry.sync.reachable.load(Ordering::Relaxed) {
            return;
        }
        self.last_gc = Instant::now();
        // Versions past retention first: their blobs go in this same collection.
        self.retention_due.extend(self.registry.views().into_keys());
        self.retain().await;
        match self
            .registry
            .store()
            .collect_garbage(self.options.gc_grace)
            .await
        {
            Ok((0, _)) => {}
            Ok((blobs, bytes)) => {
                tracing::info!(blobs, bytes, "garbage-collected blobs no version names")
            }
            Err(e) => tracing::warn!(error = %e, "garbage collection failed; tried again later"),
        }
    }
}
