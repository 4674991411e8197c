//! Open Inference Protocol v2 REST (KServe `open-inference-protocol`): server and model metadata,
//! health, and `infer` with JSON tensors or the binary tensor data extension. Inputs are checked
//! against what the model declares before the guest is called.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::openapi as doc;
use super::{intake, AppState};
use crate::registry::{ModelVersion, Routed, RoutingTable};
use crate::runtime::{Tensor, TensorSpec};
use crate::serving::{Infer, TensorRequest};
use crate::tensor::{binary, datatype_name, parse_datatype, tensor_to_json, typed};

/// `GET /v2`
#[utoipa::path(get, path = "/v2", tag = "open",
    responses((status = 200, description = "The server's name, version and extensions", body = doc::ServerMetadata)))]
pub async fn server_metadata() -> Json<Value> {
    Json(json!({ "name": "ferry", "version": env!("CARGO_PKG_VERSION"), "extensions": EXTENSIONS }))
}

/// The protocol extensions the server speaks, over REST and gRPC.
pub(super) const EXTENSIONS: [&str; 4] = [
    "binary_tensor_data",
    "model_repository",
    "model_configuration",
    "statistics",
];

/// `GET /v2/health/live`: `{"live": true}` (the OIP's body; tritonclient reads the status, KServe's
/// `InferenceRESTClient` the body).
#[utoipa::path(get, path = "/v2/health/live", tag = "open",
    responses((status = 200, description = "The server is live", body = doc::Live)))]
pub async fn live() -> Json<Value> {
    Json(json!({ "live": true }))
}

/// `GET /v2/health/ready`: ready once the store has been loaded.
#[utoipa::path(get, path = "/v2/health/ready", tag = "open",
    responses((status = 200, description = "The store is loaded", body = doc::Ready), doc::Unavailable))]
pub async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    if state.loaded.load(std::sync::atomic::Ordering::Acquire) {
        return Ok(Json(json!({ "ready": true })));
    }
    // As every 503: an error body, and when to look again.
    let mut e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not ready: the store is still being loaded",
    );
    e.retry_after = Some(1);
    Err(e)
}

fn specs(specs: &[TensorSpec]) -> Value {
    specs
        .iter()
        .map(|s| json!({ "name": s.name, "datatype": datatype_name(s.datatype), "shape": s.shape }))
        .collect()
}

fn model_metadata(
    state: &AppState,
    model: &str,
    version: Option<&str>,
) -> Result<Json<Value>, ApiError> {
    let table = state.registry.table();
    let metadata = &table.resolve(model, version)?.ready.metadata;
    Ok(Json(json!({
        "name": model,
        "versions": ready_versions(&table, model),
        "platform": metadata.platform,
        "inputs": specs(&metadata.inputs),
        "outputs": specs(&metadata.outputs),
    })))
}

/// The names of `model`'s ready versions (none for a model the table does not have).
pub(super) fn ready_versions(table: &RoutingTable, model: &str) -> Vec<String> {
    table.models.get(model).map_or_else(Vec::new, |entry| {
        entry
            .versions
            .iter()
            .filter(|(_, v)| v.is_ready())
            .map(|(name, _)| name.clone())
            .collect()
    })
}

/// `GET /v2/models/{model}`
#[utoipa::path(get, path = "/v2/models/{model}", tag = "inference", params(doc::ModelPath),
    responses((status = 200, description = "The model's metadata", body = doc::ModelMetadata),
        doc::NotFound, doc::Unavailable))]
pub async fn metadata(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<Value>, ApiError> {
    model_metadata(&state, &model, None)
}

/// `GET /v2/models/{model}/versions/{version}`
#[utoipa::path(get, path = "/v2/models/{model}/versions/{version}", tag = "inference",
    params(doc::VersionPath),
    responses((status = 200, description = "The version's metadata", body = doc::ModelMetadata),
        doc::NotFound, doc::Unavailable))]
pub async fn metadata_version(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    model_metadata(&state, &model, Some(&version))
}

/// `GET /v2/models/{model}/ready`: 200 when a version serves, else the routing error.
#[utoipa::path(get, path = "/v2/models/{model}/ready", tag = "inference", params(doc::ModelPath),
    responses((status = 200, description = "A version serves", body = doc::ModelReady), doc::NotFound, doc::Unavailable))]
