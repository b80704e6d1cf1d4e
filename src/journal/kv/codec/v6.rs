//! The shapes of format version 6 that changed in version 7, read only to
//! convert them.
//!
//! Version 7 gives every step a kind (`saga::StepKind`: compensatable, pivot,
//! retriable): `StepSpec` and `StepDef` gained `kind` after `participant`, so
//! `SagaStarted` (which holds both) and the step snapshot changed with them.
//! postcard encodes fields by position, so these types keep version 6's
//! exact field and variant order; they are frozen and never written. What
//! they read was compensatable, the only kind there was. Types not named
//! here kept their shape; version 5's `SagaStarted` (`v5.rs`) holds these
//! steps too.

use std::time::Duration;

use serde::Deserialize;

use crate::saga::{
    self, Action, Endpoint, EndpointChange, Failure, Offset, Principal, RetryOverrides,
    RetryPolicy, SagaId, StepKind, Timestamp, TraceContext,
};

/// [`saga::StepSpec`] without `kind`.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct StepSpec {
    pub(super) name: String,
    pub(super) participant: String,
    pub(super) forward: Endpoint,
    pub(super) compensate: Endpoint,
    pub(super) retry: RetryPolicy,
    pub(super) timeout: Duration,
}

/// [`saga::StepDef`] without `kind`.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct StepDef {
    pub(super) name: String,
    pub(super) participant: String,
    pub(super) retry: RetryOverrides,
    pub(super) timeout: Option<Duration>,
}

/// [`saga::Event`] as version 6 wrote it (only its `kind` differs).
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct Event {
    saga: SagaId,
    seq: u64,
    offset: Offset,
    at: Timestamp,
    kind: EventKind,
}

/// [`saga::EventKind`] as version 6 wrote it: steps without kinds.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) enum EventKind {
    SagaStarted {
        definition: String,
        inline_steps: Option<Vec<StepDef>>,
        steps: Vec<StepSpec>,
        payload: Vec<u8>,
        idempotency_key: Option<String>,
        trace: Option<Box<TraceContext>>,
        started_by: Option<Box<Principal>>,
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
        by: Option<Principal>,
    },
    CompensationStarted {
        reason: String,
    },
    SagaCompleted,
    SagaCompensated,
    SagaFailed {
        reason: String,
    },
    RetryRequested {
        by: Option<Principal>,
    },
    EndpointsRefreshed {
        changes: Vec<EndpointChange>,
    },
}

impl From<StepSpec> for saga::StepSpec {
    fn from(s: StepSpec) -> Self {
        Self {
            name: s.name,
            participant: s.participant,
            kind: StepKind::Compensatable,
            forward: s.forward,
            compensate: Some(s.compensate),
            retry: s.retry,
            timeout: s.timeout,
            input: None,
        }
    }
}

impl From<StepDef> for saga::StepDef {
    fn from(s: StepDef) -> Self {
        Self {
            name: s.name,
            participant: s.participant,
            kind: StepKind::Compensatable,
            retry: s.retry,
            timeout: s.timeout,
            input: None,
        }
    }
}

