//! Calling participants: the one seam between the engine and the services it
//! drives.
//!
//! The engine only sees [`Participants::call`], which never fails: every answer,
//! error status, timeout or refused connection is classified into a
//! [`CallOutcome`] per the answer table of docs/participant.md (`classify.rs`).
//! Tests inject faults by running real loopback participants, or by
//! implementing this trait.

use std::time::Duration;

use async_trait::async_trait;

use crate::saga::{Action, CallOutcome, Endpoint, SagaId};

pub mod classify;
mod connections;
#[cfg(test)]
mod fuzz;
pub mod grpc;
pub mod guard;

pub use grpc::GrpcParticipants;

/// Everything one call of one endpoint needs.
#[derive(Clone, Debug)]
pub struct CallRequest {
    pub endpoint: Endpoint,
    /// Sent as the call's gRPC deadline, and enforced locally too.
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

/// Calls participant endpoints.
#[async_trait]
pub trait Participants: Send + Sync + 'static {
    /// Makes one call and classifies its answer. Must return within about
    /// `request.timeout`, whatever the participant does.
    async fn call(&self, request: CallRequest) -> CallOutcome;
}
