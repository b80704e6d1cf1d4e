//! Calls for a saga's owner, relayed through a journal several coordinators
//! share ([`Journal::relay`](super::Journal::relay)).
//!
//! In a cluster, only the node that owns a saga may write its events, so a
//! cancel or a retry that reaches another node must be carried out by the
//! owner. The call travels through the journal rather than from node to
//! node: the database is already the one place every node reaches, an owner
//! that dies hands its sagas (and so the calls waiting for them) to whoever
//! takes them over, and the caller's principal is carried as the asking node
//! authenticated it, with no node-to-node credentials to trust.
//!
//! The life of a call:
//!
//! ```text
//!  asking node                journal                     owning node
//!  send(saga, call) ───────▶  waiting row
//!                             taken by the saga's owner ◀── take()   (a poll)
//!                                                          carries it out
//!  answer(id) (a poll) ◀────  answered row           ◀──── reply(id, answer)
//! ```
//!
//! - **At most once.** A call is taken by one node, once: the saga's owner
//!   at the time of the take. A taken call is never handed to another node,
//!   since the taker may have acted on it before it died.
//! - **Never a wrong answer.** An owner that cannot serve the call now (it
//!   is adopting the saga, or the saga moved on) puts it back untaken
//!   ([`Relay::put_back`]), for itself or the next owner. A caller that
//!   stops waiting withdraws its call: a call not yet taken is removed, so
//!   "nothing changed" is true; a taken one is left to finish, and the
//!   caller is told the outcome is unknown.
//! - Rows are removed with their saga, and swept some time after the
//!   longest wait ([`Relay::patience`]).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::JournalError;
use crate::saga::{Principal, SagaId};

/// One relayed call's id, drawn by the asking node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CallId(pub Uuid);

impl std::fmt::Display for CallId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What the owner is asked to do with a saga, and for whom.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum OwnerCall {
    /// `CancelSaga`.
    Cancel { reason: String, by: Principal },
    /// `RetrySaga`.
    Retry {
        refresh_endpoints: bool,
        by: Principal,
    },
}

/// The owner's answer to a relayed call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CallAnswer {
    /// Done, and durable: the asking node reads the saga from the journal.
    Done,
    /// Refused, changing nothing (or, for [`Refusal::Unavailable`], with
    /// an outcome the message describes).
    Refused { refusal: Refusal, message: String },
}

/// Why an owner refused a relayed call: the engine's error class, which
/// the asking node answers its caller with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    NotFound,
    InvalidArgument,
    FailedPrecondition,
    Unavailable,
}

/// A call this node took, to carry out for the saga it owns.
#[derive(Clone, Debug, PartialEq)]
pub struct TakenCall {
    pub id: CallId,
    pub saga: SagaId,
    pub call: OwnerCall,
}

/// Where a relayed call is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallState {
    /// No owner took it yet (after [`Relay::withdraw`]: it was, and is
    /// removed, so nothing was done).
    Waiting,
    /// An owner took it and has not answered: it may take effect.
    Taken,
    /// Answered.
    Answered(CallAnswer),
    /// Gone with its saga (retention removed it).
    Gone,
}

/// Calls for a saga's owner, as a journal several nodes share keeps them.
#[async_trait]
pub trait Relay: Send + Sync + 'static {
    /// Leaves `call` for the owner of saga `id`; `None` when no saga has
    /// that id (any more).
    async fn send(&self, id: SagaId, call: &OwnerCall) -> Result<Option<CallId>, JournalError>;

    /// Where call `id` is now.
    async fn state(&self, id: CallId) -> Result<CallState, JournalError>;

    /// Ends the wait for call `id`: removes it if no owner took it yet
    /// (and says [`CallState::Waiting`]), else says where it is.
    async fn withdraw(&self, id: CallId) -> Result<CallState, JournalError>;

    /// Takes the waiting calls for the sagas this node owns now; none while
    /// it is fenced.
    async fn take(&self) -> Result<Vec<TakenCall>, JournalError>;

    /// Records the answer to a call this node took.
    async fn reply(&self, id: CallId, answer: &CallAnswer) -> Result<(), JournalError>;

    /// Puts back a call this node took but cannot serve now, for the
    /// saga's owner to take again (this node later, or the next owner).
    async fn put_back(&self, id: CallId) -> Result<(), JournalError>;

    /// How long a caller waits for an answer before it withdraws: long
    /// enough for a dead owner's sagas to be taken over.
    fn patience(&self) -> std::time::Duration;
}
