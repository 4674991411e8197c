//! Traces over real HTTP: a W3C `traceparent` is continued in the answer (same trace id and flags,
//! the server's own span id), and `ferry-timing: true` gets a `Server-Timing` header with each stage
//! the request went through — route, queue, instance and guest for a feature-style predict; graph and
//! encode too for an OIP infer of a model that runs a host-side graph. A request without either gets
//! neither header.

use ferry_tests::server::{Seed, Server};
use ferry_tests::workspace;
use serde_json::json;

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// fraud-features' example request, as its author ships it.
fn fraud_request() -> String {
    std::fs::read_to_string(workspace().join("sample-models/fraud-features/example-request.json"))
        .unwrap()
}

/// `Server-Timing`'s stages and their durations (ms).
fn stages(header: &str) -> Vec<(String, f64)> {
    header
        .split(',')
        .map(|part| {
            let (name, dur) = part.trim().split_once(";dur=").unwrap();
            (name.to_owned(), dur.parse().unwrap())
        })
        .collect()
}

#[test]
fn a_traceparent_is_continued_and_server_timing_names_each_stage() {
    let server = Server::start(
        &[
            Seed::sample("fraud-features", "1"),
            Seed::sample("digits-graph", "1"),
        ],
        "",
    );
    let fraud = fraud_request();
    let predict = || {
        ureq::post(&server.url("/v1/models/fraud-features/predict"))
            .set("content-type", "application/json")
    };

    // Neither asked: neither given.
    let plain = predict().send_string(&fraud).unwrap();
    assert!(plain.header("traceparent").is_none());
    assert!(plain.header("server-timing").is_none());

    // A trace continued: same trace id and flags, a span of the server's own.
    let traced = predict()
        .set("traceparent", PARENT)
        .send_string(&fraud)
        .unwrap();
    let continued = traced.header("traceparent").expect("traceparent answered");
    let fields: Vec<&str> = continued.split('-').collect();
    assert_eq!(fields.len(), 4, "{continued}");
    assert_eq!(fields[0], "00");
    assert_eq!(fields[1], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(fields[2].len(), 16);
    assert_ne!(
        fields[2], "00f067aa0ba902b7",
        "the server's span, not the caller's"
    );
    assert_eq!(fields[3], "01");
    // A malformed one is ignored, as the spec says, and the request served.
    let bad = predict()
        .set("traceparent", "00-not-a-trace-01")
        .send_string(&fraud)
        .unwrap();
    assert!(bad.header("traceparent").is_none());

    // Stages, feature-style.
    let timed = predict()
        .set("ferry-timing", "true")
        .send_string(&fraud)
        .unwrap();
    let timing = stages(
        timed
            .header("server-timing")
            .expect("server-timing answered"),
    );
    let names: Vec<&str> = timing.iter().map(|(n, _)| n.as_str()).collect();
    for stage in ["route", "instance", "guest", "total"] {
        assert!(names.contains(&stage), "{stage} missing from {timing:?}");
    }
    let total = timing.last().unwrap().1;
    let parts: f64 = timing[..timing.len() - 1].iter().map(|(_, d)| d).sum();
    assert!(
        parts <= total + 0.01,
        "the stages ({parts} ms) fit in the total ({total} ms): {timing:?}"
    );

    // Stages of a graph model over the OIP: the graph's run and the answer's encoding too.
    let image: Vec<f64> = (0..64).map(|i| f64::from(i % 17)).collect();
    let timed = ureq::post(&server.url("/v2/models/digits-graph/infer"))
        .set("ferry-timing", "1")
        .send_json(json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": image}]}))
        .unwrap();
    let timing = stages(timed.header("server-timing").unwrap());
    let names: Vec<&str> = timing.iter().map(|(n, _)| n.as_str()).collect();
    for stage in ["route", "instance", "guest", "graph", "encode", "total"] {
        assert!(names.contains(&stage), "{stage} missing from {timing:?}");
    }
    let of = |name: &str| timing.iter().find(|(n, _)| n == name).unwrap().1;
    assert!(
        of("graph") <= of("guest"),
        "the graph runs inside the guest call: {timing:?}"
    );
    println!(
        "digits-graph infer, Server-Timing: {}",
        timed.header("server-timing").unwrap()
    );
}

/// With `ferry::timing` at debug level every request's stages are logged with its trace id, whether
/// or not the caller asked for `Server-Timing`.
#[test]
fn the_timing_log_names_each_requests_stages_and_trace() {
    let server = Server::start_with_env(
        &[Seed::sample("fraud-features", "1")],
        "",
        &[("FERRY_LOG", "ferry=info,ferry::timing=debug,warn")],
    );
    let fraud = fraud_request();
    let answer = ureq::post(&server.url("/v1/models/fraud-features/predict"))
        .set("content-type", "application/json")
        .set("traceparent", PARENT)
        .send_string(&fraud)
        .unwrap();
    assert!(
        answer.header("server-timing").is_none(),
        "the header is the caller's to ask for; the log is the operator's"
    );
    // The line is written as the answer goes: give the log a moment.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let line = loop {
        let log = server.log();
        if let Some(line) = log.lines().find(|l| {
            l.contains("request stages (ms)") && l.contains("/v1/models/fraud-features/predict")
        }) {
            break without_colours(line);
        }
        assert!(
            std::time::Instant::now() < until,
            "no timing line in:\n{log}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    for part in [
        "ferry::timing",
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "status=200",
        "route;dur=",
        "instance;dur=",
        "guest;dur=",
        "total;dur=",
    ] {
        assert!(
            line.contains(part),
            "`{part}` missing from the timing line: {line}"
        );
    }
}

/// With `OTEL_EXPORTER_OTLP_ENDPOINT` set, each request's span goes over OTLP/gRPC to a receiver of
/// the OpenTelemetry project's own service definition (tests/python/otlp_receiver.py): named by its
/// route's pattern, the caller's trace continued with the caller's span as parent, the answer's
/// `traceparent` naming the exported span, the stages as attributes; a request with no
/// `traceparent` starts a trace of its own; a caller's unsampled trace and a probe are not exported.
/// Batches are held for a minute here, so every span arrives only because a graceful stop sends the
/// queue.
#[test]
fn spans_are_exported_over_otlp_when_the_endpoint_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("spans.jsonl");
    let mut receiver = std::process::Command::new(workspace().join("target/py/bin/python"))
        .arg(workspace().join("tests/python/otlp_receiver.py"))
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = receiver.stdout.take().unwrap();
    // Killed however the test ends.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _receiver = Kill(receiver);
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut first).unwrap();
    let port = first
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("the receiver says {first:?}"))
        .trim()
        .to_owned();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut server = Server::start_with_env(
        &[Seed::sample("fraud-features", "1")],
        "",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            // Nothing leaves before the stop: the stop must send the queue.
            ("OTEL_BSP_SCHEDULE_DELAY", "60000"),
        ],
    );
    let fraud = fraud_request();
    let predict = || {
        ureq::post(&server.url("/v1/models/fraud-features/predict"))
            .set("content-type", "application/json")
    };
    let traced = predict()
        .set("traceparent", PARENT)
        .send_string(&fraud)
        .unwrap();
    let continued = traced.header("traceparent").unwrap().to_owned();
    let untraced = predict().send_string(&fraud).unwrap();
    assert!(untraced.header("traceparent").is_none());
    // The caller does not sample its trace: nothing is exported, and the answer says so.
    let unsampled = predict()
        .set(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
        )
        .send_string(&fraud)
        .unwrap();
    let unsampled = unsampled.header("traceparent").unwrap().to_owned();
    assert!(
        unsampled.starts_with("00-0af7651916cd43dd8448eb211c80319c-") && unsampled.ends_with("-00"),
        "{unsampled}"
    );
    assert!(
        !unsampled.contains("b7ad6b7169203331"),
        "a span of the server's own: {unsampled}"
    );
    // A readiness probe is not traced unless its caller traces it.
    ureq::get(&server.url("/v2/health/ready")).call().unwrap();

    assert!(server.stop(), "a clean stop:\n{}", server.log());
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    // Whole lines only (the receiver writes each export at once).
    let spans: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let named = |name: &str| spans.iter().filter(|s| s["name"] == name).count();
    assert_eq!(
        named("POST /v1/models/{model}/predict"),
        2,
        "the traced and the untraced request, named by their route: {spans:?}\nserver log:\n{}",
        server.log()
    );
    assert_eq!(spans.len(), 2, "nothing else: {spans:?}");
    let ours = spans
        .iter()
        .find(|s| s["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736")
        .unwrap_or_else(|| panic!("no span of the caller's trace in {spans:?}"));
    assert_eq!(ours["parent_span_id"], "00f067aa0ba902b7", "{ours}");
    assert_eq!(ours["service"], "ferry");
    assert_eq!(ours["kind"], 2, "a server span: {ours}");
    assert_eq!(
        continued,
        format!(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01",
            ours["span_id"].as_str().unwrap()
        ),
        "the answer's traceparent names the exported span"
    );
    let attributes = &ours["attributes"];
    assert_eq!(attributes["http.response.status_code"], 200, "{ours}");
    assert_eq!(attributes["http.request.method"], "POST");
    assert_eq!(attributes["url.path"], "/v1/models/fraud-features/predict");
    for stage in ["route", "instance", "guest"] {
        let ms = attributes[format!("ferry.stage.{stage}_ms")].as_f64();
        assert!(ms.is_some_and(|ms| ms > 0.0), "{stage}: {ours}");
    }
    assert!(
        ours["end_ns"].as_u64() > ours["start_ns"].as_u64(),
        "{ours}"
    );
    let other = spans
        .iter()
        .find(|s| s["trace_id"] != "4bf92f3577b34da6a3ce929d0e0e4736")
        .unwrap();
    assert_eq!(other["parent_span_id"], "", "a root span: {other}");
}

/// A log line without its terminal colours (ESC [ … m).
fn without_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