pub async fn model_ready(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.registry.table().resolve(&model, None)?;
    Ok(Json(json!({ "name": model, "ready": true })))
}

/// `GET /v2/models/{model}/versions/{version}/ready`
#[utoipa::path(get, path = "/v2/models/{model}/versions/{version}/ready", tag = "inference",
    params(doc::VersionPath),
    responses((status = 200, description = "The version serves", body = doc::ModelReady), doc::NotFound, doc::Unavailable))]
pub async fn model_version_ready(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    state.registry.table().resolve(&model, Some(&version))?;
    Ok(Json(json!({ "name": model, "ready": true })))
}

/// Triton's name of a datatype in a model configuration.
pub(super) fn triton_type(spec: &TensorSpec) -> String {
    match datatype_name(spec.datatype) {
        "BYTES" => "TYPE_STRING".to_owned(),
        other => format!("TYPE_{other}"),
    }
}

fn config_of(model: &str, v: &Routed) -> Value {
    let metadata = &v.ready.metadata;
    let io = |specs: &[TensorSpec]| -> Vec<Value> {
        specs
            .iter()
            .map(|s| json!({ "name": s.name, "data_type": triton_type(s), "dims": s.shape }))
            .collect()
    };
    json!({
        "name": model,
        "platform": metadata.platform,
        "backend": "ferry",
        "version_policy": { "specific": { "versions": [v.manifest.version] } },
        // Batching is the model's own (the leading dimension), not the server's.
        "max_batch_size": 0,
        "input": io(&metadata.inputs),
        "output": io(&metadata.outputs),
        "instance_group": [{ "kind": "KIND_CPU", "count": v.limits.max_instances }],
    })
}

/// `GET /v2/models/{model}/config` (Triton's model configuration extension, which its clients call).
#[utoipa::path(get, path = "/v2/models/{model}/config", tag = "reads", params(doc::ModelPath),
    responses((status = 200, description = "The configuration of the version serving by default", body = doc::ModelConfig),
        doc::NotFound, doc::Unavailable))]
pub async fn model_config(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let v = state.registry.table().resolve(&model, None)?;
    Ok(Json(config_of(&model, &v)))
}

/// `GET /v2/models/{model}/versions/{version}/config`
#[utoipa::path(get, path = "/v2/models/{model}/versions/{version}/config", tag = "reads",
    params(doc::VersionPath),
    responses((status = 200, description = "The version's configuration", body = doc::ModelConfig),
        doc::NotFound, doc::Unavailable))]
pub async fn model_version_config(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let v = state.registry.table().resolve(&model, Some(&version))?;
    Ok(Json(config_of(&model, &v)))
}

/// A version's counters as the statistics extension reports them, read once. As in Triton: an
/// inference is a row of a request (one for a feature-style request), an execution a guest call
/// that answered (a batch's merged call is one, however many requests it answers), and
/// `success`/`fail` count requests, each once.
pub(super) struct Counts {
    pub succeeded: u64,
    pub succeeded_ns: u64,
    pub failed: u64,
    pub failed_ns: u64,
    pub inferences: u64,
    pub executions: u64,
    pub calls: u64,
    pub queue_ns: u64,
    pub compute_ns: u64,
    pub last_unix_ms: u64,
    /// A batching version's answered calls by rows: (rows, calls, nanoseconds).
    pub batches: Vec<(u64, u64, u64)>,
}

impl Counts {
    pub(super) fn of(v: &ModelVersion) -> Counts {
        let u = &v.usage;
        let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        Counts {
            succeeded: n(&u.succeeded),
            succeeded_ns: n(&u.succeeded_ns),
            failed: n(&u.failed),
            failed_ns: n(&u.failed_ns),
            inferences: n(&u.inferences),
            executions: n(&u.calls_ok),
            calls: u.calls(),
            queue_ns: n(&u.queue_ns),
            compute_ns: n(&u.compute_ns),
            last_unix_ms: n(&u.last_unix_ms),
            batches: v
                .ready()
                .and_then(|r| r.batcher.as_ref())
                .map(|b| b.stats().by_size())
                .unwrap_or_default(),
        }
    }
}

