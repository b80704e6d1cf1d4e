//! Reaching a running coordinator: the `--addr` flag every client verb shares
//! (with `--ca`, `--cert` and `--key` for TLS, `--token` for a server with
//! authentication), and one eager connection, so "nothing listens there" is
//! told apart from "the server said no". With a token, every call carries
//! `authorization: Bearer <token>` (see `sagad::auth`).
//!
//! An `https://` address is always TLS: the server's certificate verified
//! against `--ca`, or the system's roots without it, and `--cert`/`--key`
//! presented when given (mTLS). The TLS flags with an `http://` address are
//! refused, never ignored: a user who gave a CA expects TLS, not plaintext.

use std::{path::PathBuf, sync::Arc, time::Duration};

use http::Uri;
use sagad::{
    proto::v1::coordinator_client::CoordinatorClient,
    tls::{KeyPairFiles, PemFile, grpc_client_config},
};
use tokio_rustls::rustls::ClientConfig;
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};

use crate::cli::{
    client_tls::{ProbeFailure, TlsConnect, probe},
    error::CliError,
};

/// The address a client verb uses when neither `--addr` nor `SAGAD_ADDR` is set
/// (where `sagad serve` listens by default).
pub const DEFAULT_ADDR: &str = "http://127.0.0.1:50051";

/// How long to try to open the connection before calling the server unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The client's view of the server.
pub type Client = CoordinatorClient<InterceptedService<Channel, Bearer>>;

/// Where the coordinator is.
#[derive(clap::Args, Clone, Debug)]
pub struct AddrArgs {
    /// Address of the coordinator (`http://host:port`; `host:port` and `:port` work too).
    #[arg(long, env = "SAGAD_ADDR", default_value = DEFAULT_ADDR)]
    pub addr: String,
    /// For an https:// --addr: verify the server against these CAs (PEM)
    /// instead of the system's roots.
    #[arg(long, env = "SAGAD_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// For an https:// --addr: present this client certificate (PEM), for a
    /// server that requires one (mTLS); needs --key.
    #[arg(long, env = "SAGAD_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long, env = "SAGAD_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Bearer token for a server with --auth-tokens (from `sagad auth token`).
    /// Prefer the environment variable: a flag shows in `ps`.
    #[arg(
        long,
        env = "SAGAD_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
}

/// Puts the token, if any, on every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The `authorization` value for `token`, refused when it cannot be a header.
fn bearer(token: Option<&str>) -> Result<Bearer, CliError> {
    token
        .map(|t| {
            format!("Bearer {}", t.trim()).parse().map_err(|_| {
                CliError::Usage(
                    "--token (SAGAD_TOKEN) holds characters a header cannot carry".into(),
                )
            })
        })
        .transpose()
        .map(Bearer)
}

/// `host:port` and `:port` are completed to an `http://` URL.
pub fn normalize_addr(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else if addr.starts_with(':') {
        format!("http://127.0.0.1{addr}")
    } else {
        format!("http://{addr}")
    }
}

/// Connects now (not at the first call), so an unreachable server is reported
/// as such, with the address and the hint to start one.
pub async fn connect(args: &AddrArgs) -> Result<Client, CliError> {
    let bearer = bearer(args.token.as_deref())?;
    let addr = normalize_addr(&args.addr);
    let channel = match tls_config(args, &addr)? {
        Some(config) => connect_tls(args, &addr, config).await?,
        None => {
            let channel = endpoint(args, &addr)?
                .connect()
                .await
                .map_err(|e| failed(&addr, &e))?;
            // Connected, but maybe to a TLS listener (the HTTP/2 handshake
            // is only sent, never awaited): ask once, so the mistake is
            // named instead of the first call's end.
            let host_port = addr.trim_start_matches("http://");
            let host_port = host_port.split('/').next().unwrap_or(host_port);
            if crate::cli::client_tls::answers_as_tls(host_port, CONNECT_TIMEOUT).await {
                return Err(CliError::NotPlaintext {
                    why: "it answered with a TLS alert".into(),
                });
            }
            channel
        }
    };
    // Replies (GetSaga with many attempts) may exceed tonic's 4 MiB default.
    Ok(CoordinatorClient::with_interceptor(channel, bearer).max_decoding_message_size(usize::MAX))
}

/// An endpoint for `url`, with the connection settings every verb uses.
fn endpoint(args: &AddrArgs, url: &str) -> Result<Endpoint, CliError> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| CliError::Usage(format!("--addr '{}' is not a URL: {e}", args.addr)))?;
    Ok(endpoint.connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true))
}

