//! Who may call the Coordinator, and who did: authentication, roles, and the
//! principal every write journals.
//!
//! # The path of a call
//!
//! ```text
//!   request ──▶ Authorize (layer.rs) ──────────────────────▶ CoordinatorApi
//!               1. who?   bearer token, else client cert       reads the Caller:
//!                         (credentials.rs, certificate.rs)     journals its principal,
//!               2. may?   METHODS[method] vs the role          keeps a starter to
//!                         (role.rs)                            its own sagas
//!               3. Caller { principal, role } into the
//!                  request's extensions
//! ```
//!
//! One place decides: the [`layer::Authorize`] service wraps the Coordinator,
//! and the table of what each method needs is [`role::METHODS`]. Health and
//! reflection are not wrapped: a load balancer's probe and `grpcurl list`
//! need no credentials, and neither reveals a saga.
//!
//! # Without authentication
//!
//! With no tokens file (`--auth-tokens`) every caller is *anonymous* and may
//! do everything, as before authentication existed; its principal is
//! `anonymous` and its peer address. That is only safe where nobody else can
//! connect, so `sagad serve` then refuses a non-loopback `--listen` unless
//! told `--insecure-no-auth` (`exposure.rs`).
//!
//! # With a tokens file
//!
//! A call needs `authorization: Bearer <token>` whose SHA-256 is in the file
//! (`tokens.rs` says why one SHA-256 is enough), or, over mTLS, a client
//! certificate whose identity has a `cert:` entry. No credentials or unknown
//! ones: `UNAUTHENTICATED`. A role that does not allow the method:
//! `PERMISSION_DENIED`, naming the role needed. The file is read again on
//! SIGHUP and when it changes (`store.rs`, `crate::reload`): a revoked token
//! stops working without a restart.
//!
//! # A starter's own sagas
//!
//! A `starter` is a service that starts sagas. It may read the sagas it
//! started, by the identity that started them (the token's name or the
//! certificate's identity, not the peer address, which changes with every
//! connection): `GetSaga` and `WatchSaga` of another principal's saga are
//! `PERMISSION_DENIED` (needs `reader`), `ListSagas` lists only its own, and
//! a `StartSaga` whose idempotency key names another principal's saga is
//! `ALREADY_EXISTS` without showing it. Sagas journaled before principals
//! were (format 6) have no owner: only readers see them.
//!
//! Invariants:
//! - The Coordinator is never served without the layer (`crate::server`).
//! - No token is logged, journaled or echoed; principals are.
//!
//! Modules: `role.rs` (roles and the method table), `tokens.rs` (making and
//! hashing tokens), `credentials.rs` (the tokens file), `store.rs` (its
//! reloads), `certificate.rs` (a client certificate's identities),
//! `layer.rs` (the tower service), `exposure.rs` (the safe-default check).

use std::{net::SocketAddr, sync::Arc};

use http::HeaderMap;

use crate::saga::{Identity, Principal, SagaState};

pub mod certificate;
pub mod credentials;
pub mod exposure;
pub mod layer;
pub mod role;
pub mod store;
pub mod tokens;

pub use credentials::{Credentials, CredentialsError};
pub use layer::{Authorize, PeerCertificates};
pub use role::Role;
pub use store::TokensFile;

/// Why a call was refused before it reached the service.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credentials, or ones that prove nothing.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known, but its role does not allow the call.
    #[error("{method} needs role {needs}; {who} has role {role}")]
    Denied {
        method: String,
        needs: Role,
        who: String,
        role: Role,
    },
    /// A starter asked for a saga another principal started.
    #[error(
        "saga {saga} was started by another principal; reading it needs role reader ({who} has role starter)"
    )]
    NotItsSaga { saga: String, who: String },
    /// A method the access table does not name: closed to everyone.
    #[error("{0} is not in the access table: no role may call it")]
    UnknownMethod(String),
}

/// How a server checks callers.
pub enum Authenticator {
    /// No authentication: every caller is anonymous and may do everything.
    Open,
    /// Callers prove who they are with an entry of the tokens file.
    Tokens(Arc<TokensFile>),
}

/// The caller of one request, as the layer admitted it: put in the request's
/// extensions for the service.
#[derive(Clone, Debug, PartialEq)]
pub struct Caller {
    pub principal: Principal,
    /// The role its entry gives; `None` without authentication.
    pub role: Option<Role>,
}

impl Caller {
    /// A caller of a server without authentication.
    pub fn anonymous(peer: Option<SocketAddr>) -> Self {
        Self {
            principal: Principal::anonymous(peer),
            role: None,
        }
    }

