//! `GET /v1/history` (every model's latest interval) and `GET /v1/models/{model}/history` (its last
//! hour): the console's rates, latencies and charts.

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

use crate::registry::RouteError;
use crate::server::openapi as doc;
use crate::server::{ApiError, AppState};
use crate::serving::history::Point;

/// `GET /v1/history`
#[utoipa::path(get, path = "/v1/history", tag = "management",
    responses((status = 200, description = "Every model's latest interval: requests, errors, p50 and p99", body = doc::HistoryLatest)))]
pub async fn history(State(state): State<AppState>) -> Json<Value> {
    let history = state.serving.history();
    let interval = history.shape().interval.as_secs_f64();
    let models: serde_json::Map<String, Value> = history
        .latest()
        .into_iter()
        .map(|(model, p)| (model, with_rates(&p, interval)))
        .collect();
    Json(json!({ "interval_seconds": interval, "models": models }))
}

/// `GET /v1/models/{model}/history`
#[utoipa::path(get, path = "/v1/models/{model}/history", tag = "management", params(doc::ModelPath),
    responses((status = 200, description = "The model's traffic per interval, oldest first", body = doc::ModelHistory),
        doc::NotFound))]
pub async fn model_history(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if !state.registry.table().models.contains_key(&model) {
        return Err(RouteError::UnknownModel(model).into());
    }
    let history = state.serving.history();
    let shape = history.shape();
    let interval = shape.interval.as_secs_f64();
    let points: Vec<Value> = history
        .model(&model)
        .iter()
        .map(|p| with_rates(p, interval))
        .collect();
    Ok(Json(json!({
        "model": model,
        "interval_seconds": interval,
        "kept": shape.points,
        "points": points,
    })))
}

/// A point with its rate per second (over its measured length) and its error ratio.
fn with_rates(p: &Point, interval_s: f64) -> Value {
    let mut v = json!(p);
    let seconds = if p.seconds > 0.0 {
        p.seconds as f64
    } else {
        interval_s
    };
    v["requests_per_second"] = json!(p.requests as f64 / seconds);
    v["error_ratio"] = if p.requests == 0 {
        Value::Null
    } else {
        json!(p.errors as f64 / p.requests as f64)
    };
    v
}
