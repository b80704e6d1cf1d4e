//! Reading PEM files: certificate chains, private keys, CA bundles. Each
//! error names the file and the setting it came from ([`TlsError`]).
//!
//! Files are read whole and parsed in memory: they are small, and reading
//! once means a file replaced half-way through is either the old or the new
//! one here, never a mix.

use tokio_rustls::rustls::{
    RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};

use super::{PemFile, TlsError};

fn read(file: &PemFile) -> Result<Vec<u8>, TlsError> {
    std::fs::read(&file.path).map_err(|source| TlsError::Read {
        path: file.path.clone(),
        setting: file.setting.clone(),
        source,
    })
}

fn bad_pem(file: &PemFile, error: impl std::fmt::Display) -> TlsError {
    TlsError::BadPem {
        path: file.path.clone(),
        setting: file.setting.clone(),
        why: error.to_string(),
    }
}

fn missing(file: &PemFile, what: &'static str) -> TlsError {
    TlsError::Missing {
        path: file.path.clone(),
        setting: file.setting.clone(),
        what,
    }
}

/// Every certificate in `file`, in order (a chain: the leaf first).
pub fn certificates(file: &PemFile) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(file)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_pem(file, e))?;
    if certs.is_empty() {
        return Err(missing(file, "certificate (BEGIN CERTIFICATE)"));
    }
    Ok(certs)
}

/// The first private key in `file`: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
pub fn private_key(file: &PemFile) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(file)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        tokio_rustls::rustls::pki_types::pem::Error::NoItemsFound => {
            missing(file, "private key (BEGIN PRIVATE KEY)")
        }
        other => bad_pem(file, other),
    })
}

/// The CAs in `file`, as trust anchors. A certificate that is not a usable
/// anchor is refused rather than skipped: a bundle that trusts less than
/// the operator wrote would fail later, far from the cause.
pub fn roots(file: &PemFile) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(file)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::unusable(file, format!("a CA certificate in it: {e}")))?;
    }
    Ok(roots)
}