    /// Whether it may read every saga; a starter reads only its own.
    pub fn reads_all_sagas(&self) -> bool {
        self.role
            .is_none_or(|r| r.grant(role::Access::ReadSagas) == role::Grant::All)
    }

    /// Whether this caller may read `saga`: refused for a starter's read of
    /// a saga it did not start.
    pub fn may_read(&self, saga: &SagaState) -> Result<(), AuthError> {
        if self.owns(saga) {
            Ok(())
        } else {
            Err(AuthError::NotItsSaga {
                saga: saga.id.to_string(),
                who: self.principal.identity.to_string(),
            })
        }
    }

    /// Whether it may read `saga`: every one, or the ones its identity started.
    pub fn owns(&self, saga: &SagaState) -> bool {
        self.reads_all_sagas()
            || saga
                .started_by
                .as_ref()
                .is_some_and(|by| by.identity == self.principal.identity)
    }
}

/// `authorization: Bearer <token>`.
const BEARER: &str = "Bearer ";

impl Authenticator {
    /// Who is calling: from the bearer token if one is sent (a bad one is
    /// refused, whatever certificate comes with it), else from the client
    /// certificate's identities. The role is checked by [`Self::admit`].
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        peer: Option<SocketAddr>,
        certificates: Option<&PeerCertificates>,
    ) -> Result<(Principal, Option<Role>), AuthError> {
        let tokens = match self {
            Authenticator::Open => return Ok((Principal::anonymous(peer), None)),
            Authenticator::Tokens(tokens) => tokens.current(),
        };
        let principal = |identity| Principal { identity, peer };
        if let Some(value) = headers.get(http::header::AUTHORIZATION) {
            // The scheme is case-insensitive (RFC 9110); the token is not.
            let token = value
                .to_str()
                .ok()
                .and_then(|v| {
                    let scheme = v.get(..BEARER.len())?;
                    scheme
                        .eq_ignore_ascii_case(BEARER)
                        .then(|| &v[BEARER.len()..])
                })
                .map(str::trim)
                .ok_or_else(|| {
                    AuthError::Unauthenticated(
                        "the authorization header is not `Bearer <token>`".into(),
                    )
                })?;
            let entry = tokens.by_token(token).ok_or_else(|| {
                AuthError::Unauthenticated(
                    "the bearer token is not in the server's tokens file (revoked, or mistyped)"
                        .into(),
                )
            })?;
            return Ok((
                principal(Identity::Token(entry.name.clone())),
                Some(entry.role),
            ));
        }
        if let Some(leaf) = certificates.and_then(|c| c.0.first()) {
            let identities = certificate::identities(leaf)
                .map_err(|e| AuthError::Unauthenticated(e.to_string()))?;
            let (entry, matched) = tokens.by_certificate(&identities).ok_or_else(|| {
                AuthError::Unauthenticated(format!(
                    "the client certificate ({}) has no cert: entry in the tokens file",
                    identities.join(", ")
                ))
            })?;
            return Ok((
                principal(Identity::Certificate(matched.to_string())),
                Some(entry.role),
            ));
        }
        Err(AuthError::Unauthenticated(
            "this server needs credentials: send `authorization: Bearer <token>` (sagad's --token or SAGAD_TOKEN)".into(),
        ))
    }

    /// Authenticates, then decides whether `method` (a bare name, `GetSaga`)
    /// is allowed: the caller to hand the service, or why not.
    pub fn admit(
        &self,
        method: &str,
        headers: &HeaderMap,
        peer: Option<SocketAddr>,
        certificates: Option<&PeerCertificates>,
    ) -> Result<Caller, AuthError> {
        let (principal, role) = self.authenticate(headers, peer, certificates)?;
        let Some(role) = role else {
            return Ok(Caller::anonymous(peer));
        };
        let access =
            role::access_of(method).ok_or_else(|| AuthError::UnknownMethod(method.into()))?;
        // A starter's reads are admitted here and kept to its own sagas by
        // the service, which knows whose a saga is (`Caller::may_read`).
        if let role::Grant::Denied { needs } = role.grant(access) {
            return Err(AuthError::Denied {
                method: method.into(),
                needs,
                who: principal.identity.to_string(),
                role,
            });
        }
        Ok(Caller {
            principal,
            role: Some(role),
        })
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;
    use crate::auth::tokens::TokenHash;

    fn authenticator(text: &str) -> Authenticator {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, text).unwrap();
        Authenticator::Tokens(Arc::new(TokensFile::open(&path).unwrap()))
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        headers
    }

    fn peer() -> Option<SocketAddr> {
        Some("127.0.0.1:4000".parse().unwrap())
    }

    fn client_cert() -> PeerCertificates {
        let pem = include_str!("testdata/client-cert.pem");
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap();
        PeerCertificates(vec![der])
    }

    #[test]
    fn without_a_tokens_file_everyone_is_anonymous_and_unrestricted() {
        let caller = Authenticator::Open
            .admit("RegisterParticipant", &HeaderMap::new(), peer(), None)
            .unwrap();
        assert_eq!(caller, Caller::anonymous(peer()));
        assert_eq!(
            caller.principal.to_string(),
            "anonymous from 127.0.0.1:4000"
        );
    }

    #[test]
    fn tokens_give_their_entry_and_its_role_decides() {
        let auth = authenticator(&format!(
            "ci starter {}\nops admin {}\n",
            TokenHash::of("t-ci"),
            TokenHash::of("t-ops")
        ));
        let ci = auth
            .admit("StartSaga", &bearer("t-ci"), peer(), None)
            .unwrap();
        assert_eq!(ci.principal.identity, Identity::Token("ci".into()));
        assert!(!ci.reads_all_sagas());
        let ops = auth
            .admit("GetSaga", &bearer("t-ops"), peer(), None)
            .unwrap();
        assert!(ops.reads_all_sagas());
        let denied = auth
            .admit("RegisterParticipant", &bearer("t-ci"), peer(), None)
            .unwrap_err();
        assert_eq!(
            denied.to_string(),
            "RegisterParticipant needs role admin; token:ci has role starter"
        );
        assert!(
            auth.admit("RegisterParticipant", &bearer("t-ops"), peer(), None)
                .is_ok()
        );
        assert!(matches!(
            auth.admit("Bogus", &bearer("t-ops"), peer(), None),
            Err(AuthError::UnknownMethod(_))
        ));
    }

    #[test]
    fn missing_malformed_and_unknown_credentials_are_unauthenticated() {
        let auth = authenticator(&format!("ops admin {}\n", TokenHash::of("t-ops")));
        let mut basic = HeaderMap::new();
        basic.insert(
            http::header::AUTHORIZATION,
            "Basic b3BzOng=".parse().unwrap(),
        );
        for headers in [HeaderMap::new(), bearer("t-wrong"), basic] {
            let err = auth.admit("GetSaga", &headers, peer(), None).unwrap_err();
            assert!(matches!(err, AuthError::Unauthenticated(_)), "{err}");
        }
        // A bad token is refused even with a certificate that has an entry.
        let auth = authenticator("svc reader cert:checkout.internal\n");
        let err = auth
            .admit("GetSaga", &bearer("t-wrong"), peer(), Some(&client_cert()))
            .unwrap_err();
        assert!(matches!(err, AuthError::Unauthenticated(_)), "{err}");
    }

    #[test]
    fn a_client_certificate_maps_to_its_entry_by_san_or_common_name() {
        let by_san = authenticator("svc starter cert:spiffe://shop/checkout\n");
        let caller = by_san
            .admit("StartSaga", &HeaderMap::new(), peer(), Some(&client_cert()))
            .unwrap();
        assert_eq!(
            caller.principal.identity,
            Identity::Certificate("spiffe://shop/checkout".into())
        );
        assert_eq!(caller.role, Some(Role::Starter));
        let by_cn = authenticator("svc reader cert:checkout-svc\n");
        let caller = by_cn
            .admit("GetSaga", &HeaderMap::new(), peer(), Some(&client_cert()))
            .unwrap();
        assert_eq!(
            caller.principal.to_string(),
            "cert:checkout-svc from 127.0.0.1:4000"
        );
        let unmapped = authenticator("svc reader cert:someone-else\n");
        let err = unmapped
            .admit("GetSaga", &HeaderMap::new(), peer(), Some(&client_cert()))
            .unwrap_err();
        assert!(err.to_string().contains("checkout.internal"), "{err}");
    }

    #[test]
    fn a_starter_owns_the_sagas_its_identity_started() {
        let mut saga =
            crate::saga::SagaState::start(&crate::testing::started("shop", None)).unwrap();
        let starter = |name: &str, port: u16| Caller {
            principal: Principal {
                identity: Identity::Token(name.into()),
                peer: Some(SocketAddr::from(([127, 0, 0, 1], port))),
            },
            role: Some(Role::Starter),
        };
        // No owner recorded (an older saga): only readers see it.
        assert!(starter("ci", 1).may_read(&saga).is_err());
        saga.started_by = Some(starter("ci", 1).principal);
        // Another connection of the same token is the same caller.
        assert!(starter("ci", 2).may_read(&saga).is_ok());
        let err = starter("other", 1).may_read(&saga).unwrap_err();
        assert!(err.to_string().contains("needs role reader"), "{err}");
        assert!(Caller::anonymous(None).may_read(&saga).is_ok());
    }
}
