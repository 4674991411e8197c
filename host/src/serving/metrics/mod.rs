//! Prometheus metrics (`GET /metrics`), named by Prometheus conventions with the `ferry_` prefix.
//! Series labelled by `version` belong to the version ([`versions`]) and leave `/metrics` with it;
//! the rest live in the `metrics` crate's recorder.
//!
//! - `ferry_requests_total{model,version,route,status}`
//! - `ferry_request_duration_seconds{model,version,route}` (histogram)
//! - `ferry_queue_wait_seconds{model,version}` (histogram) and `ferry_queued_requests{model,version}`
//!   (gauge: waiting for an instance now)
//! - `ferry_instances{model,version,state="busy"|"idle"}` (gauge, sampled at scrape)
//! - `ferry_guest_errors_total{model,version,kind}`: traps and limit hits by kind
//! - `ferry_model_load_seconds{model,version}` (gauge) and `ferry_model_ready{model,version}` (0/1)
//! - `ferry_version_memory_bytes{model,version,kind="shared"|"private"|"graph"}`: the snapshot image
//!   its instances share (counted once), their linear memory beyond it, and what its host-side
//!   graphs took when loaded (once per version); `ferry_version_resident`
//!   (0/1), `ferry_version_evictions_total`, `ferry_version_cold_loads_total` (came back after an
//!   eviction), `ferry_cold_request_wait_seconds` (histogram: requests that waited for that)
//! - `ferry_host_memory_bytes{kind="versions"|"budget"|"rss"|"pss"}`: what the routed versions hold,
//!   the budget (`[host] max_resident_bytes`), and the process's resident and proportional set size
//! - `ferry_store_sync_age_seconds` (gauge: since the last poll that reached the store),
//!   `ferry_store_reachable` (0/1), `ferry_store_sync_failures_total`, `ferry_store_changes_applied_total`,
//!   `ferry_store_generation`, and `ferry_store_requests_total{op,outcome}` (every request to the store)
//! - metering, per version, for charging the team that owns the model:
//!   `ferry_guest_cpu_microseconds_total{model,version}` (CPU time of the threads running its guest
//!   calls, shadow copies included) and `ferry_guest_fuel_total{model,version}` (versions whose
//!   fuel is counted: a fuel limit, or `[host] fuel`)
//! - shadow traffic, per (model, primary, shadow): `ferry_shadow_requests_total{…,outcome}` (compared,
//!   primary_failed, shadow_failed, dropped_queue_full, dropped_busy), `ferry_shadow_abs_diff` (histogram
//!   of each compared request's largest |Δ| between paired numbers) and
//!   `ferry_shadow_labels_total{…,agreed="true"|"false"}` (labels, booleans and structure)
//! - circuit breaking, per version: `ferry_breaker_trips_total{model,version,kind}` (kind: the fault
//!   that tripped it), `ferry_breaker_probes_total{model,version,outcome="failed"|"recovered"}`,
//!   `ferry_breaker_rejected_total{model,version}` (requests failed fast)
//! - CPU shares, per model: `ferry_cpu_share_lowered_calls_total{model}` (calls that ran, wholly or
//!   partly, on idle capacity because the model was over its share) and
//!   `ferry_cpu_share_starved_total{model}` (of those, refused with a 503 at their deadline)
//! - the prediction log: `ferry_prediction_log_records_total{model}` (written),
//!   `ferry_prediction_log_dropped_total{model}` (queue full), `ferry_prediction_log_failed_total`
//!   (lost to a failing sink)

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::registry::{MemoryBudget, ProcessMemory, RoutingTable, SyncHealth, LATENCY_BUCKETS};
use crate::stamps::unix_ms;

pub mod versions;

/// |Δ| between a primary's and a shadow's numbers: from exactly equal to far apart.
const ABS_DIFF_BUCKETS: &[f64] = &[
    0.0, 1e-12, 1e-9, 1e-6, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0, 100.0,
];

