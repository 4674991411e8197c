//! Memory a host can see and bound: a version's instances share its snapshot's initialised pages (16
//! instances of a 256 MB model cost little more than one), and a memory budget keeps the recently
//! used versions resident, evicting the others and bringing them back on their next request.

use std::path::Path;
use std::process::Command;

use ferry::registry::ProcessMemory;
use ferry_tests::server::{Seed, Server};
use ferry_tests::workspace;
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// Writes a geo-embeddings version of `mb` MiB into `dir` with the sample's training script.
fn train_geo_embeddings(mb: u32, dir: &Path) {
    let python = workspace().join("target/py/bin/python");
    let out = Command::new(&python)
        .arg(workspace().join("sample-models/geo-embeddings/training/train.py"))
        .args(["--mb", &mb.to_string(), "--out"])
        .arg(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (scripts/test.sh installs numpy there)",
                python.display()
            )
        });
    assert!(
        out.status.success(),
        "train.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn get_json(server: &Server, path: &str) -> Value {
    ureq::get(&server.url(path))
        .call()
        .unwrap()
        .into_json()
        .unwrap()
}

fn version<'a>(model: &'a Value, name: &str) -> &'a Value {
    model["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == name)
        .unwrap_or_else(|| panic!("no version {name} in {model}"))
}

/// `threads` callers each send `per_thread` predictions to `model`, so that many instances work.
fn predict_concurrently(
    server: &Server,
    model: &str,
    request: &Value,
    threads: usize,
    per_thread: usize,
) {
    let url = server.url(&format!("/v1/models/{model}/predict"));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                for _ in 0..per_thread {
                    let answer: Value = ureq::post(&url)
                        .send_json(request)
                        .expect("prediction")
                        .into_json()
                        .unwrap();
                    assert!(answer["eta_minutes"].is_number(), "{answer}");
                }
            });
        }
    });
}

