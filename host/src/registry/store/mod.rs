//! What a store holds, in the registry's terms, on any [`Storage`] backend:
//!
//! ```text
//! blobs/<sha256>                 component, weights, config and tests files, by content
//! models/<model>/<version>.json  a version's manifest: which blobs, which limits (immutable)
//! models/<model>/aliases.json    alias → version (or a weighted split), and each alias's earlier targets
//! models/<model>/traffic.json    shadowing and the prediction log's share (see [`TrafficPolicy`])
//! models/<model>/unloaded        present while the model is unloaded on request
//! changes.json                   the change record: a generation per model, bumped by every change
//! hosts/<host>.json              each host's status: heartbeat and what it serves
//! audit/<model>/<ms>-<host>-….json  one record per management action, created once (see `audit`)
//! ```
//!
//! Every write two hosts could race is conditional: a manifest is created only if absent (the loser
//! gets a conflict), aliases and the change record are compare-and-swapped and retried on a lost race.
//! A manifest is written only after every blob it names is durable, and the change record is bumped
//! only after the manifest, so a host that sees a change finds everything it names. The layout is the
//! one the local store always had: stores written by earlier versions still load.

mod documents;
mod gc;
mod hosts;
mod keys;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use super::traffic::TrafficPolicy;
use super::ChangeError;
use crate::stamps::unix_ms;
use crate::storage::{BlobCache, Failure, ObjectVersion, Storage, StorageError, Write};

pub use documents::{
    check_graph_name, check_name, Aliases, ChangeRecord, ModelView, VersionManifest,
};
use documents::{check_manifest, sane_aliases, sane_traffic, TrafficDoc, WriteLog};
pub use hosts::{HostStatus, HostVersion};
use keys::*;

impl From<StorageError> for ChangeError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound(m) => ChangeError::NotFound(format!("{m} is not in the store")),
            StorageError::AlreadyExists(m) | StorageError::Precondition(m) => {
                ChangeError::Conflict(format!("{m} was changed meanwhile by another writer; try again"))
            }
            StorageError::Unavailable(m) => ChangeError::Unavailable(format!(
                "the store is unreachable ({m}); this host keeps serving what it has, changes must wait"
            )),
            StorageError::Disk(m) => ChangeError::NoRoom(m.to_string()),
            // Kept whole, its cause included, for the log.
            e @ (StorageError::Corrupt(_) | StorageError::Other(_)) => ChangeError::Store(e.into()),
        }
    }
}

/// How often a lost compare-and-swap is retried before the change is answered with a conflict.
const CAS_ATTEMPTS: usize = 32;

/// A store: the registry's view of a [`Storage`], with the host's blob cache in front of it.
#[derive(Debug, Clone)]
pub struct Store {
    storage: Arc<dyn Storage>,
    blobs: BlobCache,
}

impl Store {
    /// The store behind `blobs`.
    pub fn new(blobs: BlobCache) -> Store {
        Store {
            storage: blobs.storage().clone(),
            blobs,
        }
    }

    /// The blob cache (and upload staging) of this host.
    pub fn blobs(&self) -> &BlobCache {
        &self.blobs
    }

