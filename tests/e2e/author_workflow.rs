//! A model author's path, end to end with the real CLI: `ferry new` → `ferry build` → `ferry test` →
//! `ferry push` → a prediction over HTTP, with no arguments inside the project (its `ferry.toml` names
//! the files), in each language.

use std::process::Command;

use ferry_tests::author_env;
use ferry_tests::server::{ferry_bin, Server};
use serde_json::Value;

fn ferry(args: &[&str], dir: &std::path::Path, server: Option<&Server>) -> String {
    let (ok, text) = run_ferry(args, dir, server);
    assert!(ok, "ferry {args:?}:\n{text}");
    text
}

/// Runs a command that must fail; returns what it printed.
fn ferry_fails(args: &[&str], dir: &std::path::Path) -> String {
    let (ok, text) = run_ferry(args, dir, None);
    assert!(!ok, "ferry {args:?} should have failed:\n{text}");
    text
}

fn run_ferry(args: &[&str], dir: &std::path::Path, server: Option<&Server>) -> (bool, String) {
    let mut cmd = Command::new(ferry_bin());
    author_env(cmd.args(args).current_dir(dir));
    if let Some(s) = server {
        cmd.env("FERRY_SERVER", &s.base);
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The tests file's case `i`: its request and the expected ETA.
fn case(project: &std::path::Path, i: usize) -> (Value, f64) {
    let tests: Value =
        serde_json::from_str(&std::fs::read_to_string(project.join("tests.json")).unwrap())
            .unwrap();
    let case = &tests["cases"][i];
    (
        case["request"].clone(),
        case["response"]["eta_minutes"].as_f64().unwrap(),
    )
}

fn eta(server: &Server, name: &str, request: &Value) -> f64 {
    let answer: Value = ureq::post(&server.url(&format!("/v1/models/{name}/predict")))
        .send_json(request.clone())
        .unwrap()
        .into_json()
        .unwrap();
    answer["eta_minutes"].as_f64().unwrap()
}

/// `ferry new NAME --lang LANG` → `ferry build` → `ferry test` → `ferry push` (no arguments) → a
/// prediction over HTTP that matches the training script's answer; then retrained weights pushed
/// with no arguments reuse the stored component.
fn new_project_is_served(lang: &str, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    ferry(&["new", name, "--lang", lang], dir.path(), None);
    let project = dir.path().join(name);
    let manifest = std::fs::read_to_string(project.join("ferry.toml")).unwrap();
    assert!(
        manifest.contains(&format!("name = \"{name}\""))
            && manifest.contains("weights = \"weights.json\""),
        "{manifest}"
    );

    let built = ferry(&["build"], &project, None);
    let component = format!("target/ferry/{name}.wasm");
    assert!(
        built.contains(&component) && built.contains("matches ferry:model@0.1.0"),
        "{built}"
    );

    let tested = ferry(&["test"], &project, None);
    assert!(
        tested.contains("4 passed, 0 failed") && !tested.contains("building"),
        "{tested}"
    );

    let server = Server::start(&[], "[host]\n");
    let pushed = ferry(&["push", "--alias", "production"], &project, Some(&server));
    assert!(
        pushed.contains(&format!("{name} version 1"))
            && pushed.contains("state             ready")
            && pushed.contains("alias             production → 1"),
        "{pushed}"
    );
    let (request, want) = case(&project, 1);
    let got = eta(&server, name, &request);
    assert!((got - want).abs() < 1e-9, "{got} vs {want}");

    // The limits ferry.toml asks for travel with the version, and lower the host's.
    let asked: u64 = manifest
        .lines()
        .find_map(|l| l.strip_prefix("memory_bytes = "))
        .expect("the template asks for a memory limit")
        .trim()
        .parse()
        .unwrap();
    let model: Value = ureq::get(&server.url(&format!("/v1/models/{name}")))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    let version = &model["versions"][0];
    assert_eq!(
        version["requested_limits"]["memory_bytes"], asked,
        "{model}"
    );
    assert_eq!(version["limits"]["memory_bytes"], asked, "{model}");

    // A request that misses a feature is the caller's error, and says which feature.
    let err = ureq::post(&server.url(&format!("/v1/models/{name}/predict")))
        .send_json(serde_json::json!({"features": {"hour": 8}}))
        .unwrap_err();
    match err {
        ureq::Error::Status(422, response) => {
            let body = response.into_string().unwrap();
            assert!(body.contains("distance_km"), "{body}");
        }
        other => panic!("expected 422, got {other:?}"),
    }

    // Retrained: a new intercept, and the tests the training script would write with it. `ferry
    // push` sends the weights and tests, not the unchanged component.
    let mut weights: Value =
        serde_json::from_str(&std::fs::read_to_string(project.join("weights.json")).unwrap())
            .unwrap();
    weights["intercept"] = (weights["intercept"].as_f64().unwrap() + 1.0).into();
    std::fs::write(project.join("weights.json"), weights.to_string()).unwrap();
    let mut tests: Value =
        serde_json::from_str(&std::fs::read_to_string(project.join("tests.json")).unwrap())
            .unwrap();
    for case in tests["cases"].as_array_mut().unwrap() {
        let eta = case["response"]["eta_minutes"].as_f64().unwrap();
        case["response"]["eta_minutes"] = (eta + 1.0).into();
    }
    std::fs::write(project.join("tests.json"), tests.to_string()).unwrap();
    let pushed = ferry(&["push", "--alias", "production"], &project, Some(&server));
    assert!(
        pushed.contains("component unchanged")
            && !pushed.contains("building")
            && pushed.contains(&format!("{name} version 2"))
            && pushed.contains("state             ready"),
        "{pushed}"
    );
    let got = eta(&server, name, &request);
    assert!((got - (want + 1.0)).abs() < 1e-9, "{got} vs {want} + 1");
}

// Rust and Python projects take the same path in the author guide's test (`author_guide.rs`: new,
// build, test and push with no arguments, a served prediction, retrained weights that reuse the stored
// component, promote, rollback); JavaScript, the fastest to build, takes it here with the checks the
// guide does not make.
#[test]
fn javascript_project_goes_from_new_to_a_served_prediction() {
    new_project_is_served("js", "eta-js");
}

/// A project made before ferry.toml: `ferry test` with no arguments finds the files beside its
/// Cargo.toml, and builds it first.
#[test]
fn a_project_made_before_ferry_toml_still_needs_no_arguments() {
    let dir = tempfile::tempdir().unwrap();
    ferry(&["new", "old-style"], dir.path(), None);
    let project = dir.path().join("old-style");
    std::fs::remove_file(project.join("ferry.toml")).unwrap();
    let tested = ferry(&["test"], &project, None);
    assert!(
        tested.contains("building old-style") && tested.contains("4 passed, 0 failed"),
        "{tested}"
    );
}

/// Inside a project, a source that changed since the component was built is built again before
/// `ferry test` runs (by content: no clock is involved).
#[test]
fn a_changed_source_is_built_before_it_is_tested() {
    let dir = tempfile::tempdir().unwrap();
    ferry(&["new", "stale", "--lang", "js"], dir.path(), None);
    let project = dir.path().join("stale");
    let first = ferry(&["test"], &project, None);
    assert!(
        first.contains("building stale") && first.contains("4 passed"),
        "{first}"
    );
    let model = std::fs::read_to_string(project.join("model.js")).unwrap();
    std::fs::write(project.join("model.js"), format!("{model}\n// edited\n")).unwrap();
    let second = ferry(&["test"], &project, None);
    assert!(
        second.contains("building stale (") && second.contains("model.js changed"),
        "{second}"
    );
    let third = ferry(&["test"], &project, None);
    assert!(!third.contains("building"), "{third}");
}

#[test]
fn author_mistakes_get_messages_that_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = ferry_fails(&["build"], dir.path());
    assert!(
        out.contains("not in a model project") && out.contains("ferry new"),
        "{out}"
    );
    let out = ferry_fails(&["test"], dir.path());
    assert!(out.contains("name the component to test"), "{out}");
    let out = ferry_fails(&["push"], dir.path());
    assert!(out.contains("name the model"), "{out}");

    ferry(&["new", "oops", "--lang", "python"], dir.path(), None);
    let project = dir.path().join("oops");
    let model = std::fs::read_to_string(project.join("model.py")).unwrap();

    // A native extension cannot be bundled: the build says so, with the import that failed.
    std::fs::write(project.join("model.py"), format!("import numpy\n{model}")).unwrap();
    let out = ferry_fails(&["build"], &project);
    assert!(
        out.contains("No module named 'numpy'") && out.contains("native extensions"),
        "{out}"
    );
    std::fs::write(project.join("model.py"), &model).unwrap();
    ferry(&["build"], &project, None);

    // Weights retrained without rerunning the training script: the tests file no longer matches.
    let weights = std::fs::read_to_string(project.join("weights.json")).unwrap();
    std::fs::write(
        project.join("weights.json"),
        weights.replace("\"intercept\": 3.0", "\"intercept\": 4.0"),
    )
    .unwrap();
    let out = ferry_fails(
        &[
            "test",
            "target/ferry/oops.wasm",
            "--weights",
            "weights.json",
            "--tests",
            "tests.json",
        ],
        &project,
    );
    assert!(
        out.contains("FAIL  trip-0") && out.contains("run the training script again"),
        "{out}"
    );

    // No weights (ferry.toml names none): init fails, naming the exception and what to check.
    let manifest = std::fs::read_to_string(project.join("ferry.toml")).unwrap();
    std::fs::write(
        project.join("ferry.toml"),
        manifest.replace("weights = \"weights.json\"\n", ""),
    )
    .unwrap();
    let out = ferry_fails(&["test"], &project);
    assert!(
        out.contains(
            "init raised ValueError: this model loads its weights from the version's weights file"
        ) && out.contains("--config and --weights"),
        "{out}"
    );
}

#[test]
fn a_build_that_cannot_install_componentize_py_says_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    ferry(&["new", "no-tools", "--lang", "python"], dir.path(), None);
    let out = Command::new(ferry_bin())
        .arg("build")
        .current_dir(dir.path().join("no-tools"))
        .env("FERRY_TOOLS_DIR", dir.path().join("empty-tools"))
        .env("FERRY_PYTHON", dir.path().join("no-such-python3"))
        .env_remove("FERRY_COMPONENTIZE_PY")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("needs Python 3") && text.contains("FERRY_COMPONENTIZE_PY"),
        "{text}"
    );
}