/// Requests in one batched guest call (dynamic batching).
const BATCH_SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Installs the process's metrics recorder (once) and returns the handle that renders it.
///
/// A version's own series are not in this recorder ([`versions`]: they go with the version). With
/// `idle_timeout`, a series of the recorder not updated for that long is dropped at the next render
/// (it has no per-series removal): the per-model and per-shadow-pair series of models long gone. What
/// the host knows at every scrape (sync, memory, credentials) is set again by the render, so it never
/// goes idle; a counter idle that long starts again from zero when next counted.
pub fn install(idle_timeout: Option<Duration>) -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .idle_timeout(metrics_util::MetricKindMask::ALL, idle_timeout)
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("buckets are not empty")
                .set_buckets_for_metric(
                    Matcher::Full("ferry_shadow_abs_diff".into()),
                    ABS_DIFF_BUCKETS,
                )
                .expect("buckets are not empty")
                .set_buckets_for_metric(Matcher::Full("ferry_batch_size".into()), BATCH_SIZES)
                .expect("buckets are not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (a library user's); ours then renders nothing.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(
        "ferry_cpu_share_lowered_calls_total",
        "Calls that ran on idle capacity only because their model was over its CPU share"
    );
    metrics::describe_counter!(
        "ferry_cpu_share_starved_total",
        "Calls over their model's CPU share refused (503) at their deadline, starved by a busy host"
    );
    metrics::describe_counter!(
        "ferry_shadow_requests_total",
        "Copies of requests for a shadow version, by outcome (compared, primary_failed, shadow_failed, dropped_queue_full, dropped_busy)"
    );
    metrics::describe_histogram!(
        "ferry_shadow_abs_diff",
        "Per compared request, the largest absolute difference between the primary's and the shadow's paired numbers"
    );
    metrics::describe_counter!(
        "ferry_shadow_labels_total",
        "Labels, booleans and structure compared between primary and shadow answers, by whether they agreed"
    );
    metrics::describe_counter!(
        "ferry_prediction_log_records_total",
        "Prediction records written to the log's sink"
    );
    metrics::describe_counter!(
        "ferry_prediction_log_dropped_total",
        "Prediction log entries dropped because the log's queue was full"
    );
    metrics::describe_counter!(
        "ferry_prediction_log_failed_total",
        "Prediction records lost because the sink failed (a full disk, an unreachable store)"
    );
    metrics::describe_gauge!(
        "ferry_host_memory_bytes",
        metrics::Unit::Bytes,
        "Host memory: held by routed versions, the budget, and the process's RSS and PSS"
    );
    metrics::describe_gauge!(
        "ferry_store_sync_age_seconds",
        metrics::Unit::Seconds,
        "Time since this host last reached the store (how stale what it serves may be)"
    );
    metrics::describe_gauge!(
        "ferry_store_reachable",
        "1 when the last poll reached the store"
    );
    metrics::describe_counter!(
        "ferry_store_sync_failures_total",
        "Polls that could not reach the store"
    );
    metrics::describe_counter!(
        "ferry_store_changes_applied_total",
        "Models read again from the store and applied because they changed"
    );
    metrics::describe_gauge!(
        "ferry_store_generation",
        "The store change record generation applied here"
    );
    metrics::describe_counter!(
        "ferry_store_requests_total",
        "Requests made to the store, by operation and outcome"
    );
}

/// The whole `/metrics` text: the recorder's series, then every routed version's own.
pub fn render(handle: &PrometheusHandle, table: &RoutingTable) -> String {
    let mut out = handle.render();
    versions::render(table, &mut out);
    out
}

/// Samples the sync gauges (called at scrape time).
pub fn sample_sync(sync: &SyncHealth) {
    use std::sync::atomic::Ordering::Relaxed;
    let last = sync.last_success_unix_ms.load(Relaxed);
    let age = if last == 0 {
        f64::INFINITY
    } else {
        unix_ms(std::time::SystemTime::now()).saturating_sub(last) as f64 / 1000.0
    };
    metrics::gauge!("ferry_store_sync_age_seconds").set(age);
    metrics::gauge!("ferry_store_reachable").set(if sync.reachable.load(Relaxed) {
        1.0
    } else {
        0.0
    });
    metrics::counter!("ferry_store_sync_failures_total").absolute(sync.failures.load(Relaxed));
    metrics::counter!("ferry_store_changes_applied_total")
        .absolute(sync.changes_applied.load(Relaxed));
    metrics::gauge!("ferry_store_generation").set(sync.generation.load(Relaxed) as f64);
}

/// Samples the host's memory gauges (called at scrape time).
pub fn sample_memory(budget: &MemoryBudget) {
    let gauge = |kind: &str, bytes: u64| {
        metrics::gauge!("ferry_host_memory_bytes", "kind" => kind.to_owned()).set(bytes as f64)
    };
    gauge("versions", budget.resident_bytes());
    if let Some(max) = budget.max() {
        gauge("budget", max);
    }
    if let Some(process) = ProcessMemory::read() {
        gauge("rss", process.rss_bytes);
        gauge("pss", process.pss_bytes);
    }
}

/// Counts a shadow copy's outcome and, when compared, how far apart the answers were.
pub fn shadow(
    (model, primary, shadow): &(String, String, String),
    outcome: &'static str,
    agreement: Option<&crate::serving::traffic::compare::Agreement>,
) {
    let pair = [
        ("model", model.clone()),
        ("primary", primary.clone()),
        ("shadow", shadow.clone()),
    ];
    let mut with_outcome = pair.to_vec();
    with_outcome.push(("outcome", outcome.to_owned()));
    metrics::counter!("ferry_shadow_requests_total", &with_outcome).increment(1);
    let Some(a) = agreement else { return };
    if let Some(d) = a.max_abs_diff {
        metrics::histogram!("ferry_shadow_abs_diff", &pair).record(d);
    }
    for (agreed, n) in [
        ("true", a.labels_agreed),
        ("false", a.labels - a.labels_agreed),
    ] {
        if n > 0 {
            let mut labels = pair.to_vec();
            labels.push(("agreed", agreed.to_owned()));
            metrics::counter!("ferry_shadow_labels_total", &labels).increment(n);
        }
    }
}

/// Counts a log entry dropped because the queue was full.
pub fn prediction_log_dropped(model: &str) {
    metrics::counter!("ferry_prediction_log_dropped_total", "model" => model.to_owned())
        .increment(1);
}

/// Counts records written.
pub fn prediction_log_written<'a>(models: impl Iterator<Item = &'a str>) {
    let mut by_model: std::collections::BTreeMap<&str, u64> = Default::default();
    for model in models {
        *by_model.entry(model).or_default() += 1;
    }
    for (model, n) in by_model {
        metrics::counter!("ferry_prediction_log_records_total", "model" => model.to_owned())
            .increment(n);
    }
}

/// Counts records lost to a failing sink.
pub fn prediction_log_failed(n: u64) {
    metrics::counter!("ferry_prediction_log_failed_total").increment(n);
}
