//! Tensors crossing into a guest, fuzzed against a real instance: the hostile guest in its echo mode
//! (twelve inputs, one per datatype, each `[-1]`, answered unchanged), loaded by a real registry in
//! an in-process host.
//!
//! - `guest_instance`: tensors of every datatype with any shape (also shapes that do not match their
//!   data, huge dimensions, repeated and odd names) and any parameters text go straight into the
//!   instance, past the host's checks: every call answers the same tensors back, bit for bit, or
//!   refuses with an error that maps to a 4xx (parameters that are not JSON); never a trap, a panic
//!   or a host failure, and the instance keeps answering.
//! - `guest_http`: requests to `POST /v2/models/echo/infer` in JSON or the binary extension, mostly
//!   fitting the signature, sometimes not (a datatype, a rank, a name, a missing input): the answer
//!   is 200 with the same tensors (read back from binary outputs, bit for bit) exactly when the
//!   oracle says the request decodes and fits, else 400 with a message.

#[path = "../../host/tests/fuzz/oracle.rs"]
mod oracle;
#[path = "../../host/tests/fuzz/runner.rs"]
mod runner;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use ferry::config::HostConfig;
use ferry::registry::{Registry, Store};
use ferry::runtime::{CallError, Datatype, InstancePool, Tensor, TensorData};
use ferry::server::ServeOptions;
use ferry::serving::{LogOptions, PredictionLog, Serving, ServingPolicy, ShadowOptions, Shadows};
use ferry::storage::BlobCache;
use ferry::tensor::{binary, tensor_to_json};
use oracle::NAMES;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};
use tower::ServiceExt;

/// The echo model's inputs: one per datatype, named as the hostile guest names them.
const INPUTS: [&str; 12] = [
    "bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "fp32",
    "fp64", "bytes",
];

struct Echo {
    runtime: tokio::runtime::Runtime,
    router: ferry::server::App,
    pool: Arc<InstancePool>,
    _dir: tempfile::TempDir,
}

async fn put_blob(blobs: &BlobCache, bytes: &[u8]) -> String {
    let (path, _) = blobs.upload_file().unwrap();
    std::fs::write(&path, bytes).unwrap();
    let sha = ferry::runtime::sha256_hex(bytes);
    blobs.commit_upload(&path, &sha).await.unwrap();
    sha
}

/// The echo model, loaded once per test binary by a registry over a store in a temporary directory.
fn echo() -> &'static Echo {
    static ECHO: OnceLock<Echo> = OnceLock::new();
    ECHO.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (router, pool) = runtime.block_on(async {
            let storage = ferry::storage::open(dir.path().join("store").to_str().unwrap()).unwrap();
            let blobs = BlobCache::open(storage, &dir.path().join("cache"), 1 << 30).unwrap();
            let mut config = HostConfig::default();
            config.host.require_self_tests = false;
            let policy = ServingPolicy::from_config(&config, ferry::server::status::of);
            let registry = Registry::new(Store::new(blobs.clone()), ferry_tests::engine(), config);
            let mut manifest = registry
                .new_manifest("echo", Some("1".into()))
                .await
                .unwrap();
            manifest.component_sha256 =
                put_blob(&blobs, &ferry_tests::test_guest("hostile-guest")).await;
            manifest.config_sha256 = Some(put_blob(&blobs, b"{}").await);
            registry.create_version(manifest).await.unwrap();
            registry.settle(Duration::from_secs(120)).await;
            let version = registry
                .table()
                .resolve("echo", None)
                .unwrap_or_else(|e| panic!("the echo guest serves: {e}"));
            let pool = version.ready.pool.clone();
            let serving = Serving::new(
                registry.clone(),
                Shadows::start(ShadowOptions {
                    workers: 1,
                    queue: 1,
                    nice: 10,
                }),
                PredictionLog::start(LogOptions::new(None, "fuzz")),
                policy,
            );
            let options = ServeOptions {
                max_body_bytes: 4 << 20,
                teams: Arc::new(ferry::teams::Teams::load(None, None).unwrap()),
                audit: ferry::registry::audit::AuditLog::new(blobs.storage().clone(), "fuzz"),
                inference_token: None,
                http: Default::default(),
                request_bytes_in_flight: 256 << 20,
            };
            let router = ferry::server::router(serving, Arc::new(AtomicBool::new(true)), &options);
            (router, pool)
        });
        Echo {
            runtime,
            router,
            pool,
            _dir: dir,
        }
    })
}

fn datatype(i: usize) -> Datatype {
    oracle::datatype(NAMES[i]).unwrap()
}

