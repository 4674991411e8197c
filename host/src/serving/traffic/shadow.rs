//! Shadow traffic: a copy of a sampled share of a model's requests runs on a candidate version, off
//! the request path, and its answer is compared with the primary's. The copy is handed over after the
//! primary has answered (nothing of it is on the caller's time) to a few worker threads of their own,
//! in Linux's idle scheduling class (they run on CPU time nothing else wants), through a small hand-off buffer: when it is full, or the candidate has no
//! idle warm instance to spare, the copy is dropped and counted — never queued behind, never waited
//! for. A copy runs on the candidate's own instances under the candidate's limits and never makes the
//! candidate's pool grow (nor, through the memory budget, anyone else's shrink), so a shadow that
//! loops or traps costs its own instances and nothing of the primary's answer.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc::{channel, error::TrySendError, Receiver, Sender};

use serde_json::{json, Value};

use super::super::{call, metrics, Output, Payload, ServeError};
use super::compare::{compare, Agreement};
use crate::registry::{ModelVersion, Routed};

/// How shadow copies run.
#[derive(Debug, Clone)]
pub struct ShadowOptions {
    /// Threads running copies (at most this many run at once, across models).
    pub workers: usize,
    /// Copies waiting for a thread; beyond it they are dropped.
    pub queue: usize,
    /// OS niceness of the threads where the idle scheduling class is refused (0–19).
    pub nice: i32,
}

impl Default for ShadowOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        ShadowOptions {
            workers: cores,
            queue: 2 * cores,
            nice: 10,
        }
    }
}

struct Job {
    /// The candidate's profile, when this copy is sampled for drift.
    drift: Option<Arc<crate::drift::VersionDrift>>,
    candidate: Routed,
    /// The candidate also serves requests of its own (an alias names it): copies leave it one idle
    /// instance.
    serves_live: bool,
    primary: Arc<ModelVersion>,
    payload: Payload,
    outcome: Result<Output, ServeError>,
    /// How the front end reports a failed request (the copy's status in the candidate's metrics).
    statuses: super::super::Statuses,
}

/// (model, primary version, shadow version).
type Pair = (String, String, String);

/// What a pair's copies came to.
#[derive(Debug, Clone, Default)]
struct PairStats {
    compared: u64,
    primary_failed: u64,
    shadow_failed: u64,
    dropped_queue_full: u64,
    dropped_busy: u64,
    numbers: u64,
    sum_abs_diff: f64,
    max_abs_diff: f64,
    identical: u64,
    labels: u64,
    labels_agreed: u64,
}

/// The shadow workers and what their copies found.
pub struct Shadows {
    /// Lock-free for the request that offers a copy (a std channel wakes a waiting worker under a
    /// lock the worker may hold at idle priority).
    queue: Sender<Job>,
    stats: Arc<Mutex<BTreeMap<Pair, PairStats>>>,
    /// Copies dropped for a full queue, counted on the request's own thread: never under `stats`,
    /// which the workers hold at idle priority (a request that waited for it would wait for an idle
    /// thread to get a core, hundreds of milliseconds on a busy host).
    dropped_queue_full: Mutex<BTreeMap<Pair, u64>>,
}

impl Shadows {
    /// Starts the worker threads.
    pub fn start(options: ShadowOptions) -> Shadows {
        let (queue, jobs) = channel::<Job>(options.queue.max(1));
        let jobs = Arc::new(Mutex::new(jobs));
        let stats: Arc<Mutex<BTreeMap<Pair, PairStats>>> = Default::default();
        for i in 0..options.workers.max(1) {
            let (jobs, stats) = (jobs.clone(), stats.clone());
            let nice = options.nice;
            std::thread::Builder::new()
                .name(format!("ferry-shadow-{i}"))
                .spawn(move || {
                    lower_priority(nice);
                    work(&jobs, &stats)
                })
                .expect("spawning a shadow worker");
        }
        Shadows {
            queue,
            stats,
            dropped_queue_full: Mutex::default(),
        }
    }

    /// Hands over a copy of a request the primary has answered (`outcome`); drops it when the
    /// workers are all busy and the queue is full.
    pub fn offer(
        &self,
        drift: Option<Arc<crate::drift::VersionDrift>>,
        candidate: Routed,
        serves_live: bool,
        primary: Arc<ModelVersion>,
        payload: Payload,
        outcome: Result<Output, ServeError>,
        statuses: super::super::Statuses,
    ) {
        let job = Job {
            drift,
            candidate,
            serves_live,
            primary,
            payload,
            outcome,
            statuses,
        };
        if let Err(TrySendError::Full(job) | TrySendError::Closed(job)) = self.queue.try_send(job) {
            let pair = pair_of(&job);
            metrics::shadow(&pair, "dropped_queue_full", None);
            *self
                .dropped_queue_full
                .lock()
                .unwrap()
                .entry(pair)
                .or_default() += 1;
        }
    }

