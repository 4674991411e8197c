//! The HTTP front door (axum on tokio): routes, the layers every request passes (request id, tracing,
//! body limit), and graceful shutdown. Handlers live beside it: [`oip`] (Open Inference Protocol v2),
//! [`predict`] (feature-style JSON and model listings), [`metrics`] (Prometheus), and on the same
//! port the Open Inference Protocol over gRPC ([`grpc`]), for requests of gRPC's content type.

mod audit;
mod auth;
mod change;
pub mod connections;
mod console;
mod error;
mod grpc;
pub mod intake;
mod management;
mod monitoring;
mod multipart;
pub use crate::serving::metrics;

mod oip;
mod openapi;
mod predict;
mod reads;
pub mod status;
mod trace;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderName, HeaderValue, Request};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

pub use auth::{Identified, Token};
pub use error::ApiError;
pub use management::SHA_HEADER;
pub use predict::VERSION_HEADER;

use crate::registry::Registry;
use crate::serving::Serving;

/// Header carrying the request id (taken from the caller, or made up), returned on every response.
pub const REQUEST_ID: &str = "x-request-id";

/// [`REQUEST_ID`] as a header name: a lookup by a `&str` parses the name first, on every request.
pub(crate) const REQUEST_ID_NAME: HeaderName = HeaderName::from_static(REQUEST_ID);

/// What handlers share: one pointer, cloned by every extractor and layer of every request (a clone
/// of each field's `Arc` instead would cost an atomic increment apiece, on lines both cores touch).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] points to.
pub struct Shared {
    /// Versions and the routing table.
    pub registry: Arc<Registry>,
    /// The protocol-neutral call path every inference route hands its requests to.
    pub serving: Arc<Serving>,
    /// True once the store has been loaded (readiness).
    pub loaded: Arc<AtomicBool>,
    /// Where management actions are recorded.
    audit: crate::registry::audit::AuditLog,
    metrics: PrometheusHandle,
    /// Bytes that inference requests in flight may hold.
    pub intake: intake::RequestBudget,
    /// Largest inference body.
    pub max_body_bytes: usize,
    /// Largest management JSON body.
    pub max_management_body_bytes: usize,
    /// The credentials in force, whose gauges every scrape sets again.
    teams: Arc<crate::teams::Teams>,
}

/// Decodes an Open Inference Protocol request body as `POST .../infer` does once the request is
/// routed (inputs of at most `max_input_bytes`): for fuzzing the decoder without a model.
pub fn decode_infer_body(
    headers: &axum::http::HeaderMap,
    body: &[u8],
    max_input_bytes: u64,
) -> Result<crate::serving::TensorRequest, ApiError> {
    oip::decode(headers, body, max_input_bytes).map(|(_, tensors)| tensors)
}

/// 413 at once for a body whose declared length is over the limit, before any of it is read. (The
/// body limit layer also stops bodies of undeclared length once they pass the limit.)
async fn refuse_declared_oversize(
    State(limit): State<usize>,
    request: Request<axum::body::Body>,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than the limit of {limit} bytes"),
        )
        .into_response();
    }
    next.run(request).await
}

async fn not_found() -> ApiError {
    ApiError::not_found(
        "no such route (see /v2, /v2/models/{model}/infer, /v1/models/{model}/predict, /metrics)",
    )
}

#[utoipa::path(get, path = "/metrics", tag = "reads",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
async fn render_metrics(State(state): State<AppState>) -> impl IntoResponse {
    metrics::sample_sync(&state.registry.sync);
    metrics::sample_memory(state.registry.budget());
    // Set again at every scrape, so the idle timeout never drops them.
    state.teams.publish_metrics();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        metrics::render(&state.metrics, &state.registry.table()),
    )
}