fn stats_of(v: &ModelVersion) -> Value {
    let c = Counts::of(v);
    let count_ns = |count: u64, ns: u64| json!({ "count": count, "ns": ns });
    let batch_stats: Vec<Value> = c
        .batches
        .iter()
        .map(|&(rows, calls, ns)| {
            json!({
                "batch_size": rows,
                "compute_input": count_ns(0, 0),
                "compute_infer": count_ns(calls, ns),
                "compute_output": count_ns(0, 0),
            })
        })
        .collect();
    json!({
        "name": v.manifest.model,
        "version": v.manifest.version,
        "last_inference": c.last_unix_ms,
        "inference_count": c.inferences,
        "execution_count": c.executions,
        "inference_stats": {
            "success": count_ns(c.succeeded, c.succeeded_ns),
            "fail": count_ns(c.failed, c.failed_ns),
            "queue": count_ns(c.calls, c.queue_ns),
            "compute_input": count_ns(0, 0),
            "compute_infer": count_ns(c.calls, c.compute_ns),
            "compute_output": count_ns(0, 0),
        },
        "batch_stats": batch_stats,
    })
}

/// The versions a statistics request names: one version, a model's ready versions, or every ready
/// version.
pub(super) fn stats_versions(
    table: &RoutingTable,
    model: Option<&str>,
    version: Option<&str>,
) -> Result<Vec<Arc<ModelVersion>>, ApiError> {
    Ok(match (model, version) {
        (Some(m), Some(v)) => vec![table.resolve(m, Some(v))?.version],
        (Some(m), None) => {
            let entry = table.models.get(m).ok_or_else(|| {
                ApiError::from(crate::registry::RouteError::UnknownModel(m.to_owned()))
            })?;
            entry
                .versions
                .values()
                .filter(|v| v.is_ready())
                .cloned()
                .collect()
        }
        (None, _) => table.versions().filter(|v| v.is_ready()).cloned().collect(),
    })
}

fn stats(
    state: &AppState,
    model: Option<&str>,
    version: Option<&str>,
) -> Result<Json<Value>, ApiError> {
    let table = state.registry.table();
    let out: Vec<Value> = stats_versions(&table, model, version)?
        .iter()
        .map(|v| stats_of(v))
        .collect();
    Ok(Json(json!({ "model_stats": out })))
}

/// `GET /v2/models/stats` (Triton's statistics extension): every ready version.
#[utoipa::path(get, path = "/v2/models/stats", tag = "reads",
    responses((status = 200, description = "Every ready version's statistics", body = doc::Statistics)))]
pub async fn all_stats(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    stats(&state, None, None)
}

/// `GET /v2/models/{model}/stats`: each ready version of the model.
#[utoipa::path(get, path = "/v2/models/{model}/stats", tag = "reads", params(doc::ModelPath),
    responses((status = 200, description = "Each ready version's statistics", body = doc::Statistics),
        doc::NotFound))]
pub async fn model_stats(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<Value>, ApiError> {
    stats(&state, Some(&model), None)
}

/// `GET /v2/models/{model}/versions/{version}/stats`
#[utoipa::path(get, path = "/v2/models/{model}/versions/{version}/stats", tag = "reads",
    params(doc::VersionPath),
    responses((status = 200, description = "The version's statistics", body = doc::Statistics),
        doc::NotFound, doc::Unavailable))]
pub async fn model_version_stats(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    stats(&state, Some(&model), Some(&version))
}

/// An inference request as sent: each input's `data` stays the request's own text until it is
/// decoded straight into its typed buffer (tensor/typed.rs).
#[derive(Deserialize)]
pub(super) struct InferRequest<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(borrow)]
    inputs: Vec<RequestInput<'a>>,
    #[serde(default)]
    outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Deserialize)]
struct RequestInput<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

/// `POST /v2/models/{model}/infer`
#[utoipa::path(post, path = "/v2/models/{model}/infer", tag = "inference",
    params(doc::ModelPath, doc::InferHeaders),
    request_body(description = "JSON tensors; or, with `Inference-Header-Content-Length`, that many bytes of JSON followed by the inputs' binary data",
        content((doc::InferRequest = "application/json"), ("application/octet-stream"))),
    responses(
        (status = 200, description = "The outputs: JSON, or (binary outputs asked for) the JSON part followed by their bytes",
            headers(("ferry-model-version" = String, description = "The version that answered")),
            content((doc::InferResponse = "application/json"), ("application/octet-stream"))),
        doc::BadRequest, doc::NotFound, doc::SlowBody, doc::TooLarge, doc::Rejected, doc::Failed,
        doc::Unavailable, doc::Deadline))]
