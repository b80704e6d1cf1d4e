//! Calling participants: the one seam between the engine and the services it
//! drives.
//!
//! The engine only sees [`Participants::call`], which never fails: every answer,
//! error status, timeout or refused connection is classified into a
//! [`CallOutcome`] per the answer tables of docs/participant.md. Tests inject
//! faults by running real loopback participants, or by implementing this
//! trait.
//!
//! ## Two protocols behind one trait
//!
//! An endpoint says what it speaks ([`crate::saga::Protocol`], chosen at
//! registration). [`Callers`] (`route.rs`) is what the server gives the
//! engine: it hands each call to the caller of its endpoint's protocol.
//!
//! ```text
//!   engine ──► Callers ──┬─ grpc   ─► GrpcParticipants  (grpc.rs, classify.rs,
//!                        │                               connections.rs: one
//!                        │                               HTTP/2 connection per origin)
//!                        └─ http,  ─► HttpParticipants  (http/: JSON bodies,
//!                           h2c                          the HTTP answer table,
//!                                                        pooled per origin)
//! ```
//!
//! Both share what must not differ between them: the allow-list and the
//! coordinator's own address (`guard.rs`) are checked for every connection
//! either makes; a failure is `NotDelivered` only when the request certainly
//! never left; the step timeout is sent to the participant and enforced here.
//!
//! Before a call is handed to its caller, it waits for the participant's
//! limits, if it has any (`limits.rs`: at most so many in flight, so many a
//! second, first come first served); the step's timeout starts once it is
//! sent.
//!
//! The modules: `classify.rs` (the gRPC answer table), `connections.rs` (the
//! gRPC connections), `grpc.rs`, `guard.rs`, `http/` (its own essay),
//! `limits.rs`, `route.rs`.

use std::time::Duration;

use async_trait::async_trait;

use crate::saga::{Action, CallOutcome, Endpoint, SagaId};

pub mod classify;
mod connections;
#[cfg(test)]
mod fuzz;
pub mod grpc;
pub mod guard;
pub mod http;
pub mod limits;
mod route;

pub use grpc::GrpcParticipants;
pub use http::HttpParticipants;
pub use route::Callers;

/// Everything one call of one endpoint needs.
#[derive(Clone, Debug)]
pub struct CallRequest {
    pub endpoint: Endpoint,
    /// The registered participant's name: what a configuration error is
    /// reported under (`http/misconfigured.rs`).
    pub participant: String,
    /// Sent as the call's gRPC deadline (or HTTP's `x-sagad-timeout-ms`),
    /// and enforced locally too.
    pub timeout: Duration,
    pub saga_id: SagaId,
    pub definition: String,
    pub step: String,
    pub action: Action,
    pub attempt: u32,
    /// Stable for (saga, step, action): see `saga::idempotency_key`.
    pub idempotency_key: String,
    pub payload: Vec<u8>,
    /// Outputs of the steps that succeeded so far, by step name.
    pub outputs: Vec<(String, Vec<u8>)>,
    /// Sent as the W3C `traceparent` metadata: the saga's trace, this call's span.
    pub traceparent: String,
    /// Sent as the W3C `tracestate` metadata, if the saga's caller gave one.
    pub tracestate: Option<String>,
    /// In cluster mode, the calling node's epoch (its fencing token), sent as
    /// `x-sagad-epoch`: a participant that saw a higher one for this
    /// idempotency key may refuse a deposed owner's late call.
    pub epoch: Option<u64>,
}

/// How many answers of one participant said its registration is wrong, with
/// one status (`sagad_participant_config_errors_total`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrorCount {
    pub participant: String,
    pub status: u16,
    pub count: u64,
}

/// Calls participant endpoints.
#[async_trait]
pub trait Participants: Send + Sync + 'static {
    /// Makes one call and classifies its answer. Must return within about
    /// `request.timeout`, whatever the participant does.
    async fn call(&self, request: CallRequest) -> CallOutcome;

    /// The answers so far that said a participant's registration is wrong,
    /// by participant and status; the metrics copy them in at each scrape.
    /// Callers that cannot tell (gRPC, test doubles) have none.
    fn config_errors(&self) -> Vec<ConfigErrorCount> {
        Vec::new()
    }
}
