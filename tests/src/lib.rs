//! Shared fixtures for the end-to-end tests: where the built components are, one engine per test
//! binary, and a version started the way the host starts one.
//!
//! The components come from `scripts/build-models.sh` (the README's test command runs it first).

pub mod fleet;
pub mod http;
pub mod s3;
pub mod server;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use ferry::engine::EngineSettings;
use ferry::host_api::graph::VersionGraphs;
use ferry::runtime::{
    CallError, InstancePool, ModelInstance, ModelLimits, ModelRuntime, Startup, VersionInputs,
};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

fn read_built(path: PathBuf) -> Vec<u8> {
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the components first with scripts/build-models.sh",
            path.display()
        )
    })
}

/// One instance of the built sample `name` on `runtime`, initialised with an empty config, `weights`
/// and `graphs`, outside any pool or server: what a benchmark or a test of one call drives.
pub fn sample_instance(
    runtime: &ModelRuntime,
    name: &str,
    weights: Option<&[u8]>,
    graphs: Option<&Arc<VersionGraphs>>,
) -> ModelInstance {
    let component = runtime
        .load_component(&model_file(&format!("{name}.wasm")))
        .expect("component");
    ModelInstance::start(
        &component,
        &ModelLimits::default(),
        Arc::from(component.sha256()),
        Startup::Init {
            config: "{}",
            weights,
        },
        graphs,
    )
    .expect("instance")
}

/// `onnx` as a version's one graph, `model` (the name the graph samples open), run by `backend`.
pub fn model_graph(
    onnx: &[u8],
    backend: ferry::host_api::graph::GraphBackend,
) -> Arc<VersionGraphs> {
    use ferry::host_api::graph::{GraphFile, GraphOptions};
    let file = GraphFile {
        name: "model".into(),
        sha256: ferry::runtime::sha256_hex(onnx),
        bytes: onnx.to_vec().into(),
    };
    VersionGraphs::load(vec![file], &GraphOptions { backend }, 1).expect("graph loads")
}

/// A file from `target/models/` (e.g. `digits-onnx.wasm`, `digits-onnx.weights`).
pub fn model_file(file: &str) -> Vec<u8> {
    read_built(workspace().join("target/models").join(file))
}

/// A test guest from `target/test-guests/`.
pub fn test_guest(name: &str) -> Vec<u8> {
    read_built(
        workspace()
            .join("target/test-guests")
            .join(format!("{name}.wasm")),
    )
}

/// The SDK test guest `name` (`python-sdk-guest`, `js-sdk-guest`), initialised with `config` and no
/// weights under the default limits, as a host starts an instance.
pub fn sdk_probe(name: &str, config: &str) -> Result<ModelInstance, CallError> {
    let component = engine()
        .load_component(&test_guest(name))
        .expect("component loads");
    ModelInstance::start(
        &component,
        &ModelLimits::default(),
        Arc::from(name),
        Startup::Init {
            config,
            weights: None,
        },
        None,
    )
}

/// The error `predict` answers `request` with; the instance must stay usable (a model error is an
/// answer, not a trap).
pub fn predict_err(instance: &mut ModelInstance, request: &str) -> CallError {
    let err = instance.predict(request).unwrap_err();
    assert!(
        !instance.is_poisoned(),
        "a model error is an answer, not a trap: the instance stays usable"
    );
    err
}

/// One runtime per test binary, counting no fuel (as the host by default: a version with a fuel
/// limit runs on the runtime's second engine), snapshots on (as the host serves), and its own
/// compile cache under `target/`.
pub fn engine() -> Arc<ModelRuntime> {
    static RUNTIME: OnceLock<Arc<ModelRuntime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            ModelRuntime::new(
                EngineSettings {
                    cache_dir: Some(workspace().join("target/ferry-test-cache")),
                    total_instances: 64,
                    ..Default::default()
                },
                true,
            )
            .expect("runtime")
        })
        .clone()
}

/// Starts a version of `component` on `runtime` the way the host does (from a snapshot of its
/// initialised instance when one can be taken); also says how it was prepared.
pub fn start_version_on(
    runtime: &Arc<ModelRuntime>,
    component: &[u8],
    config: &str,
    weights: Option<Vec<u8>>,
    limits: &ModelLimits,
    label: &str,
) -> anyhow::Result<(Arc<InstancePool>, ferry::runtime::Prepared)> {
    let weights_sha = weights.as_deref().map(ferry::runtime::sha256_hex);
    runtime.for_limits(limits)?.start_version(
        ferry::runtime::NewVersion {
            component,
            component_sha256: &ferry::runtime::sha256_hex(component),
            inputs: VersionInputs {
                config: config.to_owned(),
                weights: weights.map(Into::into),
            },
            weights_sha256: weights_sha.as_deref(),
            graphs: None,
            refetch: None,
        },
        limits,
        &Arc::from(label),
        None,
    )
}

