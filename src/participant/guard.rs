//! Endpoints no participant may have: the coordinator's own address. A step
//! that calls the coordinator could cancel its own saga or act with the
//! coordinator's rights; `Endpoint::parse` already refuses the Coordinator
//! service on any host, this refuses any method on the coordinator's own
//! listener.
//!
//! An endpoint is the coordinator's own when its port is the listener's and
//! its host is the listener's IP, a loopback address, an unspecified one
//! (`0.0.0.0` connects to the local host), or `localhost`. Host names other
//! than `localhost` are not resolved here (a registration does no DNS); other
//! addresses of this host, when it listens on all of them, are not known
//! either: say which hosts participants may be on with an allow-list.

use std::net::{IpAddr, SocketAddr};

use crate::saga::Endpoint;

/// Why `endpoint` is the coordinator's own listener `own`, if it is.
pub fn own_address(endpoint: &Endpoint, own: SocketAddr) -> Option<String> {
    let (host, port) = endpoint.host_port();
    if port != own.port() {
        return None;
    }
    let local = match host.parse::<IpAddr>() {
        Ok(ip) => ip == own.ip() || ip.is_loopback() || ip.is_unspecified(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    };
    local.then(|| {
        format!(
            "{} is this coordinator's own address ({own}): a step must not call the coordinator",
            endpoint.origin()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(url: &str) -> Endpoint {
        Endpoint::parse("forward_endpoint", url).unwrap()
    }

    #[test]
    fn the_listener_itself_is_refused_under_any_local_name() {
        let own: SocketAddr = "127.0.0.1:50051".parse().unwrap();
        for url in [
            "http://127.0.0.1:50051/a.B/C",
            "http://localhost:50051/a.B/C",
            "http://LOCALHOST:50051/a.B/C",
            "http://[::1]:50051/a.B/C",
            "http://0.0.0.0:50051/a.B/C",
            "http://127.0.0.2:50051/a.B/C",
        ] {
            assert!(own_address(&endpoint(url), own).is_some(), "{url}");
        }
        for url in [
            "http://127.0.0.1:50052/a.B/C",
            "http://10.0.0.7:50051/a.B/C",
            "http://payments:50051/a.B/C",
            "http://127.0.0.1/a.B/C",
        ] {
            assert!(own_address(&endpoint(url), own).is_none(), "{url}");
        }
        let all: SocketAddr = "0.0.0.0:7000".parse().unwrap();
        assert!(own_address(&endpoint("http://127.0.0.1:7000/a.B/C"), all).is_some());
        let public: SocketAddr = "10.0.0.7:7000".parse().unwrap();
        assert!(own_address(&endpoint("http://10.0.0.7:7000/a.B/C"), public).is_some());
    }
}
