//! Every route of `ferry serve` over real HTTP, against a real server process with the sample models
//! and the hostile guest (as an all-datatypes echo model, a looping model, a trapping model and a slow
//! one), including each error code and overload with recovery.

use std::sync::OnceLock;
use std::time::Duration;

use ferry_tests::server::{Seed, Server};
use ferry_tests::workspace;
use serde_json::{json, Value};

const CONFIG: &str = r#"
[host]
require_self_tests = false   # the hostile test models ship none
max_body_bytes = 2097152

[models.hostile-loop]
deadline_ms = 200

# A fuel limit on a host that counts no fuel: the version runs on the engine that counts it.
[models.hostile-fuel]
fuel = 20000000
deadline_ms = 20000

[models.hostile-spin]
min_instances = 1
max_instances = 1
queue_timeout_ms = 50
max_queue = 8
deadline_ms = 10000
"#;

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        Server::start(
            &[
                Seed::sample("fraud-features", "1"),
                Seed::sample("diabetes-gbdt", "1"),
                Seed::sample("digits-onnx", "1"),
                Seed::hostile("echo", json!({})),
                Seed::hostile("hostile-loop", json!({"attack": "infinite-loop"})),
                Seed::hostile("hostile-fuel", json!({"attack": "infinite-loop"})),
                Seed::hostile("hostile-trap", json!({"attack": "trap"})),
                Seed::hostile("hostile-spin", json!({"attack": "spin"})),
            ],
            CONFIG,
        )
    })
}

/// (status, headers we care about, body)
fn send(
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> (u16, ureq::Response) {
    let mut req = ureq::request(method, &server().url(path)).set("content-type", content_type);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let result = if method == "GET" {
        req.call()
    } else {
        req.send_bytes(body)
    };
    match result {
        Ok(r) => (r.status(), r),
        Err(ureq::Error::Status(code, r)) => (code, r),
        Err(e) => panic!("{method} {path}: {e}"),
    }
}

fn json_call(method: &str, path: &str, body: &Value) -> (u16, Value) {
    let (status, r) = send(
        method,
        path,
        "application/json",
        body.to_string().as_bytes(),
        &[],
    );
    let text = r.into_string().unwrap();
    (
        status,
        if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        },
    )
}

fn get(path: &str) -> (u16, Value) {
    json_call("GET", path, &Value::Null)
}

fn example(name: &str) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(
            workspace().join(format!("sample-models/{name}/example-request.json")),
        )
        .unwrap(),
    )
    .unwrap()
}

fn held_out() -> (Vec<Vec<f64>>, Vec<i64>) {
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace().join("sample-models/digits-onnx/held-out.json"))
            .unwrap(),
    )
    .unwrap();
    let images = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            i.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect();
    (
        images,
        v["digits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_i64().unwrap())
            .collect(),
    )
}

#[test]
fn server_metadata_and_health() {
    let (status, meta) = get("/v2");
    assert_eq!(status, 200);
    assert_eq!(meta["name"], "ferry");
    assert!(meta["extensions"]
        .as_array()
        .unwrap()
        .contains(&json!("binary_tensor_data")));
    // The OIP's bodies: KServe's `InferenceRESTClient` reads them, tritonclient the status only.
    assert_eq!(get("/v2/health/live"), (200, json!({"live": true})));
    assert_eq!(get("/v2/health/ready"), (200, json!({"ready": true})));
    assert_eq!(
        get("/v2/models/digits-onnx/ready"),
        (200, json!({"name": "digits-onnx", "ready": true}))
    );
    assert_eq!(
        get("/v2/models/digits-onnx/versions/1/ready"),
        (200, json!({"name": "digits-onnx", "ready": true}))
    );
    assert_eq!(get("/v2/models/nope/ready").0, 404);
}

