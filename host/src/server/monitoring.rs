//! `GET /v1/models/{model}/monitoring`: each version's live traffic against its training profile
//! (drift per feature and output, with both histograms), under the read rules.

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

use super::openapi as doc;
use super::{ApiError, AppState};
use crate::drift::ColumnDrift;
use crate::registry::{ModelVersion, Monitored, RouteError};

/// `GET /v1/models/{model}/monitoring`
#[utoipa::path(get, path = "/v1/models/{model}/monitoring", tag = "reads", params(doc::ModelPath),
    responses((status = 200, description = "Per version: the sample, the window, and drift per feature and output with the training and live histograms", body = doc::Monitoring),
        doc::NotFound))]
pub async fn monitoring(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let table = state.registry.table();
    let entry = table
        .models
        .get(&model)
        .ok_or_else(|| ApiError::from(RouteError::UnknownModel(model.clone())))?;
    let monitoring = state.serving.monitoring();
    let threshold = monitoring.threshold();
    let versions: Vec<Value> = entry
        .versions
        .values()
        .map(|v| version(v, threshold))
        .collect();
    Ok(Json(json!({
        "model": model,
        "sample_percent": monitoring.sample_percent(),
        "drift_threshold": threshold,
        "dropped": monitoring.dropped(),
        "versions": versions,
    })))
}

fn version(v: &ModelVersion, threshold: f64) -> Value {
    let name = &v.manifest.version;
    match &v.monitored {
        Monitored::NoProfile if v.manifest.profile_sha256.is_some() => json!({
            "version": name,
            "profile": "not loaded",
            "why": format!("the version ships a training profile but is {} on this host", v.state.name()),
        }),
        Monitored::NoProfile => json!({
            "version": name,
            "profile": "none",
            "why": "the version ships no training profile (`ferry push --profile profile.json`)",
        }),
        Monitored::Unreadable(why) => json!({
            "version": name,
            "profile": "unreadable",
            "why": why,
        }),
        Monitored::Watching(drift) => {
            let report = drift.report();
            let columns = |columns: &[ColumnDrift]| -> Vec<Value> {
                columns
                    .iter()
                    .map(|c| {
                        let mut value = serde_json::to_value(c).expect("a report serialises");
                        value["drifting"] = json!(c.psi.is_some_and(|psi| psi > threshold));
                        value
                    })
                    .collect()
            };
            json!({
                "version": name,
                "profile": "watching",
                "samples": drift.samples.load(std::sync::atomic::Ordering::Relaxed),
                "window_s": report.window_s,
                "min_rows": report.min_rows,
                "features": columns(&report.features),
                "outputs": columns(&report.outputs),
            })
        }
    }
}
