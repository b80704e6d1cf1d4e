//! The shapes of format version 5 that changed in version 6, read only to
//! convert them.
//!
//! Version 6 journals who asked for every write a caller makes (`crate::auth`):
//! `SagaStarted` gained `started_by`, `CancelRequested` and `RetryRequested`
//! gained `by`, and a participant `registered_by`. postcard encodes fields by
//! position, so these types keep version 5's exact field and variant order;
//! they are frozen and never written. What they read has no principal
//! (`None`: "not recorded"), which `GetSaga` and the CLI show as such.
//! Types not named here kept their shape.

use std::time::Duration;

use serde::Deserialize;

use crate::saga::{
    self, Action, EndpointChange, Endpoint, Failure, Offset, RetryOverrides, SagaId, StepDef,
    StepSpec, Timestamp, TraceContext,
};

/// [`saga::Participant`] without `registered_by`.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct Participant {
    name: String,
    forward: Endpoint,
    compensate: Endpoint,
    retry: RetryOverrides,
    timeout: Option<Duration>,
    registered_at: Timestamp,
}

/// [`saga::Event`] as version 5 wrote it (only its `kind` differs).
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct Event {
    saga: SagaId,
    seq: u64,
    offset: Offset,
    at: Timestamp,
    kind: EventKind,
}

/// [`saga::EventKind`] as version 5 wrote it: no principals.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) enum EventKind {
    SagaStarted {
        definition: String,
        inline_steps: Option<Vec<StepDef>>,
        steps: Vec<StepSpec>,
        payload: Vec<u8>,
        idempotency_key: Option<String>,
        trace: Option<TraceContext>,
    },
    AttemptStarted {
        step: u32,
        action: Action,
        attempt: u32,
    },
    AttemptSucceeded {
        step: u32,
        action: Action,
        attempt: u32,
        output: Vec<u8>,
    },
    AttemptFailed {
        step: u32,
        action: Action,
        attempt: u32,
        failure: Failure,
        error: String,
        retry_at: Option<Timestamp>,
    },
    CancelRequested {
        reason: String,
    },
    CompensationStarted {
        reason: String,
    },
    SagaCompleted,
    SagaCompensated,
    SagaFailed {
        reason: String,
    },
    RetryRequested,
    EndpointsRefreshed {
        changes: Vec<EndpointChange>,
    },
}

impl From<Participant> for saga::Participant {
    fn from(p: Participant) -> Self {
        Self {
            name: p.name,
            forward: p.forward,
            compensate: p.compensate,
            retry: p.retry,
            timeout: p.timeout,
            registered_at: p.registered_at,
            registered_by: None,
        }
    }
}

impl From<Event> for saga::Event {
    fn from(e: Event) -> Self {
        Self {
            saga: e.saga,
            seq: e.seq,
            offset: e.offset,
            at: e.at,
            kind: e.kind.into(),
        }
    }
}

impl From<EventKind> for saga::EventKind {
    fn from(kind: EventKind) -> Self {
        use saga::EventKind as Current;
        match kind {
            EventKind::SagaStarted {
                definition,
                inline_steps,
                steps,
                payload,
                idempotency_key,
                trace,
            } => Current::SagaStarted {
                definition,
                inline_steps,
                steps,
                payload,
                idempotency_key,
                trace,
                started_by: None,
            },
            EventKind::AttemptStarted {
                step,
                action,
                attempt,
            } => Current::AttemptStarted {
                step,
                action,
                attempt,
            },
            EventKind::AttemptSucceeded {
                step,
                action,
                attempt,
                output,
            } => Current::AttemptSucceeded {
                step,
                action,
                attempt,
                output,
            },
            EventKind::AttemptFailed {
                step,
                action,
                attempt,
                failure,
                error,
                retry_at,
            } => Current::AttemptFailed {
                step,
                action,
                attempt,
                failure,
                error,
                retry_at,
            },
            EventKind::CancelRequested { reason } => Current::CancelRequested { reason, by: None },
            EventKind::CompensationStarted { reason } => Current::CompensationStarted { reason },
            EventKind::SagaCompleted => Current::SagaCompleted,
            EventKind::SagaCompensated => Current::SagaCompensated,
            EventKind::SagaFailed { reason } => Current::SagaFailed { reason },
            EventKind::RetryRequested => Current::RetryRequested { by: None },
            EventKind::EndpointsRefreshed { changes } => Current::EndpointsRefreshed { changes },
        }
    }
}

/// The way back, for tests that write records as a version-5 build did. A
/// principal has no place there and is dropped: the test then expects `None`.
#[cfg(test)]
mod written_before {
    use super::*;

    impl From<&saga::Participant> for Participant {
        fn from(p: &saga::Participant) -> Self {
            Self {
                name: p.name.clone(),
                forward: p.forward.clone(),
                compensate: p.compensate.clone(),
                retry: p.retry,
                timeout: p.timeout,
                registered_at: p.registered_at,
            }
        }
    }

    impl From<&saga::Event> for Event {
        fn from(e: &saga::Event) -> Self {
            use saga::EventKind as Current;
            let kind = match e.kind.clone() {
                Current::SagaStarted {
                    definition,
                    inline_steps,
                    steps,
                    payload,
                    idempotency_key,
                    trace,
                    started_by: _,
                } => EventKind::SagaStarted {
                    definition,
                    inline_steps,
                    steps,
                    payload,
                    idempotency_key,
                    trace,
                },
                Current::AttemptStarted {
                    step,
                    action,
                    attempt,
                } => EventKind::AttemptStarted {
                    step,
                    action,
                    attempt,
                },
                Current::AttemptSucceeded {
                    step,
                    action,
                    attempt,
                    output,
                } => EventKind::AttemptSucceeded {
                    step,
                    action,
                    attempt,
                    output,
                },
                Current::AttemptFailed {
                    step,
                    action,
                    attempt,
                    failure,
                    error,
                    retry_at,
                } => EventKind::AttemptFailed {
                    step,
                    action,
                    attempt,
                    failure,
                    error,
                    retry_at,
                },
                Current::CancelRequested { reason, by: _ } => EventKind::CancelRequested { reason },
                Current::CompensationStarted { reason } => {
                    EventKind::CompensationStarted { reason }
                }
                Current::SagaCompleted => EventKind::SagaCompleted,
                Current::SagaCompensated => EventKind::SagaCompensated,
                Current::SagaFailed { reason } => EventKind::SagaFailed { reason },
                Current::RetryRequested { by: _ } => EventKind::RetryRequested,
                Current::EndpointsRefreshed { changes } => {
                    EventKind::EndpointsRefreshed { changes }
                }
            };
            Self {
                saga: e.saga,
                seq: e.seq,
                offset: e.offset,
                at: e.at,
                kind,
            }
        }
    }
}
