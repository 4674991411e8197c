//! A host in-process: a local store in a temporary directory, the registry and serving over it, and
//! the router `ferry serve` runs, driven with `tower::ServiceExt::oneshot` (no sockets).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use ferry::config::HostConfig;
use ferry::engine::EngineSettings;
use ferry::registry::{Registry, Store};
use ferry::runtime::ModelRuntime;
use ferry::server::ServeOptions;
use ferry::serving::{LogOptions, PredictionLog, Serving, ServingPolicy, ShadowOptions, Shadows};
use ferry::storage::BlobCache;
use tower::ServiceExt;

/// Largest inference body the fuzzed host takes (past it: 413).
pub const MAX_BODY: usize = 1 << 20;
/// Largest upload part the fuzzed host takes (past it: 413).
pub const MAX_UPLOAD: u64 = 64 << 10;

/// A host with nothing loaded, and the runtime its requests run on.
pub struct App {
    pub runtime: tokio::runtime::Runtime,
    pub router: ferry::server::App,
    pub dir: tempfile::TempDir,
}

/// An answer.
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Answer {
    /// The `error` of a `{"error": "..."}` body.
    pub fn error(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        v["error"].as_str().map(str::to_owned)
    }
}

impl App {
    pub fn new() -> App {
        App::with_upload_cap(MAX_UPLOAD)
    }

    /// A host whose upload parts may be `max_upload` bytes.
    pub fn with_upload_cap(max_upload: u64) -> App {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let router = runtime.block_on(async {
            let storage = ferry::storage::open(dir.path().join("store").to_str().unwrap()).unwrap();
            let blobs = BlobCache::open(storage, &dir.path().join("cache"), 1 << 30).unwrap();
            let audit = ferry::registry::audit::AuditLog::new(blobs.storage().clone(), "fuzz");
            let mut config = HostConfig::default();
            config.host.max_body_bytes = MAX_BODY;
            config.host.max_upload_bytes = max_upload;
            let models = ModelRuntime::new(
                EngineSettings {
                    total_instances: 16,
                    cache_dir: Some(blobs.compiled_dir()),
                    ..Default::default()
                },
                false,
            )
            .unwrap();
            let policy = ServingPolicy::from_config(&config, ferry::server::status::of);
            let registry = Registry::new(Store::new(blobs), models, config);
            let serving = Serving::new(
                registry.clone(),
                Shadows::start(ShadowOptions {
                    workers: 1,
                    queue: 1,
                    nice: 10,
                }),
                PredictionLog::start(LogOptions::new(None, "fuzz")),
                policy,
            );
            let options = ServeOptions {
                max_body_bytes: MAX_BODY,
                teams: Arc::new(ferry::teams::Teams::load(None, None).unwrap()),
                audit,
                inference_token: None,
                http: Default::default(),
                request_bytes_in_flight: 256 << 20,
            };
            ferry::server::router(serving, Arc::new(AtomicBool::new(true)), &options)
        });
        App {
            runtime,
            router,
            dir,
        }
    }

    /// What the host makes of an inference request's body once the request is routed (the fuzzed
    /// host has no models, and routing comes before the body is read): 404 for a body the decoder
    /// accepts (it would reach the model), the decoder's error otherwise; a body past the host's
    /// limit is 413 as on the route.
    pub fn decode_infer(&self, request: Request<Body>) -> Answer {
        let (parts, body) = request.into_parts();
        let body = match self.runtime.block_on(axum::body::to_bytes(body, MAX_BODY)) {
            Ok(body) => body,
            Err(_) => {
                return Answer {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    body: Bytes::from_static(
                        br#"{"error":"the request body is larger than the limit"}"#,
                    ),
                }
            }
        };
        let (status, error) =
            match ferry::server::decode_infer_body(&parts.headers, &body, u64::MAX) {
                Ok(_) => (
                    StatusCode::NOT_FOUND,
                    "decoded; the fuzzed host has no such model".to_owned(),
                ),
                Err(e) => (e.status, e.message),
            };
        Answer {
            status,
            body: Bytes::from(serde_json::json!({ "error": error }).to_string()),
        }
    }

    /// Sends `request` through the router and reads the whole answer.
    pub fn send(&self, request: Request<Body>) -> Answer {
        self.runtime.block_on(async {
            let response = self.router.clone().oneshot(request).await.unwrap();
            let (parts, body) = response.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            Answer {
                status: parts.status,
                body,
            }
        })
    }
}
