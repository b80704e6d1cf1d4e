//! The shapes of format version 1 that changed in version 2, read only to
//! convert them.
//!
//! postcard encodes fields by position, with enum variants by index, so these
//! types must keep the exact field and variant order of version 1; they are
//! frozen and never written. A version-1 record converts to its version-2 shape
//! (`v4.rs`, which reads versions 2 to 4), and that one to today's. Every type
//! not named here or there kept its shape.

use serde::Deserialize;

use super::v4::{self, StepDef, StepSpec};
use crate::saga::{Action, Failure, Offset, SagaId, Timestamp};

/// `Event` as version 1 wrote it (only its `kind` differs).
#[derive(Deserialize)]
pub(super) struct Event {
    saga: SagaId,
    seq: u64,
    offset: u64,
    at: Timestamp,
    kind: EventKind,
}

/// `EventKind` as version 1 wrote it: `SagaStarted` had no `trace`.
#[derive(Deserialize)]
enum EventKind {
    SagaStarted {
        definition: String,
        inline_steps: Option<Vec<StepDef>>,
        steps: Vec<StepSpec>,
        payload: Vec<u8>,
        idempotency_key: Option<String>,
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
}

impl From<Event> for v4::Event {
    fn from(e: Event) -> Self {
        v4::Event {
            saga: e.saga,
            seq: e.seq,
            offset: Offset(e.offset),
            at: e.at,
            kind: e.kind.into(),
        }
    }
}

impl From<EventKind> for v4::EventKind {
    fn from(kind: EventKind) -> Self {
        use v4::EventKind as Next;
        match kind {
            EventKind::SagaStarted {
                definition,
                inline_steps,
                steps,
                payload,
                idempotency_key,
            } => Next::SagaStarted {
                definition,
                inline_steps,
                steps,
                payload,
                idempotency_key,
                // Sagas started before version 2 run in the trace their id names.
                trace: None,
            },
            EventKind::AttemptStarted {
                step,
                action,
                attempt,
            } => Next::AttemptStarted {
                step,
                action,
                attempt,
            },
            EventKind::AttemptSucceeded {
                step,
                action,
                attempt,
                output,
            } => Next::AttemptSucceeded {
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
            } => Next::AttemptFailed {
                step,
                action,
                attempt,
                failure,
                error,
                retry_at,
            },
            EventKind::CancelRequested { reason } => Next::CancelRequested { reason },
            EventKind::CompensationStarted { reason } => Next::CompensationStarted { reason },
            EventKind::SagaCompleted => Next::SagaCompleted,
            EventKind::SagaCompensated => Next::SagaCompensated,
            EventKind::SagaFailed { reason } => Next::SagaFailed { reason },
            EventKind::RetryRequested => Next::RetryRequested,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde::Serialize;

    use super::super::{RECORD_VERSION, Record, decode, encode, event_key, v4};
    use crate::saga::{
        Action, Endpoint, Event, EventKind, Failure, RetryPolicy, SagaId, StepSpec, Timestamp,
        event::Event as CurrentEvent,
    };

    /// Writes what a version-1 build wrote: the old shape, version byte 1.
    fn encode_v1<T: Serialize>(value: &T) -> Vec<u8> {
        let mut bytes = encode(value);
        assert_eq!(bytes[0], RECORD_VERSION);
        bytes[0] = 1;
        bytes
    }

    /// The version-1 writer's types, for encoding test records.
    #[derive(Serialize)]
    struct EventV1W<'a> {
        saga: SagaId,
        seq: u64,
        offset: u64,
        at: Timestamp,
        kind: KindV1W<'a>,
    }

    #[derive(Serialize)]
    #[allow(dead_code)]
    enum KindV1W<'a> {
        SagaStarted {
            definition: &'a str,
            inline_steps: Option<Vec<v4::StepDef>>,
            steps: Vec<v4::StepSpec>,
            payload: &'a [u8],
            idempotency_key: Option<&'a str>,
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
            error: &'a str,
            retry_at: Option<Timestamp>,
        },
    }

    /// Steps as version 1 could hold them: attempts only, no time budget.
    fn steps() -> Vec<StepSpec> {
        vec![StepSpec {
            name: "pay".into(),
            participant: "payments".into(),
            kind: crate::saga::StepKind::Compensatable,
            forward: Endpoint::parse("f", "http://127.0.0.1:1/p.P/Pay").unwrap(),
            compensate: Some(Endpoint::parse("c", "http://127.0.0.1:1/p.P/Refund").unwrap()),
            retry: RetryPolicy {
                max_duration: None,
                ..RetryPolicy::default()
            },
            timeout: Duration::from_secs(3),
            input: None,
        }]
    }

    #[test]
    fn a_version_1_saga_started_still_decodes_without_a_trace() {
        let saga = SagaId::generate();
        let steps = steps();
        let old = EventV1W {
            saga,
            seq: 1,
            offset: 7,
            at: Timestamp(1_700_000_000_000),
            kind: KindV1W::SagaStarted {
                definition: "t",
                inline_steps: None,
                steps: steps.iter().map(Into::into).collect(),
                payload: b"{}",
                idempotency_key: Some("k"),
            },
        };
        let bytes = encode_v1(&old);
        let event: Event = decode(&event_key(saga, 1), &bytes).unwrap();
        assert_eq!(
            event,
            CurrentEvent {
                saga,
                seq: 1,
                offset: crate::saga::Offset(7),
                at: Timestamp(1_700_000_000_000),
                kind: EventKind::SagaStarted {
                    definition: "t".into(),
                    inline_steps: None,
                    steps,
                    payload: b"{}".to_vec(),
                    idempotency_key: Some("k".into()),
                    trace: None,
                    started_by: None,
                    start_at: None,
                    deadline: None,
                },
            }
        );
        // The same bytes read as a later version are not mistaken for a valid record.
        for version in [2, RECORD_VERSION] {
            let mut later = bytes.clone();
            later[0] = version;
            assert!(decode::<Event>(&event_key(saga, 1), &later).is_err());
        }
    }

    #[test]
    fn other_version_1_events_decode_unchanged() {
        let saga = SagaId::generate();
        let old = EventV1W {
            saga,
            seq: 3,
            offset: 9,
            at: Timestamp(5),
            kind: KindV1W::AttemptFailed {
                step: 0,
                action: Action::Compensate,
                attempt: 2,
                failure: Failure::Transient,
                error: "boom",
                retry_at: Some(Timestamp(6)),
            },
        };
        let event = Event::from_v1(&encode_v1(&old)[5..]).unwrap();
        assert_eq!(
            event.kind,
            EventKind::AttemptFailed {
                step: 0,
                action: Action::Compensate,
                attempt: 2,
                failure: Failure::Transient,
                error: "boom".into(),
                retry_at: Some(Timestamp(6)),
            }
        );
        // Types whose shape did not change read version 1 as they are.
        let id: SagaId = decode(b"i", &encode_v1(&saga)).unwrap();
        assert_eq!(id, saga);
    }
}
