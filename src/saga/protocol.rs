//! Which protocol an endpoint speaks: gRPC (the `StepRequest`/`StepResponse`
//! messages of `participant.proto`) or HTTP/JSON (docs/participant.md, "The
//! HTTP contract"), over HTTP/1.1 or h2c.
//!
//! The protocol is chosen at registration (`RegisterParticipantRequest.protocol`,
//! `sagad participants register --protocol`), not guessed from the URL: the
//! path `/shop.Payments/Charge` is a fine HTTP path too, so no URL form could
//! tell the two apart without changing what existing registrations mean.
//!
//! Invariants:
//! - [`Protocol::Grpc`] is the default, and the protocol of every endpoint
//!   journaled before protocols existed: those records read unchanged.
//! - The stored form of an endpoint (`definition::StoredEndpoint`) is its URL
//!   with the protocol's [`Protocol::tag`] in front; gRPC's tag is empty, so a
//!   gRPC endpoint is stored byte for byte as before, and no journal format
//!   changed. The tags end in `:` after a word that is not `http` or `https`,
//!   so no URL an endpoint may have starts with one.

use std::{fmt, str::FromStr};

/// How the coordinator calls an endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// A gRPC method (`http(s)://host:port/package.Service/Method`), HTTP/2.
    #[default]
    Grpc,
    /// An HTTP/JSON endpoint over HTTP/1.1: `POST` of a JSON body.
    Http,
    /// An HTTP/JSON endpoint over HTTP/2 without TLS, with prior knowledge
    /// (h2c): for servers that speak HTTP/2 only, or to multiplex many calls
    /// on one connection.
    H2c,
}

impl Protocol {
    /// Every protocol, as `--protocol` lists them.
    pub const ALL: [Protocol; 3] = [Protocol::Grpc, Protocol::Http, Protocol::H2c];

    /// The name the API, the CLI and the docs use.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::Http => "http",
            Protocol::H2c => "h2c",
        }
    }

    /// True for the HTTP/JSON protocols.
    pub fn is_json(self) -> bool {
        matches!(self, Protocol::Http | Protocol::H2c)
    }

    /// What the stored form of an endpoint puts in front of its URL.
    pub(super) fn tag(self) -> &'static str {
        match self {
            Protocol::Grpc => "",
            Protocol::Http => "json-h1:",
            Protocol::H2c => "json-h2c:",
        }
    }

    /// The protocol a stored URL was tagged with, and the URL without it.
    pub(super) fn untag(stored: &str) -> (Protocol, &str) {
        for protocol in [Protocol::Http, Protocol::H2c] {
            if let Some(url) = stored.strip_prefix(protocol.tag()) {
                return (protocol, url);
            }
        }
        (Protocol::Grpc, stored)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Protocol::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| {
                format!("unknown protocol '{text}': write grpc, http (HTTP/1.1 and JSON) or h2c (HTTP/2 without TLS, and JSON)")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_tags_are_told_apart() {
        for protocol in Protocol::ALL {
            assert_eq!(protocol.as_str().parse::<Protocol>(), Ok(protocol));
            let stored = format!("{}http://h:1/p", protocol.tag());
            assert_eq!(Protocol::untag(&stored), (protocol, "http://h:1/p"));
        }
        assert_eq!("HTTP".parse::<Protocol>(), Ok(Protocol::Http));
        let err = "rest".parse::<Protocol>().unwrap_err();
        assert!(
            err.contains("'rest'") && err.contains("grpc, http"),
            "{err}"
        );
        assert_eq!(Protocol::default(), Protocol::Grpc);
    }
}
