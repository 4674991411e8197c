//! Versions serve from snapshots of their initialised instance: every sample (Rust and Python, tract
//! included) is captured after `init`, passes its self-tests from the snapshot, and starts new
//! instances without running `init`; a guest whose state cannot be captured is served with `init` per
//! instance, with the reason kept.

use std::sync::Arc;

use ferry::engine::EngineSettings;
use ferry::runtime::{ModelLimits, ModelRuntime, StartMode};
use ferry::selftest::{collect_cases, run_cases};
use ferry_tests::{engine, model_file, start_version_on, test_guest, workspace};
use serde_json::json;

fn start(
    component: &[u8],
    config: &str,
    weights: Option<Vec<u8>>,
    label: &str,
) -> (Arc<ferry::runtime::InstancePool>, ferry::runtime::Prepared) {
    start_on(&engine(), component, config, weights, label)
}

fn start_on(
    runtime: &Arc<ModelRuntime>,
    component: &[u8],
    config: &str,
    weights: Option<Vec<u8>>,
    label: &str,
) -> (Arc<ferry::runtime::InstancePool>, ferry::runtime::Prepared) {
    let limits = ModelLimits {
        min_instances: 2,
        ..Default::default()
    };
    start_version_on(runtime, component, config, weights, &limits, label)
        .unwrap_or_else(|e| panic!("{label}: {e:#}"))
}

#[test]
fn every_sample_serves_from_a_snapshot_that_passes_its_self_tests() {
    for name in [
        "fraud-features",
        "diabetes-gbdt",
        "digits-onnx",
        "python-eta",
        "geo-embeddings",
    ] {
        let beside = |ext: &str| {
            let path = workspace().join(format!("target/models/{name}.{ext}"));
            path.exists().then(|| std::fs::read(path).unwrap())
        };
        let (pool, prepared) = start(
            &model_file(&format!("{name}.wasm")),
            "{}",
            beside("weights"),
            name,
        );
        assert_eq!(prepared.mode, StartMode::Snapshot, "{name}");
        assert!(prepared.image_bytes > 0, "{name}: the snapshot has memory");
        // Both warm instances came from the snapshot; neither ran init.
        assert_eq!(pool.stats().live, 2);
        let tests = beside("tests.json").map(|t| String::from_utf8(t).unwrap());
        let mut instance = pool.checkout().unwrap();
        let cases = collect_cases(instance.self_tests().unwrap(), tests.as_deref()).unwrap();
        assert!(!cases.is_empty(), "{name} ships self-tests");
        let report = run_cases(&mut instance, &cases);
        assert!(
            report.all_passed(),
            "{name} from its snapshot: {:?}",
            report
                .outcomes
                .iter()
                .filter(|o| !o.passed)
                .map(|o| &o.detail)
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn a_guest_that_keeps_a_stream_open_after_init_runs_init_per_instance() {
    let (pool, prepared) = start(
        &test_guest("hostile-guest"),
        &json!({"attack": "print-at-init"}).to_string(),
        None,
        "print-at-init",
    );
    match &prepared.mode {
        StartMode::InitPerInstance(reason) => {
            assert!(reason.contains("holds host resources"), "{reason}")
        }
        StartMode::Snapshot => panic!("an open stream cannot be in a snapshot"),
    }
    // Not a failed version: it serves, every instance having run init itself.
    assert_eq!(pool.stats().live, 2);
    let answer = pool.checkout().unwrap().predict(r#"{"hello": 1}"#).unwrap();
    assert!(answer.contains("hello"), "{answer}");
}

#[test]
fn a_weights_only_update_snapshots_again_reusing_most_compiled_code() {
    // Two versions of geo-embeddings differing only in weights: the second reuses the machine code
    // of most functions Cranelift compiled for the first (a few — trampolines, functions whose
    // compile environment changes with the data — are compiled again). A runtime of its own, with no compile cache on disk, so that
    // both snapshots are compiled here and no other test's compiles are counted.
    let runtime = ModelRuntime::new(
        EngineSettings {
            cache_dir: None,
            total_instances: 8,
            ..Default::default()
        },
        true,
    )
    .unwrap();
    let component = model_file("geo-embeddings.wasm");
    let weights = model_file("geo-embeddings.weights");
    let mut other = weights.clone();
    // Change a table value well past the header: the model still loads, its answers differ.
    let at = other.len() - 64;
    other[at] ^= 0x01;
    let (_, first) = start_on(&runtime, &component, "{}", Some(weights), "geo@1");
    let before = runtime.engine().incremental_stats();
    let (_, second) = start_on(&runtime, &component, "{}", Some(other), "geo@2");
    let after = runtime.engine().incremental_stats();
    assert_eq!(second.mode, StartMode::Snapshot);
    assert_ne!(first.key, second.key, "other weights, another snapshot");
    let (full, update) = (before.misses, after.misses - before.misses);
    assert!(
        update * 4 < full,
        "a weights-only update compiled {update} functions; the first version {full}"
    );
    assert!(after.hits - before.hits > 3 * update);
}
