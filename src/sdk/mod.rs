//! The Rust participant SDK: write a step's two handlers, get a participant
//! that speaks both of sagad's protocols and carries the barrier every
//! participant needs.
//!
//! ```ignore
//! struct Payments;
//!
//! #[async_trait]
//! impl Handler<PgBarrier> for Payments {
//!     async fn forward(&self, req: &Request, tx: &mut Transaction<'_>) -> Result<Output, Reject> {
//!         tx.execute("INSERT INTO charges ...", &[&req.saga_id]).await?;
//!         Ok(Output::json(&serde_json::json!({"charge": "ch_1"})))
//!     }
//!     async fn compensate(&self, req: &Request, tx: &mut Transaction<'_>) -> Result<(), Reject> {
//!         tx.execute("UPDATE charges SET refunded = true ...", &[&req.saga_id]).await?;
//!         Ok(())
//!     }
//! }
//!
//! let participant = Participant::new(PgBarrier::connect(url, 4)?, Payments);
//! tonic::transport::Server::builder().add_service(participant.grpc()) ...; // gRPC
//! axum::serve(listener, participant.router()) ...;                      // HTTP/JSON
//! ```
//!
//! ## The barrier
//!
//! A participant meets three traps (docs/participant.md, "What a participant
//! must do"): a repeated call, a compensation whose forward never arrived, and
//! a forward that arrives after its compensation. The SDK holds them for the
//! handler: every call goes through a [`Barrier`], a store that keeps one
//! record per (saga, step, action), **written in the same local transaction as
//! the handler's effect** (the handler writes through `tx`). So:
//!
//! - a repeat gets the first final answer back, and the handler does not run;
//! - a compensation whose forward never succeeded here records "nothing to
//!   undo" and answers OK, without running the compensate handler;
//! - a forward that arrives after its compensation records a rejection and
//!   does nothing;
//! - a call whose `x-sagad-epoch` is older than one already seen for its step
//!   is refused as a transient error (gRPC `UNAVAILABLE`, HTTP `503`) and does
//!   nothing: its caller was deposed, and cannot journal any answer anyway;
//! - a handler that answers [`Reject::Retry`] (or fails) rolls back its effect
//!   and leaves no record, so the next attempt runs afresh.
//!
//! Calls for one (saga, step) take turns ([`locks`]), so two duplicates never
//! both run the handler. The rules themselves are one pure function,
//! [`rules::judge`], shared by every store.
//!
//! ## Modules
//!
//! | module | what it is for |
//! | --- | --- |
//! | [`call`] | `Request`, `Output`, `Reject`, `Answer`: what a handler sees and says |
//! | [`rules`] | the barrier's rules, pure |
//! | [`locks`] | one lock per (saga, step) |
//! | [`sled`] | [`SledBarrier`]: the embedded store, for small services and tests |
//! | [`postgres`] | [`PgBarrier`]: the participant's own PostgreSQL transaction |
//! | [`none`] | [`NoBarrier`]: no record, for stateless no-ops (the benchmark) |
//! | [`grpc`] | the handlers as a tonic `sagad.v1.ParticipantService` |
//! | [`http`] | the handlers as an axum router speaking the HTTP contract |
//!
//! Invariants:
//! - A final answer is given only after it and its effect are committed
//!   (durably: PostgreSQL's commit, sled's flush).
//! - A handler never runs for a call the rules answer by themselves.

pub mod call;
#[cfg(test)]
pub mod conformance;
pub mod grpc;
pub mod http;
pub mod locks;
pub mod none;
pub mod postgres;
pub mod rules;
pub mod sled;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;

pub use call::{Action, Answer, Final, Output, Reject, Request, Verdict};
pub use none::{NoBarrier, NoTx};
pub use postgres::PgBarrier;
pub use sled::{SledBarrier, SledTx};

