//! The JSON of one archived saga: one line of an archive file, and of
//! `sagad export`.
//!
//! The conventions are those of every JSON document sagad writes ([`crate::json`]):
//! enum values without their prefix (`"state": "COMPENSATED"`, `"action":
//! "forward"`), timestamps as RFC 3339 UTC strings with milliseconds, durations
//! as strings like `"250ms"`. A record is the *record* kind of document there:
//! bytes (the payload, step outputs) that are not JSON are `null` with a
//! `..._base64` field next to them, so nothing is lost.
//!
//! Invariants:
//! - A record holds the saga's whole history: every event with its `seq`,
//!   global `offset`, time and fields. The `saga_started` event's content
//!   (definition, steps, payload, idempotency key) is the record's top level.
//! - A record depends on nothing but the events, so the same saga archived
//!   twice (see `archiver.rs`) gives the same line.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    json::{bytes_or_base64, duration, timestamp},
    saga::{
        Action, Event, EventKind, Failure, FoldError, Principal, RetryPolicy, SagaState, SagaStatus,
    },
};

/// One archived saga.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArchivedSaga {
    pub id: String,
    pub definition: String,
    /// `COMPLETED`, `COMPENSATED` (or `FAILED`, in an export of the journal).
    pub state: String,
    pub created_at: String,
    /// When the terminal event was journaled.
    pub finished_at: Option<String>,
    pub idempotency_key: Option<String>,
    /// The input, as the JSON it holds (`null` when empty or not JSON).
    pub payload: Value,
    /// The input when it is not JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
    /// Why the saga compensated or failed.
    pub error: Option<String>,
    pub cancel_reason: Option<String>,
    /// Who started the saga; absent when not recorded (sagas journaled
    /// before principals were).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<ArchivedPrincipal>,
    /// When a scheduled saga was to make its first call; absent: at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<String>,
    /// When the saga was to stop going forward; absent: no deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    pub steps: Vec<ArchivedStep>,
    pub events: Vec<ArchivedEvent>,
}

/// Who made a call (`crate::saga::Principal`): `kind` is `anonymous`,
/// `token` or `cert`; `name` the token's name or the certificate's identity
/// (empty for anonymous); `peer` the address the call came from, if known.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArchivedPrincipal {
    pub kind: String,
    pub name: String,
    pub peer: Option<String>,
}

impl From<&Principal> for ArchivedPrincipal {
    fn from(p: &Principal) -> Self {
        Self {
            kind: p.identity.kind().into(),
            name: p.identity.name().into(),
            peer: p.peer.map(|a| a.to_string()),
        }
    }
}

/// One step: its frozen spec and how it ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArchivedStep {
    pub name: String,
    pub participant: String,
    /// `SUCCEEDED`, `COMPENSATED`, `FAILED`, `SKIPPED`, …
    pub state: String,
    pub forward_endpoint: String,
    pub compensate_endpoint: String,
    pub timeout: String,
    /// The step's input mapping (field, pointer); absent without one. The
    /// input it built is in the step's `input_resolved` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<std::collections::BTreeMap<String, String>>,
    pub retry: ArchivedRetry,
    pub forward_attempts: u32,
    pub compensate_attempts: u32,
    pub last_error: Option<String>,
    /// The forward call's output, as the JSON it holds.
    pub output: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_base64: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

/// The retry policy a step ran with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArchivedRetry {
    pub initial_interval: String,
    pub multiplier: f64,
    pub max_interval: String,
    pub max_attempts: u32,
    pub max_compensate_attempts: u32,
    pub jitter: f64,
    /// The forward budget by time; absent for sagas started before there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<String>,
}

/// One journal event: where it sits, when, and what happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArchivedEvent {
    pub seq: u64,
    pub offset: u64,
    pub at: String,
    #[serde(flatten)]
    pub what: ArchivedEventKind,
}

/// What an event records; `"event"` names the kind, as in `sagad watch --json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ArchivedEventKind {
    /// Its content is the record's top level.
    SagaStarted {},
    AttemptStarted {
        step: String,
        action: String,
        attempt: u32,
    },
    AttemptSucceeded {
        step: String,
        action: String,
        attempt: u32,
        output: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output_base64: Option<String>,
    },
    AttemptFailed {
        step: String,
        action: String,
        attempt: u32,
        /// `REJECTED`, `TRANSIENT`, `INTERRUPTED` or `NOT_DELIVERED`.
        outcome: String,
        error: String,
        next_attempt_at: Option<String>,
    },
    CancelRequested {
        reason: String,
        /// Absent when not recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<ArchivedPrincipal>,
    },
    CompensationStarted {
        reason: String,
    },
    SagaCompleted {},
    SagaCompensated {},
    SagaFailed {
        reason: String,
    },
    RetryRequested {
        /// Absent when not recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<ArchivedPrincipal>,
    },
    EndpointsRefreshed {
        changes: Vec<ArchivedEndpointChange>,
    },
    ResumeRequested {
        /// Absent when not recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<ArchivedPrincipal>,
    },
    StartReached {},
    InputResolved {
        step: String,
        /// The input, as the JSON it holds.
        input: Value,
    },
    InputUnresolved {
        step: String,
        error: String,
    },
}

