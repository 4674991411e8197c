//! One call on a version: wait for admission (bounded queue), take a warm instance, run the guest
//! (paced by its model's CPU share), return or drop the instance, meter what it cost.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::metering::{self, CpuClock};
use super::shares::{CpuShares, Place, SharePacer};
use super::EntryPoint;
use crate::registry::{ModelVersion, Routed};
use crate::runtime::{Admitted, CallError, Entry, InstancePool, ModelInstance};
use crate::stamps::unix_ms;

/// Versions whose typical call is shorter than this start on the async worker itself.
const INLINE_BELOW: Duration = Duration::from_micros(500);

/// Graph calls with more input than this never start on the async worker (see `run_admitted`):
/// dozens of rows of a typical network, so that one operator over all of them takes about a
/// millisecond, not the hundreds a request at the input limit could.
const GRAPH_INPUT_ON_WORKER_AT_MOST: usize = 16 << 10;

/// Asks `ask` at entry point `K` of an instance of `version`, once `entry`'s turn in its admission
/// queue comes.
pub(super) async fn run<K: EntryPoint>(
    shares: &CpuShares,
    version: &Routed,
    ask: &Arc<K::Ask>,
    entry: Entry,
) -> Result<K::Reply, CallError> {
    let admitted = entry.turn().await?;
    run_admitted::<K>(shares, version, ask, admitted).await
}

/// [`run`] once the call's turn has come (a batch waits for its turn while it gathers).
pub(super) async fn run_admitted<K: EntryPoint>(
    shares: &CpuShares,
    version: &Routed,
    ask: &Arc<K::Ask>,
    admitted: Admitted,
) -> Result<K::Reply, CallError> {
    let pool = &version.ready.pool;
    version.series.queue_wait(admitted.waited);
    crate::timing::record(crate::timing::Stage::Queue, admitted.waited);
    version
        .usage
        .queue_ns
        .fetch_add(admitted.waited.as_nanos() as u64, Relaxed);
    // An evicted version comes back (from its compiled snapshot) before this call: milliseconds,
    // bounded by the pool's queue timeout for callers that find another one bringing it back.
    let cold = !pool.is_resident();
    let tenant = shares.tenant(version);
    let tier = tenant.tier();
    if tier > 0 && shares.contended(&tenant, tier) {
        // Past its share beside a model less far past its own: on idle capacity only, off the
        // async workers. (With no such model active, it runs as usual: the cores are idle.)
        let pacer = shares.pacer(tenant, Place::Borrowed, tier);
        return borrowed::<K>(shares, pacer, &version.version, pool, ask, cold, admitted).await;
    }
    // Calls that usually take microseconds run right here on the worker: handing the worker off
    // (block_in_place) costs more than the call (measured: fraud-features 37k → 59k rps, and on two
    // cores keeping one worker for other tasks still cost a fifth of the throughput). Such a call
    // may use every worker, because none keeps one long: past `ON_WORKER_AT_MOST` it gives way at
    // the next epoch tick and runs again from the start on a thread of its own (a model's calls are
    // functions of their input; the instance it ran on is dropped). So a short model turned slow,
    // or one slow input, holds a worker for a couple of milliseconds, once: the slow call raises the
    // version's typical call, and its next calls hand the worker off from the start. A native
    // graph run, which no epoch tick interrupts, is stopped at the same limit by its backend (ONNX
    // Runtime's watchdog, tract between operators) and the call gives way alike; but an operator
    // that has started runs to its end, and its time grows with the input, so a graph call with
    // more input than a few rows' worth hands the worker off from the start, however short the
    // version's typical call.
    let on_worker = version.typical_call() < INLINE_BELOW
        && !cold
        && (version.ready.graphs.is_none() || K::input_bytes(ask) <= GRAPH_INPUT_ON_WORKER_AT_MOST)
        && on_multi_thread_worker();
    if on_worker {
        let pacer = shares.pacer(tenant.clone(), Place::Worker, tier);
        match run_here::<K>(version, pool, ask, cold, pacer, Some(ON_WORKER_AT_MOST)) {
            // Counted as a slow call, so that the version's next calls start off the worker.
            Err(CallError::GaveWay(_)) => {
                version.record_call(ON_WORKER_AT_MOST * 4);
                metrics::counter!("ferry_calls_gave_way_total", "model" => version.manifest.model.clone())
                    .increment(1);
            }
            done => {
                drop(admitted);
                return done;
            }
        }
    }
    let pacer = shares.pacer(tenant, Place::Blocking, tier);
    let result =
        tokio::task::block_in_place(|| run_here::<K>(version, pool, ask, cold, pacer, None));
    drop(admitted);
    result
}

