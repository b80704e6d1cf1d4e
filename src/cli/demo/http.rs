//! The demo's participants over HTTP/JSON (`sagad demo --http`): the same
//! handlers as the gRPC demo (`shop.rs`), served by the SDK's router, which
//! speaks the HTTP contract of docs/participant.md (`POST /forward`,
//! `POST /compensate`; `200`, `409` rejected, `503` retry), so the three
//! orders end exactly as they do over gRPC.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::shop::{Role, participant};

/// Serves one demo participant over HTTP/1.1 on a free loopback port until
/// `stop` is cancelled (tracked by `tasks`); returns its address.
pub async fn serve(
    role: Role,
    stop: &CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .with_context(|| format!("binding the demo {} participant", role.name()))?;
    let addr = listener.local_addr()?;
    let router = participant(role)?.router();
    let stopped = stop.clone().cancelled_owned();
    tasks.spawn(async move {
        // A demo participant that stops serving ends the demo's orders with
        // transient errors, which the demo reports; nothing more to do here.
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(stopped)
            .await;
    });
    Ok(addr)
}
