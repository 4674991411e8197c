//! A fleet: several `ferry serve` hosts on one real S3-compatible store (SeaweedFS, started by the
//! harness on loopback ports), converging on the same versions. Pushes, promotes under load, racing
//! promotes and uploads, kill -9 mid-upload, a store outage, a host that joins late — and the S3
//! backend passing the same storage conformance suite as the local directory.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry::storage::Storage;
use ferry_tests::fleet::{Host, FLEET_CONFIG};
use ferry_tests::http::{put_version, status_of, Trickle};
use ferry_tests::s3::{unique_prefix, S3Store};
use ferry_tests::workspace;
use serde_json::{json, Value};

fn models_file(name: &str) -> Vec<u8> {
    std::fs::read(workspace().join("target/models").join(name)).unwrap()
}

fn diabetes_parts() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("component", models_file("diabetes-gbdt.wasm")),
        ("weights", models_file("diabetes-gbdt.weights")),
        ("tests", models_file("diabetes-gbdt.tests.json")),
    ]
}

fn push(host: &Host, version: &str, parts: &[(&str, Vec<u8>)]) -> (u16, String) {
    let parts: Vec<(&str, &[u8])> = parts.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    put_version(&host.base, "diabetes-gbdt", version, &parts)
}

/// Pushes version 1 (component, weights, tests) and returns the component's sha256.
fn push_first_version(host: &Host) -> String {
    let (s, body) = push(host, "1", &diabetes_parts());
    assert_eq!(s, 201, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["component_sha256"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A weights-only version on the stored component.
fn push_weights_only(host: &Host, version: &str, component_sha: &str) -> (u16, String) {
    push(
        host,
        version,
        &[
            ("component_sha256", component_sha.as_bytes().to_vec()),
            ("weights", models_file("diabetes-gbdt.weights")),
            ("tests", models_file("diabetes-gbdt.tests.json")),
        ],
    )
}

fn describe(host: &Host) -> Value {
    match ureq::get(&host.url("/v1/models/diabetes-gbdt")).call() {
        Ok(r) => r.into_json().unwrap(),
        Err(_) => Value::Null,
    }
}

fn state_of(host: &Host, version: &str) -> Option<String> {
    describe(host)["versions"]
        .as_array()?
        .iter()
        .find(|v| v["version"] == version)
        .map(|v| v["state"].as_str().unwrap_or_default().to_owned())
}

/// Waits until `check` holds on every host; returns how long it took.
fn converge(hosts: &[&Host], what: &str, check: impl Fn(&Host) -> bool) -> Duration {
    let started = Instant::now();
    while !hosts.iter().all(|h| check(h)) {
        if started.elapsed() > Duration::from_secs(120) {
            let states: Vec<String> = hosts
                .iter()
                .map(|h| format!("{}: {}\n{}", h.id, describe(h), h.log()))
                .collect();
            panic!(
                "{what}: no convergence within 120 s:\n{}",
                states.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

fn infer(host: &Host) -> Result<String, String> {
    let body = std::fs::read_to_string(
        workspace().join("sample-models/diabetes-gbdt/example-request.json"),
    )
    .unwrap();
    match ureq::post(&host.url("/v2/models/diabetes-gbdt/infer"))
        .set("Content-Type", "application/json")
        .send_string(&body)
    {
        Ok(r) => {
            let v: Value = r.into_json().map_err(|e| e.to_string())?;
            Ok(v["model_version"].as_str().unwrap_or_default().to_owned())
        }
        Err(ureq::Error::Status(code, r)) => {
            Err(format!("{code}: {}", r.into_string().unwrap_or_default()))
        }
        Err(e) => Err(e.to_string()),
    }
}

fn set_alias(host: &Host, version: &str) -> (u16, String) {
    status_of(
        ureq::put(&host.url("/v1/models/diabetes-gbdt/aliases/production"))
            .send_json(json!({ "version": version })),
    )
}

fn production(host: &Host) -> Option<String> {
    describe(host)["aliases"]["production"]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_backend_passes_the_conformance_suite() {
    let s3 = S3Store::shared();
    let storage =
        ferry::storage::open_with(&s3.url(&unique_prefix("conformance")), &s3.aws()).unwrap();
    ferry::storage::conformance::run(
        storage,
        "suite",
        ferry::storage::conformance::Races::MostlyOneWinner,
    )
    .await;
}

#[test]
fn three_hosts_converge_on_pushes_and_promotes_without_failing_a_request() {
    let s3 = S3Store::shared();
    let url = s3.url(&unique_prefix("fleet"));
    let hosts: Vec<Host> = (1..=3)
        .map(|i| Host::start(s3, &url, &format!("host-{i}"), FLEET_CONFIG))
        .collect();
    let all: Vec<&Host> = hosts.iter().collect();

    // Push on host 1 → ready on hosts 2 and 3.
    let component_sha = push_first_version(&hosts[0]);
    let took = converge(&all, "v1 ready everywhere", |h| {
        state_of(h, "1").as_deref() == Some("ready")
    });
    eprintln!("push → ready on all three hosts: {took:?}");
    assert_eq!(set_alias(&hosts[1], "1").0, 200);
    converge(&all, "production → 1 everywhere", |h| {
        infer(h).as_deref() == Ok("1")
    });

    // Under load against all three hosts: a weights-only version pushed through host 1, promoted at
    // once through host 2 (the others are still loading it), and the old target deleted right away —
    // each host keeps the old target serving until the new one is ready there.
    let running = Arc::new(AtomicBool::new(true));
    let (sent, failed) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(std::sync::Mutex::new(Vec::new())),
    );
    let load: Vec<_> = hosts
        .iter()
        .map(|h| {
            let base = h.base.clone();
            let (running, sent, failed) = (running.clone(), sent.clone(), failed.clone());
            std::thread::spawn(move || {
                let body = std::fs::read_to_string(
                    workspace().join("sample-models/diabetes-gbdt/example-request.json"),
                )
                .unwrap();
                while running.load(Ordering::Relaxed) {
                    let r = ureq::post(&format!("{base}/v2/models/diabetes-gbdt/infer"))
                        .send_string(&body);
                    sent.fetch_add(1, Ordering::Relaxed);
                    match r {
                        Ok(_) => {}
                        Err(ureq::Error::Status(code, answer)) => failed.lock().unwrap().push(
                            format!("{code}: {}", answer.into_string().unwrap_or_default()),
                        ),
                        Err(e) => failed.lock().unwrap().push(e.to_string()),
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let (s, body) = push_weights_only(&hosts[0], "2", &component_sha);
    assert_eq!(s, 201, "{body}");
    let (s, body) = set_alias(&hosts[1], "2");
    assert_eq!(s, 200, "{body}");
    let (s, body) =
        status_of(ureq::delete(&hosts[1].url("/v1/models/diabetes-gbdt/versions/1")).call());
    assert_eq!(s, 204, "{body}");
    let took = converge(&all, "production → 2 everywhere", |h| {
        infer(h).as_deref() == Ok("2")
    });
    eprintln!(
        "push + promote + delete of the old target → every host on the new version: {took:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    running.store(false, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    let failed = failed.lock().unwrap();
    if !failed.is_empty() {
        for h in &hosts {
            eprintln!("---- log of {}:\n{}", h.base, h.log());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        sent.load(Ordering::Relaxed),
        &failed[..failed.len().min(5)]
    );
    assert!(sent.load(Ordering::Relaxed) > 30, "the load ran");
    converge(&all, "v1 gone everywhere", |h| state_of(h, "1").is_none());

    let (s, body) = push_weights_only(&hosts[2], "3", &component_sha);
    assert_eq!(s, 201, "{body}");
    converge(&all, "v3 ready everywhere", |h| {
        state_of(h, "3").as_deref() == Some("ready")
    });

    // Two promotes through two hosts at once: both are applied in some order (or one is told to try
    // again), and every host agrees with the store on the winner.
    let (a, b) = (hosts[0].base.clone(), hosts[2].base.clone());
    let racers = [(a, "2"), (b, "3")].map(|(base, v)| {
        std::thread::spawn(move || {
            status_of(
                ureq::put(&format!(
                    "{base}/v1/models/diabetes-gbdt/aliases/production"
                ))
                .send_json(json!({ "version": v })),
            )
            .0
        })
    });
    let codes: Vec<u16> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(
        codes.iter().all(|c| *c == 200 || *c == 409) && codes.contains(&200),
        "{codes:?}"
    );
    std::thread::sleep(Duration::from_millis(100));
    converge(&all, "every host agrees on production", |h| {
        let p = production(h);
        p.is_some() && hosts.iter().all(|o| production(o) == p) && infer(h).ok() == p
    });

    // The same version through two hosts at once: one 201, one 409.
    let racers = [hosts[0].base.clone(), hosts[1].base.clone()].map(|base| {
        let sha = component_sha.clone();
        std::thread::spawn(move || {
            let (ct, body) = ferry_tests::http::multipart(&[
                ("component_sha256", sha.as_bytes()),
                ("weights", &models_file("diabetes-gbdt.weights")),
                ("tests", &models_file("diabetes-gbdt.tests.json")),
            ]);
            status_of(
                ureq::put(&format!("{base}/v1/models/diabetes-gbdt/versions/7"))
                    .set("Content-Type", &ct)
                    .send_bytes(&body),
            )
        })
    });
    let mut codes: Vec<u16> = racers.into_iter().map(|t| t.join().unwrap().0).collect();
    codes.sort();
    assert_eq!(codes, [201, 409], "one upload of a version name wins");
    converge(&all, "v7 ready everywhere", |h| {
        state_of(h, "7").as_deref() == Some("ready")
    });

    // kill -9 of host 3 halfway through an upload: no host lists a partial version.
    let upload_url = hosts[2].url("/v1/models/diabetes-gbdt/versions/8");
    let uploader = std::thread::spawn(move || {
        ureq::put(&upload_url)
            .set("Content-Type", "application/wasm")
            .send(Trickle { left: 64 << 20 })
    });
    let mut hosts = hosts;
    std::thread::sleep(Duration::from_millis(700));
    hosts[2].kill9();
    assert!(uploader.join().unwrap().is_err(), "the upload was cut off");
    hosts[2].restart();
    std::thread::sleep(Duration::from_millis(1500));
    for h in &hosts {
        assert_eq!(state_of(h, "8"), None, "{} lists the partial version", h.id);
    }

    // The repository extension's unload and load reach every host.
    let (s, body) =
        status_of(ureq::post(&hosts[0].url("/v2/repository/models/diabetes-gbdt/unload")).call());
    assert_eq!(s, 200, "{body}");
    converge(
        &hosts.iter().collect::<Vec<_>>(),
        "unloaded everywhere",
        |h| {
            describe(h)["versions"]
                .as_array()
                .is_some_and(|vs| vs.iter().all(|v| v["state"] == "unloaded"))
        },
    );
    let (s, body) =
        status_of(ureq::post(&hosts[1].url("/v2/repository/models/diabetes-gbdt/load")).call());
    assert_eq!(s, 200, "{body}");
    converge(
        &hosts.iter().collect::<Vec<_>>(),
        "loaded again everywhere",
        |h| infer(h).is_ok(),
    );

    // A training pipeline writes a version straight into the fleet's store, without a server.
    let cache = tempfile::tempdir().unwrap();
    let mut add = std::process::Command::new(ferry_tests::server::ferry_bin());
    add.arg("add")
        .arg(workspace().join("target/models/fraud-features.wasm"))
        .args(["--model", "fraud-features", "--store", &url])
        .arg("--cache-dir")
        .arg(cache.path());
    let out = s3.apply(&mut add).output().unwrap();
    assert!(
        out.status.success(),
        "ferry add --store s3://: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    converge(
        &hosts.iter().collect::<Vec<_>>(),
        "the added model serves everywhere",
        |h| {
            ureq::post(&h.url("/v1/models/fraud-features/predict"))
                .send_string(
                    &std::fs::read_to_string(
                        workspace().join("sample-models/fraud-features/example-request.json"),
                    )
                    .unwrap(),
                )
                .is_ok()
        },
    );

    // A fourth host started later serves everything, and the fleet's status shows all four.
    let late = Host::start(s3, &url, "host-4", FLEET_CONFIG);
    let p = production(&hosts[0]);
    assert_eq!(production(&late), p);
    assert_eq!(infer(&late).ok(), p);
    for v in [p.clone().unwrap(), "7".to_owned()] {
        assert_eq!(
            state_of(&late, &v).as_deref(),
            Some("ready"),
            "v{v} on the late host"
        );
    }
    let fleet: Value = ureq::get(&late.url("/v1/fleet"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    let ids: Vec<&str> = fleet["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["host"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["host-1", "host-2", "host-3", "host-4"], "{fleet}");
    let out = std::process::Command::new(ferry_tests::server::ferry_bin())
        .args(["models", "--fleet", "--server", &late.base])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("host-2") && text.contains("diabetes-gbdt") && text.contains("ready"),
        "{text}"
    );
}

#[test]
fn with_the_store_away_hosts_keep_serving_and_converge_when_it_returns() {
    let s3 = S3Store::private();
    let url = s3.url("outage");
    let mut hosts: Vec<Host> = (1..=2)
        .map(|i| Host::start(&s3, &url, &format!("outage-{i}"), FLEET_CONFIG))
        .collect();
    let component_sha = push_first_version(&hosts[0]);
    let all: Vec<&Host> = hosts.iter().collect();
    converge(&all, "v1 ready everywhere", |h| {
        infer(h).as_deref() == Ok("1")
    });

    s3.stop();
    std::thread::sleep(Duration::from_millis(1500));
    for h in &hosts {
        assert_eq!(infer(h).as_deref(), Ok("1"), "{} keeps answering", h.id);
        assert_eq!(
            ureq::get(&h.url("/v2/health/ready"))
                .call()
                .map(|r| r.status())
                .ok(),
            Some(200),
            "{} stays ready",
            h.id
        );
    }
    let (s, body) = push_weights_only(&hosts[0], "2", &component_sha);
    assert_eq!(s, 503, "a push while the store is away: {body}");
    assert!(body.contains("store is unreachable"), "{body}");
    let (s, body) = set_alias(&hosts[1], "1");
    assert_eq!(s, 503, "an alias move while the store is away: {body}");
    let metrics = ureq::get(&hosts[0].url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(metrics.contains("ferry_store_reachable 0"), "{metrics}");

    // A host restarted during the outage serves what it last synced, from its cache; a new host,
    // which has never synced, is not ready until the store answers.
    hosts[1].restart();
    assert_eq!(
        infer(&hosts[1]).as_deref(),
        Ok("1"),
        "the restarted host serves its last synced state"
    );
    let newcomer = Host::launch(&s3, &url, "outage-3", FLEET_CONFIG);
    std::thread::sleep(Duration::from_millis(2000));
    assert!(
        !newcomer.is_ready(),
        "a host with nothing synced is not ready while the store is away"
    );

    s3.start();
    newcomer.wait_ready(Duration::from_secs(120));
    assert_eq!(
        infer(&newcomer).as_deref(),
        Ok("1"),
        "the newcomer serves once the store answers"
    );
    hosts.push(newcomer);
    let all: Vec<&Host> = hosts.iter().collect();
    converge(&all, "the store is reachable again", |h| {
        ureq::get(&h.url("/metrics"))
            .call()
            .ok()
            .and_then(|r| r.into_string().ok())
            .is_some_and(|m| m.contains("ferry_store_reachable 1"))
    });
    let (s, body) = push_weights_only(&hosts[0], "2", &component_sha);
    assert_eq!(s, 201, "{body}");
    assert_eq!(set_alias(&hosts[0], "2").0, 200);
    converge(&all, "everyone on v2 after the outage", |h| {
        infer(h).as_deref() == Ok("2")
    });
}

#[test]
fn a_fleets_prediction_log_lands_in_its_object_store_and_replays_from_there() {
    let s3 = S3Store::shared();
    let url = s3.url(&unique_prefix("predictions"));
    let config = format!("{FLEET_CONFIG}[predictions]\nflush_interval_ms = 100\n");
    let hosts: Vec<Host> = (1..=2)
        .map(|i| Host::start(s3, &url, &format!("log-{i}"), &config))
        .collect();
    let all: Vec<&Host> = hosts.iter().collect();
    push_first_version(&hosts[0]);
    converge(&all, "v1 ready everywhere", |h| {
        infer(h).as_deref() == Ok("1")
    });
    // The policy is set on one host and followed by both (it lives in the store).
    let set = ureq::put(&hosts[0].url("/v1/models/diabetes-gbdt/traffic"))
        .send_json(json!({"log": {"percent": 100}}));
    assert!(set.is_ok(), "{set:?}");
    converge(&all, "the log policy everywhere", |h| {
        describe(h)["traffic"]["log"]["percent"] == json!(100.0)
    });
    for h in &hosts {
        for _ in 0..5 {
            assert_eq!(infer(h).as_deref(), Ok("1"));
        }
    }

    // Batched objects under predictions/<model>/, one host's records per object.
    let storage = ferry::storage::open_with(&url, &s3.aws()).unwrap();
    let io = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let records: Vec<Value> = loop {
        let listed = io
            .block_on(storage.list("predictions/diabetes-gbdt/"))
            .unwrap();
        let mut records = Vec::new();
        for (i, l) in listed.iter().enumerate() {
            let object = io.block_on(storage.get(&l.key)).unwrap();
            std::fs::write(dir.path().join(format!("{i:04}.jsonl")), &object.bytes).unwrap();
            let text = String::from_utf8(object.bytes.to_vec()).unwrap();
            records.extend(
                text.lines()
                    .map(|l| serde_json::from_str::<Value>(l).unwrap()),
            );
        }
        // Whatever else reached the hosts (the convergence checks' requests) is logged too.
        if records.iter().filter(|r| r["host"] == "log-1").count() >= 5
            && records.iter().filter(|r| r["host"] == "log-2").count() >= 5
        {
            break records;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{} records in the store",
            records.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(records
        .iter()
        .all(|r| r["model"] == "diabetes-gbdt" && r["status"] == 200));

    // Replayed from the store's blobs: the same bits.
    let mut replay = std::process::Command::new(ferry_tests::server::ferry_bin());
    replay
        .arg("replay")
        .arg(dir.path())
        .args(["--store", &url])
        .arg("--cache-dir")
        .arg(dir.path().join("cache"));
    let out = s3.apply(&mut replay).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    let n = records.len();
    assert!(
        text.contains(&format!("{n} records: {n} equal bit for bit")),
        "{text}"
    );
}

/// Multipart uploads open in the store's bucket under `prefix` (S3 ListMultipartUploads, signed by
/// curl as scripts/seaweedfs.sh signs its own requests): their keys.
fn open_multipart_uploads(s3: &S3Store, prefix: &str) -> Vec<String> {
    let env = |name: &str| {
        s3.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{name} is not in the store's env"))
    };
    let out = std::process::Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "10", "--aws-sigv4"])
        .arg(format!("aws:amz:{}:s3", env("AWS_REGION")))
        .arg("--user")
        .arg(format!(
            "{}:{}",
            env("AWS_ACCESS_KEY_ID"),
            env("AWS_SECRET_ACCESS_KEY")
        ))
        .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
        .arg(format!(
            // Parameters sorted and encoded, `uploads=` with its empty value: curl's SigV4 signs the
            // query as written, and the store checks it in canonical form.
            "{}/{}?prefix={}%2F&uploads=",
            env("AWS_ENDPOINT_URL"),
            env("FERRY_TEST_S3_BUCKET"),
            prefix.replace('/', "%2F")
        ))
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "ListMultipartUploads: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let xml = String::from_utf8(out.stdout).unwrap();
    assert!(xml.contains("ListMultipartUploadsResult"), "{xml}");
    xml.split("<Upload>")
        .skip(1)
        .filter_map(|upload| {
            let key = upload.split("<Key>").nth(1)?.split("</Key>").next()?;
            Some(key.to_owned())
        })
        .collect()
}

#[test]
fn callers_that_hang_up_around_a_large_upload_leave_no_multipart_upload_open() {
    use std::io::Write;
    let s3 = S3Store::shared();
    let prefix = unique_prefix("hang-up");
    let url = s3.url(&prefix);
    let host = Host::start(s3, &url, "hang-up-1", FLEET_CONFIG);
    let address = host.base.trim_start_matches("http://").to_owned();
    let (component, tests) = (
        models_file("diabetes-gbdt.wasm"),
        models_file("diabetes-gbdt.tests.json"),
    );
    // Weights past the store's multipart threshold (16 MiB): the trees and 40 MB of trailing spaces
    // (a different count each time, so each upload is a blob of its own). Callers hang up at each
    // stage: as the last byte goes, while the host reads or stages it, while it commits, and once
    // it has answered (the last: how long the others' stages take depends on the machine's load).
    let stages = [Some(0u64), Some(30), Some(150), Some(600), None];
    for (i, after) in stages.iter().enumerate() {
        let mut weights = models_file("diabetes-gbdt.weights");
        weights.extend(std::iter::repeat_n(b' ', (40 << 20) + i));
        let parts: [(&str, &[u8]); 3] = [
            ("component", &component),
            ("weights", &weights),
            ("tests", &tests),
        ];
        let (content_type, body) = ferry_tests::http::multipart(&parts);
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        write!(
            stream,
            "PUT /v1/models/big/versions/v{i} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        stream.write_all(&body).unwrap();
        match after {
            Some(ms) => std::thread::sleep(Duration::from_millis(*ms)),
            None => {
                stream
                    .set_read_timeout(Some(Duration::from_secs(120)))
                    .unwrap();
                let mut status = [0u8; 12];
                std::io::Read::read_exact(&mut stream, &mut status)
                    .expect("the last upload's answer");
                assert!(status.starts_with(b"HTTP/1.1 "), "{status:?}");
            }
        }
        drop(stream);
    }
    // Whatever each caller's hang-up cut short is gone, and whatever got committed is whole: nothing
    // staged on the host, no multipart upload left open in the bucket.
    let staged = host.cache().join("uploads");
    let started = Instant::now();
    loop {
        let left: Vec<_> = std::fs::read_dir(&staged)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        let open = open_multipart_uploads(s3, &prefix);
        if left.is_empty() && open.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "staged on the host: {left:?}; open multipart uploads: {open:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // The last caller hung up once answered: its commit ran to the end.
    let listed = |v: &str| {
        describe_model(&host, "big")["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| x["version"] == v)
            .cloned()
    };
    let last = format!("v{}", stages.len() - 1);
    assert!(listed(&last).is_some(), "{last} was never committed");
    // Every version that was committed is whole: the newest loads from its blobs, and none failed.
    let started = Instant::now();
    while listed(&last).unwrap()["state"] != "ready" {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{last}: {}",
            listed(&last).unwrap()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    for (i, after) in stages.iter().enumerate() {
        let v = listed(&format!("v{i}"));
        let when = after.map_or("once answered".to_owned(), |ms| {
            format!("{ms} ms after the body")
        });
        eprintln!(
            "hung up {when}: {}",
            v.as_ref()
                .map_or("not committed".into(), |v| v["state"].to_string())
        );
        if let Some(v) = v {
            assert_ne!(v["state"], "failed", "{v}");
        }
    }
}

fn describe_model(host: &Host, model: &str) -> Value {
    match ureq::get(&host.url(&format!("/v1/models/{model}"))).call() {
        Ok(r) => r.into_json().unwrap(),
        Err(_) => Value::Null,
    }
}
