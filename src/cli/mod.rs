//! Modules of the `sagad` binary (not the library): one per group of verbs,
//! plus what they share.
//!
//! - `serve`: the coordinator itself, configured through `sagad::config`;
//!   `definitions` reads the saga definitions it starts with from `--sagas`.
//! - `saga`, `catalog`, `tail`: the client verbs, over gRPC to a running server.
//! - `connect`, `error`: reaching the server; failures and their exit codes.
//! - `output`, `render`, `json`: how results are printed (human or JSON).
//! - `demo`: a coordinator and three participants in one process.
//! - `journal`, `export`: offline tools on a data directory (`journal check`,
//!   `export`).
//! - `logging`: where `serve`'s logs and spans go (text or JSON, OTLP).

use std::{future::Future, task::Poll};

use tokio::sync::oneshot;

// The output macros come before the `mod` lines: macro_rules are in scope in
// the modules declared after them, so every verb can use them unimported.

/// `println!` for results: a closed stdout (`sagad list | head`) ends the
/// process quietly instead of panicking.
macro_rules! outln {
    () => {
        $crate::cli::output::emit("\n")
    };
    ($($arg:tt)*) => {
        $crate::cli::output::emit(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for results, with `outln!`'s handling of a closed stdout.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::emit(&format!($($arg)*))
    };
}

pub mod catalog;
pub mod connect;
pub mod definitions;
pub mod demo;
pub mod error;
pub mod export;
pub mod journal;
pub mod json;
pub mod logging;
pub mod output;
pub mod render;
pub mod saga;
pub mod serve;
pub mod tail;

/// Installs the SIGINT/SIGTERM handlers now, and returns a receiver that
/// resolves at the first signal.
///
/// `first_signal` installs its handlers when it is first polled. Until then a
/// SIGTERM would kill the process with the default action, and scripts, tests
/// and init systems may signal as soon as the process says it is ready. So
/// this polls it once, and only then returns: call it before printing
/// "listening".
pub async fn stop_signal() -> oneshot::Receiver<()> {
    let (armed_tx, armed_rx) = oneshot::channel();
    let (fired_tx, fired_rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut signal = std::pin::pin!(sagad::engine::shutdown::first_signal());
        let fired =
            std::future::poll_fn(|cx| Poll::Ready(signal.as_mut().poll(cx).is_ready())).await;
        let _ = armed_tx.send(());
        if !fired {
            signal.await;
        }
        let _ = fired_tx.send(());
    });
    // The task polls the signal future before it answers; it cannot drop the
    // sender without sending, short of the runtime shutting down.
    let _ = armed_rx.await;
    fired_rx
}
