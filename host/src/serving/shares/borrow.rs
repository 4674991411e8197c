//! The threads that run calls of models over their CPU share: lowered to the idle class once, when
//! they start, and never raised, so they need no privilege and never carry idle priority into other
//! work. A call waits for one of them only after its version admitted it, so at most the admitted
//! calls of over-share models wait here; one that waited past its deadline is refused unrun.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

/// A call to run on idle capacity.
pub(super) type Job = Box<dyn FnOnce() + Send>;

/// The borrowing threads.
pub(super) struct Borrowers {
    jobs: SyncSender<Job>,
    /// True when the threads are in the idle class (lowering is refused nowhere we know of).
    pub(super) lowered: bool,
}

impl Borrowers {
    /// Starts `threads` threads that take jobs from a queue of `queue`.
    pub(super) fn start(threads: usize, queue: usize) -> Borrowers {
        let (jobs, receiver) = sync_channel::<Job>(queue.max(1));
        let receiver = Arc::new(Mutex::new(receiver));
        let (told, lowered) = std::sync::mpsc::channel();
        for n in 0..threads.max(1) {
            let receiver = receiver.clone();
            let told = told.clone();
            std::thread::Builder::new()
                .name(format!("ferry-borrow-{n}"))
                .spawn(move || {
                    let _ = told.send(super::priority::lower());
                    drain(&receiver);
                })
                .expect("spawn a borrowing thread");
        }
        drop(told);
        let lowered = (0..threads.max(1)).all(|_| lowered.recv().unwrap_or(false));
        if !lowered {
            tracing::warn!("CPU shares: the idle scheduling class was refused; calls over their share run at normal priority");
        }
        Borrowers { jobs, lowered }
    }

    /// Queues `job`; hands it back when the queue is full.
    pub(super) fn run(&self, job: Job) -> Result<(), Job> {
        self.jobs.try_send(job).map_err(|e| match e {
            TrySendError::Full(job) | TrySendError::Disconnected(job) => job,
        })
    }
}

fn drain(receiver: &Mutex<Receiver<Job>>) {
    loop {
        let job = match receiver.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        job();
    }
}
