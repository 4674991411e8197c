//! The host holds against its callers and its fast guests: models that print or sleep on the inline
//! path, callers that hang up while queued, huge bodies, stalled connections. One real server.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ferry_tests::server::{Seed, Server};
use serde_json::{json, Value};

const CONFIG: &str = r#"
[host]
require_self_tests = false   # the hostile test models ship none

[http]
header_timeout_ms = 2000     # stalled and idle connections go within seconds here
body_grace_ms = 1000
body_min_bytes_per_s = 1000
max_request_bytes_in_flight = 268435456

[models.chatty]
deadline_ms = 300

[models.slow-spin]
min_instances = 1
max_instances = 1
queue_timeout_ms = 20000
deadline_ms = 10000

[models.full-spin]
min_instances = 1
max_instances = 1
queue_timeout_ms = 20000
max_queue = 1
deadline_ms = 10000

# Gives way by wall-clock time, not by CPU share: never starved while other tests load the cores.
[models.worker]
cpu_share = 1.0
deadline_ms = 10000

[models.hostile-spin]
min_instances = 1
max_instances = 1
queue_timeout_ms = 20000
max_queue = 4
deadline_ms = 10000
"#;

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        // Code of its own: versions arriving later compile while others answer.
        Server::start_alone(
            &[
                Seed::hostile("chatty", json!({"attack": "chatty"})),
                Seed::hostile("hostile-spin", json!({"attack": "spin"})),
                Seed::hostile("slow-spin", json!({"attack": "spin"})),
                Seed::hostile("full-spin", json!({"attack": "spin"})),
                Seed::hostile("worker", json!({"attack": "work"})),
                Seed::sample("fraud-features", "1"),
            ],
            CONFIG,
            &[],
        )
    })
}

fn predict(agent: &ureq::Agent, model: &str, body: &Value) -> (u16, String) {
    let url = server().url(&format!("/v1/models/{model}/predict"));
    ferry_tests::http::status_of(agent.post(&url).send_string(&body.to_string()))
}

#[test]
fn a_fast_model_that_prints_or_sleeps_answers_on_every_path() {
    let agent = ureq::agent();
    // Enough quick calls that the version's typical call runs inline on an async worker.
    for i in 0..300 {
        let (status, body) = predict(&agent, "chatty", &json!({"n": i}));
        assert_eq!(status, 200, "{body}");
    }
    for _ in 0..3 {
        let (status, body) = predict(&agent, "chatty", &json!({"debug": true}));
        assert_eq!(status, 200, "a model that prints: {body}");
        let (status, body) = predict(&agent, "chatty", &json!({"n": 1}));
        assert_eq!(
            status, 200,
            "the call after it, on the same instance: {body}"
        );
        let (status, body) = predict(&agent, "chatty", &json!({"sleep_ms": 0}));
        assert_eq!(status, 200, "a zero sleep: {body}");
        let (status, body) = predict(&agent, "chatty", &json!({"sleep_ms": 20}));
        assert_eq!(status, 200, "a short sleep: {body}");
    }
    // A sleep past the deadline is interrupted at the deadline, not after the sleep.
    let started = Instant::now();
    let (status, body) = predict(&agent, "chatty", &json!({"sleep_ms": 30_000}));
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("deadline"), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let (status, body) = predict(&agent, "chatty", &json!({"debug": true}));
    assert_eq!(status, 200, "{body}");
    let log = server().log();
    assert!(
        log.contains("chatty: debug request"),
        "the guest's line is in the host log"
    );
    assert!(!log.contains("panicked"), "no host thread panicked:\n{log}");
}