/// One endpoint a refresh replaced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArchivedEndpointChange {
    pub step: String,
    pub action: String,
    pub old_endpoint: String,
    pub new_endpoint: String,
}

/// The fields of a record that choosing and deduping need, read cheaply.
#[derive(Debug, Deserialize)]
pub struct RecordHead {
    pub id: String,
    pub finished_at: Option<String>,
}

fn retry(p: &RetryPolicy) -> ArchivedRetry {
    ArchivedRetry {
        initial_interval: duration(p.initial_interval),
        multiplier: p.multiplier,
        max_interval: duration(p.max_interval),
        max_attempts: p.max_attempts,
        max_compensate_attempts: p.max_compensate_attempts,
        jitter: p.jitter,
        max_duration: p.max_duration.map(duration),
    }
}

fn outcome_name(f: Failure) -> &'static str {
    match f {
        Failure::Rejected => "REJECTED",
        Failure::Transient => "TRANSIENT",
        Failure::Interrupted => "INTERRUPTED",
        Failure::NotDelivered => "NOT_DELIVERED",
    }
}

impl ArchivedSaga {
    /// The record of a saga's whole history (as `Journal::read_saga` gives it).
    pub fn from_events(events: &[Event]) -> Result<Self, FoldError> {
        let state = SagaState::fold(events)?;
        let step_name = |i: u32| {
            state
                .steps
                .get(i as usize)
                .map_or_else(|| format!("#{i}"), |s| s.name.clone())
        };
        let action = |a: Action| a.as_str().to_string();
        let events = events
            .iter()
            .map(|e| ArchivedEvent {
                seq: e.seq,
                offset: e.offset.get(),
                at: timestamp(e.at),
                what: match &e.kind {
                    EventKind::SagaStarted { .. } => ArchivedEventKind::SagaStarted {},
                    EventKind::AttemptStarted {
                        step,
                        action: a,
                        attempt,
                    } => ArchivedEventKind::AttemptStarted {
                        step: step_name(*step),
                        action: action(*a),
                        attempt: *attempt,
                    },
                    EventKind::AttemptSucceeded {
                        step,
                        action: a,
                        attempt,
                        output,
                    } => {
                        let (output, output_base64) = bytes_or_base64(output);
                        ArchivedEventKind::AttemptSucceeded {
                            step: step_name(*step),
                            action: action(*a),
                            attempt: *attempt,
                            output,
                            output_base64,
                        }
                    }
                    EventKind::AttemptFailed {
                        step,
                        action: a,
                        attempt,
                        failure,
                        error,
                        retry_at,
                    } => ArchivedEventKind::AttemptFailed {
                        step: step_name(*step),
                        action: action(*a),
                        attempt: *attempt,
                        outcome: outcome_name(*failure).into(),
                        error: error.clone(),
                        next_attempt_at: retry_at.map(timestamp),
                    },
                    EventKind::CancelRequested { reason, by } => {
                        ArchivedEventKind::CancelRequested {
                            reason: reason.clone(),
                            by: by.as_ref().map(Into::into),
                        }
                    }
                    EventKind::CompensationStarted { reason } => {
                        ArchivedEventKind::CompensationStarted {
                            reason: reason.clone(),
                        }
                    }
                    EventKind::SagaCompleted => ArchivedEventKind::SagaCompleted {},
                    EventKind::SagaCompensated => ArchivedEventKind::SagaCompensated {},
                    EventKind::SagaFailed { reason } => ArchivedEventKind::SagaFailed {
                        reason: reason.clone(),
                    },
                    EventKind::RetryRequested { by } => ArchivedEventKind::RetryRequested {
                        by: by.as_ref().map(Into::into),
                    },
                    EventKind::ResumeRequested { by } => ArchivedEventKind::ResumeRequested {
                        by: by.as_ref().map(Into::into),
                    },
                    EventKind::StartReached => ArchivedEventKind::StartReached {},
                    EventKind::InputResolved { step, input } => {
                        ArchivedEventKind::InputResolved {
                            step: step_name(*step),
                            // Always JSON: the mapping built it.
                            input: serde_json::from_slice(input).unwrap_or(Value::Null),
                        }
                    }
                    EventKind::InputUnresolved { step, error } => {
                        ArchivedEventKind::InputUnresolved {
                            step: step_name(*step),
                            error: error.clone(),
                        }
                    }
                    EventKind::EndpointsRefreshed { changes } => {
                        ArchivedEventKind::EndpointsRefreshed {
                            changes: changes
                                .iter()
                                .map(|c| ArchivedEndpointChange {
                                    step: step_name(c.step),
                                    action: action(c.action),
                                    old_endpoint: c.old.url().to_string(),
                                    new_endpoint: c.new.url().to_string(),
                                })
                                .collect(),
                        }
                    }
                },
            })
            .collect();
        let steps = state
            .steps
            .iter()
            .zip(&state.progress)
            .enumerate()
            .map(|(i, (spec, p))| {
                let (output, output_base64) =
                    bytes_or_base64(p.output.as_deref().unwrap_or_default());
                ArchivedStep {
                    name: spec.name.clone(),
                    participant: spec.participant.clone(),
                    state: state.step_status(i).as_str().into(),
                    forward_endpoint: spec.forward.url().into(),
                    compensate_endpoint: spec
                        .compensate
                        .as_ref()
                        .map(|e| e.url().to_string())
                        .unwrap_or_default(),
                    timeout: duration(spec.timeout),
                    input: spec.input.clone(),
                    retry: retry(&spec.retry),
                    forward_attempts: p.forward.attempts,
                    compensate_attempts: p.compensate.attempts,
                    last_error: p.last_error.clone(),
                    output,
                    output_base64,
                    started_at: p.started_at.map(timestamp),
                    finished_at: p.finished_at.map(timestamp),
                }
            })
            .collect();
        let (payload, payload_base64) = bytes_or_base64(&state.payload);
        Ok(Self {
            id: state.id.to_string(),
            definition: state.definition.clone(),
            state: state.status.as_str().into(),
            created_at: timestamp(state.created_at),
            finished_at: state.finished_at.map(timestamp),
            idempotency_key: state.idempotency_key.clone(),
            payload,
            payload_base64,
            error: state.error.clone(),
            cancel_reason: state.cancel_reason.clone(),
            started_by: state.started_by.as_ref().map(Into::into),
            start_at: state.start_at.map(timestamp),
            deadline: state.deadline.map(timestamp),
            steps,
            events,
        })
    }

