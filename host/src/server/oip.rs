//! Open Inference Protocol v2 REST (KServe `open-inference-protocol`): server and model metadata,
//! health, and `infer` with JSON tensors or the binary tensor data extension. Inputs are checked
//! against what the model declares before the guest is called.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::{binary, body_bytes, call::call_model, AppState};
use crate::registry::ModelVersion;
use crate::runtime::{Tensor, TensorSpec};
use crate::tensor::{
    datatype_name, datatype_of, parse_datatype, tensor_from_json, tensor_to_json, JsonTensor,
};

/// `GET /v2`
pub async fn server_metadata() -> Json<Value> {
    Json(
        json!({ "name": "ferry", "version": env!("CARGO_PKG_VERSION"), "extensions": ["binary_tensor_data", "model_repository"] }),
    )
}

/// `GET /v2/health/live`
pub async fn live() -> StatusCode {
    StatusCode::OK
}

/// `GET /v2/health/ready`: ready once the store has been loaded.
pub async fn ready(State(state): State<AppState>) -> StatusCode {
    if state.loaded.load(std::sync::atomic::Ordering::Acquire) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
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
    let v = table.resolve(model, version)?;
    let metadata = v.metadata.as_ref().expect("ready versions have metadata");
    let versions: Vec<&String> = table.models[model]
        .versions
        .iter()
        .filter(|(_, v)| v.is_ready())
        .map(|(name, _)| name)
        .collect();
    Ok(Json(json!({
        "name": model,
        "versions": versions,
        "platform": metadata.platform,
        "inputs": specs(&metadata.inputs),
        "outputs": specs(&metadata.outputs),
    })))
}

/// `GET /v2/models/{model}`
pub async fn metadata(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<Value>, ApiError> {
    model_metadata(&state, &model, None)
}

/// `GET /v2/models/{model}/versions/{version}`
pub async fn metadata_version(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    model_metadata(&state, &model, Some(&version))
}

/// `GET /v2/models/{model}/ready`: 200 when a version serves, else the routing error.
pub async fn model_ready(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.registry.table().resolve(&model, None)?;
    Ok(StatusCode::OK)
}

/// `GET /v2/models/{model}/versions/{version}/ready`
pub async fn model_version_ready(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.registry.table().resolve(&model, Some(&version))?;
    Ok(StatusCode::OK)
}

#[derive(Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    inputs: Vec<RequestInput>,
    #[serde(default)]
    outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Deserialize)]
struct RequestInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

/// `POST /v2/models/{model}/infer`
pub async fn infer(
    State(state): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    infer_on(&state, &model, None, &headers, body_bytes(body)?).await
}

/// `POST /v2/models/{model}/versions/{version}/infer`
pub async fn infer_version(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    infer_on(&state, &model, Some(&version), &headers, body_bytes(body)?).await
}

async fn infer_on(
    state: &AppState,
    model: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let v = state.registry.table().resolve(model, version)?;
    let (json_part, mut binary_part) = split_body(headers, &body)?;
    let mut request: InferRequest = serde_json::from_slice(json_part)
        .map_err(|e| ApiError::bad_request(format!("invalid inference request: {e}")))?;
    let declared = &v.metadata.as_ref().expect("ready versions have metadata");
    if declared.inputs.is_empty() {
        return Err(ApiError::bad_request(format!(
            "model `{model}` takes feature-style requests, not tensors: POST /v1/models/{model}/predict"
        )));
    }

    let mut inputs = Vec::with_capacity(request.inputs.len());
    for input in request.inputs.iter_mut() {
        let spec = declared
            .inputs
            .iter()
            .find(|s| s.name == input.name)
            .ok_or_else(|| {
                let names: Vec<&str> = declared.inputs.iter().map(|s| s.name.as_str()).collect();
                ApiError::bad_request(format!(
                    "model `{model}` has no input `{}` (its inputs: {})",
                    input.name,
                    names.join(", ")
                ))
            })?;
        let tensor = decode_input(input, &mut binary_part)?;
        check_against_spec(&tensor, spec)?;
        inputs.push(tensor);
    }
    if let Some(missing) = declared
        .inputs
        .iter()
        .find(|s| !request.inputs.iter().any(|i| i.name == s.name))
    {
        return Err(ApiError::bad_request(format!(
            "input `{}` is missing ({} {:?})",
            missing.name,
            datatype_name(missing.datatype),
            missing.shape
        )));
    }
    if !binary_part.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{} bytes of binary data are not claimed by any input",
            binary_part.len()
        )));
    }

    let requested = request.outputs.as_deref().unwrap_or_default();
    for r in requested {
        if !declared.outputs.iter().any(|s| s.name == r.name) {
            return Err(ApiError::bad_request(format!(
                "model `{model}` has no output `{}`",
                r.name
            )));
        }
    }
    let parameters = Value::Object(request.parameters.clone().unwrap_or_default()).to_string();
    let outputs = call_model(&v, "infer", move |instance| {
        instance.infer(&inputs, &parameters)
    })
    .await?;
    Ok(respond(&v, &request, outputs))
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

fn decode_input(input: &mut RequestInput, binary_part: &mut &[u8]) -> Result<Tensor, ApiError> {
    let bad = |m: String| ApiError::bad_request(format!("input `{}`: {m}", input.name));
    // The JSON data moves into the tensor: a large request is not copied on the way to the guest.
    match (binary_size(&input.parameters), input.data.take()) {
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
            if input.shape.iter().any(|d| *d < 0) {
                return Err(bad(format!(
                    "shape {:?} has a negative dimension",
                    input.shape
                )));
            }
            let count: u64 = input.shape.iter().map(|d| *d as u64).product();
            let data = binary::decode(datatype, mine, count as usize).map_err(bad)?;
            Ok(Tensor {
                name: input.name.clone(),
                shape: input.shape.iter().map(|d| *d as u64).collect(),
                data,
            })
        }
        (None, Some(data)) => tensor_from_json(&JsonTensor {
            name: input.name.clone(),
            datatype: input.datatype.clone(),
            shape: input.shape.clone(),
            data,
            parameters: None,
        })
        .map_err(ApiError::bad_request),
        (None, None) => Err(bad(
            "has neither `data` nor `parameters.binary_data_size`".into()
        )),
    }
}

fn check_against_spec(tensor: &Tensor, spec: &TensorSpec) -> Result<(), ApiError> {
    let got = datatype_of(&tensor.data);
    if got != spec.datatype {
        return Err(ApiError::bad_request(format!(
            "input `{}`: expected datatype {}, got {}",
            spec.name,
            datatype_name(spec.datatype),
            datatype_name(got)
        )));
    }
    let fits = tensor.shape.len() == spec.shape.len()
        && tensor
            .shape
            .iter()
            .zip(&spec.shape)
            .all(|(d, s)| *s < 0 || *d as i64 == *s);
    if !fits {
        return Err(ApiError::bad_request(format!(
            "input `{}`: expected shape {:?} (-1 = any), got {:?}",
            spec.name, spec.shape, tensor.shape
        )));
    }
    Ok(())
}

fn respond(v: &Arc<ModelVersion>, request: &InferRequest, outputs: Vec<Tensor>) -> Response {
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
        let mut out = serde_json::to_value(tensor_to_json(&t)).expect("tensors serialise");
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