/// Steps of either version-6 shape, converted.
pub(super) fn upgraded<T: Into<U>, U>(steps: Vec<T>) -> Vec<U> {
    steps.into_iter().map(Into::into).collect()
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
                started_by,
            } => Current::SagaStarted {
                definition,
                inline_steps: inline_steps.map(upgraded),
                steps: upgraded(steps),
                payload,
                idempotency_key,
                trace,
                started_by,
                start_at: None,
                deadline: None,
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
            EventKind::CancelRequested { reason, by } => Current::CancelRequested { reason, by },
            EventKind::CompensationStarted { reason } => Current::CompensationStarted { reason },
            EventKind::SagaCompleted => Current::SagaCompleted,
            EventKind::SagaCompensated => Current::SagaCompensated,
            EventKind::SagaFailed { reason } => Current::SagaFailed { reason },
            EventKind::RetryRequested { by } => Current::RetryRequested { by },
            EventKind::EndpointsRefreshed { changes } => Current::EndpointsRefreshed { changes },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{journal::kv::codec::*, saga::Identity};

    impl From<&saga::StepSpec> for StepSpec {
        fn from(s: &saga::StepSpec) -> Self {
            Self {
                name: s.name.clone(),
                participant: s.participant.clone(),
                forward: s.forward.clone(),
                compensate: s.compensate.clone().expect("a compensate endpoint"),
                retry: s.retry,
                timeout: s.timeout,
            }
        }
    }

    /// A record as the previous build wrote it: `value` in its shape, version 6.
    fn encode_previous<T: serde::Serialize>(value: &T) -> Vec<u8> {
        let mut bytes = encode(value);
        bytes[0] = STEP_KINDS_SINCE_VERSION - 1;
        bytes
    }

    fn step(name: &str) -> saga::StepSpec {
        saga::StepSpec {
            name: name.into(),
            participant: "payments".into(),
            kind: StepKind::Compensatable,
            forward: Endpoint::parse("e", "http://127.0.0.1:1/p.P/Pay").unwrap(),
            compensate: Some(Endpoint::parse("e", "http://127.0.0.1:1/p.P/Refund").unwrap()),
            retry: saga::RetryPolicy::default(),
            timeout: Duration::from_secs(3),
            input: None,
        }
    }

    /// The run writer's types as version 6 had them (`run.rs`).
    #[derive(serde::Serialize)]
    struct RunW {
        saga: SagaId,
        first_seq: u64,
        first_offset: u64,
        events: Vec<(Timestamp, StoredKindW)>,
    }

    #[derive(serde::Serialize)]
    enum StoredKindW {
        Event(EventKind),
        Started {
            definition: String,
            snapshot: u64,
            payload: Vec<u8>,
            idempotency_key: Option<String>,
            trace: Option<Box<TraceContext>>,
            started_by: Option<Box<Principal>>,
        },
    }

    /// Steps, inline steps, snapshots and whole events of version 6 read as
    /// compensatable steps, the only kind there was; what they say besides
    /// (principals included) is kept.
    #[test]
    fn version_6_steps_read_as_compensatable() {
        let saga = SagaId::generate();
        let (pay, ship) = (step("pay"), step("ship"));
        let snapshot = encode_previous(&vec![StepSpec::from(&pay), StepSpec::from(&ship)]);
        let read: Vec<saga::StepSpec> = decode(&snapshot_key(7), &snapshot).unwrap();
        assert_eq!(read, vec![pay.clone(), ship.clone()]);

        let by = Principal {
            identity: Identity::Token("ops".into()),
            peer: None,
        };
        let run = RunW {
            saga,
            first_seq: 1,
            first_offset: 1,
            events: vec![
                (
                    Timestamp(5),
                    StoredKindW::Started {
                        definition: "shop".into(),
                        snapshot: 7,
                        payload: b"{}".to_vec(),
                        idempotency_key: Some("k".into()),
                        trace: None,
                        started_by: Some(Box::new(by.clone())),
                    },
                ),
                (
                    Timestamp(6),
                    StoredKindW::Event(EventKind::CancelRequested {
                        reason: "r".into(),
                        by: Some(by.clone()),
                    }),
                ),
            ],
        };
        let steps_of = |_: u64| decode::<Vec<saga::StepSpec>>(&snapshot_key(7), &snapshot);
        let events = decode_run(&event_key(saga, 1), &encode_previous(&run), &steps_of).unwrap();
        let saga::EventKind::SagaStarted {
            steps, started_by, ..
        } = &events[0].kind
        else {
            panic!("{:?}", events[0].kind)
        };
        assert_eq!(steps, &vec![pay.clone(), ship.clone()]);
        assert_eq!(started_by.as_deref(), Some(&by));
        assert_eq!(
            events[1].kind,
            saga::EventKind::CancelRequested {
                reason: "r".into(),
                by: Some(by),
            }
        );

        // A whole event with inline steps, as a single record.
        let inline = Event {
            saga,
            seq: 1,
            offset: Offset(1),
            at: Timestamp(5),
            kind: EventKind::SagaStarted {
                definition: "inline".into(),
                inline_steps: Some(vec![StepDef {
                    name: "pay".into(),
                    participant: "payments".into(),
                    retry: RetryOverrides::default(),
                    timeout: Some(Duration::from_secs(2)),
                }]),
                steps: vec![StepSpec::from(&pay)],
                payload: vec![],
                idempotency_key: None,
                trace: None,
                started_by: None,
            },
        };
        let read: saga::Event = decode(&event_key(saga, 1), &encode_previous(&inline)).unwrap();
        let saga::EventKind::SagaStarted {
            inline_steps,
            steps,
            ..
        } = read.kind
        else {
            panic!("{:?}", read.kind)
        };
        assert_eq!(steps, vec![pay]);
        let inline_steps = inline_steps.unwrap();
        assert_eq!(inline_steps[0].kind, StepKind::Compensatable);
        assert_eq!(inline_steps[0].timeout, Some(Duration::from_secs(2)));
    }

    /// Version 7 writes and reads every kind.
    #[test]
    fn version_7_keeps_step_kinds() {
        let mut steps = vec![step("reserve"), step("ship"), step("notify")];
        steps[1].kind = StepKind::Pivot;
        steps[2].kind = StepKind::Retriable;
        let bytes = encode(&steps);
        assert_eq!(bytes[0], RECORD_VERSION);
        let read: Vec<saga::StepSpec> = decode(&snapshot_key(1), &bytes).unwrap();
        assert_eq!(read, steps);
    }
}
