//! Drift monitoring over real HTTP: python-sklearn-graph ships the training profile its training
//! script writes (`profile.json`); requests drawn from the training data's own distributions show no
//! drift, and the same requests with one feature scaled ×3 show that feature drifting past the
//! threshold while the others stay under it, in `GET /v1/models/{m}/monitoring` and in `/metrics`.
//! A version without a profile says so; a malformed profile is refused at upload, saying why.

use ferry_tests::http::put_version;
use ferry_tests::server::{Seed, Server};
use ferry_tests::workspace;
use serde_json::{json, Map, Value};

const CONFIG: &str = r#"
[monitoring]
sample_percent = 100
min_rows = 150
"#;

/// The request field scaled in the shifted traffic.
pub(crate) const SHIFTED: &str = "wait_minutes";
pub(crate) const REQUESTS: usize = 400;

/// A small deterministic generator (the test's traffic is the same every run).
pub(crate) struct Draw(pub(crate) u64);

impl Draw {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A bin drawn in proportion to the training counts.
    fn bin(&mut self, counts: &[u64]) -> usize {
        let total: u64 = counts.iter().sum();
        let mut at = self.next() * total as f64;
        for (i, c) in counts.iter().enumerate() {
            if at < *c as f64 {
                return i;
            }
            at -= *c as f64;
        }
        counts.len() - 1
    }
}

/// Integer request fields (the model refuses fractions there).
const INTEGERS: [&str; 3] = ["hour", "weekday", "rider_trips"];

/// `REQUESTS` feature-style requests whose fields follow the profile's training histograms: each
/// field's bin drawn by the training counts, a value inside it.
pub(crate) fn requests_like_training(profile: &Value, draw: &mut Draw) -> Vec<Map<String, Value>> {
    (0..REQUESTS)
        .map(|_| {
            let mut fields = Map::new();
            for column in profile["features"].as_array().unwrap() {
                let name = column["name"].as_str().unwrap();
                let value = if let Some(numeric) = column.get("numeric") {
                    let edges: Vec<f64> = serde_json::from_value(numeric["edges"].clone()).unwrap();
                    let counts: Vec<u64> =
                        serde_json::from_value(numeric["counts"].clone()).unwrap();
                    let bin = draw.bin(&counts);
                    // Inside the bin (lo, hi]: its upper edge, or past the last edge for the last bin.
                    let x = match edges.get(bin) {
                        Some(hi) => *hi,
                        None => edges.last().map_or(1.0, |e| e + 1.0),
                    };
                    if INTEGERS.contains(&name) {
                        json!(x.round() as i64)
                    } else {
                        json!(x)
                    }
                } else {
                    let counts = column["categorical"]["counts"].as_object().unwrap();
                    let names: Vec<&String> = counts.keys().collect();
                    let n: Vec<u64> = counts.values().map(|c| c.as_u64().unwrap()).collect();
                    json!(names[draw.bin(&n)])
                };
                fields.insert(name.to_owned(), value);
            }
            fields
        })
        .collect()
}

/// `REQUESTS` requests drawn (with `seed`) from python-sklearn-graph's training profile to `rides`,
/// and the same with `SHIFTED` ×3 to `rides-shifted`.
pub(crate) fn like_and_shifted(server: &Server, seed: u64) {
    let profile: Value = serde_json::from_str(
        &std::fs::read_to_string(
            workspace().join("sample-models/python-sklearn-graph/profile.json"),
        )
        .unwrap(),
    )
    .unwrap();
    for fields in &requests_like_training(&profile, &mut Draw(seed)) {
        predict(server, "rides", fields);
        let mut shifted = fields.clone();
        let x = shifted[SHIFTED].as_f64().unwrap();
        shifted.insert(SHIFTED.into(), json!(x * 3.0));
        predict(server, "rides-shifted", &shifted);
    }
}

pub(crate) fn predict(server: &Server, model: &str, fields: &Map<String, Value>) {
    let r = ureq::post(&server.url(&format!("/v1/models/{model}/predict")))
        .send_json(json!({ "features": fields }));
    assert!(r.is_ok(), "{model}: {r:?} for {fields:?}");
}

fn monitoring(server: &Server, model: &str) -> Value {
    ureq::get(&server.url(&format!("/v1/models/{model}/monitoring")))
        .call()
        .unwrap()
        .into_json()
        .unwrap()
}

