//! CPU shares: each model is guaranteed a share of the host's cores for its guest calls (its
//! `cpu_share` limit, else `[host] cpu_share`), measured by the CPU clock of the threads its calls
//! actually run on. A model within its share runs as any other thread. A model past it keeps
//! running as usual while no model less far past its own share is active (a model alone on a host
//! has all of it, at full speed); beside one, the model past its share gives way: its calls run only
//! on capacity nobody else wants, in Linux's idle scheduling class, from which a waking thread of the
//! other model (or an HTTP worker) takes the core at once. So idle capacity is borrowed freely and
//! given back without waiting for a time slice to end.
//!
//! Models are in tiers: within their share, a little past it (recent use under [`FAR_OVER`] times
//! the share), far past it. A model gives way to a model of a lower tier that has a call running or
//! began or ended one in the last [`ACTIVE`]: a model whose calls take microseconds is seldom caught
//! mid-call, yet needs its core again at once. So of two models both past their shares, the one
//! further past (a slow model called far beyond its share) gives way to the one just past it (a busy
//! model of short calls).
//!
//! The share is a token bucket of CPU time: it fills at `share × cores` CPU-seconds per second, up
//! to [`BURST`] of that, and every call's CPU time is taken out of it as it runs (at each
//! millisecond tick of a long call, and at its end). Empty means over the share.
//!
//! - A call of a model over its share when it starts, while it must give way, runs on a borrowing
//!   thread ([`borrow`]), one that lowered itself once and stays
//!   lowered: that needs no privilege.
//! - A call that goes over its share while it runs, or must give way while it runs, has its own
//!   thread lowered at the next tick, and raised back when that no longer holds or the call ends,
//!   where the process may raise threads (`CAP_SYS_NICE`, see
//!   [`priority`]); elsewhere it finishes at normal priority, so a model can overrun its share by
//!   one call per instance before its next calls go to the borrowing threads.
//!
//! A call over its share that passes its deadline having had less than half of it on a core was
//! starved by the host's other work, not slow by itself: its caller gets a 503 with `Retry-After`,
//! counted, and the circuit breaker does not count it against the model.
//!
//! A call on an async worker (short calls run there: handing the worker off costs more than they
//! take) is never lowered, since that would lower every task the worker runs; `call` keeps at least
//! one worker free of guest calls, and never runs a model over its share on one while it must give
//! way.

mod borrow;
mod priority;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use serde_json::{json, Value};

use super::metering::{thread_cpu_time, CpuClock};
use crate::registry::ModelVersion;
use crate::runtime::Pacer;

/// How much CPU time a model within its share may bank: its share of this window.
pub const BURST: Duration = Duration::from_millis(100);
/// How much it may owe: its share of this window (so a model that once ran long is forgiven).
const MAX_DEBT: Duration = Duration::from_secs(2);
/// Admitted calls of over-share models that may wait for a borrowing thread (more: 503).
const BORROW_QUEUE: usize = 4096;

/// The host's CPU shares, one account per model.
pub struct CpuShares {
    cores: f64,
    default_share: f64,
    /// True when a running call's thread may be lowered and raised back.
    lowering: bool,
    borrowers: borrow::Borrowers,
    tenants: DashMap<String, Arc<Tenant>>,
    /// Calls running now, by their model's tier as they started.
    running: Arc<Running>,
}

impl CpuShares {
    /// Shares of this host's cores; `default_share` for models whose limits name none.
    pub fn new(default_share: f64) -> CpuShares {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let lowering = priority::available();
        if !lowering {
            tracing::info!(
                "CPU shares: this process may not raise a lowered thread back (that needs CAP_SYS_NICE): \
                 a call that goes over its model's share while it runs finishes at normal priority"
            );
        }
        CpuShares {
            cores: cores as f64,
            default_share: clamp_share(default_share),
            lowering,
            borrowers: borrow::Borrowers::start(cores, BORROW_QUEUE),
            tenants: DashMap::new(),
            running: Arc::new(Running::new()),
        }
    }

    /// True when a model of a lower tier than `tier`, other than `tenant`'s, is active: then
    /// `tenant`'s model must leave the cores to it.
    pub(super) fn contended(&self, tenant: &Tenant, tier: usize) -> bool {
        contended(&self.running, tenant, tier)
    }

    /// The account of `version`'s model, under the share its limits name.
    pub(super) fn tenant(&self, version: &ModelVersion) -> Arc<Tenant> {
        let share = version
            .limits
            .cpu_share
            .map_or(self.default_share, clamp_share);
        let model = &version.manifest.model;
        let tenant = match self.tenants.get(model) {
            Some(t) => t.clone(),
            None => self
                .tenants
                .entry(model.clone())
                .or_insert_with(|| Arc::new(Tenant::new(model, self.cores)))
                .clone(),
        };
        tenant.share_bits.store(share.to_bits(), Relaxed);
        tenant
    }

