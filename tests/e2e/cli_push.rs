//! The management CLI against a real server: `ferry push` (a component with weights and tests, then a
//! weights-only update), `ferry models`, `ferry promote`, `ferry rollback`.

use std::process::Command;

use ferry_tests::server::{ferry_bin, Server};
use ferry_tests::workspace;

const TOKEN: &str = "cli-admin-token";

fn ferry(server: &Server, args: &[&str]) -> (i32, String) {
    let out = Command::new(ferry_bin())
        .args(args)
        .current_dir(workspace().join("target/models"))
        .env("FERRY_SERVER", &server.base)
        .env("FERRY_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn served_version(server: &Server) -> String {
    let body = std::fs::read_to_string(
        workspace().join("sample-models/diabetes-gbdt/example-request.json"),
    )
    .unwrap();
    let answer: serde_json::Value = ureq::post(&server.url("/v2/models/diabetes-gbdt/infer"))
        .send_string(&body)
        .unwrap()
        .into_json()
        .unwrap();
    answer["model_version"].as_str().unwrap().to_owned()
}

#[test]
fn push_models_promote_and_rollback_from_the_command_line() {
    let server = Server::start_with(&[], "[host]\n", &["--admin-token", TOKEN]);
    let (code, out) = ferry(
        &server,
        &[
            "push",
            "diabetes-gbdt.wasm",
            "--model",
            "diabetes-gbdt",
            "--weights",
            "diabetes-gbdt.weights",
            "--tests",
            "diabetes-gbdt.tests.json",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("diabetes-gbdt version 1")
            && out.contains("component_sha256")
            && out.contains("state             ready"),
        "{out}"
    );
    let sha = out
        .lines()
        .find(|l| l.trim_start().starts_with("component_sha256"))
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap()
        .to_owned();

    // New weights for the current component: nothing to compile, the same component sha.
    let (code, out) = ferry(
        &server,
        &[
            "push",
            "--model",
            "diabetes-gbdt",
            "--weights",
            "diabetes-gbdt.weights",
            "--tests",
            "diabetes-gbdt.tests.json",
            "--alias",
            "production",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("diabetes-gbdt version 2")
            && out.contains(&sha)
            && out.contains("production → 2"),
        "{out}"
    );
    assert_eq!(served_version(&server), "2");

    let (code, out) = ferry(&server, &["models"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("diabetes-gbdt")
            && l.contains(" 2 ")
            && l.contains("production")),
        "{out}"
    );

    let (code, out) = ferry(&server, &["promote", "diabetes-gbdt", "1"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(served_version(&server), "1");
    let (code, out) = ferry(&server, &["rollback", "diabetes-gbdt"]);
    assert!(code == 0 && out.contains("production → 2"), "{out}");
    assert_eq!(served_version(&server), "2");

    // A version whose self-tests fail: push says so and exits non-zero; production does not move.
    let (code, out) = ferry(
        &server,
        &[
            "push",
            "--model",
            "diabetes-gbdt",
            "--weights",
            "diabetes-gbdt.weights",
            "--tests",
            "digits-onnx.tests.json",
            "--alias",
            "production",
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("failed") && out.contains("self-tests"),
        "{out}"
    );
    assert_eq!(served_version(&server), "2");

    // Without the token the server refuses, and the CLI says why.
    let out = Command::new(ferry_bin())
        .args(["models", "--server", &server.base])
        .env_remove("FERRY_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("401"));
}