    /// The UTC day the saga ended (`YYYY-MM-DD`): which archive file holds it.
    pub fn finished_day(&self) -> Option<&str> {
        self.finished_at.as_deref().and_then(|t| t.get(..10))
    }

    /// The record as one line of JSON, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        // Plain strings, numbers and JSON values: serializing cannot fail.
        let mut line = serde_json::to_vec(self).expect("an archived saga serializes");
        line.push(b'\n');
        line
    }

    /// Whether the saga's state is one a saga never leaves.
    pub fn is_final(&self) -> bool {
        [SagaStatus::Completed, SagaStatus::Compensated]
            .iter()
            .any(|s| s.as_str() == self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saga::Offset;
    use crate::{
        saga::Timestamp,
        testing::{next, started},
    };

    #[test]
    fn a_refresh_is_recorded_with_both_endpoints_and_the_step_with_the_new_one() {
        use crate::saga::{Endpoint, EndpointChange};
        let first = started("shop", None);
        let id = first.saga;
        let EventKind::SagaStarted { steps, .. } = &first.kind else {
            unreachable!()
        };
        let old = steps[0].compensate.clone().expect("a compensate endpoint");
        let new = Endpoint::parse("c", "http://127.0.0.1:7012/p.S/Undo").unwrap();
        let forward = |n| (Action::Forward, n);
        let compensate = |n| (Action::Compensate, n);
        let mut kinds = vec![];
        for ((action, attempt), ok) in [(forward(1), true), (compensate(1), false)] {
            kinds.push(EventKind::AttemptStarted {
                step: 0,
                action,
                attempt,
            });
            if action == Action::Forward {
                kinds.push(EventKind::CancelRequested {
                    reason: "r".into(),
                    by: None,
                });
            }
            kinds.push(if ok {
                EventKind::AttemptSucceeded {
                    step: 0,
                    action,
                    attempt,
                    output: vec![],
                }
            } else {
                EventKind::AttemptFailed {
                    step: 0,
                    action,
                    attempt,
                    failure: Failure::NotDelivered,
                    error: "refused".into(),
                    retry_at: None,
                }
            });
            if action == Action::Forward {
                kinds.push(EventKind::CompensationStarted { reason: "r".into() });
            }
        }
        kinds.extend([
            EventKind::SagaFailed {
                reason: "gave up".into(),
            },
            EventKind::EndpointsRefreshed {
                changes: vec![EndpointChange {
                    step: 0,
                    action: Action::Compensate,
                    old: old.clone(),
                    new: new.clone(),
                }],
            },
            EventKind::RetryRequested { by: None },
            EventKind::AttemptStarted {
                step: 0,
                action: Action::Compensate,
                attempt: 2,
            },
            EventKind::AttemptSucceeded {
                step: 0,
                action: Action::Compensate,
                attempt: 2,
                output: vec![],
            },
            EventKind::SagaCompensated,
        ]);
        let mut events = vec![first];
        for (i, kind) in kinds.into_iter().enumerate() {
            events.push(next(id, i as u64 + 2, kind));
        }
        let record = ArchivedSaga::from_events(&events).unwrap();
        assert_eq!(record.state, "COMPENSATED");
        assert_eq!(record.steps[0].compensate_endpoint, new.url());
        let json = serde_json::to_value(&record).unwrap();
        let refresh = json["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["event"] == "endpoints_refreshed")
            .expect("the refresh is in the record");
        assert_eq!(
            refresh["changes"],
            serde_json::json!([{
                "step": "only",
                "action": "compensate",
                "old_endpoint": old.url(),
                "new_endpoint": new.url(),
            }])
        );
        let failed = json["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["event"] == "attempt_failed")
            .unwrap();
        assert_eq!(failed["outcome"], "NOT_DELIVERED");
        let back: ArchivedSaga = serde_json::from_value(json).unwrap();
        assert_eq!(back, record);
    }

    #[test]
    fn a_record_holds_the_whole_history_and_round_trips() {
        let mut first = started("shop", Some("order-7"));
        let id = first.saga;
        first.offset = Offset(10);
        let mut events = vec![first];
        for (seq, kind) in [
            EventKind::AttemptStarted {
                step: 0,
                action: Action::Forward,
                attempt: 1,
            },
            EventKind::AttemptFailed {
                step: 0,
                action: Action::Forward,
                attempt: 1,
                failure: Failure::Transient,
                error: "busy".into(),
                retry_at: Some(Timestamp(1_700_000_000_000)),
            },
            EventKind::AttemptStarted {
                step: 0,
                action: Action::Forward,
                attempt: 2,
            },
            EventKind::AttemptSucceeded {
                step: 0,
                action: Action::Forward,
                attempt: 2,
                output: vec![0xff, 0x00],
            },
            EventKind::SagaCompleted,
        ]
        .into_iter()
        .enumerate()
        {
            let mut e = next(id, seq as u64 + 2, kind);
            e.offset = Offset(20 + seq as u64);
            events.push(e);
        }
        let record = ArchivedSaga::from_events(&events).unwrap();
        assert_eq!(record.id, id.to_string());
        assert_eq!(record.state, "COMPLETED");
        assert!(record.is_final());
        assert_eq!(record.payload, serde_json::json!({"order_id": 1}));
        assert_eq!(record.payload_base64, None);
        assert_eq!(record.idempotency_key.as_deref(), Some("order-7"));
        assert_eq!(record.steps[0].state, "SUCCEEDED");
        assert_eq!(record.steps[0].output, Value::Null);
        assert_eq!(record.steps[0].output_base64.as_deref(), Some("/wA="));
        assert_eq!(record.events.len(), 6);
        assert_eq!(
            (record.events[0].seq, record.events[0].offset),
            (1, 10),
            "seqs and offsets are kept"
        );
        assert_eq!(record.finished_day(), record.created_at.get(..10));

        let line = record.to_line();
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        let value: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(value["events"][2]["event"], "attempt_failed");
        assert_eq!(value["events"][2]["outcome"], "TRANSIENT");
        assert_eq!(value["events"][2]["step"], "only");
        assert_eq!(
            value["events"][2]["next_attempt_at"],
            "2023-11-14T22:13:20.000Z"
        );
        assert_eq!(value["events"][5]["event"], "saga_completed");
        let back: ArchivedSaga = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, record);
        assert_eq!(
            ArchivedSaga::from_events(&events).unwrap().to_line(),
            line,
            "the same history gives the same line"
        );
    }
}
