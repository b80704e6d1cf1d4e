//! Reaching a running coordinator: the `--addr` flag every client verb shares,
//! and one eager connection, so "nothing listens there" is told apart from
//! "the server said no".

use std::time::Duration;

use sagad::proto::v1::coordinator_client::CoordinatorClient;
use tonic::transport::{Channel, Endpoint};

use crate::cli::error::CliError;

/// The address a client verb uses when neither `--addr` nor `SAGAD_ADDR` is set
/// (where `sagad serve` listens by default).
pub const DEFAULT_ADDR: &str = "http://127.0.0.1:50051";

/// How long to try to open the connection before calling the server unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The client's view of the server.
pub type Client = CoordinatorClient<Channel>;

/// Where the coordinator is.
#[derive(clap::Args, Clone, Debug)]
pub struct AddrArgs {
    /// Address of the coordinator (`http://host:port`; `host:port` and `:port` work too).
    #[arg(long, env = "SAGAD_ADDR", default_value = DEFAULT_ADDR)]
    pub addr: String,
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
    Ok(CoordinatorClient::new(channel).max_decoding_message_size(usize::MAX))
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
}
