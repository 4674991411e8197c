//! Dynamic batching over real HTTP: concurrent single-row requests to a version that batches are
//! answered as the same model answers them one by one (bit for bit with tract inside the
//! component and with ONNX Runtime through wasi:nn, where their kernels allow; within the
//! self-tests' tolerance otherwise, and the test says which), a bad request in a burst fails alone,
//! and the batches show in `GET /v1/models/{m}` and `/metrics`.

use std::sync::{Arc, Barrier};

use ferry_tests::server::{Seed, Server};
use ferry_tests::workspace;
use serde_json::{json, Value};

const CONFIG: &str = r#"
[host]
require_self_tests = false

[models.default]
min_instances = 1
max_instances = 2

[models.digits-onnx]
max_batch_size = 8
max_queue_delay_us = 50000
max_instances = 1

[models.digits-graph]
max_batch_size = 8
max_queue_delay_us = 50000
max_instances = 1
"#;

/// The self-tests' tolerance for the digits models (`tests.json`).
const TOLERANCE: f64 = 1e-4;

fn held_out() -> Vec<Vec<f64>> {
    let text = std::fs::read_to_string(workspace().join("sample-models/digits-onnx/held-out.json"))
        .unwrap();
    let held: Value = serde_json::from_str(&text).unwrap();
    held["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|image| {
            image
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn infer(server: &Server, model: &str, image: &[f64]) -> (u16, Value) {
    let body = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, image.len()], "data": image}]});
    let answer = ureq::post(&server.url(&format!("/v2/models/{model}/infer"))).send_json(body);
    match answer {
        Ok(r) => (r.status(), r.into_json().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap()),
        Err(e) => panic!("{model}: {e}"),
    }
}

fn probabilities(answer: &Value) -> Vec<f64> {
    let outputs = answer["outputs"].as_array().unwrap();
    let p = outputs
        .iter()
        .find(|o| o["name"] == "probabilities")
        .unwrap();
    p["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// `model`'s one version's statistics (the OIP statistics extension).
fn model_stats(server: &Server, model: &str) -> Value {
    let stats: Value = ureq::get(&server.url(&format!("/v2/models/{model}/stats")))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    stats["model_stats"][0].clone()
}

/// The model `model` under another name, without batching (its section is the default's).
fn unbatched<'a>(seed: Seed<'a>, model: &'a str) -> Seed<'a> {
    Seed { model, ..seed }
}

#[test]
fn merged_answers_equal_unmerged_ones_and_a_bad_request_fails_alone() {
    let graph_ort = Seed {
        config: Some(json!({"graphs": {"backend": "onnxruntime"}})),
        ..Seed::sample("digits-graph", "1")
    };
    let server = Server::start(
        &[
            Seed::sample("digits-onnx", "1"),
            unbatched(Seed::sample("digits-onnx", "1"), "digits-onnx-alone"),
            Seed {
                config: Some(json!({"graphs": {"backend": "onnxruntime"}})),
                ..Seed::sample("digits-graph", "1")
            },
            unbatched(graph_ort, "digits-graph-alone"),
        ],
        CONFIG,
    );
    let images = held_out();
    let server = Arc::new(server);
    for (model, alone, backend) in [
        ("digits-onnx", "digits-onnx-alone", "tract in the component"),
        (
            "digits-graph",
            "digits-graph-alone",
            "ONNX Runtime through wasi:nn",
        ),
    ] {
        let expected: Vec<Vec<f64>> = images
            .iter()
            .map(|image| {
                let (status, answer) = infer(&server, alone, image);
                assert_eq!(status, 200, "{answer}");
                probabilities(&answer)
            })
            .collect();
        // A burst: every image at once, and one request of the wrong shape among them.
        let barrier = Arc::new(Barrier::new(images.len() + 1));
        let mut burst = Vec::new();
        for image in images.iter().cloned().map(Some).chain([None]) {
            let (server, barrier) = (server.clone(), barrier.clone());
            burst.push(std::thread::spawn(move || {
                barrier.wait();
                match image {
                    Some(image) => infer(&server, model, &image),
                    None => infer(&server, model, &[0.5; 63]),
                }
            }));
        }
        let answers: Vec<(u16, Value)> = burst.into_iter().map(|t| t.join().unwrap()).collect();
        let (bad_status, bad) = answers.last().unwrap();
        assert_eq!(*bad_status, 400, "the wrong shape fails alone: {bad}");
        let mut worst: f64 = 0.0;
        for ((status, answer), want) in answers.iter().zip(&expected) {
            assert_eq!(*status, 200, "{answer}");
            let got = probabilities(answer);
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(want) {
                worst = worst.max((g - w).abs());
            }
        }
        assert!(
            worst <= TOLERANCE,
            "{model}: merged answers differ from unmerged by {worst}"
        );
        println!(
            "{model} ({backend}): merged answers {} unmerged ones (worst |Δ| {worst:e})",
            if worst == 0.0 {
                "equal, bit for bit,"
            } else {
                "are within the self-tests' tolerance of"
            }
        );
        let description: Value = ureq::get(&server.url(&format!("/v1/models/{model}")))
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        let batching = &description["versions"][0]["batching"];
        assert_eq!(batching["max_batch_size"], 8, "{description}");
        assert_eq!(batching["requests"], images.len(), "{batching}");
        assert!(
            batching["batches"].as_u64().unwrap() < images.len() as u64,
            "concurrent requests were merged: {batching}"
        );
        // The statistics extension counts each request once and each merged call once, as Triton
        // does: inferences are rows, executions are guest calls, batch_stats are calls by rows.
        let stats = model_stats(&server, model);
        let n = images.len() as u64;
        assert_eq!(stats["inference_count"], n, "{stats}");
        assert_eq!(stats["inference_stats"]["success"]["count"], n, "{stats}");
        assert_eq!(stats["execution_count"], batching["batches"], "{stats}");
        let sizes = stats["batch_stats"].as_array().unwrap();
        let calls: u64 = sizes
            .iter()
            .map(|b| b["compute_infer"]["count"].as_u64().unwrap())
            .sum();
        let rows: u64 = sizes
            .iter()
            .map(|b| {
                b["batch_size"].as_u64().unwrap() * b["compute_infer"]["count"].as_u64().unwrap()
            })
            .sum();
        assert_eq!(calls, stats["execution_count"].as_u64().unwrap(), "{stats}");
        assert_eq!(rows, n, "{stats}");
        assert!(
            sizes.iter().any(|b| b["batch_size"].as_u64().unwrap() > 1),
            "{stats}"
        );
        let alone_stats = model_stats(&server, alone);
        assert_eq!(alone_stats["inference_count"], n, "{alone_stats}");
        assert_eq!(alone_stats["execution_count"], n, "{alone_stats}");
        assert_eq!(alone_stats["batch_stats"], json!([]), "{alone_stats}");
        // A model that does not batch says nothing about batches.
        let alone: Value = ureq::get(&server.url(&format!("/v1/models/{alone}")))
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        assert!(alone["versions"][0].get("batching").is_none(), "{alone}");
    }
    let metrics = ureq::get(&server.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    for needle in [
        r#"ferry_batch_size_bucket{model="digits-onnx",version="1",le="1"}"#,
        r#"ferry_batch_delay_seconds_count{model="digits-graph",version="1"}"#,
    ] {
        assert!(metrics.contains(needle), "missing {needle}:\n{metrics}");
    }
}
