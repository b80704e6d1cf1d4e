//! Waiting for the signals that stop the server.
//!
//! The first SIGINT or SIGTERM starts a graceful shutdown; a second one exits at
//! once (the journal is still consistent: only acknowledged work is promised).

use tokio::signal::unix::{SignalKind, signal};

/// Resolves at the first SIGINT or SIGTERM, and arms the second-signal exit.
pub async fn first_signal() {
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!("cannot install signal handlers; stop sagad with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down: finishing in-flight calls (a second signal exits at once)");
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
}
