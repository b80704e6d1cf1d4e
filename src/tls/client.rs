//! The rustls `ClientConfig`s sagad connects to `https://` participants with:
//! one per configured origin, one server-wide, and, when neither applies, the
//! system's roots with no client certificate.
//!
//! Which one an origin gets:
//!
//! ```text
//!   an origin entry ──▶ its ca / cert+key, each unset one from the server-wide
//!   else --participant-ca / --participant-cert+key, if either is set
//!   else the system roots, no client certificate (built at first need)
//! ```
//!
//! The system roots (`rustls-native-certs`) are read only when a
//! configuration needs them: a coordinator with only `http://` participants
//! never reads them, and one in a container without them starts all the same.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
};

use http::Uri;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use super::{
    KeyPairFiles, OriginTls, ParticipantTls, PemFile, TlsError, pem, provider, reload::Reloadable,
};
use crate::reload::Reload;

/// HTTP/2 only: participants are gRPC servers.
const ALPN_H2: &[&[u8]] = &[b"h2"];
/// None: the webhook's HTTP client (hyper-rustls) sets its own.
const ALPN_NONE: &[&[u8]] = &[];

/// The client side of TLS towards participants; cheap to clone.
#[derive(Clone, Default)]
pub struct ClientTls {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Built from the server-wide settings, when any is set.
    configured: Option<Arc<Reloadable<ClientConfig>>>,
    /// By [`origin_key`].
    origins: HashMap<String, Arc<Reloadable<ClientConfig>>>,
    /// The system roots and no client certificate; nothing to reload.
    system: OnceLock<Arc<ClientConfig>>,
    /// The server-wide roots, kept for [`ClientTls::webhook_config`].
    ca: Option<PemFile>,
}

impl ClientTls {
    /// Reads every file `tls` names; an error is a start-up error.
    pub fn load(tls: &ParticipantTls) -> Result<Self, TlsError> {
        let configured = if tls.ca.is_some() || tls.identity.is_some() {
            Some(reloadable(
                "https:// participants",
                tls.ca.clone(),
                tls.identity.clone(),
            )?)
        } else {
            None
        };
        let mut origins = HashMap::new();
        for OriginTls {
            origin,
            ca,
            identity,
        } in &tls.origins
        {
            let ca = ca.clone().or_else(|| tls.ca.clone());
            let identity = identity.clone().or_else(|| tls.identity.clone());
            let what = format!("participant origin {origin}");
            origins.insert(origin.clone(), reloadable(&what, ca, identity)?);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                configured,
                origins,
                system: OnceLock::new(),
                ca: tls.ca.clone(),
            }),
        })
    }

    /// The configuration for a new connection to `origin` (`https://host:port`,
    /// as [`origin_key`] writes it). The error says why there is none.
    pub fn config_for(&self, origin: &str) -> Result<Arc<ClientConfig>, TlsError> {
        if let Some(entry) = self.inner.origins.get(origin) {
            return Ok(entry.current());
        }
        if let Some(configured) = &self.inner.configured {
            return Ok(configured.current());
        }
        if let Some(system) = self.inner.system.get() {
            return Ok(system.clone());
        }
        // Two first connections may both build it; either result is the same.
        let built = Arc::new(build(origin, None, None, ALPN_H2)?);
        Ok(self.inner.system.get_or_init(|| built).clone())
    }

    /// The configuration the on-failed webhook posts to an `https://` URL
    /// with: the system's roots and `--participant-ca`'s CAs (the URL is the
    /// operator's, often a public service, so the system's roots stay
    /// trusted beside a private CA), no client certificate, HTTP/1.1. Read
    /// once, at start.
    pub fn webhook_config(&self, url: &str) -> Result<ClientConfig, TlsError> {
        let mut roots = system_roots(url);
        if let Some(ca) = &self.inner.ca {
            let mut both = roots.unwrap_or_else(|_| RootCertStore::empty());
            both.roots.extend(pem::roots(ca)?.roots);
            roots = Ok(both);
        }
        with_roots(roots?, None, ALPN_NONE)
    }

    /// A configuration that trusts no server: for a client that needs one
    /// but only ever speaks plaintext (the webhook to an `http://` URL).
    pub fn refusing_config() -> ClientConfig {
        with_roots(RootCertStore::empty(), None, ALPN_NONE)
            .expect("no files to read, so nothing can fail")
    }

    /// What a reload re-reads.
    pub(crate) fn reloadables(&self) -> Vec<Arc<dyn Reload>> {
        let configured = self.inner.configured.iter();
        let origins = self.inner.origins.values();
        configured
            .chain(origins)
            .map(|r| r.clone() as Arc<dyn Reload>)
            .collect()
    }
}

