//! Work that gives way to calls: loading a version (compile, initialise, snapshot, self-tests) runs at
//! a lower CPU priority than the threads that answer requests, so that a version that is ready
//! answers at its usual speed while others load (issue 19: "ready means answering").

use std::sync::OnceLock;

/// The niceness of loader and compiler threads: a tenth of a core's weight against normal threads,
/// so loads still progress on a busy host.
const LOAD_NICENESS: i32 = 10;

/// Lowers this thread's CPU priority; lowering needs no privilege. Threads it starts inherit it.
pub fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority with PRIO_PROCESS and a thread id changes only that thread's niceness.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        if libc::setpriority(libc::PRIO_PROCESS, tid, LOAD_NICENESS) != 0 {
            tracing::debug!("cannot lower this thread's priority");
        }
    }
}

/// Runs `compile` on the compiler's own threads, all at the loaders' priority. Cranelift compiles a
/// component's functions in parallel on the rayon pool it is called from; left to rayon's global
/// pool, their priority would be that of whichever thread happened to start the pool.
pub fn compile<R: Send>(compile: impl FnOnce() -> R + Send) -> R {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    let pool = POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("ferry-compile-{i}"))
            .start_handler(|_| lower_this_thread())
            .build()
            .map_err(|e| tracing::warn!(error = %e, "no compiler threads of their own; compiling on rayon's"))
            .ok()
    });
    match pool {
        Some(pool) => pool.install(compile),
        None => compile(),
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn niceness() -> i32 {
        // SAFETY: getpriority of this thread's id reads its niceness.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::getpriority(libc::PRIO_PROCESS, tid)
        }
    }

    #[test]
    fn compiles_run_at_the_loaders_priority_whoever_asks() {
        let before = niceness();
        let on_pool = compile(niceness);
        assert_eq!(on_pool, LOAD_NICENESS);
        assert_eq!(niceness(), before, "the caller's thread is left as it was");
    }
}
