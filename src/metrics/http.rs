//! The metrics endpoint: `GET /metrics` in the Prometheus text format, over
//! HTTP/1 (axum), on its own listener (`--metrics-listen`), apart from the
//! gRPC port so a scraper needs no gRPC and the API port no HTTP routes. Over
//! TLS when configured: the server hands [`serve`] a `crate::tls::TlsIncoming`
//! instead of the bare TCP listener.
//!
//! Guarantees:
//! - The listener is bound by [`bind`] before the coordinator reports ready, so
//!   an address in use is a start-up error, never a silent absence of metrics.
//! - Every scrape renders afresh; nothing is cached between scrapes.
//! - The endpoint stops with the coordinator (graceful shutdown on its token).

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, http::header, routing::get, serve::Listener};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{Error, Result};

/// The content type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders the current metrics; called once per scrape.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Binds the metrics listener; an error names the address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|source| Error::Io {
        what: format!("cannot listen for metrics on {addr} (--metrics-listen)"),
        source,
    })
}

/// Serves `GET /metrics` on `listener` (TCP, or TLS over TCP) until
/// `shutdown` is cancelled.
pub async fn serve<L>(listener: L, render: Render, shutdown: CancellationToken) -> Result<()>
where
    L: Listener,
    L::Addr: std::fmt::Debug,
{
    let router = Router::new().route(
        "/metrics",
        get(move || {
            let render = render.clone();
            async move { ([(header::CONTENT_TYPE, CONTENT_TYPE)], render()) }
        }),
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(|source| Error::Io {
            what: "the metrics endpoint failed".into(),
            source,
        })
}
