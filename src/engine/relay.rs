//! Cancel and Retry on any node of a cluster: a call for a saga another
//! node owns is carried out by the owner, through the journal
//! ([`crate::journal::relay`] says why through the journal, and what it
//! guarantees).
//!
//! Two halves, both here:
//! - **Asking** ([`Engine::relay_to_owner`]): the node the call reached
//!   leaves it in the journal and polls for the answer. An answer of "done"
//!   is durable, so the node reads the saga back from the journal and
//!   answers as the owner would have. A caller that goes away (its deadline,
//!   a dropped connection) withdraws the call.
//! - **Serving** ([`Engine::serve_relayed`]): every node polls for the calls
//!   left for the sagas it owns and carries each out as if it had reached
//!   it directly (`cancel_here`, `retry_here`, with the caller's principal
//!   as the asking node authenticated it). What it cannot serve now (the
//!   saga is still being adopted after a takeover, or moved on, or the
//!   journal refuses writes for a moment) goes back for a later poll or the
//!   next owner; what it refuses is answered, with the same message.
//!
//! A call that races a takeover is therefore served by whichever node owns
//! the saga when it is taken, or answered `UNAVAILABLE` when no owner took
//! it in time ("nothing was changed"), or when the owner that took it died
//! before answering ("it may have taken effect").

use std::{sync::Arc, time::Duration};

use super::Engine;
use crate::{
    Error, Result,
    error::JournalFault,
    journal::relay::{CallAnswer, CallId, CallState, OwnerCall, Refusal, Relay, TakenCall},
    saga::{SagaId, SagaState},
};

/// How often a node looks for calls left for its sagas, and how often a
/// waiting caller looks for its answer: the latency a relayed call adds
/// is about one of each.
const RELAY_POLL: Duration = Duration::from_millis(50);

/// Where a call for a saga was served.
pub(super) enum Here<T> {
    /// By this node: its answer.
    Answered(Result<T>),
    /// Not by this node: the saga is unfinished and this node does not run
    /// it (its owner must).
    Elsewhere,
}

/// Withdraws a call whose caller went away before it was answered (a
/// dropped future runs no more code of its own).
struct Withdraw {
    relay: Arc<dyn Relay>,
    id: Option<CallId>,
}

impl Withdraw {
    fn disarm(&mut self) {
        self.id = None;
    }
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        let Some(id) = self.id else { return };
        let relay = self.relay.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = relay.withdraw(id).await {
                    tracing::debug!(call = %id, error = %e, "could not withdraw a relayed call whose caller went away");
                }
            });
        }
    }
}

impl Engine {
    /// Whether saga `id` belongs to another node of the cluster (a FAILED
    /// saga, which no runner holds); `false` without a cluster.
    pub(super) async fn owned_by_another_node(&self, id: SagaId) -> Result<bool> {
        let Some(me) = self.journal().node() else {
            return Ok(false);
        };
        Ok(self.owner(id).await?.is_some_and(|owner| owner != me))
    }

    /// Has saga `id`'s owner carry out `call`, and answers as it did.
    pub(super) async fn relay_to_owner(&self, id: SagaId, call: OwnerCall) -> Result<SagaState> {
        let Some(relay) = self.journal().relay() else {
            // Only a journal with nodes has sagas that run elsewhere.
            return Err(Error::Unavailable(
                "the coordinator is shutting down".into(),
            ));
        };
        let Some(call_id) = relay.send(id, &call).await? else {
            return Err(saga_gone(id));
        };
        let mut guard = Withdraw {
            relay: relay.clone(),
            id: Some(call_id),
        };
        let patience = relay.patience();
        let deadline = tokio::time::Instant::now() + patience;
        while tokio::time::Instant::now() < deadline {
            tokio::select! {
                _ = tokio::time::sleep(RELAY_POLL) => {}
                _ = self.inner.shutdown.cancelled() => break,
            }
            match relay.state(call_id).await {
                Ok(CallState::Answered(answer)) => {
                    guard.disarm();
                    return self.answered(id, answer).await;
                }
                Ok(CallState::Gone) => {
                    guard.disarm();
                    return Err(saga_gone(id));
                }
                Ok(CallState::Waiting | CallState::Taken) => {}
                // The database is away for a moment; the deadline bounds it.
                Err(e) => {
                    tracing::debug!(saga = %id, error = %e, "could not read a relayed call's answer")
                }
            }
        }
        guard.disarm();
        let owner = self.where_it_runs(id).await;
        match relay.withdraw(call_id).await? {
            CallState::Waiting => Err(Error::Unavailable(format!(
                "saga {id} runs on {owner}, and no coordinator took the call within {}s (the owner may be down until its sagas are taken over); nothing was changed: try again",
                patience.as_secs()
            ))),
            CallState::Taken => Err(Error::Unavailable(format!(
                "saga {id} runs on {owner}, which took the call but did not answer within {}s; it may have taken effect: read the saga before you call again",
                patience.as_secs()
            ))),
            CallState::Answered(answer) => self.answered(id, answer).await,
            CallState::Gone => Err(saga_gone(id)),
        }
    }

