//! The tokio runtime sagad's binaries run on.
//!
//! A multi-threaded runtime with the scheduler's LIFO slot turned off. With
//! the slot, a task woken by the one running is polled next: a saga handing a
//! request to its participant's connection wakes the connection's task, which
//! then writes that one request before the next saga runs. Without it, woken
//! tasks queue behind those already runnable, so the sagas a journal flush
//! releases together all hand over their requests first and each connection
//! writes them in one `writev`, and the same holds for answers on the server
//! side. Measured on W1 c64 (`BENCHMARKS.md`): fewer syscalls and wake-ups
//! per saga, and less CPU per saga in every process.
//!
//! Turning the slot off is one of tokio's unstable options, so it needs
//! `--cfg tokio_unstable`, which `.cargo/config.toml` sets; a build without it
//! gets tokio's default scheduler and works the same, only slower.

use std::io;

use tokio::runtime::{Builder, Runtime};

/// The runtime for `sagad` and `sagad-bench`, with `workers` threads (`None`:
/// one per core, or `TOKIO_WORKER_THREADS`).
pub fn build(workers: Option<usize>) -> io::Result<Runtime> {
    let mut builder = Builder::new_multi_thread();
    builder.enable_all();
    if let Some(workers) = workers {
        builder.worker_threads(workers);
    }
    #[cfg(tokio_unstable)]
    builder.disable_lifo_slot();
    builder.build()
}
