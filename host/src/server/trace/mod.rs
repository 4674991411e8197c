//! Traces at the front door, for every route and both protocols:
//! - a W3C `traceparent` on a request is honoured: the request's log span carries its trace id, and
//!   the answer's `traceparent` continues the trace (same trace id and flags, this server's span
//!   id in place of the caller's);
//! - with `ferry-timing: true` on the request, the answer's `Server-Timing` header gives each stage
//!   the request went through (route, queue, instance, guest, graph, encode; `crate::timing`) and
//!   the total, in milliseconds;
//! - with the log at debug level for `ferry::timing`, every request's stages are logged.
//!
//! - with `OTEL_EXPORTER_OTLP_ENDPOINT` set, every request's span is exported over OTLP
//!   ([`otlp`]), continuing the caller's trace, and the answer's `traceparent` names it.
//!
//! Every request also runs in a `request` log span carrying its id (and the caller's trace id, when
//! it sent one), so a model's log lines and the host's warnings name the request they came from;
//! an answer of 500 or more is logged at error level with its method, path, status and latency.
//! The span's fields are formatted when it opens whenever the log takes info (the default), so it
//! holds only what a line needs to be found: the method and path are formatted for a failure only
//! (with them, and colours on, the span cost a sixth of a small model's request).
//!
//! A request with none of the above passes through with three header lookups (its id, which is
//! made up here when the caller sent none, and the two above), its span, and (for a failure's line)
//! its method and URI held by reference count: no copy of either.

pub mod otlp;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use axum::body::Body;
use axum::extract::MatchedPath;
use axum::http::{HeaderName, HeaderValue, Request};
use axum::response::Response;

use crate::timing::{self, Stages};

use super::REQUEST_ID_NAME;
use crate::log_budget::{self, LogBudget};

/// The request header that asks for `Server-Timing`.
pub const TIMING_HEADER: &str = "ferry-timing";
const TRACEPARENT: &str = "traceparent";
// As header names: a lookup by a `&str` parses the name first, on every request.
const TRACEPARENT_NAME: HeaderName = HeaderName::from_static(TRACEPARENT);
const TIMING_NAME: HeaderName = HeaderName::from_static(TIMING_HEADER);

/// A W3C trace context (`00-<trace id>-<parent id>-<flags>`), as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    /// 32 lowercase hex digits, not all zero.
    pub trace_id: String,
    /// The caller's span: 16 lowercase hex digits, not all zero.
    pub parent_id: String,
    /// 2 hex digits.
    pub flags: String,
}

impl TraceParent {
    /// Parses a `traceparent` value; `None` for one the spec says to ignore (a wrong length or
    /// version, upper-case or non-hex digits, an all-zero id).
    pub fn parse(value: &str) -> Option<TraceParent> {
        let mut parts = value.trim().split('-');
        let (version, trace_id, parent_id, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let zero = |s: &str| s.bytes().all(|b| b == b'0');
        // Version 00 has exactly four fields; a later version may add some after the flags.
        let well_formed = hex(version, 2)
            && version != "ff"
            && (version != "00" || parts.next().is_none())
            && hex(trace_id, 32)
            && !zero(trace_id)
            && hex(parent_id, 16)
            && !zero(parent_id)
            && hex(flags, 2);
        well_formed.then(|| TraceParent {
            trace_id: trace_id.to_owned(),
            parent_id: parent_id.to_owned(),
            flags: flags.to_owned(),
        })
    }

    /// The same trace continued from a span of this server's.
    fn continued(&self) -> String {
        let span = loop {
            let id = fastrand::u64(..);
            if id != 0 {
                break id;
            }
        };
        format!("00-{}-{span:016x}-{}", self.trace_id, self.flags)
    }
}

/// Paths whose requests are exported only when their caller sends a `traceparent`: a probe every
/// second and a scrape every fifteen would drown the traces of the requests that matter.
const UNTRACED: [&str; 3] = ["/v2/health/live", "/v2/health/ready", "/metrics"];

/// A gRPC method the host serves, named by its path (`/inference.GRPCInferenceService/ModelInfer`);
/// `None` for any other path, so a caller's text never names a span.
fn grpc_method(path: &str) -> Option<&str> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let known = ["inference.GRPCInferenceService", "grpc.health.v1.Health"].contains(&service);
    (known && method.len() <= 64 && method.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then_some(path)
}

/// Puts the route that matched in the answer's extensions, where [`TraceLayer`] (outside the
/// routing table) names the exported span by it. Mounted only when spans are exported.
pub async fn tag_route(
    route: Option<MatchedPath>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(route);
    }
    response
}

