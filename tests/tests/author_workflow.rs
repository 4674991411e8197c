//! A model author's path, end to end with the real CLI: `ferry new` → `ferry build` → `ferry test` →
//! `ferry push` → a prediction over HTTP.

use std::process::Command;

use ferry_tests::server::{ferry_bin, Server};
use ferry_tests::workspace;
use serde_json::Value;

fn ferry(args: &[&str], dir: &std::path::Path, server: Option<&Server>) -> String {
    let mut cmd = Command::new(ferry_bin());
    cmd.args(args)
        .current_dir(dir)
        // Dependencies built once per checkout, shared by every run of this test.
        .env(
            "CARGO_TARGET_DIR",
            workspace().join("target/author-projects"),
        )
        .env(
            "FERRY_CACHE_DIR",
            workspace().join("target/ferry-test-cache"),
        );
    if let Some(s) = server {
        cmd.env("FERRY_SERVER", &s.base);
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "ferry {args:?}:\n{text}");
    text
}

#[test]
fn rust_project_goes_from_new_to_a_served_prediction() {
    let dir = tempfile::tempdir().unwrap();
    ferry(&["new", "eta-model"], dir.path(), None);
    let project = dir.path().join("eta-model");

    let built = ferry(&["build"], &project, None);
    assert!(
        built.contains("target/ferry/eta-model.wasm")
            && built.contains("matches ferry:model@0.1.0"),
        "{built}"
    );

    let tested = ferry(
        &[
            "test",
            "target/ferry/eta-model.wasm",
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
            "target/ferry/eta-model.wasm",
            "--model",
            "eta-model",
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
    let answer: Value = ureq::post(&server.url("/v1/models/eta-model/predict"))
        .send_json(case["request"].clone())
        .unwrap()
        .into_json()
        .unwrap();
    let (got, want) = (
        answer["eta_minutes"].as_f64().unwrap(),
        case["response"]["eta_minutes"].as_f64().unwrap(),
    );
    assert!((got - want).abs() < 1e-9, "{got} vs {want}");
}

#[test]
fn python_projects_say_plainly_that_they_are_not_available_yet() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(ferry_bin())
        .args(["new", "py-model", "--lang", "python"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Python projects are not available yet"));
}
