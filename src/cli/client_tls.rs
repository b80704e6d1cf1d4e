//! The CLI's TLS connection to an `https://` coordinator: TCP, a rustls
//! handshake with the configuration `sagad::tls::grpc_client_config` builds
//! from `--ca`, `--cert` and `--key`, then tonic's HTTP/2 on top.
//!
//! Why not tonic's own `tls_config`: in TLS 1.3 a server refuses a client
//! certificate (or its absence) *after* the client's handshake is done, in an
//! alert the client reads with its first bytes. tonic reads those inside its
//! connection task and drops the error, so the call only says "transport
//! error" or "operation was canceled". This connector keeps the first read
//! error of the connection ([`tls_failure_seen`]), so the CLI can say that
//! the server refused its certificate.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use http::Uri;
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::{
    TlsConnector,
    client::TlsStream,
    rustls::{ClientConfig, pki_types::ServerName},
};
use tonic::codegen::Service;

/// The first read error of the process's TLS connection. A process global,
/// which only a binary may have: a client verb makes one connection.
static FAILURE: Mutex<Option<String>> = Mutex::new(None);

/// The TLS error the connection met, if any (a refused certificate).
pub fn tls_failure_seen() -> Option<String> {
    FAILURE.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Connects over TLS with `config`; what tonic dials through.
#[derive(Clone)]
pub struct TlsConnect {
    pub config: Arc<ClientConfig>,
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<TokioIo<Recorded>>> + Send>>;

impl Service<Uri> for TlsConnect {
    type Response = TokioIo<Recorded>;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Connecting {
        let connector = TlsConnector::from(self.config.clone());
        Box::pin(async move {
            let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
            let host = uri
                .host()
                .ok_or_else(|| invalid(format!("{uri} has no host")))?;
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host, port)).await?;
            tcp.set_nodelay(true)?;
            // An IPv6 host is bracketed in a URL, not in a certificate.
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let name = ServerName::try_from(bare.to_string())
                .map_err(|e| invalid(format!("{host}: {e}")))?;
            let stream = connector.connect(name, tcp).await?;
            Ok(TokioIo::new(Recorded(stream)))
        })
    }
}

/// A TLS stream that records its first read error in [`FAILURE`].
pub struct Recorded(TlsStream<TcpStream>);

impl AsyncRead for Recorded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let read = Pin::new(&mut self.0).poll_read(cx, buf);
        if let Poll::Ready(Err(e)) = &read {
            let mut failure = FAILURE.lock().unwrap_or_else(|p| p.into_inner());
            failure.get_or_insert_with(|| e.to_string());
        }
        read
    }
}

impl AsyncWrite for Recorded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}