/// The layer.
#[derive(Debug, Clone)]
pub struct TraceLayer {
    export: Option<otlp::Export>,
    /// Failed answers' lines: a storm of them (an overload's 503s) is logged a few lines a second.
    failed: Arc<LogBudget>,
}

impl TraceLayer {
    /// The layer, exporting spans to `export` when there is one.
    pub fn new(export: Option<otlp::Export>) -> TraceLayer {
        TraceLayer {
            export,
            failed: Arc::new(LogBudget::new(10)),
        }
    }
}

impl<S> tower::Layer<S> for TraceLayer {
    type Service = Traced<S>;
    fn layer(&self, inner: S) -> Traced<S> {
        Traced {
            inner,
            export: self.export.clone(),
            failed: self.failed.clone(),
        }
    }
}

/// What [`TraceLayer`] wraps a service in.
#[derive(Debug, Clone)]
pub struct Traced<S> {
    inner: S,
    export: Option<otlp::Export>,
    failed: Arc<LogBudget>,
}

type TracedAnswer<'a> = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send + 'a>>;

impl<S> tower::Service<Request<Body>> for Traced<S>
where
    S: tower::Service<Request<Body>, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Logged<futures_util::future::Either<S::Future, TracedAnswer<'static>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        use futures_util::future::Either;
        let request_id = request_id(&mut request);
        let headers = request.headers();
        let parent = headers
            .get(TRACEPARENT_NAME)
            .and_then(|v| v.to_str().ok())
            .and_then(TraceParent::parse);
        let span = request_span(&request, parent.as_ref());
        let logged_failure = Failure::of(&request, &self.failed);
        let asked = headers
            .get(TIMING_NAME)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true") || v == "1");
        let logged = tracing::enabled!(target: "ferry::timing", tracing::Level::DEBUG);
        let export = self.export.clone();
        if parent.is_none() && !asked && !logged && export.is_none() {
            let answer = span.in_scope(|| self.inner.call(request));
            return Logged::new(Either::Left(answer), span, logged_failure, request_id);
        }
        let method = request.method().as_str().to_owned();
        let path = request.uri().path().to_owned();
        // Probes and scrapes are not traced unless their caller traces them.
        let export = export.filter(|_| parent.is_some() || !UNTRACED.contains(&path.as_str()));
        let stages = Arc::new(Stages::default());
        let answer = span.in_scope(|| timing::scope(stages.clone(), self.inner.call(request)));
        let traced = Either::Right(Box::pin(async move {
            let started = Instant::now();
            let start = SystemTime::now();
            let Ok(mut response) = answer.await;
            let total = started.elapsed();
            let exported = export.as_ref().and_then(|export| {
                let route = response.extensions().get::<MatchedPath>();
                export.span(otlp::Ended {
                    route: route
                        .map(MatchedPath::as_str)
                        .or_else(|| grpc_method(&path)),
                    method: &method,
                    path: &path,
                    parent: parent.as_ref(),
                    start,
                    end: start + total,
                    status: response.status().as_u16(),
                    stages: &stages,
                })
            });
            let headers = response.headers_mut();
            if let Some(parent) = &parent {
                // The exported span when there is one, so the caller's trace links to it.
                let continued = exported.unwrap_or_else(|| parent.continued());
                if let Ok(value) = HeaderValue::from_str(&continued) {
                    headers.insert(TRACEPARENT_NAME, value);
                }
            }
            let timing = stages.server_timing(total);
            if asked {
                if let Ok(value) = HeaderValue::from_str(&timing) {
                    headers.insert(HeaderName::from_static("server-timing"), value);
                }
            }
            if logged {
                tracing::debug!(
                    target: "ferry::timing",
                    request = %format_args!("{method} {path}"),
                    trace_id = parent.as_ref().map_or("-", |p| p.trace_id.as_str()),
                    status = response.status().as_u16(),
                    stages = %timing,
                    "request stages (ms)"
                );
            }
            Ok(response)
        }) as TracedAnswer<'static>);
        Logged::new(traced, span, logged_failure, request_id)
    }
}