#[test]
fn model_metadata_comes_from_what_the_guest_declares() {
    let (status, meta) = get("/v2/models/digits-onnx");
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["name"], "digits-onnx");
    assert_eq!(meta["versions"], json!(["1"]));
    assert_eq!(meta["platform"], "tract-onnx");
    assert_eq!(
        meta["inputs"],
        json!([{"name": "input", "datatype": "FP32", "shape": [-1, 64]}])
    );
    assert_eq!(
        meta["outputs"][0],
        json!({"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]})
    );
    assert_eq!(get("/v2/models/digits-onnx/versions/1").1, meta);
    assert_eq!(get("/v2/models/digits-onnx/versions/7").0, 404);
}

#[test]
fn digits_infer_reads_held_out_digits_and_echoes_the_id() {
    let (images, digits) = held_out();
    let body = json!({
        "id": "req-42",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [images.len(), 64], "data": images}],
        "outputs": [{"name": "label"}],
    });
    let (status, answer) = json_call("POST", "/v2/models/digits-onnx/infer", &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["id"], "req-42");
    assert_eq!(answer["model_name"], "digits-onnx");
    assert_eq!(answer["model_version"], "1");
    let outputs = answer["outputs"].as_array().unwrap();
    assert_eq!(
        outputs.len(),
        1,
        "only the requested output comes back: {answer}"
    );
    let labels: Vec<i64> = outputs[0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let right = labels.iter().zip(&digits).filter(|(a, b)| a == b).count();
    assert!(right >= 9, "{labels:?} vs {digits:?}");
    // With a version in the path, the same answer.
    let (status, again) = json_call("POST", "/v2/models/digits-onnx/versions/1/infer", &body);
    assert_eq!((status, &again["outputs"]), (200, &answer["outputs"]));
}

