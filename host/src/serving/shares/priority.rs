//! Moving the calling thread between Linux's normal scheduling class and its idle class
//! (`SCHED_IDLE`: the thread runs only on a core nobody else wants, and a waking normal thread takes
//! the core from it at once). Lowering a thread is always allowed; raising it back needs
//! `CAP_SYS_NICE` (or root), which [`available`] checks once, on a thread of its own.

use std::sync::OnceLock;

/// True when this process may lower a thread to the idle class and raise it back. Without that a
/// lowered thread would stay lowered, and since tokio reuses threads, could later run the async
/// workers themselves at idle priority: so no thread is ever lowered.
pub(super) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        std::thread::spawn(|| lower() && raise())
            .join()
            .unwrap_or(false)
    })
}

/// Lowers this thread to the idle class.
pub(super) fn lower() -> bool {
    set_policy(IDLE)
}

/// Raises this thread back to the normal class.
pub(super) fn raise() -> bool {
    set_policy(NORMAL)
}

#[cfg(target_os = "linux")]
const IDLE: i32 = libc::SCHED_IDLE;
#[cfg(target_os = "linux")]
const NORMAL: i32 = libc::SCHED_OTHER;
#[cfg(not(target_os = "linux"))]
const IDLE: i32 = 0;
#[cfg(not(target_os = "linux"))]
const NORMAL: i32 = 0;

fn set_policy(policy: i32) -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: a zeroed sched_param (priority 0) is what both classes take; pid 0 is this thread.
        unsafe {
            let param: libc::sched_param = std::mem::zeroed();
            libc::sched_setscheduler(0, policy, &param) == 0
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = policy;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lowered_thread_can_be_raised_when_available() {
        if !available() {
            eprintln!("no CAP_SYS_NICE here: threads are never lowered");
            return;
        }
        std::thread::spawn(|| {
            assert!(lower());
            // SAFETY: querying this thread's policy.
            assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_IDLE);
            assert!(raise());
            assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_OTHER);
        })
        .join()
        .unwrap();
    }
}
