//! One namespace per model, and limits a version cannot raise, over real HTTP and `ferry add`
//! (issue 19, items 3 and 6): a version and an alias never share a name in either direction (409
//! naming the clash); a clash written into the store by another writer never takes an alias's
//! traffic; a version's limits are clamped by the operator's, and absurd ones are refused.

use std::process::Command;
use std::time::{Duration, Instant};

use ferry_tests::http::{multipart, status_of};
use ferry_tests::server::{ferry_bin, Server};
use ferry_tests::workspace;
use serde_json::{json, Value};

const TOKEN: &str = "test-admin-token";
const MODEL: &str = "fraud-features";

fn start(config: &str) -> Server {
    Server::start_with(&[], config, &["--admin-token", TOKEN])
}

fn admin(server: &Server, method: &str, path: &str) -> ureq::Request {
    ureq::request(method, &server.url(path)).set("Authorization", &format!("Bearer {TOKEN}"))
}

fn component() -> Vec<u8> {
    std::fs::read(workspace().join(format!("target/models/{MODEL}.wasm"))).unwrap()
}

fn put_version(server: &Server, version: &str, parts: &[(&str, &[u8])]) -> (u16, String) {
    let (ct, body) = multipart(parts);
    status_of(
        admin(
            server,
            "PUT",
            &format!("/v1/models/{MODEL}/versions/{version}"),
        )
        .set("Content-Type", &ct)
        .send_bytes(&body),
    )
}

fn put_alias(server: &Server, alias: &str, body: Value) -> (u16, String) {
    status_of(
        admin(
            server,
            "PUT",
            &format!("/v1/models/{MODEL}/aliases/{alias}"),
        )
        .send_json(body),
    )
}

