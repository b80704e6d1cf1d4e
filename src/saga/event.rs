//! The journal record: one transition of one saga, named in the past tense.
//!
//! Invariants:
//! - A saga's history is `SagaStarted` followed by the other events; `seq` counts
//!   them from 1 without gaps, and `offset` is the event's place in the journal of
//!   all sagas (gap-free, increasing), assigned by the journal when it appends;
//!   retention later removes whole sagas, and their offsets with them.
//! - Events are facts, never commands: folding them (`state.rs`) is deterministic
//!   and needs nothing but the events.

use serde::{Deserialize, Serialize};

use super::{
    definition::{Endpoint, StepDef, StepSpec},
    id::{Action, Offset, SagaId, Timestamp},
    principal::Principal,
    trace::TraceContext,
};

/// How a failed attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Failure {
    /// The participant said no: never retried.
    Rejected,
    /// Retry requested, error status, timeout, connection lost once the request
    /// may have been sent: outcome unknown.
    Transient,
    /// The coordinator stopped while the call was in flight: outcome unknown.
    Interrupted,
    /// The request certainly never reached the participant: the connection
    /// failed before any byte of it was sent (refused, unreachable, no
    /// connection within the timeout). Retried like a transient failure; but
    /// the attempt did nothing, so it alone never makes a step need undoing.
    /// (New in journal format 5, appended so older records decode unchanged.)
    NotDelivered,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum EventKind {
    /// The saga exists, with its frozen step snapshot and input.
    SagaStarted {
        /// Definition name, or `inline`.
        definition: String,
        /// The steps as the request gave them, for sagas started with inline steps
        /// (kept to compare a repeated request with the same idempotency key).
        inline_steps: Option<Vec<StepDef>>,
        steps: Vec<StepSpec>,
        payload: Vec<u8>,
        idempotency_key: Option<String>,
        /// The W3C trace context the StartSaga request carried, if a valid one;
        /// every participant call of the saga passes it on (`crate::trace`).
        /// Journaled so a saga resumed after a restart stays in its trace.
        /// (New in journal format 2; format 1 records read as `None`.) Boxed
        /// like `started_by` (postcard writes a box as what it holds).
        trace: Option<Box<TraceContext>>,
        /// Who started the saga, and from where: the audit record, and the
        /// owner a `starter` may read it as (`crate::auth`). (New in journal
        /// format 6; older records read as `None`: not recorded.) Boxed: every
        /// event in memory is as big as the largest kind, and this one is it.
        started_by: Option<Box<Principal>>,
        /// When the saga may make its first call: until then it is
        /// `SCHEDULED` and calls no one (`StartReached` ends the wait).
        /// `None`: at once. (New in journal format 8; older records read as
        /// `None`.)
        start_at: Option<Timestamp>,
        /// When the saga stops going forward and compensates, as a cancel
        /// does (unless it is past its point of no return). Absolute, so a
        /// restart keeps it. (New in journal format 8; older records read
        /// as `None`: no deadline.)
        deadline: Option<Timestamp>,
    },
    /// A call is about to be made. Journaled before the call, so a restart knows the
    /// attempt number was used and never reuses it.
    AttemptStarted {
        step: u32,
        action: Action,
        attempt: u32,
    },
    /// The call returned success, with the participant's output.
    AttemptSucceeded {
        step: u32,
        action: Action,
        attempt: u32,
        output: Vec<u8>,
    },
    /// The call failed. `retry_at` is when the next attempt is due, if there is one.
    AttemptFailed {
        step: u32,
        action: Action,
        attempt: u32,
        failure: Failure,
        error: String,
        retry_at: Option<Timestamp>,
    },
    /// An operator asked the saga to stop going forward.
    CancelRequested {
        reason: String,
        /// Who asked (new in journal format 6; older records read as `None`).
        by: Option<Principal>,
    },
    /// The saga stops going forward and starts undoing.
    CompensationStarted { reason: String },
    /// Every step succeeded.
    SagaCompleted,
    /// Every step that did something was undone.
    SagaCompensated,
    /// A compensation was rejected or ran out of attempts.
    SagaFailed { reason: String },
    /// An operator asked a FAILED saga to resume compensating; every compensation
    /// gets a fresh attempt budget (attempt numbers keep counting).
    RetryRequested {
        /// Who asked, also for the `EndpointsRefreshed` journaled with it
        /// (new in journal format 6; older records read as `None`).
        by: Option<Principal>,
    },
    /// An operator's retry of a FAILED saga took the participants' current
    /// registrations for its remaining compensations: each change replaces one
    /// endpoint of the saga's snapshot, for every later call and every replay.
    /// Journaled just before the `RetryRequested` it came with. (New in
    /// journal format 5, appended so older records decode unchanged.)
    EndpointsRefreshed { changes: Vec<EndpointChange> },
    /// An operator asked a FAILED saga that failed past its point of no
    /// return (a retriable step rejected or out of attempts, after a pivot
    /// succeeded) to go forward again: the step that failed gets a fresh
    /// attempt budget (attempt numbers keep counting). What `RetrySaga`
    /// journals for such a saga, instead of `RetryRequested`. (New in
    /// journal format 7, appended so older records decode unchanged.)
    ResumeRequested {
        /// Who asked.
        by: Option<Principal>,
    },
    /// A scheduled saga's `start_at` came: it goes forward. (New in journal
    /// format 8, appended.)
    StartReached,
    /// A step with an input mapping had its input built, before its first
    /// attempt: every attempt and its compensation send these bytes. (New
    /// in journal format 9, appended.)
    InputResolved { step: u32, input: Vec<u8> },
    /// A step's input mapping named something that is not there: the step is
    /// rejected without a call (`error` names the pointer). (New in journal
    /// format 9, appended.)
    InputUnresolved { step: u32, error: String },
}

