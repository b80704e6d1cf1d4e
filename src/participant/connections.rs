//! The HTTP/2 connections to participants: one per origin, straight on hyper.
//!
//! Why not tonic's `Channel`: it puts a tower `Buffer` (a queue and a worker
//! task of its own) and a boxed reconnect stack in front of every call. A
//! participant call needs much less: a live connection to send on, and a new
//! one when that one died. Without the `Channel`, the coordinator spends 13%
//! less CPU per W1 saga (`BENCHMARKS.md`, session 5).
//!
//! Guarantees:
//! - One connection per origin (`http://host:port` or `https://host:port`),
//!   made on first use, Nagle off, shared by every call to that origin
//!   (HTTP/2 multiplexes them).
//! - An `https://` origin is reached over TLS, with the configuration
//!   `crate::tls::ClientTls` gives that origin when the connection is made:
//!   the participant's certificate is verified (a CA bundle or the system's
//!   roots) and a client certificate presented if one is configured. A
//!   certificate reload applies to the next connection.
//! - A connection that closed (the participant restarted, the peer reset it, a
//!   keep-alive ping went unanswered) is replaced by the next call.
//! - At most one connection attempt per origin at a time. The callers that
//!   waited for a failed attempt share its error rather than queueing attempts
//!   of their own, so a participant that is down costs one attempt per wave of
//!   calls, not one per call.
//! - Connecting is bounded by [`CONNECT_TIMEOUT`].
//! - With an allow-list (`--participant-allow`, `guard.rs`), every connection
//!   is made only to addresses the list allows, resolved and checked for that
//!   connection ([`guard::dial`]), so DNS that changed since the endpoint was
//!   registered cannot lead it elsewhere. A refusal is a connection that could
//!   not be made: nothing was sent.
//! - A request that hyper hands back unsent is marked as such ([`Unsent`]):
//!   that is the one failure after a connection existed that certainly never
//!   reached the participant (see `grpc.rs`).

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use http::Uri;
use hyper::{
    body::Incoming,
    client::conn::{
        TrySendError,
        http2::{Builder, SendRequest},
    },
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use tokio_rustls::{TlsConnector, rustls::pki_types::ServerName};
use tonic::{Status, body::Body, codegen::Service};

use super::guard::{self, AllowList};
use crate::tls::ClientTls;

/// How long connecting to a participant may take before the attempt counts as failed.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// With a call open and nothing heard for this long, the connection is pinged…
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// …and closed if the ping is not answered within this, so a vanished peer
/// (no reset, no FIN) does not keep the calls of later sagas on a dead socket.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The connections, by origin.
#[derive(Default)]
pub struct Connections {
    /// A std mutex: held only to look up or insert.
    origins: Mutex<HashMap<String, Arc<Origin>>>,
    /// How `https://` origins are reached.
    tls: ClientTls,
    /// Where connections may go; `None`: anywhere.
    allow: Option<AllowList>,
}

impl Connections {
    /// Connections that reach `https://` origins with `tls`, and only hosts
    /// `allow` allows (when given).
    pub fn new(tls: ClientTls, allow: Option<AllowList>) -> Self {
        Self {
            origins: Mutex::default(),
            tls,
            allow,
        }
    }

    /// A sender on a live connection to `origin`, connecting if there is none.
    /// The error says why no connection could be made.
    pub async fn sender(&self, origin: &str) -> Result<Sender, String> {
        let known = lock(&self.origins).get(origin).cloned();
        let origin = match known {
            Some(o) => o,
            None => {
                let made = Arc::new(Origin::new(origin, &self.tls, self.allow.clone())?);
                lock(&self.origins)
                    .entry(origin.to_string())
                    .or_insert(made)
                    .clone()
            }
        };
        origin.sender().await
    }
}

/// One origin's connection, and the turn to make a new one.
struct Origin {
    /// `http://host:port` or `https://host:port` (port made explicit): what
    /// is dialled, and what tonic puts in front of each method path.
    uri: Uri,
    /// For an `https://` origin: how to make its TLS connection.
    secure: Option<Secure>,
    /// With an allow-list: it, and the host and port it checks at each
    /// connection (the host without brackets, as DNS takes it).
    allowed: Option<(AllowList, String, u16)>,
    state: Mutex<Live>,
    /// Held while connecting, so that one caller connects and the others wait.
    connecting: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Live {
    sender: Option<SendRequest<Body>>,
    /// Counts finished connection attempts; a waiter compares it to learn
    /// whether an attempt ended while it waited.
    attempts: u64,
    /// Why the last attempt failed, if it did.
    last_error: Option<String>,
}

/// What a TLS connection to one origin needs.
struct Secure {
    /// Gives the configuration current when a connection is made.
    tls: ClientTls,
    /// `https://host:port`, the key of its configuration.
    key: String,
    /// The name the participant's certificate must carry: its host.
    server_name: ServerName<'static>,
}

impl Origin {
    fn new(origin: &str, tls: &ClientTls, allow: Option<AllowList>) -> Result<Self, String> {
        let malformed = |e: &dyn std::fmt::Display| format!("malformed origin {origin:?}: {e}");
        let uri: Uri = origin.parse().map_err(|e| malformed(&e))?;
        let authority = uri
            .authority()
            .ok_or_else(|| format!("origin {origin:?} has no host"))?;
        let https = uri.scheme_str() == Some("https");
        let (scheme, default_port) = if https { ("https", 443) } else { ("http", 80) };
        // An origin without a port is its scheme's default one.
        let port = authority.port_u16().unwrap_or(default_port);
        let host = authority.host().to_ascii_lowercase();
        let uri = Uri::from_maybe_shared(format!("{scheme}://{host}:{port}"))
            .map_err(|e| malformed(&e))?;
        // An IPv6 host is bracketed in a URL, not in a certificate or for DNS.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let secure = if https {
            let server_name = ServerName::try_from(bare.to_string()).map_err(|e| malformed(&e))?;
            Some(Secure {
                tls: tls.clone(),
                key: uri.to_string().trim_end_matches('/').to_string(),
                server_name,
            })
        } else {
            None
        };
        Ok(Self {
            allowed: allow.map(|list| (list, bare.to_string(), port)),
            uri,
            secure,
            state: Mutex::new(Live::default()),
            connecting: tokio::sync::Mutex::new(()),
        })
    }

    async fn sender(&self) -> Result<Sender, String> {
        let seen = {
            let state = lock(&self.state);
            if let Some(sender) = state.sender.as_ref().filter(|s| !s.is_closed()) {
                return Ok(self.wrap(sender.clone()));
            }
            state.attempts
        };
        let _turn = self.connecting.lock().await;
        {
            let state = lock(&self.state);
            if state.attempts != seen {
                // An attempt ended while this caller waited: take its result,
                // unless it succeeded and that connection closed already.
                if let Some(error) = &state.last_error {
                    return Err(error.clone());
                }
                if let Some(sender) = state.sender.as_ref().filter(|s| !s.is_closed()) {
                    return Ok(self.wrap(sender.clone()));
                }
            }
        }
        let made = tokio::time::timeout(CONNECT_TIMEOUT, self.connect())
            .await
            .unwrap_or_else(|_| Err(format!("no connection within {CONNECT_TIMEOUT:?}")));
        let mut state = lock(&self.state);
        state.attempts += 1;
        match made {
            Ok(sender) => {
                state.sender = Some(sender.clone());
                state.last_error = None;
                Ok(self.wrap(sender))
            }
            Err(error) => {
                state.sender = None;
                state.last_error = Some(error.clone());
                Err(error)
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<Body>, String> {
        let stream = match &self.allowed {
            None => {
                let dial = self.uri.authority().map_or("", |a| a.as_str());
                TcpStream::connect(dial).await
            }
            // The addresses checked are the ones connected to: no second
            // resolution that DNS could answer differently.
            Some((allow, host, port)) => {
                let addresses = guard::dial(allow, host, *port).await?;
                TcpStream::connect(addresses.as_slice()).await
            }
        }
        .map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let Some(secure) = &self.secure else {
            return http2(stream).await;
        };
        let config = secure
            .tls
            .config_for(&secure.key)
            .map_err(|e| e.to_string())?;
        let stream = TlsConnector::from(config)
            .connect(secure.server_name.clone(), stream)
            .await
            .map_err(|e| format!("TLS handshake with {}: {e}", secure.key))?;
        http2(stream).await
    }

    fn wrap(&self, inner: SendRequest<Body>) -> Sender {
        Sender {
            inner,
            uri: self.uri.clone(),
            unsent: Unsent::default(),
        }
    }
}

/// Starts HTTP/2 on `io`, and its connection task.
async fn http2<T>(io: T) -> Result<SendRequest<Body>, String>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    // The connection task ends when the connection does; its error, if
    // any, reaches the calls that were on it, and `is_closed` tells the
    // next caller to connect again.
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "participant connection ended");
        }
    });
    Ok(sender)
}