/// Why a barrier could not answer: the call is answered as transient, so
/// sagad tries again.
#[derive(Debug, thiserror::Error)]
pub enum BarrierError {
    #[error("the barrier's sled store: {0}")]
    Sled(#[from] ::sled::Error),
    #[error("the barrier's PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("no PostgreSQL connection for the barrier: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("the barrier's record for {key} cannot be read: {why}")]
    Corrupt { key: String, why: String },
    #[error("the barrier cannot be set up: {0}")]
    Setup(String),
    #[error("the effect kept conflicting with other calls' writes ({attempts} tries)")]
    Conflict { attempts: u32 },
}

/// What the participant's author writes: the step's two handlers, each given
/// the call and the barrier's transaction to write its effect through.
#[async_trait]
pub trait Handler<B: Barrier>: Send + Sync + 'static {
    /// Do the step's work. `Ok` and [`Reject::Rejected`] are final and
    /// recorded with the effect; [`Reject::Retry`] rolls the effect back.
    async fn forward(&self, request: &Request, tx: &mut B::Tx<'_>) -> Result<Output, Reject>;

    /// Undo the work of this step's forward call, which the barrier has seen
    /// succeed (find it by `saga_id` and `step`).
    async fn compensate(&self, request: &Request, tx: &mut B::Tx<'_>) -> Result<(), Reject>;
}

/// A store of barrier records. Implementations **must** commit a handler's
/// effect and its record in one local transaction (both or neither), apply
/// [`rules::judge`] to what they hold, and make a final answer durable before
/// returning it.
#[async_trait]
pub trait Barrier: Send + Sync + Sized + 'static {
    /// What a handler writes its effect through.
    type Tx<'a>: Send;

    /// Whether calls for one step must take turns ([`locks`]); a barrier
    /// that records nothing needs no turns.
    const SERIALIZES: bool = true;

    /// Answers one call: by the rules alone, or by running `handler`.
    async fn call<H: Handler<Self>>(
        &self,
        handler: &H,
        request: &Request,
    ) -> Result<Answer, BarrierError>;
}

/// Runs the handler for `request.action`: its final answer, or the reason
/// and hint of a retry.
pub(crate) async fn run_handler<B: Barrier, H: Handler<B>>(
    handler: &H,
    request: &Request,
    tx: &mut B::Tx<'_>,
) -> Result<Final, (String, Option<Duration>)> {
    let result = match request.action {
        Action::Forward => handler.forward(request, tx).await.map(|o| o.0),
        Action::Compensate => handler.compensate(request, tx).await.map(|()| Vec::new()),
    };
    match result {
        Ok(output) => Ok(Final::succeeded(output)),
        Err(Reject::Rejected(reason)) => Ok(Final::rejected(reason)),
        Err(Reject::Retry { reason, after }) => Err((reason, after)),
    }
}

/// A participant: one handler behind one barrier, served by [`grpc`] and
/// [`http`] alike. Cheap to clone.
pub struct Participant<B: Barrier, H: Handler<B>> {
    inner: Arc<Inner<B, H>>,
}

struct Inner<B, H> {
    barrier: B,
    handler: H,
    /// Turns per (saga, step), when the barrier needs them.
    locks: locks::KeyLocks,
}

impl<B: Barrier, H: Handler<B>> Clone for Participant<B, H> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<B: Barrier, H: Handler<B>> Participant<B, H> {
    /// `handler` behind `barrier`.
    pub fn new(barrier: B, handler: H) -> Self {
        Self {
            inner: Arc::new(Inner {
                barrier,
                handler,
                locks: locks::KeyLocks::default(),
            }),
        }
    }

    /// The barrier (to read the store beside the participant).
    pub fn barrier(&self) -> &B {
        &self.inner.barrier
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.inner.handler
    }

    /// Answers one call, whichever protocol brought it.
    pub async fn call(&self, request: &Request) -> Answer {
        let _turn = if B::SERIALIZES {
            // The key holds both ids whole: a separator cannot make two
            // steps share a turn (saga ids contain no NUL).
            Some(
                self.inner
                    .locks
                    .lock(format!("{}\0{}", request.saga_id, request.step))
                    .await,
            )
        } else {
            None
        };
        match self.inner.barrier.call(&self.inner.handler, request).await {
            Ok(answer) => answer,
            Err(e) => Answer::Retry {
                reason: e.to_string(),
                after: None,
            },
        }
    }
}