/// One endpoint of one step replaced by a refresh, from what to what.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointChange {
    pub step: u32,
    /// Which of the step's endpoints (a refresh replaces compensate endpoints).
    pub action: Action,
    pub old: Endpoint,
    pub new: Endpoint,
}

impl EventKind {
    /// A short name for logs and the CLI.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::SagaStarted { .. } => "SagaStarted",
            EventKind::AttemptStarted { .. } => "AttemptStarted",
            EventKind::AttemptSucceeded { .. } => "AttemptSucceeded",
            EventKind::AttemptFailed { .. } => "AttemptFailed",
            EventKind::CancelRequested { .. } => "CancelRequested",
            EventKind::CompensationStarted { .. } => "CompensationStarted",
            EventKind::SagaCompleted => "SagaCompleted",
            EventKind::SagaCompensated => "SagaCompensated",
            EventKind::SagaFailed { .. } => "SagaFailed",
            EventKind::RetryRequested { .. } => "RetryRequested",
            EventKind::EndpointsRefreshed { .. } => "EndpointsRefreshed",
            EventKind::ResumeRequested { .. } => "ResumeRequested",
            EventKind::StartReached => "StartReached",
            EventKind::InputResolved { .. } => "InputResolved",
            EventKind::InputUnresolved { .. } => "InputUnresolved",
        }
    }

    /// True for the events that end a saga's run.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            EventKind::SagaCompleted | EventKind::SagaCompensated | EventKind::SagaFailed { .. }
        )
    }

    /// The principal an operator's or client's event records, if it is one
    /// that does and the record holds it.
    pub fn principal(&self) -> Option<&Principal> {
        match self {
            EventKind::SagaStarted { started_by, .. } => started_by.as_deref(),
            EventKind::CancelRequested { by, .. }
            | EventKind::RetryRequested { by }
            | EventKind::ResumeRequested { by } => by.as_ref(),
            _ => None,
        }
    }
}

/// One journaled event of one saga.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub saga: SagaId,
    /// Position in the saga's history, from 1.
    pub seq: u64,
    /// Position in the journal of all sagas; `Offset::ZERO` until the journal
    /// assigns it.
    pub offset: Offset,
    pub at: Timestamp,
    pub kind: EventKind,
}