/// Sends a predict request on a raw connection and hangs up after `after`, unanswered.
#[test]
fn a_short_model_turned_slow_gives_way_and_still_answers() {
    let agent = ureq::agent();
    let gave_way = || {
        let metrics = ureq::get(&server().url("/metrics"))
            .call()
            .unwrap()
            .into_string()
            .unwrap();
        metrics
            .lines()
            .find(|l| {
                l.starts_with("ferry_calls_gave_way_total{") && l.contains("model=\"worker\"")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Quick calls: the version's typical call is microseconds, so its calls start on async workers.
    // Giving way is measured in wall-clock time, so on a loaded machine a quick call preempted past
    // the worker's limit gives way too (correctly: it answers from its own thread). So the rounds
    // go on until one runs with none, which leaves the typical call short again.
    let mut quiet = false;
    for _ in 0..5 {
        let before = gave_way();
        for _ in 0..200 {
            let (status, body) = predict(&agent, "worker", &json!({"iterations": 1000}));
            assert_eq!(status, 200, "{body}");
        }
        if gave_way() == before {
            quiet = true;
            break;
        }
    }
    assert!(quiet, "quick calls kept giving way in five rounds of 200");
    let before = gave_way();
    // Then one input that takes far longer than a worker may be held (~50 ms of arithmetic): it is
    // stopped on the worker, run again on a thread of its own, and answers in full.
    let (status, body) = predict(&agent, "worker", &json!({"iterations": 50_000_000u64}));
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["iterations"], 50_000_000u64, "{body}");
    assert_eq!(gave_way(), before + 1);
    // The version's next slow call starts off the worker: nothing more gives way.
    let (status, body) = predict(&agent, "worker", &json!({"iterations": 50_000_000u64}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(gave_way(), before + 1);
}

fn hang_up_after(path: &str, body: &str, after: Duration) {
    let mut stream = TcpStream::connect(server().url("").trim_start_matches("http://")).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    std::thread::sleep(after);
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

#[test]
fn callers_that_hang_up_while_queued_give_their_places_back() {
    let long = std::thread::spawn(|| {
        let agent = ureq::agent();
        predict(&agent, "hostile-spin", &json!({"ms": 2500}))
    });
    server().wait_busy("hostile-spin");
    // Twice the queue's length of callers that give up while queued.
    for _ in 0..8 {
        hang_up_after(
            "/v1/models/hostile-spin/predict",
            r#"{"ms": 1}"#,
            Duration::from_millis(30),
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    // Callers who wait are queued behind the long call and answered, not refused at once.
    let waiting: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(|| {
                let agent = ureq::agent();
                predict(&agent, "hostile-spin", &json!({"ms": 1}))
            })
        })
        .collect();
    for w in waiting {
        let (status, body) = w.join().unwrap();
        assert_eq!(status, 200, "a queued caller: {body}");
    }
    assert_eq!(long.join().unwrap().0, 200);
}

/// How a client behaves on a connection it leaves idle.
#[derive(Clone, Copy, PartialEq)]
enum Idler {
    /// Acknowledges the server's PINGs, as every HTTP/2 library does.
    Polite,
    /// Sends nothing after its SETTINGS acknowledgement.
    Silent,
    /// Acknowledges nothing, but sends a PING of its own every 250 ms.
    Chatty,
}

/// What an HTTP/2 client saw of a connection it left idle: the frame types the server sent, in order,
/// and how long after the preface the server closed it (None: still open after `within`).
fn idle_http2_connection(
    address: &str,
    idler: Idler,
    within: Duration,
) -> (Vec<u8>, Option<Duration>) {
    const PING: u8 = 6;
    const SETTINGS: u8 = 4;
    let mut s = TcpStream::connect(address).unwrap();
    let started = Instant::now();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .unwrap();
    let wait = if idler == Idler::Chatty {
        Duration::from_millis(250)
    } else {
        within
    };
    s.set_read_timeout(Some(wait)).unwrap();
    let (mut pending, mut frames) = (Vec::new(), Vec::new());
    let mut buf = [0u8; 4096];
    loop {
        if started.elapsed() > within {
            return (frames, None);
        }
        let n = match s.read(&mut buf) {
            Ok(0) => return (frames, Some(started.elapsed())),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (frames, Some(started.elapsed()))
            }
            Err(e)
                if idler == Idler::Chatty
                    && matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
            {
                match s.write_all(&[0, 0, 8, PING, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]) {
                    Ok(()) => continue,
                    Err(_) => return (frames, Some(started.elapsed())),
                }
            }
            Err(_) => return (frames, None),
        };
        pending.extend_from_slice(&buf[..n]);
        // Whole frames: a 9-byte header (length 24 bits, type, flags, stream), then the payload.
        while pending.len() >= 9 {
            let length = u32::from_be_bytes([0, pending[0], pending[1], pending[2]]) as usize;
            if pending.len() < 9 + length {
                break;
            }
            let (kind, flags) = (pending[3], pending[4]);
            let payload = pending[9..9 + length].to_vec();
            pending.drain(..9 + length);
            frames.push(kind);
            let ack = flags & 1 == 1;
            if kind == SETTINGS && !ack {
                s.write_all(&[0, 0, 0, SETTINGS, 1, 0, 0, 0, 0]).unwrap();
            }
            if kind == PING && !ack && idler == Idler::Polite {
                let mut pong = vec![0, 0, 8, PING, 1, 0, 0, 0, 0];
                pong.extend_from_slice(&payload);
                s.write_all(&pong).unwrap();
            }
        }
    }
}

#[test]
fn an_idle_http2_connection_is_sent_goaway_before_it_closes() {
    const GOAWAY: u8 = 7;
    let address = server().url("").trim_start_matches("http://").to_owned();
    // A client that answers the GOAWAY's PING, one that answers nothing, and one that answers
    // nothing but keeps sending PINGs of its own: all are told, all are closed; the silent one after
    // a short grace, the chatty one after another idle limit.
    let others: Vec<_> = [Idler::Silent, Idler::Chatty]
        .into_iter()
        .map(|idler| {
            let address = address.clone();
            std::thread::spawn(move || {
                idle_http2_connection(&address, idler, Duration::from_secs(30))
            })
        })
        .collect();
    let polite = idle_http2_connection(&address, Idler::Polite, Duration::from_secs(30));
    let mut seen = vec![("polite", polite)];
    for (who, other) in ["silent", "chatty"].into_iter().zip(others) {
        seen.push((who, other.join().unwrap()));
    }
    for (who, (frames, closed)) in seen {
        let closed = closed.unwrap_or_else(|| panic!("{who}: still open after 30 s ({frames:?})"));
        assert!(
            frames.contains(&GOAWAY),
            "{who}: closed after {closed:?} without a GOAWAY: frames {frames:?}"
        );
        // Not before the idle limit (the header timeout, 2 s here); within it and the grace after.
        assert!(
            closed >= Duration::from_millis(1500) && closed < Duration::from_secs(15),
            "{who}: closed after {closed:?}"
        );
    }
}

/// Reads whatever the server sends until it closes or `within` passes; the text and whether it closed.
fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    let started = Instant::now();
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&all).into_owned(), true),
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (String::from_utf8_lossy(&all).into_owned(), true)
            }
            Err(_) => return (String::from_utf8_lossy(&all).into_owned(), false),
        }
        if started.elapsed() > within {
            return (String::from_utf8_lossy(&all).into_owned(), false);
        }
    }
}