/// Sends requests on one connection; what tonic's `Grpc` client calls through.
/// Each call gets a sender of its own (clones share its [`Unsent`]).
#[derive(Clone)]
pub struct Sender {
    inner: SendRequest<Body>,
    uri: Uri,
    unsent: Unsent,
}

impl Sender {
    /// `http(s)://host:port`, for tonic to put in front of the method path.
    pub fn origin_uri(&self) -> Uri {
        self.uri.clone()
    }

    /// Set if a request sent through this sender failed unsent: read it when
    /// the call failed, to tell "never reached" from "effect unknown".
    pub fn unsent(&self) -> Unsent {
        self.unsent.clone()
    }
}

/// Whether hyper handed a request back because it was never sent.
///
/// hyper's HTTP/2 client queues a request for its connection task, and
/// `try_send_request` gives the request back in its error exactly when the
/// task never took it from the queue: the connection was gone first, so the
/// request never reached h2 and no byte of it was written. Once the task has
/// taken it, every error comes without it, and the call's effect is unknown.
/// Tonic turns the error into a `Status`, so the fact travels beside it.
#[derive(Clone, Default)]
pub struct Unsent(Arc<AtomicBool>);

impl Unsent {
    /// True when the request was certainly not sent.
    pub fn is_certain(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn mark(&self) {
        self.0.store(true, Ordering::Release);
    }
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Incoming>, Status>> + Send>>;

impl Service<http::Request<Body>> for Sender {
    type Response = http::Response<Incoming>;
    type Error = Status;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx).map_err(transport)
    }

    fn call(&mut self, request: http::Request<Body>) -> ResponseFuture {
        let sent = self.inner.try_send_request(request);
        let unsent = self.unsent.clone();
        Box::pin(async move {
            sent.await.map_err(|mut e: TrySendError<_>| {
                if e.take_message().is_some() {
                    unsent.mark();
                }
                transport(e.into_error())
            })
        })
    }
}

/// A transport failure is `UNAVAILABLE`, as tonic's own channel says it: the
/// call may be retried.
fn transport(error: hyper::Error) -> Status {
    Status::unavailable(format!("the connection failed: {error}"))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
