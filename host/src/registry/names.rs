//! One namespace per model. A request names a version or an alias with the same path segment
//! (`/v2/models/m/versions/{name}`), so a version and an alias of one model never share a name:
//! every writer refuses a clash (HTTP 409 on an upload or an alias move, an error from `ferry add`).
//!
//! A clash can still be found in a store written by others (two hosts racing, a writer from before
//! this rule). Every host settles it the same way: **the alias wins**. The version of that name is
//! listed as failed with a reason naming the clash; it is never loaded and never routed, and deleting
//! it (`DELETE /v1/models/{m}/versions/{v}`) clears the clash. The alias wins because an alias carries
//! traffic that is already flowing and is moved only by a credential allowed to move aliases: letting
//! the version win would let a credential that may only deploy take over an alias's traffic by
//! uploading a version under the alias's name. Routing looks a name up as an alias first (see
//! [`super::RoutingTable::route`]), so the rule holds even for a table built some other way.

use std::collections::BTreeSet;

use super::store::{check_name, ModelView};
use super::{ChangeError, DEFAULT_ALIAS};

/// A version name a user may choose: a valid name that is not reserved.
pub fn check_version_name(version: &str) -> Result<(), ChangeError> {
    check_name("version", version).map_err(|e| ChangeError::Invalid(e.to_string()))?;
    if DEFAULT_ALIAS == version || version == "aliases" || version == "traffic" {
        // A version named like the alias would make `/versions/production` ambiguous; the other two
        // would be read as the model's aliases and traffic documents in the store.
        return Err(ChangeError::Invalid(format!(
            "`{version}` is a reserved name"
        )));
    }
    Ok(())
}

/// The refusal of a new version named like an existing alias (409).
pub fn version_clash(model: &str, version: &str) -> ChangeError {
    ChangeError::Conflict(format!(
        "model `{model}` has an alias `{version}`: a version and an alias of one model cannot share a name; pick another version name"
    ))
}

/// The refusal of a new alias named like an existing version (409).
pub fn alias_clash(model: &str, alias: &str) -> ChangeError {
    ChangeError::Conflict(format!(
        "model `{model}` has a version `{alias}`: a version and an alias of one model cannot share a name; pick another alias name"
    ))
}

/// Why a version found in the store under an alias's name is not served.
pub fn clash_reason(model: &str, version: &str) -> String {
    format!(
        "its name clashes with alias `{version}` of model `{model}` (a version and an alias cannot share a name; the alias wins): delete this version and upload it under another name"
    )
}

/// The versions of `view` that share their name with one of its aliases: listed failed, never
/// loaded or routed.
pub fn clashing_versions(view: &ModelView) -> BTreeSet<String> {
    view.manifests
        .iter()
        .filter(|m| view.aliases.current.contains_key(&m.version))
        .map(|m| m.version.clone())
        .collect()
}

/// True for a model name the host reads from a store: the full listing, the change record and the
/// reconciling listing all go by this one rule.
pub fn listed_model(name: &str) -> bool {
    check_name("model", name).is_ok()
}