    /// A pacer for one call of `tenant`, running where `place` says; `tier` is its model's as the
    /// call starts.
    pub(super) fn pacer(&self, tenant: Arc<Tenant>, place: Place, tier: usize) -> SharePacer {
        let borrowed = place == Place::Borrowed;
        if borrowed {
            tenant.lowered_calls.fetch_add(1, Relaxed);
            metrics::counter!("ferry_cpu_share_lowered_calls_total", "model" => tenant.model.clone())
                .increment(1);
        }
        SharePacer {
            clock: match place {
                Place::Worker => CpuClock::Wall,
                Place::Blocking | Place::Borrowed => CpuClock::Thread,
            },
            lowering: self.lowering && place == Place::Blocking,
            tenant,
            running: self.running.clone(),
            tier,
            begun: false,
            charged_to: Duration::ZERO,
            lowered: false,
            was_lowered: borrowed,
        }
    }

    /// Runs `job` on a borrowing thread (idle capacity); hands it back when too many wait.
    pub(super) fn borrow(&self, job: borrow::Job) -> Result<(), borrow::Job> {
        self.borrowers.run(job)
    }

    /// `model`'s account, for `GET /v1/models/{model}`.
    pub fn describe(&self, model: &str) -> Option<Value> {
        let tenant = self.tenants.get(model)?.clone();
        let share = tenant.share();
        Some(json!({
            "share": share,
            "cores": share * self.cores,
            "over_share": tenant.is_over(),
            "cpu_seconds": tenant.used_ns.load(Relaxed) as f64 / 1e9,
            "calls_lowered": tenant.lowered_calls.load(Relaxed),
            "calls_starved": tenant.starved_calls.load(Relaxed),
            "enforced": self.borrowers.lowered,
            "lowered_while_running": self.lowering,
        }))
    }
}

/// Tiers: 0 within its share, 1 over it by less than [`FAR_OVER`], 2 further.
const TIERS: usize = 3;
/// Recent use past this many times its share puts a model in the last tier.
const FAR_OVER: f64 = 2.0;
/// The window over which recent use is measured.
const WINDOW: Duration = Duration::from_millis(250);

/// Calls running, and the last call seen, by tier.
struct Running {
    calls: [AtomicUsize; TIERS],
    last_ns: [AtomicU64; TIERS],
    last_by: [AtomicUsize; TIERS],
    origin: Instant,
}

/// A model that began or ended a call this recently is active (its next call is microseconds away).
const ACTIVE: Duration = Duration::from_millis(5);

impl Running {
    fn new() -> Running {
        Running {
            calls: Default::default(),
            last_ns: Default::default(),
            last_by: Default::default(),
            origin: Instant::now(),
        }
    }
    fn seen(&self, tenant: &Tenant, tier: usize) {
        self.last_ns[tier].store(self.origin.elapsed().as_nanos() as u64 + 1, Relaxed);
        self.last_by[tier].store(tenant as *const Tenant as usize, Relaxed);
    }
}

/// True when another model of a lower tier than `tier` has a call running or is active.
fn contended(running: &Running, tenant: &Tenant, tier: usize) -> bool {
    let now = running.origin.elapsed().as_nanos() as u64;
    (0..tier.min(TIERS)).any(|t| {
        let last_by = running.last_by[t].load(Relaxed);
        running.calls[t].load(Relaxed) > tenant.running[t].load(Relaxed)
            || (last_by != 0 // nobody seen yet
                && last_by != tenant as *const Tenant as usize
                && now.saturating_sub(running.last_ns[t].load(Relaxed)) < ACTIVE.as_nanos() as u64)
    })
}

fn clamp_share(share: f64) -> f64 {
    if share.is_finite() {
        share.clamp(0.001, 1.0)
    } else {
        1.0
    }
}

/// One model's CPU account.
pub struct Tenant {
    model: String,
    cores: f64,
    share_bits: AtomicU64,
    bucket: Mutex<Bucket>,
    used_ns: AtomicU64,
    lowered_calls: AtomicU64,
    starved_calls: AtomicU64,
    /// Its calls running now, by tier.
    running: [AtomicUsize; TIERS],
}

struct Bucket {
    /// CPU nanoseconds the model may still use at normal priority (negative: owed).
    credit_ns: f64,
    at: Instant,
    window_at: Instant,
    window_ns: f64,
    /// Recent use, in multiples of its share.
    recent: f64,
}

