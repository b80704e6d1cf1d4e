//! The shapes of format versions 1 to 4 that changed in version 5, read only to
//! convert them.
//!
//! Version 5 gave retry policies a forward budget by time, `max_duration`: the
//! resolved [`RetryPolicy`](crate::saga::RetryPolicy) in every step snapshot
//! and the partial [`RetryOverrides`](crate::saga::RetryOverrides) of
//! participants and inline steps. Every record that holds one changed with it:
//! participants, step snapshots, and events (a `SagaStarted` holds both).
//!
//! postcard encodes fields by position, with enum variants by index, so these
//! types keep the exact field and variant order of versions 1 to 4 (version 1's
//! `SagaStarted` differs once more, see `v1.rs`); they are frozen and never
//! written. A policy read from them has no time budget (`max_duration: None`):
//! the saga goes on as the build that started it ran it, by attempts alone.
//! Types not named here kept their shape.

use std::time::Duration;

use serde::Deserialize;

use crate::saga::{
    self, Action, Endpoint, Failure, Offset, SagaId, Timestamp, TraceContext,
    definition::opt_duration,
};

/// [`saga::RetryPolicy`] without `max_duration`.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct RetryPolicy {
    initial_interval: Duration,
    multiplier: f64,
    max_interval: Duration,
    max_attempts: u32,
    max_compensate_attempts: u32,
    jitter: f64,
}

/// [`saga::RetryOverrides`] without `max_duration`.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct RetryOverrides {
    #[serde(with = "opt_duration")]
    initial_interval: Option<Duration>,
    multiplier: Option<f64>,
    #[serde(with = "opt_duration")]
    max_interval: Option<Duration>,
    max_attempts: Option<u32>,
    max_compensate_attempts: Option<u32>,
    jitter: Option<f64>,
}

/// [`saga::StepSpec`] with the old policy.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct StepSpec {
    name: String,
    participant: String,
    forward: Endpoint,
    compensate: Endpoint,
    retry: RetryPolicy,
    timeout: Duration,
}

/// [`saga::StepDef`] with the old overrides.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct StepDef {
    name: String,
    participant: String,
    retry: RetryOverrides,
    timeout: Option<Duration>,
}

/// [`saga::Participant`] with the old overrides.
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

/// [`saga::Event`] as versions 2 to 4 wrote it (only its `kind` differs).
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct Event {
    pub(super) saga: SagaId,
    pub(super) seq: u64,
    pub(super) offset: Offset,
    pub(super) at: Timestamp,
    pub(super) kind: EventKind,
}

/// [`saga::EventKind`] as versions 2 to 4 wrote it: `SagaStarted` held the old
/// steps, and the variants after `RetryRequested` did not exist yet.
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
}

impl From<RetryPolicy> for saga::RetryPolicy {
    fn from(p: RetryPolicy) -> Self {
        Self {
            initial_interval: p.initial_interval,
            multiplier: p.multiplier,
            max_interval: p.max_interval,
            max_attempts: p.max_attempts,
            max_compensate_attempts: p.max_compensate_attempts,
            jitter: p.jitter,
            // No time budget: the saga keeps the attempts-only budget it started with.
            max_duration: None,
        }
    }
}

impl From<RetryOverrides> for saga::RetryOverrides {
    fn from(o: RetryOverrides) -> Self {
        Self {
            initial_interval: o.initial_interval,
            multiplier: o.multiplier,
            max_interval: o.max_interval,
            max_attempts: o.max_attempts,
            max_compensate_attempts: o.max_compensate_attempts,
            jitter: o.jitter,
            // Unset, so inherited: a participant registered before version 5
            // gets the server's time budget for sagas started from now on.
            max_duration: None,
        }
    }
}

impl From<StepSpec> for saga::StepSpec {
    fn from(s: StepSpec) -> Self {
        Self {
            name: s.name,
            participant: s.participant,
            kind: saga::StepKind::Compensatable,
            forward: s.forward,
            compensate: Some(s.compensate),
            retry: s.retry.into(),
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
            kind: saga::StepKind::Compensatable,
            retry: s.retry.into(),
            timeout: s.timeout,
            input: None,
        }
    }
}

impl From<Participant> for saga::Participant {
    fn from(p: Participant) -> Self {
        Self {
            name: p.name,
            forward: p.forward,
            compensate: Some(p.compensate),
            retry: p.retry.into(),
            timeout: p.timeout,
            registered_at: p.registered_at,
            // Principals were first journaled in version 6.
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
                inline_steps: inline_steps.map(|steps| steps.into_iter().map(Into::into).collect()),
                steps: steps.into_iter().map(Into::into).collect(),
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
        }
    }
}