/// `n` elements of datatype `dt`, any values (NaN payloads included).
fn data(dt: usize, n: usize) -> BoxedStrategy<TensorData> {
    macro_rules! elements {
        ($variant:ident, $s:expr) => {
            prop::collection::vec($s, n..=n)
                .prop_map(TensorData::$variant)
                .boxed()
        };
    }
    match datatype(dt) {
        Datatype::Bool => elements!(Bool, any::<bool>()),
        Datatype::Uint8 => elements!(Uint8, any::<u8>()),
        Datatype::Uint16 => elements!(Uint16, any::<u16>()),
        Datatype::Uint32 => elements!(Uint32, any::<u32>()),
        Datatype::Uint64 => elements!(Uint64, any::<u64>()),
        Datatype::Int8 => elements!(Int8, any::<i8>()),
        Datatype::Int16 => elements!(Int16, any::<i16>()),
        Datatype::Int32 => elements!(Int32, any::<i32>()),
        Datatype::Int64 => elements!(Int64, any::<i64>()),
        Datatype::Fp32 => elements!(Fp32, any::<u32>().prop_map(f32::from_bits)),
        Datatype::Fp64 => elements!(Fp64, any::<u64>().prop_map(f64::from_bits)),
        Datatype::Bytes => elements!(Bytes, prop::collection::vec(any::<u8>(), 0..8)),
    }
}

/// Any tensor: any name, any shape (not necessarily its data's), up to 64 elements.
fn any_tensor() -> impl Strategy<Value = Tensor> {
    (
        prop_oneof![
            4 => prop::sample::select(INPUTS.to_vec()).prop_map(str::to_owned),
            1 => prop::sample::select(vec!["", "x", "ç", "a\u{0}b", "bytes "]).prop_map(str::to_owned),
        ],
        0..12usize,
        0..64usize,
        prop_oneof![
            4 => Just(None),
            1 => prop::collection::vec(
                prop_oneof![0..5u64, Just(1 << 32), Just(u64::MAX), any::<u64>()],
                0..5
            )
            .prop_map(Some),
        ],
    )
        .prop_flat_map(|(name, dt, n, shape)| {
            (Just(name), data(dt, n), Just(shape.unwrap_or(vec![n as u64])))
        })
        .prop_map(|(name, data, shape)| Tensor { name, shape, data })
}

fn parameters() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => Just("{}".to_owned()),
        1 => Just(String::new()),
        1 => Just(" \n".to_owned()),
        1 => Just(r#"{"binary_data_output": true, "x": [1, 2]}"#.to_owned()),
        1 => Just("[1, 2]".to_owned()),
        1 => prop::sample::select(vec!["not json", "{", "{\"a\":}", "\u{0}"]).prop_map(str::to_owned),
        1 => prop::collection::vec(any::<char>(), 0..12).prop_map(String::from_iter),
    ]
}

#[test]
fn guest_instance() {
    let echo = echo();
    let tally = runner::Tally::default();
    let strategy = (prop::collection::vec(any_tensor(), 0..14), parameters());
    runner::run(
        "guest_instance",
        20_000,
        strategy,
        |(inputs, parameters)| {
            let answer = echo
                .pool
                .checkout()
                .map_err(|e| TestCaseError::fail(format!("no instance: {e}")))?
                .infer(&inputs, &parameters);
            let parameters_ok =
                parameters.trim().is_empty() || serde_json::from_str::<Value>(&parameters).is_ok();
            match answer {
                Ok(outputs) => {
                    tally.note("answered");
                    prop_assert!(parameters_ok, "parameters {parameters:?} were taken");
                    prop_assert_eq!(outputs.len(), inputs.len());
                    for (o, i) in outputs.iter().zip(&inputs) {
                        prop_assert!(oracle::same_tensor(o, i), "sent {i:?}, answered {o:?}");
                    }
                }
                Err(e) => {
                    tally.note(format!("refused ({})", e.kind()));
                    let status = ferry::server::status::of_call(&e);
                    prop_assert!(
                        matches!(e, CallError::InvalidInput(_)) && !parameters_ok,
                        "{e} (status {status})"
                    );
                }
            }
            Ok(())
        },
    );
    tally.report("guest_instance");
}

/// One input of a request to the echo model.
#[derive(Debug, Clone)]
struct Input {
    name: String,
    /// Index into [`NAMES`].
    datatype: usize,
    shape: Vec<i64>,
    data: TensorData,
    binary: bool,
}

