//! One call on a version: wait for admission (bounded queue), take a warm instance, run the guest
//! (paced by its model's CPU share), return or drop the instance, meter what it cost.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::shares::{CpuShares, Place, SharePacer};
use super::{metering, EntryPoint};
use crate::registry::{ModelVersion, Routed};
use crate::runtime::{Admitted, CallError, Entry, InstancePool, ModelInstance};
use crate::stamps::unix_ms;

/// Versions whose typical call is shorter than this start on the async worker itself.
const INLINE_BELOW: Duration = Duration::from_micros(500);

/// Asks `ask` at entry point `K` of an instance of `version`, once `entry`'s turn in its admission
/// queue comes.
pub(super) async fn run<K: EntryPoint>(
    shares: &CpuShares,
    version: &Routed,
    ask: &Arc<K::Ask>,
    entry: Entry,
) -> Result<K::Reply, CallError> {
    let pool = &version.ready.pool;
    let admitted = entry.turn().await?;
    version.series.queue_wait(admitted.waited);
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
    // (block_in_place) costs more than the call (measured: fraud-features 37k → 59k rps). But never
    // on every worker at once, so that a burst of calls (or a short model turned slow, which shows
    // in its typical call only once its first slow call ends) cannot stop the runtime's other
    // tasks. Versions whose calls take longer hand the worker off.
    let inline = (version.typical_call() < INLINE_BELOW && !cold)
        .then(InlineSlot::take)
        .flatten();
    let place = if inline.is_some() {
        Place::Worker
    } else {
        Place::Blocking
    };
    let pacer = shares.pacer(tenant, place, tier);
    let run = || run_here::<K>(version, pool, ask, cold, pacer);
    let result = match inline {
        Some(_slot) => run(),
        None => tokio::task::block_in_place(run),
    };
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
    let job = Box::new(move || {
        let deadline = version.limits.deadline();
        let result = if queued.elapsed() >= deadline {
            pacer.count_starved();
            Err(CallError::OverShare {
                share_percent: pacer.share_percent(),
                deadline,
            })
        } else {
            run_here::<K>(&version, &pool, &ask, cold, pacer)
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

/// Calls running on async workers now.
static INLINE_NOW: AtomicUsize = AtomicUsize::new(0);

/// The right to run a guest call on this async worker: held by at most all workers but one.
struct InlineSlot;

impl InlineSlot {
    fn take() -> Option<InlineSlot> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return None;
        }
        let most = handle.metrics().num_workers().saturating_sub(1).max(1);
        INLINE_NOW
            .fetch_update(Relaxed, Relaxed, |n| (n < most).then_some(n + 1))
            .ok()
            .map(|_| InlineSlot)
    }
}

impl Drop for InlineSlot {
    fn drop(&mut self) {
        INLINE_NOW.fetch_sub(1, Relaxed);
    }
}

/// Asks `ask` at entry point `K` on this thread, on an instance of `version`'s pool (the caller
/// holds admission).
fn run_here<K: EntryPoint>(
    version: &ModelVersion,
    pool: &Arc<InstancePool>,
    ask: &K::Ask,
    cold: bool,
    pacer: SharePacer,
) -> Result<K::Reply, CallError> {
    let waited = Instant::now();
    let mut instance = pool.checkout()?;
    if cold {
        version.series.cold_wait(waited.elapsed());
    }
    run_instance(
        version,
        &mut instance,
        |i| K::run(i, ask),
        waited,
        Some(pacer),
    )
}

/// Runs `call` on `instance` of `version`, metering it and, with a `pacer`, holding it to its
/// model's CPU share; `since` is when the call began waiting for its instance.
pub(super) fn run_instance<R>(
    version: &ModelVersion,
    instance: &mut ModelInstance,
    call: impl FnOnce(&mut ModelInstance) -> Result<R, CallError>,
    since: Instant,
    pacer: Option<SharePacer>,
) -> Result<R, CallError> {
    let meter = metering::Meter::start();
    let cpu_at_start = meter.cpu_at_start();
    if let Some(mut pacer) = pacer {
        pacer.begin(cpu_at_start);
        instance.set_pacer(Some(Box::new(pacer)));
    }
    let result = call(instance);
    let pacer = instance
        .set_pacer(None)
        .and_then(|p| (p as Box<dyn std::any::Any>).downcast::<SharePacer>().ok());
    let (took, cpu) = meter.finish(version, instance.take_fuel_used());
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
    let (count, total) = match result {
        Ok(_) => (&usage.succeeded, &usage.succeeded_ns),
        Err(_) => (&usage.failed, &usage.failed_ns),
    };
    count.fetch_add(1, Relaxed);
    total.fetch_add(since.elapsed().as_nanos() as u64, Relaxed);
    usage
        .last_unix_ms
        .store(unix_ms(std::time::SystemTime::now()), Relaxed);
    result
}