/// The version's columns by name: (psi, drifting).
fn drift_of(report: &Value, side: &str) -> Vec<(String, f64, bool)> {
    report["versions"][0][side]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["psi"]
                    .as_f64()
                    .unwrap_or_else(|| panic!("no psi yet: {c}")),
                c["drifting"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// Waits until the worker has counted every request (it runs off the request path).
fn counted(server: &Server, model: &str) -> Value {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let report = monitoring(server, model);
        if report["versions"][0]["samples"].as_u64() == Some(REQUESTS as u64) {
            return report;
        }
        assert!(
            std::time::Instant::now() < until,
            "the monitor never counted {REQUESTS} samples: {report}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn a_feature_scaled_three_times_drifts_past_the_threshold_and_the_others_stay_under() {
    let rides = Seed::sample("python-sklearn-graph", "1");
    assert!(
        rides.profile.is_some(),
        "python-sklearn-graph ships a training profile (its training script writes profile.json)"
    );
    let server = Server::start(
        &[
            Seed {
                model: "rides",
                ..Seed::sample("python-sklearn-graph", "1")
            },
            Seed {
                model: "rides-shifted",
                ..Seed::sample("python-sklearn-graph", "1")
            },
            Seed {
                model: "fraud-unprofiled",
                profile: None,
                ..Seed::sample("fraud-features", "1")
            },
        ],
        CONFIG,
    );
    like_and_shifted(&server, 20261206);

    let like = counted(&server, "rides");
    let shifted = counted(&server, "rides-shifted");
    assert_eq!(like["sample_percent"], 100.0, "{like}");
    for (traffic, report) in [("like training", &like), ("wait ×3", &shifted)] {
        let psi: Vec<String> = drift_of(report, "features")
            .iter()
            .chain(&drift_of(report, "outputs"))
            .map(|(name, psi, _)| format!("{name} {psi:.3}"))
            .collect();
        println!("PSI, {traffic}: {}", psi.join(", "));
    }
    for (name, psi, drifting) in drift_of(&like, "features") {
        assert!(
            psi < 0.1 && !drifting,
            "{name}: requests like the training data drift by {psi}\n{like}"
        );
    }
    for (name, psi, drifting) in drift_of(&shifted, "features") {
        if name == SHIFTED {
            assert!(
                psi > 0.25 && drifting,
                "{name} ×3 drifts only {psi}\n{shifted}"
            );
        } else {
            assert!(
                psi < 0.1 && !drifting,
                "{name}, unchanged, drifts by {psi}\n{shifted}"
            );
        }
    }
    // Longer waits raise the predicted cancellations: the predictions move too.
    let prediction = |report: &Value| {
        drift_of(report, "outputs")
            .into_iter()
            .find(|(name, _, _)| name == "cancel_probability")
            .unwrap()
            .1
    };
    assert!(
        prediction(&shifted) > prediction(&like),
        "predictions: shifted {} vs like {}",
        prediction(&shifted),
        prediction(&like)
    );
    // Both histograms are there for a chart: the training counts and the live ones, bin by bin.
    let wait = shifted["versions"][0]["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == SHIFTED)
        .unwrap();
    assert_eq!(
        wait["live"].as_array().unwrap().len(),
        wait["baseline"].as_array().unwrap().len()
    );
    assert_eq!(
        wait["bins"].as_array().unwrap().len(),
        wait["live"].as_array().unwrap().len()
    );

    let metrics = ureq::get(&server.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let series =
        format!(r#"ferry_feature_drift{{model="rides-shifted",version="1",feature="{SHIFTED}"}} "#);
    let line = metrics
        .lines()
        .find(|l| l.starts_with(&series))
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{metrics}"));
    let value: f64 = line[series.len()..].trim().parse().unwrap();
    assert!(value > 0.25, "{line}");
    assert!(
        metrics.contains(
            r#"ferry_prediction_drift{model="rides",version="1",output="cancel_probability"}"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"ferry_monitoring_samples_total{model="rides",version="1"} 400"#),
        "{metrics}"
    );

    // A version without a profile says it has none (and is served all the same).
    let fraud = monitoring(&server, "fraud-unprofiled");
    assert_eq!(fraud["versions"][0]["profile"], "none", "{fraud}");

    // A malformed profile is refused at upload, saying what is wrong.
    let component = std::fs::read(workspace().join("target/models/fraud-features.wasm")).unwrap();
    let bad = br#"{"ferry_profile": 1, "features": [{"name": "x", "numeric": {"edges": [3, 1], "counts": [1, 1, 1]}}]}"#;
    let (status, body) = put_version(
        &server.base,
        "fraud-unprofiled",
        "2",
        &[("component", &component), ("profile", bad)],
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("strictly ascending"), "{body}");
}
