//! The server's own life: readiness waits for the store, a failed version does not stop the others,
//! and SIGTERM drains in-flight requests before the process exits.

use std::time::{Duration, Instant};

use ferry_tests::server::{Seed, Server};
use serde_json::json;

const CONFIG: &str = "[host]\nrequire_self_tests = false\n[models.slow]\ndeadline_ms = 10000\n";

#[test]
fn sigterm_drains_in_flight_requests_then_exits_cleanly() {
    let server = Server::start(&[Seed::hostile("slow", json!({"attack": "spin"}))], CONFIG);
    let url = server.url("/v1/models/slow/predict");
    let in_flight = std::thread::spawn(move || {
        let started = Instant::now();
        let answer = ureq::post(&url)
            .send_json(json!({"ms": 1200}))
            .map(|r| r.into_json::<serde_json::Value>().unwrap());
        (answer, started.elapsed())
    });
    server.wait_busy("slow");
    assert!(
        server.terminate(),
        "ferry serve exits with status 0 after draining"
    );
    let (answer, took) = in_flight.join().unwrap();
    assert_eq!(
        answer.expect("the in-flight request completes")["spun_ms"],
        1200
    );
    assert!(took >= Duration::from_millis(1200));
}

#[test]
fn a_version_that_fails_its_self_tests_is_listed_as_failed_and_the_rest_serve() {
    // diabetes-gbdt with digits' tests file: every case fails (wrong input name), so it must not serve.
    let mut broken = Seed::sample("diabetes-gbdt", "1");
    broken.tests = Some(ferry_tests::workspace().join("target/models/digits-onnx.tests.json"));
    let server = Server::start(&[broken, Seed::sample("fraud-features", "1")], "[host]\n");
    let described: serde_json::Value = ureq::get(&server.url("/v1/models/diabetes-gbdt"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    let version = &described["versions"][0];
    assert_eq!(version["state"], "failed", "{described}");
    assert!(
        version["reason"].as_str().unwrap().contains("self-tests"),
        "{described}"
    );
    match ureq::post(&server.url("/v2/models/diabetes-gbdt/infer")).send_json(json!({"inputs": []}))
    {
        Err(ureq::Error::Status(503, r)) => {
            assert!(r.into_string().unwrap().contains("no ready version"))
        }
        other => panic!("expected 503, got {other:?}"),
    }
    let fraud = ureq::post(&server.url("/v1/models/fraud-features/predict")).send_string(
        &std::fs::read_to_string(
            ferry_tests::workspace().join("sample-models/fraud-features/example-request.json"),
        )
        .unwrap(),
    );
    assert_eq!(fraud.unwrap().status(), 200);
}
