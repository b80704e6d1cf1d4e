//! The safe default: a coordinator that anyone on the network can reach must
//! know who is calling and must not send their tokens in clear text.
//!
//! A loopback `--listen` (127.0.0.0/8, `::1`) is always allowed: only
//! processes on the machine can connect. Any other address needs both
//! authentication (`--auth-tokens`) and TLS on the gRPC listener; without
//! them the start is refused, naming the flags, unless the operator says
//! `--insecure-no-auth`, which starts anyway and warns at every start.

use std::net::SocketAddr;

/// What the start would serve, as far as exposure goes.
#[derive(Clone, Copy, Debug)]
pub struct Exposure {
    pub listen: SocketAddr,
    /// A tokens file is configured.
    pub auth: bool,
    /// The gRPC listener speaks TLS.
    pub tls: bool,
    /// The operator accepts serving without them.
    pub insecure_no_auth: bool,
}

/// Why a start was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "refusing to serve on {listen} without {missing}: a non-loopback --listen needs --auth-tokens FILE and TLS (--tls-cert, --tls-key); listen on 127.0.0.1, or pass --insecure-no-auth to serve anyway"
)]
pub struct ExposureError {
    listen: SocketAddr,
    missing: String,
}

impl Exposure {
    /// `Ok(None)` when safe; `Ok(Some(warning))` when unsafe but allowed by
    /// `--insecure-no-auth`; the refusal otherwise.
    pub fn check(&self) -> Result<Option<String>, ExposureError> {
        let missing: Vec<&str> = [(!self.auth, "authentication"), (!self.tls, "TLS")]
            .into_iter()
            .filter_map(|(lacking, what)| lacking.then_some(what))
            .collect();
        if self.listen.ip().is_loopback() || missing.is_empty() {
            return Ok(None);
        }
        let missing = missing.join(" and ");
        if self.insecure_no_auth {
            return Ok(Some(format!(
                "--insecure-no-auth: serving on {} without {missing}: anyone who can reach it can {}",
                self.listen,
                if self.auth {
                    "read the bearer tokens on the wire"
                } else {
                    "start, cancel and read every saga and re-register participants"
                }
            )));
        }
        Err(ExposureError {
            listen: self.listen,
            missing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(listen: &str, auth: bool, tls: bool, insecure_no_auth: bool) -> Exposure {
        Exposure {
            listen: listen.parse().unwrap(),
            auth,
            tls,
            insecure_no_auth,
        }
    }

    #[test]
    fn loopback_is_always_served_and_other_addresses_need_auth_and_tls() {
        assert_eq!(at("127.0.0.1:1", false, false, false).check(), Ok(None));
        assert_eq!(at("127.9.9.9:1", false, false, false).check(), Ok(None));
        assert_eq!(at("[::1]:1", false, false, false).check(), Ok(None));
        assert_eq!(at("0.0.0.0:1", true, true, false).check(), Ok(None));

        let refused = at("0.0.0.0:50051", false, false, false)
            .check()
            .unwrap_err();
        let text = refused.to_string();
        assert!(
            text.contains("0.0.0.0:50051") && text.contains("authentication and TLS"),
            "{text}"
        );
        assert!(
            text.contains("--auth-tokens") && text.contains("--insecure-no-auth"),
            "{text}"
        );
        let no_tls = at("10.1.2.3:1", true, false, false).check().unwrap_err();
        assert!(no_tls.to_string().contains("without TLS:"), "{no_tls}");

        let warning = at("0.0.0.0:1", false, false, true)
            .check()
            .unwrap()
            .unwrap();
        assert!(
            warning.contains("--insecure-no-auth") && warning.contains("re-register"),
            "{warning}"
        );
        let warning = at("[::]:1", true, false, true).check().unwrap().unwrap();
        assert!(warning.contains("tokens on the wire"), "{warning}");
    }
}
