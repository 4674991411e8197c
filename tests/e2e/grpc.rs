//! The Open Inference Protocol over gRPC on the HTTP port, driven by NVIDIA's `tritonclient.grpc`
//! unmodified (tests/python/grpc_client_check.py): health, metadata, config, statistics, infer with
//! raw and typed contents, a split alias, the error codes, streaming, the model repository; and the
//! REST routes still answering on the same port meanwhile; and KServe's own `InferenceGRPCClient`.

use ferry_tests::server::{Seed, Server};
use ferry_tests::workspace;
use serde_json::json;

const CONFIG: &str = r#"
[host]
require_self_tests = false   # the echo model ships none
max_body_bytes = 2097152     # a message past it is refused before it is decoded

[http]
max_request_bytes_in_flight = 16777216   # 8 open streams' worth, half of it for streams: hung-up ones must give theirs back
"#;

const INFERENCE_TOKEN: &str = "grpc-inference-token";
const ADMIN_TOKEN: &str = "grpc-admin-token";

#[test]
fn tritonclient_grpc_speaks_to_the_http_port() {
    let server = Server::start_with(
        &[
            Seed::sample("digits-graph", "1"),
            Seed::sample("digits-graph", "2"),
            Seed::hostile("echo", json!({})),
        ],
        CONFIG,
        &[
            "--inference-token",
            INFERENCE_TOKEN,
            "--admin-token",
            ADMIN_TOKEN,
        ],
    );
    let split = ureq::put(&server.url("/v1/models/digits-graph/aliases/canary"))
        .set("authorization", &format!("Bearer {ADMIN_TOKEN}"))
        .send_json(json!({"split": {"1": 50, "2": 50}}));
    assert!(split.is_ok(), "{split:?}");

    let held_out = workspace().join("sample-models/digits-onnx/held-out.json");
    let (ok, text) = ferry_tests::python_check(
        "grpc_client_check.py",
        &[
            server.base.trim_start_matches("http://").as_ref(),
            held_out.as_os_str(),
            INFERENCE_TOKEN.as_ref(),
            ADMIN_TOKEN.as_ref(),
        ],
    );
    assert!(ok, "{text}\nserver log:\n{}", server.log());
    for line in [
        "grpc health: live, ready, model ready, grpc.health.v1 serving",
        "grpc metadata and config: ok",
        "typed contents agree with raw",
        "grpc typed contents: every datatype echoed unchanged",
        "grpc split alias: versions ['1', '2']",
        "grpc errors: wrong shape INVALID_ARGUMENT, unknown model NOT_FOUND, no token UNAUTHENTICATED, too large RESOURCE_EXHAUSTED",
        "grpc stream: 6 answers in order, the bad request answered with its error",
        "grpc streams: 4 open hold half of the byte budget, a fifth UNAVAILABLE, unary calls answer meanwhile",
        "grpc repository: index, unload, load",
        "grpc-timeout: honoured by the server (1n: DEADLINE_EXCEEDED), a malformed one INVALID_ARGUMENT",
        "grpc-timeout on a stream: the answer, then DEADLINE_EXCEEDED after",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }

    // KServe's own gRPC client, in a process of its own (its protobuf modules clash with
    // tritonclient's).
    let (ok, text) = ferry_tests::python_check(
        "kserve_grpc_check.py",
        &[
            server.base.trim_start_matches("http://").as_ref(),
            held_out.as_os_str(),
            INFERENCE_TOKEN.as_ref(),
        ],
    );
    assert!(ok, "{text}\nserver log:\n{}", server.log());
    for part in [
        "kserve InferenceGRPCClient: live, ready, model ready; raw and typed contents agree",
        "unknown model NOT_FOUND, no token UNAUTHENTICATED",
    ] {
        assert!(text.contains(part), "missing `{part}` in:\n{text}");
    }

    // The REST routes answer on the same port, and count the gRPC calls in the same series.
    let metrics = ureq::get(&server.url("/metrics"))
        .set("authorization", &format!("Bearer {ADMIN_TOKEN}"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        metrics.contains(
            r#"ferry_requests_total{model="digits-graph",version="1",route="infer",status="200"}"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"route="infer",status="400"}"#),
        "the wrong shape is counted as over HTTP: {metrics}"
    );
}
