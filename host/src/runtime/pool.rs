//! A version's warm instances. Initialising a model happens once per version (a snapshot) or once per
//! instance, never per request: callers check an instance out, call it, and hand it back. The pool is
//! bounded (the version's concurrency); a caller that finds it exhausted waits a bounded time, then
//! gets [`CallError::Overloaded`]. An instance that trapped or hit a limit is dropped, never handed out
//! again, and a replacement is started in the background.
//!
//! A pool can be evicted to give its memory back (its instances and its mapped code go) and comes
//! back on the next checkout, from the compiled snapshot on disk; a [`MemoryGovernor`] decides which
//! pools go when the host's memory budget would be exceeded.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Instant;

use bytes::Bytes;

use super::instance::Startup;
use super::{CallError, ModelComponent, ModelInstance, ModelLimits};
use crate::host_api::graph::VersionGraphs;
use crate::log_budget::{self, LogBudget};

/// What every instance of a version is initialised with, when it runs `init` itself.
#[derive(Debug, Default)]
pub struct VersionInputs {
    /// The version's config document (JSON; `{}` when it has none).
    pub config: String,
    /// The version's weights blob (mapped from the host's blob cache when large).
    pub weights: Option<Bytes>,
}

/// How a pool's instances start.
#[derive(Debug, Clone)]
pub enum PoolStart {
    /// The component is a snapshot of the initialised model.
    Snapshot,
    /// Each instance runs `init` with these.
    Init(Arc<VersionInputs>),
}

/// Brings an evicted pool's component back (from the compile cache).
pub type Reopen = Box<dyn Fn() -> anyhow::Result<Arc<ModelComponent>> + Send + Sync>;

/// Decides which pools give their memory and instance slots back when the host's budget would be
/// exceeded.
pub trait MemoryGovernor: Send + Sync {
    /// Called before `pool` becomes resident or grows (with what it expects to need) and after (with
    /// nothing): evicts other pools until the host fits its budget.
    fn make_room(&self, needed: Room, pool: &InstancePool);
}

/// What a pool is about to take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Room {
    /// Bytes of memory.
    pub bytes: u64,
    /// Instance slots (the engine's pooling allocator has a fixed number).
    pub instances: usize,
}

#[derive(Default)]
struct Slots {
    idle: Vec<ModelInstance>,
    /// Instances alive: idle, checked out, or being started.
    live: usize,
    /// Linear memory of the live instances, as last seen (an instance's grows while it is out).
    memory: u64,
    /// The code instances are made of; `None` once evicted.
    component: Option<Arc<ModelComponent>>,
    /// A caller is bringing the evicted pool back; the others wait for it.
    reopening: bool,
    /// Callers waiting on `freed`: nobody is woken when nobody waits (a wake is a system call, and
    /// every call gives its instance back).
    waiting: usize,
}

/// Whom a change to a pool's slots wakes.
#[derive(Clone, Copy)]
enum Wake {
    /// One waiter: an instance or a slot came free.
    One,
    /// Every waiter: the pool came back from eviction (or failed to).
    All,
}

/// The instances of one model version.
pub struct InstancePool {
    start: PoolStart,
    limits: ModelLimits,
    label: Arc<str>,
    image_bytes: u64,
    reopen: Reopen,
    governor: Option<Arc<dyn MemoryGovernor>>,
    graphs: Option<Arc<VersionGraphs>>,
    slots: Mutex<Slots>,
    freed: Condvar,
    last_used: AtomicU64,
    resident_when_evicted: AtomicU64,
    evictions: AtomicU64,
    reopens: AtomicU64,
}

/// Instance counts of a pool at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Instances alive (idle + busy).
    pub live: usize,
    /// Instances waiting for a caller.
    pub idle: usize,
    /// True when the pool holds its code and instances (not evicted).
    pub resident: bool,
    /// Bytes of initialised image its instances share (mapped copy-on-write, counted once).
    pub shared_bytes: u64,
    /// Bytes of linear memory beyond the shared image, summed over instances: what they may have
    /// written privately.
    pub private_bytes: u64,
    /// Bytes the version's host-side graphs take (loaded once, shared; kept while evicted).
    pub graph_bytes: u64,
    /// Times the pool was evicted.
    pub evictions: u64,
    /// Times it came back after an eviction.
    pub reopens: u64,
}