/// Starts a version of `component` with `config`, `weights` and `limits` in the shared runtime, as
/// the host would.
pub fn try_start_version(
    component: &[u8],
    config: serde_json::Value,
    weights: Option<Vec<u8>>,
    limits: ModelLimits,
    label: &str,
) -> anyhow::Result<Arc<InstancePool>> {
    let (pool, _) = start_version_on(
        &engine(),
        component,
        &config.to_string(),
        weights,
        &limits,
        label,
    )?;
    Ok(pool)
}

/// [`try_start_version`], for versions that must start.
pub fn start_version(
    component: &[u8],
    config: serde_json::Value,
    weights: Option<Vec<u8>>,
    limits: ModelLimits,
    label: &str,
) -> Arc<InstancePool> {
    try_start_version(component, config, weights, limits, label)
        .unwrap_or_else(|e| panic!("{label} starts: {e:#}"))
}

/// The fraud-features sample, healthy, in the shared engine: the bystander every hostile test checks.
pub fn fraud_features() -> Arc<InstancePool> {
    static POOL: OnceLock<Arc<InstancePool>> = OnceLock::new();
    POOL.get_or_init(|| {
        start_version(
            &model_file("fraud-features.wasm"),
            serde_json::json!({}),
            None,
            ModelLimits::default(),
            "fraud-features",
        )
    })
    .clone()
}

/// Asserts that the healthy bystander still answers a known request with scikit-learn's probability.
pub fn assert_bystander_answers() {
    let tests: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(workspace().join("sample-models/fraud-features/tests.json"))
            .unwrap(),
    )
    .unwrap();
    let case = &tests["cases"][0];
    let answer = fraud_features()
        .checkout()
        .expect("bystander has an instance")
        .predict(&case["request"].to_string());
    let answer: serde_json::Value =
        serde_json::from_str(&answer.expect("bystander answers")).unwrap();
    let (got, want) = (
        answer["fraud_probability"].as_f64().unwrap(),
        case["response"]["fraud_probability"].as_f64().unwrap(),
    );
    assert!(
        (got - want).abs() < 1e-9,
        "bystander answered {got}, scikit-learn says {want}"
    );
}

/// Points a `ferry` (or shell) command at the checkout's shared build state: model projects' cargo
/// dependencies built once (`target/author-projects`), the tests' compile cache, and the componentize-py
/// that `scripts/build-models.sh` installed into `target/tools` (installed on first use otherwise).
pub fn author_env(cmd: &mut std::process::Command) -> &mut std::process::Command {
    cmd.env(
        "CARGO_TARGET_DIR",
        workspace().join("target/author-projects"),
    )
    .env(
        "FERRY_CACHE_DIR",
        workspace().join("target/ferry-test-cache"),
    )
    .env("FERRY_TOOLS_DIR", workspace().join("target/tools"))
}

/// Runs `tests/python/SCRIPT` with `args` under the tests' Python (`target/py`, which scripts/test.sh
/// fills from tests/python/requirements.txt): whether it succeeded, and what it printed (stdout, then
/// stderr).
pub fn python_check(script: &str, args: &[&std::ffi::OsStr]) -> (bool, String) {
    let python = workspace().join("target/py/bin/python");
    assert!(
        python.exists(),
        "{} is missing: scripts/test.sh installs tests/python/requirements.txt there",
        python.display()
    );
    // Output goes to files, not pipes, so a check that prints much cannot block on a full pipe
    // while it is waited for with a time limit.
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = std::process::Command::new(python)
        .arg(workspace().join("tests/python").join(script))
        .args(args)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    // A check that hangs (a server that stopped answering, a browser that never loads) fails the
    // test instead of holding the whole run.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut text = format!(
        "{}{}",
        std::fs::read_to_string(&out).unwrap_or_default(),
        std::fs::read_to_string(&err).unwrap_or_default()
    );
    if status.is_none() {
        text += &format!("\n{script} was stopped after 600 s");
    }
    (status.is_some_and(|s| s.success()), text)
}

/// An ONNX graph written by `benches/graphs/make_mlp.py` with `args` (e.g. `["--hidden", "256"]`),
/// generated once per checkout under `target/graphs/NAME.onnx` with the tests' Python (`target/py`,
/// which scripts/test.sh fills from tests/python/requirements.txt).
pub fn generated_graph(name: &str, args: &[&str]) -> PathBuf {
    let out = workspace().join(format!("target/graphs/{name}.onnx"));
    if out.exists() {
        return out;
    }
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    // Test binaries run side by side: each writes its own file, the last rename wins (same bytes).
    let partial = out.with_extension(format!("onnx.{}", std::process::id()));
    let python = workspace().join("target/py/bin/python");
    let status = std::process::Command::new(&python)
        .arg(workspace().join("benches/graphs/make_mlp.py"))
        .arg("--out")
        .arg(&partial)
        .args(args)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run scripts/test.sh once to install it)",
                python.display()
            )
        });
    assert!(status.success(), "make_mlp.py {args:?} failed");
    std::fs::rename(&partial, &out).unwrap();
    out
}
