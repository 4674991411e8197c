//! A version's callers' requests as the console's history (`serving::history`) reads them:
//! counts, errors, and latencies as a fixed histogram of atomic counters — three relaxed
//! `fetch_add`s per request, read as differences between two snapshots, so p50 and p99 of any
//! interval come without keeping a sample. (`/metrics` keeps its own, coarser, Prometheus buckets;
//! these are fine enough for a percentile.)
//!
//! Every request that reached the version counts, refused ones too (a full queue, an open breaker, a
//! bad input), and those answered with a 5xx are its errors: an outage shows as errors, not as
//! silence. A shadow's copies do not: they are not the
//! model's callers.
//!
//! Buckets are quarter octaves of microseconds (each bucket's upper bound is at most 1.25× its lower
//! bound past 4 µs), from 1 µs to 2^28 µs (4.5 minutes); everything slower lands in the last bucket. A
//! quantile is reported as its bucket's midpoint, so within about 12 % of the true value.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets: 0–3 µs one each, then four per octave up to 2^28 µs.
pub const BUCKETS: usize = 108;

/// A version's callers' requests.
#[derive(Debug, Default)]
pub struct LiveTraffic {
    /// Requests answered or refused.
    pub requests: AtomicU64,
    /// Of which failed on the host's side (a 5xx: the model failed, a limit, a full queue, an open
    /// breaker); a caller's bad input is the caller's error, not the model's.
    pub errors: AtomicU64,
    /// Their latencies.
    pub latencies: Latencies,
}

impl LiveTraffic {
    /// Counts one request that ended after `took`, with the status it was answered with.
    pub fn record(&self, status: u16, took: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.latencies.record(took);
    }
}

/// Counters of request latencies.
#[derive(Debug)]
pub struct Latencies([AtomicU64; BUCKETS]);

impl Default for Latencies {
    fn default() -> Latencies {
        Latencies(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl Latencies {
    /// Counts one request that took `took`.
    pub fn record(&self, took: Duration) {
        let micros = took.as_micros().min(u64::MAX as u128) as u64;
        self.0[bucket(micros)].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> [u64; BUCKETS] {
        std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }
}

/// The bucket of a latency of `micros`.
fn bucket(micros: u64) -> usize {
    if micros < 4 {
        return micros as usize;
    }
    let octave = 63 - micros.leading_zeros() as usize; // ≥ 2
    let quarter = ((micros >> (octave - 2)) & 3) as usize;
    (4 * (octave - 1) + quarter).min(BUCKETS - 1)
}

/// The bounds of bucket `i`, in microseconds: `[low, high)`.
fn bounds(i: usize) -> (f64, f64) {
    if i < 4 {
        return (i as f64, i as f64 + 1.0);
    }
    let octave = i / 4 + 1;
    let quarter = (i % 4) as u64;
    let step = 1u64 << (octave - 2);
    let low = (4 + quarter) * step;
    (low as f64, (low + step) as f64)
}

/// The `q` quantile (0 to 1) of the latencies `counts` holds, in milliseconds; `None` when it holds
/// none.
pub fn quantile_ms(counts: &[u64; BUCKETS], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    // The rank of the quantile, 1-based: p50 of 1 request is that request.
    let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, &n) in counts.iter().enumerate() {
        seen += n;
        if seen >= rank {
            let (low, high) = bounds(i);
            return Some((low + high) / 2.0 / 1000.0);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_each_holds_its_bounds() {
        for i in 0..BUCKETS - 1 {
            let (low, high) = bounds(i);
            assert_eq!(bounds(i + 1).0, high, "bucket {i}");
            assert_eq!(bucket(low as u64), i);
            assert_eq!(bucket(high as u64 - 1), i);
            if i >= 4 {
                assert!(high / low <= 1.25 + 1e-9, "bucket {i}: {low}..{high}");
            }
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        assert_eq!(bounds(BUCKETS - 1).1, (1u64 << 28) as f64);
    }

    #[test]
    fn quantiles_fall_in_the_right_bucket() {
        let l = Latencies::default();
        for ms in 1..=100u64 {
            l.record(Duration::from_millis(ms));
        }
        let counts = l.snapshot();
        let p50 = quantile_ms(&counts, 0.5).unwrap();
        let p99 = quantile_ms(&counts, 0.99).unwrap();
        assert!((p50 - 50.0).abs() / 50.0 < 0.13, "{p50}");
        assert!((p99 - 99.0).abs() / 99.0 < 0.13, "{p99}");
        assert_eq!(quantile_ms(&[0; BUCKETS], 0.5), None);
        // One slow request among many fast ones is the p99's only when it is more than 1 %.
        let l = Latencies::default();
        for _ in 0..199 {
            l.record(Duration::from_micros(100));
        }
        l.record(Duration::from_secs(3));
        assert!(quantile_ms(&l.snapshot(), 0.99).unwrap() < 0.2);
        assert!(quantile_ms(&l.snapshot(), 1.0).unwrap() > 2500.0);
    }
}
