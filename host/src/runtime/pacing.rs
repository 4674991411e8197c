//! The clock of a running guest call. The engine's epoch ticks about once a millisecond; a store's
//! deadline is always the next tick, so at every tick of a call the host gets control on the guest's
//! own thread: it checks the call's deadline (by the clock: a thread the OS did not run for a while
//! must not gain time) and hands the tick to the call's
//! [`Pacer`]. That is where the serving layer moves a long call off the async worker it started on
//! and holds a model to its CPU share (the serving layer's CPU shares), without the runtime knowing
//! either.

use std::time::{Duration, Instant};

use wasmtime::{StoreContextMut, UpdateDeadline};

use super::GuestState;

/// Told at every tick of the call it was given to, on the call's thread.
pub trait Pacer: Send + std::any::Any {
    /// Another tick of the call passed.
    fn tick(&mut self);
}

/// The deadline and pacer of the call now running on an instance.
pub(crate) struct CallClock {
    /// When the call is interrupted.
    deadline: Instant,
    pacer: Option<Box<dyn Pacer>>,
}

impl Default for CallClock {
    fn default() -> Self {
        CallClock {
            deadline: Instant::now(),
            pacer: None,
        }
    }
}

impl CallClock {
    /// Starts a call that may run for `deadline`.
    pub(crate) fn arm(&mut self, deadline: Duration) {
        self.deadline = Instant::now() + deadline;
    }

    /// When the running call is interrupted.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Gives the next calls' ticks to `pacer` (until taken back).
    pub(crate) fn set_pacer(&mut self, pacer: Option<Box<dyn Pacer>>) -> Option<Box<dyn Pacer>> {
        std::mem::replace(&mut self.pacer, pacer)
    }
}

/// The store's epoch callback: one tick of the running call.
pub(crate) fn on_tick(
    mut store: StoreContextMut<'_, GuestState>,
) -> wasmtime::Result<UpdateDeadline> {
    let clock = &mut store.data_mut().clock;
    if Instant::now() >= clock.deadline {
        // Raised as `Trap::Interrupt`, which the call's classification reads as its deadline.
        return Ok(UpdateDeadline::Interrupt);
    }
    if let Some(pacer) = clock.pacer.as_mut() {
        pacer.tick();
    }
    Ok(UpdateDeadline::Continue(1))
}
