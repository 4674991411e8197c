//! A version's request counters and latency histograms, fed by its calls: atomics the version
//! holds, so a request costs no label lookup and no allocation, and they go when the version goes.
//! The serving layer renders them for `/metrics` (`serving/metrics/versions.rs`). A version loaded
//! again (after it was unloaded) counts from zero.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use crate::runtime::CallError;

/// The bounds of every latency histogram, in seconds: from 50 µs to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

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

    /// Latency by route, for the routes that saw requests.
    pub fn durations(&self) -> impl Iterator<Item = (&'static str, &Histogram)> {
        ROUTES
            .iter()
            .zip(&self.duration)
            .filter(|(_, h)| !h.is_empty())
            .map(|(route, h)| (*route, h))
    }

    /// Time requests queued for admission.
    pub fn queue_waits(&self) -> &Histogram {
        &self.queue_wait
    }

    /// Time requests waited for their evicted version to come back.
    pub fn cold_waits(&self) -> &Histogram {
        &self.cold_wait
    }

    /// Errors so far by kind.
    pub fn errors(&self) -> Vec<(&'static str, u64)> {
        lock(&self.errors).iter().map(|(k, n)| (*k, *n)).collect()
    }

    /// Requests so far by (route, status), those counted.
    pub fn requests(&self) -> Vec<(&'static str, u16, u64)> {
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
pub struct Histogram {
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

    /// Nothing recorded yet.
    pub fn is_empty(&self) -> bool {
        self.count.load(Relaxed) == 0
    }

    /// Appends the histogram in Prometheus text format as `name` with `labels` (`k="v",…`).
    pub fn write(&self, out: &mut String, name: &str, labels: &str) {
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
}
