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

use super::kinds;
use crate::saga::{self, Endpoint, Principal, RetryOverrides, RetryPolicy, StepKind, TraceContext};

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

/// `SagaStarted` as version 6 wrote it: steps without kinds (the rest of
/// version 6's event kinds are those of `kinds.rs`).
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct Started {
    pub(super) definition: String,
    pub(super) inline_steps: Option<Vec<StepDef>>,
    pub(super) steps: Vec<StepSpec>,
    pub(super) payload: Vec<u8>,
    pub(super) idempotency_key: Option<String>,
    pub(super) trace: Option<Box<TraceContext>>,
    pub(super) started_by: Option<Box<Principal>>,
}

/// [`saga::Event`] as version 6 wrote it.
pub(super) type Event = kinds::Event<Started>;
/// [`saga::EventKind`] as version 6 wrote it.
pub(super) type EventKind = kinds::EventKind<Started>;

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

impl From<Started> for saga::EventKind {
    fn from(s: Started) -> Self {
        saga::EventKind::SagaStarted {
            definition: s.definition,
            inline_steps: s.inline_steps.map(upgraded),
            steps: upgraded(s.steps),
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
    use super::*;
    use crate::{
        journal::kv::codec::*,
        saga::{Identity, Offset, SagaId, Timestamp},
    };

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
            kind: EventKind::SagaStarted(Started {
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
            }),
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
