//! Log lines a caller can cause once per request (a failed answer, an instance its input made trap)
//! are held to a few a second, each kind on its own: a storm of failing requests (an overload's
//! 503s, a poisoned input that traps a model on every call) would otherwise write a line per request
//! to stderr, costing the host a formatted line and a write each exactly when it is busiest, and
//! burying every other line. The first line after a quiet spell says how many were left out; the
//! metrics count every one (`ferry_requests_total` by status).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Instant;

/// A kind of line, allowed `per_second` lines in each second of the host's life.
#[derive(Debug)]
pub struct LogBudget {
    per_second: u32,
    /// The current second (high half) and the lines logged in it (low half).
    window: AtomicU64,
    /// Lines left out since the last one logged.
    left_out: AtomicU64,
}

impl LogBudget {
    /// A budget of `per_second` lines a second.
    pub const fn new(per_second: u32) -> LogBudget {
        LogBudget {
            per_second,
            window: AtomicU64::new(0),
            left_out: AtomicU64::new(0),
        }
    }

    /// `Some(lines left out since the last one)` when this line may be logged, `None` when it is
    /// one too many for this second (it is counted for the next line that is).
    pub fn admit(&self) -> Option<u64> {
        static START: OnceLock<Instant> = OnceLock::new();
        let second = START.get_or_init(Instant::now).elapsed().as_secs();
        self.admit_at(second as u32)
    }

    fn admit_at(&self, second: u32) -> Option<u64> {
        let mut current = self.window.load(Relaxed);
        loop {
            let (at, lines) = ((current >> 32) as u32, current as u32);
            // A caller that read the clock just before a newer second began counts in the newer
            // one, never takes the window back.
            let next = if second > at {
                u64::from(second) << 32 | 1
            } else if lines < self.per_second {
                current + 1
            } else {
                self.left_out.fetch_add(1, Relaxed);
                return None;
            };
            match self
                .window
                .compare_exchange_weak(current, next, Relaxed, Relaxed)
            {
                Ok(_) => return Some(self.left_out.swap(0, Relaxed)),
                Err(seen) => current = seen,
            }
        }
    }
}

/// What a line admitted by a [`LogBudget`] adds to its message about the lines left out before it.
pub fn left_out(lines: u64) -> String {
    if lines == 0 {
        String::new()
    } else {
        format!(" ({lines} more such lines since the last one, of any model, not logged)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holds_its_budget_and_the_next_line_counts_what_was_left_out() {
        let budget = LogBudget::new(3);
        let first: Vec<_> = (0..5).map(|_| budget.admit_at(7)).collect();
        assert_eq!(first, [Some(0), Some(0), Some(0), None, None]);
        assert_eq!(budget.admit_at(8), Some(2));
        assert_eq!(budget.admit_at(8), Some(0));
        // A late reader of second 7 counts in second 8: it does not open second 7 again.
        assert_eq!(budget.admit_at(7), Some(0));
        assert_eq!(budget.admit_at(8), None);
        assert_eq!(budget.admit_at(9), Some(1));
        // Concurrent callers never log more than the budget in a second.
        let budget = std::sync::Arc::new(LogBudget::new(10));
        let admitted: usize = (0..4)
            .map(|_| {
                let budget = budget.clone();
                std::thread::spawn(move || {
                    (0..1000).filter(|_| budget.admit_at(1).is_some()).count()
                })
            })
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(admitted, 10);
        assert_eq!(budget.admit_at(2), Some(3990));
    }
}
