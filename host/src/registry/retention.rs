//! Retention: a model retrained every few minutes must not keep every version it ever had. Each
//! model keeps the newest `[store] keep_versions` versions (by sequence: order of creation) that
//! no alias names — plain or split target, or the traffic policy's shadow —, and every version that
//! one names; older ones are deleted from the store the way `DELETE /v1/models/{m}/versions/{v}`
//! deletes them ([`Registry::delete_version`]: the same checks, the manifest removed, the change
//! record bumped, the routing table of every host updated), audited as [`ACTOR`]. Their blobs are
//! then named by no manifest and go with the next garbage collection by reference
//! ([`super::Store::collect_garbage`]), and this host's compiled code and snapshots of them with
//! the version ([`super::leftovers`]).
//!
//! Besides what the store says, a host never deletes a version that is its default (the
//! `production` target or the newest ready version), that one of its own aliases still points at
//! (an alias moves on a host once its new target is ready there), that is loading there, or that
//! a promote in flight there has pinned.
//!
//! In a fleet, one host deletes: the one with the smallest id among those whose heartbeat is
//! recent ([`leader`]); the others only look. Should two hosts both think they lead for a while,
//! nothing breaks: deleting is idempotent (a version already gone is skipped, unaudited) and the
//! store's checks come first. A promote racing with the deletion of its target is settled by
//! whichever writes last: retention reads the aliases again after deleting and puts the manifest
//! back (create-if-absent) if one names it now, and an alias move reads the manifests again after
//! its compare-and-swap and does the same ([`Registry::keep_named`]). Rollback reaches back only
//! to versions still kept.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::audit::{AuditLog, AuditRecord};
use super::{ChangeError, HostStatus, ModelView, Registry, VersionManifest};

/// Who retention's deletions are by, in the audit log.
pub const ACTOR: &str = "retention";

/// True when an alias of `view` (a plain or split target) or its shadow names `version`.
fn named(view: &ModelView, version: &str) -> bool {
    view.aliases.current.values().any(|t| t.names(version))
        || view
            .traffic
            .shadow
            .as_ref()
            .is_some_and(|s| s.version == version)
}

/// The versions of `view` past retention, oldest first: of the versions no alias or shadow names,
/// all but the newest `keep` (by sequence), never one in `protected` nor the newest version of
/// all. `keep` 0 keeps every version.
pub fn expired(view: &ModelView, keep: usize, protected: &BTreeSet<String>) -> Vec<String> {
    if keep == 0 {
        return Vec::new();
    }
    let mut newest_first: Vec<&VersionManifest> = view.manifests.iter().collect();
    newest_first.sort_by_key(|m| std::cmp::Reverse(m.sequence));
    let newest = newest_first.first().map(|m| m.version.clone());
    let mut expired: Vec<String> = newest_first
        .into_iter()
        .filter(|m| !named(view, &m.version))
        .skip(keep)
        .filter(|m| !protected.contains(&m.version) && Some(&m.version) != newest.as_ref())
        .map(|m| m.version.clone())
        .collect();
    expired.reverse();
    expired
}

/// A heartbeat older than this leaves its host out of the choice of who deletes.
pub fn leader_staleness(heartbeat: Duration) -> Duration {
    (heartbeat * 3).max(Duration::from_secs(30))
}

/// Whether `host` is the one host of the fleet that deletes expired versions: the smallest id among
/// the hosts heard from within `staleness` of `now_ms` (this host always counts itself).
pub fn leader(host: &str, hosts: &[HostStatus], now_ms: u64, staleness: Duration) -> bool {
    let cutoff = now_ms.saturating_sub(staleness.as_millis() as u64);
    !hosts
        .iter()
        .any(|h| h.heartbeat_unix_ms >= cutoff && h.host.as_str() < host)
}

impl Registry {
    /// Versions of `model` that this host must keep whatever retention says: its default, what its
    /// aliases and shadow point at, what is loading here, what a promote in flight has pinned.
    fn kept_here(&self, model: &str) -> BTreeSet<String> {
        let table = self.table();
        let mut kept = BTreeSet::new();
        if let Some(entry) = table.models.get(model) {
            let version = |v: &Arc<super::ModelVersion>| v.manifest.version.clone();
            kept.extend(entry.default_version().as_ref().map(version));
            kept.extend(entry.newest_ready().map(version));
            kept.extend(
                entry
                    .versions
                    .values()
                    .filter(|v| v.is_loading())
                    .map(version),
            );
            kept.extend(
                entry
                    .aliases
                    .values()
                    .flat_map(|t| t.versions())
                    .map(str::to_owned),
            );
            kept.extend(entry.traffic.shadow.as_ref().map(|s| s.version.clone()));
        }
        kept.extend(self.pinned_versions(model));
        kept
    }

