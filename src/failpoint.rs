//! Crash points: named places where a test can make the process die as if it
//! were killed with SIGKILL, to prove recovery at each dangerous instant.
//!
//! They exist only in builds with the `failpoints` feature *and* debug
//! assertions, so a release build never carries them. A test arms them through
//! the `FAILPOINTS` environment variable of the `fail` crate, e.g.
//! `FAILPOINTS="runner::before_call=3*off->return"` (the fourth time the point is
//! reached, the process kills itself).
//!
//! The points:
//! - `runner::before_call`: an attempt's start is durable, the call not yet made.
//! - `runner::before_compensate_call`: the same, for compensations only.
//! - `runner::after_call`: the participant answered; the answer is not journaled.
//! - `journal::before_sync`: a group-commit batch is written, not yet flushed.
//! - `journal::mid_checkpoint`: half of a checkpoint is made durable in the
//!   store, without the batch marker that says how far it got.
//! - `recovery::after_resume`: recovery has read back some sagas, not all.
//! - `archive::after_flush`: an archive batch is durable in the archive files,
//!   its sagas not yet removed from the journal.
//! - `history::after_segment`: a history segment is durable, its sagas not
//!   yet removed from the store (`journal/kv/tiered.rs`).
//! - `sled::renew_before_exchange`: a fresh store is complete and durable in
//!   `journal.fresh/`, not yet exchanged with `journal/`
//!   (`journal/store/sled/renew.rs`).
//! - `sled::renew_after_exchange`: the two directories are exchanged, the
//!   data directory not yet synced, the old store still open.
//!
//! And knobs, values a test sets the same way (`name=return(VALUE)`), read
//! with [`knob`]:
//! - `sled::renew_floor`: the fewest bytes of sled log since its snapshot
//!   that make a fresh store due (1 GiB otherwise), so a test's small
//!   journal renews itself again and again.

/// Kills the process here if the named crash point is armed.
#[macro_export]
macro_rules! crash_point {
    ($name:literal) => {
        #[cfg(all(feature = "failpoints", debug_assertions))]
        if ::fail::eval($name, |_| ()).is_some() {
            $crate::failpoint::die($name);
        }
    };
}

/// The value armed for knob `name` (`name=return(VALUE)`); always `None` in
/// builds without crash points.
pub fn knob(name: &str) -> Option<String> {
    #[cfg(all(feature = "failpoints", debug_assertions))]
    return fail::eval(name, |value| value).flatten();
    #[cfg(not(all(feature = "failpoints", debug_assertions)))]
    {
        let _ = name;
        None
    }
}

/// Reads `FAILPOINTS` from the environment; a no-op in builds without crash points.
pub fn setup() {
    #[cfg(all(feature = "failpoints", debug_assertions))]
    if std::env::var_os("FAILPOINTS").is_some() {
        // The scenario must stay configured for the life of the process.
        std::mem::forget(fail::FailScenario::setup());
    }
}

/// Dies by SIGKILL, as an operator's `kill -9` or the OOM killer would.
#[cfg(all(feature = "failpoints", debug_assertions))]
pub fn die(name: &str) -> ! {
    eprintln!("crash point {name}: killing the process");
    // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    unreachable!("SIGKILL cannot be caught")
}
