//! The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`, KServe's
//! `grpc_predict_v2.proto` with the Triton extensions its clients call) and `grpc.health.v1`, on
//! the HTTP port: a request whose content type is `application/grpc` comes here (HTTP/2 without
//! TLS, "prior knowledge", as gRPC clients speak it to a plain port), every other one goes to the
//! REST routes.
//!
//! A translation only, as the REST front end is: every inference goes through the same
//! protocol-neutral call ([`crate::serving::Serving::admit`] and [`crate::serving::Ticket::call`]),
//! so splits, sticky routing keys (metadata `ferry-routing-key`), shadows, the prediction log,
//! metering, CPU shares and the breaker apply as they do over HTTP; tokens come from the
//! `authorization` metadata under the same rules as the REST routes of the same kind (inference,
//! reads, management, with the same audit records); errors are the REST errors' messages under the
//! gRPC code of their HTTP status ([`status`]).
//!
//! What a call may cost is bounded before it is decoded, as over HTTP: a unary call's message is
//! read under the host's byte budget, its size limit and minimum rate ([`intake`]) before tonic
//! decodes it, and the call is held to the host's request time limit. A stream's messages are
//! bounded one by one (size; at most [`STREAM_DEPTH`] in flight per stream).

mod health;
mod status;
mod tensors;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request as HttpRequest, Response as HttpResponse};
use futures_util::Stream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use super::auth::{count_refusal, Identified, Token};
use super::change::{act, Change};
use super::error::ApiError;
use super::reads::{decide, Read, Verdict};
use super::{connections, intake, oip, AppState};
use crate::serving::{Infer, RequestKeys};

/// The protocol's messages and the service's server side, generated from `host/proto/inference.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("inference");
}

use pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};

/// Requests of one `ModelStreamInfer` stream in hand at once (answered in order).
pub const STREAM_DEPTH: usize = 4;

/// The service's name, as paths and health checks give it.
const SERVICE: &str = "inference.GRPCInferenceService";

/// Largest message of a `ModelStreamInfer` stream (gRPC's own default): each open stream holds
/// that much of the host's byte budget, for the message tonic buffers while it arrives.
pub const MAX_STREAM_MESSAGE: usize = 4 << 20;

/// Largest health check request (a service name).
const MAX_HEALTH_MESSAGE: usize = 1 << 10;

/// What the gRPC front end needs of the host's HTTP settings.
#[derive(Clone)]
pub(super) struct GrpcOptions {
    /// The inference routes' token, when set.
    pub inference_token: Option<Token>,
    /// What a request may take and how fast its body must come.
    pub limits: Arc<connections::ConnectionLimits>,
}

/// The gRPC side of the port: a service over `http::Request`s whose content type is gRPC.
#[derive(Clone)]
pub(super) struct GrpcFront {
    /// The methods, for their rules before a message is read.
    rules: Inference,
    /// Unary calls, whose messages are read whole (under the host's limits) before tonic sees them.
    unary: GrpcInferenceServiceServer<Inference>,
    /// Streams, whose messages tonic reads as they come, each at most [`MAX_STREAM_MESSAGE`].
    streams: GrpcInferenceServiceServer<Inference>,
    health: tonic_health::pb::health_server::HealthServer<health::Checks>,
    state: AppState,
    limits: Arc<connections::ConnectionLimits>,
}

/// True for a request gRPC's framing is meant for.
pub(super) fn is_grpc<B>(request: &HttpRequest<B>) -> bool {
    request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Who may call a method: the rules of the REST routes of the same kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// Health and server metadata.
    Open,
    /// Inference and model metadata: the inference token, when set.
    Inference,
    /// Configs and statistics: the read rules.
    Read,
    /// The model repository: a management credential.
    Manage,
}