/// How the server is exposed.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Largest request body on inference routes (uploads have their own cap, in the config).
    pub max_body_bytes: usize,
    /// Who may use management routes: credentials from `--admin-token` and the tokens file
    /// (open when neither is given).
    pub teams: Arc<crate::teams::Teams>,
    /// Where management actions are recorded.
    pub audit: crate::registry::audit::AuditLog,
    /// Token required on inference routes, when set.
    pub inference_token: Option<Token>,
    /// What connections and requests may cost (`[http]`).
    pub http: crate::config::HttpSection,
    /// Bytes that inference requests in flight may hold, raw and decoded.
    pub request_bytes_in_flight: u64,
}

fn guarded(router: Router<AppState>, token: &Option<Token>) -> Router<AppState> {
    match token.clone() {
        Some(token) => router.route_layer(axum::middleware::from_fn(move |req, next| {
            auth::require(token.clone(), req, next)
        })),
        None => router,
    }
}

/// How long a `/metrics` series may go without an update before it is dropped (`None`: never).
fn metrics_idle_timeout(config: &crate::config::HostConfig) -> Option<Duration> {
    let seconds = config.host.metrics_idle_timeout_s;
    (seconds > 0).then(|| Duration::from_secs(seconds))
}

/// The application: the routing table and the gRPC service inside the layers every request passes.
/// Bodies keep to the minimum rate where `connections::serve` takes each request in: anything else
/// that serves an [`App`] on a network must hold them to it too.
pub fn router(serving: Arc<Serving>, loaded: Arc<AtomicBool>, options: &ServeOptions) -> App {
    router_exporting(serving, loaded, options, None)
}

/// [`router`], its requests' spans sent to `export`.
fn router_exporting(
    serving: Arc<Serving>,
    loaded: Arc<AtomicBool>,
    options: &ServeOptions,
    export: Option<trace::otlp::Export>,
) -> App {
    let limits = Arc::new(connections::ConnectionLimits::from_config(&options.http));
    let state = app_state(serving, loaded, options);
    let grpc = grpc::GrpcFront::new(
        state.clone(),
        grpc::GrpcOptions {
            inference_token: options.inference_token.clone(),
            limits,
        },
    );
    let tag_routes = export.is_some();
    let protocols = Protocols {
        rest: routes_of(state, options, tag_routes),
        grpc,
    };
    // Wrapped once around the whole table: `Router::layer` would wrap each route in its own boxed
    // copy of every layer, cloned at every request. (Every body keeps to the minimum rate from
    // where the request enters: `connections::serve`.) The request's id, its log span, its stages,
    // `traceparent` and `Server-Timing`: one layer.
    App(tower::Layer::layer(
        &trace::TraceLayer::new(export),
        protocols,
    ))
}

/// The application ([`router`]): the layers every request passes around the two protocols. Not
/// an axum `Router` around them, which would box and clone the whole stack for every request.
#[derive(Clone)]
pub struct App(Layered);

type Layered = trace::Traced<Protocols>;

impl tower::Service<Request<axum::body::Body>> for App {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = <Layered as tower::Service<Request<axum::body::Body>>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<axum::body::Body>) -> Self::Future {
        self.0.call(request)
    }
}

/// One port, two protocols: a request of gRPC's content type goes to the gRPC service, any other
/// to the REST routes.
#[derive(Clone)]
pub struct Protocols {
    rest: Router,
    grpc: grpc::GrpcFront,
}

type GrpcAnswer = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<axum::response::Response, Infallible>> + Send>,
>;

impl tower::Service<Request<axum::body::Body>> for Protocols {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = futures_util::future::Either<
        <Router as tower::Service<Request<axum::body::Body>>>::Future,
        GrpcAnswer,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        tower::Service::<Request<axum::body::Body>>::poll_ready(&mut self.rest, cx)
    }

    fn call(&mut self, request: Request<axum::body::Body>) -> Self::Future {
        use futures_util::future::Either;
        if grpc::is_grpc(&request) {
            Either::Right(self.grpc.call(request))
        } else {
            Either::Left(self.rest.call(request))
        }
    }
}

