//! The signals that stop the server: the binary's, because only a process
//! decides what its signals mean (the library stops through a
//! `CancellationToken`, `Server::shutdown_token`).
//!
//! The first SIGINT or SIGTERM starts a graceful shutdown; a second one exits at
//! once (the journal is still consistent: only acknowledged work is promised).
//! SIGHUP, whose default action would kill the server without a word (a
//! closed terminal, an init system's "reload"), is caught: it reloads what
//! the server's [`ReloadHooks`] hold (the tokens file, the TLS certificate
//! files; `sagad::reload`), each outcome logged. Settings and definitions are
//! read only at start; the log line says so when there is nothing to reload.

use std::{future::Future, task::Poll};

use sagad::reload::ReloadHooks;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::oneshot,
};

/// Installs the SIGINT/SIGTERM handlers now (and SIGHUP's, which reloads
/// `hooks`), and returns a receiver that resolves at the first stop signal.
///
/// `first_signal` installs its handlers when it is first polled. Until then a
/// SIGTERM would kill the process with the default action, and scripts, tests
/// and init systems may signal as soon as the process says it is ready. So
/// this polls it once, and only then returns: call it before printing
/// "listening".
pub async fn stop_signal(hooks: ReloadHooks) -> oneshot::Receiver<()> {
    reload_on_hangup(hooks);
    let (armed_tx, armed_rx) = oneshot::channel();
    let (fired_tx, fired_rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut signal = std::pin::pin!(first_signal());
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

/// Resolves at the first SIGINT or SIGTERM, and arms the second-signal exit.
async fn first_signal() {
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

/// Catches SIGHUP from now on (the handler is installed before this returns):
/// each one reloads `hooks` instead of killing sagad.
fn reload_on_hangup(hooks: ReloadHooks) {
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot install a SIGHUP handler; a SIGHUP will stop sagad");
        return;
    };
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            if hooks.is_empty() {
                tracing::warn!(
                    "SIGHUP: nothing to reload: no --auth-tokens and no TLS certificates are configured, and settings and definitions are read only at start (restart sagad to change them)"
                );
                continue;
            }
            // The hooks log each outcome, naming any bad file.
            let hooks = hooks.clone();
            let reloaded = tokio::task::spawn_blocking(move || hooks.reload_all("SIGHUP")).await;
            if let Err(e) = reloaded {
                tracing::error!(error = %e, "SIGHUP: the reload task failed");
            }
        }
    });
}