fn rule_of(method: &str) -> Option<Rule> {
    Some(match method {
        "ServerLive" | "ServerReady" | "ServerMetadata" => Rule::Open,
        "ModelReady" | "ModelMetadata" | "ModelInfer" | "ModelStreamInfer" => Rule::Inference,
        "ModelConfig" | "ModelStatistics" => Rule::Read,
        "RepositoryIndex" | "RepositoryModelLoad" | "RepositoryModelUnload" => Rule::Manage,
        _ => return None,
    })
}

impl GrpcFront {
    pub(super) fn new(state: AppState, options: GrpcOptions) -> GrpcFront {
        let rules = Inference {
            state: state.clone(),
            inference_token: options.inference_token,
            request_timeout: options.limits.request_timeout,
            idle_timeout: options.limits.header_timeout,
        };
        // A unary message holds at most what an HTTP body may (its 5-byte frame header aside).
        let unary = GrpcInferenceServiceServer::new(rules.clone())
            .max_decoding_message_size(state.max_body_bytes);
        let streams = GrpcInferenceServiceServer::new(rules.clone())
            .max_decoding_message_size(MAX_STREAM_MESSAGE.min(state.max_body_bytes));
        let health = tonic_health::pb::health_server::HealthServer::new(health::Checks {
            loaded: state.loaded.clone(),
        })
        .max_decoding_message_size(MAX_HEALTH_MESSAGE);
        GrpcFront {
            rules,
            unary,
            streams,
            health,
            state,
            limits: options.limits,
        }
    }

    /// Answers one gRPC request (errors are gRPC statuses in an HTTP 200, as gRPC has them).
    pub(super) fn call(
        &self,
        request: HttpRequest<Body>,
    ) -> Pin<Box<dyn Future<Output = Result<HttpResponse<Body>, Infallible>> + Send>> {
        use tower::Service;
        let this = self.clone();
        Box::pin(async move {
            let path = request.uri().path();
            if path.starts_with("/grpc.health.v1.Health/") {
                // Its one small request read first, so tonic buffers nothing of a caller's choosing.
                let (request, _held) = match this.read_whole(request, MAX_HEALTH_MESSAGE + 5).await
                {
                    Ok(read) => read,
                    Err(status) => return Ok(status.into_http()),
                };
                let mut health = this.health.clone();
                let response = health.call(request).await?;
                return Ok(response.map(Body::new));
            }
            // Refused before a byte of the message is read: a method nobody serves, a caller
            // without the credential its kind of method needs.
            let method = path
                .strip_prefix("/inference.GRPCInferenceService/")
                .unwrap_or_default();
            let Some(rule) = rule_of(method) else {
                return Ok(Status::unimplemented(format!("no gRPC method {path} here")).into_http());
            };
            if let Err(status) = this.rules.allowed(rule, request.headers(), method) {
                return Ok(status.into_http());
            }
            let caller = match caller_timeout(request.headers()) {
                Ok(caller) => caller,
                Err(status) => return Ok(status.into_http()),
            };
            if rule == Rule::Inference && method == "ModelStreamInfer" {
                let mut request = request;
                // Up to 99,999,999 hours: a deadline past what the clock holds is none.
                if let Some(at) = caller.and_then(|t| tokio::time::Instant::now().checked_add(t)) {
                    request.extensions_mut().insert(CallerDeadline(at));
                }
                let mut streams = this.streams.clone();
                let response = streams.call(request).await?;
                return Ok(response.map(Body::new));
            }
            Ok(this.unary(request, caller).await)
        })
    }

    /// `request` with its body read whole, at most `limit` bytes, under the host's byte budget and
    /// minimum rate; the budget's share is held until the [`intake::Held`] is dropped.
    async fn read_whole(
        &self,
        request: HttpRequest<Body>,
        limit: usize,
    ) -> Result<(HttpRequest<Body>, intake::Held), Status> {
        let (parts, body) = request.into_parts();
        let body = connections::rate_limited(body, &self.limits);
        // What decoding may take: protobuf's packed integers widen to at most 8 bytes an element,
        // and the tensors are made from the message (moved where they can be).
        let (bytes, held) =
            intake::read_body(&self.state.intake, &parts.headers, body, limit, |raw| {
                raw.saturating_mul(5)
            })
            .await
            .map_err(status::of)?;
        Ok((HttpRequest::from_parts(parts, Body::from(bytes)), held))
    }