/// Runs the call on a borrowing thread of `shares`, holding its admission until it ends there
/// (whether or not its caller still waits). One that waited there past its deadline is refused.
async fn borrowed<K: EntryPoint>(
    shares: &CpuShares,
    pacer: SharePacer,
    version: &Arc<ModelVersion>,
    pool: &Arc<InstancePool>,
    ask: &Arc<K::Ask>,
    cold: bool,
    admitted: Admitted,
) -> Result<K::Reply, CallError> {
    let (answer, answered) = tokio::sync::oneshot::channel();
    let (version, pool, ask) = (version.clone(), pool.clone(), ask.clone());
    let queued = Instant::now();
    // The request's stages go with the call to the borrowing thread.
    let stages = crate::timing::current();
    let job = Box::new(move || {
        let deadline = version.limits.deadline();
        let result = if queued.elapsed() >= deadline {
            pacer.count_starved();
            Err(CallError::OverShare {
                share_percent: pacer.share_percent(),
                deadline,
            })
        } else {
            crate::timing::scope_sync(stages, || {
                run_here::<K>(&version, &pool, &ask, cold, pacer, None)
            })
        };
        drop(admitted);
        let _ = answer.send(result);
    });
    if shares.borrow(job).is_err() {
        return Err(CallError::Overloaded(Duration::ZERO));
    }
    answered
        .await
        .unwrap_or(Err(CallError::Overloaded(Duration::ZERO)))
}

/// How long a call on an async worker may run before it gives way (a call that usually takes
/// microseconds; ticks come about once a millisecond, so it stops within about 3 ms).
const ON_WORKER_AT_MOST: Duration = Duration::from_millis(2);

thread_local! {
    /// Whether this thread belongs to a multi-threaded runtime (where a call may hand its worker off
    /// with `block_in_place`), asked once per thread: asking the runtime clones its handle.
    static ON_MULTI_THREAD: bool = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
}

/// True on a thread of a multi-threaded runtime.
fn on_multi_thread_worker() -> bool {
    ON_MULTI_THREAD.with(|on| *on)
}

/// Asks `ask` at entry point `K` on this thread, on an instance of `version`'s pool (the caller
/// holds admission); with `give_way_after`, the call stops once it has run that long
/// ([`CallError::GaveWay`]).
fn run_here<K: EntryPoint>(
    version: &ModelVersion,
    pool: &Arc<InstancePool>,
    ask: &K::Ask,
    cold: bool,
    pacer: SharePacer,
    give_way_after: Option<Duration>,
) -> Result<K::Reply, CallError> {
    let waited = Instant::now();
    let mut instance = pool.checkout()?;
    let checkout = waited.elapsed();
    crate::timing::record(crate::timing::Stage::Instance, checkout);
    if cold {
        version.series.cold_wait(checkout);
    }
    instance.give_way_after(give_way_after);
    let result = run_instance(version, &mut instance, |i| K::run(i, ask), Some(pacer));
    // Left as found for the instance's next call (a poisoned one is dropped anyway).
    if give_way_after.is_some() {
        instance.give_way_after(None);
    }
    result
}

/// Runs `call` on `instance` of `version`, metering it and, with a `pacer`, holding it to its
/// model's CPU share.
pub(super) fn run_instance<R>(
    version: &ModelVersion,
    instance: &mut ModelInstance,
    call: impl FnOnce(&mut ModelInstance) -> Result<R, CallError>,
    pacer: Option<SharePacer>,
) -> Result<R, CallError> {
    let clock = pacer.as_ref().map_or(CpuClock::Thread, SharePacer::clock);
    let meter = metering::Meter::start(clock);
    let cpu_at_start = meter.cpu_at_start();
    let pacer = pacer.map(|mut pacer| {
        pacer.begin(cpu_at_start);
        pacer
    });
    let (result, pacer) = match pacer {
        // Ticked: handed to the store for the call's ticks, and taken back.
        Some(pacer) if clock == CpuClock::Thread => {
            instance.set_pacer(Some(Box::new(pacer)));
            let result = call(instance);
            let pacer = instance
                .set_pacer(None)
                .and_then(|p| (p as Box<dyn std::any::Any>).downcast::<SharePacer>().ok());
            (result, pacer.map(|p| *p))
        }
        // A call on an async worker is over before the engine's next tick, or gives way at one:
        // its pacer stays here, charged at the end.
        pacer => (call(instance), pacer),
    };
    let (took, cpu) = meter.finish(version, instance.take_fuel_used());
    crate::timing::record(crate::timing::Stage::Guest, took);
    let result = match pacer {
        Some(pacer) => {
            let starved = match &result {
                Err(CallError::DeadlineExceeded(deadline)) => pacer
                    .starved(cpu, *deadline)
                    .map(|share_percent| (share_percent, *deadline)),
                _ => None,
            };
            pacer.end(cpu_at_start + cpu);
            match starved {
                Some((share_percent, deadline)) => Err(CallError::OverShare {
                    share_percent,
                    deadline,
                }),
                None => result,
            }
        }
        None => result,
    };
    version.record_call(took);
    let usage = &version.usage;
    let count = match result {
        Ok(_) => &usage.calls_ok,
        // Run again elsewhere: the rerun is the call that counts (its cost above is counted).
        Err(CallError::GaveWay(_)) => return result,
        Err(_) => &usage.calls_failed,
    };
    count.fetch_add(1, Relaxed);
    usage
        .last_unix_ms
        .store(unix_ms(std::time::SystemTime::now()), Relaxed);
    result
}
