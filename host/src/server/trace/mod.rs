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
//! A request with none of these passes through with two header lookups and no allocation.

pub mod otlp;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use axum::body::Body;
use axum::extract::MatchedPath;
use axum::http::{HeaderValue, Request};
use axum::response::Response;

use crate::timing::{self, Stages};

/// The request header that asks for `Server-Timing`.
pub const TIMING_HEADER: &str = "ferry-timing";
const TRACEPARENT: &str = "traceparent";

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

/// The trace id of `request`'s `traceparent`, for its log span.
pub fn trace_id<B>(request: &Request<B>) -> Option<String> {
    request
        .headers()
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse)
        .map(|t| t.trace_id)
}

/// The layer.
#[derive(Debug, Clone, Default)]
pub struct TraceLayer {
    export: Option<otlp::Export>,
}

impl TraceLayer {
    /// The layer, exporting spans to `export` when there is one.
    pub fn new(export: Option<otlp::Export>) -> TraceLayer {
        TraceLayer { export }
    }
}

impl<S> tower::Layer<S> for TraceLayer {
    type Service = Traced<S>;
    fn layer(&self, inner: S) -> Traced<S> {
        Traced {
            inner,
            export: self.export.clone(),
        }
    }
}

/// What [`TraceLayer`] wraps a service in.
#[derive(Debug, Clone)]
pub struct Traced<S> {
    inner: S,
    export: Option<otlp::Export>,
}

type TracedAnswer<'a> = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send + 'a>>;

impl<S> tower::Service<Request<Body>> for Traced<S>
where
    S: tower::Service<Request<Body>, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = futures_util::future::Either<S::Future, TracedAnswer<'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        use futures_util::future::Either;
        let headers = request.headers();
        let parent = headers
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(TraceParent::parse);
        let asked = headers
            .get(TIMING_HEADER)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true") || v == "1");
        let logged = tracing::enabled!(target: "ferry::timing", tracing::Level::DEBUG);
        let export = self.export.clone();
        if parent.is_none() && !asked && !logged && export.is_none() {
            return Either::Left(self.inner.call(request));
        }
        let method = request.method().as_str().to_owned();
        let path = request.uri().path().to_owned();
        // Probes and scrapes are not traced unless their caller traces them.
        let export = export.filter(|_| parent.is_some() || !UNTRACED.contains(&path.as_str()));
        let stages = Arc::new(Stages::default());
        let answer = timing::scope(stages.clone(), self.inner.call(request));
        Either::Right(Box::pin(async move {
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
                    headers.insert(TRACEPARENT, value);
                }
            }
            let timing = stages.server_timing(total);
            if asked {
                if let Ok(value) = HeaderValue::from_str(&timing) {
                    headers.insert("server-timing", value);
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
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
