//! The long run (issue 19, item 9) over real HTTP: a model retrained many times keeps a bounded
//! number of versions (`[store] keep_versions`), the deleted ones' blobs leave the store with the
//! next garbage collection, their compiled snapshots leave the host's cache, and their `/metrics`
//! series go with them — while what is aliased, shadowed or newest stays.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ferry_tests::http::{multipart, status_of};
use ferry_tests::server::{Seed, Server};
use ferry_tests::workspace;
use serde_json::{json, Value};

const TOKEN: &str = "long-run-admin-token";
const MODEL: &str = "diabetes-gbdt";
const KEEP: usize = 5;

const CONFIG: &str = "\
[host]
metrics_idle_timeout_s = 2
[store]
sync_interval_ms = 100
heartbeat_interval_ms = 500
reconcile_interval_s = 1
keep_versions = 5
gc_interval_s = 1
gc_grace_s = 2
";

fn models_file(name: &str) -> Vec<u8> {
    std::fs::read(workspace().join("target/models").join(name)).unwrap()
}

fn admin(server: &Server, method: &str, path: &str) -> ureq::Request {
    ureq::request(method, &server.url(path)).set("Authorization", &format!("Bearer {TOKEN}"))
}

fn versions(server: &Server) -> Vec<Value> {
    let described: Value = admin(server, "GET", &format!("/v1/models/{MODEL}"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    described["versions"].as_array().unwrap().clone()
}

fn names(server: &Server) -> BTreeSet<String> {
    versions(server)
        .iter()
        .map(|v| v["version"].as_str().unwrap().to_owned())
        .collect()
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_ready(server: &Server, version: &str) {
    wait_for(
        &format!("{MODEL}@{version} ready"),
        Duration::from_secs(300),
        || {
            let v = versions(server)
                .into_iter()
                .find(|v| v["version"] == version)
                .unwrap_or(Value::Null);
            assert!(
                v["state"] != "failed",
                "{version} failed: {v}\n{}",
                server.log()
            );
            v["state"] == "ready"
        },
    );
}

/// An OIP request to `path`; answers the version that served it.
fn infer_at(server: &Server, path: &str) -> String {
    let body: Value = serde_json::from_str(
        &std::fs::read_to_string(
            workspace().join("sample-models/diabetes-gbdt/example-request.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let (status, answer) = status_of(ureq::post(&server.url(path)).send_json(body));
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    answer["model_version"].as_str().unwrap().to_owned()
}

fn infer(server: &Server, version: &str) {
    let path = format!("/v2/models/{MODEL}/versions/{version}/infer");
    assert_eq!(infer_at(server, &path), version);
}

fn metrics(server: &Server) -> String {
    admin(server, "GET", "/metrics")
        .call()
        .unwrap()
        .into_string()
        .unwrap()
}

/// `.cwasm` files in the host's compile cache: compiled components and snapshots.
fn compiled(server: &Server) -> usize {
    let mut n = 0;
    let mut dirs = vec![server.cache().join("compiled")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "cwasm") {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn old_unaliased_versions_go_with_their_blobs_snapshots_and_metric_series() {
    let server = Server::start_alone(
        &[Seed::sample(MODEL, "1")],
        CONFIG,
        &["--admin-token", TOKEN],
    );
    wait_ready(&server, "1");
    let component = models_file("diabetes-gbdt.wasm");
    let component_sha = ferry::runtime::sha256_hex(&component);
    let (weights, tests) = (
        models_file("diabetes-gbdt.weights"),
        models_file("diabetes-gbdt.tests.json"),
    );

    // 15 weights-only updates: the same trees with trailing spaces, so each has a sha256 of its own.
    let mut weights_of = Vec::new();
    for i in 1..=15usize {
        let version = (i + 1).to_string();
        let mut w = weights.clone();
        w.extend(std::iter::repeat_n(b' ', i));
        weights_of.push((version.clone(), ferry::runtime::sha256_hex(&w)));
        let (ct, body) = multipart(&[
            ("component_sha256", component_sha.as_bytes()),
            ("weights", &w),
            ("tests", &tests),
        ]);
        let (s, answer) = status_of(
            admin(
                &server,
                "PUT",
                &format!("/v1/models/{MODEL}/versions/{version}"),
            )
            .set("Content-Type", &ct)
            .send_bytes(&body),
        );
        assert_eq!(s, 201, "{answer}");
        wait_ready(&server, &version);
        infer(&server, &version);
        if version == "2" {
            // The oldest versions are named: `1` by production, `2` as the shadow.
            let (s, answer) = status_of(
                admin(
                    &server,
                    "PUT",
                    &format!("/v1/models/{MODEL}/aliases/production"),
                )
                .send_json(json!({"version": "1"})),
            );
            assert_eq!(s, 200, "{answer}");
            let (s, answer) = status_of(
                admin(&server, "PUT", &format!("/v1/models/{MODEL}/traffic"))
                    .send_json(json!({"shadow": {"version": "2", "percent": 10}})),
            );
            assert_eq!(s, 200, "{answer}");
        }
        if version == "3" {
            let text = metrics(&server);
            assert!(
                text.contains(&format!("model=\"{MODEL}\",version=\"3\"")),
                "a version's series are there while it is:\n{text}"
            );
        }
        if version == "7" {
            // Nothing past retention yet: a snapshot per version so far.
            assert!(compiled(&server) >= 7, "{}", compiled(&server));
        }
    }

    // Kept: the aliased 1 and 2, and the newest five of the rest (12-16); 3-11 are deleted.
    let kept: BTreeSet<String> = ["1", "2", "12", "13", "14", "15", "16"]
        .map(str::to_owned)
        .into();
    wait_for("retention", Duration::from_secs(60), || {
        names(&server) == kept
    });
    assert!(names(&server).len() <= KEEP + 2);
    // Requests still reach what is kept: the production alias and the newest version.
    infer(&server, "16");
    assert_eq!(infer_at(&server, &format!("/v2/models/{MODEL}/infer")), "1");

    // Each deletion is in the audit log, by retention.
    let audit: Value = admin(
        &server,
        "GET",
        &format!("/v1/audit?model={MODEL}&limit=100"),
    )
    .call()
    .unwrap()
    .into_json()
    .unwrap();
    let deleted: BTreeSet<String> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "delete_version" && r["actor"] == "retention")
        .map(|r| r["version"].as_str().unwrap().to_owned())
        .collect();
    let expected: BTreeSet<String> = (3..=11).map(|v| v.to_string()).collect();
    assert_eq!(deleted, expected, "{audit}");

    // Their weights leave the store with the garbage collection; the kept ones' stay.
    let blob = |sha: &str| server.store().join("blobs").join(sha).exists();
    wait_for("garbage collection", Duration::from_secs(30), || {
        weights_of
            .iter()
            .filter(|(v, _)| expected.contains(v))
            .all(|(_, sha)| !blob(sha))
    });
    for (v, sha) in &weights_of {
        assert_eq!(blob(sha), kept.contains(v), "version {v}'s weights");
    }
    assert!(
        blob(&component_sha),
        "the component kept versions use stays"
    );

    // Their snapshots leave the host's cache: one per kept version, and the instrumented component.
    wait_for("cache collection", Duration::from_secs(30), || {
        compiled(&server) <= kept.len() + 1
    });

    // Their metric series left with them (the listing above no longer has them); the rest stay,
    // also once the recorder's idle timeout (2 s) has passed.
    let text = metrics(&server);
    for v in &expected {
        assert!(
            !text.contains(&format!("version=\"{v}\"")),
            "deleted version {v} is still in /metrics:\n{text}"
        );
    }
    std::thread::sleep(Duration::from_secs(3));
    let text = metrics(&server);
    for v in &kept {
        assert!(
            text.contains(&format!(
                "ferry_model_ready{{model=\"{MODEL}\",version=\"{v}\"}}"
            )),
            "version {v} is still reported:\n{text}"
        );
    }
    assert!(
        text.lines().any(|l| l.starts_with("ferry_credentials ")),
        "gauges set once are published at every scrape:\n{text}"
    );
}