impl Tenant {
    fn new(model: &str, cores: f64) -> Tenant {
        Tenant {
            model: model.to_owned(),
            cores,
            share_bits: AtomicU64::new(1f64.to_bits()),
            bucket: Mutex::new(Bucket {
                credit_ns: f64::INFINITY,
                at: Instant::now(),
                window_at: Instant::now(),
                window_ns: 0.0,
                recent: 0.0,
            }),
            used_ns: AtomicU64::new(0),
            lowered_calls: AtomicU64::new(0),
            starved_calls: AtomicU64::new(0),
            running: Default::default(),
        }
    }

    /// Its share of the host's cores (0–1).
    pub fn share(&self) -> f64 {
        f64::from_bits(self.share_bits.load(Relaxed))
    }

    /// Takes `cpu` out of the account; answers whether the model is now over its share.
    fn charge(&self, cpu: Duration) -> bool {
        self.used_ns.fetch_add(cpu.as_nanos() as u64, Relaxed);
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let rate = self.refill(&mut bucket);
        bucket.credit_ns =
            (bucket.credit_ns - cpu.as_nanos() as f64).max(-rate * MAX_DEBT.as_nanos() as f64);
        bucket.window_ns += cpu.as_nanos() as f64;
        let window = bucket.at.duration_since(bucket.window_at);
        if window >= WINDOW {
            bucket.recent = bucket.window_ns / window.as_nanos() as f64 / rate;
            bucket.window_ns = 0.0;
            bucket.window_at = bucket.at;
        }
        bucket.credit_ns < 0.0
    }

    /// True when the model is over its share now.
    pub(super) fn is_over(&self) -> bool {
        self.tier() > 0
    }

    /// 0 within its share, 1 a little over it, 2 far over it: a model gives way to active models of
    /// lower tiers.
    pub(super) fn tier(&self) -> usize {
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        self.refill(&mut bucket);
        if bucket.credit_ns >= 0.0 {
            0
        } else if bucket.recent < FAR_OVER {
            1
        } else {
            2
        }
    }

    /// Adds what the share earned since the last look; answers the rate (cores).
    fn refill(&self, bucket: &mut Bucket) -> f64 {
        let rate = self.share() * self.cores;
        let now = Instant::now();
        let earned = now.duration_since(bucket.at).as_nanos() as f64 * rate;
        bucket.credit_ns = (bucket.credit_ns + earned).min(rate * BURST.as_nanos() as f64);
        bucket.at = now;
        rate
    }
}

/// Where a call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    /// On the async worker that took the request: never lowered.
    Worker,
    /// On a thread handed off from a worker: lowered while its model is over its share.
    Blocking,
    /// On a borrowing thread: lowered from the start, and to the end.
    Borrowed,
}

/// One call's pacing: charges CPU as the call runs, and moves the call's thread to idle capacity
/// while its model is over its share.
pub(super) struct SharePacer {
    /// How the call's CPU time is read (wall time on an async worker: see `metering`).
    clock: CpuClock,
    /// False for a call on an async worker: its thread is never lowered.
    lowering: bool,
    tenant: Arc<Tenant>,
    /// The host's count of calls running, by tier ...
    running: Arc<Running>,
    /// ... of which this call is one, in this tier, once it has begun.
    tier: usize,
    begun: bool,
    /// The thread's CPU clock up to which the call has been charged.
    charged_to: Duration,
    lowered: bool,
    was_lowered: bool,
}

impl SharePacer {
    /// The call starts now, on this thread (its CPU clock reads `cpu`).
    pub(super) fn begin(&mut self, cpu: Duration) {
        self.charged_to = cpu;
        self.running.calls[self.tier].fetch_add(1, Relaxed);
        self.running.seen(&self.tenant, self.tier);
        self.tenant.running[self.tier].fetch_add(1, Relaxed);
        self.begun = true;
    }

    /// How the call's CPU time is read.
    pub(super) fn clock(&self) -> CpuClock {
        self.clock
    }

    /// The share to name in a refusal, in percent.
    pub(super) fn share_percent(&self) -> u32 {
        (self.tenant.share() * 100.0).round() as u32
    }

    /// The call ended with the thread's CPU clock at `cpu`: charges the rest and raises the thread
    /// back.
    pub(super) fn end(mut self, cpu: Duration) {
        self.tenant.charge(cpu.saturating_sub(self.charged_to));
        if self.lowered {
            priority::raise();
            self.lowered = false;
        }
    }

    /// The call ran on idle capacity and still passed its deadline with less than half of it spent
    /// on a core: counts it, and answers the share to name in its error.
    pub(super) fn starved(&self, cpu: Duration, deadline: Duration) -> Option<u32> {
        (self.was_lowered && cpu < deadline / 2).then(|| {
            self.count_starved();
            self.share_percent()
        })
    }

