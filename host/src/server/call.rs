//! A request's path into a model, shared by every inference route: wait for admission (bounded queue),
//! take a warm instance, run the guest on this worker (telling tokio so other tasks move), return or
//! drop the instance, record metrics.

use std::sync::Arc;
use std::time::Instant;

use crate::registry::ModelVersion;
use crate::runtime::{CallError, ModelInstance};

use std::time::Duration;

use super::error::ApiError;

/// Versions whose typical call is shorter than this run on the async worker itself.
const INLINE_BELOW: Duration = Duration::from_micros(500);
use super::metrics;

/// Runs `call` on an instance of `version`; `route` names the entry point in metrics.
pub async fn call_model<R>(
    version: &Arc<ModelVersion>,
    route: &'static str,
    call: impl FnOnce(&mut ModelInstance) -> Result<R, CallError>,
) -> Result<R, ApiError> {
    let started = Instant::now();
    let outcome = async {
        let pool = version
            .pool
            .as_ref()
            .ok_or_else(|| CallError::Overloaded(Default::default()))?;
        let admitted = version.admission.admit().await?;
        metrics::queue_wait(version, admitted.waited);
        // An evicted version comes back (from its compiled snapshot) before this call: milliseconds,
        // bounded by the pool's queue timeout for callers that find another one bringing it back.
        let cold = !pool.is_resident();
        let run = || {
            let waited = Instant::now();
            let mut instance = pool.checkout()?;
            if cold {
                metrics::cold_wait(version, waited.elapsed());
            }
            call(&mut instance)
        };
        // Calls that usually take microseconds run right here on the worker: handing the worker off
        // (block_in_place) costs more than the call (measured: fraud-features 37k → 59k rps). Versions
        // whose calls take longer hand off, so the runtime's other tasks keep moving.
        let call_started = Instant::now();
        let result = if version.typical_call() < INLINE_BELOW && !cold {
            run()
        } else {
            tokio::task::block_in_place(run)
        };
        version.record_call(call_started.elapsed());
        drop(admitted);
        result
    }
    .await;
    let error = outcome.as_ref().err().cloned();
    let result = outcome.map_err(ApiError::from);
    metrics::request(
        version,
        route,
        result
            .as_ref()
            .map(|_| 200)
            .unwrap_or_else(|e| e.status.as_u16()),
        started.elapsed(),
    );
    if let Some(e) = error {
        metrics::call_error(version, &e);
    }
    result
}