/// The way back, for tests that write records as a build before version 5
/// did. Only values such a build could hold convert: a policy with a time
/// budget, or an event it did not know, is a mistake in the test.
#[cfg(test)]
mod written_before {
    use super::*;

    impl From<&saga::RetryPolicy> for RetryPolicy {
        fn from(p: &saga::RetryPolicy) -> Self {
            assert_eq!(p.max_duration, None, "format 4 has no max_duration");
            Self {
                initial_interval: p.initial_interval,
                multiplier: p.multiplier,
                max_interval: p.max_interval,
                max_attempts: p.max_attempts,
                max_compensate_attempts: p.max_compensate_attempts,
                jitter: p.jitter,
            }
        }
    }

    impl From<&saga::RetryOverrides> for RetryOverrides {
        fn from(o: &saga::RetryOverrides) -> Self {
            assert_eq!(o.max_duration, None, "format 4 has no max_duration");
            Self {
                initial_interval: o.initial_interval,
                multiplier: o.multiplier,
                max_interval: o.max_interval,
                max_attempts: o.max_attempts,
                max_compensate_attempts: o.max_compensate_attempts,
                jitter: o.jitter,
            }
        }
    }

    impl From<&saga::StepSpec> for StepSpec {
        fn from(s: &saga::StepSpec) -> Self {
            Self {
                name: s.name.clone(),
                participant: s.participant.clone(),
                forward: s.forward.clone(),
                compensate: s.compensate.clone().expect("a compensate endpoint"),
                retry: (&s.retry).into(),
                timeout: s.timeout,
            }
        }
    }

    impl From<&saga::StepDef> for StepDef {
        fn from(s: &saga::StepDef) -> Self {
            Self {
                name: s.name.clone(),
                participant: s.participant.clone(),
                retry: (&s.retry).into(),
                timeout: s.timeout,
            }
        }
    }

    impl From<&saga::Participant> for Participant {
        fn from(p: &saga::Participant) -> Self {
            Self {
                name: p.name.clone(),
                forward: p.forward.clone(),
                compensate: p.compensate.clone().expect("a compensate endpoint"),
                retry: (&p.retry).into(),
                timeout: p.timeout,
                registered_at: p.registered_at,
            }
        }
    }

    impl From<&saga::Event> for Event {
        fn from(e: &saga::Event) -> Self {
            Self {
                saga: e.saga,
                seq: e.seq,
                offset: e.offset,
                at: e.at,
                kind: (&e.kind).into(),
            }
        }
    }

