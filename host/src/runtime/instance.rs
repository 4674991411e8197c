//! One live, initialised instance of a model version and every call into it. Each call runs under the
//! version's limits: a fresh epoch deadline, optional fuel, a log budget; whatever stops the guest is
//! classified into a [`CallError`].

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::Instance;
use wasmtime::{Store, Trap};

use super::bindings::FerryModel;
use super::error::{CallError, LimitExceeded};
use super::{
    GuestState, ModelComponent, ModelError, ModelLimits, ModelMetadata, Pacer, SelfTestSuite,
    Tensor, TensorData,
};
use crate::host_api::graph::VersionGraphs;

/// An initialised instance. Not shared: a pool hands it to one caller at a time.
pub struct ModelInstance {
    store: Store<GuestState>,
    instance: Instance,
    model: FerryModel,
    component: Arc<ModelComponent>,
    limits: ModelLimits,
    label: Arc<str>,
    poisoned: bool,
    /// What went wrong in a graph run during the last call (the guest's error carries no detail).
    graph_failure: Option<String>,
    /// Fuel the last call burnt (when the engine counts fuel).
    fuel_used: Option<u64>,
    /// Its linear memory as its pool last counted it.
    pub(crate) accounted: u64,
}

/// How a new instance gets to its initialised state.
#[derive(Clone, Copy)]
pub enum Startup<'a> {
    /// Run the model's `init` with the version's config and weights.
    Init {
        /// The config document (JSON).
        config: &'a str,
        /// The weights blob.
        weights: Option<&'a [u8]>,
    },
    /// The component is a snapshot taken after `init`: nothing to run.
    Snapshot,
}

impl ModelInstance {
    /// Instantiates `component` and brings it to its initialised state as `startup` says; the
    /// instance may open `graphs` (its version's) through `wasi:nn`. `label` names the version in logs
    /// (e.g. `digits-onnx@3`).
    pub fn start(
        component: &Arc<ModelComponent>,
        limits: &ModelLimits,
        label: Arc<str>,
        startup: Startup<'_>,
        graphs: Option<&Arc<VersionGraphs>>,
    ) -> Result<ModelInstance, CallError> {
        let engine = &component.engine;
        debug_assert!(
            limits.fuel.is_none() || engine.settings().fuel,
            "a fuel limit on an engine that counts no fuel: start the version on ModelRuntime::for_limits"
        );
        let mut store = Store::new(
            engine.engine(),
            GuestState::new(limits.memory_bytes, graphs),
        );
        store.limiter(|state| &mut state.memory);
        store.epoch_deadline_callback(super::pacing::on_tick);
        store.set_epoch_deadline(1);
        store.data_mut().clock.arm(limits.init_deadline());
        if engine.settings().fuel {
            store.set_fuel(u64::MAX).expect("fuel is enabled");
        }
        store.data().log.begin_call(limits.max_log_bytes_per_call);
        let instantiated = component
            .pre
            .instance_pre()
            .instantiate(&mut store)
            .and_then(|instance| Ok((instance, FerryModel::new(&mut store, &instance)?)));
        let (wasm_instance, model) = match instantiated {
            Ok(both) => both,
            Err(e) => return Err(classify(&store, e, limits.init_deadline(), u64::MAX)),
        };
        let mut instance = ModelInstance {
            store,
            instance: wasm_instance,
            model,
            component: component.clone(),
            limits: limits.clone(),
            label,
            poisoned: false,
            graph_failure: None,
            fuel_used: None,
            accounted: 0,
        };
        if let Startup::Init { config, weights } = startup {
            let init_deadline = instance.limits.init_deadline();
            instance
                .call_with(init_deadline, |m, s| {
                    m.ferry_model_model().call_init(s, config, weights)
                })?
                .map_err(|e| instance.model_error(e))?;
        }
        instance.accounted = instance.memory_bytes();
        Ok(instance)
    }

    /// Bytes of linear memory the instance has now (what it may have dirtied privately, at most).
    pub fn memory_bytes(&self) -> u64 {
        self.store.data().memory.current()
    }

