//! A listener's rustls `ServerConfig`: its certificate and key, and, with a
//! client CA, the verifier that refuses clients without a certificate it
//! issued (mTLS). Reloadable (`reload.rs`).

use std::sync::Arc;

use tokio_rustls::rustls::{ServerConfig, server::WebPkiClientVerifier};

use super::{ListenerTls, TlsError, pem, provider, reload::Reloadable};

/// What a listener speaks, which is what its TLS handshake offers (ALPN).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// gRPC: HTTP/2 only (`h2`), as gRPC clients require of a TLS server.
    Grpc,
    /// Plain HTTP/1.1 (`/metrics`, served by axum with HTTP/1 only).
    Http1,
}

impl Protocol {
    fn alpn(self) -> Vec<Vec<u8>> {
        match self {
            Protocol::Grpc => vec![b"h2".to_vec()],
            Protocol::Http1 => vec![b"http/1.1".to_vec()],
        }
    }
}

/// The current TLS configuration of one listener; cheap to clone.
#[derive(Clone)]
pub struct ServerTls(Arc<Reloadable<ServerConfig>>);

impl ServerTls {
    /// Reads `tls`'s files; `what` names the listener in reload logs.
    pub fn load(what: &str, tls: &ListenerTls, protocol: Protocol) -> Result<Self, TlsError> {
        let mut files = vec![
            tls.identity.cert.path.clone(),
            tls.identity.key.path.clone(),
        ];
        files.extend(tls.client_ca.iter().map(|ca| ca.path.clone()));
        let settings = tls.clone();
        let reloadable = Reloadable::load(what, files, move || build(&settings, protocol))?;
        Ok(Self(Arc::new(reloadable)))
    }

    /// The configuration for the next handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.0.current()
    }

    pub(crate) fn reloadable(&self) -> Arc<Reloadable<ServerConfig>> {
        self.0.clone()
    }
}

fn build(tls: &ListenerTls, protocol: Protocol) -> Result<ServerConfig, TlsError> {
    let cert = &tls.identity.cert;
    let key_file = &tls.identity.key;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::unusable(cert, e))?;
    let builder = match &tls.client_ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(pem::roots(ca)?), provider())
                    .build()
                    .map_err(|e| TlsError::unusable(ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let chain = pem::certificates(cert)?;
    let key = pem::private_key(key_file)?;
    // rustls checks here that the key is one it can use and that it belongs
    // to the leaf certificate.
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        TlsError::unusable(
            key_file,
            format!("{e} (the certificate is {})", cert.path.display()),
        )
    })?;
    config.alpn_protocols = protocol.alpn();
    Ok(config)
}