    /// A unary call: its message read whole under the host's limits, then decoded and answered,
    /// all within the request time limit.
    async fn unary(
        self,
        request: HttpRequest<Body>,
        caller: Option<std::time::Duration>,
    ) -> HttpResponse<Body> {
        use tower::Service;
        let host = self.limits.request_timeout;
        let (within, whose) = match caller {
            Some(caller) if caller < host => (caller, "the caller's deadline (grpc-timeout)"),
            _ => (host, "the host's limit"),
        };
        let limit = self.state.max_body_bytes + 5;
        let received = std::time::Instant::now();
        let answer = async {
            let (request, _held) = self.read_whole(request, limit).await?;
            // A call that finishes without yielding is never cut short by the timer: one whose
            // caller's deadline passed while its message came is not started at all.
            if let Some(caller) = caller.filter(|caller| received.elapsed() >= *caller) {
                return Err(Status::deadline_exceeded(format!(
                    "the caller's deadline (grpc-timeout) of {caller:?} passed before the call began"
                )));
            }
            let mut unary = self.unary.clone();
            match unary.call(request).await {
                Ok(response) => Ok::<_, Status>(response.map(Body::new)),
                Err(never) => match never {},
            }
        };
        match tokio::time::timeout(within, answer).await {
            Ok(Ok(response)) => response,
            Ok(Err(status)) => status.into_http(),
            Err(_) => Status::deadline_exceeded(format!(
                "the request took longer than {whose} of {within:?}"
            ))
            .into_http(),
        }
    }
}

/// When a stream's caller stops waiting (its `grpc-timeout`), for the stream's task.
#[derive(Debug, Clone, Copy)]
struct CallerDeadline(tokio::time::Instant);

/// The caller's deadline for the whole call, from its `grpc-timeout` header (gRPC over HTTP/2: one
/// to eight digits and a unit, `H`, `M`, `S`, `m`, `u` or `n`); none without one. It bounds what the
/// call waits for (the queue, a batch, its answer); a guest call already running ends at the model's
/// own deadline, its answer dropped.
fn caller_timeout(headers: &axum::http::HeaderMap) -> Result<Option<std::time::Duration>, Status> {
    use std::time::Duration;
    let Some(value) = headers.get("grpc-timeout") else {
        return Ok(None);
    };
    let parsed = value
        .to_str()
        .ok()
        .filter(|t| (2..=9).contains(&t.len()) && t.is_ascii())
        .and_then(|t| {
            let (digits, unit) = t.split_at(t.len() - 1);
            if !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let n: u64 = digits.parse().ok()?;
            Some(match unit {
                "H" => Duration::from_secs(n * 3600),
                "M" => Duration::from_secs(n * 60),
                "S" => Duration::from_secs(n),
                "m" => Duration::from_millis(n),
                "u" => Duration::from_micros(n),
                "n" => Duration::from_nanos(n),
                _ => return None,
            })
        });
    match parsed {
        Some(timeout) => Ok(Some(timeout)),
        None => Err(Status::invalid_argument(format!(
            "grpc-timeout {value:?} is not one to eight digits and a unit (H, M, S, m, u, n)"
        ))),
    }
}

/// The inference service: each method a translation onto the host's own calls.
#[derive(Clone)]
pub(super) struct Inference {
    state: AppState,
    inference_token: Option<Token>,
    /// Longest a stream's message may take to answer.
    request_timeout: std::time::Duration,
    /// Longest a stream may wait for its caller's next message.
    idle_timeout: std::time::Duration,
}

/// The bearer token of a call's `authorization` metadata.
fn bearer(metadata: &MetadataMap) -> Option<&str> {
    super::auth::bearer_of(metadata.get("authorization")?.to_str().ok()?)
}

