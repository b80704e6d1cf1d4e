//! The rustls `ClientConfig` the PostgreSQL journal connects with, checking
//! the server's certificate as far as its `sslmode` asks, as libpq does:
//!
//! | check                   | from `sslmode`                              | the server's certificate |
//! | ----------------------- | ------------------------------------------- | ------------------------ |
//! | [`ServerCheck::None`]   | `prefer`, `require` without `sslrootcert`   | not checked: encrypted against a passive listener only |
//! | [`ServerCheck::Chain`]  | `verify-ca`, or `prefer`/`require` with one | chains to a trusted CA, unexpired; any name |
//! | [`ServerCheck::Full`]   | `verify-full`                               | as `Chain`, and names the host connected to |
//!
//! The trusted CAs are `sslrootcert`'s, or else the system's roots. libpq's
//! default checks nothing because most servers (Debian's packaged one among
//! them) come with a self-signed certificate; a deployment that handles
//! money should say `verify-full`. Files are read once, at start: a journal
//! connection lives for the whole run, and a reconnection after a rotation
//! of the client certificate needs a restart.

use std::sync::Arc;

use tokio_rustls::rustls::{
    self, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature},
    pki_types::{CertificateDer, ServerName, UnixTime},
};

use super::{KeyPairFiles, PemFile, TlsError, client::load_system_roots, pem, provider};

/// How much of the server's certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerCheck {
    None,
    Chain,
    Full,
}

/// A client configuration for a PostgreSQL server: `check` against `ca` or
/// the system's roots, `identity` presented when the server asks for a
/// client certificate. `target` names the server in errors.
pub fn database_client_config(
    target: &str,
    check: ServerCheck,
    ca: Option<&PemFile>,
    identity: Option<&KeyPairFiles>,
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3");
    let verifier: Arc<dyn ServerCertVerifier> = match check {
        ServerCheck::None => Arc::new(AnyCertificate(provider())),
        ServerCheck::Chain | ServerCheck::Full => {
            let roots = match ca {
                Some(file) => pem::roots(file)?,
                None => roots_or_hint(target)?,
            };
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::NoDatabaseRoots {
                    target: target.to_string(),
                    why: e.to_string(),
                })?;
            match check {
                ServerCheck::Full => webpki,
                _ => Arc::new(AnyName(webpki)),
            }
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match identity {
        Some(KeyPairFiles { cert, key }) => builder
            .with_client_auth_cert(pem::certificates(cert)?, pem::private_key(key)?)
            .map_err(|e| {
                TlsError::unusable(
                    key,
                    format!("{e} (the certificate is {})", cert.path.display()),
                )
            }),
        None => Ok(builder.with_no_client_auth()),
    }
}

fn roots_or_hint(target: &str) -> Result<RootCertStore, TlsError> {
    load_system_roots().map_err(|why| TlsError::NoDatabaseRoots {
        target: target.to_string(),
        why,
    })
}

/// `verify-ca`: the chain is checked as for `verify-full`; a name that does
/// not match is the one thing let through.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require` without a CA: any certificate. The handshake's
/// signatures are still checked, so the session key is the certificate
/// holder's: whoever holds it is simply not asked who they are.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
