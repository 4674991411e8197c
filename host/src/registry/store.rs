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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::stamps::unix_ms;
use anyhow::bail;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::traffic::{AliasTarget, TrafficPolicy};
use super::version_limits::VersionLimits;
use super::ChangeError;
use crate::storage::{blob_cache, BlobCache, ObjectVersion, Storage, StorageError, Write};

/// What a version is made of. Blobs are named by sha256.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VersionManifest {
    /// The model's name.
    pub model: String,
    /// The version's name within the model.
    pub version: String,
    /// Order of creation within the model: "newest" means the highest.
    pub sequence: u64,
    /// The component.
    pub component_sha256: String,
    /// The weights blob, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_sha256: Option<String>,
    /// The config document, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_sha256: Option<String>,
    /// The tests file, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests_sha256: Option<String>,
    /// Limits this version asks for: each host lowers its operator's limits for the model to these,
    /// never raises them (see [`super::version_limits`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<VersionLimits>,
    /// Its named ONNX graphs (name → sha256), run by the host and opened by the guest through
    /// `wasi:nn`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub graphs: BTreeMap<String, String>,
}

impl VersionManifest {
    /// Every blob the version names.
    pub fn blobs(&self) -> impl Iterator<Item = &String> {
        [
            Some(&self.component_sha256),
            self.weights_sha256.as_ref(),
            self.config_sha256.as_ref(),
            self.tests_sha256.as_ref(),
        ]
        .into_iter()
        .flatten()
        .chain(self.graphs.values())
    }
}

/// A model's aliases (alias → version) and, per alias, the versions it pointed at before (oldest
/// first), so a rollback knows where to go back to.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Aliases {
    /// Alias → where it points.
    pub current: BTreeMap<String, AliasTarget>,
    /// Alias → earlier targets, oldest first.
    pub history: BTreeMap<String, Vec<AliasTarget>>,
    /// Ids of the last writes of this document, newest last (see [`WriteLog`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub writes: Vec<String>,
}

/// The change record: the store's generation, and per model the generation of its last change.
/// Polling it (one conditional GET) tells a host whether anything changed and which models.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ChangeRecord {
    /// Bumped by every change; also the source of versions' sequence numbers.
    pub generation: u64,
    /// Model → generation of its last change.
    pub models: BTreeMap<String, u64>,
    /// Ids of the last writes of this document, newest last (see [`WriteLog`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub writes: Vec<String>,
}

/// A compare-and-swapped document remembers the ids of its last few writes. A writer whose swap
/// succeeded reads the document back: its id is there if its write is the current one or the base
/// of a later one — and missing only if a racing writer's swap "won" too and replaced it (which a
/// store with weak conditional writes can let happen), in which case the write is done again.
pub trait WriteLog {
    /// The ids, newest last.
    fn writes(&mut self) -> &mut Vec<String>;

    /// Records a new write and returns its id.
    fn record_write(&mut self) -> String {
        let id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
        let writes = self.writes();
        writes.push(id.clone());
        let excess = writes.len().saturating_sub(16);
        writes.drain(..excess);
        id
    }
}

impl WriteLog for ChangeRecord {
    fn writes(&mut self) -> &mut Vec<String> {
        &mut self.writes
    }
}

impl WriteLog for Aliases {
    fn writes(&mut self) -> &mut Vec<String> {
        &mut self.writes
    }
}

/// A traffic policy as the store keeps it (`traffic.json`): the policy's fields, and the ids of the
/// document's last writes beside them (see [`WriteLog`]), which the policy itself — what callers
/// send and are shown — never carries.
#[derive(Debug, Clone, Default, PartialEq)]
struct TrafficDoc {
    policy: TrafficPolicy,
    writes: Vec<String>,
}

impl WriteLog for TrafficDoc {
    fn writes(&mut self) -> &mut Vec<String> {
        &mut self.writes
    }
}

