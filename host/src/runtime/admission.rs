//! The bounded queue in front of a version's instance pool: at most `max_instances` calls run, at most
//! `max_queue` wait, and none waits longer than the queue timeout. Waiting is async, so a burst of
//! callers costs tasks, not threads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::CallError;

/// Admission control for one version.
#[derive(Debug)]
pub struct Admission {
    running: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    timeout: Duration,
}

/// A call's right to run (it may travel with the call to another thread); waiting time is reported
/// for metrics.
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    /// How long the call queued.
    pub waited: Duration,
}

impl Admission {
    /// Lets `concurrency` calls run and `max_waiting` wait up to `timeout`.
    pub fn new(concurrency: usize, max_waiting: usize, timeout: Duration) -> Admission {
        Admission {
            running: Arc::new(Semaphore::new(concurrency.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting,
            timeout,
        }
    }

    /// Waits for a turn, or refuses at once when the queue is full, or after the timeout.
    pub async fn admit(&self) -> Result<Admitted, CallError> {
        let started = Instant::now();
        if let Ok(permit) = self.running.clone().try_acquire_owned() {
            return Ok(Admitted {
                _permit: permit,
                waited: Duration::ZERO,
            });
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(CallError::Overloaded(Duration::ZERO));
        }
        let permit = tokio::time::timeout(self.timeout, self.running.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match permit {
            Ok(Ok(permit)) => Ok(Admitted {
                _permit: permit,
                waited: started.elapsed(),
            }),
            _ => Err(CallError::Overloaded(self.timeout)),
        }
    }

    /// A turn now, or none: for work that must never queue (shadow copies).
    pub fn try_admit(&self) -> Option<Admitted> {
        self.running
            .clone()
            .try_acquire_owned()
            .ok()
            .map(|permit| Admitted {
                _permit: permit,
                waited: Duration::ZERO,
            })
    }

    /// Calls waiting now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_a_slow_one_after_the_timeout() {
        let admission = Admission::new(1, 1, Duration::from_millis(30));
        let first = admission.admit().await.unwrap();
        assert_eq!(first.waited, Duration::ZERO);
        let (second, third) = tokio::join!(admission.admit(), async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            admission.admit().await
        });
        assert_eq!(
            third.err(),
            Some(CallError::Overloaded(Duration::ZERO)),
            "the queue holds one waiter"
        );
        assert_eq!(
            second.err(),
            Some(CallError::Overloaded(Duration::from_millis(30)))
        );
        drop(first);
        assert!(admission.admit().await.is_ok());
    }
}