    /// What the copies of `model`'s requests found, per (primary, shadow) pair.
    pub fn describe(&self, model: &str) -> Value {
        let mut stats = self.stats.lock().unwrap().clone();
        for (pair, dropped) in self.dropped_queue_full.lock().unwrap().iter() {
            stats.entry(pair.clone()).or_default().dropped_queue_full = *dropped;
        }
        let pairs: Vec<Value> = stats
            .iter()
            .filter(|((m, _, _), _)| m == model)
            .map(|((_, primary, shadow), s)| {
                json!({
                    "primary": primary,
                    "shadow": shadow,
                    "compared": s.compared,
                    "identical": s.identical,
                    "primary_failed": s.primary_failed,
                    "shadow_failed": s.shadow_failed,
                    "dropped_queue_full": s.dropped_queue_full,
                    "dropped_busy": s.dropped_busy,
                    "abs_diff": if s.numbers > 0 {
                        json!({"max": s.max_abs_diff, "mean": s.sum_abs_diff / s.numbers as f64})
                    } else {
                        Value::Null
                    },
                    "label_agreement": if s.labels > 0 {
                        json!(s.labels_agreed as f64 / s.labels as f64)
                    } else {
                        Value::Null
                    },
                })
            })
            .collect();
        Value::Array(pairs)
    }
}

enum Outcome {
    Compared(Agreement),
    PrimaryFailed,
    ShadowFailed,
    DroppedBusy,
}

fn work(jobs: &Mutex<Receiver<Job>>, stats: &Mutex<BTreeMap<Pair, PairStats>>) {
    loop {
        let job = match jobs.lock().unwrap().blocking_recv() {
            Some(job) => job,
            None => return, // the host is going away
        };
        let outcome = run(&job);
        record(stats, &job, outcome);
    }
}

fn run(job: &Job) -> Outcome {
    let candidate = &job.candidate;
    let ready = &candidate.ready;
    // Never in anyone's way: not when the candidate's own callers queue, not past its concurrency,
    // only on a warm idle instance (no new instance, no eviction to make room for one), and leaving
    // one idle when the candidate serves requests of its own.
    if ready.admission.waiting() > 0 || ready.breaker.is_open() {
        return Outcome::DroppedBusy;
    }
    let Some(admitted) = ready.admission.try_admit() else {
        return Outcome::DroppedBusy;
    };
    let Some(mut instance) = ready.pool.try_checkout_idle(job.serves_live as usize) else {
        return Outcome::DroppedBusy;
    };
    let started = Instant::now();
    let answer = call::run_instance(candidate, &mut instance, |i| job.payload.run(i), None);
    drop(instance);
    // The candidate's place goes back before anything else here: its own callers never wait for the
    // drift counting below.
    drop(admitted);
    candidate
        .usage
        .served(answer.is_ok(), started.elapsed(), job.payload.inferences());
    if let Some(drift) = &job.drift {
        crate::serving::monitoring::observe(drift, &job.payload, answer.as_ref().ok());
    }
    let status = match &answer {
        Ok(_) => 200,
        Err(e) => (job.statuses)(&ServeError::Call(e.clone())),
    };
    candidate
        .series
        .request("shadow", status, started.elapsed());
    match (&job.outcome, answer) {
        (_, Err(e)) => {
            candidate.series.call_error(&e);
            Outcome::ShadowFailed
        }
        (Err(_), Ok(_)) => Outcome::PrimaryFailed,
        (Ok(primary), Ok(shadow)) => Outcome::Compared(compare(primary, &shadow)),
    }
}

/// The (model, primary, shadow) pair a copy is for.
fn pair_of(job: &Job) -> Pair {
    (
        job.primary.manifest.model.clone(),
        job.primary.manifest.version.clone(),
        job.candidate.manifest.version.clone(),
    )
}

fn record(stats: &Mutex<BTreeMap<Pair, PairStats>>, job: &Job, outcome: Outcome) {
    let pair = pair_of(job);
    let name = match &outcome {
        Outcome::Compared(_) => "compared",
        Outcome::PrimaryFailed => "primary_failed",
        Outcome::ShadowFailed => "shadow_failed",
        Outcome::DroppedBusy => "dropped_busy",
    };
    metrics::shadow(
        &pair,
        name,
        match &outcome {
            Outcome::Compared(a) => Some(a),
            _ => None,
        },
    );
    let mut stats = stats.lock().unwrap();
    let s = stats.entry(pair).or_default();
    match outcome {
        Outcome::Compared(a) => {
            s.compared += 1;
            if let Some(d) = a.max_abs_diff {
                s.numbers += 1;
                s.sum_abs_diff += d;
                s.max_abs_diff = s.max_abs_diff.max(d);
            }
            s.labels += a.labels;
            s.labels_agreed += a.labels_agreed;
            if a.max_abs_diff.unwrap_or(0.0) == 0.0 && a.labels == a.labels_agreed {
                s.identical += 1;
            }
        }
        Outcome::PrimaryFailed => s.primary_failed += 1,
        Outcome::ShadowFailed => s.shadow_failed += 1,
        Outcome::DroppedBusy => s.dropped_busy += 1,
    }
}

/// Makes this thread run only on CPU time nothing else wants: Linux's idle scheduling class (a
/// request thread that wakes takes the core at once), else, where that is refused, `nice`.
fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain syscalls on this thread's own id with a valid, zeroed parameter; failure
        // only leaves the priority as it was.
        unsafe {
            let param: libc::sched_param = std::mem::zeroed();
            if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) == 0 {
                return;
            }
            let tid = libc::syscall(libc::SYS_gettid);
            if libc::setpriority(libc::PRIO_PROCESS as _, tid as _, nice) != 0 {
                tracing::debug!("cannot lower the shadow worker's priority");
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}