/// An `https://` address: the probe first (`client_tls.rs` says why), then
/// the connection, which tonic dials at the plaintext form of the address
/// through the TLS connector, naming the `https://` origin in every request.
async fn connect_tls(
    args: &AddrArgs,
    addr: &str,
    config: Arc<ClientConfig>,
) -> Result<Channel, CliError> {
    let uri: Uri = addr
        .parse()
        .map_err(|e| CliError::Usage(format!("--addr '{}' is not a URL: {e}", args.addr)))?;
    probe(config.clone(), &uri, CONNECT_TIMEOUT)
        .await
        .map_err(|failure| match failure {
            ProbeFailure::Tls(why) => CliError::Handshake {
                addr: Some(addr.to_string()),
                why,
            },
            ProbeFailure::Unreachable(why) => CliError::Unreachable {
                addr: addr.to_string(),
                why,
            },
        })?;
    let host = uri.host().unwrap_or_default();
    let port = uri.port_u16().unwrap_or(443);
    endpoint(args, &format!("http://{host}:{port}"))?
        .origin(uri)
        .connect_with_connector(TlsConnect { config })
        .await
        .map_err(|e| failed(addr, &e))
}

/// A failed connection: a TLS failure, or nothing answering.
fn failed(addr: &str, error: &tonic::transport::Error) -> CliError {
    match crate::cli::error::tls_failure(error) {
        Some(why) => CliError::Handshake {
            addr: Some(addr.to_string()),
            why,
        },
        None => CliError::Unreachable {
            addr: addr.to_string(),
            why: root_cause(error),
        },
    }
}

/// The TLS configuration an `https://` address is reached with; `None` for
/// `http://` (where `--ca`, `--cert` and `--key` are refused). A file that
/// cannot be used is a usage error naming it and its flag.
fn tls_config(args: &AddrArgs, addr: &str) -> Result<Option<Arc<ClientConfig>>, CliError> {
    let given = [
        ("--ca", &args.ca),
        ("--cert", &args.cert),
        ("--key", &args.key),
    ];
    if !addr.starts_with("https://") {
        if let Some((flag, _)) = given.iter().find(|(_, v)| v.is_some()) {
            return Err(CliError::Usage(format!(
                "{flag} is for TLS, but --addr {addr} is plaintext; use --addr https://HOST:PORT (or unset SAGAD_CA, SAGAD_CERT and SAGAD_KEY)"
            )));
        }
        return Ok(None);
    }
    let ca = args.ca.as_ref().map(|p| PemFile::new(p, "--ca"));
    let identity = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => Some(KeyPairFiles {
            cert: PemFile::new(cert, "--cert"),
            key: PemFile::new(key, "--key"),
        }),
        (None, None) => None,
        (Some(_), None) => return Err(CliError::Usage("--cert needs --key".into())),
        (None, Some(_)) => return Err(CliError::Usage("--key needs --cert".into())),
    };
    let config = grpc_client_config(addr, ca.as_ref(), identity.as_ref())
        .map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(Some(Arc::new(config)))
}

/// The innermost error message ("Connection refused (os error 111)"): the outer
/// ones ("transport error") say nothing an operator can act on.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_flags_with_a_plaintext_address_are_refused() {
        let args = AddrArgs {
            addr: ":7".into(),
            ca: Some("ca.pem".into()),
            cert: None,
            key: None,
            token: None,
        };
        let Err(CliError::Usage(why)) = tls_config(&args, &normalize_addr(&args.addr)) else {
            panic!("--ca with http:// must be refused");
        };
        assert!(why.contains("--ca is for TLS"), "{why}");
        let half = AddrArgs {
            addr: "https://h:7".into(),
            ca: None,
            cert: Some("c.pem".into()),
            key: None,
            token: None,
        };
        assert!(matches!(
            tls_config(&half, &half.addr),
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn short_addresses_become_urls() {
        assert_eq!(normalize_addr(":7"), "http://127.0.0.1:7");
        assert_eq!(normalize_addr("h:7"), "http://h:7");
        assert_eq!(normalize_addr("https://h:7"), "https://h:7");
    }

    #[test]
    fn a_token_goes_on_every_call_and_a_bad_one_is_refused() {
        let mut with = bearer(Some("sagad_abc\n")).unwrap();
        let sent = with.call(tonic::Request::new(())).unwrap();
        assert_eq!(
            sent.metadata().get("authorization").unwrap(),
            "Bearer sagad_abc"
        );
        let mut without = bearer(None).unwrap();
        assert!(
            without
                .call(tonic::Request::new(()))
                .unwrap()
                .metadata()
                .is_empty()
        );
        assert!(bearer(Some("bad\u{7f}token")).is_err());
    }
}