pub async fn infer(
    State(state): State<AppState>,
    Path(model): Path<String>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    // The request taken whole: the `HeaderMap` extractor would copy every header.
    let (parts, body) = request.into_parts();
    infer_on(&state, &model, None, &parts.headers, body).await
}

/// `POST /v2/models/{model}/versions/{version}/infer`
#[utoipa::path(post, path = "/v2/models/{model}/versions/{version}/infer", tag = "inference",
    params(doc::VersionPath, doc::InferHeaders),
    request_body(description = "JSON tensors; or, with `Inference-Header-Content-Length`, that many bytes of JSON followed by the inputs' binary data",
        content((doc::InferRequest = "application/json"), ("application/octet-stream"))),
    responses(
        (status = 200, description = "The outputs: JSON, or (binary outputs asked for) the JSON part followed by their bytes",
            headers(("ferry-model-version" = String, description = "The version that answered")),
            content((doc::InferResponse = "application/json"), ("application/octet-stream"))),
        doc::BadRequest, doc::NotFound, doc::SlowBody, doc::TooLarge, doc::Rejected, doc::Failed,
        doc::Unavailable, doc::Deadline))]
pub async fn infer_version(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    // The request taken whole: the `HeaderMap` extractor would copy every header.
    let (parts, body) = request.into_parts();
    infer_on(&state, &model, Some(&version), &parts.headers, body).await
}

async fn infer_on(
    state: &AppState,
    model: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // Routed before a byte of the body is read: an unknown model costs nothing.
    let routed = intake::route(&state.registry.table(), model, version)?;
    let max_input = routed.max_input_bytes as u64;
    // Held until the answer: the raw body, and what decoding it may take (at most the model's
    // input limit; a JSON number of 2 bytes can become an 8-byte element).
    let (body, _held) =
        intake::read_body(&state.intake, headers, body, state.max_body_bytes, |raw| {
            raw + max_input.min(raw.saturating_mul(4))
        })
        .await?;
    // A place in the version's queue before decoding: a version that would refuse the request (its
    // queue full) refuses it before decoding costs anything, and the requests one version decodes
    // at once are bounded by its instances and queue.
    let keys = super::predict::keys(headers);
    let ticket = state.serving.admit(model, version, &keys, "infer", None)?;
    // No more than the body's charge to the byte budget covers (the table may have changed since).
    let max_input = max_input.min(ticket.version().limits.max_input_bytes as u64);
    let (request, tensors) = decode(headers, &body, max_input)?;
    let answer = ticket
        .call::<Infer>(&state.serving, Arc::new(tensors), keys)
        .await?;
    let encoding = std::time::Instant::now();
    let mut response = respond(&answer.version, &request, &answer.output);
    crate::timing::record(crate::timing::Stage::Encode, encoding.elapsed());
    let (name, value) = super::predict::version_header(&answer.version);
    response.headers_mut().insert(name, value);
    Ok(response)
}

/// Decodes an inference request's body (JSON, or JSON and binary tensor data) into what the model is
/// asked; its inputs may take at most `max_input` bytes (413 past it, before their data is decoded).
pub(super) fn decode<'a>(
    headers: &HeaderMap,
    body: &'a [u8],
    max_input: u64,
) -> Result<(InferRequest<'a>, TensorRequest), ApiError> {
    let (json_part, mut binary_part) = split_body(headers, body)?;
    let request: InferRequest = serde_json::from_slice(json_part)
        .map_err(|e| ApiError::bad_request(format!("invalid inference request: {e}")))?;
    let mut inputs = Vec::with_capacity(request.inputs.len());
    let mut left = max_input;
    for input in request.inputs.iter() {
        let tensor = decode_input(input, &mut binary_part, left)?;
        left = left.saturating_sub(crate::runtime::tensor_bytes(&tensor) as u64);
        inputs.push(tensor);
    }
    if !binary_part.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{} bytes of binary data are not claimed by any input",
            binary_part.len()
        )));
    }
    let outputs = request
        .outputs
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|o| o.name.clone())
        .collect();
    let parameters = Value::Object(request.parameters.clone().unwrap_or_default()).to_string();
    let tensors = TensorRequest {
        inputs,
        parameters,
        outputs,
    };
    Ok((request, tensors))
}

