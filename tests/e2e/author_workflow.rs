//! A model author's path, end to end with the real CLI: `ferry new` → `ferry build` → `ferry test` →
//! `ferry push` → a prediction over HTTP.

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

/// `ferry new NAME --lang LANG` → `ferry build` → `ferry test` → `ferry push` → a prediction over
/// HTTP that matches the training script's answer.
fn new_project_is_served(lang: &str, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    ferry(&["new", name, "--lang", lang], dir.path(), None);
    let project = dir.path().join(name);

    let built = ferry(&["build"], &project, None);
    let component = format!("target/ferry/{name}.wasm");
    assert!(
        built.contains(&component) && built.contains("matches ferry:model@0.1.0"),
        "{built}"
    );

    let tested = ferry(
        &[
            "test",
            &component,
            "--weights",
            "weights.json",
            "--tests",
            "tests.json",
        ],
        &project,
        None,
    );
    assert!(tested.contains("4 passed, 0 failed"), "{tested}");

    let server = Server::start(&[], "[host]\n");
    let pushed = ferry(
        &[
            "push",
            &component,
            "--model",
            name,
            "--weights",
            "weights.json",
            "--tests",
            "tests.json",
        ],
        &project,
        Some(&server),
    );
    assert!(pushed.contains("state             ready"), "{pushed}");

    let tests: Value =
        serde_json::from_str(&std::fs::read_to_string(project.join("tests.json")).unwrap())
            .unwrap();
    let case = &tests["cases"][1];
    let answer: Value = ureq::post(&server.url(&format!("/v1/models/{name}/predict")))
        .send_json(case["request"].clone())
        .unwrap()
        .into_json()
        .unwrap();
    let (got, want) = (
        answer["eta_minutes"].as_f64().unwrap(),
        case["response"]["eta_minutes"].as_f64().unwrap(),
    );
    assert!((got - want).abs() < 1e-9, "{got} vs {want}");

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
}

#[test]
fn rust_project_goes_from_new_to_a_served_prediction() {
    new_project_is_served("rust", "eta-model");
}

#[test]
fn python_project_goes_from_new_to_a_served_prediction() {
    new_project_is_served("python", "eta-py");
}

#[test]
fn author_mistakes_get_messages_that_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = ferry_fails(&["build"], dir.path());
    assert!(
        out.contains("neither a Cargo.toml nor a pyproject.toml") && out.contains("ferry new"),
        "{out}"
    );

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

    // No weights: init fails, naming the exception and what to check.
    let out = ferry_fails(
        &["test", "target/ferry/oops.wasm", "--tests", "tests.json"],
        &project,
    );
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