    /// What the asking node answers its caller, given the owner's answer.
    async fn answered(&self, id: SagaId, answer: CallAnswer) -> Result<SagaState> {
        match answer {
            CallAnswer::Done => self.get(id).await,
            CallAnswer::Refused { refusal, message } => Err(match refusal {
                Refusal::NotFound => Error::NotFound(message),
                Refusal::InvalidArgument => Error::InvalidArgument(message),
                Refusal::FailedPrecondition => Error::FailedPrecondition(message),
                Refusal::Unavailable => Error::Unavailable(message),
            }),
        }
    }

    /// Carries out the calls other nodes leave for the sagas this node
    /// owns, until shutdown.
    pub(super) async fn serve_relayed(self, relay: Arc<dyn Relay>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(RELAY_POLL) => {}
                _ = self.inner.shutdown.cancelled() => return,
            }
            match relay.take().await {
                Ok(calls) => {
                    for call in calls {
                        let engine = self.clone();
                        let relay = relay.clone();
                        self.inner.tracker.spawn(engine.carry_out(relay, call));
                    }
                }
                Err(e) => tracing::debug!(error = %e, "could not look for relayed calls"),
            }
        }
    }

    async fn carry_out(self, relay: Arc<dyn Relay>, taken: TakenCall) {
        let TakenCall { id, saga, call } = taken;
        let served = match call {
            OwnerCall::Cancel { reason, by } => self.cancel_here(saga, &reason, &by).await,
            OwnerCall::Retry {
                refresh_endpoints,
                by,
            } => self.retry_here(saga, refresh_endpoints, &by).await,
        };
        let answer = match served {
            Here::Answered(Ok(_)) => Some(CallAnswer::Done),
            Here::Answered(Err(e)) => refusal(&e).map(|refusal| CallAnswer::Refused {
                refusal,
                message: message_of(e),
            }),
            Here::Elsewhere => None,
        };
        let recorded = match &answer {
            Some(answer) => relay.reply(id, answer).await,
            None => relay.put_back(id).await,
        };
        if let Err(e) = recorded {
            // A taken call that is neither answered nor put back ends, for
            // its caller, as "it may have taken effect": the truth.
            tracing::warn!(saga = %saga, call = %id, error = %e, "could not record what became of a relayed call");
        }
    }
}

/// The class of an owner's refusal its caller gets; `None` for what the
/// owner cannot serve *now* but may later, or another owner may (the call
/// goes back).
fn refusal(e: &Error) -> Option<Refusal> {
    use crate::saga::DefinitionError;
    match e {
        Error::NotFound(_) | Error::Definition(DefinitionError::UnknownParticipant { .. }) => {
            Some(Refusal::NotFound)
        }
        Error::InvalidArgument(_) | Error::Definition(_) => Some(Refusal::InvalidArgument),
        Error::FailedPrecondition(_) | Error::AlreadyExists(_) | Error::OutOfRange(_) => {
            Some(Refusal::FailedPrecondition)
        }
        // Shutting down, or still recovering.
        Error::Unavailable(_) => None,
        Error::Journal(journal) => match JournalFault::of(journal) {
            // Nothing was written, or the saga moved on: someone can serve
            // it later.
            JournalFault::Refused
            | JournalFault::Closed
            | JournalFault::ReadFailed
            | JournalFault::Moved => None,
            // It may have been written: only the caller can decide.
            JournalFault::WriteUncertain
            | JournalFault::KeyTaken
            | JournalFault::Damaged
            | JournalFault::CannotOpen => Some(Refusal::Unavailable),
        },
        Error::Auth(_) | Error::Credentials(_) | Error::Tls(_) | Error::Io { .. } => {
            Some(Refusal::Unavailable)
        }
    }
}

/// The message the caller reads: the owner's, and for a write that may
/// have happened, what that means (as the owner's own API would say).
fn message_of(e: Error) -> String {
    match e.journal_fault() {
        Some(JournalFault::WriteUncertain) => {
            format!("{e}; the change may still take effect once the journal works again")
        }
        _ => e.to_string(),
    }
}

fn saga_gone(id: SagaId) -> Error {
    Error::NotFound(format!("saga {id} not found"))
}
