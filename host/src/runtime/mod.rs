//! Running model versions: the compiled component checked against the contract, warm instances in a
//! bounded pool, the limits every call runs under, and the classification of everything that can go
//! wrong in a guest.

mod admission;
pub mod batching;
mod bindings;
mod breaker;
mod component;
mod error;
mod guest_log;
mod guest_state;
mod instance;
mod limits;
mod loader;
mod pacing;
mod pool;
mod ready;
mod snapshot;

pub use admission::{Admission, Admitted, Entry};
/// A self-test case's input or expected output (the contract's `payload`; a request's payload is
/// `serving::Payload`).
pub use bindings::ferry::model::types::Payload as CasePayload;
pub use bindings::ferry::model::types::{
    Datatype, ModelError, ModelMetadata, SelfTest, SelfTestSuite, Tensor, TensorData, TensorSpec,
};
pub use breaker::{Breaker, BreakerPolicy, Pass};
pub use component::ModelComponent;
pub use error::{CallError, LimitExceeded};
pub use guest_state::GuestState;
pub use instance::{elements, tensor_bytes, ModelInstance, Startup};
pub use limits::ModelLimits;
pub use loader::ModelRuntime;
pub use pacing::Pacer;
pub use pool::{
    InstancePool, MemoryGovernor, PoolSpec, PoolStart, PoolStats, PooledInstance, Reopen, Room,
    VersionInputs,
};
pub use ready::ReadyVersion;

/// A tensor request (the contract's `infer`), decoded from whatever the wire format was.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TensorRequest {
    /// The inputs.
    pub inputs: Vec<Tensor>,
    /// The request's parameters as JSON text (`{}` when none).
    pub parameters: String,
    /// Outputs the caller asked for by name (empty: all).
    pub outputs: Vec<String>,
}
pub use snapshot::{NewVersion, Prepared, Refetch, StartMode, VersionCode};

use wasmtime::component::{HasSelf, Linker};

/// The content address of components and weights (kept here for the callers that name it so).
pub use crate::stamps::sha256_hex;

/// Adds the contract's host imports (bounded logging) to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    bindings::FerryModel::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, |state| state)
}
