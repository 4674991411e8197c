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

use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
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

/// A request as it ended, for its span.
pub struct Ended<'a> {
    /// `POST /v1/models/m/predict`.
    pub name: String,
    /// The method and the path.
    pub method: &'a str,
    pub path: &'a str,
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
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(|e| anyhow::anyhow!("OTLP span exporter: {e}"))?;
        let resource = if var("OTEL_SERVICE_NAME").is_some() {
            Resource::builder().build()
        } else {
            Resource::builder().with_service_name("ferry").build()
        };
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("ferry");
        Ok(Some(Export { provider, tracer }))
    }

    /// Sends `request`'s span; returns its id as a `traceparent` continues it (`None` when the
    /// sampler dropped it).
    pub fn span(&self, request: Ended<'_>) -> Option<String> {
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
            KeyValue::new("http.request.method", request.method.to_owned()),
            KeyValue::new("url.path", request.path.to_owned()),
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
            .span_builder(request.name)
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
        context.is_sampled().then(|| {
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