    /// Counts a call of this model refused as starved.
    pub(super) fn count_starved(&self) {
        self.tenant.starved_calls.fetch_add(1, Relaxed);
        metrics::counter!("ferry_cpu_share_starved_total", "model" => self.tenant.model.clone())
            .increment(1);
    }

    fn lower(&mut self) {
        if priority::lower() {
            self.lowered = true;
            if !self.was_lowered {
                self.was_lowered = true;
                self.tenant.lowered_calls.fetch_add(1, Relaxed);
                metrics::counter!("ferry_cpu_share_lowered_calls_total", "model" => self.tenant.model.clone())
                    .increment(1);
            }
        }
    }
}

impl Drop for SharePacer {
    fn drop(&mut self) {
        if self.begun {
            self.running.calls[self.tier].fetch_sub(1, Relaxed);
            self.running.seen(&self.tenant, self.tier);
            self.tenant.running[self.tier].fetch_sub(1, Relaxed);
        }
    }
}

impl Pacer for SharePacer {
    fn tick(&mut self) {
        // A call on a worker is not ticked (it is charged at its end, `serving::call`).
        if self.clock != CpuClock::Thread {
            return;
        }
        let Some(cpu) = thread_cpu_time() else {
            return;
        };
        let over = self.tenant.charge(cpu.saturating_sub(self.charged_to));
        self.charged_to = cpu;
        if !self.lowering {
            return;
        }
        // Over its share, the call gives way while a model of a lower tier is active.
        let give_way = over && contended(&self.running, &self.tenant, self.tier.max(1));
        if give_way && !self.lowered {
            self.lower();
        } else if !give_way && self.lowered && priority::raise() {
            self.lowered = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(share: f64) -> Tenant {
        let t = Tenant::new("m", 2.0);
        t.share_bits.store(share.to_bits(), Relaxed);
        t
    }

    #[test]
    fn a_model_within_its_share_banks_at_most_a_burst_and_goes_over_past_it() {
        let t = tenant(0.1); // 0.2 cores: 20 ms of CPU per 100 ms burst
        assert!(!t.charge(Duration::from_millis(5)));
        assert!(!t.is_over());
        assert!(t.charge(Duration::from_millis(30)), "the burst holds 20 ms");
        assert!(t.is_over());
        std::thread::sleep(Duration::from_millis(120));
        assert!(!t.is_over(), "0.2 cores earn back 24 ms in 120 ms");
    }

    #[test]
    fn debt_is_bounded_so_one_long_run_is_forgiven() {
        let t = tenant(0.5); // one core: owes at most 2 s of CPU
        assert!(t.charge(Duration::from_secs(3600)));
        let credit = t.bucket.lock().unwrap().credit_ns;
        assert!(credit >= -2e9 - 1e6, "{credit}");
    }

    #[test]
    fn a_model_gives_way_only_to_other_models_of_lower_tiers_while_they_are_active() {
        let running = Running::new();
        let (slow, busy) = (tenant(0.1), tenant(0.1));
        assert!(
            !contended(&running, &slow, 2),
            "alone, nobody to give way to"
        );
        // `busy` has a call running in tier 1 (a little past its share).
        running.calls[1].fetch_add(1, Relaxed);
        busy.running[1].fetch_add(1, Relaxed);
        running.seen(&busy, 1);
        assert!(
            contended(&running, &slow, 2),
            "far past its share, it yields"
        );
        assert!(
            !contended(&running, &slow, 1),
            "not to a model of its own tier"
        );
        assert!(!contended(&running, &busy, 2), "nor to its own calls");
        // The call ends; `busy` stays active for a moment, then is not.
        running.calls[1].fetch_sub(1, Relaxed);
        busy.running[1].fetch_sub(1, Relaxed);
        running.seen(&busy, 1);
        std::thread::sleep(ACTIVE * 2);
        assert!(
            !contended(&running, &slow, 2),
            "an idle model is not waited for"
        );
    }

    #[test]
    fn recent_use_far_past_the_share_is_the_last_tier() {
        let t = tenant(0.1); // 0.2 cores
        assert_eq!(t.tier(), 0);
        std::thread::sleep(WINDOW);
        // More CPU than the window's share by far: past the burst, and far past the share.
        t.charge(Duration::from_millis(500));
        assert_eq!(t.tier(), 2);
    }

    #[test]
    fn shares_are_clamped_to_a_sane_range() {
        assert_eq!(clamp_share(7.0), 1.0);
        assert_eq!(clamp_share(0.0), 0.001);
        assert_eq!(clamp_share(f64::NAN), 1.0);
    }
}