/// The first free numeric version name from `after + 1` on, skipping names an alias has.
pub fn next_numeric_name(after: Option<u64>, taken_by_alias: impl Fn(&str) -> bool) -> String {
    let mut n = after.map_or(1, |n| n.saturating_add(1));
    while taken_by_alias(&n.to_string()) && n < u64::MAX {
        n += 1;
    }
    n.to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::registry::{
        AliasTarget, ModelEntry, ModelVersion, RouteError, RoutingTable, VersionManifest,
        VersionState,
    };

    fn manifest(version: &str) -> VersionManifest {
        VersionManifest {
            model: "m".into(),
            version: version.into(),
            sequence: 1,
            component_sha256: "a".repeat(64),
            weights_sha256: None,
            config_sha256: None,
            tests_sha256: None,
            profile_sha256: None,
            limits: None,
            graphs: Default::default(),
        }
    }

    #[test]
    fn reserved_and_invalid_version_names_are_refused() {
        for bad in ["production", "aliases", "traffic", "../x", ""] {
            assert!(check_version_name(bad).is_err(), "{bad}");
        }
        assert!(check_version_name("canary-2").is_ok());
    }

    #[test]
    fn clashes_name_both_sides() {
        let e = version_clash("m", "canary");
        assert!(
            matches!(&e, ChangeError::Conflict(m) if m.contains("alias `canary`")),
            "{e}"
        );
        let e = alias_clash("m", "3");
        assert!(
            matches!(&e, ChangeError::Conflict(m) if m.contains("version `3`")),
            "{e}"
        );
    }

    #[test]
    fn a_version_named_like_an_alias_is_found() {
        let mut view = ModelView {
            manifests: vec![manifest("1"), manifest("canary")],
            ..Default::default()
        };
        assert!(clashing_versions(&view).is_empty());
        view.aliases
            .current
            .insert("canary".into(), AliasTarget::version("1"));
        view.aliases
            .current
            .insert("production".into(), AliasTarget::version("1"));
        assert_eq!(
            clashing_versions(&view).into_iter().collect::<Vec<_>>(),
            ["canary"]
        );
    }

    #[test]
    fn model_names_are_listed_by_one_rule() {
        assert!(listed_model("digits-onnx"));
        for bad in ["../etc", ".hidden", "a/b", "", "a b"] {
            assert!(!listed_model(bad), "{bad}");
        }
    }

    #[test]
    fn numeric_names_skip_aliases() {
        assert_eq!(next_numeric_name(None, |_| false), "1");
        assert_eq!(next_numeric_name(Some(2), |n| n == "3" || n == "4"), "5");
        assert_eq!(
            next_numeric_name(Some(u64::MAX), |_| false),
            u64::MAX.to_string()
        );
    }

    async fn store() -> (tempfile::TempDir, crate::registry::Store) {
        let dir = tempfile::tempdir().unwrap();
        let storage = crate::storage::open(dir.path().join("store").to_str().unwrap()).unwrap();
        let cache =
            crate::storage::BlobCache::open(storage, &dir.path().join("cache"), 1 << 30).unwrap();
        (dir, crate::registry::Store::new(cache))
    }

    async fn component(store: &crate::registry::Store) -> String {
        let (path, _) = store.blobs().upload_file().unwrap();
        let bytes = b"\0asm not really a component";
        std::fs::write(&path, bytes).unwrap();
        let sha = crate::stamps::sha256_hex(bytes);
        store.blobs().commit_upload(&path, &sha).await.unwrap();
        sha
    }

    async fn set_alias(store: &crate::registry::Store, alias: &str, version: &str) {
        store
            .update_aliases("m", |a| {
                a.current
                    .insert(alias.to_owned(), AliasTarget::version(version));
                Ok(())
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn the_store_refuses_a_version_under_an_alias_name_and_numbers_skip_aliases() {
        let (_dir, store) = store().await;
        let c = component(&store).await;
        set_alias(&store, "canary", "1").await;
        set_alias(&store, "2", "1").await;
        let named = |v: &str| VersionManifest {
            component_sha256: c.clone(),
            ..manifest(v)
        };
        let err = store.create_version(&named("canary")).await.unwrap_err();
        assert!(
            matches!(&err, ChangeError::Conflict(m) if m.contains("alias `canary`")),
            "{err}"
        );
        for reserved in ["production", "aliases", "traffic"] {
            assert!(matches!(
                store.create_version(&named(reserved)).await,
                Err(ChangeError::Invalid(_))
            ));
        }
        assert_eq!(store.create_version(&named("")).await.unwrap().version, "1");
        assert_eq!(
            store.create_version(&named("")).await.unwrap().version,
            "3",
            "2 is an alias's"
        );
    }

    #[tokio::test]
    async fn every_listing_skips_the_model_names_the_full_listing_skips() {
        let (dir, store) = store().await;
        let c = component(&store).await;
        store
            .create_version(&VersionManifest {
                component_sha256: c,
                ..manifest("1")
            })
            .await
            .unwrap();
        for bad in [".hidden", "a b"] {
            let path = dir.path().join("store/models").join(bad).join("1.json");
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, b"{}").unwrap();
        }
        let full: Vec<String> = store.all_models().await.unwrap().into_keys().collect();
        let fingerprints: Vec<String> = store.fingerprints().await.unwrap().into_keys().collect();
        assert_eq!(full, ["m"]);
        assert_eq!(fingerprints, full);
        for bad in ["../m", ".hidden", "a/b"] {
            assert_eq!(
                store.model(bad).await.unwrap(),
                ModelView::default(),
                "{bad}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_clash_found_in_the_store_leaves_the_alias_its_traffic() {
        let (dir, store) = store().await;
        let c = component(&store).await;
        store
            .create_version(&VersionManifest {
                component_sha256: c.clone(),
                ..manifest("1")
            })
            .await
            .unwrap();
        set_alias(&store, "canary", "1").await;
        // Another writer (an older one, or a race) put a version under the alias's name.
        let hijack = VersionManifest {
            component_sha256: c,
            sequence: 99,
            ..manifest("canary")
        };
        std::fs::write(
            dir.path().join("store/models/m/canary.json"),
            serde_json::to_vec(&hijack).unwrap(),
        )
        .unwrap();
        let settings = crate::engine::EngineSettings {
            cache_dir: None,
            total_instances: 4,
            ..Default::default()
        };
        let models = crate::runtime::ModelRuntime::new(settings, false).unwrap();
        let registry = crate::registry::Registry::new(store.clone(), models, Default::default());
        registry.refresh("m").await.unwrap();
        registry.settle(std::time::Duration::from_secs(60)).await;
        let table = registry.table();
        let entry = &table.models["m"];
        match &entry.versions["canary"].state {
            VersionState::Failed(reason) => {
                assert!(reason.contains("clashes with alias `canary`"), "{reason}")
            }
            other => panic!("the clashing version is {other:?}"),
        }
        assert_eq!(entry.aliases["canary"], AliasTarget::version("1"));
        // The name routes to the alias's target (here version 1, which failed: its component is
        // not one), never to the version of the same name.
        match table.route("m", Some("canary")) {
            Err(RouteError::NotReady { version, .. }) => assert_eq!(version, "1"),
            Err(e) => panic!("routed elsewhere: {e}"),
            Ok(_) => panic!("a version that failed served"),
        }
        // And no alias is set under a version's name.
        let err = registry
            .set_alias("m", "1", AliasTarget::version("1"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ChangeError::Conflict(m) if m.contains("version `1`")),
            "{err}"
        );
    }

    #[test]
    fn a_name_that_is_both_routes_as_the_alias() {
        // A table where a version `canary` (as a store written by others might hold it) sits beside
        // the alias `canary` pointing at version 1: the name reaches the alias's target.
        let mut entry = ModelEntry::default();
        for v in ["1", "canary"] {
            entry.versions.insert(
                v.into(),
                Arc::new(ModelVersion::listed(
                    manifest(v),
                    crate::registry::Listing::Loading,
                )),
            );
        }
        entry
            .aliases
            .insert("canary".into(), AliasTarget::version("1"));
        let mut table = RoutingTable::default();
        table.models.insert("m".into(), entry);
        // Listed versions hold no pool, so neither serves: the error names the alias's target.
        match table.route("m", Some("canary")) {
            Err(RouteError::NotReady { version, .. }) => assert_eq!(version, "1"),
            Err(e) => panic!("routed elsewhere: {e}"),
            Ok(_) => panic!("a version without a pool served"),
        }
    }
}
