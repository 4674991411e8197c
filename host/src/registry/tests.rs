//! The registry and sync on the in-memory store: hosts as values in one process, sharing one store,
//! with no server and no store directory (each host's blob cache still sits in a temporary
//! directory). The components are the sample models `scripts/build-models.sh` builds.

use std::sync::Arc;
use std::time::Duration;

use super::sync::{SyncOptions, Syncer};
use super::*;
use crate::storage::{BlobCache, Memory, Metered, Storage};

/// A sample or test guest as `scripts/build-models.sh` left it.
fn guest(path: &str) -> Vec<u8> {
    let path = format!("{}/../target/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{path}: {e} (build the guests first: scripts/build-models.sh)"))
}

/// One host on `storage`: its own cache, runtime and registry.
struct Host {
    registry: Arc<Registry>,
    counts: Arc<crate::storage::RequestCounts>,
    _cache: tempfile::TempDir,
}

fn host(storage: Arc<dyn Storage>) -> Host {
    let cache = tempfile::tempdir().unwrap();
    let metered = Arc::new(Metered::new(storage));
    let counts = metered.counts();
    let blobs = BlobCache::open(metered, cache.path(), 1 << 30).unwrap();
    let settings = crate::engine::EngineSettings {
        cache_dir: None,
        total_instances: 16,
        ..Default::default()
    };
    let runtime = crate::runtime::ModelRuntime::new(settings, false).unwrap();
    let mut config = HostConfig::default();
    config.host.total_instances = 16;
    config.host.parallel_loads = Some(1);
    Host {
        registry: Registry::new(Store::new(blobs), runtime, config),
        counts,
        _cache: cache,
    }
}

/// Stores `bytes` as a blob through `registry`'s cache; answers its sha256.
async fn blob(registry: &Registry, bytes: &[u8]) -> String {
    let (path, _) = registry.store().blobs().upload_file().unwrap();
    std::fs::write(&path, bytes).unwrap();
    let sha = crate::stamps::sha256_hex(bytes);
    registry
        .store()
        .blobs()
        .commit_upload(&path, &sha)
        .await
        .unwrap();
    sha
}

/// Creates `model` version `version` from `component` and waits for it to settle.
async fn create(registry: &Arc<Registry>, model: &str, version: &str, component: &str) {
    let mut manifest = registry
        .new_manifest(model, Some(version.into()))
        .await
        .unwrap();
    manifest.component_sha256 = component.into();
    registry.create_version(manifest).await.unwrap();
    registry.settle(Duration::from_secs(120)).await;
}

fn state(registry: &Registry, model: &str, version: &str) -> String {
    registry.table().models[model].versions[version]
        .state
        .describe()
}

fn default_version(registry: &Registry, model: &str) -> Option<String> {
    let table = registry.table();
    let v = table.models.get(model)?.default_version()?;
    Some(v.manifest.version.clone())
}

