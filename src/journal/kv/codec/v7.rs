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

use super::{
    kinds,
    v8::{self, StepDef, StepSpec},
};
use crate::saga::{self, Principal, TraceContext};

/// `SagaStarted` as version 7 wrote it: no start time, no deadline (the
/// rest of version 7's event kinds are those of `kinds.rs`).
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct Started {
    definition: String,
    inline_steps: Option<Vec<StepDef>>,
    steps: Vec<StepSpec>,
    payload: Vec<u8>,
    idempotency_key: Option<String>,
    trace: Option<Box<TraceContext>>,
    started_by: Option<Box<Principal>>,
}

/// [`saga::Event`] as version 7 wrote it.
pub(super) type Event = kinds::Event<Started>;
/// [`saga::EventKind`] as version 7 wrote it.
pub(super) type EventKind = kinds::EventKind<Started>;

impl From<Started> for saga::EventKind {
    fn from(s: Started) -> Self {
        saga::EventKind::SagaStarted {
            definition: s.definition,
            inline_steps: s.inline_steps.map(v8::upgraded),
            steps: v8::upgraded(s.steps),
            payload: s.payload,
            idempotency_key: s.idempotency_key,
            trace: s.trace,
            started_by: s.started_by,
            start_at: None,
            deadline: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        journal::kv::codec::*,
        saga::{Endpoint, Identity, Offset, RetryPolicy, SagaId, StepKind, Timestamp},
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
            kind: EventKind::SagaStarted(Started {
                definition: "inline".into(),
                inline_steps: None,
                steps: steps().iter().map(frozen).collect(),
                payload: b"{}".to_vec(),
                idempotency_key: Some("k".into()),
                trace: None,
                started_by: Some(Box::new(by.clone())),
            }),
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
