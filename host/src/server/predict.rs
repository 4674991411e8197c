//! Feature-style routes: `POST /v1/models/{model}[/versions/{v}]/predict` (any JSON object in, the
//! model's JSON out, `ferry-model-version` names the version used), and read-only listings of models.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use super::openapi as doc;
use super::{intake, AppState};
use crate::registry::{ModelEntry, ModelVersion};
use crate::serving::{Predict, Request, RequestKeys};

/// Header naming the version that answered.
pub const VERSION_HEADER: &str = "ferry-model-version";

/// Header carrying the key a weighted alias keeps sticky.
pub const ROUTING_KEY_HEADER: &str = "ferry-routing-key";
const ROUTING_KEY_NAME: HeaderName = HeaderName::from_static(ROUTING_KEY_HEADER);

/// `POST /v1/models/{model}/predict`
#[utoipa::path(post, path = "/v1/models/{model}/predict", tag = "inference",
    params(doc::FeatureModelPath, doc::PredictHeaders),
    request_body(description = "Any JSON object (e.g. `{\"features\": {...}}`), passed to the model unchanged",
        content = doc::Features, content_type = "application/json",
        example = json!({"features": {"amount": 60.85, "currency": "CAD", "country": "CA", "hour": 15,
            "account_age_days": 239, "rides_last_24h": 2, "card_country": "CA"}})),
    responses(
        (status = 200, description = "The model's own JSON", body = serde_json::Value, content_type = "application/json",
            headers(("ferry-model-version" = String, description = "The version that answered"))),
        doc::BadRequest, doc::NotFound, doc::SlowBody, doc::TooLarge, doc::Rejected, doc::Failed,
        doc::Unavailable, doc::Deadline))]
pub async fn predict(
    State(state): State<AppState>,
    Path(model): Path<String>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    // The request taken whole: the `HeaderMap` extractor would copy every header.
    let (parts, body) = request.into_parts();
    predict_on(&state, model, None, &parts.headers, body).await
}

/// `POST /v1/models/{model}/versions/{version}/predict`
#[utoipa::path(post, path = "/v1/models/{model}/versions/{version}/predict", tag = "inference",
    params(doc::FeatureVersionPath, doc::PredictHeaders),
    request_body(description = "Any JSON object (e.g. `{\"features\": {...}}`), passed to the model unchanged",
        content = doc::Features, content_type = "application/json",
        example = json!({"features": {"amount": 60.85, "currency": "CAD", "country": "CA", "hour": 15,
            "account_age_days": 239, "rides_last_24h": 2, "card_country": "CA"}})),
    responses(
        (status = 200, description = "The model's own JSON", body = serde_json::Value, content_type = "application/json",
            headers(("ferry-model-version" = String, description = "The version that answered"))),
        doc::BadRequest, doc::NotFound, doc::SlowBody, doc::TooLarge, doc::Rejected, doc::Failed,
        doc::Unavailable, doc::Deadline))]
pub async fn predict_version(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    // The request taken whole: the `HeaderMap` extractor would copy every header.
    let (parts, body) = request.into_parts();
    predict_on(&state, model, Some(version), &parts.headers, body).await
}

/// The caller as HTTP tells it: the request id and the routing key.
pub fn keys(headers: &HeaderMap) -> RequestKeys {
    let text = |name: HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    RequestKeys {
        request_id: text(super::REQUEST_ID_NAME),
        routing_key: text(ROUTING_KEY_NAME),
    }
}

/// The header naming the version that answered.
pub fn version_header(v: &ModelVersion) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static(VERSION_HEADER),
        HeaderValue::from_str(&v.manifest.version).expect("version names are header-safe"),
    )
}

async fn predict_on(
    state: &AppState,
    model: String,
    version: Option<String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // Routed before a byte of the body is read: an unknown model costs nothing, and a body is
    // never read past what the model takes (the body is its input, unchanged).
    let routed = intake::route(&state.registry.table(), &model, version.as_deref())?;
    let limit = state.max_body_bytes.min(routed.max_input_bytes);
    let (body, _held) = intake::read_body(&state.intake, headers, body, limit, |raw| raw).await?;
    // Checked here, not by parsing into a tree: the caller's bytes go to the guest unchanged.
    // `Vec::from` takes the body's buffer without a copy when nothing else holds it.
    let text = String::from_utf8(Vec::from(body))
        .map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
    match serde_json::from_str::<serde::de::IgnoredAny>(&text) {
        Err(e) => return Err(ApiError::bad_request(format!("the body is not JSON: {e}"))),
        Ok(_) if !text.trim_start().starts_with('{') => {
            return Err(ApiError::bad_request(
                "the body must be a JSON object, e.g. {\"features\": {...}}",
            ))
        }
        Ok(_) => {}
    }
    let answer = state
        .serving
        .call::<Predict>(Request {
            model,
            version,
            ask: text,
            keys: keys(headers),
        })
        .await?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            version_header(&answer.version),
        ],
        shared_text(answer.output),
    )
        .into_response())
}