impl PoolStats {
    /// What the pool costs the host: the shared image once plus every instance's private memory,
    /// and its graphs (which an eviction does not free).
    pub fn resident_bytes(&self) -> u64 {
        if self.resident {
            self.shared_bytes + self.private_bytes + self.graph_bytes
        } else {
            self.graph_bytes
        }
    }
}

/// Milliseconds since the first call, for least-recently-used ordering.
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// A pool's parts, for [`InstancePool::start`].
pub struct PoolSpec {
    /// The code.
    pub component: Arc<ModelComponent>,
    /// How instances start.
    pub start: PoolStart,
    /// The version's limits (host caps are applied).
    pub limits: ModelLimits,
    /// `model@version`, for logs.
    pub label: Arc<str>,
    /// Bytes of initialised image the component's instances map (0 without a snapshot).
    pub image_bytes: u64,
    /// How to get the component back after an eviction.
    pub reopen: Reopen,
    /// Who keeps the host within its memory budget, if anyone.
    pub governor: Option<Arc<dyn MemoryGovernor>>,
    /// The version's host-side graphs, which its instances open through `wasi:nn`.
    pub graphs: Option<Arc<VersionGraphs>>,
}

impl InstancePool {
    /// Creates the pool and starts `limits.min_instances` instances; fails if the first one cannot be
    /// instantiated and initialised.
    pub fn start(spec: PoolSpec) -> Result<Arc<InstancePool>, CallError> {
        let limits = spec
            .limits
            .clamped(spec.component.engine.settings().max_memory_bytes);
        let pool = Arc::new(InstancePool {
            start: spec.start,
            limits,
            label: spec.label,
            image_bytes: spec.image_bytes,
            reopen: spec.reopen,
            governor: spec.governor,
            graphs: spec.graphs,
            slots: Mutex::new(Slots {
                component: Some(spec.component),
                ..Default::default()
            }),
            freed: Condvar::new(),
            last_used: AtomicU64::new(now_ms()),
            resident_when_evicted: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            reopens: AtomicU64::new(0),
        });
        // The pool's own stats already count its image (it holds its component).
        pool.make_room(Room {
            bytes: 0,
            instances: pool.limits.min_instances.max(1),
        });
        pool.fill()?;
        pool.make_room(Room::default());
        Ok(pool)
    }

    /// Starts instances up to `min_instances` (at least one).
    fn fill(&self) -> Result<(), CallError> {
        for _ in 0..self.limits.min_instances.max(1) {
            let Some(component) = self.slots.lock().unwrap().component.clone() else {
                return Ok(());
            };
            let instance = self.start_instance(&component)?;
            let mut slots = self.slots.lock().unwrap();
            slots.live += 1;
            slots.memory += instance.memory_bytes();
            slots.idle.push(instance);
        }
        Ok(())
    }

    /// Takes a warm instance, starting a new one if the pool has room, or waits up to the version's
    /// queue timeout for one to come back. An evicted pool comes back first.
    pub fn checkout(self: &Arc<Self>) -> Result<PooledInstance, CallError> {
        self.last_used.store(now_ms(), Ordering::Relaxed);
        let mut deadline = Instant::now() + self.limits.queue_timeout();
        // Bringing an evicted version back is bounded like bringing up an instance: by `init`'s
        // deadline (it takes milliseconds from the compiled snapshot).
        let cold_deadline = Instant::now() + self.limits.init_deadline();
        let mut slots = self.slots.lock().unwrap();
        loop {
            if slots.component.is_none() {
                let now = Instant::now();
                if now >= cold_deadline {
                    return Err(CallError::Overloaded(self.limits.init_deadline()));
                }
                if slots.reopening {
                    slots = self.wait(slots, cold_deadline - now);
                    continue;
                }
                slots.reopening = true;
                drop(slots);
                /// Ends the reopening however `come_back` ends (a panic included), so that waiters
                /// and evictions are not locked out for good.
                struct Reopening<'a>(&'a InstancePool);
                impl Drop for Reopening<'_> {
                    fn drop(&mut self) {
                        let mut slots = self.0.slots.lock().unwrap();
                        slots.reopening = false;
                        self.0.wake(slots, Wake::All);
                    }
                }
                let reopening = Reopening(self);
                // Bringing a version back blocks (mapping, instantiating, maybe reading its files):
                // off the async worker when called from one.
                let back = if tokio::runtime::Handle::try_current().is_ok() {
                    tokio::task::block_in_place(|| self.come_back())
                } else {
                    self.come_back()
                };
                drop(reopening);
                back?;
                deadline = Instant::now() + self.limits.queue_timeout();
                slots = self.slots.lock().unwrap();
                continue;
            }
            if let Some(instance) = slots.idle.pop() {
                return Ok(PooledInstance {
                    pool: self.clone(),
                    instance: Some(instance),
                });
            }
            if slots.live < self.limits.max_instances {
                let component = slots.component.clone().expect("checked above");
                slots.live += 1;
                drop(slots);
                self.make_room(Room {
                    bytes: 0,
                    instances: 1,
                });
                return match self.start_instance(&component) {
                    Ok(instance) => {
                        self.slots.lock().unwrap().memory += instance.memory_bytes();
                        Ok(PooledInstance {
                            pool: self.clone(),
                            instance: Some(instance),
                        })
                    }
                    Err(e) => {
                        self.release_slot(0);
                        Err(e)
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(CallError::Overloaded(self.limits.queue_timeout()));
            }
            slots = self.wait(slots, deadline - now);
        }
    }

