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
