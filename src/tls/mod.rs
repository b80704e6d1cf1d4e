//! TLS for everything sagad listens on and everything it calls: rustls with
//! the ring provider (the one tonic's `tls-ring` feature pins), certificates
//! read from PEM files and re-read while serving, so rotation needs no restart.
//!
//! ```text
//!   files (PEM) ──pem.rs──▶ rustls configs ──reload.rs──▶ the current one
//!                              │                             │
//!            server.rs: a listener's ServerConfig      client.rs: a ClientConfig
//!            (its certificate, mTLS by a client CA)    per https:// origin
//!                              │                             │
//!            incoming.rs: TCP accept → handshake      participant/connections.rs,
//!            → the gRPC API, /metrics (the web UI      the webhook
//!            listener, when it lands, the same way)
//!
//!            database.rs: the PostgreSQL journal's ClientConfig, checking the
//!            server as its sslmode asks (read once: connections live long)
//! ```
//!
//! What it guarantees:
//! - A bad certificate, key or CA file at start is a [`TlsError`] naming the
//!   file and the setting that named it; the server does not start.
//! - Every listener takes the configuration current at each *new* handshake:
//!   after a reload (SIGHUP, or the timer seeing a file's modification time
//!   change: `crate::reload`) new connections see the new certificate, open
//!   connections keep theirs. A reload that fails keeps the old configuration
//!   and says which file was wrong.
//! - With a client CA, a listener refuses at the handshake every client
//!   without a certificate that chains to it (`WebPkiClientVerifier`: expiry
//!   and key usage checked).
//! - A connection to an `https://` participant verifies the participant's
//!   certificate against the configured CA bundle, or the system's roots when
//!   none is configured (`rustls-native-certs`: the roots the operating
//!   system trusts and updates, including a company CA installed there; read
//!   once, at the first connection that needs them).
//!
//! A listener's settings are one [`ListenerTls`], so a new listener (the web
//! UI) needs one more field in [`TlsConfig`] and one [`TlsIncoming`], nothing
//! else. On the gRPC listener each request carries the client's certificate
//! chain (tonic's `TlsConnectInfo` request extension): where an mTLS identity
//! is to be mapped to a role, it is read from there.

use std::{path::PathBuf, sync::Arc};

use tokio_rustls::rustls::crypto::CryptoProvider;

mod client;
mod database;
mod incoming;
mod pem;
mod reload;
mod server;

pub use client::{ClientTls, grpc_client_config, origin_key};
pub use database::{ServerCheck, database_client_config};
pub use incoming::TlsIncoming;
pub use server::{Protocol, ServerTls};

/// A PEM file and the setting that named it, so that every error can say both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PemFile {
    /// Read whole at start and at every reload.
    pub path: PathBuf,
    /// How the operator named it: `--tls-cert`, or a config file's key.
    pub setting: String,
}

impl PemFile {
    pub fn new(path: impl Into<PathBuf>, setting: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            setting: setting.into(),
        }
    }
}

/// A certificate chain (leaf first) and its private key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPairFiles {
    /// The chain, leaf first.
    pub cert: PemFile,
    /// The leaf's private key: PKCS#8, PKCS#1 or SEC1.
    pub key: PemFile,
}

/// TLS on one listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerTls {
    /// What the listener presents.
    pub identity: KeyPairFiles,
    /// With a bundle here, clients must present a certificate issued by one
    /// of its CAs (mTLS); without, any client may connect.
    pub client_ca: Option<PemFile>,
}

/// How sagad reaches `https://` participants (and an `https://` webhook).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParticipantTls {
    /// The CAs participant certificates are verified against; `None`: the
    /// system's roots.
    pub ca: Option<PemFile>,
    /// The client certificate sagad presents, for participants that ask.
    pub identity: Option<KeyPairFiles>,
    /// Settings for one origin each, over the ones above.
    pub origins: Vec<OriginTls>,
}