/// The answer's text as a body without a copy: when a shadow copy or the log still holds it, the
/// body shares it, and whoever is done with it last frees it.
fn shared_text(text: Arc<String>) -> Body {
    struct Shared(Arc<String>);
    impl AsRef<[u8]> for Shared {
        fn as_ref(&self) -> &[u8] {
            self.0.as_bytes()
        }
    }
    match Arc::try_unwrap(text) {
        Ok(text) => Body::from(text),
        Err(shared) => Body::from(bytes::Bytes::from_owner(Shared(shared))),
    }
}

fn describe_version(v: &ModelVersion) -> Value {
    let mut out = json!({
        "version": v.manifest.version,
        "state": v.state.name(),
        "component_sha256": v.manifest.component_sha256,
        "weights_sha256": v.manifest.weights_sha256,
        "load_seconds": v.load_seconds,
    });
    if let Some(reason) = v.state.reason() {
        out["reason"] = json!(reason);
    }
    // Whether its traffic is compared with its training data (`GET /v1/models/{m}/monitoring`).
    out["profile"] = match &v.monitored {
        crate::registry::Monitored::NoProfile if v.manifest.profile_sha256.is_some() => {
            json!({ "sha256": v.manifest.profile_sha256, "watched": false })
        }
        crate::registry::Monitored::NoProfile => json!("none"),
        crate::registry::Monitored::Unreadable(why) => json!({ "unreadable": why }),
        crate::registry::Monitored::Watching(_) => {
            json!({ "sha256": v.manifest.profile_sha256, "watched": true })
        }
    };
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
    // What the version asked for, and (once loaded) what it runs under: the operator's limits,
    // lowered where it asked for less.
    if let Some(asked) = &v.manifest.limits {
        out["requested_limits"] = json!(asked);
    }
    let ready = v.ready();
    if ready.is_some() {
        out["limits"] = json!(v.limits);
    }
    if let Some(stats) = ready.map(|r| r.pool.stats()) {
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
    if let Some(graphs) = ready.and_then(|r| r.graphs.as_ref()) {
        out["graphs"] = graphs.describe();
    }
    if let Some(batcher) = ready.and_then(|r| r.batcher.as_ref()) {
        out["batching"] = batcher.describe();
    }
    let usage = &v.usage;
    let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    out["usage"] = json!({
        "calls": usage.calls(),
        "failed": n(&usage.calls_failed),
        "cpu_seconds": n(&usage.cpu_ns) as f64 / 1e9,
        "guest_seconds": n(&usage.compute_ns) as f64 / 1e9,
        // None where it is not counted: a 0 would read as "burnt none".
        "fuel": v.counts_fuel.then(|| n(&usage.fuel)),
    });
    if let Some(ready) = ready {
        out["breaker"] = ready.breaker.describe();
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

fn describe_model(state: &AppState, name: &str, entry: &ModelEntry) -> Value {
    json!({
        "name": name,
        "default_version": entry.default_version().map(|v| v.manifest.version.clone()),
        "aliases": entry.aliases,
        "traffic": *entry.traffic,
        "shadow_agreement": state.serving.shadows().describe(name),
        "cpu_share": state.serving.shares().describe(name),
        "versions": entry.versions.values().map(|v| describe_version(v)).collect::<Vec<_>>(),
    })
}

/// `GET /v1/models`
#[utoipa::path(get, path = "/v1/models", tag = "management",
    responses((status = 200, description = "Every model: versions, states, aliases", body = doc::ModelList)))]
pub async fn list(State(state): State<AppState>) -> Json<Value> {
    let table = state.registry.table();
    Json(
        json!({ "models": table.models.iter().map(|(name, entry)| describe_model(&state, name, entry)).collect::<Vec<_>>() }),
    )
}

/// `GET /v1/models/{model}`
#[utoipa::path(get, path = "/v1/models/{model}", tag = "management", params(doc::ModelPath),
    responses((status = 200, description = "The model: versions, states, aliases", body = doc::ModelDescription),
        doc::NotFound))]
pub async fn describe(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let table = state.registry.table();
    let entry = table
        .models
        .get(&model)
        .ok_or_else(|| ApiError::not_found(format!("unknown model `{model}`")))?;
    Ok(Json(describe_model(&state, &model, entry)))
}
