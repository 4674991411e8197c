//! What a version serves with once it is ready, as one value: its warm pool, the bounded queue in
//! front of it, its circuit breaker, what it declares, and its host-side graphs. A version is ready
//! exactly when it holds one (`registry::VersionState::Ready`), so nothing on a call's path asks
//! whether a pool or metadata is there.

use std::sync::Arc;

use crate::host_api::graph::VersionGraphs;

use super::batching::Batcher;
use super::{Admission, Breaker, InstancePool, ModelLimits, ModelMetadata};

/// A ready version's serving parts.
pub struct ReadyVersion {
    /// Its warm instances.
    pub pool: Arc<InstancePool>,
    /// The bounded queue in front of the pool.
    pub admission: Admission,
    /// Fails its requests fast while its calls keep failing by its own fault.
    pub breaker: Breaker,
    /// What the model declares (entry points, tensors).
    pub metadata: ModelMetadata,
    /// Its host-side graphs, loaded (versions with graphs only).
    pub graphs: Option<Arc<VersionGraphs>>,
    /// Merges concurrent tensor requests into one call (versions that batch only).
    pub batcher: Option<Batcher>,
}

impl ReadyVersion {
    /// The serving parts of `model` version `version`, whose instances come from `pool` and run
    /// under `limits`.
    pub fn new(
        model: &str,
        version: &str,
        pool: Arc<InstancePool>,
        metadata: ModelMetadata,
        graphs: Option<Arc<VersionGraphs>>,
        limits: &ModelLimits,
    ) -> ReadyVersion {
        ReadyVersion {
            pool,
            admission: Admission::new(
                limits.max_instances,
                limits.max_queue,
                limits.queue_timeout(),
            ),
            breaker: Breaker::new(model, version),
            batcher: limits
                .batching(&metadata.inputs)
                .map(|policy| Batcher::new(model, version, policy)),
            metadata,
            graphs,
        }
    }
}

impl std::fmt::Debug for ReadyVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadyVersion")
            .field("metadata", &self.metadata)
            .field("graphs", &self.graphs.is_some())
            .finish_non_exhaustive()
    }
}