    /// Where the store is.
    pub fn describe(&self) -> String {
        self.storage.describe()
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(T, ObjectVersion)>, StorageError> {
        match self.storage.get(key).await {
            Ok(object) => {
                let value = serde_json::from_slice(&object.bytes)
                    .map_err(|e| StorageError::Other(Failure::new(key, e)))?;
                Ok(Some((value, object.version)))
            }
            Err(StorageError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn json(value: &impl Serialize) -> Bytes {
        Bytes::from(serde_json::to_vec_pretty(value).expect("store documents serialise"))
    }

    /// The change record and its version; `None` while the store has never recorded a change.
    pub async fn changes(&self) -> Result<Option<(ChangeRecord, ObjectVersion)>, StorageError> {
        self.get_json(CHANGES).await
    }

    /// The change record if it is no longer at `version` (`Ok(None)`: nothing changed).
    pub async fn changes_since(
        &self,
        version: &ObjectVersion,
    ) -> Result<Option<(ChangeRecord, ObjectVersion)>, StorageError> {
        match self.storage.get_if_changed(CHANGES, version).await? {
            None => Ok(None),
            Some(object) => {
                let record = serde_json::from_slice(&object.bytes)
                    .map_err(|e| StorageError::Other(Failure::new(CHANGES, e)))?;
                Ok(Some((record, object.version)))
            }
        }
    }

    /// Applies `change` to the change record by compare-and-swap, retrying lost races; returns the
    /// new generation.
    async fn bump(&self, change: impl Fn(&mut ChangeRecord, u64)) -> Result<u64, StorageError> {
        // A store written before the change record existed: generations start above every sequence
        // number its versions already have.
        let first = || async {
            let highest = self
                .all_models()
                .await?
                .values()
                .flat_map(|m| &m.manifests)
                .map(|m| m.sequence)
                .max();
            Ok(ChangeRecord {
                generation: highest.unwrap_or(0),
                ..Default::default()
            })
        };
        let swapped = self
            .swap(CHANGES, first, |record: &mut ChangeRecord| {
                record.generation += 1;
                change(record, record.generation);
                Ok::<_, StorageError>(record.generation)
            })
            .await?;
        swapped.map(|(_, generation)| generation).ok_or_else(|| {
            StorageError::Precondition(format!("{CHANGES} (too many concurrent changes)"))
        })
    }

    /// The one way a store document changes: read it (or start from `first()` when there is none),
    /// let `change` edit it (or refuse), write it back on the condition that nobody wrote it
    /// meanwhile, and read it back for this write's id (see [`WriteLog`]). A lost race, either way,
    /// reads again and applies `change` again, up to `CAS_ATTEMPTS` times (then `None`).
    async fn swap<D, T, E, F>(
        &self,
        key: &str,
        first: impl Fn() -> F,
        mut change: impl FnMut(&mut D) -> Result<T, E>,
    ) -> Result<Option<(D, T)>, E>
    where
        D: WriteLog + Serialize + serde::de::DeserializeOwned,
        E: From<StorageError>,
        F: std::future::Future<Output = Result<D, StorageError>>,
    {
        for attempt in 0..CAS_ATTEMPTS {
            let (mut doc, mode) = match self.get_json::<D>(key).await? {
                Some((doc, version)) => (doc, Write::Replace(version)),
                None => (first().await?, Write::Create),
            };
            let outcome = change(&mut doc)?;
            let id = doc.record_write();
            match self.storage.put(key, Self::json(&doc), mode).await {
                Ok(_) => {
                    let now = self.get_json::<D>(key).await?;
                    if now.is_some_and(|(mut now, _)| now.writes().contains(&id)) {
                        return Ok(Some((doc, outcome)));
                    }
                    tracing::warn!(key, "a racing write replaced this one; applying it again");
                }
                Err(StorageError::Precondition(_) | StorageError::AlreadyExists(_)) => {}
                Err(e) => return Err(e.into()),
            }
            backoff(attempt).await;
        }
        Ok(None)
    }

    /// Records that `model` changed, so every host looks at it again.
    pub async fn announce(&self, model: &str) -> Result<u64, StorageError> {
        self.bump(|record, generation| {
            record.models.insert(model.to_owned(), generation);
        })
        .await
    }

    /// Every model in the store, from one listing (and a read of each manifest not in `known`, so
    /// a host that has seen a manifest never reads it again: manifests are immutable).
    pub async fn all_models(&self) -> Result<BTreeMap<String, ModelView>, StorageError> {
        let listed = self.storage.list("models/").await?;
        let mut by_model: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for l in listed {
            if let Some((model, _)) = l
                .key
                .strip_prefix("models/")
                .and_then(|k| k.split_once('/'))
            {
                by_model
                    .entry(model.to_owned())
                    .or_default()
                    .push(l.key.clone());
            }
        }
        let mut models = BTreeMap::new();
        for (model, keys) in by_model {
            if !super::names::listed_model(&model) {
                continue;
            }
            models.insert(model.clone(), self.view_from_keys(&model, &keys).await?);
        }
        Ok(models)
    }

    /// A fingerprint of every model's files (keys, sizes, modification times), from one listing:
    /// what changed since an earlier fingerprint must be read again, whatever the change record says.
    pub async fn fingerprints(&self) -> Result<BTreeMap<String, u64>, StorageError> {
        use std::hash::{Hash, Hasher};
        let mut hashers: BTreeMap<String, std::hash::DefaultHasher> = BTreeMap::new();
        for l in self.storage.list("models/").await? {
            if let Some((model, _)) = l
                .key
                .strip_prefix("models/")
                .and_then(|k| k.split_once('/'))
                .filter(|(model, _)| super::names::listed_model(model))
            {
                let hasher = hashers.entry(model.to_owned()).or_default();
                (&l.key, l.size, unix_ms(l.modified)).hash(hasher);
            }
        }
        Ok(hashers.into_iter().map(|(m, h)| (m, h.finish())).collect())
    }

    /// One model as the store has it now.
    pub async fn model(&self, model: &str) -> Result<ModelView, StorageError> {
        if !super::names::listed_model(model) {
            return Ok(ModelView::default()); // no such model can be listed
        }
        let keys: Vec<String> = self
            .storage
            .list(&format!("models/{model}/"))
            .await?
            .into_iter()
            .map(|l| l.key)
            .collect();
        self.view_from_keys(model, &keys).await
    }

    async fn view_from_keys(
        &self,
        model: &str,
        keys: &[String],
    ) -> Result<ModelView, StorageError> {
        let mut view = ModelView::default();
        for key in keys {
            let name = key.rsplit('/').next().unwrap_or_default();
            if key == &aliases_key(model) {
                match self.get_json::<Aliases>(key).await {
                    Ok(found) => {
                        view.aliases =
                            sane_aliases(model, found.map(|(a, _)| a).unwrap_or_default())
                    }
                    Err(StorageError::Other(e)) => {
                        tracing::error!(model, error = %e, "ignoring unreadable aliases")
                    }
                    Err(e) => return Err(e),
                }
            } else if key == &traffic_key(model) {
                match self.get_json::<TrafficDoc>(key).await {
                    Ok(found) => {
                        view.traffic =
                            sane_traffic(model, found.map(|(t, _)| t.policy).unwrap_or_default())
                    }
                    Err(StorageError::Other(e)) => {
                        tracing::error!(model, error = %e, "ignoring an unreadable traffic policy")
                    }
                    Err(e) => return Err(e),
                }
            } else if key == &unloaded_key(model) {
                view.unloaded = true;
            } else if name.ends_with(".json") && key.matches('/').count() == 2 {
                match self.get_json::<VersionManifest>(key).await {
                    Ok(Some((m, _))) if m.model == model => match check_manifest(name, &m) {
                        Ok(()) => view.manifests.push(m),
                        Err(e) => {
                            tracing::error!(key, error = %e, "skipping an invalid version manifest")
                        }
                    },
                    Ok(Some(_)) => {
                        tracing::error!(key, "skipping a manifest that names another model")
                    }
                    Ok(None) => {} // deleted since the listing
                    Err(StorageError::Other(e)) => {
                        tracing::error!(key, error = %e, "skipping an unreadable version manifest")
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        view.manifests.sort_by_key(|m| m.sequence);
        Ok(view)
    }

    /// The names of `model`'s aliases (those a host would route: see [`sane_aliases`]).
    async fn alias_names(
        &self,
        model: &str,
    ) -> Result<std::collections::BTreeSet<String>, StorageError> {
        let aliases = match self.get_json::<Aliases>(&aliases_key(model)).await {
            Ok(found) => found.map(|(a, _)| a).unwrap_or_default(),
            Err(StorageError::Other(_)) => Aliases::default(), // unreadable: ignored, as when read
            Err(e) => return Err(e),
        };
        Ok(sane_aliases(model, aliases).current.into_keys().collect())
    }

    /// A sequence number for a new version: unique in the store, higher than any before.
    pub async fn reserve_sequence(&self) -> Result<u64, StorageError> {
        self.bump(|_, _| {}).await
    }

    /// The next free numeric version name of `model`.
    pub async fn next_version_name(&self, model: &str) -> Result<String, StorageError> {
        let view = self.model(model).await?;
        let highest = view
            .manifests
            .iter()
            .filter_map(|m| m.version.parse::<u64>().ok())
            .max();
        // A number an alias has is not a version's to take.
        Ok(super::names::next_numeric_name(highest, |n| {
            view.aliases.current.contains_key(n)
        }))
    }

    /// Creates a version: its blobs must be stored; the manifest gets a fresh sequence number and is
    /// written only if no version of that name exists (a conflict otherwise), then announced. An
    /// empty version name takes the next number (again if another writer takes it first). Returns
    /// the manifest as written.
    pub async fn create_version(
        &self,
        manifest: &VersionManifest,
    ) -> Result<VersionManifest, ChangeError> {
        let invalid = |e: anyhow::Error| ChangeError::Invalid(e.to_string());
        check_name("model", &manifest.model).map_err(invalid)?;
        let named = !manifest.version.is_empty();
        if named {
            super::names::check_version_name(&manifest.version)?;
            // One namespace per model: a version never takes an alias's name.
            if self
                .alias_names(&manifest.model)
                .await?
                .contains(&manifest.version)
            {
                return Err(super::names::version_clash(
                    &manifest.model,
                    &manifest.version,
                ));
            }
        }
        for sha in manifest.blobs() {
            if !self.blobs.exists(sha).await? {
                return Err(ChangeError::Invalid(format!(
                    "blob {sha} is not in the store"
                )));
            }
        }
        let mut manifest = manifest.clone();
        for _ in 0..8 {
            if !named {
                manifest.version = self.next_version_name(&manifest.model).await?;
            }
            manifest.sequence = self.reserve_sequence().await?;
            let key = manifest_key(&manifest.model, &manifest.version);
            match self.storage.put(&key, Self::json(&manifest), Write::Create).await {
                Ok(_) => {
                    self.announce(&manifest.model).await?;
                    return Ok(manifest);
                }
                Err(StorageError::AlreadyExists(_)) if !named => continue,
                Err(StorageError::AlreadyExists(_)) => {
                    return Err(ChangeError::Conflict(format!(
                        "model `{}` already has a version `{}`; versions are immutable, pick another name",
                        manifest.model, manifest.version
                    )))
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ChangeError::Conflict(format!(
            "new versions of `{}` keep being created meanwhile; name the version",
            manifest.model
        )))
    }

    /// Removes a version's manifest (its blobs go with the next garbage collection, unless another
    /// version names them).
    pub async fn delete_version(&self, model: &str, version: &str) -> Result<(), ChangeError> {
        self.storage.delete(&manifest_key(model, version)).await?;
        self.announce(model).await?;
        Ok(())
    }

    /// Puts back the manifest of a version just deleted, as it was (same sequence), when an alias
    /// moved to it meanwhile (see `registry::retention`): create-if-absent, so a version created
    /// again under the name since stays; then announced. A blob that garbage collection took in
    /// between leaves the version failing to load, said so here.
    pub async fn restore_version(&self, manifest: &VersionManifest) -> Result<(), ChangeError> {
        let key = manifest_key(&manifest.model, &manifest.version);
        match self
            .storage
            .put(&key, Self::json(manifest), Write::Create)
            .await
        {
            Ok(_) | Err(StorageError::AlreadyExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
        for sha in manifest.blobs() {
            if !self.blobs.exists(sha).await? {
                tracing::error!(model = %manifest.model, version = %manifest.version, blob = %sha,
                    "a version put back lost a blob to garbage collection meanwhile");
            }
        }
        self.announce(&manifest.model).await?;
        Ok(())
    }

    /// Changes a model's aliases by compare-and-swap ([`Store::swap`]): `change` sees the current
    /// aliases and edits them (or refuses); a lost race re-reads and applies it again, so no move is
    /// silently lost.
    pub async fn update_aliases<T>(
        &self,
        model: &str,
        change: impl FnMut(&mut Aliases) -> Result<T, ChangeError>,
    ) -> Result<(Aliases, T), ChangeError> {
        let swapped = self
            .swap(
                &aliases_key(model),
                || async { Ok(Aliases::default()) },
                change,
            )
            .await?;
        let Some(done) = swapped else {
            return Err(ChangeError::Conflict(format!(
                "the aliases of `{model}` keep changing meanwhile; try again"
            )));
        };
        self.announce(model).await?;
        Ok(done)
    }

    /// Changes `model`'s traffic policy by compare-and-swap ([`Store::swap`]): `change` sees the
    /// current policy and edits it (called again if another writer got there first); answers the
    /// policy it replaced.
    pub async fn update_traffic(
        &self,
        model: &str,
        mut change: impl FnMut(&mut TrafficPolicy) -> Result<(), ChangeError>,
    ) -> Result<TrafficPolicy, ChangeError> {
        let swapped = self
            .swap(
                &traffic_key(model),
                || async { Ok(TrafficDoc::default()) },
                |doc: &mut TrafficDoc| {
                    let current = doc.policy.clone();
                    change(&mut doc.policy)?;
                    Ok::<_, ChangeError>(current)
                },
            )
            .await?;
        let Some((_, replaced)) = swapped else {
            return Err(ChangeError::Conflict(format!(
                "the traffic policy of `{model}` keeps changing meanwhile; try again"
            )));
        };
        self.announce(model).await?;
        Ok(replaced)
    }

    /// Records that `model` is unloaded on request, or that it is not.
    pub async fn set_unloaded(&self, model: &str, unloaded: bool) -> Result<(), ChangeError> {
        let key = unloaded_key(model);
        if unloaded {
            self.storage
                .put(
                    &key,
                    Bytes::from_static(b"unloaded on request\n"),
                    Write::Overwrite,
                )
                .await?;
        } else {
            self.storage.delete(&key).await?;
        }
        self.announce(model).await?;
        Ok(())
    }
}

/// A short, jittered wait before retrying a lost race, so racers spread out.
async fn backoff(attempt: usize) {
    let jitter = uuid::Uuid::new_v4().as_u128() as u64 % 20;
    let ms = (5u64 << attempt.min(5)) + jitter;
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[cfg(test)]
mod tests;