/// Splits a body into its JSON header and binary tensor data.
fn split_body<'a>(headers: &HeaderMap, body: &'a [u8]) -> Result<(&'a [u8], &'a [u8]), ApiError> {
    let Some(length) = headers.get(binary::HEADER) else {
        return Ok((body, &[]));
    };
    let length: usize = length
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| {
            ApiError::bad_request("Inference-Header-Content-Length must be a byte count")
        })?;
    if length > body.len() {
        return Err(ApiError::bad_request(format!(
            "Inference-Header-Content-Length is {length} but the body has {} bytes",
            body.len()
        )));
    }
    Ok(body.split_at(length))
}

fn binary_size(parameters: &Option<Map<String, Value>>) -> Option<Option<u64>> {
    parameters
        .as_ref()
        .and_then(|p| p.get("binary_data_size"))
        .map(Value::as_u64)
}

/// One input as a tensor, from its binary data or its JSON `data`; `max_bytes` is what the model
/// still takes (413 past it, before the data is decoded).
fn decode_input(
    input: &RequestInput<'_>,
    binary_part: &mut &[u8],
    max_bytes: u64,
) -> Result<Tensor, ApiError> {
    let bad = |m: String| ApiError::bad_request(format!("input `{}`: {m}", input.name));
    match (binary_size(&input.parameters), input.data) {
        (Some(size), _) => {
            let size =
                size.ok_or_else(|| bad("binary_data_size must be a byte count".into()))? as usize;
            if size > binary_part.len() {
                return Err(bad(format!(
                    "binary_data_size is {size} but only {} bytes of binary data remain",
                    binary_part.len()
                )));
            }
            let (mine, rest) = binary_part.split_at(size);
            *binary_part = rest;
            let datatype = parse_datatype(&input.datatype).map_err(bad)?;
            binary::decode_tensor(&input.name, datatype, &input.shape, mine).map_err(bad)
        }
        (None, Some(data)) => typed::tensor_from_raw_json(
            &input.name,
            &input.datatype,
            &input.shape,
            data.get(),
            max_bytes,
        )
        .map_err(|e| match e {
            typed::DecodeError::Invalid(m) => ApiError::bad_request(m),
            typed::DecodeError::TooLarge { size, limit } => {
                ApiError::from(crate::runtime::CallError::InputTooLarge {
                    size: size as usize,
                    limit: limit as usize,
                })
            }
        }),
        (None, None) => Err(bad(
            "has neither `data` nor `parameters.binary_data_size`".into()
        )),
    }
}

fn respond(v: &Arc<ModelVersion>, request: &InferRequest<'_>, outputs: &[Tensor]) -> Response {
    let all_binary = request
        .parameters
        .as_ref()
        .and_then(|p| p.get("binary_data_output"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let requested = request.outputs.as_deref();
    let mut binary_tail = Vec::new();
    let mut listed = Vec::new();
    for t in outputs {
        let wanted = match requested {
            None => Some(all_binary),
            Some(list) => list.iter().find(|r| r.name == t.name).map(|r| {
                r.parameters
                    .as_ref()
                    .and_then(|p| p.get("binary_data"))
                    .and_then(Value::as_bool)
                    .unwrap_or(all_binary)
            }),
        };
        let Some(as_binary) = wanted else { continue };
        let mut out = serde_json::to_value(tensor_to_json(t)).expect("tensors serialise");
        if as_binary {
            let bytes = binary::encode(&t.data);
            out["parameters"] = json!({ "binary_data_size": bytes.len() });
            out.as_object_mut().expect("object").remove("data");
            binary_tail.extend_from_slice(&bytes);
        }
        listed.push(out);
    }
    let mut body = json!({ "model_name": v.manifest.model, "model_version": v.manifest.version, "outputs": listed });
    if let Some(id) = &request.id {
        body["id"] = json!(id);
    }
    let header_json = serde_json::to_vec(&body).expect("response serialises");
    if binary_tail.is_empty() {
        return (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            header_json,
        )
            .into_response();
    }
    let length = header_json.len();
    let mut bytes = header_json;
    bytes.extend_from_slice(&binary_tail);
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (
                header::HeaderName::from_static(binary::HEADER),
                HeaderValue::from(length),
            ),
        ],
        bytes,
    )
        .into_response()
}
