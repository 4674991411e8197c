//! Everything a call into a model can end with besides an answer, classified so that callers get the
//! right status and operators the right metric.

use std::time::Duration;

use thiserror::Error;

/// A limit the host enforced by stopping the guest. Raised from host code (the resource limiter,
/// the log capture) as the trap's error so the call's error says exactly which limit was hit.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum LimitExceeded {
    /// The guest tried to grow its linear memory past its limit.
    #[error("memory limit exceeded: the model asked for {desired} bytes of linear memory, the limit is {limit}")]
    Memory { desired: u64, limit: u64 },
    /// The guest wrote more log than one call may.
    #[error("log limit exceeded: the model wrote more than {limit} bytes of log in one call")]
    Log { limit: usize },
}

/// Why a call produced no answer.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum CallError {
    /// The model refused the input (HTTP 422).
    #[error("the model rejected the input: {0}")]
    InvalidInput(String),
    /// The model does not offer this entry point (HTTP 400).
    #[error("the model does not support this request: {0}")]
    Unsupported(String),
    /// The model reported a failure of its own (HTTP 500).
    #[error("the model failed: {0}")]
    ModelFailed(String),
    /// The request is larger than the model's input limit (HTTP 413).
    #[error("input too large: {size} bytes, the limit is {limit}")]
    InputTooLarge { size: usize, limit: usize },
    /// The answer is larger than the model's output limit (HTTP 500).
    #[error("output too large: the model answered {size} bytes, the limit is {limit}")]
    OutputTooLarge { size: usize, limit: usize },
    /// The call ran past its deadline and was interrupted (HTTP 504).
    #[error("deadline exceeded: the model ran longer than {0:?}")]
    DeadlineExceeded(Duration),
    /// A host-side graph run passed the call's deadline and was stopped (HTTP 504).
    #[error("deadline exceeded: a graph run passed the model's {0:?} and was stopped")]
    GraphStopped(Duration),
    /// The call burnt its fuel (HTTP 504).
    #[error("fuel exhausted: the model used more than {0} units of fuel")]
    FuelExhausted(u64),
    /// A host limit stopped the guest (HTTP 500).
    #[error("{0}")]
    Limit(LimitExceeded),
    /// The guest's call stack overflowed (HTTP 500).
    #[error("the model overflowed its call stack")]
    StackOverflow,
    /// The guest panicked (HTTP 500).
    #[error("the model panicked: {0}")]
    Panicked(String),
    /// The guest trapped (HTTP 500).
    #[error("the model trapped: {0}")]
    Trapped(String),
    /// No instance became free within the queue timeout, or (zero) the queue was full (HTTP 503).
    #[error("overloaded: {}", overload_reason(*.0))]
    Overloaded(Duration),
    /// The model was over its CPU share while the host was busy, so its call ran on idle capacity
    /// only, and passed its deadline having had less than half of it on a core (HTTP 503): the
    /// host's doing, not the model's.
    #[error("over its CPU share: the model used more than its share ({share_percent}% of the host's cores) while the host was busy, and this call got too little CPU to finish within {deadline:?}")]
    OverShare {
        share_percent: u32,
        deadline: Duration,
    },
    /// The call ran longer than it may where it ran (an async worker) and was stopped there, after
    /// this long, to be run again elsewhere; never an answer (the serving layer reruns it).
    #[error("the call ran longer than {0:?} on an async worker and gave way")]
    GaveWay(Duration),
    /// The version's circuit breaker is open: its recent calls kept failing (HTTP 503).
    #[error("tripped: {reason}; calls fail fast until a probe call succeeds (next probe in {}s)", retry_in.as_secs().max(1))]
    Tripped { reason: String, retry_in: Duration },
}

impl CallError {
    /// A short stable name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::InvalidInput(_) => "invalid_input",
            CallError::Unsupported(_) => "unsupported",
            CallError::ModelFailed(_) => "model_failed",
            CallError::InputTooLarge { .. } => "input_too_large",
            CallError::OutputTooLarge { .. } => "output_too_large",
            CallError::DeadlineExceeded(_) | CallError::GraphStopped(_) => "deadline",
            CallError::FuelExhausted(_) => "fuel",
            CallError::Limit(LimitExceeded::Memory { .. }) => "memory",
            CallError::Limit(LimitExceeded::Log { .. }) => "log",
            CallError::StackOverflow => "stack_overflow",
            CallError::Panicked(_) => "panic",
            CallError::Trapped(_) => "trap",
            CallError::Overloaded(_) => "overloaded",
            CallError::OverShare { .. } => "over_share",
            CallError::Tripped { .. } => "tripped",
            CallError::GaveWay(_) => "gave_way",
        }
    }

    /// True when the instance's state can no longer be trusted: it is dropped, never pooled again.
    pub fn poisons_instance(&self) -> bool {
        matches!(
            self,
            CallError::DeadlineExceeded(_)
                | CallError::GraphStopped(_)
                | CallError::FuelExhausted(_)
                | CallError::Limit(_)
                | CallError::StackOverflow
                | CallError::Panicked(_)
                | CallError::Trapped(_)
                | CallError::OverShare { .. }
                | CallError::GaveWay(_)
        )
    }

    /// True when the model itself is at fault: it ran past its deadline or fuel, hit a limit,
    /// trapped or panicked. What a circuit breaker counts; an answer, a refused input, an overload
    /// or a call starved by the host's other work is no sign of a broken version.
    pub fn is_model_fault(&self) -> bool {
        self.poisons_instance()
            && !matches!(self, CallError::OverShare { .. } | CallError::GaveWay(_))
    }
}

/// Why an overloaded version refused a request: its queue full (nothing waited), or the wait.
fn overload_reason(waited: Duration) -> String {
    if waited.is_zero() {
        "every instance of the model is busy and its queue is full".to_owned()
    } else {
        format!("no instance of the model became free within {waited:?}")
    }
}
