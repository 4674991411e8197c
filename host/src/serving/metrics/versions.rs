//! Every `/metrics` series of one version, rendered from the routing table at scrape. They belong to
//! the version (its counters in `registry/series.rs`, its pool, breaker and usage), so a version that
//! leaves the table (deleted, retained away) takes its series with it at once: the `metrics` crate's
//! registry cannot forget a series, so a host that sees a version every few minutes for months would
//! otherwise render every one it ever served. Requests still in flight when their version leaves the
//! table are counted nowhere.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use crate::drift::Summary;
use crate::registry::{ModelVersion, RoutingTable};
use crate::runtime::PoolStats;

/// One family: its help, its type, and a writer of one version's lines (given its labels and what
/// the scrape read of it).
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    lines: fn(&ModelVersion, &str, &Scraped<'_>, &mut String),
}

/// What a scrape reads of a version once, whatever the families read: its pool's statistics, and
/// its drift (four families show it).
struct Scraped<'a> {
    stats: Option<PoolStats>,
    drift: Option<Summary<'a>>,
}

/// Appends every version's series in the table, family by family (the text format wants a family's
/// lines together, under one `# TYPE`).
pub fn render(table: &RoutingTable, out: &mut String) {
    let versions: Vec<(String, &ModelVersion, Scraped)> = table
        .versions()
        .map(|v| {
            let scraped = Scraped {
                stats: v.ready().map(|r| r.pool.stats()),
                drift: v.monitored.drift().map(|d| d.summary()),
            };
            (labels(v), v.as_ref(), scraped)
        })
        .collect();
    for family in FAMILIES {
        let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind);
        for (labels, v, scraped) in &versions {
            (family.lines)(v, labels, scraped, out);
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

/// A watched version's drift per feature (`features`) or output, as the index or the distance;
/// a column with too few rows in the window yet has no line.
fn drift_lines(
    scraped: &Scraped<'_>,
    labels: &str,
    out: &mut String,
    name: &str,
    label: &str,
    features: bool,
    distance: bool,
) {
    let Some((feature_drift, output_drift)) = &scraped.drift else {
        return;
    };
    let columns = if features {
        feature_drift
    } else {
        output_drift
    };
    for (column, drift) in columns {
        if let Some((psi, d)) = drift {
            let labels = format!("{labels},{label}=\"{}\"", escape(column));
            line(out, name, &labels, if distance { d } else { psi });
        }
    }
}

fn line(out: &mut String, name: &str, labels: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "{name}{{{labels}}} {value}");
}

const FAMILIES: &[Family] = &[
    Family {
        name: "ferry_requests_total",
        kind: "counter",
        help: "Inference requests by model, version, route and HTTP status",
        lines: |v, labels, _, out| {
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
        lines: |v, labels, _, out| {
            for (route, h) in v.series.durations() {
                let labels = format!("{labels},route=\"{route}\"");
                h.write(out, "ferry_request_duration_seconds", &labels);
            }
        },
    },
    Family {
        name: "ferry_queue_wait_seconds",
        kind: "histogram",
        help: "Time a request waited for a free instance",
        lines: |v, labels, _, out| {
            let h = v.series.queue_waits();
            if !h.is_empty() {
                h.write(out, "ferry_queue_wait_seconds", labels);
            }
        },
    },
    Family {
        name: "ferry_cold_request_wait_seconds",
        kind: "histogram",
        help: "Time a request to an evicted version waited for it to come back",
        lines: |v, labels, _, out| {
            let h = v.series.cold_waits();
            if !h.is_empty() {
                h.write(out, "ferry_cold_request_wait_seconds", labels);
            }
        },
    },
    Family {
        name: "ferry_feature_drift",
        kind: "gauge",
        help: "Population stability index of a feature's live values against the version's training profile, over the monitoring window",
        lines: |_, labels, scraped, out| drift_lines(scraped, labels, out, "ferry_feature_drift", "feature", true, false),
    },
    Family {
        name: "ferry_feature_drift_distance",
        kind: "gauge",
        help: "Kolmogorov-Smirnov (numeric) or total variation (categorical) distance of a feature's live values from its training profile",
        lines: |_, labels, scraped, out| {
            drift_lines(scraped, labels, out, "ferry_feature_drift_distance", "feature", true, true)
        },
    },
    Family {
        name: "ferry_prediction_drift",
        kind: "gauge",
        help: "Population stability index of an output's live values against the version's training profile, over the monitoring window",
        lines: |_, labels, scraped, out| drift_lines(scraped, labels, out, "ferry_prediction_drift", "output", false, false),
    },
    Family {
        name: "ferry_prediction_drift_distance",
        kind: "gauge",
        help: "Kolmogorov-Smirnov (numeric) or total variation (categorical) distance of an output's live values from its training profile",
        lines: |_, labels, scraped, out| {
            drift_lines(scraped, labels, out, "ferry_prediction_drift_distance", "output", false, true)
        },
    },
    Family {
        name: "ferry_monitoring_samples_total",
        kind: "counter",
        help: "Requests sampled and counted against the version's training profile",
        lines: |v, labels, _, out| {
            if let Some(drift) = v.monitored.drift() {
                line(out, "ferry_monitoring_samples_total", labels, drift.samples.load(Relaxed));
            }
        },
    },
    Family {
        name: "ferry_guest_errors_total",
        kind: "counter",
        help: "Calls that ended in a guest trap, limit hit or model error, by kind",
        lines: |v, labels, _, out| {
            for (kind, n) in v.series.errors() {
                let labels = format!("{labels},kind=\"{kind}\"");
                line(out, "ferry_guest_errors_total", &labels, n);
            }
        },
    },
    Family {
        name: "ferry_breaker_trips_total",
        kind: "counter",
        help: "Times a version's circuit breaker tripped, by the kind of fault that tripped it",
        lines: |v, labels, _, out| {
            let Some(ready) = v.ready() else { return };
            for (kind, n) in ready.breaker.trips_by_kind() {
                let labels = format!("{labels},kind=\"{kind}\"");
                line(out, "ferry_breaker_trips_total", &labels, n);
            }
        },
    },
    Family {
        name: "ferry_breaker_probes_total",
        kind: "counter",
        help: "Probe calls through a tripped breaker, by outcome (failed: open again; recovered: closed)",
        lines: |v, labels, _, out| {
            let Some(ready) = v.ready() else { return };
            let (failed, recovered) = ready.breaker.probes();
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
        lines: |v, labels, _, out| {
            let Some(ready) = v.ready() else { return };
            let n = ready.breaker.rejected();
            if n > 0 {
                line(out, "ferry_breaker_rejected_total", labels, n);
            }
        },
    },
    Family {
        name: "ferry_instances",
        kind: "gauge",
        help: "Live instances of a version by state (busy or idle)",
        lines: |_, labels, scraped, out| {
            let stats = scraped.stats.as_ref();
            let (busy, idle) = stats.map_or((0, 0), |s| (s.live - s.idle, s.idle));
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
        lines: |v, labels, _, out| {
            let waiting = v.ready().map_or(0, |r| r.admission.waiting());
            line(out, "ferry_queued_requests", labels, waiting)
        },
    },
    Family {
        name: "ferry_model_load_seconds",
        kind: "gauge",
        help: "Time a version took to compile, initialise and self-test",
        lines: |v, labels, _, out| line(out, "ferry_model_load_seconds", labels, v.load_seconds),
    },
    Family {
        name: "ferry_model_ready",
        kind: "gauge",
        help: "1 when the version serves, 0 when it is loading or failed",
        lines: |v, labels, _, out| line(out, "ferry_model_ready", labels, u8::from(v.is_ready())),
    },
    Family {
        name: "ferry_version_failed",
        kind: "gauge",
        help: "1 when the version failed to load (a self-test, its initialisation, a limit), 0 otherwise; the reason is in GET /v1/models/{m}",
        lines: |v, labels, _, out| {
            let failed = matches!(v.state, crate::registry::VersionState::Failed(_));
            line(out, "ferry_version_failed", labels, u8::from(failed));
        },
    },
    Family {
        name: "ferry_breaker_open",
        kind: "gauge",
        help: "1 while the version's circuit breaker is open (its requests fail fast with 503)",
        lines: |v, labels, _, out| {
            if let Some(ready) = v.ready() {
                line(out, "ferry_breaker_open", labels, u8::from(ready.breaker.is_open()));
            }
        },
    },
    Family {
        name: "ferry_version_memory_bytes",
        kind: "gauge",
        help: "Memory of a version: the snapshot image its instances share, their private linear memory, and its host-side graphs",
        lines: |_, labels, scraped, out| {
            let stats = scraped.stats.as_ref();
            let Some(stats) = stats else {
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
        lines: |_, labels, scraped, out| {
            let stats = scraped.stats.as_ref();
            if let Some(stats) = stats {
                line(out, "ferry_version_resident", labels, u8::from(stats.resident));
            }
        },
    },
    Family {
        name: "ferry_version_evictions_total",
        kind: "counter",
        help: "Times a version was evicted to stay within the host's memory budget",
        lines: |_, labels, scraped, out| {
            let stats = scraped.stats.as_ref();
            if let Some(stats) = stats {
                line(out, "ferry_version_evictions_total", labels, stats.evictions);
            }
        },
    },
    Family {
        name: "ferry_version_cold_loads_total",
        kind: "counter",
        help: "Times an evicted version came back for a request",
        lines: |_, labels, scraped, out| {
            let stats = scraped.stats.as_ref();
            if let Some(stats) = stats {
                line(out, "ferry_version_cold_loads_total", labels, stats.reopens);
            }
        },
    },
    Family {
        name: "ferry_guest_cpu_microseconds_total",
        kind: "counter",
        help: "CPU time of the threads running a version's guest calls (shadow copies included), for charging its team",
        lines: |v, labels, _, out| {
            // From the exact total: per-call rounding would lose the microsecond calls.
            let micros = v.usage.cpu_ns.load(Relaxed) / 1_000;
            line(out, "ferry_guest_cpu_microseconds_total", labels, micros);
        },
    },
    Family {
        name: "ferry_guest_fuel_total",
        kind: "counter",
        help: "Fuel a version's guest calls burnt (versions with a fuel limit, or every version with [host] fuel = true)",
        lines: |v, labels, _, out| {
            // No series where fuel is not counted: a 0 would read as "burnt none".
            if v.counts_fuel {
                line(out, "ferry_guest_fuel_total", labels, v.usage.fuel.load(Relaxed));
            }
        },
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("a\nb"), "a\\nb");
    }
}
