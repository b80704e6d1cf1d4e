//! The identities a client certificate claims, for mapping it to a role.
//!
//! The TLS handshake has already verified the certificate against the client
//! CA (`--tls-client-ca`) by the time a call arrives; what is left is to read
//! the names in it. In order: its DNS subject alternative names, its URI
//! SANs (`spiffe://…`), then its subject's common names. The tokens file's
//! `cert:` entries name one of them; the first that has an entry wins.
//!
//! Only the leaf (the first certificate the peer sent) is read: the chain
//! above it names CAs, not the caller.

use x509_parser::{extensions::GeneralName, prelude::FromDer};

/// Why a peer certificate's names could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the client certificate: {0}")]
pub struct CertificateError(String);

/// The identities in a DER-encoded certificate, in the order they are
/// matched (see the module docs).
pub fn identities(der: &[u8]) -> Result<Vec<String>, CertificateError> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
        .map_err(|e| CertificateError(e.to_string()))?;
    let mut dns = Vec::new();
    let mut uris = Vec::new();
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CertificateError(e.to_string()))?;
    for name in san.iter().flat_map(|ext| &ext.value.general_names) {
        match name {
            GeneralName::DNSName(n) => dns.push(n.to_string()),
            GeneralName::URI(u) => uris.push(u.to_string()),
            _ => {}
        }
    }
    let common_names = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string));
    Ok(dns.into_iter().chain(uris).chain(common_names).collect())
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    /// A self-signed client certificate made once with
    /// `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes
    /// -subj /CN=checkout-svc -addext subjectAltName=DNS:checkout.internal,URI:spiffe://shop/checkout`.
    const CLIENT_CERT: &str = include_str!("testdata/client-cert.pem");

    fn der(pem: &str) -> Vec<u8> {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap()
    }

    #[test]
    fn sans_come_before_the_common_name() {
        let ids = identities(&der(CLIENT_CERT)).unwrap();
        assert_eq!(
            ids,
            [
                "checkout.internal",
                "spiffe://shop/checkout",
                "checkout-svc"
            ]
        );
    }

    #[test]
    fn bytes_that_are_not_a_certificate_are_refused() {
        let err = identities(b"not a certificate").unwrap_err();
        assert!(err.to_string().contains("client certificate"), "{err}");
    }
}
