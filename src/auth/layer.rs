//! The one place that decides whether a Coordinator call goes through: a
//! tower service around the generated `CoordinatorServer`.
//!
//! It reads the method from the request path (`/sagad.v1.Coordinator/GetSaga`),
//! the credentials from the headers and the connection from the request's
//! extensions, asks the [`Authenticator`], and either answers the refusal
//! itself (the service never sees the call) or puts the [`Caller`] into the
//! request's extensions and passes it on. A tonic interceptor would not do:
//! it is not told which method is called.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tonic::{
    body::Body,
    server::NamedService,
    transport::server::{TcpConnectInfo, TlsConnectInfo},
};
use tower_service::Service;

use super::{Authenticator, Caller};

/// The verified certificate chain (DER, leaf first) of an mTLS peer.
///
/// Over TLS, tonic puts a `TlsConnectInfo<TcpConnectInfo>` into each
/// request's extensions (`crate::tls::TlsIncoming` yields rustls streams);
/// its `peer_certs()` is the chain rustls verified against `--tls-client-ca`
/// during the handshake, and nothing without a client CA (rustls then asks
/// for no certificate). So a chain here is always one the listener trusted.
#[derive(Clone, Debug, Default)]
pub struct PeerCertificates(pub Vec<Vec<u8>>);

/// The [`Authenticator`] in front of a service.
#[derive(Clone)]
pub struct Authorize<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

impl<S> Authorize<S> {
    pub fn new(inner: S, auth: Arc<Authenticator>) -> Self {
        Self { inner, auth }
    }
}

/// Routed as the service it wraps.
impl<S: NamedService> NamedService for Authorize<S> {
    const NAME: &'static str = S::NAME;
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl<S, B> Service<http::Request<B>> for Authorize<S>
where
    S: NamedService
        + Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>
        + Send,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let method = method_of(request.uri().path(), S::NAME);
        let (peer, certificates) = connection(request.extensions());
        let admitted = self
            .auth
            .admit(method, request.headers(), peer, certificates.as_ref());
        match admitted {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Box::pin(self.inner.call(request))
            }
            Err(refused) => {
                tracing::debug!(method, peer = ?peer, error = %refused, "call refused");
                let status = tonic::Status::from(crate::Error::from(refused));
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

/// `GetSaga` of `/sagad.v1.Coordinator/GetSaga`; the whole path when it is
/// not one of `service`'s (then no row of the table matches it).
fn method_of<'a>(path: &'a str, service: &str) -> &'a str {
    path.strip_prefix('/')
        .and_then(|p| p.strip_prefix(service))
        .and_then(|p| p.strip_prefix('/'))
        .unwrap_or(path)
}

/// The peer's address and, over mTLS, its certificate chain (see
/// [`PeerCertificates`] for the TLS seam).
fn connection(extensions: &http::Extensions) -> (Option<SocketAddr>, Option<PeerCertificates>) {
    if let Some(tls) = extensions.get::<TlsConnectInfo<TcpConnectInfo>>() {
        let chain = tls
            .peer_certs()
            .map(|chain| PeerCertificates(chain.iter().map(|c| c.to_vec()).collect()));
        return (tls.get_ref().remote_addr(), chain);
    }
    let peer = extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr);
    (peer, None)
}

/// The caller the layer admitted, for the service: without the layer in
/// front (a service built by hand in a test), an anonymous caller with the
/// transport's peer address.
pub fn caller_of<T>(request: &tonic::Request<T>) -> Caller {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_else(|| Caller::anonymous(request.remote_addr()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_read_from_the_path_of_their_service() {
        let svc = "sagad.v1.Coordinator";
        assert_eq!(method_of("/sagad.v1.Coordinator/GetSaga", svc), "GetSaga");
        assert_eq!(method_of("/other.Svc/GetSaga", svc), "/other.Svc/GetSaga");
        assert_eq!(
            method_of("/sagad.v1.CoordinatorX/GetSaga", svc),
            "/sagad.v1.CoordinatorX/GetSaga"
        );
    }

    #[test]
    fn a_plaintext_connection_has_no_certificates() {
        // The TLS side (tonic's TlsConnectInfo has no public constructor) is
        // tested end to end: tests/it/auth.rs, certificate identities.
        let mut extensions = http::Extensions::new();
        assert!(matches!(connection(&extensions), (None, None)));
        // A certificate chain put there by anyone but the TLS listener is
        // not believed.
        extensions.insert(PeerCertificates(vec![vec![1, 2]]));
        assert!(connection(&extensions).1.is_none());
    }
}
