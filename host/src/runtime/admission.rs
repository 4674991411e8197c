//! The bounded queue in front of a version's instance pool: at most `max_instances` calls run, at most
//! `max_queue` wait, and none waits longer than the queue timeout. Waiting is async, so a burst of
//! callers costs tasks, not threads.
//!
//! Admission comes in two steps so that a request's place is taken before its body is decoded: a
//! full queue refuses it before decoding costs anything ([`Admission::enter`]), and the requests a
//! version decodes at once are bounded by its instances and queue; the turn to run (an instance) is
//! taken after decoding ([`Entry::turn`]), so decoding never holds an instance.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::CallError;

/// Admission control for one version.
#[derive(Debug)]
pub struct Admission {
    running: Arc<Semaphore>,
    concurrency: usize,
    /// Requests entered and not yet running (being decoded, or waiting for their turn).
    entered: Arc<AtomicUsize>,
    /// Of those, the ones waiting for an instance.
    waiting: Arc<AtomicUsize>,
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
        let concurrency = concurrency.max(1);
        Admission {
            running: Arc::new(Semaphore::new(concurrency)),
            concurrency,
            entered: Arc::new(AtomicUsize::new(0)),
            waiting: Arc::new(AtomicUsize::new(0)),
            max_waiting,
            timeout,
        }
    }

    /// Waits for a turn, or refuses at once when the queue is full, or after the timeout.
    pub async fn admit(&self) -> Result<Admitted, CallError> {
        self.enter()?.turn().await
    }

    /// A place: refused at once when the calls running and the requests entered before it already
    /// fill the instances and the queue. It holds no instance: a request being decoded never keeps
    /// a free instance from a request that is ready to run.
    pub fn enter(&self) -> Result<Entry, CallError> {
        let busy = self.concurrency - self.running.available_permits().min(self.concurrency);
        let ahead = self.entered.fetch_add(1, Ordering::AcqRel);
        // Given back however the request ends, including a caller that hangs up (its future
        // dropped): otherwise `max_queue` such callers would leave every later caller an instant 503.
        let place = Counted(self.entered.clone());
        if busy + ahead >= self.concurrency + self.max_waiting {
            return Err(CallError::Overloaded(Duration::ZERO));
        }
        Ok(Entry {
            _place: place,
            running: self.running.clone(),
            waiting: self.waiting.clone(),
            timeout: self.timeout,
        })
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

    /// Calls waiting for an instance now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

/// A request's place before its turn (see [`Admission::enter`]).
pub struct Entry {
    _place: Counted,
    running: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    timeout: Duration,
}

impl Entry {
    /// The turn to run: at once when an instance is free, else after the queue (refused when the
    /// queue timeout passes first).
    pub async fn turn(self) -> Result<Admitted, CallError> {
        if let Ok(permit) = self.running.clone().try_acquire_owned() {
            return Ok(Admitted {
                _permit: permit,
                waited: Duration::ZERO,
            });
        }
        let started = Instant::now();
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Counted(self.waiting.clone());
        match tokio::time::timeout(self.timeout, self.running.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Admitted {
                _permit: permit,
                waited: started.elapsed(),
            }),
            _ => Err(CallError::Overloaded(self.timeout)),
        }
    }
}

/// One of a count, given back when dropped.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
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
    async fn an_entry_holds_a_place_but_no_instance_while_its_request_is_decoded() {
        let admission = Admission::new(1, 1, Duration::from_secs(10));
        let first = admission.enter().unwrap();
        let second = admission.enter().unwrap();
        assert_eq!(
            admission.enter().err(),
            Some(CallError::Overloaded(Duration::ZERO)),
            "the instance and the queue are spoken for before either request is decoded"
        );
        // The instance stays free for whoever is ready first: the second here.
        let running = second.turn().await.unwrap();
        assert_eq!(running.waited, Duration::ZERO);
        let (queued, ()) = tokio::join!(first.turn(), async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            assert_eq!(admission.waiting(), 1);
            drop(running);
        });
        let admitted = queued.unwrap();
        assert!(admitted.waited > Duration::ZERO);
        assert_eq!(admission.waiting(), 0);
        drop(admitted);
        // An entry dropped before its turn (its caller hung up mid-body) gives its place back.
        let held = admission.admit().await.unwrap();
        drop(admission.enter().unwrap());
        assert!(admission.enter().is_ok(), "the place came back");
        drop(held);
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