fn text(metadata: &MetadataMap, name: &str) -> Option<String> {
    metadata
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A method's path, for refusal counts (a bounded label).
fn route(method: &str) -> String {
    format!("/{SERVICE}/{method}")
}

/// `Some(name)` unless `name` is empty (the protocol's "not given").
fn given(name: &str) -> Option<&str> {
    (!name.is_empty()).then_some(name)
}

impl Inference {
    /// Whether the caller that sent `headers` may call `method` under `rule` (before its message
    /// is read; a management method checks the caller's scope once it knows the model).
    fn allowed(
        &self,
        rule: Rule,
        headers: &axum::http::HeaderMap,
        method: &str,
    ) -> Result<(), Status> {
        let token = super::auth::bearer(headers);
        match rule {
            Rule::Open => Ok(()),
            Rule::Inference => self.infer_allowed(token, method),
            Rule::Read => self.read_allowed(token, method),
            Rule::Manage => self.identify(token, None, method).map(drop),
        }
    }

    /// As the REST inference routes: the inference token when one is set.
    fn infer_allowed(&self, token: Option<&str>, method: &str) -> Result<(), Status> {
        let Some(wanted) = &self.inference_token else {
            return Ok(());
        };
        if token.is_some_and(|given| wanted.matches(given)) {
            return Ok(());
        }
        count_refusal(axum::http::StatusCode::UNAUTHORIZED, &route(method));
        Err(Status::unauthenticated("missing or wrong bearer token"))
    }

    /// As the REST statistics and configs: the read rules ([`super::reads`]).
    fn read_allowed(&self, token: Option<&str>, method: &str) -> Result<(), Status> {
        let what = route(method);
        let verdict = decide(
            Read::Models,
            &what,
            &self.state.teams,
            self.inference_token.as_ref(),
            token,
        );
        match verdict {
            Verdict::Allowed => Ok(()),
            Verdict::Unauthorized(message) => {
                count_refusal(axum::http::StatusCode::UNAUTHORIZED, &what);
                Err(Status::unauthenticated(message))
            }
            Verdict::Forbidden { actor, reason } => {
                count_refusal(axum::http::StatusCode::FORBIDDEN, &what);
                tracing::warn!(actor, route = what, reason = %reason, "read refused");
                Err(Status::permission_denied(reason))
            }
        }
    }

    /// As the REST management routes: the caller identified by a credential that may manage.
    fn identify(
        &self,
        token: Option<&str>,
        request_id: Option<String>,
        method: &str,
    ) -> Result<Identified, Status> {
        let what = route(method);
        let caller = self.state.teams.authenticate(token).map_err(|e| {
            count_refusal(axum::http::StatusCode::UNAUTHORIZED, &what);
            Status::unauthenticated(e.to_string())
        })?;
        if caller.scrape_only() {
            count_refusal(axum::http::StatusCode::FORBIDDEN, &what);
            let reason = caller.may_read(&what).err().unwrap_or_default();
            return Err(Status::permission_denied(reason));
        }
        let request_id = request_id.map(|id| id.chars().take(128).collect());
        Ok(Identified::new(
            caller,
            request_id,
            self.state.audit.clone(),
        ))
    }

    /// [`Inference::identify`] from a call's metadata.
    fn identify_call(&self, metadata: &MetadataMap, method: &str) -> Result<Identified, Status> {
        self.identify(bearer(metadata), text(metadata, super::REQUEST_ID), method)
    }

    /// One inference through the host's call path; `keys` as the call's metadata gave them.
    async fn infer(
        &self,
        mut request: pb::ModelInferRequest,
        mut keys: RequestKeys,
    ) -> Result<Response<pb::ModelInferResponse>, ApiError> {
        if keys.request_id.is_none() && !request.id.is_empty() {
            keys.request_id = Some(request.id.chars().take(128).collect());
        }
        let serving = &self.state.serving;
        let version = given(&request.model_version);
        let ticket = serving.admit(&request.model_name, version, &keys, "infer", None)?;
        let max_input = ticket.version().limits.max_input_bytes as u64;
        let (tensors, contents) = tensors::request(&mut request, max_input)?;
        let requested = tensors.outputs.clone();
        let answer = ticket
            .call::<Infer>(serving, Arc::new(tensors), keys)
            .await?;
        let manifest = &answer.version.manifest;
        let encoding = std::time::Instant::now();
        let reply = tensors::response(
            &request.model_name,
            &manifest.version,
            request.id,
            &requested,
            &answer.output,
            contents,
        );
        crate::timing::record(crate::timing::Stage::Encode, encoding.elapsed());
        let mut response = Response::new(reply);
        if let Ok(version) = manifest.version.parse() {
            response
                .metadata_mut()
                .insert(super::predict::VERSION_HEADER, version);
        }
        Ok(response)
    }
}

impl Inference {
    /// A stream's messages taken as they come (at most [`STREAM_DEPTH`] in hand), each answered on
    /// a task of its own, the answers handed to `answers` in order. Ends when the caller's side
    /// does and every answer is out; when an answer waits longer than the request time limit for
    /// the caller to take it; when the stream's framing breaks; or when no message comes for the
    /// idle timeout while nothing is in hand. The answers in hand when it ends are aborted.
    async fn run_stream(
        self,
        mut inbound: Streaming<pb::ModelInferRequest>,
        keys: RequestKeys,
        answers: tokio::sync::mpsc::Sender<Result<pb::ModelStreamInferResponse, Status>>,
    ) {
        let (within, idle) = (self.request_timeout, self.idle_timeout);
        let mut in_hand: std::collections::VecDeque<Aborting<pb::ModelStreamInferResponse>> =
            std::collections::VecDeque::new();
        let mut open = true;
        while open || !in_hand.is_empty() {
            let taking = open && in_hand.len() < STREAM_DEPTH;
            let idle_wait = in_hand.is_empty();
            tokio::select! {
                done = async { in_hand.front_mut().expect("an answer in hand").await },
                    if !in_hand.is_empty() =>
                {
                    in_hand.pop_front();
                    let answer =
                        done.map_err(|e| Status::internal(format!("the answer failed: {e}")));
                    if answers.send_timeout(answer, within).await.is_err() {
                        return; // not read in time, or the caller went away
                    }
                }
                message = async {
                    if idle_wait {
                        tokio::time::timeout(idle, inbound.message())
                            .await
                            .unwrap_or_else(|_| {
                                Err(Status::deadline_exceeded(format!(
                                    "no message on the stream for {idle:?}"
                                )))
                            })
                    } else {
                        inbound.message().await
                    }
                }, if taking => {
                    match message {
                        Ok(Some(request)) => in_hand.push_back(Aborting(tokio::spawn(
                            self.clone().answer_in_stream(request, keys.clone()),
                        ))),
                        Ok(None) => open = false,
                        Err(status) => {
                            let _ = answers.send_timeout(Err(status), within).await;
                            return;
                        }
                    }
                }
            }
        }
    }

    /// One message of a stream answered, within the request time limit; a failure is an answer
    /// that says why.
    async fn answer_in_stream(
        self,
        request: pb::ModelInferRequest,
        keys: RequestKeys,
    ) -> pb::ModelStreamInferResponse {
        let (model_name, id) = (request.model_name.clone(), request.id.clone());
        let within = self.request_timeout;
        // The message's share of the host's byte budget, held while it is answered.
        let size = prost::Message::encoded_len(&request) as u64;
        let answer = tokio::time::timeout(within, async {
            let _held = self.state.intake.hold(size.saturating_mul(5)).await?;
            self.infer(request, keys).await
        })
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::new(
                axum::http::StatusCode::GATEWAY_TIMEOUT,
                format!("the request took longer than the host's limit of {within:?}"),
            ))
        });
        match answer {
            Ok(response) => pb::ModelStreamInferResponse {
                error_message: String::new(),
                infer_response: Some(response.into_inner()),
            },
            Err(e) => pb::ModelStreamInferResponse {
                error_message: e.message,
                infer_response: Some(pb::ModelInferResponse {
                    model_name,
                    id,
                    ..Default::default()
                }),
            },
        }
    }
}

