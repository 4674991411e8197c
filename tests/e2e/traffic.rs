//! Traffic over real HTTP: a weighted alias spreads keys by weight and keeps each key on its version;
//! a shadow that loops or traps changes nothing of the primary's answers; the prediction log holds
//! complete records that `ferry replay` reproduces bit for bit for every sample model, and compares
//! against another version.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ferry_tests::server::{ferry_bin, Seed, Server};
use ferry_tests::workspace;
use serde_json::{json, Value};

fn describe(server: &Server, model: &str) -> Value {
    ureq::get(&server.url(&format!("/v1/models/{model}")))
        .call()
        .unwrap()
        .into_json()
        .unwrap()
}

fn put(server: &Server, path: &str, body: Value) -> (u16, Value) {
    match ureq::put(&server.url(path)).send_json(body) {
        Ok(r) => (r.status(), r.into_json().unwrap_or(Value::Null)),
        Err(ureq::Error::Status(s, r)) => (s, r.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("PUT {path}: {e}"),
    }
}

fn example(model: &str) -> Value {
    let path = workspace().join(format!("sample-models/{model}/example-request.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Posts a feature-style request; answers the status, the version that answered, and the body.
fn predict(server: &Server, model: &str, key: Option<&str>, body: &Value) -> (u16, String, String) {
    let mut request = ureq::post(&server.url(&format!("/v1/models/{model}/predict")));
    if let Some(key) = key {
        request = request.set("ferry-routing-key", key);
    }
    match request.send_string(&body.to_string()) {
        Ok(r) => (
            r.status(),
            r.header("ferry-model-version")
                .unwrap_or_default()
                .to_owned(),
            r.into_string().unwrap(),
        ),
        Err(ureq::Error::Status(s, r)) => (s, String::new(), r.into_string().unwrap()),
        Err(e) => panic!("predict {model}: {e}"),
    }
}

/// Waits until `model` serves and nothing of it is still loading.
fn wait_serving(server: &Server, model: &str) {
    let started = Instant::now();
    loop {
        let d = describe(server, model);
        let versions = d["versions"].as_array().unwrap();
        if !d["default_version"].is_null() && versions.iter().all(|v| v["state"] != "loading") {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{model} did not come up: {d:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_weighted_alias_splits_ninety_ten_and_keeps_each_key_on_its_version() {
    let server = Server::start(
        &[
            Seed::sample("fraud-features", "1"),
            Seed::sample("fraud-features", "2"),
        ],
        "[host]\nrequire_self_tests = false\n",
    );
    wait_serving(&server, "fraud-features");
    let (status, answer) = put(
        &server,
        "/v1/models/fraud-features/aliases/production",
        json!({"split": {"1": 90, "2": 10}}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["split"], json!({"1": 90, "2": 10}));
    let d = describe(&server, "fraud-features");
    assert_eq!(
        d["aliases"]["production"],
        json!({"split": {"1": 90, "2": 10}})
    );

    let body = example("fraud-features");
    let mut seen: HashMap<String, String> = HashMap::new();
    for i in 0..10_000 {
        let key = format!("rider-{i}");
        let (status, version, answer) = predict(&server, "fraud-features", Some(&key), &body);
        assert_eq!(status, 200, "{answer}");
        seen.insert(key, version);
    }
    let canary = seen.values().filter(|v| *v == "2").count() as f64 / seen.len() as f64;
    assert!(
        (canary - 0.10).abs() <= 0.02,
        "version 2 got {:.1}% of 10,000 keys",
        canary * 100.0
    );
    // Sticky: the same keys again land where they landed.
    for i in (0..10_000).step_by(20) {
        let key = format!("rider-{i}");
        let (_, version, _) = predict(&server, "fraud-features", Some(&key), &body);
        assert_eq!(version, seen[&key], "key {key} moved");
    }
    // The split's share shows per version in the metrics.
    let metrics = ureq::get(&server.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    for v in ["1", "2"] {
        assert!(
            metrics.contains(&format!(
                r#"ferry_requests_total{{model="fraud-features",version="{v}",route="predict",status="200"}}"#
            )),
            "no per-version count for {v}"
        );
    }

    // A key in the body: the split names the field; the header still wins when given.
    let (status, answer) = put(
        &server,
        "/v1/models/fraud-features/aliases/production",
        json!({"split": {"1": 50, "2": 50}, "routing_key_field": "/rider_id"}),
    );
    assert_eq!(status, 200, "{answer}");
    let mut by_body: HashMap<String, String> = HashMap::new();
    for i in 0..200 {
        let mut b = body.clone();
        b["rider_id"] = json!(format!("r{i}"));
        let (_, v1, _) = predict(&server, "fraud-features", None, &b);
        let (_, v2, _) = predict(&server, "fraud-features", None, &b);
        assert_eq!(v1, v2, "rider r{i} moved between two requests");
        by_body.insert(format!("r{i}"), v1);
    }
    let twos = by_body.values().filter(|v| *v == "2").count();
    assert!(
        (60..140).contains(&twos),
        "{twos} of 200 riders on version 2"
    );

    // Promote and rollback keep working: a plain version, then back to the split.
    let (status, _) = put(
        &server,
        "/v1/models/fraud-features/aliases/production",
        json!({"version": "2"}),
    );
    assert_eq!(status, 200);
    for i in 0..50 {
        let (_, v, _) = predict(&server, "fraud-features", Some(&format!("k{i}")), &body);
        assert_eq!(v, "2");
    }
    let back: Value =
        ureq::post(&server.url("/v1/models/fraud-features/aliases/production/rollback"))
            .call()
            .unwrap()
            .into_json()
            .unwrap();
    assert_eq!(back["split"], json!({"1": 50, "2": 50}), "{back}");

    // Bad splits are refused with the reason.
    for (body, why) in [
        (json!({"split": {}}), "at least one version"),
        (json!({"split": {"1": 0}}), "weight above 0"),
        (json!({"split": {"1": 50, "9": 50}}), "9"),
        (
            json!({"split": {"1": 1}, "routing_key_field": "rider"}),
            "JSON pointer",
        ),
        (json!({"versions": "1"}), "an alias body is"),
    ] {
        let (status, answer) = put(
            &server,
            "/v1/models/fraud-features/aliases/production",
            body.clone(),
        );
        assert!(status == 400 || status == 404, "{body}: {status} {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(why),
            "{body}: {answer}"
        );
    }
}

#[test]
fn a_looping_or_trapping_shadow_leaves_every_primary_answer_unchanged() {
    let mut primary = Seed::hostile("scored", json!({}));
    primary.version = "1";
    let mut looping = Seed::hostile("scored", json!({"attack": "infinite-loop"}));
    looping.version = "2";
    let mut trapping = Seed::hostile("scored", json!({"attack": "trap"}));
    trapping.version = "3";
    let mut twin = Seed::hostile("scored", json!({}));
    twin.version = "4";
    let server = Server::start(
        &[primary, looping, trapping, twin],
        "[host]\nrequire_self_tests = false\n[models.scored]\ndeadline_ms = 200\nmax_instances = 2\n",
    );
    let (status, _) = put(
        &server,
        "/v1/models/scored/aliases/production",
        json!({"version": "1"}),
    );
    assert_eq!(status, 200);

    for (shadow, outcome) in [
        ("2", "shadow_failed"),
        ("3", "shadow_failed"),
        ("4", "compared"),
    ] {
        let (status, answer) = put(
            &server,
            "/v1/models/scored/traffic",
            json!({"shadow": {"version": shadow, "percent": 100}}),
        );
        assert_eq!(status, 200, "{answer}");
        for i in 0..200 {
            let body = json!({"i": i, "shadow": shadow});
            let (status, version, answer) = predict(&server, "scored", None, &body);
            assert_eq!((status, version.as_str()), (200, "1"), "{answer}");
            let answer: Value = serde_json::from_str(&answer).unwrap();
            assert_eq!(answer, json!({"echo": body}));
        }
        // Copies finish (or are dropped) off the request path; wait for them to be counted.
        let started = Instant::now();
        let pair = loop {
            let d = describe(&server, "scored");
            let pair = d["shadow_agreement"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["shadow"] == shadow)
                .cloned();
            let counted = |p: &Value| {
                [
                    "compared",
                    "primary_failed",
                    "shadow_failed",
                    "dropped_queue_full",
                    "dropped_busy",
                ]
                .iter()
                .map(|k| p[*k].as_u64().unwrap())
                .sum::<u64>()
            };
            if let Some(p) = pair.filter(|p| counted(p) == 200) {
                break p;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "copies not all counted: {d:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(
            pair[outcome].as_u64().unwrap() > 0,
            "shadow {shadow}: {pair:#}"
        );
        if shadow == "2" {
            // A copy that loops to its deadline holds a candidate instance for 200 ms: most of 200
            // quick requests find both of the candidate's instances busy, and their copies are
            // dropped rather than queued.
            let dropped = pair["dropped_busy"].as_u64().unwrap()
                + pair["dropped_queue_full"].as_u64().unwrap();
            assert!(dropped > 0, "no copy was dropped: {pair:#}");
        }
        if shadow == "4" {
            assert_eq!(pair["identical"], pair["compared"], "{pair:#}");
            assert_eq!(pair["label_agreement"], json!(1.0), "{pair:#}");
        }
    }
    let metrics = ureq::get(&server.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        metrics.contains(r#"ferry_shadow_requests_total{model="scored",primary="1",shadow="3",outcome="shadow_failed"}"#),
        "{}",
        metrics.lines().filter(|l| l.contains("shadow")).collect::<Vec<_>>().join("\n")
    );
    assert!(metrics.contains(
        r#"ferry_shadow_labels_total{model="scored",primary="1",shadow="4",agreed="true"}"#
    ));
    // The candidate's calls are metered like any other.
    assert!(metrics.contains(r#"ferry_guest_cpu_microseconds_total{model="scored",version="2"}"#));

    // A shadow's version cannot be deleted while it shadows.
    let deleted = ureq::delete(&server.url("/v1/models/scored/versions/4")).call();
    assert!(
        matches!(deleted, Err(ureq::Error::Status(409, _))),
        "{deleted:?}"
    );
}

/// Every record of every `.jsonl` file under `dir`.
fn records(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    if !dir.exists() {
        return out;
    }
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "jsonl") {
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                out.push(serde_json::from_str(line).unwrap());
            }
        }
    }
    out
}

fn replay(server: &Server, extra: &[&str]) -> (bool, String) {
    let out = Command::new(ferry_bin())
        .arg("replay")
        .arg(server.store().join("predictions"))
        .arg("--store")
        .arg(server.store())
        .arg("--cache-dir")
        .arg(server.cache())
        .args(extra)
        .env("FERRY_TOOLS_DIR", workspace().join("target/tools"))
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

const SAMPLES: [&str; 9] = [
    "fraud-features",
    "diabetes-gbdt",
    "digits-onnx",
    "python-eta",
    "geo-embeddings",
    "python-sklearn-graph",
    "gbdt-graph",
    "digits-graph",
    "surge-js",
];

#[test]
fn every_sample_models_logged_predictions_replay_bit_for_bit() {
    let mut seeds: Vec<Seed> = SAMPLES.iter().map(|m| Seed::sample(m, "1")).collect();
    seeds.push(Seed::sample("fraud-features", "2"));
    let server = Server::start(
        &seeds,
        "[host]\nrequire_self_tests = false\n[predictions]\nflush_interval_ms = 50\n",
    );
    wait_serving(&server, "fraud-features");
    // Version 2 is the newest, so it would answer; the log is checked against version 1.
    let (status, _) = put(
        &server,
        "/v1/models/fraud-features/aliases/production",
        json!({"version": "1"}),
    );
    assert_eq!(status, 200);
    let mut sent = 0;
    for model in SAMPLES {
        wait_serving(&server, model);
        let (status, answer) = put(
            &server,
            &format!("/v1/models/{model}/traffic"),
            json!({"log": {"percent": 100}}),
        );
        assert_eq!(status, 200, "{answer}");
        let body = example(model);
        let tensors = body.get("inputs").is_some();
        let route = if tensors { "infer" } else { "predict" };
        let prefix = if tensors { "/v2" } else { "/v1" };
        for i in 0..3 {
            let answer = ureq::post(&server.url(&format!("{prefix}/models/{model}/{route}")))
                .set("x-request-id", &format!("{model}-{i}"))
                .send_string(&body.to_string());
            assert!(answer.is_ok(), "{model}: {answer:?}");
            sent += 1;
        }
    }
    // A request the model refuses is logged with its status too.
    let refused = ureq::post(&server.url("/v1/models/python-eta/predict"))
        .set("x-request-id", "python-eta-bad")
        .send_string(r#"{"features": {"distance_km": 7.4}}"#);
    assert!(
        matches!(refused, Err(ureq::Error::Status(422, _))),
        "{refused:?}"
    );
    sent += 1;

    let dir = server.store().join("predictions");
    let started = Instant::now();
    while records(&dir).len() < sent {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{} of {sent} records",
            records(&dir).len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let all = records(&dir);
    for r in &all {
        for field in [
            "id",
            "time_unix_ms",
            "host",
            "model",
            "version",
            "component_sha256",
            "route",
            "input",
            "status",
            "latency_us",
        ] {
            assert!(!r[field].is_null(), "record lacks {field}: {r}");
        }
        assert_eq!(r["version"], "1");
        if r["status"] == 200 {
            assert!(!r["output"].is_null(), "{r}");
        } else {
            assert!(r["error"].as_str().is_some(), "{r}");
        }
    }
    let by_id = |id: &str| {
        all.iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("no record {id}"))
    };
    assert_eq!(by_id("digits-onnx-0")["route"], "infer");
    assert!(by_id("digits-onnx-0")["input"]["tensors"][0]["data_base64"].is_string());
    assert!(by_id("gbdt-graph-0")["graphs"]["model"].is_string());
    assert_eq!(by_id("python-eta-bad")["status"], 422);
    // A feature-style request is logged as itself (verbatim), not as an escaped string.
    assert!(by_id("fraud-features-0")["input"]["verbatim"]["features"].is_object());
    assert!(by_id("fraud-features-0")["output"]["verbatim"].is_object());

    // Replayed on the exact versions: every answer the same bits, every failure the same status.
    let (ok, out) = replay(&server, &[]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "{sent} records: {sent} equal bit for bit, 0 differ"
        )),
        "{out}"
    );
    // One record by id; and against another version (a backtest): same component, same answers.
    let (ok, out) = replay(&server, &["--id", "fraud-features-1", "--against", "2"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("fraud-features-1  fraud-features@1 → 2  identical"),
        "{out}"
    );
    let (ok, out) = replay(&server, &["--id", "nope"]);
    assert!(!ok && out.contains("no record with id `nope`"), "{out}");
    // A record whose answer was changed replays as a difference, with how far.
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let edited: Vec<String> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| {
            let r: Value = serde_json::from_str(l).unwrap();
            if r["id"] != "fraud-features-2" {
                return l.to_owned();
            }
            // Only the answer's bytes change: the rest of the line (its input too) stays as logged.
            let (before, rest) = l.split_once(r#""output":{"verbatim":"#).unwrap();
            let (answer, after) = rest.split_once(r#"},"status":"#).unwrap();
            let mut answer: Value = serde_json::from_str(answer).unwrap();
            assert!(tweak_first_number(&mut answer), "{answer}");
            format!(r#"{before}"output":{{"verbatim":{answer}}},"status":{after}"#)
        })
        .collect();
    std::fs::write(&file, edited.join("\n") + "\n").unwrap();
    let (ok, out) = replay(&server, &["--id", "fraud-features-2"]);
    assert!(!ok, "{out}");
    assert!(out.contains("differs: max |Δ|"), "{out}");
}

#[test]
fn a_stopping_host_writes_what_it_logged_before_it_goes() {
    let mut server = Server::start(
        &[Seed::sample("fraud-features", "1")],
        // Nothing would be written for a minute but for the stop.
        "[host]\nrequire_self_tests = false\n[predictions]\nflush_interval_ms = 60000\n",
    );
    wait_serving(&server, "fraud-features");
    let (status, _) = put(
        &server,
        "/v1/models/fraud-features/traffic",
        json!({"log": {"percent": 100}}),
    );
    assert_eq!(status, 200);
    let body = example("fraud-features");
    for _ in 0..25 {
        assert_eq!(predict(&server, "fraud-features", None, &body).0, 200);
    }
    assert!(
        records(&server.store().join("predictions")).is_empty(),
        "written before the flush interval"
    );
    assert!(
        server.stop(),
        "the host did not stop cleanly:\n{}",
        server.log()
    );
    assert_eq!(records(&server.store().join("predictions")).len(), 25);
}

fn tweak_first_number(v: &mut Value) -> bool {
    match v {
        Value::Number(n) => {
            *v = json!(n.as_f64().unwrap() + 0.25);
            true
        }
        Value::Array(items) => items.iter_mut().any(tweak_first_number),
        Value::Object(map) => map.values_mut().any(tweak_first_number),
        _ => false,
    }
}