    /// Deletes the versions of `model` past retention (`[store] keep_versions`), as this host last
    /// read the model, each through [`Registry::delete_version`] and recorded in `audit` as
    /// [`ACTOR`]. Returns the versions deleted. A version deleted or named meanwhile is skipped.
    pub async fn apply_retention(
        self: &Arc<Self>,
        model: &str,
        audit: Option<&AuditLog>,
    ) -> Result<Vec<String>, ChangeError> {
        let keep = self.config.store.keep_versions;
        let view = self
            .views
            .lock()
            .unwrap()
            .get(model)
            .map(|(_, v)| v.clone());
        let Some(view) = view.filter(|_| keep > 0) else {
            return Ok(Vec::new());
        };
        let mut deleted = Vec::new();
        for version in expired(&view, keep, &self.kept_here(model)) {
            let Some(manifest) = view.manifests.iter().find(|m| m.version == version) else {
                continue;
            };
            // Loading or pinned here since the model was read: kept.
            if self.kept_here(model).contains(&version) {
                continue;
            }
            match self.delete_version(model, &version).await {
                Ok(()) => {}
                // Deleted by another host, or named by an alias meanwhile: nothing to do.
                Err(
                    ChangeError::NotFound(_)
                    | ChangeError::Conflict(_)
                    | ChangeError::Shadowed { .. },
                ) => continue,
                Err(e) => return Err(e),
            }
            // A promote that read the version before it went and moved its alias since.
            let now = self.store.model(model).await?;
            if named(&now, &version) {
                tracing::warn!(
                    model,
                    version,
                    "an alias moved to a version as retention deleted it: the version is put back"
                );
                self.store.restore_version(manifest).await?;
                self.refresh(model).await?;
                continue;
            }
            tracing::info!(
                model,
                version,
                keep,
                "deleted a version past retention ([store] keep_versions)"
            );
            if let Some(audit) = audit {
                audit
                    .record(AuditRecord::new(ACTOR, "delete_version", model).version(&version))
                    .await;
            }
            deleted.push(version);
        }
        Ok(deleted)
    }

    /// After an alias or shadow change to `versions` of `model` (read as `before`): reads the model
    /// and puts back the manifest of any of them that retention (or a `DELETE`) removed while the
    /// change was in flight, so an alias never names a version the store lost; then applies it.
    pub(super) async fn keep_named(
        self: &Arc<Self>,
        model: &str,
        before: &ModelView,
        versions: &[&str],
    ) -> Result<(), ChangeError> {
        let mut ticket = self.ticket();
        let mut view = self.store.model(model).await?;
        let mut restored = false;
        for version in versions {
            if view.manifests.iter().any(|m| m.version == *version) {
                continue;
            }
            if let Some(manifest) = before.manifests.iter().find(|m| m.version == *version) {
                tracing::warn!(
                    model,
                    version,
                    "a version was deleted as an alias moved to it: the version is put back"
                );
                self.store.restore_version(manifest).await?;
                restored = true;
            }
        }
        if restored {
            ticket = self.ticket();
            view = self.store.model(model).await?;
        }
        self.apply(model, view, ticket);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{AliasTarget, Percent, Shadow};

    fn view(versions: &[&str]) -> ModelView {
        ModelView {
            manifests: versions
                .iter()
                .enumerate()
                .map(|(i, v)| VersionManifest {
                    model: "m".into(),
                    version: (*v).into(),
                    sequence: 10 + i as u64,
                    component_sha256: "c".repeat(64),
                    weights_sha256: None,
                    config_sha256: None,
                    tests_sha256: None,
                    profile_sha256: None,
                    limits: None,
                    graphs: Default::default(),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn none() -> BTreeSet<String> {
        BTreeSet::new()
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_newest_unaliased_versions_are_kept_and_older_ones_expire_oldest_first() {
        let v = view(&["1", "2", "3", "4", "5", "6"]);
        assert_eq!(expired(&v, 3, &none()), names(&["1", "2", "3"]));
        assert_eq!(expired(&v, 6, &none()), names(&[]));
        assert_eq!(expired(&v, 10, &none()), names(&[]));
        assert_eq!(expired(&v, 0, &none()), names(&[]), "0 keeps all");
    }

    #[test]
    fn age_is_the_sequence_not_the_name_nor_the_listing_order() {
        let mut v = view(&["b", "a", "10", "9"]);
        v.manifests.reverse();
        // Sequences: b 10, a 11, 10 12, 9 13: "9" is the newest.
        assert_eq!(expired(&v, 2, &none()), names(&["b", "a"]));
    }

    #[test]
    fn aliased_split_and_shadowed_versions_are_kept_and_not_counted() {
        let mut v = view(&["1", "2", "3", "4", "5", "6", "7"]);
        v.aliases
            .current
            .insert("production".into(), AliasTarget::version("1"));
        v.aliases.current.insert(
            "canary".into(),
            serde_json::from_value(serde_json::json!({"split": {"2": 90, "3": 0}})).unwrap(),
        );
        v.traffic.shadow = Some(Shadow {
            version: "4".into(),
            percent: Percent::ALL,
        });
        // Unaliased: 5, 6, 7; keep 2 → 5 expires; 1-4 are named (a split's 0 weight too).
        assert_eq!(expired(&v, 2, &none()), names(&["5"]));
        assert_eq!(expired(&v, 1, &none()), names(&["5", "6"]));
    }

    #[test]
    fn protected_versions_and_the_newest_are_never_deleted() {
        let v = view(&["1", "2", "3", "4"]);
        let protected: BTreeSet<String> = ["2".to_owned()].into();
        assert_eq!(expired(&v, 1, &protected), names(&["1", "3"]));
        // The newest is kept even when an alias names every other version and keep counts them.
        let mut v = view(&["1", "2"]);
        v.aliases
            .current
            .insert("production".into(), AliasTarget::version("1"));
        assert_eq!(expired(&v, 1, &none()), names(&[]));
    }

    #[test]
    fn the_live_host_with_the_smallest_id_leads() {
        let host = |id: &str, at: u64| HostStatus {
            host: id.into(),
            heartbeat_unix_ms: at,
            ..Default::default()
        };
        let stale = Duration::from_secs(30);
        let now = 100_000;
        let fleet = [host("b", now), host("c", now), host("a", now - 40_000)];
        assert!(leader("b", &fleet, now, stale), "a is not heard from");
        assert!(!leader("c", &fleet, now, stale));
        assert!(leader("x", &[], now, stale), "alone, a host leads");
        let fleet = [host("a", now - 1_000), host("b", now)];
        assert!(!leader("b", &fleet, now, stale));
    }
}