    /// Host resources (WASI streams, …) the guest holds handles to: state a snapshot cannot carry.
    pub(crate) fn host_resources_held(&self) -> bool {
        !self.store.data().table_is_empty()
    }

    /// The store and the raw component instance, for reading the guest's state into a snapshot.
    /// Calls made this way run under the init deadline.
    pub(crate) fn raw(&mut self) -> (&mut Store<GuestState>, Instance) {
        let engine = &self.component.engine;
        self.store.set_epoch_deadline(1);
        self.store.data_mut().clock.arm(self.limits.init_deadline());
        if engine.settings().fuel {
            self.store.set_fuel(u64::MAX).expect("fuel is enabled");
        }
        // A snapshot reads the guest's whole memory in one call; it is bounded by the memory limit,
        // not by the per-call cap on what a guest hands the host (128 MiB by default).
        self.store
            .set_hostcall_fuel(self.limits.memory_bytes.saturating_add(1 << 20) as usize);
        (&mut self.store, self.instance)
    }

    /// The model's declared metadata.
    pub fn metadata(&mut self) -> Result<ModelMetadata, CallError> {
        self.call(|m, s| m.ferry_model_model().call_metadata(s))
    }

    /// The self-tests compiled into the component.
    pub fn self_tests(&mut self) -> Result<SelfTestSuite, CallError> {
        self.call(|m, s| m.ferry_model_model().call_self_tests(s))
    }

    /// Tensor inference; `parameters` is a JSON object.
    pub fn infer(&mut self, inputs: &[Tensor], parameters: &str) -> Result<Vec<Tensor>, CallError> {
        let size = inputs.iter().map(tensor_bytes).sum::<usize>() + parameters.len();
        self.check_input(size)?;
        let outputs = self
            .call(|m, s| m.ferry_model_model().call_infer(s, inputs, parameters))?
            .map_err(|e| self.model_error(e))?;
        self.check_output(outputs.iter().map(tensor_bytes).sum())?;
        Ok(outputs)
    }

    /// Feature-style prediction: a JSON document in, a JSON document out.
    pub fn predict(&mut self, request: &str) -> Result<String, CallError> {
        self.check_input(request.len())?;
        let answer = self
            .call(|m, s| m.ferry_model_model().call_predict(s, request))?
            .map_err(|e| self.model_error(e))?;
        self.check_output(answer.len())?;
        Ok(answer)
    }

    /// Fuel the last call burnt, when the engine counts fuel (metering); read once, so a call
    /// refused before it ran counts none.
    pub fn take_fuel_used(&mut self) -> Option<u64> {
        self.fuel_used.take()
    }

    /// Hands the ticks of this instance's next calls to `pacer` (`None`: nobody); answers the pacer
    /// they went to until now.
    pub fn set_pacer(&mut self, pacer: Option<Box<dyn Pacer>>) -> Option<Box<dyn Pacer>> {
        self.store.data_mut().clock.set_pacer(pacer)
    }

    /// The next calls on this instance stop once they have run `after` (`None`: to their deadline),
    /// with [`CallError::GaveWay`], for their caller to run them again elsewhere.
    pub fn give_way_after(&mut self, after: Option<Duration>) {
        self.store.data_mut().clock.give_way_after(after);
    }

    /// The limits this instance runs under.
    pub fn limits(&self) -> &ModelLimits {
        &self.limits
    }

    /// True once a call ended in a way that leaves the guest's state untrustworthy (a trap, an
    /// interrupt, a limit): the instance must be dropped, not reused.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// The component this instance runs.
    pub fn component(&self) -> &Arc<ModelComponent> {
        &self.component
    }

    fn check_input(&self, size: usize) -> Result<(), CallError> {
        let limit = self.limits.max_input_bytes;
        if size > limit {
            return Err(CallError::InputTooLarge { size, limit });
        }
        Ok(())
    }

    fn check_output(&self, size: usize) -> Result<(), CallError> {
        let limit = self.limits.max_output_bytes;
        if size > limit {
            return Err(CallError::OutputTooLarge { size, limit });
        }
        Ok(())
    }