/// Every route, with the layers of its own group (auth, time and body limits).
#[cfg(test)]
pub(crate) fn routes(
    serving: Arc<Serving>,
    loaded: Arc<AtomicBool>,
    options: &ServeOptions,
) -> Router {
    routes_of(app_state(serving, loaded, options), options, false)
}

/// What every handler shares.
fn app_state(serving: Arc<Serving>, loaded: Arc<AtomicBool>, options: &ServeOptions) -> AppState {
    let idle_timeout = metrics_idle_timeout(serving.registry().config());
    AppState(Arc::new(Shared {
        registry: serving.registry().clone(),
        serving,
        loaded,
        audit: options.audit.clone(),
        metrics: metrics::install(idle_timeout),
        intake: intake::RequestBudget::new(
            options.request_bytes_in_flight,
            Duration::from_millis(options.http.request_bytes_wait_ms),
        ),
        max_body_bytes: options.max_body_bytes,
        max_management_body_bytes: options.http.max_management_body_bytes,
        teams: options.teams.clone(),
    }))
}

/// The REST routes over `state`; with `tag_routes`, each answer carries the route that matched
/// (for the exported span's name: [`trace::tag_route`]).
fn routes_of(state: AppState, options: &ServeOptions, tag_routes: bool) -> Router {
    let limits = connections::ConnectionLimits::from_config(&options.http);
    let request_time = connections::RequestTimeLayer::new(limits.request_timeout);
    let management_body = options.http.max_management_body_bytes;
    let inference = Router::new()
        .route("/v2/models/{model}", get(oip::metadata))
        // Statistics and configs: `reads::routes`.
        .route("/v2/models/{model}/ready", get(oip::model_ready))
        .route("/v2/models/{model}/infer", post(oip::infer))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(oip::metadata_version),
        )
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(oip::model_version_ready),
        )
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(oip::infer_version),
        )
        .route("/v1/models/{model}/predict", post(predict::predict))
        .route(
            "/v1/models/{model}/versions/{version}/predict",
            post(predict::predict_version),
        )
        // No body limit layers: each route reads its body through `intake::read_body`, under the
        // host's and the model's limits, after routing (a layer would cost every request a boxed
        // copy of itself).
        .route_layer(request_time);
    let management = Router::new()
        .route("/v1/models", get(predict::list))
        .route("/v1/models/{model}", get(predict::describe))
        .route(
            "/v1/models/{model}/versions/{version}",
            axum::routing::delete(management::delete_version),
        )
        .route(
            "/v1/models/{model}/aliases/{alias}",
            axum::routing::put(management::set_alias),
        )
        .route(
            "/v1/models/{model}/traffic",
            axum::routing::put(management::set_traffic).get(management::traffic),
        )
        .route(
            "/v1/models/{model}/aliases/{alias}/rollback",
            post(management::rollback),
        )
        .route("/v1/fleet", get(management::fleet))
        .route("/v1/audit", get(audit::list))
        .merge(console::reads())
        .route("/v2/repository/index", post(management::repository_index))
        .route(
            "/v2/repository/models/{model}/load",
            post(management::repository_load),
        )
        .route(
            "/v2/repository/models/{model}/unload",
            post(management::repository_unload),
        )
        // JSON documents: small bodies, refused from their declared length before a byte is read.
        .layer(DefaultBodyLimit::max(management_body))
        .route_layer(axum::middleware::from_fn_with_state(
            management_body,
            refuse_declared_oversize,
        ))
        .route_layer(request_time);
    // Uploads stream to disk under their own cap (config `max_upload_bytes`) and time limit.
    let uploads = Router::new()
        .route(
            "/v1/models/{model}/versions/{version}",
            axum::routing::put(management::put_version),
        )
        .layer(DefaultBodyLimit::disable())
        .route_layer(connections::RequestTimeLayer::new(limits.upload_timeout));
    let open = Router::new()
        .route("/v2", get(oip::server_metadata))
        // The OIP REST specification writes the server-metadata path with a trailing slash.
        .route("/v2/", get(oip::server_metadata))
        .route("/v2/health/live", get(oip::live))
        .route("/v2/health/ready", get(oip::ready))
        .route("/openapi.json", get(openapi::serve_document))
        .merge(console::pages());
    let all = open
        .merge(guarded(inference, &options.inference_token))
        // `/metrics`, statistics and configs, under the read rules.
        .merge(reads::routes(options))
        .merge(auth::identified(management.merge(uploads), options));
    // Only when spans are exported: a layer costs every request a boxed future.
    let all = if tag_routes {
        all.route_layer(axum::middleware::from_fn(trace::tag_route))
    } else {
        all
    };
    all.fallback(not_found).with_state(state)
}

