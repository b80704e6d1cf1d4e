//! Background threads of the journal run at a lower CPU priority than the
//! threads that answer callers.
//!
//! A checkpoint (`checkpoint.rs`) moves a few seconds' worth of writes into the store
//! in one burst, and a spare log segment (`spare.rs`) is zero-filled ahead of
//! need. Neither is waited for by any caller, but at full priority each took a
//! core away from the sagas for as long as it ran: on two cores, half the
//! machine. At a higher nice value the kernel runs them when the request path
//! leaves a core idle, and still gives them a share when it does not, so they
//! cannot fall behind for good (and if they did, the writer's wait for room
//! in `overlay.rs` would slow the writes down to their pace).
//!
//! Lowering a thread's priority needs no privilege; failing to is harmless,
//! so it is logged and otherwise ignored.

/// The nice value of background threads (0 is the default, 19 the lowest).
pub const BACKGROUND_NICE: i32 = 10;

/// Lowers the calling thread's CPU priority to [`BACKGROUND_NICE`].
pub fn lower() {
    #[cfg(target_os = "linux")]
    {
        // On Linux the nice value belongs to a thread, and `setpriority`
        // with a thread id changes that thread's alone.
        // SAFETY: plain system calls on the calling thread; no memory is shared.
        let result = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, BACKGROUND_NICE)
        };
        if result != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "cannot lower the priority of a background thread"
            );
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The nice value of the calling thread, from `/proc/thread-self/stat`.
    fn own_nice() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // Fields after the command name (which may hold spaces) start at the
        // state; nice is field 19, the 17th after the name.
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name.split(' ').nth(16).unwrap().parse().unwrap()
    }

    #[test]
    fn lowers_the_calling_thread_only() {
        let before = own_nice();
        let lowered = std::thread::spawn(|| {
            lower();
            own_nice()
        })
        .join()
        .unwrap();
        // At least: a thread already below it may not be raised without privilege.
        assert!(lowered >= BACKGROUND_NICE, "nice {lowered} after lowering");
        assert_eq!(own_nice(), before, "other threads keep their priority");
    }
}