    fn call<R>(
        &mut self,
        f: impl FnOnce(&FerryModel, &mut Store<GuestState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        self.call_with(self.limits.deadline(), f)
    }

    /// Runs `f` under a fresh deadline, fuel and log budget, then forwards the guest's log.
    fn call_with<R>(
        &mut self,
        deadline: Duration,
        f: impl FnOnce(&FerryModel, &mut Store<GuestState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        let engine = &self.component.engine;
        self.store.set_epoch_deadline(1);
        self.store.data_mut().clock.arm(deadline);
        let fuel = self.limits.fuel.unwrap_or(u64::MAX);
        if engine.settings().fuel {
            self.store.set_fuel(fuel).expect("fuel is enabled");
        }
        self.store
            .data()
            .log
            .begin_call(self.limits.max_log_bytes_per_call);
        if let Some(clock) = self.store.data().graph_clock() {
            clock.arm(deadline, self.store.data().clock.give_way_limit());
        }
        // A panic in a host function called by the guest must cost this call and this instance (its
        // store is left mid-call: "cannot enter component instance"), never the host thread.
        let model = &self.model;
        let store = &mut self.store;
        crate::engine::cpu::clear_upper_vector_state();
        let result = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            f(model, store)
        })) {
            Ok(result) => result,
            Err(panic) => {
                self.poisoned = true;
                let message = crate::panics::message(panic.as_ref());
                tracing::error!(version = %self.label, %message, "a host function panicked during a guest call; the instance is discarded");
                Err(wasmtime::Error::msg(format!(
                    "a host function panicked during the call ({message}); the instance was discarded"
                )))
            }
        };
        if engine.settings().fuel {
            self.fuel_used = Some(fuel.saturating_sub(self.store.get_fuel().unwrap_or(0)));
        }
        let graphs = self
            .store
            .data()
            .graph_clock()
            .map(|clock| clock.disarm())
            .unwrap_or_default();
        self.graph_failure = graphs.failure;
        let outcome = match result {
            // A graph run stopped at the deadline: whatever the guest made of it, the call is late.
            _ if graphs.deadline_passed => Err(CallError::GraphStopped(deadline)),
            // One stopped to give way: the call runs again elsewhere, whatever the guest made of it.
            _ if graphs.gave_way => {
                Err(CallError::GaveWay(self.store.data().clock.gave_way_after()))
            }
            Ok(value) if self.store.data().log.overflowed() => {
                // The guest swallowed the write error; the flood still costs it the call.
                drop(value);
                Err(CallError::Limit(LimitExceeded::Log {
                    limit: self.limits.max_log_bytes_per_call,
                }))
            }
            Ok(value) => Ok(value),
            Err(e) => Err(classify(&self.store, e, deadline, fuel)),
        };
        self.store.data().log.flush_to_tracing(&self.label);
        if let Err(e) = &outcome {
            self.poisoned |= e.poisons_instance();
        }
        outcome
    }
}

impl ModelInstance {
    /// Maps the guest's typed error to a call error; a failed graph run during the call adds what
    /// the backend said.
    fn model_error(&mut self, e: ModelError) -> CallError {
        let mut detail = |m: String| match self.graph_failure.take() {
            Some(failure) if !m.contains(&failure) => format!("{m} ({failure})"),
            _ => m,
        };
        match e {
            ModelError::InvalidInput(m) => CallError::InvalidInput(detail(m)),
            ModelError::Unsupported(m) => CallError::Unsupported(detail(m)),
            ModelError::Internal(m) => CallError::ModelFailed(detail(m)),
        }
    }
}

