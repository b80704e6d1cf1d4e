//! Who asked: the principal journaled with every write a caller made (a
//! start, a cancel, a retry, a participant registration).
//!
//! The domain only records principals; it never decides what one may do
//! (that is `crate::auth`, at the edge). A principal is what the caller proved
//! (a token's name, a certificate's identity) or nothing (`Anonymous`, when
//! the server has no authentication configured), and the address its call
//! came from.
//!
//! Invariants:
//! - A principal is journaled as the caller was known *when it acted*:
//!   revoking or renaming a token later changes no record.
//! - Two principals are the same caller when their [`Identity`] is equal;
//!   the peer address is where a call came from, not who made it (a service
//!   reconnects from new ports).

use std::{fmt, net::SocketAddr};

use serde::{Deserialize, Serialize};

/// Who a caller proved to be.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Identity {
    /// No credentials were asked for: the server runs without authentication.
    Anonymous,
    /// A bearer token, by the name its entry in the tokens file gives it.
    Token(String),
    /// A verified client certificate, by the identity its entry matched
    /// (a DNS or URI subject alternative name, or the subject's common name).
    Certificate(String),
}

/// A caller: who, and from where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub identity: Identity,
    /// The address the call came from, when the transport knew it.
    pub peer: Option<SocketAddr>,
}

impl Identity {
    /// The kind of credential, as shown: `anonymous`, `token` or `cert`.
    pub fn kind(&self) -> &'static str {
        match self {
            Identity::Anonymous => "anonymous",
            Identity::Token(_) => "token",
            Identity::Certificate(_) => "cert",
        }
    }

    /// The token's name or the certificate's identity; empty for anonymous.
    pub fn name(&self) -> &str {
        match self {
            Identity::Anonymous => "",
            Identity::Token(name) | Identity::Certificate(name) => name,
        }
    }
}

/// `anonymous`, `token:NAME` or `cert:IDENTITY`.
impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Anonymous => f.write_str("anonymous"),
            other => write!(f, "{}:{}", other.kind(), other.name()),
        }
    }
}

impl Principal {
    /// A caller of a server without authentication, from `peer`.
    pub fn anonymous(peer: Option<SocketAddr>) -> Self {
        Self {
            identity: Identity::Anonymous,
            peer,
        }
    }
}

/// `token:ops from 127.0.0.1:50412` (without ` from …` when the peer is unknown).
impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.peer {
            Some(peer) => write!(f, "{} from {peer}", self.identity),
            None => write!(f, "{}", self.identity),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_show_kind_name_and_peer() {
        let peer: SocketAddr = "127.0.0.1:4100".parse().unwrap();
        let token = Principal {
            identity: Identity::Token("ops".into()),
            peer: Some(peer),
        };
        assert_eq!(token.to_string(), "token:ops from 127.0.0.1:4100");
        let cert = Principal {
            identity: Identity::Certificate("payments.internal".into()),
            peer: None,
        };
        assert_eq!(cert.to_string(), "cert:payments.internal");
        assert_eq!(
            Principal::anonymous(Some(peer)).to_string(),
            "anonymous from 127.0.0.1:4100"
        );
        assert_eq!(Identity::Anonymous.name(), "");
    }
}
