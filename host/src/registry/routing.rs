//! The routing table: which versions exist, which alias points where, and where a request goes.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::Arc;

use crate::runtime::ReadyVersion;

use super::plan::Current;
use super::traffic::{AliasTarget, TrafficPolicy};
use super::ModelVersion;

/// The alias a request without a version goes to, when it exists.
pub const DEFAULT_ALIAS: &str = "production";

/// One model's versions and aliases.
#[derive(Clone, Default)]
pub struct ModelEntry {
    /// Versions by name.
    pub versions: BTreeMap<String, Arc<ModelVersion>>,
    /// Alias → where it points on this host (a target moves here once it is ready here).
    pub aliases: BTreeMap<String, AliasTarget>,
    /// Shadowing and the prediction log's share.
    pub traffic: Arc<TrafficPolicy>,
}

/// A version a request can go to: the version, and what it serves with. Only a ready version
/// makes one, so a call holding it never asks whether there is a pool. It reads as the version
/// (`routed.manifest`, `routed.series`); `routed.ready` is the serving side.
#[derive(Clone)]
pub struct Routed {
    /// The version.
    pub version: Arc<ModelVersion>,
    /// Its pool, queue, breaker and what it declares.
    pub ready: Arc<ReadyVersion>,
}

impl Routed {
    /// `version`, when it serves.
    pub fn of(version: &Arc<ModelVersion>) -> Option<Routed> {
        Some(Routed {
            ready: version.ready()?.clone(),
            version: version.clone(),
        })
    }
}

impl Deref for Routed {
    type Target = ModelVersion;
    fn deref(&self) -> &ModelVersion {
        &self.version
    }
}

/// Where a request for a model goes, before the routing key is looked at.
#[derive(Clone)]
pub enum Route {
    /// One version.
    Version(Routed),
    /// A weighted alias: the caller's routing key picks among its targets.
    Split(SplitRoute),
}

/// A weighted alias as a request meets it.
#[derive(Clone)]
pub struct SplitRoute {
    /// The alias.
    pub alias: String,
    /// Every target in the alias's order, with its weight and, when it serves here, the version.
    pub targets: Vec<(String, u32, Option<Routed>)>,
    /// Where a feature-style body carries the routing key (a JSON pointer).
    pub routing_key_field: Option<String>,
}

/// The target with the largest weight among those that serve (`Some`): what a question that is
/// not a request (metadata, readiness) is answered from, and where a split sends a request when the
/// pick finds nothing.
pub fn heaviest<T>(targets: &[(String, u32, Option<T>)]) -> Option<&T> {
    targets
        .iter()
        .filter(|(_, w, v)| *w > 0 && v.is_some())
        .max_by_key(|(_, w, _)| *w)
        .and_then(|(_, _, v)| v.as_ref())
}

impl SplitRoute {
    /// The ready target with the largest weight.
    pub fn heaviest(&self) -> Option<&Routed> {
        heaviest(&self.targets)
    }
}

impl Route {
    /// The version for a question that is not a request (metadata, readiness).
    pub fn representative(&self) -> Option<&Routed> {
        match self {
            Route::Version(v) => Some(v),
            Route::Split(s) => s.heaviest(),
        }
    }
}

impl ModelEntry {
    /// The model as the planner sees it.
    pub fn planned(&self) -> Current {
        Current {
            versions: self
                .versions
                .iter()
                .map(|(name, v)| (name.clone(), v.planned()))
                .collect(),
            aliases: self.aliases.clone(),
            traffic: TrafficPolicy::clone(&self.traffic),
        }
    }

    /// The newest ready version (highest sequence).
    pub fn newest_ready(&self) -> Option<&Arc<ModelVersion>> {
        self.versions
            .values()
            .filter(|v| v.is_ready())
            .max_by_key(|v| v.manifest.sequence)
    }

    /// Where a request without a version goes: the `production` alias (when some target of it is
    /// ready), else the newest ready version.
    pub fn default_route(&self) -> Option<Route> {
        self.aliases
            .get(DEFAULT_ALIAS)
            .and_then(|target| self.alias_route(DEFAULT_ALIAS, target))
            .or_else(|| self.newest_ready().and_then(Routed::of).map(Route::Version))
    }

    /// The version a request without a version goes to, when the answer is one version (the
    /// heaviest ready target of a weighted `production`).
    pub fn default_version(&self) -> Option<Arc<ModelVersion>> {
        self.default_route()
            .and_then(|r| r.representative().map(|r| r.version.clone()))
    }

    /// An alias's route, when some target of it is ready.
    fn alias_route(&self, alias: &str, target: &AliasTarget) -> Option<Route> {
        let ready = |v: &str| self.versions.get(v).and_then(Routed::of);
        match target {
            AliasTarget::Version(v) => ready(v).map(Route::Version),
            AliasTarget::Split(split) => {
                let route = SplitRoute {
                    alias: alias.to_owned(),
                    targets: split
                        .split
                        .iter()
                        .map(|(v, w)| (v.clone(), *w, ready(v)))
                        .collect(),
                    routing_key_field: split.routing_key_field.clone(),
                };
                route.heaviest().is_some().then_some(Route::Split(route))
            }
        }
    }

    /// True when the alias names `version` (or the shadow is `version`): it must stay loaded.
    pub fn targets(&self, version: &str) -> bool {
        self.aliases.values().any(|t| t.names(version))
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
    /// Where a request for `model` (and optionally a version or alias name) goes.
    pub fn route(&self, model: &str, version: Option<&str>) -> Result<Route, RouteError> {
        let entry = self
            .models
            .get(model)
            .ok_or_else(|| RouteError::UnknownModel(model.to_owned()))?;
        let Some(name) = version else {
            return entry
                .default_route()
                .ok_or_else(|| RouteError::NoReadyVersion(model.to_owned()));
        };
        let not_ready = |v: &ModelVersion| RouteError::NotReady {
            model: model.to_owned(),
            version: v.manifest.version.clone(),
            state: v.state.describe(),
        };
        // An alias first: a version of the same name (only a store written by others can hold one;
        // it is listed failed) never takes the alias's traffic (see `names`).
        if let Some(target) = entry.aliases.get(name) {
            return entry.alias_route(name, target).ok_or_else(|| {
                // Name the first target that does not serve, and why.
                let why = target
                    .versions()
                    .into_iter()
                    .find_map(|t| entry.versions.get(t))
                    .map(|v| not_ready(v));
                why.unwrap_or_else(|| RouteError::UnknownVersion(model.to_owned(), name.to_owned()))
            });
        }
        let v = entry
            .versions
            .get(name)
            .ok_or_else(|| RouteError::UnknownVersion(model.to_owned(), name.to_owned()))?;
        Routed::of(v)
            .map(Route::Version)
            .ok_or_else(|| not_ready(v))
    }

    /// The one version a question for `model` (and optionally a version or alias) is answered from:
    /// a weighted alias answers with its heaviest ready target.
    pub fn resolve(&self, model: &str, version: Option<&str>) -> Result<Routed, RouteError> {
        let route = self.route(model, version)?;
        route
            .representative()
            .cloned()
            .ok_or_else(|| RouteError::NoReadyVersion(model.to_owned()))
    }

    /// Every version of every model.
    pub fn versions(&self) -> impl Iterator<Item = &Arc<ModelVersion>> {
        self.models.values().flat_map(|m| m.versions.values())
    }
}
