//! The shapes of format version 8 that changed in version 9, read only to
//! convert them.
//!
//! Version 9 lets a step build its input from JSON Pointers
//! (`saga::input`): `StepSpec` and `StepDef` gained `input` after `timeout`,
//! so `SagaStarted` (which holds both) and the step snapshot changed with
//! them; `EventKind` gained `InputResolved` and `InputUnresolved`, appended.
//! postcard encodes fields by position, so these types keep version 8's
//! exact field and variant order; they are frozen and never written. What
//! they read has no input mapping: its steps send the payload as it is.
//! Version 7's `SagaStarted` (`v7.rs`) holds these steps too.

use std::time::Duration;

use serde::Deserialize;

use super::kinds;
use crate::saga::{
    self, Endpoint, Principal, RetryOverrides, RetryPolicy, StepKind, Timestamp, TraceContext,
};

/// [`saga::StepSpec`] without `input`.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct StepSpec {
    pub(super) name: String,
    pub(super) participant: String,
    pub(super) kind: StepKind,
    pub(super) forward: Endpoint,
    pub(super) compensate: Endpoint,
    pub(super) retry: RetryPolicy,
    pub(super) timeout: Duration,
}

/// [`saga::StepDef`] without `input`.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct StepDef {
    pub(super) name: String,
    pub(super) participant: String,
    pub(super) kind: StepKind,
    pub(super) retry: RetryOverrides,
    pub(super) timeout: Option<Duration>,
}

/// `SagaStarted` as version 8 wrote it: steps without inputs (the rest of
/// version 8's event kinds are those of `kinds.rs`).
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
    start_at: Option<Timestamp>,
    deadline: Option<Timestamp>,
}

/// [`saga::Event`] as version 8 wrote it.
pub(super) type Event = kinds::Event<Started>;
/// [`saga::EventKind`] as version 8 wrote it.
pub(super) type EventKind = kinds::EventKind<Started>;

impl From<StepSpec> for saga::StepSpec {
    fn from(s: StepSpec) -> Self {
        Self {
            name: s.name,
            participant: s.participant,
            kind: s.kind,
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
            kind: s.kind,
            retry: s.retry,
            timeout: s.timeout,
            input: None,
        }
    }
}

/// Steps of either version-8 shape, converted.
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
            start_at: s.start_at,
            deadline: s.deadline,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        journal::kv::codec::*,
        saga::{Offset, SagaId},
    };

    fn step(name: &str) -> saga::StepSpec {
        saga::StepSpec {
            name: name.into(),
            participant: "payments".into(),
            kind: StepKind::Compensatable,
            forward: Endpoint::parse("e", "http://127.0.0.1:1/p.P/Pay").unwrap(),
            compensate: Some(Endpoint::parse("e", "http://127.0.0.1:1/p.P/Refund").unwrap()),
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(3),
            input: None,
        }
    }

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

    /// A record as the previous build wrote it: `value` in its shape, version 8.
    fn encode_previous<T: serde::Serialize>(value: &T) -> Vec<u8> {
        let mut bytes = encode(value);
        bytes[0] = INPUTS_SINCE_VERSION - 1;
        bytes
    }

    /// Snapshots and whole events of version 8 read as steps without an
    /// input mapping; today's keep theirs.
    #[test]
    fn version_8_steps_have_no_input_and_today_s_keep_theirs() {
        let (price, charge) = (step("price"), step("charge"));
        let snapshot = encode_previous(&vec![frozen(&price), frozen(&charge)]);
        let read: Vec<saga::StepSpec> = decode(&snapshot_key(3), &snapshot).unwrap();
        assert_eq!(read, vec![price.clone(), charge.clone()]);

        let saga = SagaId::generate();
        let started = Event {
            saga,
            seq: 1,
            offset: Offset(1),
            at: Timestamp(5),
            kind: EventKind::SagaStarted(Started {
                definition: "inline".into(),
                inline_steps: Some(vec![StepDef {
                    name: "price".into(),
                    participant: "payments".into(),
                    kind: StepKind::Compensatable,
                    retry: RetryOverrides::default(),
                    timeout: None,
                }]),
                steps: vec![frozen(&price)],
                payload: vec![],
                idempotency_key: None,
                trace: None,
                started_by: None,
                start_at: Some(Timestamp(9)),
                deadline: None,
            }),
        };
        let read: saga::Event = decode(&event_key(saga, 1), &encode_previous(&started)).unwrap();
        let saga::EventKind::SagaStarted {
            inline_steps,
            steps,
            start_at,
            ..
        } = read.kind
        else {
            panic!("{:?}", read.kind)
        };
        assert_eq!((steps, start_at), (vec![price.clone()], Some(Timestamp(9))));
        assert_eq!(inline_steps.unwrap()[0].input, None);

        let mut mapped = charge;
        mapped.input = Some([("amount".into(), "/steps/price/output/total".into())].into());
        let bytes = encode(&vec![price, mapped.clone()]);
        assert_eq!(bytes[0], RECORD_VERSION);
        let read: Vec<saga::StepSpec> = decode(&snapshot_key(4), &bytes).unwrap();
        assert_eq!(read[1], mapped);
    }
}