/// TLS towards one participant origin (`https://host:port`), field by field
/// over [`ParticipantTls`]. Per origin, not per participant, because calls
/// share one connection per origin: two participants behind one origin could
/// not present two identities on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginTls {
    /// `https://host:port`, as [`origin_key`] normalises it.
    pub origin: String,
    /// The CAs this origin's certificate is verified against; `None`: the
    /// server-wide ones.
    pub ca: Option<PemFile>,
    /// The client certificate presented to it; `None`: the server-wide one.
    pub identity: Option<KeyPairFiles>,
}

/// Every TLS setting of a server. The default is no TLS anywhere (and
/// `https://` participants verified against the system's roots).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// TLS on the gRPC listener; `None`: plaintext.
    pub api: Option<ListenerTls>,
    /// TLS on the `/metrics` listener; `None`: plaintext.
    pub metrics: Option<ListenerTls>,
    pub participants: ParticipantTls,
}

impl TlsConfig {
    /// Reads every file named here. Blocking (it reads files); an error is a
    /// start-up error naming the file.
    pub fn load(&self) -> Result<LoadedTls, TlsError> {
        let listener = |what: &str, tls: &Option<ListenerTls>, protocol| {
            tls.as_ref()
                .map(|t| ServerTls::load(what, t, protocol))
                .transpose()
        };
        let api = listener("the gRPC listener", &self.api, Protocol::Grpc)?;
        let metrics = listener("the metrics listener", &self.metrics, Protocol::Http1)?;
        let participants = ClientTls::load(&self.participants)?;
        let mut parts: Vec<Arc<dyn crate::reload::Reload>> = Vec::new();
        for server in api.iter().chain(&metrics) {
            parts.push(server.reloadable());
        }
        parts.extend(participants.reloadables());
        Ok(LoadedTls {
            api,
            metrics,
            participants,
            reloadables: parts,
        })
    }
}

/// The TLS of one server, read from its files.
pub struct LoadedTls {
    /// The gRPC listener's, when it has TLS.
    pub api: Option<ServerTls>,
    /// The metrics listener's, when it has TLS.
    pub metrics: Option<ServerTls>,
    /// How participant connections (and the webhook) are made.
    pub participants: ClientTls,
    /// Re-reads all of the above: the server registers them with its
    /// `crate::reload::ReloadHooks`.
    pub reloadables: Vec<Arc<dyn crate::reload::Reload>>,
}

/// Why a TLS file or setting cannot be used. Every variant names the file and
/// the setting that named it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {} ({setting}): {source}", path.display())]
    Read {
        path: PathBuf,
        setting: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{} ({setting}) holds no PEM {what}", path.display())]
    Missing {
        path: PathBuf,
        setting: String,
        what: &'static str,
    },
    #[error("{} ({setting}) is not valid PEM: {why}", path.display())]
    BadPem {
        path: PathBuf,
        setting: String,
        why: String,
    },
    #[error("{} ({setting}) cannot be used: {why}", path.display())]
    Unusable {
        path: PathBuf,
        setting: String,
        why: String,
    },
    /// No CA bundle is configured for an https:// origin and the system
    /// has no roots to verify it with.
    #[error(
        "no system root certificates to verify {origin} with ({why}); install the system's CA certificates, or name a CA bundle (--participant-ca; the CLI's --ca)"
    )]
    NoSystemRoots { origin: String, why: String },
    /// `sslmode=verify-ca`/`verify-full` without `sslrootcert`, and no
    /// system roots to verify the database server with.
    #[error(
        "no root certificates to verify the PostgreSQL journal at {target} with ({why}); name a CA bundle with sslrootcert=FILE in --journal, or install the system's CA certificates"
    )]
    NoDatabaseRoots { target: String, why: String },
}

impl TlsError {
    fn unusable(file: &PemFile, why: impl std::fmt::Display) -> Self {
        TlsError::Unusable {
            path: file.path.clone(),
            setting: file.setting.clone(),
            why: why.to_string(),
        }
    }
}

/// The crypto every configuration here is built with, named explicitly so no
/// process-wide default (which another crate could install) decides it.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::ring::default_provider())
}
