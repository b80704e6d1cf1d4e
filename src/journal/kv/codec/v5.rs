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

use super::v6::{self, StepDef, StepSpec};
use crate::saga::{
    self, Action, Endpoint, EndpointChange, Failure, Offset, RetryOverrides, SagaId, Timestamp,
    TraceContext,
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
        trace: Option<Box<TraceContext>>,
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
            compensate: Some(p.compensate),
            retry: p.retry,
            timeout: p.timeout,
            registered_at: p.registered_at,
            registered_by: None,
            limits: saga::limits::Limits::default(),
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
                inline_steps: inline_steps.map(v6::upgraded),
                steps: v6::upgraded(steps),
                payload,
                idempotency_key,
                trace,
                started_by: None,
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

#[cfg(test)]
mod tests {
    use serde::Serialize;

    use super::*;
    use crate::{
        journal::{JournalError, kv::codec::*},
        saga::{Identity, Principal, StepSpec},
    };

    /// A record as the previous build wrote it: `value` in its shape, version 5.
    fn encode_previous<T: Serialize>(value: &T) -> Vec<u8> {
        let mut bytes = encode(value);
        bytes[0] = PRINCIPALS_SINCE_VERSION - 1;
        bytes
    }

    /// The run writer's types as version 5 had them (`run.rs`).
    #[derive(Serialize)]
    struct RunW {
        saga: SagaId,
        first_seq: u64,
        first_offset: u64,
        events: Vec<(Timestamp, StoredKindW)>,
    }

    #[derive(Serialize)]
    enum StoredKindW {
        Event(EventKind),
        Started {
            definition: String,
            snapshot: u64,
            payload: Vec<u8>,
            idempotency_key: Option<String>,
            trace: Option<Box<TraceContext>>,
        },
    }

    fn endpoint(method: &str) -> Endpoint {
        Endpoint::parse("e", &format!("http://127.0.0.1:1/p.P/{method}")).unwrap()
    }

    fn step() -> StepSpec {
        StepSpec {
            name: "pay".into(),
            participant: "payments".into(),
            kind: crate::saga::StepKind::Compensatable,
            forward: endpoint("Pay"),
            compensate: Some(endpoint("Refund")),
            retry: saga::RetryPolicy::default(),
            timeout: Duration::from_secs(3),
            input: None,
        }
    }

    fn no_snapshots(_: u64) -> Result<Vec<StepSpec>, JournalError> {
        panic!("the run refers to no snapshot")
    }

    #[test]
    fn version_5_runs_and_participants_read_without_principals() {
        let saga = SagaId::generate();
        let step = step();
        let snapshot = encode_previous(&vec![v6::StepSpec::from(&step)]);
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
                    },
                ),
                (
                    Timestamp(6),
                    StoredKindW::Event(EventKind::CancelRequested { reason: "r".into() }),
                ),
            ],
        };
        let steps_of = |id: u64| {
            assert_eq!(id, 7);
            decode::<Vec<StepSpec>>(&snapshot_key(id), &snapshot)
        };
        let events = decode_run(&event_key(saga, 1), &encode_previous(&run), &steps_of).unwrap();
        let saga::EventKind::SagaStarted {
            steps, started_by, ..
        } = &events[0].kind
        else {
            panic!("{:?}", events[0].kind)
        };
        assert_eq!((steps, started_by), (&vec![step], &None));
        assert_eq!(
            events[1].kind,
            saga::EventKind::CancelRequested {
                reason: "r".into(),
                by: None
            }
        );
        let state = saga::SagaState::fold(&events).unwrap();
        assert_eq!(state.started_by, None);
        assert!(state.audit.iter().all(|a| a.by.is_none()));

        // A retry, alone in a run, as version 5 wrote it.
        let retry = RunW {
            saga,
            first_seq: 3,
            first_offset: 3,
            events: vec![(Timestamp(7), StoredKindW::Event(EventKind::RetryRequested))],
        };
        let events =
            decode_run(&event_key(saga, 3), &encode_previous(&retry), &no_snapshots).unwrap();
        assert_eq!(events[0].kind, saga::EventKind::RetryRequested { by: None });

        let old = Participant {
            name: "payments".into(),
            forward: endpoint("Pay"),
            compensate: endpoint("Refund"),
            retry: RetryOverrides::default(),
            timeout: None,
            registered_at: Timestamp(9),
        };
        let key = name_key(PARTICIPANT, "payments");
        let participant: saga::Participant = decode(&key, &encode_previous(&old)).unwrap();
        assert_eq!(participant.registered_by, None);
        assert_eq!(participant.compensate, Some(endpoint("Refund")));
    }

    #[test]
    fn version_6_records_keep_their_principals() {
        let saga = SagaId::generate();
        let ops = Principal {
            identity: Identity::Token("ops".into()),
            peer: Some("127.0.0.1:4100".parse().unwrap()),
        };
        let svc = Principal {
            identity: Identity::Certificate("checkout.internal".into()),
            peer: None,
        };
        let step = step();
        let kinds = [
            saga::EventKind::SagaStarted {
                definition: "shop".into(),
                inline_steps: None,
                steps: vec![step.clone()],
                payload: vec![],
                idempotency_key: None,
                trace: None,
                started_by: Some(Box::new(svc.clone())),
                start_at: None,
                deadline: None,
            },
            saga::EventKind::CancelRequested {
                reason: "r".into(),
                by: Some(ops.clone()),
            },
            saga::EventKind::RetryRequested {
                by: Some(Principal::anonymous(None)),
            },
        ];
        let run: Vec<saga::Event> = kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| saga::Event {
                saga,
                seq: i as u64 + 1,
                offset: Offset(i as u64 + 1),
                at: Timestamp(i as u64),
                kind,
            })
            .collect();
        let bytes = encode_run(&run, None);
        assert_eq!(bytes[0], RECORD_VERSION);
        assert_eq!(
            decode_run(&event_key(saga, 1), &bytes, &no_snapshots).unwrap(),
            run
        );
        // Stored against a step snapshot, the start keeps its principal too.
        let shared = encode_run(&run[..1], Some(3));
        let from_snapshot = |_: u64| Ok(vec![step.clone()]);
        assert_eq!(
            decode_run(&event_key(saga, 1), &shared, &from_snapshot).unwrap(),
            run[..1]
        );
        let participant = saga::Participant::new(
            "payments",
            "http://127.0.0.1:1/p.P/Pay",
            "http://127.0.0.1:1/p.P/Refund",
            RetryOverrides::default(),
            None,
            Timestamp(1),
        )
        .unwrap()
        .registered_by(ops);
        let key = name_key(PARTICIPANT, "payments");
        assert_eq!(
            decode::<saga::Participant>(&key, &encode(&participant)).unwrap(),
            participant
        );
    }
}
