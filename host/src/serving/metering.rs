//! What a guest call costs, for charging the team that owns the model: the CPU time of the thread
//! that ran it (the guest runs on one thread from entry to return, so the thread's CPU clock counts
//! exactly its work, host calls included, and none of other requests'), wall time, and fuel where it
//! is counted (a version with a fuel limit, or every version with `[host] fuel`). Counted per
//! version in `/metrics` and in `GET /v1/models/{model}`.
//!
//! A call on an async worker is charged its wall time instead ([`CpuClock::Wall`]): it takes
//! microseconds and gives way past a couple of milliseconds, its thread runs nothing else meanwhile,
//! and reading the thread's CPU clock is a system call (two of them cost as much as a small model's
//! whole call). What the OS took from the thread in between is charged too: rarely, and never much.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crate::registry::ModelVersion;

/// How a call's CPU time is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuClock {
    /// The thread's CPU clock (a system call per reading).
    Thread,
    /// The call's wall time (for short calls on a thread that runs nothing else meanwhile).
    Wall,
}

/// A call being metered.
pub struct Meter {
    wall: Instant,
    /// The thread's CPU clock at the start, on [`CpuClock::Thread`].
    cpu: Option<Duration>,
    clock: CpuClock,
}

impl Meter {
    /// Starts metering a call on this thread, its CPU time read from `clock`.
    pub fn start(clock: CpuClock) -> Meter {
        Meter {
            wall: Instant::now(),
            cpu: match clock {
                CpuClock::Thread => thread_cpu_time(),
                CpuClock::Wall => Some(Duration::ZERO),
            },
            clock,
        }
    }

    /// The thread's CPU clock when the call started (zero where there is none).
    pub fn cpu_at_start(&self) -> Duration {
        self.cpu.unwrap_or_default()
    }

    /// Adds the call's cost to `version`'s usage and metrics; answers its wall time and CPU time.
    pub fn finish(self, version: &ModelVersion, fuel: Option<u64>) -> (Duration, Duration) {
        let wall = self.wall.elapsed();
        let cpu = match (self.clock, self.cpu) {
            (CpuClock::Wall, _) => wall,
            (CpuClock::Thread, Some(before)) => thread_cpu_time()
                .map(|after| after.saturating_sub(before))
                .unwrap_or_default(),
            (CpuClock::Thread, None) => Duration::ZERO,
        };
        let usage = &version.usage;
        usage.compute_ns.fetch_add(wall.as_nanos() as u64, Relaxed);
        usage.cpu_ns.fetch_add(cpu.as_nanos() as u64, Relaxed);
        if let Some(fuel) = fuel {
            usage.fuel.fetch_add(fuel, Relaxed);
        }
        (wall, cpu)
    }
}

/// The CPU time this thread has used, when the platform tells.
pub(super) fn thread_cpu_time() -> Option<Duration> {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec for the call to fill; the clock id is a constant.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_clock_counts_this_threads_work_and_not_its_sleep() {
        let before = thread_cpu_time().expect("linux has a thread CPU clock");
        std::thread::sleep(Duration::from_millis(30));
        let slept = thread_cpu_time().unwrap() - before;
        let mut x = 0u64;
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        let worked = thread_cpu_time().unwrap() - before - slept;
        assert!(
            slept < Duration::from_millis(10),
            "sleeping cost {slept:?} of CPU"
        );
        assert!(
            worked > Duration::from_millis(5),
            "spinning cost only {worked:?} ({x})"
        );
    }
}