    impl From<&saga::EventKind> for EventKind {
        fn from(kind: &saga::EventKind) -> Self {
            use saga::EventKind as Current;
            match kind.clone() {
                Current::SagaStarted {
                    definition,
                    inline_steps,
                    steps,
                    payload,
                    idempotency_key,
                    trace,
                    started_by,
                    ..
                } => {
                    assert_eq!(started_by, None, "format 4 has no principals");
                    EventKind::SagaStarted {
                        definition,
                        inline_steps: inline_steps
                            .map(|steps| steps.iter().map(Into::into).collect()),
                        steps: steps.iter().map(Into::into).collect(),
                        payload,
                        idempotency_key,
                        trace,
                    }
                }
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
                Current::CancelRequested { reason, by } => {
                    assert_eq!(by, None, "format 4 has no principals");
                    EventKind::CancelRequested { reason }
                }
                Current::CompensationStarted { reason } => {
                    EventKind::CompensationStarted { reason }
                }
                Current::SagaCompleted => EventKind::SagaCompleted,
                Current::SagaCompensated => EventKind::SagaCompensated,
                Current::SagaFailed { reason } => EventKind::SagaFailed { reason },
                Current::RetryRequested { by } => {
                    assert_eq!(by, None, "format 4 has no principals");
                    EventKind::RetryRequested
                }
                Current::ResumeRequested { .. } => panic!("format 4 has no ResumeRequested"),
                Current::StartReached
                | Current::InputResolved { .. }
                | Current::InputUnresolved { .. } => panic!("format 4 has no {}", kind.name()),
                Current::EndpointsRefreshed { .. } => {
                    panic!("format 4 has no EndpointsRefreshed")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    use super::*;
    use crate::journal::{JournalError, kv::codec::*};

    /// The version the previous build wrote every record but bundles in.
    const PREVIOUS: u8 = 3;

    /// A record as the previous build wrote it: `value` in its old shape,
    /// version byte 3.
    fn encode_previous<T: Serialize>(value: &T) -> Vec<u8> {
        let mut bytes = encode(value);
        bytes[0] = PREVIOUS;
        bytes
    }

    /// The run writer's types as the previous build had them (`run.rs`).
    #[derive(Serialize)]
    struct RunW {
        saga: SagaId,
        first_seq: u64,
        first_offset: u64,
        events: Vec<(Timestamp, StoredKindW)>,
    }

    #[derive(Serialize)]
    #[allow(dead_code)]
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

    fn old_policy() -> RetryPolicy {
        RetryPolicy {
            initial_interval: Duration::from_millis(100),
            multiplier: 2.0,
            max_interval: Duration::from_secs(10),
            max_attempts: 5,
            max_compensate_attempts: 20,
            jitter: 0.2,
        }
    }

    fn old_step(name: &str) -> StepSpec {
        StepSpec {
            name: name.into(),
            participant: "payments".into(),
            forward: Endpoint::parse("f", "http://127.0.0.1:1/p.P/Pay").unwrap(),
            compensate: Endpoint::parse("c", "http://127.0.0.1:1/p.P/Refund").unwrap(),
            retry: old_policy(),
            timeout: Duration::from_secs(3),
        }
    }

    fn old_overrides() -> RetryOverrides {
        RetryOverrides {
            initial_interval: Some(Duration::from_millis(250)),
            multiplier: None,
            max_interval: None,
            max_attempts: Some(3),
            max_compensate_attempts: None,
            jitter: None,
        }
    }

    /// The policy a saga started by the previous build runs with: as it was,
    /// and no time budget.
    fn as_read() -> saga::RetryPolicy {
        saga::RetryPolicy {
            initial_interval: Duration::from_millis(100),
            multiplier: 2.0,
            max_interval: Duration::from_secs(10),
            max_attempts: 5,
            max_compensate_attempts: 20,
            jitter: 0.2,
            max_duration: None,
        }
    }

    #[test]
    fn runs_the_previous_build_wrote_read_with_attempts_only_policies() {
        let saga = SagaId::generate();
        let started = EventKind::SagaStarted {
            definition: "inline".into(),
            inline_steps: Some(vec![StepDef {
                name: "pay".into(),
                participant: "payments".into(),
                retry: old_overrides(),
                timeout: None,
            }]),
            steps: vec![old_step("pay")],
            payload: b"{}".to_vec(),
            idempotency_key: None,
            trace: None,
        };
        let run = RunW {
            saga,
            first_seq: 1,
            first_offset: 7,
            events: vec![
                (Timestamp(1_000), StoredKindW::Event(started)),
                (
                    Timestamp(1_001),
                    StoredKindW::Event(EventKind::AttemptStarted {
                        step: 0,
                        action: Action::Forward,
                        attempt: 1,
                    }),
                ),
            ],
        };
        let no_snapshots = |_: u64| -> Result<Vec<saga::StepSpec>, JournalError> {
            panic!("the run refers to no snapshot")
        };
        let events =
            decode_run(&event_key(saga, 1), &encode_previous(&run), &no_snapshots).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].offset, Offset(8));
        let saga::EventKind::SagaStarted {
            inline_steps: Some(inline),
            steps,
            ..
        } = &events[0].kind
        else {
            panic!("{:?}", events[0].kind)
        };
        assert_eq!(steps[0].retry, as_read());
        assert_eq!(steps[0].forward.url(), "http://127.0.0.1:1/p.P/Pay");
        assert_eq!(
            inline[0].retry,
            saga::RetryOverrides {
                initial_interval: Some(Duration::from_millis(250)),
                max_attempts: Some(3),
                ..Default::default()
            }
        );

        // And it behaves as it did: attempts alone bound it, however long they
        // take. The first attempt fails a day after it started, and a retry is
        // still due; a saga with today's default policy would give up.
        let mut state = saga::SagaState::fold(&events).unwrap();
        let a_day_later = Timestamp(1_001 + 86_400_000);
        let failed = |state: &saga::SagaState| {
            saga::attempt_finished(
                state,
                0,
                Action::Forward,
                1,
                saga::CallOutcome::Transient {
                    reason: "unavailable".into(),
                    retry_after: None,
                },
                a_day_later,
                0.5,
            )
        };
        assert!(matches!(
            failed(&state),
            saga::EventKind::AttemptFailed {
                retry_at: Some(_),
                ..
            }
        ));
        state.steps[0].retry = saga::RetryPolicy::default();
        assert!(matches!(
            failed(&state),
            saga::EventKind::AttemptFailed { retry_at: None, .. }
        ));
    }

    #[test]
    fn snapshots_and_participants_the_previous_build_wrote_read_too() {
        // A run whose SagaStarted refers to a step snapshot, both version 3.
        let saga = SagaId::generate();
        let snapshot = encode_previous(&vec![old_step("a"), old_step("b")]);
        let run = RunW {
            saga,
            first_seq: 1,
            first_offset: 1,
            events: vec![(
                Timestamp(5),
                StoredKindW::Started {
                    definition: "shop".into(),
                    snapshot: 42,
                    payload: b"{}".to_vec(),
                    idempotency_key: Some("k".into()),
                    trace: None,
                },
            )],
        };
        let steps_of = |id: u64| {
            assert_eq!(id, 42);
            decode::<Vec<saga::StepSpec>>(&snapshot_key(id), &snapshot)
        };
        let events = decode_run(&event_key(saga, 1), &encode_previous(&run), &steps_of).unwrap();
        let saga::EventKind::SagaStarted { steps, .. } = &events[0].kind else {
            panic!("{:?}", events[0].kind)
        };
        let names: Vec<_> = steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(steps.iter().all(|s| s.retry == as_read()));

        let old = Participant {
            name: "payments".into(),
            forward: Endpoint::parse("f", "http://127.0.0.1:1/p.P/Pay").unwrap(),
            compensate: Endpoint::parse("c", "http://127.0.0.1:1/p.P/Refund").unwrap(),
            retry: old_overrides(),
            timeout: Some(Duration::from_secs(2)),
            registered_at: Timestamp(9),
        };
        let key = name_key(PARTICIPANT, "payments");
        let participant: saga::Participant = decode(&key, &encode_previous(&old)).unwrap();
        assert_eq!(participant.retry.max_duration, None);
        assert_eq!(participant.retry.max_attempts, Some(3));
        assert_eq!(participant.timeout, Some(Duration::from_secs(2)));
        // Read as the current version, the old bytes are not mistaken for a record.
        let mut as_current = encode_previous(&old);
        as_current[0] = RECORD_VERSION;
        assert!(decode::<saga::Participant>(&key, &as_current).is_err());
    }

    #[test]
    fn records_of_this_version_keep_their_time_budget_and_new_variants() {
        let mut step = saga::StepSpec::from(old_step("pay"));
        step.retry.max_duration = Some(Duration::from_secs(300));
        let key = snapshot_key(1);
        let bytes = encode(&vec![step.clone()]);
        assert_eq!(bytes[0], RECORD_VERSION);
        assert_eq!(
            decode::<Vec<saga::StepSpec>>(&key, &bytes).unwrap(),
            vec![step.clone()]
        );

        // A run with what version 5 added: the time budget, a call not
        // delivered, a refresh.
        let saga = SagaId::generate();
        let kinds = [
            saga::EventKind::SagaStarted {
                definition: "inline".into(),
                inline_steps: None,
                steps: vec![step.clone()],
                payload: vec![],
                idempotency_key: None,
                trace: None,
                started_by: None,
                start_at: None,
                deadline: None,
            },
            saga::EventKind::AttemptFailed {
                step: 0,
                action: Action::Forward,
                attempt: 1,
                failure: Failure::NotDelivered,
                error: "refused".into(),
                retry_at: None,
            },
            saga::EventKind::EndpointsRefreshed {
                changes: vec![saga::EndpointChange {
                    step: 0,
                    action: Action::Compensate,
                    old: step.compensate.clone().expect("a compensate endpoint"),
                    new: Endpoint::parse("c", "http://127.0.0.1:2/p.P/Refund").unwrap(),
                }],
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
        let no_snapshots = |_: u64| -> Result<Vec<saga::StepSpec>, JournalError> {
            panic!("the run refers to no snapshot")
        };
        let bytes = encode_run(&run, None);
        assert_eq!(bytes[0], RECORD_VERSION);
        assert_eq!(
            decode_run(&event_key(saga, 1), &bytes, &no_snapshots).unwrap(),
            run
        );
    }
}