/// Decides why the guest stopped.
fn classify(
    store: &Store<GuestState>,
    e: wasmtime::Error,
    deadline: Duration,
    fuel: u64,
) -> CallError {
    if let Some(limit) = e.downcast_ref::<LimitExceeded>() {
        return CallError::Limit(limit.clone());
    }
    if store.data().log.overflowed() {
        return CallError::Limit(LimitExceeded::Log {
            limit: store.data().log.budget(),
        });
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) if store.data().clock.gave_way() => {
            CallError::GaveWay(store.data().clock.gave_way_after())
        }
        Some(Trap::Interrupt) => CallError::DeadlineExceeded(deadline),
        Some(Trap::OutOfFuel) => CallError::FuelExhausted(fuel),
        Some(Trap::StackOverflow) => CallError::StackOverflow,
        Some(Trap::MemoryOutOfBounds) if shadow_stack_overflow(&e) => CallError::StackOverflow,
        Some(Trap::UnreachableCodeReached) => match panic_message(&store.data().log.text()) {
            Some(message) => CallError::Panicked(message),
            None => CallError::Trapped(format!("{e:#}")),
        },
        _ => CallError::Trapped(format!("{e:#}")),
    }
}

/// True when an out-of-bounds access hit the top of the 32-bit address space. Rust and C guests keep
/// their stack at the bottom of linear memory (`--stack-first`), growing down towards 0; overflowing
/// it wraps the stack pointer to just below 4 GiB, and a store at a static offset from it lands just
/// below or (offset added past 2^32) just above 4 GiB. wasmtime reports the faulting address only in
/// its message ("memory fault at wasm address 0x…").
fn shadow_stack_overflow(e: &wasmtime::Error) -> bool {
    let text = format!("{e:#}");
    let Some(at) = text.find("memory fault at wasm address 0x") else {
        return false;
    };
    let hex: String = text[at + 31..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit())
        .collect();
    u64::from_str_radix(&hex, 16).is_ok_and(|addr| (0xffff_0000..0x1_0001_0000).contains(&addr))
}

/// The message of a Rust panic as the guest printed it to stderr before aborting.
fn panic_message(log: &str) -> Option<String> {
    let at = log.find("panicked at ")?;
    let rest = &log[at..];
    // "panicked at src/lib.rs:10:5:\nmessage\nnote: ..."
    let message: Vec<&str> = rest
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("note:"))
        .collect();
    let location = rest
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("panicked at ")
        .trim_end_matches(':');
    Some(format!("{} (at {location})", message.join("\n").trim()))
}

/// Elements a tensor's data holds.
pub fn elements(data: &TensorData) -> usize {
    match data {
        TensorData::Bool(v) => v.len(),
        TensorData::Uint8(v) => v.len(),
        TensorData::Int8(v) => v.len(),
        TensorData::Uint16(v) => v.len(),
        TensorData::Int16(v) => v.len(),
        TensorData::Uint32(v) => v.len(),
        TensorData::Int32(v) => v.len(),
        TensorData::Fp32(v) => v.len(),
        TensorData::Uint64(v) => v.len(),
        TensorData::Int64(v) => v.len(),
        TensorData::Fp64(v) => v.len(),
        TensorData::Bytes(v) => v.len(),
    }
}

/// Bytes a tensor's elements occupy (BYTES: the sum of element lengths plus 4 per element).
pub fn tensor_bytes(t: &Tensor) -> usize {
    match &t.data {
        TensorData::Bool(v) => v.len(),
        TensorData::Uint8(v) => v.len(),
        TensorData::Int8(v) => v.len(),
        TensorData::Uint16(v) => v.len() * 2,
        TensorData::Int16(v) => v.len() * 2,
        TensorData::Uint32(v) => v.len() * 4,
        TensorData::Int32(v) => v.len() * 4,
        TensorData::Fp32(v) => v.len() * 4,
        TensorData::Uint64(v) => v.len() * 8,
        TensorData::Int64(v) => v.len() * 8,
        TensorData::Fp64(v) => v.len() * 8,
        TensorData::Bytes(v) => v.iter().map(|b| b.len() + 4).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::panic_message;

    #[test]
    fn panic_message_is_read_from_the_guest_stderr() {
        let log = "thread '<unnamed>' panicked at src/lib.rs:12:9:\nboom: 42\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(panic_message(log).unwrap(), "boom: 42 (at src/lib.rs:12:9)");
        assert_eq!(panic_message("nothing here"), None);
    }
}
