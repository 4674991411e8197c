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
        // Given back however the wait ends, including a caller that hangs up (its future dropped
        // here): otherwise `max_queue` such callers would leave every later caller an instant 503.
        let _place = QueuePlace(&self.waiting);
        let permit = tokio::time::timeout(self.timeout, self.running.clone().acquire_owned()).await;
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

/// A place in the queue, given back when dropped.
struct QueuePlace<'a>(&'a AtomicUsize);

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
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

    #[tokio::test]
    async fn callers_that_hang_up_while_queued_give_their_places_back() {
        let admission = Admission::new(1, 2, Duration::from_secs(10));
        let running = admission.admit().await.unwrap();
        for _ in 0..10 {
            // A caller that gives up (its request dropped) while it waits.
            let gave_up = tokio::time::timeout(Duration::from_millis(5), admission.admit()).await;
            assert!(gave_up.is_err(), "still queued behind the running call");
            assert_eq!(admission.waiting(), 0);
        }
        let (queued, ()) = tokio::join!(admission.admit(), async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            assert_eq!(admission.waiting(), 1);
            drop(running);
        });
        assert!(queued.is_ok(), "the queue still takes callers");
    }
}