/// A task's handle that aborts the task when dropped (an answer nobody will read stops).
struct Aborting<T>(tokio::task::JoinHandle<T>);

impl<T> Future for Aborting<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for Aborting<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The caller's keys as its metadata gives them (as the REST headers of the same names).
fn keys(metadata: &MetadataMap) -> RequestKeys {
    RequestKeys {
        request_id: text(metadata, super::REQUEST_ID),
        routing_key: text(metadata, super::predict::ROUTING_KEY_HEADER),
    }
}

fn tensor_metadata(
    specs: &[crate::runtime::TensorSpec],
) -> Vec<pb::model_metadata_response::TensorMetadata> {
    specs
        .iter()
        .map(|s| pb::model_metadata_response::TensorMetadata {
            name: s.name.clone(),
            datatype: crate::tensor::datatype_name(s.datatype).to_owned(),
            shape: s.shape.clone(),
        })
        .collect()
}

/// Triton's configuration datatype of an OIP datatype name (`TYPE_STRING` for BYTES).
fn config_type(spec: &crate::runtime::TensorSpec) -> i32 {
    let name = oip::triton_type(spec);
    pb::DataType::from_str_name(&name).map_or(0, |t| t as i32)
}

fn statistic(count: u64, ns: u64) -> Option<pb::StatisticDuration> {
    Some(pb::StatisticDuration { count, ns })
}