/// The request's id: the caller's `x-request-id`, or a new one put in the request's headers (where
/// handlers and the span read it). Its answer carries it back (see [`Logged`]).
fn request_id(request: &mut Request<Body>) -> HeaderValue {
    if let Some(id) = request.headers().get(REQUEST_ID_NAME) {
        return id.clone();
    }
    let id = new_request_id();
    request.headers_mut().insert(REQUEST_ID_NAME, id.clone());
    id
}

/// A random UUID from a per-thread generator (seeded once from the OS), not one `getrandom`
/// system call per request as tower-http's `MakeRequestUuid` makes.
fn new_request_id() -> HeaderValue {
    let id = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid();
    let mut text = uuid::Uuid::encode_buffer();
    HeaderValue::from_str(id.hyphenated().encode_lower(&mut text))
        .expect("a UUID is a header value")
}

/// The request's log span: its id (the caller's or made up, [`request_id`]) and the caller's
/// trace id when it sent one. Disabled, and free, when the log takes nothing at info for
/// `ferry::server`.
fn request_span(request: &Request<Body>, parent: Option<&TraceParent>) -> tracing::Span {
    let id = request
        .headers()
        .get(REQUEST_ID_NAME)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    match parent {
        Some(parent) => {
            tracing::info_span!("request", request_id = %id, trace_id = %parent.trace_id)
        }
        None => tracing::info_span!("request", request_id = %id),
    }
}

/// What a failed answer's log line needs of its request, taken only when errors are logged: the
/// method and the URI (a reference count, not a copy).
struct Failure {
    method: axum::http::Method,
    uri: axum::http::Uri,
    started: Instant,
    budget: Arc<LogBudget>,
}

impl Failure {
    fn of(request: &Request<Body>, budget: &Arc<LogBudget>) -> Option<Failure> {
        tracing::enabled!(target: "ferry::server", tracing::Level::ERROR).then(|| Failure {
            method: request.method().clone(),
            uri: request.uri().clone(),
            started: Instant::now(),
            budget: budget.clone(),
        })
    }
}

pin_project_lite::pin_project! {
    /// A request's answer, polled inside its span; a 5xx answer is logged when it is ready, and
    /// every answer carries the request's id (unless its handler set one).
    pub struct Logged<F> {
        #[pin]
        answer: F,
        span: tracing::Span,
        failure: Option<Failure>,
        request_id: Option<HeaderValue>,
    }
}

impl<F> Logged<F> {
    fn new(
        answer: F,
        span: tracing::Span,
        failure: Option<Failure>,
        request_id: HeaderValue,
    ) -> Logged<F> {
        Logged {
            answer,
            span,
            failure,
            request_id: Some(request_id),
        }
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for Logged<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let Poll::Ready(Ok(mut response)) = this.answer.poll(cx) else {
            return Poll::Pending;
        };
        if let Some(id) = this.request_id.take() {
            response.headers_mut().entry(REQUEST_ID_NAME).or_insert(id);
        }
        let status = response.status();
        let failed = this.failure.take().filter(|_| status.is_server_error());
        if let Some((failure, left_out)) = failed.and_then(|f| f.budget.admit().map(|n| (f, n))) {
            tracing::error!(
                target: "ferry::server",
                method = %failure.method,
                uri = %failure.uri,
                status = status.as_u16(),
                latency_ms = failure.started.elapsed().as_secs_f64() * 1e3,
                "response failed{}",
                log_budget::left_out(left_out)
            );
        }
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, Service};

