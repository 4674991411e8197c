//! One call on a version: wait for admission (bounded queue), take a warm instance, run the guest on
//! this worker (telling tokio so other tasks move), return or drop the instance, meter what it cost.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{metering, metrics, Output, Payload};
use crate::registry::{unix_ms, ModelVersion};
use crate::runtime::{CallError, InstancePool, ModelInstance};

/// Versions whose typical call is shorter than this run on the async worker itself.
const INLINE_BELOW: Duration = Duration::from_micros(500);

/// Runs `payload` on an instance of `version`, after its admission queue.
pub(super) async fn run(
    version: &Arc<ModelVersion>,
    payload: &Payload,
) -> Result<Output, CallError> {
    let pool = pool_of(version)?;
    let admitted = version.admission.admit().await?;
    metrics::queue_wait(version, admitted.waited);
    version
        .usage
        .queue_ns
        .fetch_add(admitted.waited.as_nanos() as u64, Relaxed);
    // An evicted version comes back (from its compiled snapshot) before this call: milliseconds,
    // bounded by the pool's queue timeout for callers that find another one bringing it back.
    let cold = !pool.is_resident();
    let run = || run_here(version, pool, payload, cold);
    // Calls that usually take microseconds run right here on the worker: handing the worker off
    // (block_in_place) costs more than the call (measured: fraud-features 37k → 59k rps). Versions
    // whose calls take longer hand off, so the runtime's other tasks keep moving.
    let result = if version.typical_call() < INLINE_BELOW && !cold {
        run()
    } else {
        tokio::task::block_in_place(run)
    };
    drop(admitted);
    result
}

/// The version's pool, or the overload a version without one is to its callers.
pub(super) fn pool_of(version: &ModelVersion) -> Result<&Arc<InstancePool>, CallError> {
    version
        .pool
        .as_ref()
        .ok_or_else(|| CallError::Overloaded(Default::default()))
}

/// Runs `payload` on this thread, on an instance of `version`'s pool (the caller holds admission).
pub(super) fn run_here(
    version: &ModelVersion,
    pool: &Arc<InstancePool>,
    payload: &Payload,
    cold: bool,
) -> Result<Output, CallError> {
    let waited = Instant::now();
    let mut instance = pool.checkout()?;
    if cold {
        metrics::cold_wait(version, waited.elapsed());
    }
    run_instance(version, &mut instance, payload, waited)
}

/// Runs `payload` on `instance` of `version`, metering it; `since` is when the call began waiting
/// for its instance.
pub(super) fn run_instance(
    version: &ModelVersion,
    instance: &mut ModelInstance,
    payload: &Payload,
    since: Instant,
) -> Result<Output, CallError> {
    let meter = metering::Meter::start();
    let result = match payload {
        Payload::Features(text) => instance.predict(text).map(Output::Features),
        Payload::Tensors(t) => instance
            .infer(&t.inputs, &t.parameters)
            .map(Output::Tensors),
    };
    let took = meter.finish(version, instance.take_fuel_used());
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