/// Every method is reached through [`GrpcFront::call`], which has checked its caller's credential
/// by the method's [`Rule`] before a byte of its message was read; a management method identifies
/// its caller again here, for the audit record.
#[tonic::async_trait]
impl GrpcInferenceService for Inference {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        let ready = self.state.loaded.load(std::sync::atomic::Ordering::Acquire);
        Ok(Response::new(pb::ServerReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: "ferry".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: oip::EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    /// Ready when a version serves it; `false` otherwise (unknown, failed, loading, unloaded), as
    /// Triton answers: a readiness probe gets an answer, not an error.
    async fn model_ready(
        &self,
        request: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let r = request.get_ref();
        let ready = self
            .state
            .registry
            .table()
            .resolve(&r.name, given(&r.version))
            .is_ok();
        Ok(Response::new(pb::ModelReadyResponse { ready }))
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let r = request.into_inner();
        let table = self.state.registry.table();
        let routed = table
            .resolve(&r.name, given(&r.version))
            .map_err(ApiError::from)?;
        let metadata = &routed.ready.metadata;
        Ok(Response::new(pb::ModelMetadataResponse {
            versions: oip::ready_versions(&table, &r.name),
            name: r.name,
            platform: metadata.platform.clone(),
            inputs: tensor_metadata(&metadata.inputs),
            outputs: tensor_metadata(&metadata.outputs),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let keys = keys(request.metadata());
        Ok(self.infer(request.into_inner(), keys).await?)
    }

    type ModelStreamInferStream =
        Pin<Box<dyn Stream<Item = Result<pb::ModelStreamInferResponse, Status>> + Send>>;

    /// Each request of the stream answered in order, a failed one by a message that says why (the
    /// stream goes on); the stream ends when the caller's does, when its framing breaks, or when no
    /// message comes for the host's header timeout while none is in hand. While open, the stream holds
    /// [`MAX_STREAM_MESSAGE`] of the host's byte budget (the message tonic buffers as it arrives),
    /// from the half open streams may hold together (past it a new stream is UNAVAILABLE);
    /// each message in hand holds its own share besides. Each message is answered on a task of its
    /// own under the request time limit, so a caller that stops reading its answers (an HTTP/2
    /// window never opened) holds no queue place and no instance, and an answer it does not take
    /// within the request time limit ends the stream (see [`Inference::run_stream`]); a caller
    /// that resets the stream stops its answers in hand.
    async fn model_stream_infer(
        &self,
        request: Request<Streaming<pb::ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        let keys = keys(request.metadata());
        let opened = self
            .state
            .intake
            .hold_stream(MAX_STREAM_MESSAGE.min(self.state.max_body_bytes) as u64)
            .await?;
        let (answers, to_caller) = tokio::sync::mpsc::channel(STREAM_DEPTH);
        let this = self.clone();
        let deadline = request.extensions().get::<CallerDeadline>().copied();
        let inbound = request.into_inner();
        // The stream runs on a task of its own, so that what bounds it does not depend on the
        // caller reading: an answer the caller does not take within the request time limit ends
        // the stream, and with it the answers still in hand and the stream's share of the budget.
        tokio::spawn(async move {
            let _opened = opened;
            let Some(CallerDeadline(at)) = deadline else {
                return this.run_stream(inbound, keys, answers).await;
            };
            // The caller's deadline bounds the whole stream: past it, the answers in hand are
            // aborted and the stream ends saying why.
            let within = this.request_timeout;
            let ends = answers.clone();
            if tokio::time::timeout_at(at, this.run_stream(inbound, keys, answers))
                .await
                .is_err()
            {
                let status = Status::deadline_exceeded(
                    "the caller's deadline (grpc-timeout) passed; the stream ended",
                );
                let _ = ends.send_timeout(Err(status), within).await;
            }
        });
        let answers = futures_util::stream::unfold(to_caller, |mut to_caller| async move {
            to_caller.recv().await.map(|answer| (answer, to_caller))
        });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn model_config(
        &self,
        request: Request<pb::ModelConfigRequest>,
    ) -> Result<Response<pb::ModelConfigResponse>, Status> {
        let r = request.into_inner();
        let v = self
            .state
            .registry
            .table()
            .resolve(&r.name, given(&r.version))
            .map_err(ApiError::from)?;
        let metadata = &v.ready.metadata;
        let config = pb::ModelConfig {
            name: r.name,
            platform: metadata.platform.clone(),
            backend: "ferry".into(),
            // Batching is the model's own (the leading dimension), not the server's.
            max_batch_size: 0,
            input: metadata
                .inputs
                .iter()
                .map(|s| pb::ModelInput {
                    name: s.name.clone(),
                    data_type: config_type(s),
                    dims: s.shape.clone(),
                })
                .collect(),
            output: metadata
                .outputs
                .iter()
                .map(|s| pb::ModelOutput {
                    name: s.name.clone(),
                    data_type: config_type(s),
                    dims: s.shape.clone(),
                })
                .collect(),
            instance_group: vec![pb::ModelInstanceGroup {
                name: String::new(),
                count: v.limits.max_instances.min(i32::MAX as usize) as i32,
                kind: pb::model_instance_group::Kind::from_str_name("KIND_CPU")
                    .map_or(0, |k| k as i32),
            }],
            scheduling_choice: None,
        };
        Ok(Response::new(pb::ModelConfigResponse {
            config: Some(config),
        }))
    }

    async fn model_statistics(
        &self,
        request: Request<pb::ModelStatisticsRequest>,
    ) -> Result<Response<pb::ModelStatisticsResponse>, Status> {
        let r = request.into_inner();
        let table = self.state.registry.table();
        let versions = oip::stats_versions(&table, given(&r.name), given(&r.version))?;
        let model_stats = versions
            .iter()
            .map(|v| {
                let c = oip::Counts::of(v);
                pb::ModelStatistics {
                    name: v.manifest.model.clone(),
                    version: v.manifest.version.clone(),
                    last_inference: c.last_unix_ms,
                    inference_count: c.inferences,
                    execution_count: c.executions,
                    inference_stats: Some(pb::InferStatistics {
                        success: statistic(c.succeeded, c.succeeded_ns),
                        fail: statistic(c.failed, c.failed_ns),
                        queue: statistic(c.calls, c.queue_ns),
                        compute_input: statistic(0, 0),
                        compute_infer: statistic(c.calls, c.compute_ns),
                        compute_output: statistic(0, 0),
                    }),
                    batch_stats: c
                        .batches
                        .iter()
                        .map(|&(rows, calls, ns)| pb::InferBatchStatistics {
                            batch_size: rows,
                            compute_input: statistic(0, 0),
                            compute_infer: statistic(calls, ns),
                            compute_output: statistic(0, 0),
                        })
                        .collect(),
                }
            })
            .collect();
        Ok(Response::new(pb::ModelStatisticsResponse { model_stats }))
    }

    async fn repository_index(
        &self,
        request: Request<pb::RepositoryIndexRequest>,
    ) -> Result<Response<pb::RepositoryIndexResponse>, Status> {
        self.identify_call(request.metadata(), "RepositoryIndex")?;
        let only_ready = request.get_ref().ready;
        let table = self.state.registry.table();
        let models = table
            .versions()
            .filter(|v| !only_ready || v.is_ready())
            .map(|v| pb::repository_index_response::ModelIndex {
                name: v.manifest.model.clone(),
                version: v.manifest.version.clone(),
                state: v.state.name().to_uppercase(),
                reason: v.state.reason().unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        request: Request<pb::RepositoryModelLoadRequest>,
    ) -> Result<Response<pb::RepositoryModelLoadResponse>, Status> {
        let caller = self.identify_call(request.metadata(), "RepositoryModelLoad")?;
        let model = request.into_inner().model_name;
        let change = Change::<act::LoadModel>::ask(caller, model.clone()).await?;
        let (registry, m) = (self.state.registry.clone(), model.clone());
        change
            .run(|record| async move {
                registry.load_model(&m).await?;
                Ok(((), record))
            })
            .await?;
        // Loaded (and recorded) either way; whether anything serves is this answer's to say.
        if let Some(why) = self.state.registry.not_serving(&model) {
            return Err(ApiError::from(why).into());
        }
        Ok(Response::new(pb::RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        request: Request<pb::RepositoryModelUnloadRequest>,
    ) -> Result<Response<pb::RepositoryModelUnloadResponse>, Status> {
        let caller = self.identify_call(request.metadata(), "RepositoryModelUnload")?;
        let model = request.into_inner().model_name;
        let change = Change::<act::UnloadModel>::ask(caller, model.clone()).await?;
        let registry = self.state.registry.clone();
        change
            .run(|record| async move {
                registry.unload_model(&model).await?;
                Ok(((), record))
            })
            .await?;
        Ok(Response::new(pb::RepositoryModelUnloadResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::caller_timeout;
    use axum::http::{HeaderMap, HeaderValue};
    use std::time::Duration;

    fn timeout(value: &str) -> Result<Option<Duration>, String> {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-timeout", HeaderValue::from_str(value).unwrap());
        caller_timeout(&headers).map_err(|s| s.message().to_owned())
    }

    #[test]
    fn a_grpc_timeout_is_read_in_every_unit_and_a_malformed_one_refused() {
        assert_eq!(caller_timeout(&HeaderMap::new()).unwrap(), None);
        for (value, want) in [
            ("1H", Duration::from_secs(3600)),
            ("2M", Duration::from_secs(120)),
            ("3S", Duration::from_secs(3)),
            ("250m", Duration::from_millis(250)),
            ("99999999u", Duration::from_micros(99_999_999)),
            ("7n", Duration::from_nanos(7)),
            ("99999999H", Duration::from_secs(99_999_999 * 3600)),
        ] {
            assert_eq!(timeout(value), Ok(Some(want)), "{value}");
        }
        for bad in ["", "m", "100", "123456789m", "1.5S", "-1S", "10x", "1 S"] {
            let e = timeout(bad).unwrap_err();
            assert!(e.contains("one to eight digits"), "{bad:?}: {e}");
        }
    }
}
