//! The four sample models pass their parity self-tests (expected values computed by the training
//! libraries themselves) when loaded the way the host loads a version.

use std::sync::Arc;

use ferry::runtime::{ModelInstance, ModelLimits, Startup};
use ferry::selftest::{collect_cases, run_cases};
use ferry_tests::{engine, model_file, workspace};

/// A sample started the way the host starts a version: its component, with its weights when it has them.
fn start(name: &str, weights: bool) -> ModelInstance {
    let component = engine()
        .load_component(&model_file(&format!("{name}.wasm")))
        .expect("component loads");
    let weights = weights.then(|| model_file(&format!("{name}.weights")));
    ModelInstance::start(
        &component,
        &ModelLimits::default(),
        Arc::from(name),
        Startup::Init {
            config: "{}",
            weights: weights.as_deref(),
        },
        None,
    )
    .expect("init")
}

fn self_test(name: &str, weights: bool, tests_file: bool, min_cases: usize) {
    let mut instance = start(name, weights);
    let tests =
        tests_file.then(|| String::from_utf8(model_file(&format!("{name}.tests.json"))).unwrap());
    let cases = collect_cases(instance.self_tests().unwrap(), tests.as_deref()).unwrap();
    assert!(
        cases.len() >= min_cases,
        "{name}: only {} cases",
        cases.len()
    );
    let report = run_cases(&mut instance, &cases);
    let failures: Vec<_> = report
        .outcomes
        .iter()
        .filter(|o| !o.passed)
        .map(|o| format!("{}: {}", o.name, o.detail))
        .collect();
    assert!(failures.is_empty(), "{name}: {failures:#?}");
}

#[test]
fn fraud_features_matches_scikit_learn() {
    self_test("fraud-features", false, false, 20);
}

#[test]
fn diabetes_gbdt_matches_xgboost() {
    self_test("diabetes-gbdt", true, true, 20);
}

#[test]
fn digits_onnx_matches_onnxruntime() {
    self_test("digits-onnx", true, true, 20);
}

#[test]
fn digits_onnx_reads_held_out_digits() {
    let mut instance = start("digits-onnx", true);
    let held: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(workspace().join("sample-models/digits-onnx/held-out.json"))
            .unwrap(),
    )
    .unwrap();
    let images = held["images"].as_array().unwrap();
    let pixels: Vec<f32> = images
        .iter()
        .flat_map(|img| {
            img.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
        })
        .collect();
    let input = ferry::runtime::Tensor {
        name: "input".into(),
        shape: vec![images.len() as u64, 64],
        data: ferry::runtime::TensorData::Fp32(pixels),
    };
    let outputs = instance.infer(&[input], "{}").unwrap();
    let label = outputs.iter().find(|t| t.name == "label").unwrap();
    let ferry::runtime::TensorData::Int64(labels) = &label.data else {
        panic!("label is INT64")
    };
    let truth: Vec<i64> = held["digits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let right = labels.iter().zip(&truth).filter(|(a, b)| a == b).count();
    assert!(
        right >= 9,
        "{right}/10 held-out digits read correctly: {labels:?} vs {truth:?}"
    );
}

#[test]
fn a_bad_tensor_request_is_the_callers_error() {
    let mut instance = start("diabetes-gbdt", true);
    let wrong = ferry::runtime::Tensor {
        name: "features".into(),
        shape: vec![1, 3],
        data: ferry::runtime::TensorData::Fp32(vec![0.0; 3]),
    };
    let err = instance.infer(&[wrong], "{}").unwrap_err();
    assert!(
        matches!(&err, ferry::runtime::CallError::InvalidInput(m) if m.contains("[N, 10]")),
        "{err:?}"
    );
    assert!(
        !instance.is_poisoned(),
        "a refused input leaves the instance usable"
    );
    let err = instance
        .predict(r#"{"features": {"age": 0.1}}"#)
        .unwrap_err();
    assert!(
        matches!(&err, ferry::runtime::CallError::InvalidInput(m) if m.contains("features.sex")),
        "{err:?}"
    );
}

#[test]
fn python_eta_matches_scikit_learn() {
    self_test("python-eta", true, true, 30);
}

#[test]
fn surge_js_matches_scikit_learn() {
    self_test("surge-js", true, true, 30);
}

#[test]
fn surge_js_names_what_is_wrong_with_a_request() {
    let mut instance = start("surge-js", true);
    let request = |zone: &str| {
        format!(
            r#"{{"features": {{"zone": "{zone}", "hour": 22, "weekday": 5, "open_requests": 31, "available_drivers": 6, "weather": "rain"}}}}"#
        )
    };
    let answer: serde_json::Value =
        serde_json::from_str(&instance.predict(&request("stadium")).unwrap()).unwrap();
    assert!(
        answer["surge_multiplier"].as_f64().unwrap() >= 1.0,
        "{answer}"
    );
    let err = instance.predict(&request("moon")).unwrap_err();
    assert!(
        matches!(&err, ferry::runtime::CallError::InvalidInput(m) if m.contains("zone") && m.contains("stadium")),
        "{err:?}"
    );
    assert!(
        !instance.is_poisoned(),
        "a refused input leaves the instance usable"
    );
}

#[test]
fn python_eta_names_what_is_wrong_with_a_ride() {
    let mut instance = start("python-eta", true);
    let ride = |weather: &str| {
        format!(
            r#"{{"features": {{"distance_km": 7.4, "hour": 8, "weekday": 2, "weather": "{weather}", "pickup_zone": "airport"}}}}"#
        )
    };
    let answer: serde_json::Value =
        serde_json::from_str(&instance.predict(&ride("rain")).unwrap()).unwrap();
    assert!(answer["eta_minutes"].as_f64().unwrap() > 10.0, "{answer}");
    let err = instance.predict(&ride("fog")).unwrap_err();
    assert!(
        matches!(&err, ferry::runtime::CallError::InvalidInput(m) if m.contains("weather is one of clear, rain, snow")),
        "{err:?}"
    );
    let err = instance
        .predict(r#"{"features": {"distance_km": 7.4}}"#)
        .unwrap_err();
    assert!(
        matches!(&err, ferry::runtime::CallError::InvalidInput(m) if m == "features.hour: missing"),
        "{err:?}"
    );
}