/// The server's resident memory: now, and at its peak since it started (kB).
fn rss_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Sends `body` to `path` on a raw connection (however much of it the server takes) and answers
/// the status line the server sent, if any.
fn send_raw(address: &str, path: &str, headers: &str, body: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    // The server may answer (404, 413) and close before taking it all.
    let _ = stream.write_all(body);
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(60));
    answer.lines().next().unwrap_or("").to_owned()
}

/// An OIP JSON body of about `mb` MB: one FP32 input of that many elements.
fn huge_infer_body(mb: usize) -> Vec<u8> {
    let n = (mb << 20) / 4;
    let mut body = br#"{"inputs":[{"name":"fp32","datatype":"FP32","shape":["#.to_vec();
    body.extend(n.to_string().as_bytes());
    body.extend(br#"],"data":["#);
    for i in 0..n {
        body.extend(if i == 0 { &b"0.5"[..] } else { &b",0.5"[..] });
    }
    body.extend(b"]}]}");
    body
}

#[test]
fn huge_bodies_cost_bounded_memory_and_unknown_models_cost_nothing() {
    // A server of its own: this test fills the budget of bytes in flight on purpose, which the
    // other tests' requests must not meet.
    let own = Server::start(&[Seed::hostile("echo", json!({}))], CONFIG);
    let address = own.url("").trim_start_matches("http://").to_owned();
    let pid = own.pid();
    let body = std::sync::Arc::new(huge_infer_body(32));
    let (_, peak_before) = rss_kb(pid);
    let senders: Vec<_> = (0..16)
        .map(|i| {
            let body = body.clone();
            let address = address.clone();
            std::thread::spawn(move || {
                let path = if i % 2 == 0 {
                    "/v2/models/echo/infer".to_owned()
                } else {
                    format!("/v2/models/no-such-model-{i}/infer")
                };
                (
                    i,
                    send_raw(&address, &path, "Content-Type: application/json\r\n", &body),
                )
            })
        })
        .collect();
    for sender in senders {
        let (i, status) = sender.join().unwrap();
        if i % 2 == 0 {
            // Too large for the model (413), or no room in the budget now (503): never read whole
            // into a tree.
            assert!(
                status.contains(" 413 ") || status.contains(" 503 "),
                "a huge body to a model: {status}"
            );
        } else {
            assert!(status.contains(" 404 "), "an unknown model: {status}");
        }
    }
    let (_, peak_after) = rss_kb(pid);
    let grown_mb = (peak_after.saturating_sub(peak_before)) / 1024;
    assert!(grown_mb < 400, "peak RSS grew by {grown_mb} MB");
    // And the host still answers.
    let (status, body) = ferry_tests::http::status_of(
        ureq::post(&own.url("/v1/models/echo/predict")).send_string(r#"{"n": 1}"#),
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_huge_management_body_is_refused_before_it_is_read() {
    let pid = server().pid();
    let (rss_before, _) = rss_kb(pid);
    let mut stream = TcpStream::connect(server().url("").trim_start_matches("http://")).unwrap();
    write!(
        stream,
        "PUT /v1/models/chatty/traffic HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        2u64 << 30
    )
    .unwrap();
    // Whatever the server takes of 64 MB of it.
    let chunk = vec![b' '; 1 << 20];
    for _ in 0..64 {
        if stream.write_all(&chunk).is_err() {
            break;
        }
    }
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(30));
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // The same body without a declared length is cut off at the management limit.
    let mut stream = TcpStream::connect(server().url("").trim_start_matches("http://")).unwrap();
    write!(
        stream,
        "PUT /v1/models/chatty/traffic HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    for _ in 0..64 {
        if write!(stream, "{:x}\r\n", chunk.len()).is_err()
            || stream.write_all(&chunk).is_err()
            || stream.write_all(b"\r\n").is_err()
        {
            break;
        }
    }
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(30));
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let (rss_after, _) = rss_kb(pid);
    let grown_mb = rss_after.saturating_sub(rss_before) / 1024;
    assert!(grown_mb < 64, "RSS grew by {grown_mb} MB");
}

#[test]
fn stalled_connections_are_closed_while_others_are_served() {
    let address = server().url("").trim_start_matches("http://").to_owned();
    // 400 connections: a third send nothing, a third half a request's headers, a third half of
    // HTTP/2's preface (while the protocol is unknown, no protocol's timer runs).
    let mut stalled: Vec<TcpStream> = (0..400)
        .map(|i| {
            let mut s = TcpStream::connect(&address).unwrap();
            match i % 3 {
                1 => s
                    .write_all(b"POST /v1/models/chatty/predict HTTP/1.1\r\nHost: x\r\nConte")
                    .unwrap(),
                2 => s.write_all(b"PRI * HTTP/2.0\r\n").unwrap(),
                _ => {}
            }
            s
        })
        .collect();
    let agent = ureq::agent();
    assert_eq!(
        predict(&agent, "chatty", &json!({"n": 1})).0,
        200,
        "served meanwhile"
    );
    let started = Instant::now();
    for s in stalled.iter_mut() {
        let (_, closed) = read_until_closed(s, Duration::from_secs(30));
        assert!(closed, "a stalled connection is closed by the server");
    }
    // The header timeout is 2 s here (20 s by default).
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    // A fresh connection: the agent's pooled one has been idle past the header timeout by now.
    assert_eq!(predict(&ureq::agent(), "chatty", &json!({"n": 2})).0, 200);
}

#[test]
fn a_body_that_trickles_is_cut_off() {
    let mut stream = TcpStream::connect(server().url("").trim_start_matches("http://")).unwrap();
    write!(
        stream,
        "POST /v1/models/chatty/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{"
    )
    .unwrap();
    let started = Instant::now();
    // A byte every 100 ms: 10 bytes a second against a minimum of 1000 after a 1 s grace.
    let trickle = {
        let mut s = stream.try_clone().unwrap();
        std::thread::spawn(move || {
            for _ in 0..100 {
                if s.write_all(b" ").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(30));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("slower than"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let _ = stream.shutdown(std::net::Shutdown::Both);
    trickle.join().unwrap();
}

#[test]
fn connections_past_the_cap_wait_and_a_stop_drains_within_its_deadline() {
    let config = r#"
[host]
require_self_tests = false
[http]
max_connections = 8
header_timeout_ms = 1500
drain_timeout_ms = 1000
[models.hostile-spin]
max_instances = 2
deadline_ms = 20000
"#;
    let mut capped = Server::start(
        &[Seed::hostile("hostile-spin", json!({"attack": "spin"}))],
        config,
    );
    let address = capped.url("").trim_start_matches("http://").to_owned();
    let idle: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(&address).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // The ninth waits in the backlog until the idle ones are closed (1.5 s), then is served.
    let started = Instant::now();
    let (status, body) = ferry_tests::http::status_of(
        ureq::post(&capped.url("/v1/models/hostile-spin/predict")).send_string(r#"{"ms": 1}"#),
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
    drop(idle);
    // A stop with a call in flight waits for it at most the drain deadline.
    let url = capped.url("/v1/models/hostile-spin/predict");
    let long = std::thread::spawn(move || {
        ferry_tests::http::status_of(ureq::post(&url).send_string(r#"{"ms": 15000}"#))
    });
    std::thread::sleep(Duration::from_millis(500));
    let stopping = Instant::now();
    assert!(capped.stop(), "the host stops cleanly");
    assert!(
        stopping.elapsed() < Duration::from_secs(8),
        "{:?}",
        stopping.elapsed()
    );
    let _ = long.join();
}

#[test]
fn a_ready_version_answers_while_others_compile_and_self_test() {
    let store = server().store();
    let calling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let caller = {
        let calling = calling.clone();
        std::thread::spawn(move || {
            let agent = ureq::agent();
            let request: Value = serde_json::from_str(
                &std::fs::read_to_string(
                    ferry_tests::workspace()
                        .join("sample-models/fraud-features/example-request.json"),
                )
                .unwrap(),
            )
            .unwrap();
            let (mut calls, mut failures, mut slowest) = (0, Vec::new(), Duration::ZERO);
            while calling.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                let (status, body) = predict(&agent, "fraud-features", &request);
                slowest = slowest.max(started.elapsed());
                calls += 1;
                if status != 200 {
                    failures.push(format!("{status} {body}"));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (calls, failures, slowest)
        })
    };
    // Two versions of other models arrive: compiled, initialised and self-tested meanwhile.
    ferry_tests::server::add(&store, &Seed::sample("digits-onnx", "7"));
    ferry_tests::server::add(&store, &Seed::sample("diabetes-gbdt", "7"));
    let started = Instant::now();
    let ready = |model: &str| {
        let url = server().url(&format!("/v2/models/{model}/versions/7/ready"));
        ureq::get(&url).call().is_ok()
    };
    while !(ready("digits-onnx") && ready("diabetes-gbdt")) {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the versions never loaded"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    calling.store(false, std::sync::atomic::Ordering::Relaxed);
    let (calls, failures, slowest) = caller.join().unwrap();
    assert!(calls > 10, "{calls} calls");
    assert!(
        failures.is_empty(),
        "{} of {calls} calls failed while others loaded: {failures:?}",
        failures.len()
    );
    eprintln!("{calls} calls while two versions loaded; slowest {slowest:?}");
}

#[test]
fn a_caller_that_hangs_up_mid_upload_leaves_no_staged_file() {
    // Mid-upload: 8 of a declared 64 MB, then gone.
    let mut stream = TcpStream::connect(server().url("").trim_start_matches("http://")).unwrap();
    write!(
        stream,
        "PUT /v1/models/chatty/versions/half HTTP/1.1\r\nHost: x\r\nContent-Type: application/wasm\r\nContent-Length: {}\r\n\r\n",
        64 << 20
    )
    .unwrap();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..8 {
        stream.write_all(&chunk).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    drop(stream);
    no_staged_files();
    let (status, _) =
        ferry_tests::http::status_of(ureq::get(&server().url("/v1/models/chatty")).call());
    assert_eq!(status, 200);
    assert!(
        !ureq::get(&server().url("/v1/models/chatty"))
            .call()
            .unwrap()
            .into_string()
            .unwrap()
            .contains("\"half\""),
        "no version from a broken upload"
    );
}

#[test]
fn a_caller_that_hangs_up_mid_call_gives_back_its_instance() {
    // The one instance runs a 1.5 s call whose caller is gone after 300 ms.
    let started = Instant::now();
    hang_up_after(
        "/v1/models/slow-spin/predict",
        r#"{"ms": 1500}"#,
        Duration::from_millis(300),
    );
    // The next caller gets that instance once the call ends: its turn, and the instance, came back.
    let agent = ureq::agent();
    for _ in 0..3 {
        let (status, body) = predict(&agent, "slow-spin", &json!({"ms": 1}));
        assert_eq!(status, 200, "{body}");
    }
    assert!(started.elapsed() < Duration::from_secs(15));
    let metrics = ureq::get(&server().url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        metrics.contains(r#"ferry_instances{model="slow-spin",version="1",state="busy"} 0"#),
        "no instance is left busy:\n{metrics}"
    );
    assert!(!server().log().contains("panicked"));
}

#[test]
fn a_full_queue_refuses_a_request_before_its_body_is_decoded() {
    let running = std::thread::spawn(|| predict(&ureq::agent(), "full-spin", &json!({"ms": 2000})));
    server().wait_busy("full-spin");
    let queued = std::thread::spawn(|| predict(&ureq::agent(), "full-spin", &json!({"ms": 1})));
    let started = Instant::now();
    while !ureq::get(&server().url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap()
        .contains(r#"ferry_queued_requests{model="full-spin",version="1"} 1"#)
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "nothing queued"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The queue (one place) is full: a body that would not even decode is refused for that, with
    // when to try again, before decoding is attempted.
    let url = server().url("/v2/models/full-spin/infer");
    let refused = ureq::post(&url)
        .set("Content-Type", "application/json")
        .send_string(r#"{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, "#);
    let Err(ureq::Error::Status(status, response)) = refused else {
        panic!("not refused: {refused:?}")
    };
    let retry_after = response.header("retry-after").map(str::to_owned);
    let body = response.into_string().unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("overloaded"), "{body}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(queued.join().unwrap().0, 200);
    assert_eq!(running.join().unwrap().0, 200);
    // With room again, the same body is what it is: a bad request.
    let (status, body) = ferry_tests::http::status_of(
        ureq::post(&url)
            .set("Content-Type", "application/json")
            .send_string(
                r#"{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, "#,
            ),
    );
    assert_eq!(status, 400, "{body}");
}

/// Sends an upload of `version` of model `committed` whole on a raw connection, waits `then`, and
/// hangs up without reading the answer.
fn upload_and_hang_up(version: &str, then: Duration) {
    let component =
        std::fs::read(ferry_tests::workspace().join("target/test-guests/hostile-guest.wasm"))
            .unwrap();
    let config = json!({"attack": "chatty"}).to_string();
    let (content_type, body) =
        ferry_tests::http::multipart(&[("component", &component), ("config", config.as_bytes())]);
    let mut stream = TcpStream::connect(server().url("").trim_start_matches("http://")).unwrap();
    write!(
        stream,
        "PUT /v1/models/committed/versions/{version} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(&body).unwrap();
    std::thread::sleep(then);
    drop(stream);
}

/// The state of `committed`'s `version`, once it has one other than loading (None: not listed).
fn settled_state(version: &str) -> Option<String> {
    let started = Instant::now();
    loop {
        let (status, text) =
            ferry_tests::http::status_of(ureq::get(&server().url("/v1/models/committed")).call());
        let listed: Option<Value> = (status == 200)
            .then(|| serde_json::from_str::<Value>(&text).unwrap())
            .and_then(|m| {
                m["versions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|v| v["version"] == version)
                    .cloned()
            });
        match listed {
            None => return None,
            Some(v) if v["state"] != "loading" => return Some(v["state"].to_string()),
            Some(_) => {}
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{version} kept loading"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn no_staged_files() {
    let uploads = server().cache().join("uploads");
    let started = Instant::now();
    loop {
        let left: Vec<_> = std::fs::read_dir(&uploads).unwrap().flatten().collect();
        if left.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "staged files left behind: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_caller_that_hangs_up_around_its_commit_leaves_a_whole_version_or_none() {
    // Gone the moment its last byte is sent: the host may drop the request (it sees the connection
    // close before it has read the body) or commit it; never half a version, never a staged file.
    upload_and_hang_up("early", Duration::ZERO);
    std::thread::sleep(Duration::from_millis(500));
    no_staged_files();
    match settled_state("early") {
        None => {}
        Some(state) => assert_eq!(state, "\"ready\"", "a version committed is whole"),
    }
    // Gone once the body is read (the commit under way or done): the commit runs to its end on its
    // own, and the version serves.
    upload_and_hang_up("late", Duration::from_millis(300));
    assert_eq!(settled_state("late").as_deref(), Some("\"ready\""));
    no_staged_files();
    let (status, body) = ferry_tests::http::status_of(
        ureq::post(&server().url("/v1/models/committed/versions/late/predict"))
            .send_string(r#"{"n": 1}"#),
    );
    assert_eq!(status, 200, "{body}");
}

/// The host's request time limit holds on the inference routes (their `route_layer`): a
/// request still waiting for its turn when its time is up is answered 503 with `Retry-After`, long
/// before the model's queue timeout, and leaves the queue. (A guest call that has started runs
/// until it ends or its model's own deadline stops it.)
#[test]
fn an_inference_request_past_the_hosts_time_limit_is_answered_503() {
    let server = Arc::new(Server::start(
        &[Seed::hostile("chatty", json!({"attack": "chatty"}))],
        "[host]\nrequire_self_tests = false\n\n[http]\nrequest_timeout_ms = 1500\n\n\
         [models.chatty]\nmin_instances = 1\nmax_instances = 1\nmax_queue = 4\n\
         queue_timeout_ms = 20000\ndeadline_ms = 30000\n",
    ));
    let agent = ureq::agent();
    let predict =
        |path: &str, body: Value| agent.post(&server.url(path)).send_string(&body.to_string());
    // The one instance, busy for eight seconds (its call is not cut by the request limit).
    let busy = {
        let server = server.clone();
        std::thread::spawn(move || {
            ferry_tests::http::status_of(
                ureq::post(&server.url("/v1/models/chatty/predict"))
                    .send_string(&json!({"sleep_ms": 8_000}).to_string()),
            )
        })
    };
    // `/metrics` and whether it has chatty's series `name` with `label` at `value`.
    let chatty_at = |name: &str, label: &str, value: &str| {
        let metrics = ureq::get(&server.url("/metrics"))
            .call()
            .unwrap()
            .into_string()
            .unwrap();
        let found = metrics.lines().any(|l| {
            l.starts_with(&format!("{name}{{"))
                && l.contains("model=\"chatty\"")
                && l.contains(label)
                && l.ends_with(&format!(" {value}"))
        });
        (found, metrics)
    };
    // Probed only once the call holds the instance, however slow the machine.
    let held = Instant::now();
    loop {
        let (busy_now, metrics) = chatty_at("ferry_instances", "state=\"busy\"", "1");
        if busy_now {
            break;
        }
        assert!(
            held.elapsed() < Duration::from_secs(4),
            "the slow call never held the instance:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for path in [
        "/v1/models/chatty/predict",
        "/v1/models/chatty/versions/1/predict",
    ] {
        let started = Instant::now();
        let answer = predict(path, json!({"n": 1}));
        let elapsed = started.elapsed();
        let (status, retry_after, body) = match answer {
            Err(ureq::Error::Status(code, r)) => (
                code,
                r.header("retry-after").map(str::to_owned),
                r.into_string().unwrap(),
            ),
            other => panic!("{path}: expected 503, got {other:?}"),
        };
        assert_eq!(status, 503, "{path}: {body}");
        assert!(
            body.contains("longer than the host's limit of 1.5s"),
            "{path}: {body}"
        );
        assert_eq!(retry_after.as_deref(), Some("1"), "{path}");
        assert!(
            elapsed < Duration::from_millis(4_000),
            "{path}: {elapsed:?}"
        );
    }
    // Answered, they left the queue while the slow call still held the instance.
    let (empty, metrics) = chatty_at("ferry_queued_requests", "version=\"1\"", "0");
    assert!(empty, "requests answered 503 are still queued:\n{metrics}");
    let (status, body) = busy.join().unwrap();
    assert_eq!(status, 200, "the call that held the instance: {body}");
    let (status, body) =
        ferry_tests::http::status_of(predict("/v1/models/chatty/predict", json!({"n": 1})));
    assert_eq!(status, 200, "the next request: {body}");
}