#[test]
fn nested_and_flat_data_give_the_same_answer() {
    let nested = example("diabetes-gbdt");
    let mut flat = nested.clone();
    let rows = nested["inputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().clone())
        .collect::<Vec<_>>();
    flat["inputs"][0]["data"] = json!(rows);
    let (s1, a) = json_call("POST", "/v2/models/diabetes-gbdt/infer", &nested);
    let (s2, b) = json_call("POST", "/v2/models/diabetes-gbdt/infer", &flat);
    assert_eq!((s1, s2), (200, 200), "{a} {b}");
    assert_eq!(a["outputs"], b["outputs"]);
    assert_eq!(a["outputs"][0]["shape"], json!([2]));
}

fn echo_inputs() -> Value {
    json!([
        {"name": "bool", "datatype": "BOOL", "shape": [2], "data": [true, false]},
        {"name": "uint8", "datatype": "UINT8", "shape": [2], "data": [0, 255]},
        {"name": "uint16", "datatype": "UINT16", "shape": [2], "data": [1, 65535]},
        {"name": "uint32", "datatype": "UINT32", "shape": [2], "data": [1, 4294967295u64]},
        {"name": "uint64", "datatype": "UINT64", "shape": [2], "data": [1, 18446744073709551615u64]},
        {"name": "int8", "datatype": "INT8", "shape": [2], "data": [-128, 127]},
        {"name": "int16", "datatype": "INT16", "shape": [2], "data": [-32768, 32767]},
        {"name": "int32", "datatype": "INT32", "shape": [2], "data": [-2147483648i64, 7]},
        {"name": "int64", "datatype": "INT64", "shape": [2], "data": [-9223372036854775807i64, 7]},
        {"name": "fp32", "datatype": "FP32", "shape": [2], "data": [0.5, -1.25]},
        {"name": "fp64", "datatype": "FP64", "shape": [2], "data": [0.1, -2.5e300]},
        {"name": "bytes", "datatype": "BYTES", "shape": [2], "data": ["hello", "wörld"]},
    ])
}

#[test]
fn every_datatype_round_trips_through_a_model_as_json() {
    let inputs = echo_inputs();
    let (status, answer) = json_call("POST", "/v2/models/echo/infer", &json!({"inputs": inputs}));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outputs"], inputs);
}

/// Encodes an echo request in the binary extension: every input's data after the JSON header.
fn binary_body(inputs: &Value, binary_outputs: bool) -> (Vec<u8>, usize) {
    let mut header_inputs = Vec::new();
    let mut tail = Vec::new();
    for input in inputs.as_array().unwrap() {
        let data = input["data"].as_array().unwrap();
        let bytes: Vec<u8> = match input["datatype"].as_str().unwrap() {
            "BOOL" => data.iter().map(|v| v.as_bool().unwrap() as u8).collect(),
            "UINT8" => data.iter().map(|v| v.as_u64().unwrap() as u8).collect(),
            "UINT16" => data
                .iter()
                .flat_map(|v| (v.as_u64().unwrap() as u16).to_le_bytes())
                .collect(),
            "UINT32" => data
                .iter()
                .flat_map(|v| (v.as_u64().unwrap() as u32).to_le_bytes())
                .collect(),
            "UINT64" => data
                .iter()
                .flat_map(|v| v.as_u64().unwrap().to_le_bytes())
                .collect(),
            "INT8" => data
                .iter()
                .map(|v| v.as_i64().unwrap() as i8 as u8)
                .collect(),
            "INT16" => data
                .iter()
                .flat_map(|v| (v.as_i64().unwrap() as i16).to_le_bytes())
                .collect(),
            "INT32" => data
                .iter()
                .flat_map(|v| (v.as_i64().unwrap() as i32).to_le_bytes())
                .collect(),
            "INT64" => data
                .iter()
                .flat_map(|v| v.as_i64().unwrap().to_le_bytes())
                .collect(),
            "FP32" => data
                .iter()
                .flat_map(|v| (v.as_f64().unwrap() as f32).to_le_bytes())
                .collect(),
            "FP64" => data
                .iter()
                .flat_map(|v| v.as_f64().unwrap().to_le_bytes())
                .collect(),
            "BYTES" => data
                .iter()
                .flat_map(|v| {
                    let s = v.as_str().unwrap().as_bytes();
                    (s.len() as u32)
                        .to_le_bytes()
                        .into_iter()
                        .chain(s.iter().copied())
                        .collect::<Vec<_>>()
                })
                .collect(),
            other => panic!("{other}"),
        };
        let mut header = input.clone();
        header.as_object_mut().unwrap().remove("data");
        header["parameters"] = json!({"binary_data_size": bytes.len()});
        header_inputs.push(header);
        tail.extend(bytes);
    }
    let header =
        json!({"inputs": header_inputs, "parameters": {"binary_data_output": binary_outputs}})
            .to_string();
    let mut body = header.clone().into_bytes();
    body.extend(tail);
    (body, header.len())
}

#[test]
fn binary_and_json_requests_give_identical_results() {
    let inputs = echo_inputs();
    let (body, header_len) = binary_body(&inputs, false);
    let (status, r) = send(
        "POST",
        "/v2/models/echo/infer",
        "application/octet-stream",
        &body,
        &[("Inference-Header-Content-Length", &header_len.to_string())],
    );
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_str(&r.into_string().unwrap()).unwrap();
    assert_eq!(answer["outputs"], inputs, "binary in, JSON out");

    // Binary out too: the response carries the JSON header length and raw tensors after it.
    let (body, header_len) = binary_body(&inputs, true);
    let (status, r) = send(
        "POST",
        "/v2/models/echo/infer",
        "application/octet-stream",
        &body,
        &[("Inference-Header-Content-Length", &header_len.to_string())],
    );
    assert_eq!(status, 200);
    let json_len: usize = r
        .header("inference-header-content-length")
        .expect("binary response header")
        .parse()
        .unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut r.into_reader(), &mut bytes).unwrap();
    let header: Value = serde_json::from_slice(&bytes[..json_len]).unwrap();
    let sizes: usize = header["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["parameters"]["binary_data_size"].as_u64().unwrap() as usize)
        .sum();
    assert_eq!(json_len + sizes, bytes.len());
    let (_, request_len) = binary_body(&inputs, true);
    assert_eq!(
        &bytes[json_len..],
        &body[request_len..],
        "the echoed tensors are byte-identical"
    );
}

#[test]
fn digits_binary_and_json_agree() {
    let (images, _) = held_out();
    let pixels: Vec<f32> = images.iter().flatten().map(|v| *v as f32).collect();
    let json_req = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [images.len(), 64], "data": pixels}]});
    let (_, by_json) = json_call("POST", "/v2/models/digits-onnx/infer", &json_req);
    let header = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [images.len(), 64], "parameters": {"binary_data_size": pixels.len() * 4}}]}).to_string();
    let mut body = header.clone().into_bytes();
    body.extend(pixels.iter().flat_map(|p| p.to_le_bytes()));
    let (status, r) = send(
        "POST",
        "/v2/models/digits-onnx/infer",
        "application/octet-stream",
        &body,
        &[("inference-header-content-length", &header.len().to_string())],
    );
    assert_eq!(status, 200);
    let by_binary: Value = serde_json::from_str(&r.into_string().unwrap()).unwrap();
    assert_eq!(by_json["outputs"], by_binary["outputs"]);
}

