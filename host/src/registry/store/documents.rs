//! The documents a store holds for the registry (see the layout in [`super`]): a version's manifest,
//! a model's aliases and traffic policy, the change record, and the checks a document read from a
//! store written by others must pass before a host uses its names.

use std::collections::BTreeMap;

use anyhow::bail;
use serde::{Deserialize, Serialize};

use crate::registry::traffic::{AliasTarget, TrafficPolicy};
use crate::registry::version_limits::VersionLimits;
use crate::storage::blob_cache;

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
    /// The training profile (the training data's distributions, for drift), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_sha256: Option<String>,
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
            self.profile_sha256.as_ref(),
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
pub(super) struct TrafficDoc {
    pub(super) policy: TrafficPolicy,
    pub(super) writes: Vec<String>,
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
pub(super) fn check_manifest(file: &str, m: &VersionManifest) -> Result<(), String> {
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
pub(super) fn check_alias_target(target: &AliasTarget) -> Result<(), String> {
    target.check()?;
    for v in target.versions() {
        check_name("version", v).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Aliases read from the store, without the entries no writer through the registry could have
/// written (a bad name, an empty or zero-weight split): those are dropped, and said so.
pub(super) fn sane_aliases(model: &str, mut aliases: Aliases) -> Aliases {
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
pub(super) fn sane_traffic(model: &str, mut traffic: TrafficPolicy) -> TrafficPolicy {
    if let Some(shadow) = &traffic.shadow {
        if let Err(e) = check_name("version", &shadow.version) {
            tracing::error!(model, error = %e, "ignoring an invalid shadow in the store");
            traffic.shadow = None;
        }
    }
    traffic
}
