//! The shapes of format version 7 that changed in version 8, read only to
//! convert them.
//!
//! Version 8 gives a saga a start time and a deadline: `SagaStarted` gained
//! `start_at` and `deadline` after `started_by` (and, in runs, a `Started`
//! stored against a step snapshot likewise, `run.rs`); `EventKind` gained
//! `StartReached`, appended last. postcard encodes fields by position, so
//! these types keep version 7's exact field and variant order; they are
//! frozen and never written. What they read started at once, with no
//! deadline. Types not named here kept their shape in version 8; its steps
//! are those of `v8.rs`.

use serde::Deserialize;

use super::v8::{self, StepDef, StepSpec};
use crate::saga::{
    self, Action, EndpointChange, Failure, Offset, Principal, SagaId, Timestamp, TraceContext,
};

/// [`saga::Event`] as version 7 wrote it (only its `kind` differs).
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct Event {
    saga: SagaId,
    seq: u64,
    offset: Offset,
    at: Timestamp,
    kind: EventKind,
}

/// [`saga::EventKind`] as version 7 wrote it: sagas without a start time
/// or a deadline.
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
    ResumeRequested {
        by: Option<Principal>,
    },
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
                inline_steps: inline_steps.map(v8::upgraded),
                steps: v8::upgraded(steps),
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
            EventKind::ResumeRequested { by } => Current::ResumeRequested { by },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        journal::kv::codec::*,
        saga::{Endpoint, Identity, RetryPolicy, StepKind},
    };

    /// The version-8 shape of today's step (which has no input here).
    fn frozen(s: &saga::StepSpec) -> StepSpec {
        StepSpec {
            name: s.name.clone(),
            participant: s.participant.clone(),
            kind: s.kind,
            forward: s.forward.clone(),
            compensate: s.compensate.clone().expect("a compensate endpoint"),
            retry: s.retry,
            timeout: s.timeout,
        }
    }

    /// A record as the previous build wrote it: `value` in its shape, version 7.
    fn encode_previous<T: serde::Serialize>(value: &T) -> Vec<u8> {
        let mut bytes = encode(value);
        bytes[0] = TIMES_SINCE_VERSION - 1;
        bytes
    }

    fn steps() -> Vec<saga::StepSpec> {
        vec![saga::StepSpec {
            name: "pay".into(),
            participant: "payments".into(),
            kind: StepKind::Pivot,
            forward: Endpoint::parse("e", "http://127.0.0.1:1/p.P/Pay").unwrap(),
            compensate: Some(Endpoint::parse("e", "http://127.0.0.1:1/p.P/Refund").unwrap()),
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(3),
            input: None,
        }]
    }

    /// The run writer's types as version 7 had them (`run.rs`).
    #[derive(serde::Serialize)]
    struct RunW {
        saga: SagaId,
        first_seq: u64,
        first_offset: u64,
        events: Vec<(Timestamp, StoredKindW)>,
    }

    #[derive(serde::Serialize)]
    enum StoredKindW {
        // Never written here; it keeps `Started` at variant index 1.
        #[expect(dead_code)]
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

    /// Whole events and runs of version 7 read as sagas that start at once
    /// and have no deadline; what they say besides is kept.
    #[test]
    fn version_7_sagas_start_at_once_without_a_deadline() {
        let saga = SagaId::generate();
        let by = Principal {
            identity: Identity::Token("ops".into()),
            peer: None,
        };
        let single = Event {
            saga,
            seq: 1,
            offset: Offset(1),
            at: Timestamp(5),
            kind: EventKind::SagaStarted {
                definition: "inline".into(),
                inline_steps: None,
                steps: steps().iter().map(frozen).collect(),
                payload: b"{}".to_vec(),
                idempotency_key: Some("k".into()),
                trace: None,
                started_by: Some(Box::new(by.clone())),
            },
        };
        let read: saga::Event = decode(&event_key(saga, 1), &encode_previous(&single)).unwrap();
        let saga::EventKind::SagaStarted {
            steps: read_steps,
            started_by,
            start_at,
            deadline,
            ..
        } = &read.kind
        else {
            panic!("{:?}", read.kind)
        };
        assert_eq!((read_steps, started_by.as_deref()), (&steps(), Some(&by)));
        assert_eq!((*start_at, *deadline), (None, None));

        let run = RunW {
            saga,
            first_seq: 1,
            first_offset: 1,
            events: vec![(
                Timestamp(5),
                StoredKindW::Started {
                    definition: "shop".into(),
                    snapshot: 7,
                    payload: b"{}".to_vec(),
                    idempotency_key: None,
                    trace: None,
                    started_by: Some(Box::new(by.clone())),
                },
            )],
        };
        let steps_of = |_: u64| Ok(steps());
        let events = decode_run(&event_key(saga, 1), &encode_previous(&run), &steps_of).unwrap();
        let saga::EventKind::SagaStarted {
            started_by,
            start_at,
            deadline,
            ..
        } = &events[0].kind
        else {
            panic!("{:?}", events[0].kind)
        };
        assert_eq!(started_by.as_deref(), Some(&by));
        assert_eq!((*start_at, *deadline), (None, None));
    }

    /// Today's version keeps a saga's times, in single records and in runs that
    /// store the steps as a snapshot, and its `StartReached`.
    #[test]
    fn start_times_and_deadlines_are_kept() {
        let saga = SagaId::generate();
        let started = saga::Event {
            saga,
            seq: 1,
            offset: Offset(1),
            at: Timestamp(5),
            kind: saga::EventKind::SagaStarted {
                definition: "shop".into(),
                inline_steps: None,
                steps: steps(),
                payload: vec![],
                idempotency_key: None,
                trace: None,
                started_by: None,
                start_at: Some(Timestamp(60_000)),
                deadline: Some(Timestamp(660_000)),
            },
        };
        let reached = saga::Event {
            seq: 2,
            offset: Offset(2),
            at: Timestamp(60_001),
            kind: saga::EventKind::StartReached,
            ..started.clone()
        };
        let bytes = encode(&started);
        assert_eq!(bytes[0], RECORD_VERSION);
        let read: saga::Event = decode(&event_key(saga, 1), &bytes).unwrap();
        assert_eq!(read, started);

        let run = encode_run(&[started.clone(), reached.clone()], Some(7));
        let events = decode_run(&event_key(saga, 1), &run, &|_| Ok(steps())).unwrap();
        assert_eq!(events, vec![started, reached]);
    }
}