    /// The log lines written while `run` is called and its future runs, as plain text.
    async fn logged<F: Future>(run: impl FnOnce() -> F) -> (F::Output, String) {
        #[derive(Clone, Default)]
        struct Lines(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("ferry=info")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        let out = run().await;
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        (out, text)
    }

    fn answering(
        status: u16,
    ) -> Traced<tower::util::BoxCloneService<Request<Body>, Response, Infallible>> {
        let inner = tower::service_fn(move |_: Request<Body>| async move {
            tracing::info!(target: "ferry::guest", "a line of the model's");
            let mut response = Response::new(Body::empty());
            *response.status_mut() = axum::http::StatusCode::from_u16(status).unwrap();
            Ok::<_, Infallible>(response)
        });
        TraceLayer::new(None).layer(tower::util::BoxCloneService::new(inner))
    }

    fn request(uri: &str) -> Request<Body> {
        Request::post(uri)
            .header(REQUEST_ID_NAME, "r-42")
            .body(Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn lines_logged_during_a_request_name_it_and_a_failed_answer_is_logged_once() {
        let (answer, text) =
            logged(|| answering(503).call(request("/v1/models/m/predict?x=1"))).await;
        assert_eq!(answer.unwrap().status(), 503);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].contains("request{request_id=r-42}")
                && lines[0].contains("a line of the model's"),
            "{text}"
        );
        assert!(
            lines[1].contains("ERROR") && lines[1].contains("request{request_id=r-42}"),
            "{text}"
        );
        assert!(
            lines[1]
                .contains("response failed method=POST uri=/v1/models/m/predict?x=1 status=503"),
            "{text}"
        );

        // A storm of failed answers is logged a few lines a second, not a line each.
        let layer = answering(500);
        let (_, text) = logged(|| async move {
            for _ in 0..50 {
                let _ = layer.clone().call(request("/v1/models/m/predict")).await;
            }
        })
        .await;
        let failed = text
            .lines()
            .filter(|l| l.contains("response failed"))
            .count();
        // Ten a second: twenty when the calls straddle a second's end.
        assert!((10..=20).contains(&failed), "{failed} lines: {text}");

        // A traced caller's id goes with the request's.
        let mut traced = request("/v2/models/m/infer");
        traced.headers_mut().insert(
            TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let (answer, text) = logged(|| answering(200).call(traced)).await;
        assert_eq!(answer.unwrap().status(), 200);
        assert_eq!(
            text.lines().count(),
            1,
            "a success logs nothing of its own: {text}"
        );
        assert!(
            text.contains("request{request_id=r-42 trace_id=4bf92f3577b34da6a3ce929d0e0e4736}"),
            "{text}"
        );
    }

    #[test]
    fn only_the_hosts_own_grpc_methods_name_a_span() {
        let infer = "/inference.GRPCInferenceService/ModelInfer";
        assert_eq!(grpc_method(infer), Some(infer));
        assert_eq!(
            grpc_method("/grpc.health.v1.Health/Check"),
            Some("/grpc.health.v1.Health/Check")
        );
        for other in [
            "/inference.GRPCInferenceService/Model Infer",
            "/evil.Service/ModelInfer",
            "/inference.GRPCInferenceService/ModelInfer/extra",
            "/v1/models/x/predict",
            "",
        ] {
            assert_eq!(grpc_method(other), None, "{other}");
        }
        let long = format!("/inference.GRPCInferenceService/{}", "A".repeat(65));
        assert_eq!(grpc_method(&long), None);
    }

    #[test]
    fn a_traceparent_is_read_as_the_spec_says_and_continued_with_a_new_span() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parent = TraceParent::parse(valid).unwrap();
        assert_eq!(parent.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        let continued = parent.continued();
        assert!(continued.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(continued.ends_with("-01"));
        assert_ne!(&continued[36..52], "00f067aa0ba902b7");
        // A later version may carry more fields; 00 may not.
        assert!(TraceParent::parse(&format!("01{}-extra", &valid[2..])).is_some());
        for invalid in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(invalid), None, "{invalid:?}");
        }
    }
}
