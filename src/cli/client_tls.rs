//! The CLI's TLS connection to an `https://` coordinator: TCP, a rustls
//! handshake with the configuration `sagad::tls::grpc_client_config` builds
//! from `--ca`, `--cert` and `--key` (one configuration, whose errors name
//! the file and flag), then tonic's HTTP/2 on top ([`TlsConnect`]).
//!
//! Before that connection, [`probe`] makes one of its own, to learn whether
//! the server accepts this client. In TLS 1.3 a server refuses a client
//! certificate (or its absence) *after* the client's side of the handshake
//! is done, in an alert the client reads with its first bytes; tonic reads
//! those inside its connection task and drops the error, so the call would
//! only say "transport error" or "operation was canceled". The probe sends
//! the HTTP/2 preface and reads the server's first frame: every HTTP/2
//! server answers it, with SETTINGS, or with the alert when it refused the
//! handshake. It costs one more handshake per command.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::Uri;
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{
    TlsConnector,
    client::TlsStream,
    rustls::{ClientConfig, pki_types::ServerName},
};
use tonic::codegen::Service;

/// The HTTP/2 client connection preface, then an empty SETTINGS frame.
pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
/// The content type of a TLS alert record: what a TLS server answers a
/// plaintext HTTP/2 preface with.
const TLS_ALERT: u8 = 0x15;

/// Whether the server at `host:port` answers the plaintext HTTP/2 preface
/// with a TLS alert, as a TLS listener does: an `http://` address of a
/// coordinator that serves TLS. tonic would only report the call's end
/// ("h2 protocol error" or "operation was canceled", whichever it sees
/// first). False when anything else happens, left to the real connection.
pub async fn answers_as_tls(host_port: &str, timeout: Duration) -> bool {
    let probe = async {
        let mut tcp = TcpStream::connect(host_port).await.ok()?;
        tcp.write_all(H2_PREFACE).await.ok()?;
        let mut first = [0u8; 1];
        tcp.read_exact(&mut first).await.ok()?;
        Some(first[0] == TLS_ALERT)
    };
    matches!(tokio::time::timeout(timeout, probe).await, Ok(Some(true)))
}

/// Length of an HTTP/2 frame header: what the probe waits for.
const H2_FRAME_HEADER: usize = 9;

/// Connects over TLS with `config`; what tonic dials through.
#[derive(Clone)]
pub struct TlsConnect {
    pub config: Arc<ClientConfig>,
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<TokioIo<TlsStream<TcpStream>>>> + Send>>;

impl Service<Uri> for TlsConnect {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Connecting {
        let config = self.config.clone();
        Box::pin(async move { handshake(config, &uri).await.map(TokioIo::new) })
    }
}

/// TCP to `uri`'s host and port (443 by default), then the TLS handshake.
async fn handshake(config: Arc<ClientConfig>, uri: &Uri) -> io::Result<TlsStream<TcpStream>> {
    let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
    let host = uri
        .host()
        .ok_or_else(|| invalid(format!("{uri} has no host")))?;
    let port = uri.port_u16().unwrap_or(443);
    // An IPv6 host is bracketed in a URL, not in a certificate.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let name =
        ServerName::try_from(bare.to_string()).map_err(|e| invalid(format!("{host}: {e}")))?;
    let tcp = TcpStream::connect((bare, port)).await?;
    tcp.set_nodelay(true)?;
    TlsConnector::from(config).connect(name, tcp).await
}

/// Why [`probe`] found the coordinator unusable.
#[derive(Debug)]
pub enum ProbeFailure {
    /// TLS failed: a certificate refused on either side.
    Tls(String),
    /// Anything else: nothing listens, no answer.
    Unreachable(String),
}

/// Connects to `uri` as [`TlsConnect`] does, sends the HTTP/2 preface and
/// waits for the server's first frame (see the module docs).
pub async fn probe(
    config: Arc<ClientConfig>,
    uri: &Uri,
    timeout: Duration,
) -> Result<(), ProbeFailure> {
    let attempt = async {
        let mut tls = handshake(config, uri).await?;
        tls.write_all(H2_PREFACE).await?;
        tls.flush().await?;
        let mut header = [0u8; H2_FRAME_HEADER];
        tls.read_exact(&mut header).await?;
        Ok::<_, io::Error>(())
    };
    let failed = match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e)) => e,
        Err(_) => {
            return Err(ProbeFailure::Unreachable(format!(
                "no answer within {timeout:?}"
            )));
        }
    };
    // rustls reports through an io::Error that wraps its own error.
    let tls = failed
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<tokio_rustls::rustls::Error>());
    Err(match tls {
        Some(tls) => ProbeFailure::Tls(tls.to_string()),
        None => ProbeFailure::Unreachable(failed.to_string()),
    })
}
