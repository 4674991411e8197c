//! What one model version may use. Each limit has a default that suits a small model; the host's
//! [`crate::engine::EngineSettings`] caps memory for every model.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Limits a model version runs under.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ModelLimits {
    /// Largest linear memory of one instance, in bytes.
    pub memory_bytes: u64,
    /// Wall-clock time one call may take, in milliseconds (enforced by epoch interruption).
    pub deadline_ms: u64,
    /// Instructions' worth of fuel one call may burn; `None` = no limit. A version with a limit runs
    /// on an engine that counts fuel (`ModelRuntime::for_limits`), whatever `[host] fuel` says.
    pub fuel: Option<u64>,
    /// Instances alive at once: the version's concurrency.
    pub max_instances: usize,
    /// Instances created and initialised at load, so the first requests find them warm.
    pub min_instances: usize,
    /// How long a call waits for a free instance before it is refused as overloaded, in milliseconds.
    pub queue_timeout_ms: u64,
    /// Calls that may wait for an instance at once; more are refused at once as overloaded.
    pub max_queue: usize,
    /// Largest request (tensor bytes or JSON text) accepted, in bytes.
    pub max_input_bytes: usize,
    /// Largest answer accepted from the model, in bytes.
    pub max_output_bytes: usize,
    /// Bytes of log (stdout, stderr and the log import) one call may write.
    pub max_log_bytes_per_call: usize,
    /// Time `init` may take per instance (loading weights can be slow), in milliseconds.
    pub init_deadline_ms: u64,
    /// Threads one run of a host-side graph may use (1: it runs on the calling instance's thread).
    pub graph_threads: usize,
    /// The share of the host's cores the model's guest calls are guaranteed when the host is busy
    /// (0.25: a quarter of them); `None`: the host's default (`[host] cpu_share`). Past its share a
    /// model runs only on idle capacity.
    pub cpu_share: Option<f64>,
    /// Dynamic batching: rows one guest call may take from concurrent requests merged along their
    /// leading dimension (0 or 1: off). Only for tensor models whose every input has a variable
    /// leading dimension; see [`super::batching`].
    pub max_batch_size: usize,
    /// Longest the first request of a batch waits for others, in microseconds.
    pub max_queue_delay_us: u64,
}

impl Default for ModelLimits {
    fn default() -> Self {
        ModelLimits {
            memory_bytes: 256 << 20,
            deadline_ms: 1_000,
            fuel: None,
            max_instances: 4,
            min_instances: 1,
            queue_timeout_ms: 100,
            max_queue: 256,
            max_input_bytes: 16 << 20,
            max_output_bytes: 16 << 20,
            max_log_bytes_per_call: 64 << 10,
            init_deadline_ms: 30_000,
            graph_threads: 1,
            cpu_share: None,
            max_batch_size: 0,
            max_queue_delay_us: 1_000,
        }
    }
}

impl ModelLimits {
    /// The per-call deadline.
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }
    /// The deadline for `init`.
    pub fn init_deadline(&self) -> Duration {
        Duration::from_millis(self.init_deadline_ms)
    }
    /// The bounded wait for an instance.
    pub fn queue_timeout(&self) -> Duration {
        Duration::from_millis(self.queue_timeout_ms)
    }

    /// How the version batches, when it does: `inputs` (what it declares) must all have a
    /// variable leading dimension.
    pub fn batching(&self, inputs: &[super::TensorSpec]) -> Option<super::batching::BatchPolicy> {
        let batchable = !inputs.is_empty() && inputs.iter().all(|s| s.shape.first() == Some(&-1));
        (self.max_batch_size > 1 && batchable).then(|| super::batching::BatchPolicy {
            max_rows: self.max_batch_size,
            // A batch waits at most a second (the deadline covers the call, not the wait).
            max_delay: Duration::from_micros(self.max_queue_delay_us.min(1_000_000)),
            max_bytes: self.max_input_bytes,
        })
    }

    /// These limits with memory capped at the host's maximum and counts made sane.
    pub fn clamped(&self, max_memory_bytes: u64) -> ModelLimits {
        let max_instances = self.max_instances.max(1);
        ModelLimits {
            memory_bytes: self.memory_bytes.min(max_memory_bytes),
            max_instances,
            min_instances: self.min_instances.min(max_instances),
            // More threads than cores only makes runs wait for each other.
            graph_threads: self.graph_threads.clamp(
                1,
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            ),
            cpu_share: self
                .cpu_share
                .filter(|s| s.is_finite())
                .map(|s| s.clamp(0.001, 1.0)),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_capped_by_the_host_and_min_by_max() {
        let asked = ModelLimits {
            memory_bytes: 8 << 30,
            max_instances: 2,
            min_instances: 5,
            ..Default::default()
        };
        let got = asked.clamped(1 << 30);
        assert_eq!(got.memory_bytes, 1 << 30);
        assert_eq!(got.min_instances, 2);
    }

    #[test]
    fn unknown_limit_names_are_rejected() {
        let err = serde_json::from_str::<ModelLimits>(r#"{"memory_mb": 5}"#).unwrap_err();
        assert!(err.to_string().contains("memory_mb"), "{err}");
    }
}
