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
    /// How long the next calls may run before they give way (see [`CallClock::give_way_after`]).
    give_way_after: Option<Duration>,
    /// When the running call gives way.
    give_way_at: Option<Instant>,
    /// The running call was stopped to give way.
    gave_way: bool,
}

impl Default for CallClock {
    fn default() -> Self {
        CallClock {
            deadline: Instant::now(),
            pacer: None,
            give_way_after: None,
            give_way_at: None,
            gave_way: false,
        }
    }
}

impl CallClock {
    /// Starts a call that may run for `deadline`.
    pub(crate) fn arm(&mut self, deadline: Duration) {
        let now = Instant::now();
        self.deadline = now + deadline;
        self.give_way_at = self.give_way_after.map(|d| now + d.min(deadline));
        self.gave_way = false;
    }

    /// Calls from now on stop at the first tick past `after` (`None`: they run to their deadline),
    /// failing with [`super::CallError::GaveWay`]: for calls that run where a long one would hold up
    /// others (an async worker), and that their caller runs again elsewhere.
    pub(crate) fn give_way_after(&mut self, after: Option<Duration>) {
        self.give_way_after = after;
    }

    /// How long calls may run before they give way (`None`: to their deadline).
    pub(crate) fn give_way_limit(&self) -> Option<Duration> {
        self.give_way_after
    }

    /// How long calls may run before they give way (zero: to their deadline).
    pub(crate) fn gave_way_after(&self) -> Duration {
        self.give_way_after.unwrap_or_default()
    }

    /// The last call was stopped to give way.
    pub(crate) fn gave_way(&self) -> bool {
        self.gave_way
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
    let now = Instant::now();
    if now >= clock.deadline {
        // Raised as `Trap::Interrupt`, which the call's classification reads as its deadline.
        return Ok(UpdateDeadline::Interrupt);
    }
    if clock.give_way_at.is_some_and(|at| now >= at) {
        clock.gave_way = true;
        return Ok(UpdateDeadline::Interrupt);
    }
    if let Some(pacer) = clock.pacer.as_mut() {
        pacer.tick();
    }
    Ok(UpdateDeadline::Continue(1))
}
