//! The load benchmark's baseline: a bare axum server on the same runtime settings as `ferry serve`
//! that answers `POST /echo` with the JSON body it was sent — parse and serialise, no model.
//!
//! Usage: axum-baseline ADDR

use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;

async fn echo(Json(body): Json<Value>) -> Json<Value> {
    Json(body)
}

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
        axum::serve(listener, Router::new().route("/echo", post(echo)))
            .await
            .expect("serve");
    });
}
