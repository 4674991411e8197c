//! `GET /v1/caller`: who a token is, and which changes its credential may make on each model now
//! listed — what the console needs to show an edit control only where the route would accept it.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Map, Value};

use crate::server::auth::Identified;
use crate::server::AppState;
use crate::teams::Action;

/// `GET /v1/caller`
#[utoipa::path(get, path = "/v1/caller", tag = "management",
    responses((status = 200, description = "The caller: actor, roles, model patterns, and per listed model the actions it may take", body = crate::server::openapi::CallerInfo)))]
pub async fn caller(State(state): State<AppState>, who: Identified) -> Json<Value> {
    let caller = &who.caller;
    let table = state.registry.table();
    let mut may = Map::new();
    for model in table.models.keys() {
        let actions: Vec<&str> = caller.permits(model).map(Action::name).collect();
        may.insert(model.clone(), json!(actions));
    }
    let (roles, models) = match caller.credential() {
        Some(c) => (
            c.roles().iter().map(|r| r.name()).collect::<Vec<_>>(),
            c.models().iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        ),
        // Management needs no token on this host: the caller may do everything.
        None => (vec!["admin"], vec!["*".to_owned()]),
    };
    Json(json!({
        "actor": caller.actor(),
        "roles": roles,
        "models": models,
        "may": may,
    }))
}
