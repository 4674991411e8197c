//! `GET /v1/audit[?model=M][&limit=N][&after=CURSOR]`: the audit log, newest first, a page at a
//! time (see [`crate::registry::audit`]): `{"records": [...], "next": CURSOR}`, where `next` (absent
//! on the last page) is passed as `after` for the older page. Each page is one listing that stops at
//! `limit`, never a listing of the whole log. Any valid credential may read it, whatever its scope
//! (but a scrape-only one): who changed what is not a secret among the teams sharing a host.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::openapi as doc;
use super::AppState;
use crate::registry::audit::{check_cursor, MAX_LIMIT};
use crate::registry::check_name;

/// Records answered when the query names no limit.
const DEFAULT_LIMIT: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    model: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

/// `GET /v1/audit`: `{"records": [...]}`, newest first.
#[utoipa::path(get, path = "/v1/audit", tag = "management", params(doc::AuditQuery),
    responses((status = 200, description = "A page of the audit log, newest first", body = doc::AuditPage),
        doc::BadRequest, doc::Failed, doc::Unavailable))]
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| {
        ApiError::bad_request(format!(
            "{} (the audit log takes ?model=NAME, ?limit=1..{MAX_LIMIT} and ?after=CURSOR)",
            e.body_text()
        ))
    })?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_LIMIT}, not {limit}"
        )));
    }
    if let Some(model) = &query.model {
        check_name("model", model).map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    if let Some(cursor) = &query.after {
        check_cursor(cursor).map_err(ApiError::bad_request)?;
    }
    let page = state
        .audit
        .page(query.model.as_deref(), query.after.as_deref(), limit)
        .await?;
    let mut answer = json!({ "records": page.records });
    if let Some(next) = page.next {
        answer["next"] = Value::from(next);
    }
    Ok(Json(answer))
}