/// The twelve inputs, each of its own datatype, 1-D; then sometimes one thing made wrong.
fn fitting_inputs() -> impl Strategy<Value = Vec<Input>> {
    let each: Vec<_> = (0..12usize)
        .map(|dt| {
            (0..8usize, any::<bool>()).prop_flat_map(move |(n, binary)| {
                data(dt, n).prop_map(move |data| Input {
                    name: INPUTS[dt].to_owned(),
                    datatype: dt,
                    shape: vec![n as i64],
                    data,
                    binary,
                })
            })
        })
        .collect();
    (each, misfit()).prop_map(|(mut inputs, misfit)| {
        match misfit {
            Misfit::None => {}
            Misfit::Drop(i) => {
                inputs.remove(i.index(inputs.len()));
            }
            Misfit::Rank(i) => {
                let input = &mut inputs[i.index(12)];
                let n = input.shape[0];
                input.shape = vec![1, n];
            }
            Misfit::Scalar(i) => {
                let input = &mut inputs[i.index(12)];
                input.shape = vec![];
            }
            Misfit::Rename(i) => inputs[i.index(12)].name = "extra".into(),
            Misfit::Swap(i, j) => {
                // Two inputs exchange names: each has the other's datatype now.
                let (a, b) = (i.index(12), j.index(12));
                let name = inputs[a].name.clone();
                inputs[a].name = inputs[b].name.clone();
                inputs[b].name = name;
            }
            Misfit::Twice(i) => {
                let again = inputs[i.index(12)].clone();
                inputs.push(again);
            }
        }
        inputs
    })
}

#[derive(Debug, Clone)]
enum Misfit {
    None,
    Drop(prop::sample::Index),
    Rank(prop::sample::Index),
    Scalar(prop::sample::Index),
    Rename(prop::sample::Index),
    Swap(prop::sample::Index, prop::sample::Index),
    Twice(prop::sample::Index),
}

fn misfit() -> impl Strategy<Value = Misfit> {
    let i = any::<prop::sample::Index>;
    prop_oneof![
        12 => Just(Misfit::None),
        1 => i().prop_map(Misfit::Drop),
        1 => i().prop_map(Misfit::Rank),
        1 => i().prop_map(Misfit::Scalar),
        1 => i().prop_map(Misfit::Rename),
        1 => (i(), i()).prop_map(|(a, b)| Misfit::Swap(a, b)),
        1 => i().prop_map(Misfit::Twice),
    ]
}

/// The request's body and its `Inference-Header-Content-Length` (when an input is binary). JSON
/// data is written as `tensor_to_json` writes it; a BYTES input that is not UTF-8, and any float
/// that is not finite, goes as binary (JSON cannot carry it).
fn body_of(inputs: &[Input], binary_output: bool) -> (Vec<u8>, Option<usize>, Vec<bool>) {
    let mut tail = Vec::new();
    let mut as_binary = Vec::new();
    let mut listed = Vec::new();
    for input in inputs {
        let t = Tensor {
            name: input.name.clone(),
            shape: input.shape.iter().map(|d| *d as u64).collect(),
            data: input.data.clone(),
        };
        let json_safe = match &t.data {
            TensorData::Bytes(b) => b.iter().all(|e| std::str::from_utf8(e).is_ok()),
            TensorData::Fp32(v) => v.iter().all(|x| x.is_finite()),
            TensorData::Fp64(v) => v.iter().all(|x| x.is_finite()),
            _ => true,
        };
        let mut j = serde_json::to_value(tensor_to_json(&t)).unwrap();
        j["shape"] = json!(input.shape);
        as_binary.push(input.binary || !json_safe);
        if input.binary || !json_safe {
            let bytes = binary::encode(&t.data);
            j["parameters"] = json!({ "binary_data_size": bytes.len() });
            j.as_object_mut().unwrap().remove("data");
            tail.extend_from_slice(&bytes);
        }
        listed.push(j);
    }
    let request = json!({
        "inputs": listed,
        "parameters": { "binary_data_output": binary_output },
    });
    let mut body = serde_json::to_vec(&request).unwrap();
    let header = (!tail.is_empty()).then_some(body.len());
    body.extend_from_slice(&tail);
    (body, header, as_binary)
}

/// True when `inputs` fit the echo model's signature: every input one of its twelve with its
/// datatype and rank 1, and all twelve there.
fn fits(inputs: &[Input]) -> bool {
    let each_fits = inputs.iter().all(|i| {
        INPUTS
            .iter()
            .position(|n| *n == i.name)
            .is_some_and(|at| at == i.datatype && i.shape.len() == 1)
    });
    each_fits && INPUTS.iter().all(|n| inputs.iter().any(|i| i.name == *n))
}

