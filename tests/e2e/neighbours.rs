//! One team's broken model and another's: the circuit breaker (a version failing by its own fault is
//! tripped, fails fast with a 503 that says why, is probed one call at a time and recovers, all of it
//! in `GET /v1/models/{m}` and `/metrics`) and CPU shares (a model past its share runs on idle
//! capacity only; starved by a busy host, its call is refused with a 503, not charged to the model).
//! What they do for a healthy neighbour's latency is measured by `benches/neighbours.sh`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ferry_tests::server::{Seed, Server};
use serde_json::{json, Value};

const CONFIG: &str = r#"
[host]
require_self_tests = false   # the hostile test models ship none

[breaker]
after = 3
cool_down_ms = 400
max_cool_down_ms = 800

[models.flaky]
cpu_share = 1.0        # never lowered: this file's other test keeps every core busy for a while
deadline_ms = 100
min_instances = 1
max_instances = 1

[models.hog]
cpu_share = 0.01
deadline_ms = 1000
min_instances = 1
max_instances = 1

[models.busy]
cpu_share = 1.0        # within its share however much it runs
deadline_ms = 10000
max_instances = 4
"#;

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        Server::start(
            &[
                Seed::hostile("echo", json!({})),
                Seed::hostile("flaky", json!({"attack": "spin"})),
                Seed::hostile("hog", json!({"attack": "work"})),
                Seed::hostile("busy", json!({"attack": "work"})),
            ],
            CONFIG,
        )
    })
}

/// (status, Retry-After, body)
fn predict(model: &str, body: Value) -> (u16, Option<String>, Value) {
    let result = ureq::post(&server().url(&format!("/v1/models/{model}/predict")))
        .set("content-type", "application/json")
        .send_string(&body.to_string());
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{model}: {e}"),
    };
    let status = response.status();
    let retry_after = response.header("retry-after").map(str::to_owned);
    let text = response.into_string().unwrap();
    (
        status,
        retry_after,
        serde_json::from_str(&text).unwrap_or(json!(text)),
    )
}

fn describe(model: &str) -> Value {
    ureq::get(&server().url(&format!("/v1/models/{model}")))
        .call()
        .unwrap()
        .into_json()
        .unwrap()
}

fn breaker(model: &str) -> Value {
    describe(model)["versions"][0]["breaker"].clone()
}