#[test]
fn fraud_predict_answers_like_scikit_learn_and_names_the_version() {
    let tests: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace().join("sample-models/fraud-features/tests.json"))
            .unwrap(),
    )
    .unwrap();
    for case in tests["cases"].as_array().unwrap().iter().take(5) {
        let (status, r) = send(
            "POST",
            "/v1/models/fraud-features/predict",
            "application/json",
            case["request"].to_string().as_bytes(),
            &[],
        );
        assert_eq!(status, 200);
        assert_eq!(r.header("ferry-model-version"), Some("1"));
        assert!(
            r.header("x-request-id").is_some_and(|id| !id.is_empty()),
            "every response carries a request id"
        );
        let answer: Value = serde_json::from_str(&r.into_string().unwrap()).unwrap();
        let (got, want) = (
            answer["fraud_probability"].as_f64().unwrap(),
            case["response"]["fraud_probability"].as_f64().unwrap(),
        );
        assert!((got - want).abs() < 1e-9, "{got} vs {want}");
    }
    let (status, _) = json_call(
        "POST",
        "/v1/models/fraud-features/versions/1/predict",
        &example("fraud-features"),
    );
    assert_eq!(status, 200);
}

#[test]
fn a_caller_supplied_request_id_is_returned() {
    let (_, r) = send(
        "GET",
        "/v2/health/live",
        "application/json",
        b"",
        &[("x-request-id", "trace-me-123")],
    );
    assert_eq!(r.header("x-request-id"), Some("trace-me-123"));
}

fn error_of(status_and_body: (u16, Value)) -> (u16, String) {
    let (status, body) = status_and_body;
    (
        status,
        body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("errors are JSON with `error`: {body}"))
            .to_owned(),
    )
}

