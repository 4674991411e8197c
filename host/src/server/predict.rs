//! Feature-style routes: `POST /v1/models/{model}[/versions/{v}]/predict` (any JSON object in, the
//! model's JSON out, `ferry-model-version` names the version used), and read-only listings of models.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use super::{body_bytes, call::call_model, AppState};
use crate::registry::{ModelEntry, ModelVersion};

/// Header naming the version that answered.
pub const VERSION_HEADER: &str = "ferry-model-version";

/// `POST /v1/models/{model}/predict`
pub async fn predict(
    State(state): State<AppState>,
    Path(model): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    predict_on(&state, &model, None, body_bytes(body)?).await
}

/// `POST /v1/models/{model}/versions/{version}/predict`
pub async fn predict_version(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    predict_on(&state, &model, Some(&version), body_bytes(body)?).await
}

async fn predict_on(
    state: &AppState,
    model: &str,
    version: Option<&str>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let v = state.registry.table().resolve(model, version)?;
    let request: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    if !request.is_object() {
        return Err(ApiError::bad_request(
            "the body must be a JSON object, e.g. {\"features\": {...}}",
        ));
    }
    if !v.metadata.as_ref().is_some_and(|m| m.predicts_json) {
        return Err(ApiError::bad_request(format!(
            "model `{model}` takes tensor requests, not JSON features: POST /v2/models/{model}/infer"
        )));
    }
    // Pass the caller's bytes through unchanged: they were just checked to be a JSON object.
    let text =
        std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
    let answer = call_model(&v, "predict", |instance| instance.predict(text)).await?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                HeaderName::from_static(VERSION_HEADER),
                HeaderValue::from_str(&v.manifest.version).expect("version names are header-safe"),
            ),
        ],
        answer,
    )
        .into_response())
}

fn describe_version(v: &ModelVersion) -> Value {
    let mut out = json!({
        "version": v.manifest.version,
        "state": v.state.name(),
        "component_sha256": v.manifest.component_sha256,
        "weights_sha256": v.manifest.weights_sha256,
        "load_seconds": v.load_seconds,
    });
    if let crate::registry::VersionState::Failed(reason)
    | crate::registry::VersionState::Unloaded(reason) = &v.state
    {
        out["reason"] = json!(reason);
    }
    if let Some(passed) = v.self_tests_cached {
        out["self_tests"] = json!({
            "passed": passed,
            "failed": 0,
            "cached": "passed when this same snapshot was first loaded on this host; not run again",
        });
    }
    if let Some(mode) = &v.start_mode {
        out["snapshot"] = match mode {
            crate::runtime::StartMode::Snapshot => json!({"taken": true}),
            crate::runtime::StartMode::InitPerInstance(reason) => {
                json!({"taken": false, "reason": reason})
            }
        };
    }
    if let Some(stats) = v.pool.as_ref().map(|p| p.stats()) {
        out["memory"] = json!({
            "resident": stats.resident,
            "shared_bytes": if stats.resident { stats.shared_bytes } else { 0 },
            "private_bytes": stats.private_bytes,
            "graph_bytes": stats.graph_bytes,
            "instances": stats.live,
            "evictions": stats.evictions,
            "cold_loads": stats.reopens,
        });
    }
    if let Some(graphs) = &v.graphs {
        out["graphs"] = graphs.describe();
    }
    if let Some(report) = &v.self_tests {
        out["self_tests"] = json!({
            "passed": report.passed(),
            "failed": report.failed(),
            "worst_delta": report.worst_delta(),
            "cases": report.outcomes.iter().map(|o| json!({"name": o.name, "passed": o.passed, "worst_delta": o.worst_delta, "detail": o.detail})).collect::<Vec<_>>(),
        });
    }
    out
}

fn describe_model(name: &str, entry: &ModelEntry) -> Value {
    json!({
        "name": name,
        "default_version": entry.default_version().map(|v| v.manifest.version.clone()),
        "aliases": entry.aliases,
        "versions": entry.versions.values().map(|v| describe_version(v)).collect::<Vec<_>>(),
    })
}

/// `GET /v1/models`
pub async fn list(State(state): State<AppState>) -> Json<Value> {
    let table = state.registry.table();
    Json(
        json!({ "models": table.models.iter().map(|(name, entry)| describe_model(name, entry)).collect::<Vec<_>>() }),
    )
}

/// `GET /v1/models/{model}`
pub async fn describe(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let table = state.registry.table();
    let entry = table
        .models
        .get(&model)
        .ok_or_else(|| ApiError::not_found(format!("unknown model `{model}`")))?;
    Ok(Json(describe_model(&model, entry)))
}