fn metrics() -> String {
    ureq::get(&server().url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap()
}

fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The two tests take turns: one of them keeps every core busy, which would starve the other's calls.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

fn assert_echo_answers() {
    let (status, _, body) = predict("echo", json!({"x": 1}));
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_failing_version_is_tripped_probed_and_recovers() {
    let _turn = one_at_a_time();
    let late = json!({"ms": 400}); // past flaky's 100 ms deadline
    let quick = json!({"ms": 1});
    for _ in 0..3 {
        let (status, _, body) = predict("flaky", late.clone());
        assert_eq!(status, 504, "{body}");
    }
    // Tripped: fails fast, says why and when to come back, costs the guest nothing.
    let (status, retry_after, body) = predict("flaky", quick.clone());
    assert_eq!(status, 503, "{body}");
    let message = body["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        message.contains("tripped") && message.contains("failed its last 3 calls"),
        "{body}"
    );
    assert!(message.contains("deadline exceeded"), "{body}");
    assert!(
        retry_after.is_some(),
        "a tripped version's 503 carries Retry-After"
    );
    let state = breaker("flaky");
    assert_eq!(state["state"], "open", "{state}");
    assert_eq!(state["trips"], 1, "{state}");
    assert!(
        state["reason"].as_str().unwrap().contains("flaky@1"),
        "{state}"
    );
    assert_echo_answers();

    // After the cool-down one probe goes through; it fails, so the breaker opens for twice as long.
    std::thread::sleep(Duration::from_millis(450));
    let (status, _, body) = predict("flaky", late.clone());
    assert_eq!(status, 504, "the probe reached the guest: {body}");
    let (status, _, body) = predict("flaky", quick.clone());
    assert_eq!(status, 503, "open again after the failed probe: {body}");
    let state = breaker("flaky");
    assert_eq!(state["probes_failed"], 1, "{state}");
    assert!(
        state["retry_in_ms"].as_u64().unwrap() > 400,
        "doubled: {state}"
    );

    // The next probe answers: the version serves again.
    std::thread::sleep(Duration::from_millis(850));
    let (status, _, body) = predict("flaky", quick.clone());
    assert_eq!(status, 200, "the probe answered: {body}");
    let (status, _, _) = predict("flaky", quick);
    assert_eq!(status, 200);
    let state = breaker("flaky");
    assert_eq!(state["state"], "closed", "{state}");
    assert_eq!(state["recoveries"], 1, "{state}");
    assert!(state["rejected"].as_u64().unwrap() >= 2, "{state}");

    let text = metrics();
    let flaky = "model=\"flaky\"";
    assert_eq!(
        metric(
            &text,
            "ferry_breaker_trips_total",
            &[flaky, "kind=\"deadline\""]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "ferry_breaker_probes_total",
            &[flaky, "outcome=\"failed\""]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "ferry_breaker_probes_total",
            &[flaky, "outcome=\"recovered\""]
        ),
        1.0
    );
    assert!(metric(&text, "ferry_breaker_rejected_total", &[flaky]) >= 2.0);
    assert!(
        metric(&text, "ferry_requests_total", &[flaky, "status=\"503\""]) >= 2.0,
        "fast failures are counted as requests too"
    );
}

#[test]
fn a_model_over_its_cpu_share_borrows_idle_cores_and_is_refused_when_starved() {
    let _turn = one_at_a_time();
    // A few tens of milliseconds of arithmetic: far past a 1 % share's 2 ms burst.
    let work = json!({"iterations": 30_000_000u64});
    for _ in 0..3 {
        let (status, _, body) = predict("hog", work.clone());
        assert_eq!(status, 200, "an idle host lends its cores: {body}");
    }
    let share = describe("hog")["cpu_share"].clone();
    assert_eq!(share["share"], 0.01, "{share}");
    assert!(share["over_share"].as_bool().unwrap(), "{share}");
    assert_eq!(
        share["calls_lowered"], 0,
        "with no other model running, a model past its share keeps the cores: {share}"
    );
    // Lowering a thread to the idle class needs no privilege on Linux: a host where it is refused
    // (a seccomp profile) does not hold shares, and this test says so rather than passing.
    assert_eq!(
        share["enforced"], true,
        "the idle scheduling class is refused here: {share}"
    );

    // A model within its share keeps every core busy (callers on one thread more than the host has
    // cores): the hog, over its share, gets next to none of them and is refused at its deadline as
    // starved, while the echo model, within its share, still answers.
    let stop = Arc::new(AtomicBool::new(false));
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let callers: Vec<_> = (0..(cores + 1).min(4))
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut answered = 0;
                while !stop.load(Ordering::Relaxed) {
                    // About a quarter of a second each.
                    let (status, _, body) = predict("busy", json!({"iterations": 200_000_000u64}));
                    assert_eq!(status, 200, "the model within its share: {body}");
                    answered += 1;
                }
                answered
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let hungry = json!({"iterations": 3_000_000_000u64}); // seconds of work
    let (status, retry_after, body) = predict("hog", hungry);
    assert_echo_answers();
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        assert!(c.join().unwrap() >= 1);
    }
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("over its CPU share"),
        "{body}"
    );
    assert!(retry_after.is_some(), "{body}");
    let share = describe("hog")["cpu_share"].clone();
    assert!(share["calls_starved"].as_u64().unwrap() >= 1, "{share}");
    assert_eq!(
        breaker("hog")["state"],
        "closed",
        "a starved call is the host's doing, not the model's"
    );
    let text = metrics();
    assert!(metric(&text, "ferry_cpu_share_starved_total", &["model=\"hog\""]) >= 1.0);
    assert!(
        metric(
            &text,
            "ferry_cpu_share_lowered_calls_total",
            &["model=\"hog\""]
        ) >= 1.0
    );
}