impl Serialize for TrafficDoc {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut value = serde_json::to_value(&self.policy).map_err(serde::ser::Error::custom)?;
        if let (Some(fields), false) = (value.as_object_mut(), self.writes.is_empty()) {
            fields.insert("writes".into(), serde_json::json!(self.writes));
        }
        value.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for TrafficDoc {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut value = serde_json::Value::deserialize(deserializer)?;
        let writes = match value.as_object_mut().and_then(|o| o.remove("writes")) {
            Some(writes) => serde_json::from_value(writes).map_err(D::Error::custom)?,
            None => Vec::new(),
        };
        let policy = serde_json::from_value(value).map_err(D::Error::custom)?;
        Ok(TrafficDoc { policy, writes })
    }
}

/// One model as the store has it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ModelView {
    /// Its versions, oldest first.
    pub manifests: Vec<VersionManifest>,
    /// Its aliases.
    pub aliases: Aliases,
    /// Unloaded on request.
    pub unloaded: bool,
    /// Shadowing and the prediction log's share.
    pub traffic: TrafficPolicy,
}

/// Model and version names: what is safe in a path, a key and a URL.
pub fn check_name(kind: &str, name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        bail!("invalid {kind} name {name:?}: use 1-128 letters, digits, '-', '_' or '.', not starting with '.'");
    }
    Ok(())
}

/// A graph's name: what a model passes to `load-by-name`.
pub fn check_graph_name(name: &str) -> anyhow::Result<()> {
    check_name("graph", name)
}

