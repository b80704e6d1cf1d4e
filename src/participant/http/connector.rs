//! How the HTTP client makes a connection: TCP, Nagle off, bounded by the
//! connect timeout, and with an allow-list (`--participant-allow`) only to
//! the addresses it allows, resolved and checked for that very connection
//! (`guard::dial`), exactly as the gRPC connections are (`connections.rs`).
//! To an `https://` origin, TLS follows, with the configuration the gRPC
//! participants of that origin get (`crate::tls::ClientTls`: its CA or the
//! system's roots, its client certificate), offering HTTP/1.1 by ALPN. The
//! handshake is part of the connection: a certificate refused there means
//! the request never left (`NotDelivered`).
//!
//! hyper-util's pool calls this whenever it has no idle connection to an
//! origin, so every new connection is checked, and none is made that the
//! gRPC side would refuse.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use std::sync::Arc;

use http::Uri;
use hyper_rustls::MaybeHttpsStream;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, rustls::pki_types::ServerName};
use tower_service::Service;

use crate::{
    participant::{
        connections::CONNECT_TIMEOUT,
        guard::{self, AllowList},
    },
    tls::{ClientTls, origin_key},
};

/// The one protocol offered over TLS: the HTTP/1.1 client speaks nothing else
/// (h2c endpoints are plaintext by definition).
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// A connection to a participant, plaintext or TLS.
pub type Stream = MaybeHttpsStream<TokioIo<TcpStream>>;

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
    /// How `https://` origins are reached.
    tls: ClientTls,
}

impl Connector {
    pub fn new(allow: Option<AllowList>, tls: ClientTls) -> Self {
        Self { allow, tls }
    }
}

type Connecting = Pin<Box<dyn Future<Output = Result<Stream, ConnectError>> + Send>>;

impl Service<Uri> for Connector {
    type Response = Stream;
    type Error = ConnectError;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (allow, tls) = (self.allow.clone(), self.tls.clone());
        Box::pin(async move {
            tokio::time::timeout(CONNECT_TIMEOUT, connect(allow, tls, uri))
                .await
                .unwrap_or_else(|_| {
                    Err(ConnectError(format!(
                        "no connection within {CONNECT_TIMEOUT:?}"
                    )))
                })
        })
    }
}

async fn connect(
    allow: Option<AllowList>,
    tls: ClientTls,
    uri: Uri,
) -> Result<Stream, ConnectError> {
    let fail = |e: &dyn std::fmt::Display| ConnectError(e.to_string());
    let authority = uri
        .authority()
        .ok_or_else(|| ConnectError(format!("{uri} has no host")))?;
    let https = uri.scheme_str() == Some("https");
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
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
    if !https {
        return Ok(MaybeHttpsStream::Http(TokioIo::new(stream)));
    }
    let origin = origin_key(&format!("https://{authority}")).map_err(|e| fail(&e))?;
    let mut config = (*tls.config_for(&origin).map_err(|e| fail(&e))?).clone();
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    let name = ServerName::try_from(host.to_string()).map_err(|e| fail(&e))?;
    let tls_stream = TlsConnector::from(Arc::new(config))
        .connect(name, TokioIo::new(TokioIo::new(stream)))
        .await
        .map_err(|e| ConnectError(format!("TLS handshake with {origin}: {e}")))?;
    Ok(MaybeHttpsStream::Https(TokioIo::new(tls_stream)))
}
