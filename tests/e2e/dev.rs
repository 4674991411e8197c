//! `ferry dev` as an author uses it: a fresh project served on a local host, then a source change, a
//! weights change, a retrain that forgot the tests file and a broken build, each seen in the running
//! host's answers (or, for the last two, in the old answer staying); Ctrl-C stops the host.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferry_tests::author_env;
use ferry_tests::server::ferry_bin;
use serde_json::Value;

/// `ferry dev` running in a project, its output going to a file the test reads.
struct Dev {
    child: Child,
    output: PathBuf,
    base: String,
    /// How much of the output earlier waits consumed.
    seen: usize,
}

impl Dev {
    fn start(project: &Path, scratch: &Path) -> Dev {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let output = scratch.join("dev.out");
        let file = std::fs::File::create(&output).unwrap();
        let child = author_env(
            Command::new(ferry_bin())
                .args(["dev", "--listen", &format!("127.0.0.1:{port}")])
                .current_dir(project)
                .stdout(file.try_clone().unwrap())
                .stderr(file)
                .stdin(Stdio::null()),
        )
        .spawn()
        .unwrap();
        Dev {
            child,
            output,
            base: format!("http://127.0.0.1:{port}"),
            seen: 0,
        }
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// Waits until the output, past what earlier waits consumed, contains `needle`; returns that part.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let text = self.text();
            if let Some(at) = text[self.seen..].find(needle) {
                let part = text[self.seen..self.seen + at + needle.len()].to_owned();
                self.seen += at + needle.len();
                return part;
            }
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "ferry dev exited while waiting for {needle:?}:\n{text}"
            );
            assert!(
                Instant::now() < deadline,
                "no {needle:?} from ferry dev:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Asserts the served answer to `request` is `want` (within the tests' tolerance), given by
    /// `version`.
    fn answers(&self, name: &str, request: &Value, want: f64, version: &str) {
        let (got, by) = self.predict(name, request);
        assert!(
            (got - want).abs() < 1e-9 && by == version,
            "answered {got} by version {by}, expected {want} by version {version}:\n{}",
            self.text()
        );
    }

    /// The served answer to `request`, and the version that gave it.
    fn predict(&self, name: &str, request: &Value) -> (f64, String) {
        let response = ureq::post(&format!("{}/v1/models/{name}/predict", self.base))
            .send_json(request.clone())
            .unwrap();
        let version = response.header("ferry-model-version").unwrap().to_owned();
        let answer: Value = response.into_json().unwrap();
        (answer["eta_minutes"].as_f64().unwrap(), version)
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Adds `delta` to every expected answer of the tests file.
fn shift_expectations(tests: &Path, delta: f64) {
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(tests).unwrap()).unwrap();
    for case in doc["cases"].as_array_mut().unwrap() {
        let eta = case["response"]["eta_minutes"].as_f64().unwrap();
        case["response"]["eta_minutes"] = (eta + delta).into();
    }
    std::fs::write(tests, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
}

/// Writes `text` to `path` as an editor does: a new file renamed over the old one.
fn save(path: &Path, text: &str) {
    let tmp = path.with_extension("swp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn dev_hot_swaps_source_and_weights_changes_and_keeps_the_last_good_version() {
    let scratch = tempfile::tempdir().unwrap();
    let out = author_env(
        Command::new(ferry_bin())
            .args(["new", "dev-eta"])
            .current_dir(scratch.path()),
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let project = scratch.path().join("dev-eta");
    let tests: Value =
        serde_json::from_str(&std::fs::read_to_string(project.join("tests.json")).unwrap())
            .unwrap();
    let case = tests["cases"][1].clone();
    let (request, want) = (
        case["request"].clone(),
        case["response"]["eta_minutes"].as_f64().unwrap(),
    );

    let mut dev = Dev::start(&project, scratch.path());
    // The first load: the self-test table, the curl with the project's example request, its answer.
    let first = dev.wait_for("✓ version 1 serves `production`");
    assert!(
        first.contains("PASS  trip-0") && first.contains("4 passed, 0 failed"),
        "{first}"
    );
    let shown = dev.wait_for("→ ");
    assert!(
        shown.contains(&format!(
            "curl -s -X POST {}/v1/models/dev-eta/predict",
            dev.base
        )) && shown.contains(r#"-d '{"features":{"distance_km":0.5,"hour":0}}'"#),
        "{shown}"
    );
    dev.answers("dev-eta", &request, want, "1");

    // A second `ferry dev` on the same project, or on a taken port, says so and starts nothing.
    let out = author_env(
        Command::new(ferry_bin())
            .args(["dev", "--listen", "127.0.0.1:1"])
            .current_dir(&project),
    )
    .output()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("another `ferry dev` is serving this project"),
        "{out:?}"
    );
    let elsewhere = tempfile::tempdir().unwrap();
    let out = author_env(
        Command::new(ferry_bin())
            .args(["new", "other"])
            .current_dir(elsewhere.path()),
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = author_env(
        Command::new(ferry_bin())
            .args(["dev", "--listen", dev.base.trim_start_matches("http://")])
            .current_dir(elsewhere.path().join("other")),
    )
    .output()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("is taken"),
        "{out:?}"
    );

    // A source change (and the tests that go with it): rebuilt, self-tested, swapped in.
    let lib = project.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    shift_expectations(&project.join("tests.json"), 1.0);
    save(
        &lib,
        &source.replace("+ self.intercept;", "+ self.intercept + 1.0;"),
    );
    let swapped = dev.wait_for("✓ version 2 serves `production`");
    assert!(swapped.contains("— building dev-eta"), "{swapped}");
    dev.answers("dev-eta", &request, want + 1.0, "2");

    // Retrained weights and tests: reloaded with the same component, nothing rebuilt.
    let weights = std::fs::read_to_string(project.join("weights.json")).unwrap();
    assert!(weights.contains("\"intercept\": 3.0"), "{weights}");
    shift_expectations(&project.join("tests.json"), 2.0);
    save(
        &project.join("weights.json"),
        &weights.replace("\"intercept\": 3.0", "\"intercept\": 5.0"),
    );
    let reloaded = dev.wait_for("✓ version 3 serves `production`");
    assert!(
        !reloaded.contains("— building") && reloaded.contains("component unchanged"),
        "a weights change rebuilt:\n{reloaded}"
    );
    dev.answers("dev-eta", &request, want + 3.0, "3");

    // Weights retrained without the tests file: the version fails its self-tests, 3 keeps serving.
    save(
        &project.join("weights.json"),
        &weights.replace("\"intercept\": 3.0", "\"intercept\": 9.0"),
    );
    let failed = dev.wait_for("version 3 keeps serving");
    assert!(
        failed.contains("FAIL  trip-0") && failed.contains("did not load"),
        "{failed}"
    );
    dev.answers("dev-eta", &request, want + 3.0, "3");
    save(
        &project.join("weights.json"),
        &weights.replace("\"intercept\": 3.0", "\"intercept\": 5.0"),
    );
    dev.wait_for("nothing a version is made of changed");
    dev.wait_for("version 3 keeps serving");

    // A broken build: the compiler's message, and version 3 keeps serving.
    save(&lib, &format!("{source}\nfn broken( {{\n"));
    let broken = dev.wait_for("version 3 keeps serving");
    assert!(broken.contains("build failed"), "{broken}");
    dev.answers("dev-eta", &request, want + 3.0, "3");

    // Old versions are let go: the store holds the serving one and the one before it.
    let model: Value = ureq::get(&format!("{}/v1/models/dev-eta", dev.base))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    let mut versions: Vec<&str> = model["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    versions.sort();
    assert_eq!(versions, ["2", "3", "4"], "{model}");

    // Ctrl-C stops ferry dev and the host it started.
    // SAFETY: a signal to our own child.
    unsafe {
        libc::kill(dev.child.id() as libc::pid_t, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = dev.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "ferry dev ignored Ctrl-C:\n{}",
            dev.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}:\n{}", dev.text());
    assert!(
        ureq::get(&format!("{}/v2/health/live", dev.base))
            .timeout(Duration::from_secs(2))
            .call()
            .is_err(),
        "the local host outlived ferry dev"
    );
}