    /// Waits on `freed` for at most `timeout`, counted among the waiters.
    fn wait<'a>(
        &self,
        mut slots: std::sync::MutexGuard<'a, Slots>,
        timeout: std::time::Duration,
    ) -> std::sync::MutexGuard<'a, Slots> {
        slots.waiting += 1;
        let mut slots = self.freed.wait_timeout(slots, timeout).unwrap().0;
        slots.waiting -= 1;
        slots
    }

    /// Wakes a waiter (or all), if any wait, once `slots` (held) has changed.
    fn wake(&self, slots: std::sync::MutexGuard<'_, Slots>, whom: Wake) {
        let anyone = slots.waiting > 0;
        drop(slots);
        match (anyone, whom) {
            (false, _) => {}
            (true, Wake::One) => self.freed.notify_one(),
            (true, Wake::All) => self.freed.notify_all(),
        }
    }

    /// A warm idle instance, if more than `keep` are idle — never a new one, never bringing an
    /// evicted pool back (so never making room by evicting another's): for work that must cost
    /// nothing to the pool's own callers or anyone else's (shadow copies).
    pub fn try_checkout_idle(self: &Arc<Self>, keep: usize) -> Option<PooledInstance> {
        let mut slots = self.slots.lock().unwrap();
        if slots.component.is_none() || slots.idle.len() <= keep {
            return None;
        }
        let instance = slots.idle.pop()?;
        self.last_used.store(now_ms(), Ordering::Relaxed);
        Some(PooledInstance {
            pool: self.clone(),
            instance: Some(instance),
        })
    }

    /// Brings an evicted pool back: its code from the compile cache, then its warm instances. One
    /// caller at a time (`Slots::reopening`).
    fn come_back(&self) -> Result<(), CallError> {
        self.make_room(Room {
            bytes: (self.resident_when_evicted.load(Ordering::Relaxed)).max(self.image_bytes),
            instances: self.limits.min_instances.max(1),
        });
        let component = (self.reopen)().map_err(|e| {
            CallError::ModelFailed(format!("bringing the evicted version back: {e:#}"))
        })?;
        self.slots.lock().unwrap().component = Some(component);
        self.reopens.fetch_add(1, Ordering::Relaxed);
        self.fill()?;
        self.make_room(Room::default());
        Ok(())
    }

    fn make_room(&self, needed: Room) {
        if let Some(governor) = &self.governor {
            governor.make_room(needed, self);
        }
    }

    /// Gives the pool's memory back if none of its instances is checked out: drops the idle
    /// instances and the code. Returns whether it did. The next checkout brings it back.
    pub fn evict(&self) -> bool {
        let mut slots = self.slots.lock().unwrap();
        if slots.component.is_none() || slots.reopening || slots.live != slots.idle.len() {
            return false;
        }
        let resident = self.image_bytes + self.private(slots.memory, slots.live);
        self.resident_when_evicted
            .store(resident, Ordering::Relaxed);
        let idle = std::mem::take(&mut slots.idle);
        slots.live = 0;
        slots.memory = 0;
        slots.component = None;
        drop(slots);
        drop(idle);
        self.evictions.fetch_add(1, Ordering::Relaxed);
        tracing::info!(version = %self.label, bytes = resident, "evicted to stay within the memory budget");
        true
    }

    /// When the pool was last checked out from (milliseconds on a process-wide clock).
    pub fn last_used(&self) -> u64 {
        self.last_used.load(Ordering::Relaxed)
    }

    fn private(&self, memory: u64, live: usize) -> u64 {
        memory.saturating_sub(self.image_bytes * live as u64)
    }

    /// Instance counts and memory now.
    pub fn stats(&self) -> PoolStats {
        let slots = self.slots.lock().unwrap();
        PoolStats {
            live: slots.live,
            idle: slots.idle.len(),
            resident: slots.component.is_some(),
            shared_bytes: self.image_bytes,
            private_bytes: self.private(slots.memory, slots.live),
            graph_bytes: self.graphs.as_ref().map_or(0, |g| g.memory_bytes()),
            evictions: self.evictions.load(Ordering::Relaxed),
            reopens: self.reopens.load(Ordering::Relaxed),
        }
    }

    /// True when the pool holds its code and instances.
    pub fn is_resident(&self) -> bool {
        self.slots.lock().unwrap().component.is_some()
    }

    /// The limits the pool's instances run under (after host caps).
    pub fn limits(&self) -> &ModelLimits {
        &self.limits
    }

    /// How the pool's instances start.
    pub fn start_mode(&self) -> &PoolStart {
        &self.start
    }

    fn start_instance(&self, component: &Arc<ModelComponent>) -> Result<ModelInstance, CallError> {
        let startup = match &self.start {
            PoolStart::Snapshot => Startup::Snapshot,
            PoolStart::Init(inputs) => Startup::Init {
                config: &inputs.config,
                weights: inputs.weights.as_deref(),
            },
        };
        ModelInstance::start(
            component,
            &self.limits,
            self.label.clone(),
            startup,
            self.graphs.as_ref(),
        )
    }

    fn release_slot(&self, memory: u64) {
        let mut slots = self.slots.lock().unwrap();
        slots.live = slots.live.saturating_sub(1);
        slots.memory = slots.memory.saturating_sub(memory);
        self.wake(slots, Wake::One);
    }

    fn give_back(self: &Arc<Self>, mut instance: ModelInstance) {
        let memory_at_checkout = instance.accounted;
        if !instance.is_poisoned() {
            instance.accounted = instance.memory_bytes();
            let mut slots = self.slots.lock().unwrap();
            slots.memory = (slots.memory + instance.accounted).saturating_sub(memory_at_checkout);
            slots.idle.push(instance);
            self.wake(slots, Wake::One);
            return;
        }
        // A caller's input can make every call trap: a few lines a second, not one per call.
        static DROPPED: LogBudget = LogBudget::new(10);
        if let Some(left_out) = DROPPED.admit() {
            tracing::warn!(
                version = %self.label,
                "dropping an instance that trapped or hit a limit{}",
                log_budget::left_out(left_out)
            );
        }
        drop(instance);
        self.release_slot(memory_at_checkout);
        let below_min = self.slots.lock().unwrap().live < self.limits.min_instances;
        if below_min {
            // Replace it off the caller's path so the next request still finds a warm instance.
            let pool = self.clone();
            std::thread::spawn(move || pool.refill());
        }
    }

    fn refill(&self) {
        let component = {
            let mut slots = self.slots.lock().unwrap();
            if slots.live >= self.limits.min_instances {
                return;
            }
            let Some(component) = slots.component.clone() else {
                return;
            };
            slots.live += 1;
            component
        };
        match self.start_instance(&component) {
            Ok(instance) => {
                let mut slots = self.slots.lock().unwrap();
                slots.memory += instance.memory_bytes();
                slots.idle.push(instance);
                self.wake(slots, Wake::One);
            }
            Err(e) => {
                tracing::error!(version = %self.label, error = %e, "cannot replace a dropped instance");
                self.release_slot(0);
            }
        }
    }
}

/// An instance checked out of its pool; goes back (or is dropped, if poisoned) when this is dropped.
pub struct PooledInstance {
    pool: Arc<InstancePool>,
    instance: Option<ModelInstance>,
}

impl Deref for PooledInstance {
    type Target = ModelInstance;
    fn deref(&self) -> &ModelInstance {
        self.instance.as_ref().expect("present until drop")
    }
}

impl DerefMut for PooledInstance {
    fn deref_mut(&mut self) -> &mut ModelInstance {
        self.instance.as_mut().expect("present until drop")
    }
}

impl Drop for PooledInstance {
    fn drop(&mut self) {
        if let Some(instance) = self.instance.take() {
            self.pool.give_back(instance);
        }
    }
}