/// Serves until SIGINT/SIGTERM, then stops accepting and drains in-flight requests. Readiness
/// follows the first sync with the store (see [`crate::registry::sync`]); syncing goes on in the
/// background for as long as the server runs.
pub async fn serve(
    serving: Arc<Serving>,
    listen: SocketAddr,
    options: ServeOptions,
    sync: crate::registry::sync::SyncOptions,
) -> anyhow::Result<()> {
    let loaded = Arc::new(AtomicBool::new(false));
    let registry = serving.registry().clone();
    let export = trace::otlp::Export::from_env()?;
    if export.is_some() {
        tracing::info!("exporting request spans over OTLP (OTEL_EXPORTER_OTLP_ENDPOINT)");
    }
    let app = router_exporting(serving.clone(), loaded.clone(), &options, export.clone());
    let limits = connections::ConnectionLimits::from_config(&options.http);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    tracing::info!(address = %listener.local_addr()?, store = %registry.store().describe(), "listening");
    // Liveness answers at once; readiness waits for the store to load.
    let host = sync.host.clone();
    let mut syncer = crate::registry::sync::Syncer::new(registry.clone(), sync);
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let syncing = tokio::spawn(async move {
        let started = syncer.start().await;
        let ok = started.is_ok();
        let _ = started_tx.send(started);
        if ok {
            loaded.store(true, Ordering::Release);
            syncer.run().await;
        }
    });
    let server = connections::serve(listener, app, limits, shutdown_signal());
    let mut server = tokio::spawn(async move { server.await });
    let (mut started_rx, mut starting) = (started_rx, true);
    let served = loop {
        tokio::select! {
            served = &mut server => break served,
            started = &mut started_rx, if starting => {
                starting = false;
                if let Ok(Err(e)) = started {
                    server.abort();
                    send_spans(export).await;
                    return Err(e);
                }
            }
        }
    };
    syncing.abort();
    // A host that stops on purpose leaves the fleet's status; one that dies shows as not alive.
    let leave = registry.store().remove_host(&host);
    if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(2), leave).await {
        tracing::debug!(error = %e, "cannot remove this host's status from the store");
    }
    let served = served
        .map_err(|e| anyhow::anyhow!("the server task failed: {e}"))
        .and_then(|served| served.map_err(anyhow::Error::from));
    if let Err(e) = served {
        send_spans(export).await;
        return Err(e);
    }
    // What was answered is logged before the host goes (after the drain deadline too).
    let log = serving.clone();
    let flushed = tokio::task::spawn_blocking(move || log.log().close(Duration::from_secs(10)))
        .await
        .unwrap_or(false);
    if !flushed {
        tracing::warn!("the prediction log did not finish writing within 10 s");
    }
    send_spans(export).await;
    tracing::info!("drained; bye");
    Ok(())
}

/// Sends the spans still queued, at most 5 s, however `serve` ends (the exporter's thread sends them
/// with this runtime's client; waiting for it off the async workers).
async fn send_spans(export: Option<trace::otlp::Export>) {
    if let Some(export) = export {
        let _ = tokio::task::spawn_blocking(move || export.shutdown(Duration::from_secs(5))).await;
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down: draining in-flight requests");
}
