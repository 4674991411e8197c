//! Every `/metrics` series of one version, owned by the version and rendered from the routing table
//! at scrape. A version that leaves the table (deleted, retained away) takes its series with it at
//! once: the `metrics` crate's registry cannot forget a series, so a host that sees a version every
//! few minutes for months would otherwise render every one it ever served. A request counts into
//! atomics its version already holds: no label lookup, no allocation on the request path. A version
//! loaded again (after it was unloaded) counts from zero, which Prometheus reads as a counter reset;
//! requests still in flight when their version leaves the table are counted nowhere.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use super::LATENCY_BUCKETS;
use crate::registry::{ModelVersion, RoutingTable};
use crate::runtime::CallError;

/// The entry points a request to a version comes through (`shadow`: a copy for a shadow version).
const ROUTES: [&str; 3] = ["predict", "infer", "shadow"];
/// The statuses a version's requests end with, counted without a lock; others go to a map.
const STATUSES: [u16; 8] = [200, 400, 404, 413, 422, 500, 503, 504];

/// The counters and histograms a version's requests feed.
#[derive(Debug, Default)]
pub struct VersionSeries {
    requests: [[AtomicU64; STATUSES.len()]; ROUTES.len()],
    other_statuses: Mutex<BTreeMap<(&'static str, u16), u64>>,
    duration: [Histogram; ROUTES.len()],
    queue_wait: Histogram,
    cold_wait: Histogram,
    errors: Mutex<BTreeMap<&'static str, u64>>,
}

impl VersionSeries {
    /// A finished request through `route`, its status and its time.
    pub fn request(&self, route: &'static str, status: u16, elapsed: Duration) {
        let r = ROUTES.iter().position(|x| *x == route).unwrap_or(0);
        match STATUSES.iter().position(|s| *s == status) {
            Some(s) => {
                self.requests[r][s].fetch_add(1, Relaxed);
            }
            None => {
                *lock(&self.other_statuses)
                    .entry((ROUTES[r], status))
                    .or_default() += 1
            }
        }
        self.duration[r].record(elapsed);
    }

    /// How long a request queued for admission.
    pub fn queue_wait(&self, waited: Duration) {
        self.queue_wait.record(waited);
    }

    /// How long a request waited for its evicted version to come back.
    pub fn cold_wait(&self, waited: Duration) {
        self.cold_wait.record(waited);
    }

    /// A call that ended in an error, by kind.
    pub fn call_error(&self, e: &CallError) {
        *lock(&self.errors).entry(e.kind()).or_default() += 1;
    }

    fn requests(&self) -> Vec<(&'static str, u16, u64)> {
        let mut all: Vec<_> = ROUTES
            .iter()
            .enumerate()
            .flat_map(|(r, route)| {
                STATUSES.iter().enumerate().filter_map(move |(s, status)| {
                    let n = self.requests[r][s].load(Relaxed);
                    (n > 0).then_some((*route, *status, n))
                })
            })
            .collect();
        all.extend(
            lock(&self.other_statuses)
                .iter()
                .map(|((route, status), n)| (*route, *status, *n)),
        );
        all.sort();
        all
    }
}

/// A latency histogram on the host's buckets (seconds).
#[derive(Debug, Default)]
struct Histogram {
    /// Observations per bucket (not cumulative); past the last bound only in `count`.
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    fn record(&self, d: Duration) {
        let seconds = d.as_secs_f64();
        let i = LATENCY_BUCKETS.partition_point(|bound| *bound < seconds);
        if let Some(bucket) = self.buckets.get(i) {
            bucket.fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Relaxed);
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, n) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            cumulative += n.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed).max(cumulative);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let sum = self.sum_ns.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One family: its help, its type, and a writer of one version's lines (given its labels).
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    lines: fn(&ModelVersion, &str, &mut String),
}

/// Appends every version's series in the table, family by family (the text format wants a family's
/// lines together, under one `# TYPE`).
pub fn render(table: &RoutingTable, out: &mut String) {
    let versions: Vec<(String, &ModelVersion)> =
        table.versions().map(|v| (labels(v), v.as_ref())).collect();
    for family in FAMILIES {
        let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind);
        for (labels, v) in &versions {
            (family.lines)(v, labels, out);
        }
    }
}

fn labels(v: &ModelVersion) -> String {
    format!(
        "model=\"{}\",version=\"{}\"",
        escape(&v.manifest.model),
        escape(&v.manifest.version)
    )
}

