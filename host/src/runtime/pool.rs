//! A version's warm instances. Initialising a model (parsing weights, optimising a graph) happens once
//! per instance, not per request: callers check an instance out, call it, and hand it back. The pool is
//! bounded (the version's concurrency); a caller that finds it exhausted waits a bounded time, then gets
//! [`CallError::Overloaded`]. An instance that trapped or hit a limit is dropped, never handed out
//! again, and a replacement is started in the background.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use super::{CallError, ModelComponent, ModelInstance, ModelLimits};

/// What every instance of a version is initialised with.
#[derive(Debug, Default)]
pub struct VersionInputs {
    /// The version's config document (JSON; `{}` when it has none).
    pub config: String,
    /// The version's weights blob.
    pub weights: Option<Vec<u8>>,
}

#[derive(Default)]
struct Slots {
    idle: Vec<ModelInstance>,
    /// Instances alive: idle, checked out, or being started.
    live: usize,
}

/// The instances of one model version.
pub struct InstancePool {
    component: Arc<ModelComponent>,
    limits: ModelLimits,
    inputs: Arc<VersionInputs>,
    label: Arc<str>,
    slots: Mutex<Slots>,
    freed: Condvar,
}

/// Instance counts of a pool at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Instances alive (idle + busy).
    pub live: usize,
    /// Instances waiting for a caller.
    pub idle: usize,
}

impl InstancePool {
    /// Creates the pool and starts `limits.min_instances` instances; fails if the first one cannot be
    /// instantiated and initialised.
    pub fn start(
        component: Arc<ModelComponent>,
        limits: ModelLimits,
        inputs: Arc<VersionInputs>,
        label: impl Into<Arc<str>>,
    ) -> Result<Arc<InstancePool>, CallError> {
        let limits = limits.clamped(component.engine.settings().max_memory_bytes);
        let pool = Arc::new(InstancePool {
            component,
            limits,
            inputs,
            label: label.into(),
            slots: Mutex::new(Slots::default()),
            freed: Condvar::new(),
        });
        for _ in 0..pool.limits.min_instances.max(1) {
            let instance = pool.start_instance()?;
            let mut slots = pool.slots.lock().unwrap();
            slots.live += 1;
            slots.idle.push(instance);
        }
        Ok(pool)
    }

    /// Takes a warm instance, starting a new one if the pool has room, or waits up to the version's
    /// queue timeout for one to come back.
    pub fn checkout(self: &Arc<Self>) -> Result<PooledInstance, CallError> {
        let deadline = Instant::now() + self.limits.queue_timeout();
        let mut slots = self.slots.lock().unwrap();
        loop {
            if let Some(instance) = slots.idle.pop() {
                return Ok(PooledInstance {
                    pool: self.clone(),
                    instance: Some(instance),
                });
            }
            if slots.live < self.limits.max_instances {
                slots.live += 1;
                drop(slots);
                return match self.start_instance() {
                    Ok(instance) => Ok(PooledInstance {
                        pool: self.clone(),
                        instance: Some(instance),
                    }),
                    Err(e) => {
                        self.release_slot();
                        Err(e)
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(CallError::Overloaded(self.limits.queue_timeout()));
            }
            slots = self.freed.wait_timeout(slots, deadline - now).unwrap().0;
        }
    }

    /// Instance counts now.
    pub fn stats(&self) -> PoolStats {
        let slots = self.slots.lock().unwrap();
        PoolStats {
            live: slots.live,
            idle: slots.idle.len(),
        }
    }

    /// The limits the pool's instances run under (after host caps).
    pub fn limits(&self) -> &ModelLimits {
        &self.limits
    }

    /// The component the pool runs.
    pub fn component(&self) -> &Arc<ModelComponent> {
        &self.component
    }

    fn start_instance(&self) -> Result<ModelInstance, CallError> {
        ModelInstance::start(
            &self.component,
            &self.limits,
            self.label.clone(),
            &self.inputs.config,
            self.inputs.weights.as_deref(),
        )
    }

    fn release_slot(&self) {
        self.slots.lock().unwrap().live -= 1;
        self.freed.notify_one();
    }

    fn give_back(self: &Arc<Self>, instance: ModelInstance) {
        if !instance.is_poisoned() {
            self.slots.lock().unwrap().idle.push(instance);
            self.freed.notify_one();
            return;
        }
        tracing::warn!(version = %self.label, "dropping an instance that trapped or hit a limit");
        drop(instance);
        self.release_slot();
        let below_min = self.slots.lock().unwrap().live < self.limits.min_instances;
        if below_min {
            // Replace it off the caller's path so the next request still finds a warm instance.
            let pool = self.clone();
            std::thread::spawn(move || pool.refill());
        }
    }

    fn refill(&self) {
        {
            let mut slots = self.slots.lock().unwrap();
            if slots.live >= self.limits.min_instances {
                return;
            }
            slots.live += 1;
        }
        match self.start_instance() {
            Ok(instance) => {
                self.slots.lock().unwrap().idle.push(instance);
                self.freed.notify_one();
            }
            Err(e) => {
                tracing::error!(version = %self.label, error = %e, "cannot replace a dropped instance");
                self.release_slot();
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
