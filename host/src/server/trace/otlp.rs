//! Spans over OTLP: with the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, each request becomes a server span sent over OTLP/gRPC
//! to that collector by `opentelemetry-otlp`'s batch processor (its own thread; a bounded queue
//! whose overflow is dropped, so a slow or absent collector never holds a request).
//!
//! The span continues the caller's `traceparent` (same trace, the caller's span as its parent, the
//! caller's sampled flag followed, as the SDK's default parent-based sampler does), carries the
//! method, path and status, and each stage's time as `ferry.stage.<name>_ms`; the answer's
//! `traceparent` names it. The other standard variables apply as the SDK reads them
//! (`OTEL_SERVICE_NAME`, default `ferry`; `OTEL_TRACES_SAMPLER`; `OTEL_EXPORTER_OTLP_TIMEOUT`, ...);
//! `OTEL_TRACES_EXPORTER=none` or `OTEL_SDK_DISABLED=true` turns export off.
//!
//! What a caller controls stays bounded: the span is named by the route's pattern
//! (`POST /v1/models/{model}/predict`), never the raw path; the path attribute is cut to
//! [`MAX_PATH`] bytes; a method outside HTTP's own is `_OTHER`. What an operator sets is checked at
//! start: a protocol or a scheme this build cannot speak stops the host with a message, and the
//! batch processor's delay and queue are held to sane bounds.

use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;

use super::TraceParent;
use crate::timing::Stages;

/// The exporter, when the environment asks for one.
#[derive(Clone)]
pub struct Export {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl std::fmt::Debug for Export {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Export(otlp)")
    }
}

/// The longest `url.path` a span carries, in bytes.
pub const MAX_PATH: usize = 256;

/// A request as it ended, for its span.
pub struct Ended<'a> {
    /// The method and the path.
    pub method: &'a str,
    pub path: &'a str,
    /// The route's pattern, when a route matched (`/v1/models/{model}/predict`), or the gRPC
    /// method's path.
    pub route: Option<&'a str>,
    /// The caller's trace, when it sent one.
    pub parent: Option<&'a TraceParent>,
    /// When it came and when it was answered.
    pub start: SystemTime,
    pub end: SystemTime,
    /// The answer's status.
    pub status: u16,
    /// Its stages.
    pub stages: &'a Stages,
}

impl Export {
    /// The exporter the environment asks for; `None` when it asks for none. Called inside the
    /// server's runtime (the gRPC client lives on it).
    pub fn from_env() -> anyhow::Result<Option<Export>> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let wanted = var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
            || var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some();
        let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        if !wanted || disabled {
            return Ok(None);
        }
        for name in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Some(protocol) = var(name) {
                anyhow::ensure!(
                    protocol == "grpc",
                    "{name}={protocol}: this host exports spans over OTLP/gRPC only (point it at the \
                     collector's gRPC port, 4317, and unset {name} or set it to grpc)"
                );
                break;
            }
        }
        for name in [
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ] {
            if let Some(endpoint) = var(name) {
                anyhow::ensure!(
                    endpoint.starts_with("http://"),
                    "{name}={endpoint}: this host sends spans over plain http:// (a collector \
                     beside it, e.g. a sidecar, forwards them over TLS)"
                );
                break;
            }
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(|e| anyhow::anyhow!("OTLP span exporter: {e}"))?;
        let named = var("OTEL_SERVICE_NAME").is_some()
            || var("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| a.contains("service.name="));
        let resource = if named {
            Resource::builder().build()
        } else {
            Resource::builder().with_service_name("ferry").build()
        };
        // The SDK reads OTEL_BSP_*; held here to bounds: a zero delay would spin its thread, a zero
        // queue drop every span, a huge one hold memory while a collector is away.
        let number = |name: &str| var(name).and_then(|v| v.trim().parse::<u64>().ok());
        let mut batch = BatchConfigBuilder::default();
        if let Some(ms) = number("OTEL_BSP_SCHEDULE_DELAY") {
            batch = batch.with_scheduled_delay(Duration::from_millis(ms.clamp(10, 60_000)));
        }
        if let Some(n) = number("OTEL_BSP_MAX_QUEUE_SIZE") {
            batch = batch.with_max_queue_size(n.clamp(64, 65_536) as usize);
        }
        if let Some(n) = number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") {
            batch = batch.with_max_export_batch_size(n.clamp(1, 2_048) as usize);
        }
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch.build())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("ferry");
        Ok(Some(Export { provider, tracer }))
    }

    /// Sends `request`'s span (unless the sampler drops it); returns the `traceparent` that
    /// continues the trace from it (its flags say whether it was sampled).
    pub fn span(&self, request: Ended<'_>) -> Option<String> {
        let method = match request.method {
            "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "PATCH" | "OPTIONS" | "CONNECT"
            | "TRACE" => request.method,
            _ => "_OTHER",
        };
        let name = match request.route {
            Some(route) => format!("{method} {route}"),
            None => method.to_owned(),
        };
        let mut path = request.path;
        if path.len() > MAX_PATH {
            let mut end = MAX_PATH;
            while !path.is_char_boundary(end) {
                end -= 1;
            }
            path = &path[..end];
        }
        let parent = request.parent.and_then(|p| {
            let context = SpanContext::new(
                TraceId::from_hex(&p.trace_id).ok()?,
                SpanId::from_hex(&p.parent_id).ok()?,
                TraceFlags::new(u8::from_str_radix(&p.flags, 16).ok()?),
                true,
                TraceState::default(),
            );
            Some(Context::new().with_remote_span_context(context))
        });
        let mut attributes = vec![
            KeyValue::new("http.request.method", method.to_owned()),
            KeyValue::new("url.path", path.to_owned()),
            KeyValue::new("http.response.status_code", i64::from(request.status)),
        ];
        for (stage, took) in request.stages.met() {
            attributes.push(KeyValue::new(
                format!("ferry.stage.{}_ms", stage.name()),
                took.as_secs_f64() * 1e3,
            ));
        }
        let builder = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_start_time(request.start)
            .with_attributes(attributes);
        let mut span = match &parent {
            Some(cx) => self.tracer.build_with_context(builder, cx),
            None => self.tracer.build_with_context(builder, &Context::new()),
        };
        if request.status >= 500 {
            span.set_status(opentelemetry::trace::Status::error(format!(
                "answered {}",
                request.status
            )));
        }
        let context = span.span_context().clone();
        span.end_with_timestamp(request.end);
        // Sampled or not, the span has an id the trace continues from (flags 00 when dropped).
        context.is_valid().then(|| {
            format!(
                "00-{}-{}-{:02x}",
                context.trace_id(),
                context.span_id(),
                context.trace_flags().to_u8()
            )
        })
    }

    /// Sends what is queued, waiting at most `within`.
    pub fn shutdown(&self, within: Duration) {
        if let Err(e) = self.provider.shutdown_with_timeout(within) {
            tracing::warn!(error = %e, "the OTLP exporter did not finish sending spans");
        }
    }
}