fn version_of(server: &Server, version: &str) -> Value {
    let described: Value = admin(server, "GET", &format!("/v1/models/{MODEL}"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    described["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == version)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Waits until `version` is listed and not loading (or `until` says so), then answers it.
fn wait_for(server: &Server, version: &str, until: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let v = version_of(server, version);
        if !v.is_null() && v["state"] != "loading" && until(&v) {
            return v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{MODEL}@{version}: {v}; log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ready_version(server: &Server, version: &str, extra: &[(&str, &[u8])]) -> Value {
    let wasm = component();
    let mut parts: Vec<(&str, &[u8])> = vec![("component", &wasm)];
    parts.extend_from_slice(extra);
    let (s, body) = put_version(server, version, &parts);
    assert_eq!(s, 201, "{body}");
    let v = wait_for(server, version, |_| true);
    assert_eq!(v["state"], "ready", "{v}");
    v
}

/// The version that answered a feature-style request to `path`.
fn answered_by(server: &Server, path: &str) -> String {
    let body: Value = serde_json::from_str(
        &std::fs::read_to_string(
            workspace().join(format!("sample-models/{MODEL}/example-request.json")),
        )
        .unwrap(),
    )
    .unwrap();
    let r = ureq::post(&server.url(path)).send_json(body).unwrap();
    r.header("ferry-model-version").unwrap().to_owned()
}

/// `ferry add` of the model into `server`'s store; answers (success, stderr).
fn ferry_add(server: &Server, args: &[&str]) -> (bool, String) {
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(ferry_bin())
        .arg("add")
        .arg(workspace().join(format!("target/models/{MODEL}.wasm")))
        .args(["--model", MODEL])
        .args(args)
        .arg("--store")
        .arg(server.store())
        .arg("--cache-dir")
        .arg(cache.path())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_version_and_an_alias_never_share_a_name() {
    let server = start("[host]\n");
    ready_version(&server, "1", &[]);
    ready_version(&server, "2", &[]);
    let (s, body) = put_alias(&server, "canary", json!({"version": "1"}));
    assert_eq!(s, 200, "{body}");

    // A version under an alias's name: 409 naming the alias.
    let sha = ferry::runtime::sha256_hex(&component());
    let (s, body) = put_version(&server, "canary", &[("component_sha256", sha.as_bytes())]);
    assert_eq!(s, 409, "{body}");
    assert!(body.contains("alias `canary`"), "{body}");
    assert!(version_of(&server, "canary").is_null());
    // Nor by `ferry add`, which writes into the store without the server.
    let (ok, stderr) = ferry_add(&server, &["--version", "canary"]);
    assert!(!ok && stderr.contains("alias `canary`"), "{stderr}");

    // An alias under a version's name, plain or split: 409 naming the version.
    for body in [
        json!({"version": "1"}),
        json!({"split": {"1": 50, "2": 50}}),
    ] {
        let (s, answer) = put_alias(&server, "2", body);
        assert_eq!(s, 409, "{answer}");
        assert!(answer.contains("version `2`"), "{answer}");
    }

    // The alias still routes where it was set.
    assert_eq!(
        answered_by(
            &server,
            &format!("/v1/models/{MODEL}/versions/canary/predict")
        ),
        "1"
    );
    assert_eq!(
        answered_by(&server, &format!("/v1/models/{MODEL}/versions/2/predict")),
        "2"
    );
}

#[test]
fn a_clash_written_into_the_store_cannot_hijack_an_alias() {
    let server = start("[host]\n[store]\nsync_interval_ms = 100\nreconcile_interval_s = 1\n");
    ready_version(&server, "1", &[]);
    ready_version(&server, "2", &[]);
    let (s, body) = put_alias(&server, "canary", json!({"version": "1"}));
    assert_eq!(s, 200, "{body}");

    // Another writer (an older one, or one that raced this host's check) puts a version named like
    // the alias straight into the store: version 2's manifest under the name `canary`, newest.
    let dir = server.store().join("models").join(MODEL);
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("2.json")).unwrap()).unwrap();
    manifest["version"] = json!("canary");
    manifest["sequence"] = json!(1_000_000);
    std::fs::write(dir.join("canary.json"), manifest.to_string()).unwrap();

    let v = wait_for(&server, "canary", |v| v["state"] == "failed");
    let reason = v["reason"].as_str().unwrap();
    assert!(reason.contains("clashes with alias `canary`"), "{reason}");
    // The name still reaches the alias's target, however often asked.
    for _ in 0..20 {
        assert_eq!(
            answered_by(
                &server,
                &format!("/v1/models/{MODEL}/versions/canary/predict")
            ),
            "1"
        );
    }
    // Requests without a version never go to it either.
    assert_eq!(
        answered_by(&server, &format!("/v1/models/{MODEL}/predict")),
        "2"
    );
    // Deleting the clashing version clears the clash.
    let (s, body) = status_of(
        admin(
            &server,
            "DELETE",
            &format!("/v1/models/{MODEL}/versions/canary"),
        )
        .call(),
    );
    assert_eq!(s, 204, "{body}");
    assert_eq!(
        answered_by(
            &server,
            &format!("/v1/models/{MODEL}/versions/canary/predict")
        ),
        "1"
    );
}

#[test]
fn a_version_cannot_raise_its_own_limits() {
    let server = start(
        "[host]\ncpu_share = 0.2\n[models.default]\ndeadline_ms = 500\nmax_instances = 2\nmax_queue = 8\nmax_input_bytes = 65536\n",
    );
    // More than the operator's on most fields, less on one.
    let asked = json!({
        "deadline_ms": 86_400_000u64,
        "max_instances": 64,
        "max_queue": 4,
        "max_input_bytes": 1u64 << 40,
        "memory_bytes": 1u64 << 40,
        "cpu_share": 1.0,
    });
    let asked_text = asked.to_string();
    let v = ready_version(&server, "1", &[("limits", asked_text.as_bytes())]);
    let limits = &v["limits"];
    assert_eq!(limits["deadline_ms"], 500, "{v}");
    assert_eq!(limits["max_instances"], 2, "{v}");
    assert_eq!(limits["max_queue"], 4, "asking for less is granted: {v}");
    assert_eq!(limits["max_input_bytes"], 65536, "{v}");
    assert_eq!(
        limits["memory_bytes"],
        256u64 << 20,
        "the built-in default is the ceiling: {v}"
    );
    assert_eq!(limits["cpu_share"], 0.2, "{v}");
    assert_eq!(v["requested_limits"], asked, "{v}");

    // An absurd deadline is refused (400), not a panic; nothing is stored.
    let wasm = component();
    for limits in [
        r#"{"deadline_ms": 18446744073709551615}"#,
        r#"{"init_deadline_ms": 18446744073709551615}"#,
        r#"{"cpu_share": -1}"#,
        r#"{"memory_mb": 1}"#,
    ] {
        let (s, body) = put_version(
            &server,
            "2",
            &[("component", &wasm), ("limits", limits.as_bytes())],
        );
        assert_eq!(s, 400, "{limits}: {body}");
        assert!(body.contains("limits"), "{body}");
    }
    assert!(version_of(&server, "2").is_null());
    let file = server.store().with_file_name("limits.json");
    std::fs::write(&file, r#"{"deadline_ms": 18446744073709551615}"#).unwrap();
    let (ok, stderr) = ferry_add(
        &server,
        &["--version", "3", "--limits", file.to_str().unwrap()],
    );
    assert!(!ok && stderr.contains("deadline_ms"), "{stderr}");
    // The host still serves.
    assert_eq!(
        answered_by(&server, &format!("/v1/models/{MODEL}/versions/1/predict")),
        "1"
    );
}