/// A label value as the text format quotes it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn line(out: &mut String, name: &str, labels: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "{name}{{{labels}}} {value}");
}

const FAMILIES: &[Family] = &[
    Family {
        name: "ferry_requests_total",
        kind: "counter",
        help: "Inference requests by model, version, route and HTTP status",
        lines: |v, labels, out| {
            for (route, status, n) in v.series.requests() {
                let labels = format!("{labels},route=\"{route}\",status=\"{status}\"");
                line(out, "ferry_requests_total", &labels, n);
            }
        },
    },
    Family {
        name: "ferry_request_duration_seconds",
        kind: "histogram",
        help: "Time from admission request to answer",
        lines: |v, labels, out| {
            for (route, h) in ROUTES.iter().zip(&v.series.duration) {
                if h.count.load(Relaxed) > 0 {
                    let labels = format!("{labels},route=\"{route}\"");
                    h.write(out, "ferry_request_duration_seconds", &labels);
                }
            }
        },
    },
    Family {
        name: "ferry_queue_wait_seconds",
        kind: "histogram",
        help: "Time a request waited for a free instance",
        lines: |v, labels, out| {
            if v.series.queue_wait.count.load(Relaxed) > 0 {
                v.series
                    .queue_wait
                    .write(out, "ferry_queue_wait_seconds", labels);
            }
        },
    },
    Family {
        name: "ferry_cold_request_wait_seconds",
        kind: "histogram",
        help: "Time a request to an evicted version waited for it to come back",
        lines: |v, labels, out| {
            if v.series.cold_wait.count.load(Relaxed) > 0 {
                v.series
                    .cold_wait
                    .write(out, "ferry_cold_request_wait_seconds", labels);
            }
        },
    },
    Family {
        name: "ferry_guest_errors_total",
        kind: "counter",
        help: "Calls that ended in a guest trap, limit hit or model error, by kind",
        lines: |v, labels, out| {
            for (kind, n) in lock(&v.series.errors).iter() {
                let labels = format!("{labels},kind=\"{kind}\"");
                line(out, "ferry_guest_errors_total", &labels, n);
            }
        },
    },
    Family {
        name: "ferry_breaker_trips_total",
        kind: "counter",
        help: "Times a version's circuit breaker tripped, by the kind of fault that tripped it",
        lines: |v, labels, out| {
            for (kind, n) in v.breaker.trips_by_kind() {
                let labels = format!("{labels},kind=\"{kind}\"");
                line(out, "ferry_breaker_trips_total", &labels, n);
            }
        },
    },
    Family {
        name: "ferry_breaker_probes_total",
        kind: "counter",
        help: "Probe calls through a tripped breaker, by outcome (failed: open again; recovered: closed)",
        lines: |v, labels, out| {
            let (failed, recovered) = v.breaker.probes();
            for (outcome, n) in [("failed", failed), ("recovered", recovered)] {
                if n > 0 {
                    let labels = format!("{labels},outcome=\"{outcome}\"");
                    line(out, "ferry_breaker_probes_total", &labels, n);
                }
            }
        },
    },
    Family {
        name: "ferry_breaker_rejected_total",
        kind: "counter",
        help: "Requests failed fast (503) because the version's breaker was open",
        lines: |v, labels, out| {
            let n = v.breaker.rejected();
            if n > 0 {
                line(out, "ferry_breaker_rejected_total", labels, n);
            }
        },
    },
    Family {
        name: "ferry_instances",
        kind: "gauge",
        help: "Live instances of a version by state (busy or idle)",
        lines: |v, labels, out| {
            let (busy, idle) = v
                .pool
                .as_ref()
                .map(|p| p.stats())
                .map_or((0, 0), |s| (s.live - s.idle, s.idle));
            for (state, n) in [("busy", busy), ("idle", idle)] {
                let labels = format!("{labels},state=\"{state}\"");
                line(out, "ferry_instances", &labels, n);
            }
        },
    },
    Family {
        name: "ferry_queued_requests",
        kind: "gauge",
        help: "Requests waiting for an instance of the version",
        lines: |v, labels, out| line(out, "ferry_queued_requests", labels, v.admission.waiting()),
    },
    Family {
        name: "ferry_model_load_seconds",
        kind: "gauge",
        help: "Time a version took to compile, initialise and self-test",
        lines: |v, labels, out| line(out, "ferry_model_load_seconds", labels, v.load_seconds),
    },
    Family {
        name: "ferry_model_ready",
        kind: "gauge",
        help: "1 when the version serves, 0 when it is loading or failed",
        lines: |v, labels, out| line(out, "ferry_model_ready", labels, u8::from(v.is_ready())),
    },
    Family {
        name: "ferry_version_memory_bytes",
        kind: "gauge",
        help: "Memory of a version: the snapshot image its instances share, their private linear memory, and its host-side graphs",
        lines: |v, labels, out| {
            let Some(stats) = v.pool.as_ref().map(|p| p.stats()) else {
                return;
            };
            let shared = if stats.resident { stats.shared_bytes } else { 0 };
            for (kind, bytes) in [
                ("shared", shared),
                ("private", stats.private_bytes),
                ("graph", stats.graph_bytes),
            ] {
                let labels = format!("{labels},kind=\"{kind}\"");
                line(out, "ferry_version_memory_bytes", &labels, bytes);
            }
        },
    },
    Family {
        name: "ferry_version_resident",
        kind: "gauge",
        help: "1 when the version holds its instances, 0 when evicted (it comes back on its next request)",
        lines: |v, labels, out| {
            if let Some(stats) = v.pool.as_ref().map(|p| p.stats()) {
                line(out, "ferry_version_resident", labels, u8::from(stats.resident));
            }
        },
    },
    Family {
        name: "ferry_version_evictions_total",
        kind: "counter",
        help: "Times a version was evicted to stay within the host's memory budget",
        lines: |v, labels, out| {
            if let Some(stats) = v.pool.as_ref().map(|p| p.stats()) {
                line(out, "ferry_version_evictions_total", labels, stats.evictions);
            }
        },
    },
    Family {
        name: "ferry_version_cold_loads_total",
        kind: "counter",
        help: "Times an evicted version came back for a request",
        lines: |v, labels, out| {
            if let Some(stats) = v.pool.as_ref().map(|p| p.stats()) {
                line(out, "ferry_version_cold_loads_total", labels, stats.reopens);
            }
        },
    },
    Family {
        name: "ferry_guest_cpu_microseconds_total",
        kind: "counter",
        help: "CPU time of the threads running a version's guest calls (shadow copies included), for charging its team",
        lines: |v, labels, out| {
            // From the exact total: per-call rounding would lose the microsecond calls.
            let micros = v.usage.cpu_ns.load(Relaxed) / 1_000;
            line(out, "ferry_guest_cpu_microseconds_total", labels, micros);
        },
    },
    Family {
        name: "ferry_guest_fuel_total",
        kind: "counter",
        help: "Fuel a version's guest calls burnt (with [host] fuel = true)",
        lines: |v, labels, out| {
            line(out, "ferry_guest_fuel_total", labels, v.usage.fuel.load(Relaxed));
        },
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_renders_cumulative_buckets_its_sum_and_its_count() {
        let h = Histogram::default();
        h.record(Duration::from_micros(30)); // first bucket (≤ 50 µs)
        h.record(Duration::from_micros(50)); // on the bound: the same bucket
        h.record(Duration::from_millis(3)); // ≤ 5 ms
        h.record(Duration::from_secs(60)); // past the last bound: +Inf only
        let mut out = String::new();
        h.write(&mut out, "x", "m=\"a\"");
        assert!(
            out.contains("x_bucket{m=\"a\",le=\"0.00005\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("x_bucket{m=\"a\",le=\"0.0025\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{m=\"a\",le=\"0.005\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{m=\"a\",le=\"10\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{m=\"a\",le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_count{m=\"a\"} 4\n"), "{out}");
        assert!(out.contains("x_sum{m=\"a\"} 60.00308\n"), "{out}");
    }

    #[test]
    fn requests_are_counted_by_route_and_status_known_or_not() {
        let s = VersionSeries::default();
        s.request("predict", 200, Duration::from_millis(1));
        s.request("predict", 200, Duration::from_millis(1));
        s.request("infer", 418, Duration::from_millis(1));
        s.request("shadow", 504, Duration::from_millis(1));
        assert_eq!(
            s.requests(),
            vec![("infer", 418, 1), ("predict", 200, 2), ("shadow", 504, 1)]
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("a\nb"), "a\\nb");
    }
}
