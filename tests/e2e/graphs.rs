//! Host-side graphs end to end: the three graph samples pass `ferry test` with their training
//! libraries' answers, serve over HTTP with both backends, and what a model may not do with a graph
//! (import wasi:nn without graphs, hand the host graph bytes, open a graph it was not given, run past
//! its deadline, send the wrong shape) fails that version or that request only.

use std::process::Command;
use std::sync::OnceLock;

use ferry_tests::http::{put_version, status_of};
use ferry_tests::server::{ferry_bin, Seed, Server};
use ferry_tests::{generated_graph, model_file, try_start_version, workspace};
use serde_json::{json, Value};

/// `ferry test` of a built sample with the files beside it, as the quick start runs it.
fn ferry_test(name: &str) -> (bool, String) {
    let seed = Seed::sample(name, "1");
    let mut cmd = Command::new(ferry_bin());
    cmd.arg("test").arg(&seed.component);
    if let Some(tests) = &seed.tests {
        cmd.arg("--tests").arg(tests);
    }
    let config = workspace().join(format!("target/models/{name}.config.json"));
    if config.exists() {
        cmd.arg("--config").arg(config);
    }
    for (graph, file) in &seed.graphs {
        cmd.arg("--graph")
            .arg(format!("{graph}={}", file.display()));
    }
    let out = ferry_tests::author_env(&mut cmd).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn graph_samples_pass_ferry_test_with_their_training_libraries_answers() {
    for (name, cases, backend) in [
        ("python-sklearn-graph", 30, "onnxruntime"),
        ("gbdt-graph", 21, "onnxruntime"),
        ("digits-graph", 31, "tract"),
    ] {
        let (passed, out) = ferry_test(name);
        assert!(passed, "{name}:\n{out}");
        assert!(
            out.contains(&format!("{cases} passed, 0 failed")),
            "{name}:\n{out}"
        );
        assert!(out.contains(&format!("by {backend}")), "{name}:\n{out}");
    }
}

#[test]
fn a_component_importing_wasi_nn_is_refused_for_a_version_without_graphs() {
    let err = try_start_version(
        &model_file("digits-graph.wasm"),
        json!({}),
        None,
        Default::default(),
        "digits-graph@no-graphs",
    )
    .err()
    .expect("a wasi:nn component loaded without graphs");
    let err = format!("{err:#}");
    assert!(err.contains("imports `wasi:nn/"), "{err}");
    assert!(err.contains("this version has no graphs"), "{err}");
    assert!(err.contains("--graph NAME=FILE.onnx"), "{err}");
    // The SDK links wasi:nn into every Rust model, but a model that opens no graph imports none of it.
    let pool = try_start_version(
        &model_file("fraud-features.wasm"),
        json!({}),
        None,
        Default::default(),
        "fraud-features@imports",
    )
    .expect("fraud-features loads");
    let imports: Vec<String> = pool
        .checkout()
        .unwrap()
        .component()
        .pre_component_type()
        .imports(ferry_tests::engine().engine().engine())
        .map(|(name, _)| name.to_owned())
        .collect();
    assert!(
        imports.iter().all(|i| !i.starts_with("wasi:nn")),
        "{imports:?}"
    );
}

fn infer(server: &Server, model: &str) -> (u16, Value) {
    let body =
        std::fs::read(workspace().join(format!("sample-models/{model}/example-request.json")))
            .unwrap();
    // An OIP body (tensors) goes to infer, a feature-style one to predict.
    let request: Value = serde_json::from_slice(&body).unwrap();
    let path = if request.get("inputs").is_some() {
        format!("/v2/models/{model}/infer")
    } else {
        format!("/v1/models/{model}/predict")
    };
    let (status, text) = status_of(
        ureq::post(&server.url(&path))
            .set("content-type", "application/json")
            .send_bytes(&body),
    );
    (status, serde_json::from_str(&text).unwrap_or(json!(text)))
}

fn describe(server: &Server, model: &str) -> Value {
    ureq::get(&server.url(&format!("/v1/models/{model}")))
        .call()
        .unwrap()
        .into_json()
        .unwrap()
}

#[test]
fn graph_versions_serve_over_http_and_uploads_carry_their_graphs() {
    let server = Server::start(
        &[
            Seed::sample("python-sklearn-graph", "1"),
            Seed::sample("gbdt-graph", "1"),
            Seed::sample("digits-graph", "1"),
        ],
        "[host]\nrequire_self_tests = true\n",
    );
    let (status, answer) = infer(&server, "python-sklearn-graph");
    assert_eq!(status, 200, "{answer}");
    let p = answer["cancel_probability"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p), "{answer}");
    assert_eq!(answer["will_cancel"], json!(p > 0.5));
    for model in ["gbdt-graph", "digits-graph"] {
        let (status, answer) = infer(&server, model);
        assert_eq!(status, 200, "{model}: {answer}");
        let outputs = answer["outputs"].as_array().unwrap();
        assert!(outputs.iter().any(|o| o["name"] == "label"), "{answer}");
    }
    for (model, backend) in [
        ("gbdt-graph", "onnxruntime"),
        ("digits-graph", "tract"),
        ("python-sklearn-graph", "onnxruntime"),
    ] {
        let v = &describe(&server, model)["versions"][0];
        assert_eq!(v["state"], "ready", "{v}");
        assert_eq!(v["graphs"]["backend"], backend, "{v}");
        let graph = &v["graphs"]["graphs"]["model"];
        let file =
            std::fs::metadata(workspace().join(format!("target/models/{model}.graph.model.onnx")))
                .unwrap()
                .len();
        assert!(graph["memory_bytes"].as_u64().unwrap() >= file, "{v}");
        assert_eq!(v["memory"]["graph_bytes"], graph["memory_bytes"], "{v}");
        assert_eq!(v["snapshot"]["taken"], true, "{v}");
    }

    // A version uploaded with its graph as a `graph:NAME` part; the same network on the other backend.
    let component = model_file("digits-graph.wasm");
    let graph = std::fs::read(workspace().join("sample-models/digits-onnx/digits.onnx")).unwrap();
    let tests = model_file("digits-graph.tests.json");
    let (status, body) = put_version(
        &server.url(""),
        "digits-graph",
        "2",
        &[
            ("component", &component),
            ("graph:model", &graph),
            ("tests", &tests),
            ("config", br#"{"graphs": {"backend": "onnxruntime"}}"#),
        ],
    );
    assert_eq!(status, 201, "{body}");
    let created: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        created["graphs"]["model"].as_str().unwrap().len(),
        64,
        "{body}"
    );
    let v2 = wait_settled(&server, "digits-graph", "2");
    assert_eq!(v2["state"], "ready", "{v2}");
    assert_eq!(v2["graphs"]["backend"], "onnxruntime", "{v2}");
    assert_eq!(v2["self_tests"]["failed"], 0, "{v2}");

    // Without its graph the same component is refused, with the reason on the version.
    let (status, body) = put_version(
        &server.url(""),
        "digits-graph",
        "3",
        &[("component", &component)],
    );
    assert_eq!(status, 201, "{body}");
    let v3 = wait_settled(&server, "digits-graph", "3");
    assert_eq!(v3["state"], "failed", "{v3}");
    assert!(
        v3["reason"]
            .as_str()
            .unwrap()
            .contains("this version has no graphs"),
        "{v3}"
    );
    // An unknown graph name in a part is the uploader's error.
    let (status, body) = put_version(
        &server.url(""),
        "digits-graph",
        "4",
        &[("component", &component), ("graph:../x", &graph)],
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid graph name"), "{body}");
}

fn wait_settled(server: &Server, model: &str, version: &str) -> Value {
    for _ in 0..600 {
        let d = describe(server, model);
        if let Some(v) = d["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["version"] == version)
        {
            if v["state"] != "loading" {
                return v.clone();
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("{model}@{version} did not settle:\n{}", server.log());
}

/// The graph guest over a deep generated network (24 layers of 512): one run of 40 000 rows (about
/// 10 s on one core here) is many operators of a few hundred milliseconds each, so a deadline falls
/// between two of them. The deadline is 2 s, not less: it is wall-clock time, and on a loaded CI
/// machine the guest's own work before the graph run (40 000 generated rows), or a one-millisecond
/// misuse call, once took longer than an earlier 300 ms.
fn misuse_server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let deep = generated_graph("deep-512x24", &["--hidden", "512", "--layers", "24"]);
        let guest = Seed {
            model: "graph-guest",
            version: "1",
            component: workspace().join("target/test-guests/graph-guest.wasm"),
            weights: None,
            tests: None,
            profile: None,
            config: None,
            graphs: vec![("model".into(), deep)],
        };
        Server::start(
            &[guest, Seed::sample("fraud-features", "1")],
            // A whole core's share: these tests are about graph misuse, and a model held to the
            // default share runs its calls at idle priority once it is over it (on a loaded
            // machine, past its deadline).
            "[host]\nrequire_self_tests = false\n[models.graph-guest]\ndeadline_ms = 2000\nmax_instances = 2\ncpu_share = 1.0\n",
        )
    })
}

/// Taken by each test of the misuse server for its whole run: the 40 000-row run keeps a core busy
/// in native code until its deadline stops it, and the misuse test's calls are not to race it for
/// the machine's two cores.
fn misuse_turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn predict(model: &str, body: Value) -> (u16, String) {
    status_of(
        ureq::post(&misuse_server().url(&format!("/v1/models/{model}/predict")))
            .set("content-type", "application/json")
            .send_string(&body.to_string()),
    )
}

fn assert_still_serving() {
    let (status, body) = predict("graph-guest", json!({"rows": 2}));
    assert_eq!(status, 200, "{body}");
    let fraud = std::fs::read_to_string(
        workspace().join("sample-models/fraud-features/example-request.json"),
    )
    .unwrap();
    let (status, body) = predict("fraud-features", serde_json::from_str(&fraud).unwrap());
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_graph_run_past_its_deadline_is_stopped_and_answered_504() {
    let _turn = misuse_turn();
    let (status, body) = predict("graph-guest", json!({"rows": 40_000}));
    assert_eq!(status, 504, "{body}\n{}", misuse_server().log());
    // Stopped by the host (not run to its end and then caught by the guest's deadline).
    assert!(
        body.contains("a graph run passed the model's 2s and was stopped"),
        "{body}"
    );
    assert_still_serving();
}

#[test]
fn graph_misuse_fails_that_request_only() {
    let _turn = misuse_turn();
    let (status, body) = predict("graph-guest", json!({"load_bytes": true}));
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("graph bytes from the guest are refused"),
        "{body}"
    );
    assert_still_serving();

    let (status, body) = predict("graph-guest", json!({"graph": "other"}));
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("NotFound") && body.contains("other"),
        "{body}"
    );
    assert_still_serving();

    let (status, body) = predict("graph-guest", json!({"pixels": 63}));
    assert_eq!(status, 500, "{body}");
    // ONNX Runtime's own words reach the caller.
    assert!(body.contains("Got: 63 Expected: 64"), "{body}");
    assert_still_serving();
}

/// Native kernels that use 256-bit AVX registers and return without `vzeroupper` (tract's; ONNX
/// Runtime's clean up) leave the thread's vector state dirty, and every legacy-SSE instruction of guest code
/// run on that thread afterwards pays for it (digits-onnx's call: 12 µs clean, 220–530 µs dirty).
/// So a guest call starts from a clean state, and a graph run hands the guest back a clean one.
/// Read from the processor (`XINUSE`), not timed.
#[test]
fn guest_code_never_runs_on_dirty_vector_state() {
    use ferry::engine::cpu::upper_vector_state_in_use;
    use ferry::host_api::graph::GraphBackend;

    if upper_vector_state_in_use().is_none() {
        eprintln!("this CPU cannot report its AVX state; nothing to check");
        return;
    }
    let dirty = || {
        // SAFETY: the CPU reported its AVX state, so it has AVX; ymm0 is declared clobbered.
        unsafe { std::arch::asm!("vpcmpeqd ymm0, ymm0, ymm0", out("ymm0") _) };
        assert_eq!(upper_vector_state_in_use(), Some(true));
    };
    let runtime = ferry_tests::engine();
    let digits = std::fs::read(workspace().join("sample-models/digits-onnx/digits.onnx")).unwrap();
    let input = digits_input();

    // A guest call entered with dirty state leaves it clean: it was cleared on the way in (guest
    // code itself only uses 128-bit registers).
    let mut in_guest = ferry_tests::sample_instance(&runtime, "digits-onnx", Some(&digits), None);
    dirty();
    in_guest.infer(&input, "{}").unwrap();
    assert_eq!(
        upper_vector_state_in_use(),
        Some(false),
        "a guest call ran on the dirty vector state it was entered with"
    );

    // A graph run's kernels dirty the state mid-call (tract's do); the guest gets it back clean.
    for backend in [GraphBackend::OnnxRuntime, GraphBackend::Tract] {
        let graphs = digits_graphs(backend);
        let mut on_graph =
            ferry_tests::sample_instance(&runtime, "digits-graph", None, Some(&graphs));
        on_graph.infer(&input, "{}").unwrap();
        assert_eq!(
            upper_vector_state_in_use(),
            Some(false),
            "{backend:?}: the graph run left the vector state dirty for the guest"
        );
    }
}

/// A call on an async worker gives way once it has run its limit, and runs again on a thread of its
/// own; a native graph run, which no epoch tick interrupts, is stopped at that limit by its backend
/// just as guest code is at a tick, and the call gives way instead of failing. Without the limit
/// the same call answers.
#[test]
fn a_graph_run_past_the_give_way_limit_gives_way_instead_of_failing() {
    use ferry::host_api::graph::GraphBackend;
    use ferry::runtime::CallError;

    let runtime = ferry_tests::engine();
    let input = digits_input();
    for backend in [GraphBackend::OnnxRuntime, GraphBackend::Tract] {
        let graphs = digits_graphs(backend);
        // A limit the run is past before it starts (the guest's own code takes microseconds, far
        // less than an epoch tick, so only the graph run can be what gives way).
        let mut limited =
            ferry_tests::sample_instance(&runtime, "digits-graph", None, Some(&graphs));
        limited.give_way_after(Some(std::time::Duration::from_nanos(1)));
        match limited.infer(&input, "{}") {
            Err(CallError::GaveWay(_)) => {}
            other => panic!("{backend:?}: a graph run past the limit answered {other:?}"),
        }
        assert!(
            limited.is_poisoned(),
            "an instance that gave way is not reused"
        );

        let mut free = ferry_tests::sample_instance(&runtime, "digits-graph", None, Some(&graphs));
        let answer = free.infer(&input, "{}").unwrap();
        assert_eq!(answer[0].name, "probabilities", "{backend:?}");
    }
}

/// digits-onnx's network as a version's graph `model`, run by `backend`.
fn digits_graphs(
    backend: ferry::host_api::graph::GraphBackend,
) -> std::sync::Arc<ferry::host_api::graph::VersionGraphs> {
    let digits = std::fs::read(workspace().join("sample-models/digits-onnx/digits.onnx")).unwrap();
    ferry_tests::model_graph(&digits, backend)
}

/// One image for digits' `infer`.
fn digits_input() -> [ferry::runtime::Tensor; 1] {
    [ferry::runtime::Tensor {
        name: "input".into(),
        shape: vec![1, 64],
        data: ferry::runtime::TensorData::Fp32((0..64).map(|i| ((i * 7) % 17) as f32).collect()),
    }]
}