/// The output tensors of a response with binary outputs.
fn binary_outputs(body: &[u8], header: Option<usize>) -> Result<Vec<Tensor>, String> {
    let json_len = header.unwrap_or(body.len());
    let (head, mut tail) = body.split_at(json_len);
    let v: Value = serde_json::from_slice(head).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for o in v["outputs"].as_array().ok_or("no outputs")? {
        let dt =
            oracle::datatype(o["datatype"].as_str().ok_or("no datatype")?).ok_or("datatype")?;
        let shape: Vec<u64> =
            serde_json::from_value(o["shape"].clone()).map_err(|e| e.to_string())?;
        let size = o["parameters"]["binary_data_size"]
            .as_u64()
            .ok_or("no size")? as usize;
        let (mine, rest) = tail.split_at(size);
        tail = rest;
        let count = shape.iter().product::<u64>();
        let data = oracle::binary_data(dt, mine, count).ok_or("bad binary output")?;
        out.push(Tensor {
            name: o["name"].as_str().ok_or("no name")?.to_owned(),
            shape,
            data,
        });
    }
    Ok(out)
}

#[test]
fn guest_http() {
    let echo = echo();
    let tally = runner::Tally::default();
    let strategy = (fitting_inputs(), any::<bool>());
    runner::run("guest_http", 8_000, strategy, |(inputs, binary_output)| {
        let (body, header, as_binary) = body_of(&inputs, binary_output);
        let decodes =
            oracle::request(header.map(axum::http::HeaderValue::from).as_ref(), &body).is_some();
        let expected = decodes && fits(&inputs);
        let mut request = Request::post("/v2/models/echo/infer");
        if let Some(h) = header {
            request = request.header(binary::HEADER, h);
        }
        let request = request.body(Body::from(body)).unwrap();
        let response = echo
            .runtime
            .block_on(echo.router.clone().oneshot(request))
            .unwrap();
        let status = response.status();
        let out_header = response
            .headers()
            .get(binary::HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = echo
            .runtime
            .block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
            .unwrap();
        tally.note(format!("answered {}", status.as_u16()));
        if !expected {
            prop_assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "{}",
                String::from_utf8_lossy(&body)
            );
            let v: Value = serde_json::from_slice(&body).unwrap_or_default();
            prop_assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()));
            return Ok(());
        }
        prop_assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        if !binary_output {
            // JSON outputs: the same names, datatypes and shapes (values are checked bit for bit
            // on the binary outputs).
            let v: Value = serde_json::from_slice(&body).unwrap();
            let outputs = v["outputs"].as_array().unwrap();
            prop_assert_eq!(outputs.len(), inputs.len());
            for (o, i) in outputs.iter().zip(&inputs) {
                prop_assert_eq!(o["name"].as_str(), Some(i.name.as_str()));
                prop_assert_eq!(o["datatype"].as_str(), Some(NAMES[i.datatype]));
                prop_assert_eq!(&o["shape"], &json!(i.shape));
            }
            return Ok(());
        }
        let outputs = binary_outputs(&body, out_header).map_err(TestCaseError::fail)?;
        prop_assert_eq!(outputs.len(), inputs.len());
        for ((o, i), binary) in outputs.iter().zip(&inputs).zip(as_binary) {
            let sent = Tensor {
                name: i.name.clone(),
                shape: i.shape.iter().map(|d| *d as u64).collect(),
                data: i.data.clone(),
            };
            prop_assert!(
                oracle::same_tensor(o, &sent),
                "sent {sent:?} ({}), answered {o:?}",
                if binary { "binary" } else { "JSON" }
            );
        }
        Ok(())
    });
    tally.report("guest_http");
}

/// FP64 inputs sent as JSON in their shortest form reach the guest as the same floats (caught by
/// `guest_http` while serde_json parsed floats best-effort: a few ulps off).
#[test]
fn json_floats_reach_the_guest_unchanged() {
    let echo = echo();
    let values = [
        -1.2855144814445807e28,
        -1.2385321105092405e-166,
        5e-324,
        0.1,
    ];
    let inputs: Vec<Input> = (0..12)
        .map(|dt| Input {
            name: INPUTS[dt].to_owned(),
            datatype: dt,
            shape: vec![if dt == 10 { values.len() as i64 } else { 0 }],
            data: match dt {
                10 => TensorData::Fp64(values.to_vec()),
                _ => {
                    oracle::json_tensor("x", NAMES[dt], &[0], &json!([]))
                        .unwrap()
                        .data
                }
            },
            binary: false,
        })
        .collect();
    let (body, header, _) = body_of(&inputs, true);
    assert!(header.is_none(), "every input goes as JSON");
    let response = echo
        .runtime
        .block_on(
            echo.router.clone().oneshot(
                Request::post("/v2/models/echo/infer")
                    .body(Body::from(body))
                    .unwrap(),
            ),
        )
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let out_header = response
        .headers()
        .get(binary::HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body = echo
        .runtime
        .block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
        .unwrap();
    let outputs = binary_outputs(&body, out_header).unwrap();
    assert_eq!(outputs[10].data, TensorData::Fp64(values.to_vec()));
}
