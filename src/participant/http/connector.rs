//! How the HTTP client makes a connection: plain TCP, Nagle off, bounded by
//! the connect timeout, and with an allow-list (`--participant-allow`) only to
//! the addresses it allows, resolved and checked for that very connection
//! (`guard::dial`), exactly as the gRPC connections are (`connections.rs`).
//!
//! hyper-util's pool calls this whenever it has no idle connection to an
//! origin, so every new connection is checked, and none is made that the
//! gRPC side would refuse.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::Uri;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

use crate::participant::{
    connections::CONNECT_TIMEOUT,
    guard::{self, AllowList},
};

/// Why a connection could not be made: the text a `NotDelivered` reason
/// carries.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConnectError(pub String);

/// Connects to participants' origins (a tower service of `Uri`, as hyper-util
/// wants).
#[derive(Clone, Default)]
pub struct Connector {
    /// Where connections may go; `None`: anywhere.
    allow: Option<AllowList>,
}

impl Connector {
    pub fn new(allow: Option<AllowList>) -> Self {
        Self { allow }
    }
}

type Connecting = Pin<Box<dyn Future<Output = Result<TokioIo<TcpStream>, ConnectError>> + Send>>;

impl Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = ConnectError;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let allow = self.allow.clone();
        Box::pin(async move {
            tokio::time::timeout(CONNECT_TIMEOUT, connect(allow, uri))
                .await
                .unwrap_or_else(|_| {
                    Err(ConnectError(format!(
                        "no connection within {CONNECT_TIMEOUT:?}"
                    )))
                })
        })
    }
}

async fn connect(allow: Option<AllowList>, uri: Uri) -> Result<TokioIo<TcpStream>, ConnectError> {
    let fail = |e: &dyn std::fmt::Display| ConnectError(e.to_string());
    let authority = uri
        .authority()
        .ok_or_else(|| ConnectError(format!("{uri} has no host")))?;
    // Endpoints are http:// only (see `Endpoint::parse_as`).
    let port = authority.port_u16().unwrap_or(80);
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let stream = match &allow {
        None => TcpStream::connect((host, port)).await,
        // The addresses checked are the ones connected to.
        Some(allow) => {
            let addresses = guard::dial(allow, host, port).await.map_err(ConnectError)?;
            TcpStream::connect(addresses.as_slice()).await
        }
    }
    .map_err(|e| fail(&e))?;
    stream.set_nodelay(true).map_err(|e| fail(&e))?;
    Ok(TokioIo::new(stream))
}
