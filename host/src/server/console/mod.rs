//! The operator console: a browser page at `/ui` that reads what the CLI reads and changes what the
//! CLI changes, through the same routes (so the same credentials, roles and audit log).
//!
//! - [`assets`]: the page, its script and its style, built into the binary (no CDN at run time),
//!   served open — they hold no data; every datum is fetched with the caller's token.
//! - [`history`]: `GET /v1/history` and `GET /v1/models/{model}/history`, the in-process history of
//!   each model's traffic the charts draw ([`crate::serving::history`]).
//! - [`caller`]: `GET /v1/caller`, who the token is and what it may change on each model, so the
//!   console shows edit controls only where they would be accepted (the routes still decide).

pub(super) mod assets;
pub(super) mod caller;
pub(super) mod history;

use axum::routing::get;
use axum::Router;

use super::AppState;

/// The console's page and files, open to anyone.
pub(super) fn pages() -> Router<AppState> {
    Router::new()
        .route("/ui", get(assets::page))
        .route("/ui/", get(assets::page))
        .route("/ui/{file}", get(assets::asset))
}

/// What the console reads besides the management listings, mounted with them (a credential that may
/// read; a scrape-only one gets 403).
pub(super) fn reads() -> Router<AppState> {
    Router::new()
        .route("/v1/history", get(history::history))
        .route("/v1/models/{model}/history", get(history::model_history))
        .route("/v1/caller", get(caller::caller))
}