fn example_request(model: &str) -> Value {
    let path = workspace().join(format!("sample-models/{model}/example-request.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Sends `model`'s example request to its main route: OIP infer for the tensor model diabetes-gbdt,
/// feature-style predict for the others.
fn call_example(server: &Server, model: &str) -> (u16, String) {
    let route = if model == "diabetes-gbdt" {
        format!("/v2/models/{model}/infer")
    } else {
        format!("/v1/models/{model}/predict")
    };
    ferry_tests::http::status_of(ureq::post(&server.url(&route)).send_json(example_request(model)))
}

fn pss(server: &Server) -> u64 {
    ProcessMemory::of(&server.pid().to_string())
        .expect("/proc/PID/smaps_rollup")
        .pss_bytes
}

fn geo_config(instances: usize) -> String {
    format!(
        "[models.geo-embeddings]\nmemory_bytes = {}\nmin_instances = {instances}\nmax_instances = {instances}\n",
        1u64 << 30
    )
}

#[test]
fn sixteen_instances_of_a_256_mb_version_share_its_snapshot() {
    let weights = tempfile::tempdir().unwrap();
    train_geo_embeddings(256, weights.path());
    let seed = Seed {
        model: "geo-embeddings",
        version: "1",
        component: workspace().join("target/models/geo-embeddings.wasm"),
        weights: Some(weights.path().join("geo-embeddings.weights")),
        tests: Some(weights.path().join("geo-embeddings.tests.json")),
        profile: None,
        config: None,
        graphs: Vec::new(),
    };
    let request = example_request("geo-embeddings");

    let mut server = Server::start_alone(&[seed], &geo_config(1), &[]);
    predict_concurrently(&server, "geo-embeddings", &request, 4, 25);
    let one = pss(&server);
    let model = get_json(&server, "/v1/models/geo-embeddings");
    let v = version(&model, "1");
    assert_eq!(v["snapshot"]["taken"], true, "{v}");
    let shared = v["memory"]["shared_bytes"].as_u64().unwrap();
    assert!(shared > 256 * MIB, "the image holds the table: {v}");

    // The same host with 16 instances: restarted on the same cache, so the snapshot is mapped from
    // its compiled file and the self-tests that passed on it are not run again.
    server.set_config(&geo_config(16));
    server.restart();
    predict_concurrently(&server, "geo-embeddings", &request, 16, 25);
    let sixteen = pss(&server);
    let model = get_json(&server, "/v1/models/geo-embeddings");
    let v = version(&model, "1");
    assert_eq!(v["memory"]["instances"], 16, "{v}");
    assert!(v["self_tests"]["cached"].is_string(), "{v}");
    let per_instance = sixteen.saturating_sub(one) / 15;
    eprintln!(
        "PSS: 1 instance {} MiB, 16 instances {} MiB, {:.2} MiB per extra instance",
        one / MIB,
        sixteen / MIB,
        per_instance as f64 / MIB as f64
    );
    assert!(
        per_instance <= 10 * MIB,
        "16 instances cost {} MiB of PSS more than one ({} → {} MiB): more than 10 MiB each",
        (sixteen - one) / MIB,
        one / MIB,
        sixteen / MIB
    );
}

#[test]
fn a_memory_budget_evicts_the_least_recently_used_and_brings_it_back_on_request() {
    let models = ["fraud-features", "diabetes-gbdt", "geo-embeddings"];
    let seeds: Vec<Seed> = models.iter().map(|m| Seed::sample(m, "1")).collect();
    let mut server = Server::start_alone(&seeds, "[host]\n", &[]);
    // What each costs resident, as the host counts it; a budget then fits the largest alone.
    let sizes: Vec<u64> = models
        .iter()
        .map(|m| {
            let model = get_json(&server, &format!("/v1/models/{m}"));
            let memory = &version(&model, "1")["memory"];
            memory["shared_bytes"].as_u64().unwrap() + memory["private_bytes"].as_u64().unwrap()
        })
        .collect();
    let budget = *sizes.iter().max().unwrap() + 1;
    assert!(
        sizes.iter().sum::<u64>() > budget,
        "the three must not fit together: {sizes:?}"
    );
    server.set_config(&format!("[host]\nmax_resident_bytes = {budget}\n"));
    server.restart();

    for round in 0..3 {
        for m in models {
            let (status, body) = call_example(&server, m);
            assert_eq!(status, 200, "round {round}, {m}: {body}");
            let listing = get_json(&server, "/v1/models");
            let memory = |e: &Value| e["versions"][0]["memory"].clone();
            let resident: Vec<(&str, u64)> = listing["models"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| memory(e)["resident"] == true)
                .map(|e| {
                    let m = memory(e);
                    let bytes =
                        m["shared_bytes"].as_u64().unwrap() + m["private_bytes"].as_u64().unwrap();
                    (e["name"].as_str().unwrap(), bytes)
                })
                .collect();
            assert!(
                resident.iter().any(|(name, _)| *name == m),
                "round {round}: {m} was just called, so it is resident: {resident:?}"
            );
            let held: u64 = resident.iter().map(|(_, b)| b).sum();
            assert!(
                held <= budget,
                "round {round}: {resident:?} hold more than {budget}"
            );
        }
    }
    // The host cache may drop an evicted version's compiled snapshot (its own LRU budget): the
    // version then takes its snapshot again from its files when called.
    let compiled = server.cache().join("compiled");
    let mut removed = 0;
    for engine_dir in std::fs::read_dir(&compiled).unwrap().flatten() {
        for file in std::fs::read_dir(engine_dir.path()).unwrap().flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            if name.starts_with("snapshot-") && name.ends_with(".cwasm") {
                std::fs::remove_file(file.path()).unwrap();
                removed += 1;
            }
        }
    }
    assert_eq!(
        removed,
        models.len(),
        "one snapshot per version in {}",
        compiled.display()
    );
    for m in models {
        let (status, body) = call_example(&server, m);
        assert_eq!(status, 200, "{m} after its snapshot left the cache: {body}");
    }
    assert!(
        server.log().contains("taking the snapshot again"),
        "an evicted version came back without its snapshot file: {}",
        server.log()
    );

    let metrics = ureq::get(&server.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let total = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    // geo-embeddings alone fills the budget: every round it evicts the others and they evict it.
    assert!(total("ferry_version_evictions_total") >= 4.0, "{metrics}");
    assert!(total("ferry_version_cold_loads_total") >= 4.0, "{metrics}");
    assert!(
        total("ferry_cold_request_wait_seconds_count") >= 4.0,
        "{metrics}"
    );
    let versions_bytes = metrics
        .lines()
        .find(|l| l.starts_with("ferry_host_memory_bytes{kind=\"versions\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .expect("host memory gauge");
    assert!(
        versions_bytes <= budget as f64,
        "{versions_bytes} > {budget}"
    );
    assert!(metrics.contains(&format!(
        "ferry_host_memory_bytes{{kind=\"budget\"}} {budget}"
    )));
}