#[test]
fn malformed_requests_are_400_naming_the_problem() {
    let image = |name: &str, datatype: &str, shape: Value, data: Value| json!({"inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data}]});
    let mut with_unknown_output = image("input", "FP32", json!([1, 64]), json!(vec![0.0; 64]));
    with_unknown_output["outputs"] = json!([{"name": "logits"}]);
    // (route, body, what the error must say)
    let cases: Vec<(&str, Value, &[&str])> = vec![
        (
            "/v2/models/digits-onnx/infer",
            image("input", "FP32", json!([1, 63]), json!(vec![0.0; 63])),
            &["input `input`", "[-1, 64]", "[1, 63]"],
        ),
        (
            "/v2/models/digits-onnx/infer",
            image("input", "INT32", json!([1, 64]), json!(vec![0; 64])),
            &["expected datatype FP32, got INT32"],
        ),
        (
            "/v2/models/digits-onnx/infer",
            image("input", "FP32", json!([2, 64]), json!(vec![0.0; 64])),
            &["needs 128 elements, data has 64"],
        ),
        (
            "/v2/models/digits-onnx/infer",
            image("pixels", "FP32", json!([1]), json!([0])),
            &["no input `pixels`", "input"],
        ),
        (
            "/v2/models/digits-onnx/infer",
            json!({"inputs": []}),
            &["input `input` is missing"],
        ),
        (
            "/v2/models/digits-onnx/infer",
            with_unknown_output,
            &["no output `logits`"],
        ),
        (
            "/v1/models/fraud-features/predict",
            json!([1, 2]),
            &["JSON object"],
        ),
        (
            "/v2/models/fraud-features/infer",
            json!({"inputs": []}),
            &["/v1/models/fraud-features/predict"],
        ),
        (
            "/v1/models/digits-onnx/predict",
            json!({}),
            &["/v2/models/digits-onnx/infer"],
        ),
    ];
    for (route, body, says) in cases {
        let (s, e) = error_of(json_call("POST", route, &body));
        assert!(
            s == 400 && says.iter().all(|part| e.contains(part)),
            "{route} {body}: {s} {e}"
        );
    }

    let (status, r) = send(
        "POST",
        "/v2/models/digits-onnx/infer",
        "application/json",
        b"{not json",
        &[],
    );
    assert_eq!(status, 400);
    assert!(r
        .into_string()
        .unwrap()
        .contains("invalid inference request"));
}

#[test]
fn unknown_models_and_versions_are_404() {
    let (s, e) = error_of(json_call(
        "POST",
        "/v2/models/nope/infer",
        &json!({"inputs": []}),
    ));
    assert!(s == 404 && e.contains("unknown model `nope`"), "{e}");
    let (s, e) = error_of(json_call(
        "POST",
        "/v1/models/fraud-features/versions/9/predict",
        &json!({}),
    ));
    assert!(s == 404 && e.contains("no version or alias `9`"), "{e}");
    assert_eq!(get("/v3/whatever").0, 404);
}

#[test]
fn a_request_the_model_rejects_is_422() {
    let mut request = example("fraud-features");
    request["features"]["hour"] = json!(30);
    let (s, e) = error_of(json_call(
        "POST",
        "/v1/models/fraud-features/predict",
        &request,
    ));
    assert!(s == 422 && e.contains("hour"), "{e}");
}

#[test]
fn a_body_over_the_limit_is_413() {
    // Declares 3 MiB (the limit is 2 MiB) and sends none of it: the server answers from the declared
    // length, so reading its answer does not race the body it will never take.
    use std::io::{Read, Write};
    let mut tcp =
        std::net::TcpStream::connect(server().base.trim_start_matches("http://")).unwrap();
    write!(
        tcp,
        "POST /v1/models/fraud-features/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        3 << 20
    )
    .unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tcp.read(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#"{"error":"#), "errors are JSON: {answer}");
}

#[test]
fn a_looping_model_is_504_and_a_trapping_one_500_and_others_keep_serving() {
    let (s, e) = error_of(json_call(
        "POST",
        "/v1/models/hostile-loop/predict",
        &json!({}),
    ));
    assert!(s == 504 && e.contains("deadline exceeded"), "{e}");
    let (s, e) = error_of(json_call(
        "POST",
        "/v1/models/hostile-trap/predict",
        &json!({}),
    ));
    assert!(s == 500 && e.contains("trapped"), "{e}");
    let (s, _) = json_call(
        "POST",
        "/v1/models/fraud-features/predict",
        &example("fraud-features"),
    );
    assert_eq!(s, 200);
}

/// Fuel is counted for the model whose limits name it, on an engine of its own; a model without a
/// fuel limit beside it runs on code that counts none (`ModelRuntime::for_limits`).
#[test]
fn a_fuel_limit_holds_without_host_wide_fuel_and_only_that_model_counts_it() {
    let (s, e) = error_of(json_call(
        "POST",
        "/v1/models/hostile-fuel/predict",
        &json!({}),
    ));
    assert!(
        s == 504 && e.contains("fuel exhausted: the model used more than 20000000"),
        "{s} {e}"
    );
    let (s, _) = json_call(
        "POST",
        "/v1/models/fraud-features/predict",
        &example("fraud-features"),
    );
    assert_eq!(s, 200);
    let usage = |model: &str| get(&format!("/v1/models/{model}")).1["versions"][0]["usage"].clone();
    let fuel = usage("hostile-fuel");
    assert!(
        fuel["fuel"].as_u64().unwrap() >= 20_000_000,
        "the fuel burnt is counted: {fuel}"
    );
    let fraud = usage("fraud-features");
    assert!(fraud["calls"].as_u64().unwrap() >= 1, "{fraud}");
    assert!(
        fraud["fuel"].is_null(),
        "a model without a fuel limit counts none: {fraud}"
    );
}

#[test]
fn overload_is_503_with_retry_after_then_recovers() {
    // One instance, busy for 3 s; a second caller waits 50 ms at most, then is told to retry.
    let slow = std::thread::spawn(|| {
        json_call(
            "POST",
            "/v1/models/hostile-spin/predict",
            &json!({"ms": 3000}),
        )
    });
    server().wait_busy("hostile-spin");
    let (status, r) = send(
        "POST",
        "/v1/models/hostile-spin/predict",
        "application/json",
        br#"{"ms": 1}"#,
        &[],
    );
    assert_eq!(status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(r.into_string().unwrap().contains("overloaded"));
    assert_eq!(
        slow.join().unwrap().0,
        200,
        "the busy call itself completes"
    );
    let (status, answer) = json_call("POST", "/v1/models/hostile-spin/predict", &json!({"ms": 1}));
    assert_eq!(
        (status, answer["spun_ms"].as_u64()),
        (200, Some(1)),
        "recovered"
    );
}

#[test]
fn models_are_listed_with_states_and_self_test_results() {
    let (status, list) = get("/v1/models");
    assert_eq!(status, 200);
    let names: Vec<&str> = list["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"digits-onnx") && names.contains(&"echo"),
        "{names:?}"
    );
    let (_, digits) = get("/v1/models/digits-onnx");
    assert_eq!(digits["default_version"], "1");
    let v = &digits["versions"][0];
    assert_eq!(v["state"], "ready");
    assert_eq!(v["self_tests"]["failed"], 0);
    assert!(v["self_tests"]["passed"].as_u64().unwrap() >= 31, "{v}");
}

#[test]
fn metrics_have_per_model_series() {
    json_call(
        "POST",
        "/v1/models/fraud-features/predict",
        &example("fraud-features"),
    );
    json_call("POST", "/v1/models/hostile-trap/predict", &json!({}));
    let (status, r) = send("GET", "/metrics", "text/plain", b"", &[]);
    assert_eq!(status, 200);
    let text = r.into_string().unwrap();
    for needle in [
        r#"ferry_requests_total{model="fraud-features",version="1",route="predict",status="200"}"#,
        r#"ferry_request_duration_seconds_bucket{model="fraud-features",version="1",route="predict""#,
        r#"ferry_queue_wait_seconds_bucket{model="fraud-features",version="1""#,
        r#"ferry_instances{model="digits-onnx",version="1",state="idle"}"#,
        r#"ferry_guest_errors_total{model="hostile-trap",version="1",kind="trap"}"#,
        r#"ferry_model_load_seconds{model="digits-onnx",version="1"}"#,
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
}

#[test]
fn a_third_party_oip_client_and_a_prometheus_parser_agree() {
    let held_out = workspace().join("sample-models/digits-onnx/held-out.json");
    let (ok, text) = ferry_tests::python_check(
        "oip_client_check.py",
        &[
            server().base.trim_start_matches("http://").as_ref(),
            held_out.as_os_str(),
        ],
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("tritonclient JSON: 10/10") || text.contains("tritonclient JSON: 9/10"),
        "{text}"
    );
    assert!(text.contains("binary and JSON agree"), "{text}");
    assert!(
        text.contains(
            "kserve InferenceRESTClient: live, ready, model ready; JSON and binary agree"
        ),
        "{text}"
    );
    assert!(text.contains("prometheus parser: ok"), "{text}");
    assert!(
        text.contains("tritonclient config and statistics: ok"),
        "{text}"
    );
}

#[test]
fn what_a_new_oip_user_tries_answers() {
    // The OIP REST specification writes the server-metadata path with a trailing slash.
    let (status, meta) = get("/v2/");
    assert_eq!((status, meta["name"].as_str()), (200, Some("ferry")));
    // Triton's clients call the configuration and statistics extensions.
    let (status, config) = get("/v2/models/digits-onnx/config");
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["name"], "digits-onnx");
    assert_eq!(config["input"][0]["data_type"], "TYPE_FP32");
    assert_eq!(get("/v2/models/digits-onnx/versions/1/config").0, 200);
    let (status, _) = json_call(
        "POST",
        "/v2/models/digits-onnx/infer",
        &example("digits-onnx"),
    );
    assert_eq!(status, 200);
    let (status, stats) = get("/v2/models/digits-onnx/stats");
    assert_eq!(status, 200, "{stats}");
    let model = &stats["model_stats"][0];
    assert_eq!(
        (model["name"].as_str(), model["version"].as_str()),
        (Some("digits-onnx"), Some("1"))
    );
    assert!(model["inference_count"].as_u64().unwrap() >= 1, "{stats}");
    assert!(
        model["inference_stats"]["success"]["count"]
            .as_u64()
            .unwrap()
            >= 1
    );
    assert!(model["last_inference"].as_u64().unwrap() > 0);
    assert_eq!(get("/v2/models/nope/stats").0, 404);
    let (status, all) = get("/v2/models/stats");
    assert_eq!(status, 200);
    assert!(all["model_stats"].as_array().unwrap().len() >= 3, "{all}");
    // Data of the wrong kind is named as such, not counted as one element.
    let (status, body) = json_call(
        "POST",
        "/v2/models/digits-onnx/infer",
        &json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": "x"}]}),
    );
    assert_eq!(status, 400);
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("must be an array of FP32") && error.contains("not a string"),
        "{error}"
    );
    // A shape whose element count would wrap is refused, on the binary route too.
    let header = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [4294967296u64, 4294967296u64],
        "parameters": {"binary_data_size": 4}}]})
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&1.0f32.to_le_bytes());
    let length = header.len().to_string();
    let (status, r) = send(
        "POST",
        "/v2/models/digits-onnx/infer",
        "application/octet-stream",
        &body,
        &[("inference-header-content-length", &length)],
    );
    let text = r.into_string().unwrap();
    assert!(
        status == 400 && text.contains("needs more elements than 4 bytes"),
        "{status} {text}"
    );
    // Metering: the digits calls above cost CPU time, counted per version.
    let (_, d) = get("/v1/models/digits-onnx");
    let usage = &d["versions"][0]["usage"];
    assert!(
        usage["calls"].as_u64().unwrap() >= 1 && usage["cpu_seconds"].as_f64().unwrap() > 0.0,
        "{usage}"
    );
}
