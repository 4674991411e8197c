//! The routing table: which versions exist, which alias points where, and where a request goes.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{ModelVersion, VersionState};

/// The alias a request without a version goes to, when it exists.
pub const DEFAULT_ALIAS: &str = "production";

/// One model's versions and aliases.
#[derive(Clone, Default)]
pub struct ModelEntry {
    /// Versions by name.
    pub versions: BTreeMap<String, Arc<ModelVersion>>,
    /// Alias → version name.
    pub aliases: BTreeMap<String, String>,
}

impl ModelEntry {
    /// The newest ready version (highest sequence).
    pub fn newest_ready(&self) -> Option<&Arc<ModelVersion>> {
        self.versions
            .values()
            .filter(|v| v.is_ready())
            .max_by_key(|v| v.manifest.sequence)
    }

    /// Where a request without a version goes: the `production` alias, else the newest ready version.
    pub fn default_version(&self) -> Option<&Arc<ModelVersion>> {
        self.aliases
            .get(DEFAULT_ALIAS)
            .and_then(|v| self.versions.get(v))
            .filter(|v| v.is_ready())
            .or_else(|| self.newest_ready())
    }
}

/// Every model the host knows. Immutable once published; changes publish a new table.
#[derive(Clone, Default)]
pub struct RoutingTable {
    /// Models by name.
    pub models: BTreeMap<String, ModelEntry>,
}

/// Why a request has nowhere to go.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RouteError {
    /// No such model (HTTP 404).
    #[error("unknown model `{0}`")]
    UnknownModel(String),
    /// No such version or alias (HTTP 404).
    #[error("model `{0}` has no version or alias `{1}`")]
    UnknownVersion(String, String),
    /// The version exists but is not serving (HTTP 503; failed versions say why).
    #[error("model `{model}` version `{version}` is not ready: {state}")]
    NotReady {
        model: String,
        version: String,
        state: String,
    },
    /// The model has no ready version (HTTP 503).
    #[error("model `{0}` has no ready version")]
    NoReadyVersion(String),
}

impl RoutingTable {
    /// The version a request for `model` (and optionally a version or alias name) goes to.
    pub fn resolve(
        &self,
        model: &str,
        version: Option<&str>,
    ) -> Result<Arc<ModelVersion>, RouteError> {
        let entry = self
            .models
            .get(model)
            .ok_or_else(|| RouteError::UnknownModel(model.to_owned()))?;
        let target = match version {
            None => {
                return entry
                    .default_version()
                    .cloned()
                    .ok_or_else(|| RouteError::NoReadyVersion(model.to_owned()))
            }
            Some(v) => entry
                .versions
                .get(v)
                .or_else(|| {
                    entry
                        .aliases
                        .get(v)
                        .and_then(|target| entry.versions.get(target))
                })
                .ok_or_else(|| RouteError::UnknownVersion(model.to_owned(), v.to_owned()))?,
        };
        match &target.state {
            VersionState::Ready => Ok(target.clone()),
            state => Err(RouteError::NotReady {
                model: model.to_owned(),
                version: target.manifest.version.clone(),
                state: state.describe(),
            }),
        }
    }

    /// Every version of every model.
    pub fn versions(&self) -> impl Iterator<Item = &Arc<ModelVersion>> {
        self.models.values().flat_map(|m| m.versions.values())
    }
}