/// A client configuration for a gRPC server (ALPN `h2`): its certificate
/// verified against `ca`, or the system's roots without one; `identity`
/// presented when given. What the CLI reaches an `https://` coordinator with.
pub fn grpc_client_config(
    target: &str,
    ca: Option<&PemFile>,
    identity: Option<&KeyPairFiles>,
) -> Result<ClientConfig, TlsError> {
    build(target, ca, identity, ALPN_H2)
}

fn reloadable(
    what: &str,
    ca: Option<PemFile>,
    identity: Option<KeyPairFiles>,
) -> Result<Arc<Reloadable<ClientConfig>>, TlsError> {
    let mut files: Vec<_> = ca.iter().map(|f| f.path.clone()).collect();
    if let Some(id) = &identity {
        files.extend([id.cert.path.clone(), id.key.path.clone()]);
    }
    let name = what.to_string();
    let build_it = move || build(&name, ca.as_ref(), identity.as_ref(), ALPN_H2);
    Ok(Arc::new(Reloadable::load(what, files, build_it)?))
}

/// A client configuration: roots from `ca` or the system, a client
/// certificate if `identity`. `target` names what it is for in errors.
fn build(
    target: &str,
    ca: Option<&PemFile>,
    identity: Option<&KeyPairFiles>,
    alpn: &[&[u8]],
) -> Result<ClientConfig, TlsError> {
    let roots = match ca {
        Some(file) => pem::roots(file)?,
        None => system_roots(target)?,
    };
    with_roots(roots, identity, alpn)
}

fn with_roots(
    roots: RootCertStore,
    identity: Option<&KeyPairFiles>,
    alpn: &[&[u8]],
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        // ring's provider has the suites of every default version.
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(KeyPairFiles { cert, key }) => builder
            .with_client_auth_cert(pem::certificates(cert)?, pem::private_key(key)?)
            .map_err(|e| {
                TlsError::unusable(
                    key,
                    format!("{e} (the certificate is {})", cert.path.display()),
                )
            })?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

fn system_roots(target: &str) -> Result<RootCertStore, TlsError> {
    load_system_roots().map_err(|why| TlsError::NoSystemRoots {
        origin: target.to_string(),
        why,
    })
}

/// The system's roots, or why there are none.
pub(super) fn load_system_roots() -> Result<RootCertStore, String> {
    let loaded = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _unparsable) = roots.add_parsable_certificates(loaded.certs);
    if added == 0 {
        return Err(match loaded.errors.first() {
            Some(e) => e.to_string(),
            None => "none found".into(),
        });
    }
    Ok(roots)
}

/// `https://host:port` for an `https://` URL or origin: the host in lower
/// case, the port explicit (443 by default). Participant connections are
/// keyed by it, and so are per-origin settings.
pub fn origin_key(text: &str) -> Result<String, String> {
    let uri: Uri = text
        .parse()
        .map_err(|_| format!("'{text}' is not a URL like https://host:port"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!("'{text}' must start with https://"));
    }
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(format!(
            "'{text}' must be an origin only, https://host:port, without a path"
        ));
    }
    let authority = uri
        .authority()
        .filter(|a| !a.host().is_empty() && !a.as_str().contains('@'))
        .ok_or_else(|| format!("'{text}' has no host"))?;
    let port = authority.port_u16().unwrap_or(443);
    Ok(format!(
        "https://{}:{port}",
        authority.host().to_ascii_lowercase()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_written_one_way() {
        assert_eq!(
            origin_key("https://Pay.Example:8443").unwrap(),
            "https://pay.example:8443"
        );
        assert_eq!(
            origin_key("https://pay.example").unwrap(),
            "https://pay.example:443"
        );
        assert_eq!(origin_key("https://[::1]:7/").unwrap(), "https://[::1]:7");
        assert!(origin_key("http://pay:1").unwrap_err().contains("https://"));
        assert!(
            origin_key("https://pay:1/a.B/C")
                .unwrap_err()
                .contains("path")
        );
        assert!(origin_key("pay:1").is_err());
    }
}
