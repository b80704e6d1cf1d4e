//! A TLS listener: TCP connections accepted, their handshakes run beside each
//! other, and only connections whose handshake succeeded handed on, to tonic
//! (as a `Stream`) or to axum (as a `Listener`).
//!
//! Guarantees:
//! - Each handshake takes the listener's configuration current when the TCP
//!   connection was accepted (`ServerTls::current`), so a reload applies to
//!   the next connection.
//! - A slow or silent client cannot hold up the others: handshakes run as
//!   tasks of their own, each cut off after [`TLS_HANDSHAKE_TIMEOUT`], at
//!   most [`TLS_HANDSHAKES_MAX`] at once (beyond that, accepting waits).
//! - A refused handshake (no client certificate under mTLS, an unknown CA, a
//!   plaintext client) closes that connection and is logged at debug level;
//!   the listener goes on.
//! - Dropping the listener (the server stopping) stops accepting and aborts
//!   the handshakes in progress.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinSet,
    time::Sleep,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::Stream;

use super::ServerTls;

/// How long a client may take to finish its TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once on one listener.
pub const TLS_HANDSHAKES_MAX: usize = 256;
/// How long accepting pauses after a failed accept (out of file descriptors,
/// say), rather than spinning on the error.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// A listener that yields connections whose TLS handshake succeeded.
pub struct TlsIncoming {
    listener: TcpListener,
    tls: ServerTls,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
    pause: Option<Pin<Box<Sleep>>>,
}

impl TlsIncoming {
    pub fn new(listener: TcpListener, tls: ServerTls) -> Self {
        Self {
            listener,
            tls,
            handshakes: JoinSet::new(),
            pause: None,
        }
    }

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<(TlsStream<TcpStream>, SocketAddr)> {
        loop {
            while let Poll::Ready(Some(done)) = self.handshakes.poll_join_next(cx) {
                if let Ok(Some(connection)) = done {
                    return Poll::Ready(connection);
                }
            }
            if let Some(pause) = &mut self.pause {
                if pause.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.pause = None;
            }
            if self.handshakes.len() >= TLS_HANDSHAKES_MAX {
                // A finishing handshake wakes this (poll_join_next above).
                return Poll::Pending;
            }
            match self.listener.poll_accept(cx) {
                Poll::Ready(Ok((tcp, peer))) => self.handshake(tcp, peer),
                Poll::Ready(Err(e)) => {
                    tracing::warn!(error = %e, "cannot accept a connection");
                    self.pause = Some(Box::pin(tokio::time::sleep(ACCEPT_ERROR_PAUSE)));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn handshake(&mut self, tcp: TcpStream, peer: SocketAddr) {
        // Nagle off, as on the plaintext listener: small gRPC frames must not
        // wait for an ACK.
        let _ = tcp.set_nodelay(true);
        let acceptor = TlsAcceptor::from(self.tls.current());
        self.handshakes.spawn(async move {
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => Some((stream, peer)),
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake refused");
                    None
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    None
                }
            }
        });
    }
}

impl Stream for TlsIncoming {
    type Item = io::Result<TlsStream<TcpStream>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut()
            .poll_accept(cx)
            .map(|(stream, _)| Some(Ok(stream)))
    }
}

impl axum::serve::Listener for TlsIncoming {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}