/// Checks a manifest read from the store as `file` (`<version>.json`): what a host would go on to use
/// as names, keys and blobs must be what a writer through the registry could have written.
fn check_manifest(file: &str, m: &VersionManifest) -> Result<(), String> {
    check_name("model", &m.model).map_err(|e| e.to_string())?;
    check_name("version", &m.version).map_err(|e| e.to_string())?;
    if file != format!("{}.json", m.version) {
        return Err(format!("{file} holds version {:?}", m.version));
    }
    if let Some(sha) = m.blobs().find(|s| !blob_cache::is_sha256(s)) {
        return Err(format!("{sha:?} is not a sha256"));
    }
    for graph in m.graphs.keys() {
        check_graph_name(graph).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Checks an alias target read from the store: what [`AliasTarget::check`] asks of a target a user
/// sends, and valid version names.
fn check_alias_target(target: &AliasTarget) -> Result<(), String> {
    target.check()?;
    for v in target.versions() {
        check_name("version", v).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Aliases read from the store, without the entries no writer through the registry could have
/// written (a bad name, an empty or zero-weight split): those are dropped, and said so.
fn sane_aliases(model: &str, mut aliases: Aliases) -> Aliases {
    let bad_name = |alias: &String| check_name("alias", alias).is_err();
    aliases.current.retain(|alias, target| {
        let verdict = if bad_name(alias) {
            Err(format!("invalid alias name {alias:?}"))
        } else {
            check_alias_target(target)
        };
        if let Err(e) = &verdict {
            tracing::error!(model, alias, error = %e, "ignoring an invalid alias in the store");
        }
        verdict.is_ok()
    });
    aliases.history.retain(|alias, _| !bad_name(alias));
    for targets in aliases.history.values_mut() {
        targets.retain(|t| check_alias_target(t).is_ok());
    }
    aliases
}

/// A traffic policy read from the store, without a shadow whose version name is invalid.
fn sane_traffic(model: &str, mut traffic: TrafficPolicy) -> TrafficPolicy {
    if let Some(shadow) = &traffic.shadow {
        if let Err(e) = check_name("version", &shadow.version) {
            tracing::error!(model, error = %e, "ignoring an invalid shadow in the store");
            traffic.shadow = None;
        }
    }
    traffic
}

const CHANGES: &str = "changes.json";

fn manifest_key(model: &str, version: &str) -> String {
    format!("models/{model}/{version}.json")
}
fn aliases_key(model: &str) -> String {
    format!("models/{model}/aliases.json")
}
fn traffic_key(model: &str) -> String {
    format!("models/{model}/traffic.json")
}
fn unloaded_key(model: &str) -> String {
    format!("models/{model}/unloaded")
}
fn host_key(host: &str) -> String {
    format!("hosts/{host}.json")
}

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
            StorageError::Disk(m) => ChangeError::NoRoom(m),
            StorageError::Other(m) => ChangeError::Store(anyhow::anyhow!(m)),
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
                    .map_err(|e| StorageError::Other(format!("{key} is not valid: {e}")))?;
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
                    .map_err(|e| StorageError::Other(format!("{CHANGES} is not valid: {e}")))?;
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

    /// Publishes this host's status.
    pub async fn publish_host(&self, status: &HostStatus) -> Result<(), StorageError> {
        self.storage
            .put(
                &host_key(&status.host),
                Self::json(status),
                Write::Overwrite,
            )
            .await
            .map(|_| ())
    }

    /// Removes a host's status: it left the fleet (a graceful stop).
    pub async fn remove_host(&self, host: &str) -> Result<(), StorageError> {
        self.storage.delete(&host_key(host)).await
    }

    /// Every host's last published status.
    pub async fn hosts(&self) -> Result<Vec<HostStatus>, StorageError> {
        let mut hosts = Vec::new();
        for l in self.storage.list("hosts/").await? {
            match self.get_json::<HostStatus>(&l.key).await {
                Ok(Some((status, _))) => hosts.push(status),
                Ok(None) => {}
                Err(StorageError::Other(e)) => {
                    tracing::warn!(key = l.key, error = %e, "skipping an unreadable host status")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(hosts)
    }

    /// Deletes blobs that no manifest names and that are older than `grace` (an upload in flight
    /// writes its blobs before its manifest: the grace period keeps them), and host records not
    /// heard from for a day. Returns the blobs deleted and their bytes.
    pub async fn collect_garbage(&self, grace: Duration) -> Result<(usize, u64), StorageError> {
        let models = self.all_models().await?;
        let named: std::collections::HashSet<&String> = models
            .values()
            .flat_map(|m| &m.manifests)
            .flat_map(|m| m.blobs())
            .collect();
        let cutoff = SystemTime::now() - grace;
        let (mut deleted, mut bytes) = (0, 0);
        for blob in self.storage.list("blobs/").await? {
            let sha = blob.key.trim_start_matches("blobs/").to_owned();
            if !blob_cache::is_sha256(&sha) || named.contains(&sha) || blob.modified > cutoff {
                continue;
            }
            self.storage.delete(&blob.key).await?;
            tracing::info!(
                blob = sha,
                bytes = blob.size,
                "garbage-collected a blob no version names"
            );
            deleted += 1;
            bytes += blob.size;
        }
        let day_ago = unix_ms(SystemTime::now()).saturating_sub(86_400_000);
        for host in self.hosts().await? {
            if host.heartbeat_unix_ms < day_ago {
                self.storage.delete(&host_key(&host.host)).await?;
            }
        }
        Ok((deleted, bytes))
    }
}

/// A short, jittered wait before retrying a lost race, so racers spread out.
async fn backoff(attempt: usize) {
    let jitter = uuid::Uuid::new_v4().as_u128() as u64 % 20;
    let ms = (5u64 << attempt.min(5)) + jitter;
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// What one host says of itself in the store (`hosts/<host>.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct HostStatus {
    /// The host's id (`--host-id`, `FERRY_HOST_ID`, else hostname and port).
    pub host: String,
    /// Where it listens.
    pub address: String,
    /// When it last wrote this record.
    pub heartbeat_unix_ms: u64,
    /// When it started.
    pub started_unix_ms: u64,
    /// The change record generation it has applied.
    pub generation: u64,
    /// Whether its last sync reached the store.
    pub store_reachable: bool,
    /// Every version it knows, with its state there.
    pub versions: Vec<HostVersion>,
}

/// A version's state on one host.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HostVersion {
    pub model: String,
    pub version: String,
    /// `loading`, `ready`, `failed` or `unloaded`.
    pub state: String,
    /// Why it failed or is unloaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The aliases that point at it on this host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let storage = crate::storage::open(dir.path().join("store").to_str().unwrap()).unwrap();
        let cache = BlobCache::open(storage, &dir.path().join("cache"), 1 << 30).unwrap();
        (dir, Store::new(cache))
    }

    fn manifest(version: &str, sequence: u64, component: &str) -> VersionManifest {
        VersionManifest {
            model: "m".into(),
            version: version.into(),
            sequence,
            component_sha256: component.into(),
            weights_sha256: None,
            config_sha256: None,
            tests_sha256: None,
            graphs: Default::default(),
            limits: None,
        }
    }

    async fn put_blob(store: &Store, bytes: &[u8]) -> String {
        let (path, _) = store.blobs().upload_file().unwrap();
        std::fs::write(&path, bytes).unwrap();
        let sha = crate::stamps::sha256_hex(bytes);
        store.blobs().commit_upload(&path, &sha).await.unwrap();
        sha
    }

    #[tokio::test]
    async fn versions_come_back_in_creation_order_and_names_are_not_reused() {
        let (_dir, store) = store().await;
        let c = put_blob(&store, b"component").await;
        assert_eq!(&store.blobs().read(&c).await.unwrap()[..], b"component");
        for v in ["b", "a"] {
            store.create_version(&manifest(v, 0, &c)).await.unwrap();
        }
        let unnamed = store.create_version(&manifest("", 0, &c)).await.unwrap();
        assert_eq!(unnamed.version, "1");
        let view = store.model("m").await.unwrap();
        assert_eq!(
            view.manifests
                .iter()
                .map(|m| m.version.as_str())
                .collect::<Vec<_>>(),
            ["b", "a", "1"]
        );
        let (changes, _) = store.changes().await.unwrap().unwrap();
        assert_eq!(
            changes.models["m"], changes.generation,
            "the last change was to m"
        );
        assert!(matches!(
            store.create_version(&manifest("a", 9, &c)).await,
            Err(ChangeError::Conflict(_))
        ));
        assert_eq!(store.next_version_name("m").await.unwrap(), "2");
    }

    #[tokio::test]
    async fn a_manifest_naming_a_missing_blob_or_a_bad_name_is_refused() {
        let (_dir, store) = store().await;
        let err = store
            .create_version(&manifest("1", 1, &"00".repeat(32)))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not in the store"), "{err}");
        assert!(check_name("model", "../etc").is_err());
        assert!(check_name("model", "digits-onnx_v2.1").is_ok());
    }

    #[tokio::test]
    async fn a_corrupt_blob_is_refused_when_read() {
        let (dir, store) = store().await;
        let sha = put_blob(&store, b"weights").await;
        std::fs::write(dir.path().join("store/blobs").join(&sha), b"tampered").unwrap();
        assert!(store
            .blobs()
            .read(&sha)
            .await
            .unwrap_err()
            .to_string()
            .contains("corrupt"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_alias_moves_are_all_applied_in_some_order() {
        let (_dir, store) = store().await;
        let moves = futures_util::future::join_all((0..6).map(|i| {
            let store = store.clone();
            async move {
                store
                    .update_aliases("m", |a| {
                        if let Some(old) = a
                            .current
                            .insert("production".into(), AliasTarget::version(i.to_string()))
                        {
                            a.history.entry("production".into()).or_default().push(old);
                        }
                        Ok(())
                    })
                    .await
            }
        }))
        .await;
        assert!(moves.iter().all(|m| m.is_ok()), "{moves:?}");
        let aliases = store.model("m").await.unwrap().aliases;
        assert_eq!(
            aliases.history["production"].len(),
            5,
            "no move was lost: {aliases:?}"
        );
    }

    /// A store whose compare-and-swap lets a racing writer win too, once: right after the first
    /// write of `traffic.json`, a racer that read the same base replaces it.
    #[derive(Debug)]
    struct DoubleWin {
        inner: Arc<dyn Storage>,
        raced: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl Storage for DoubleWin {
        async fn get(&self, key: &str) -> crate::storage::Result<crate::storage::Object> {
            self.inner.get(key).await
        }
        async fn get_if_changed(
            &self,
            key: &str,
            version: &ObjectVersion,
        ) -> crate::storage::Result<Option<crate::storage::Object>> {
            self.inner.get_if_changed(key, version).await
        }
        async fn get_stream(
            &self,
            key: &str,
        ) -> crate::storage::Result<crate::storage::ByteStream> {
            self.inner.get_stream(key).await
        }
        async fn put(
            &self,
            key: &str,
            bytes: Bytes,
            mode: Write,
        ) -> crate::storage::Result<ObjectVersion> {
            let written = self.inner.put(key, bytes, mode).await?;
            if key.ends_with("traffic.json")
                && !self.raced.swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                let racer = TrafficDoc {
                    policy: serde_json::from_value(serde_json::json!({"log": {"percent": 1}}))
                        .unwrap(),
                    writes: vec!["racer".into()],
                };
                self.inner
                    .put(key, Store::json(&racer), Write::Overwrite)
                    .await?;
            }
            Ok(written)
        }
        async fn put_file(&self, key: &str, file: &std::path::Path) -> crate::storage::Result<()> {
            self.inner.put_file(key, file).await
        }
        async fn list(&self, prefix: &str) -> crate::storage::Result<Vec<crate::storage::Listed>> {
            self.inner.list(prefix).await
        }
        async fn exists(&self, key: &str) -> crate::storage::Result<bool> {
            self.inner.exists(key).await
        }
        async fn delete(&self, key: &str) -> crate::storage::Result<()> {
            self.inner.delete(key).await
        }
        fn describe(&self) -> String {
            "double-win".into()
        }
    }

    #[tokio::test]
    async fn a_traffic_change_replaced_by_a_racing_write_is_applied_again() {
        let dir = tempfile::tempdir().unwrap();
        let inner = crate::storage::open(dir.path().join("store").to_str().unwrap()).unwrap();
        let storage = Arc::new(DoubleWin {
            inner,
            raced: Default::default(),
        });
        let cache = BlobCache::open(storage, &dir.path().join("cache"), 1 << 30).unwrap();
        let store = Store::new(cache);
        let wanted: TrafficPolicy =
            serde_json::from_value(serde_json::json!({"log": {"percent": 50}})).unwrap();
        store
            .update_traffic("m", |p| {
                *p = wanted.clone();
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(
            store.model("m").await.unwrap().traffic,
            wanted,
            "the change survives the racer"
        );
        // The write ids stay in the store's document, out of the policy.
        let text = std::fs::read_to_string(dir.path().join("store/models/m/traffic.json")).unwrap();
        assert!(
            text.contains("\"writes\"") && text.contains("racer"),
            "{text}"
        );
        assert!(serde_json::to_string(&wanted)
            .unwrap()
            .find("writes")
            .is_none());
    }

    #[tokio::test]
    async fn stores_written_before_the_change_record_number_on_from_their_versions() {
        let (dir, store) = store().await;
        let c = put_blob(&store, b"component").await;
        // A manifest as the earlier layout wrote it, with no change record beside it.
        let old = manifest("7", 41, &c);
        let path = dir.path().join("store/models/m/7.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_vec(&old).unwrap()).unwrap();
        assert!(store.changes().await.unwrap().is_none());
        assert_eq!(store.reserve_sequence().await.unwrap(), 42);
        assert_eq!(store.next_version_name("m").await.unwrap(), "8");
    }

    #[tokio::test]
    async fn garbage_collection_keeps_named_and_recent_blobs() {
        let (_dir, store) = store().await;
        let named = put_blob(&store, b"named").await;
        let orphan = put_blob(&store, b"orphan").await;
        store
            .create_version(&manifest("1", 1, &named))
            .await
            .unwrap();
        assert_eq!(
            store
                .collect_garbage(Duration::from_secs(3600))
                .await
                .unwrap()
                .0,
            0,
            "recent blobs stay"
        );
        assert_eq!(store.collect_garbage(Duration::ZERO).await.unwrap(), (1, 6));
        assert!(store.blobs().exists(&named).await.unwrap());
        assert!(!store.blobs().exists(&orphan).await.unwrap());
    }
}
