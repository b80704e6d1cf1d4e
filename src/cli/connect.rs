//! Reaching a running coordinator: the `--addr` and `--token` flags every
//! client verb shares, and one eager connection, so "nothing listens there"
//! is told apart from "the server said no". With a token, every call carries
//! `authorization: Bearer <token>` (see `sagad::auth`).

use std::time::Duration;

use sagad::proto::v1::coordinator_client::CoordinatorClient;
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};

use crate::cli::error::CliError;

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
    let endpoint = Endpoint::from_shared(addr.clone())
        .map_err(|e| CliError::Usage(format!("--addr '{}' is not a URL: {e}", args.addr)))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| CliError::Unreachable {
            addr: addr.clone(),
            why: root_cause(&e),
        })?;
    // Replies (GetSaga with many attempts) may exceed tonic's 4 MiB default.
    Ok(CoordinatorClient::with_interceptor(channel, bearer).max_decoding_message_size(usize::MAX))
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