fn sync_options(host: &str) -> SyncOptions {
    SyncOptions {
        interval: Duration::from_millis(50),
        heartbeat: Duration::from_secs(60),
        host: host.into(),
        address: "127.0.0.1:0".into(),
        gc_interval: None,
        gc_grace: Duration::from_secs(3600),
        reconcile_interval: Duration::from_secs(3600),
        audit: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_on_one_store_converge_and_an_alias_moves_on_each_once_its_target_is_ready() {
    let store: Arc<dyn Storage> = Arc::new(Memory::new("two-hosts"));
    let (a, b) = (host(store.clone()), host(store));
    let fraud = blob(&a.registry, &guest("models/fraud-features.wasm")).await;
    create(&a.registry, "fraud", "1", &fraud).await;
    assert_eq!(state(&a.registry, "fraud", "1"), "ready");

    // The second host starts from the store: what the first made, it serves.
    let mut syncer = Syncer::new(b.registry.clone(), sync_options("b"));
    syncer.start().await.unwrap();
    assert_eq!(state(&b.registry, "fraud", "1"), "ready");
    assert_eq!(default_version(&b.registry, "fraud").as_deref(), Some("1"));

    // A promote on the first host reaches the second by its change record; there the alias moves
    // only once its target is ready, so requests without a version always find one.
    a.registry
        .set_alias("fraud", DEFAULT_ALIAS, AliasTarget::version("1"))
        .await
        .unwrap();
    create(&a.registry, "fraud", "2", &fraud).await;
    a.registry
        .set_alias("fraud", DEFAULT_ALIAS, AliasTarget::version("2"))
        .await
        .unwrap();
    syncer.poll().await;
    let mut seen = Vec::new();
    for _ in 0..600 {
        let now = default_version(&b.registry, "fraud");
        assert!(
            now.is_some(),
            "the second host routed nothing while the alias moved"
        );
        if seen.last() != Some(&now) {
            seen.push(now.clone());
        }
        if now.as_deref() == Some("2") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        seen.last().cloned().flatten().as_deref(),
        Some("2"),
        "{seen:?}"
    );
    // Version 1 is drained on both hosts once nothing names it.
    b.registry.settle(Duration::from_secs(60)).await;
    assert_eq!(
        state(&b.registry, "fraud", "1"),
        "unloaded: replaced as target; drained"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_cannot_be_read_waits_for_the_store_without_retrying_in_a_loop() {
    let memory = Arc::new(Memory::new("outage"));
    let (a, b) = (host(memory.clone()), host(memory.clone()));
    let fraud = blob(&a.registry, &guest("models/fraud-features.wasm")).await;
    create(&a.registry, "fraud", "1", &fraud).await;

    // The second host reads the model, then the store goes away before it has the component.
    let ticket = b.registry.ticket();
    let view = b.registry.store().model("fraud").await.unwrap();
    memory.set_reachable(false);
    b.registry.apply("fraud", view, ticket);
    b.registry.settle(Duration::from_secs(60)).await;
    let waiting = state(&b.registry, "fraud", "1");
    assert!(
        waiting.starts_with("unloaded: waiting for the store"),
        "{waiting}"
    );

    // Applying the model again (as every poll and change does) does not try the store again.
    let before = b.counts.total();
    for _ in 0..20 {
        b.registry.reapply("fraud", plan::Retry::No);
    }
    b.registry.settle(Duration::from_secs(10)).await;
    assert_eq!(
        b.counts.total(),
        before,
        "the store was asked again while away"
    );

    // When the store answers (the sync loop says so), the version loads.
    memory.set_reachable(true);
    b.registry.retry_waiting();
    b.registry.settle(Duration::from_secs(60)).await;
    assert_eq!(state(&b.registry, "fraud", "1"), "ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loading_a_model_again_says_when_none_of_its_versions_came_up() {
    let a = host(Arc::new(Memory::new("load-again")));
    let wrong = blob(&a.registry, &guest("test-guests/wrong-contract-guest.wasm")).await;
    create(&a.registry, "broken", "1", &wrong).await;
    assert!(state(&a.registry, "broken", "1").starts_with("failed:"));
    a.registry.unload_model("broken").await.unwrap();
    assert_eq!(
        state(&a.registry, "broken", "1"),
        "unloaded: unloaded on request"
    );
    a.registry.load_model("broken").await.unwrap();
    let why = a.registry.not_serving("broken").expect("nothing serves");
    assert!(
        matches!(&why, ChangeError::Unavailable(m) if m.contains("has no ready version") && m.contains("version `1` ")),
        "{why}"
    );
    assert!(a.registry.not_serving("unknown").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promote_to_a_version_that_fails_is_refused_and_the_alias_stays() {
    let a = host(Arc::new(Memory::new("promote-fails")));
    let fraud = blob(&a.registry, &guest("models/fraud-features.wasm")).await;
    let wrong = blob(&a.registry, &guest("test-guests/wrong-contract-guest.wasm")).await;
    create(&a.registry, "fraud", "1", &fraud).await;
    a.registry
        .set_alias("fraud", DEFAULT_ALIAS, AliasTarget::version("1"))
        .await
        .unwrap();
    create(&a.registry, "fraud", "2", &wrong).await;
    let err = a
        .registry
        .set_alias("fraud", DEFAULT_ALIAS, AliasTarget::version("2"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ChangeError::Conflict(m) if m.contains("version `2` failed")),
        "{err}"
    );
    let table = a.registry.table();
    assert_eq!(
        table.models["fraud"].aliases[DEFAULT_ALIAS],
        AliasTarget::version("1")
    );
    assert_eq!(default_version(&a.registry, "fraud").as_deref(), Some("1"));
}
