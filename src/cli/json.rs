//! The JSON that `--output json` prints: a stable shape for scripts.
//!
//! The conventions are those of every JSON document sagad writes
//! (`sagad::json`): enum values without their prefix (`"state": "COMPENSATED"`,
//! `"outcome": "TRANSIENT"`, `"action": "forward"`); timestamps as RFC 3339 UTC
//! strings with milliseconds, `null` when unset; policy durations as strings in
//! the form definitions use (`"250ms"`), attempt durations as `duration_ms`
//! numbers. These documents are *views* (the API's current state of a saga, or
//! its events as they come): payloads and outputs are the JSON they hold, a
//! string when they are other text, `{"$base64": "…"}` when they are not text
//! at all, `null` when empty. Empty API strings are `null`.

use sagad::{json::bytes_or_text, proto::v1 as pb};
use serde_json::{Value, json};

use crate::cli::output::{
    action_name, between, config_duration, outcome_name, principal_kind, protocol_name, rfc3339,
    saga_state_name, step_kind_name, step_state_name,
};

fn time(ts: Option<&prost_types::Timestamp>) -> Value {
    ts.map(|t| Value::String(rfc3339(t))).unwrap_or(Value::Null)
}

fn duration(d: Option<&prost_types::Duration>) -> Value {
    d.map(|d| Value::String(config_duration(d)))
        .unwrap_or(Value::Null)
}

fn text(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        Value::String(s.to_string())
    }
}

pub fn retry(p: Option<&pb::RetryPolicy>) -> Value {
    let Some(p) = p else { return Value::Null };
    json!({
        "initial_interval": duration(p.initial_interval.as_ref()),
        "multiplier": p.multiplier,
        "max_interval": duration(p.max_interval.as_ref()),
        "max_attempts": p.max_attempts,
        "max_compensate_attempts": p.max_compensate_attempts,
        "jitter": p.jitter,
        "max_duration": duration(p.max_duration.as_ref()),
    })
}

fn attempt(a: &pb::Attempt) -> Value {
    json!({
        "action": action_name(a.action),
        "number": a.number,
        "outcome": outcome_name(a.outcome),
        "started_at": time(a.started_at.as_ref()),
        "finished_at": time(a.finished_at.as_ref()),
        "duration_ms": between(a.started_at.as_ref(), a.finished_at.as_ref())
            .map(|d| d.as_secs_f64() * 1000.0),
        "error": text(&a.error),
        "next_attempt_at": time(a.next_attempt_at.as_ref()),
    })
}

fn endpoint_change(c: &pb::EndpointChange) -> Value {
    json!({
        "step": c.step,
        "action": action_name(c.action),
        "old_endpoint": c.old_endpoint,
        "new_endpoint": c.new_endpoint,
        "at": time(c.at.as_ref()),
    })
}

/// What the attempts a step's view leaves out were.
fn elided(e: &pb::AttemptsSummary) -> Value {
    json!({
        "count": e.count,
        "forward": e.forward,
        "not_delivered": e.not_delivered,
        "first_error": text(&e.first_error),
        "last_error": text(&e.last_error),
        "first_started_at": time(e.first_started_at.as_ref()),
        "last_finished_at": time(e.last_finished_at.as_ref()),
    })
}

fn step(s: &pb::Step) -> Value {
    json!({
        "name": s.name,
        "participant": s.participant,
        "kind": step_kind_name(s.kind),
        "state": step_state_name(s.state),
        "forward_attempts": s.forward_attempts,
        "compensate_attempts": s.compensate_attempts,
        "last_error": text(&s.last_error),
        "output": bytes_or_text(&s.output),
        "input_mapping": mapping(&s.input_mapping),
        "input": bytes_or_text(&s.input),
        "started_at": time(s.started_at.as_ref()),
        "finished_at": time(s.finished_at.as_ref()),
        "next_attempt_at": time(s.next_attempt_at.as_ref()),
        "forward_endpoint": s.forward_endpoint,
        "compensate_endpoint": s.compensate_endpoint,
        "timeout": duration(s.timeout.as_ref()),
        "retry": retry(s.retry.as_ref()),
        "attempts": s.attempts.iter().map(attempt).collect::<Vec<_>>(),
        "elided_attempts": s.elided_attempts.as_ref().map(elided),
        "endpoint_changes": s.endpoint_changes.iter().map(endpoint_change).collect::<Vec<_>>(),
    })
}

/// An input mapping, ordered by field; `null` for a step without one.
fn mapping(m: &std::collections::HashMap<String, String>) -> Value {
    if m.is_empty() {
        return Value::Null;
    }
    let sorted: std::collections::BTreeMap<&String, &String> = m.iter().collect();
    json!(sorted)
}

/// Who made a call, as the archive records write it: `{"kind": "token",
/// "name": "ops", "peer": "127.0.0.1:50412"}`; `null` when not recorded.
fn principal(p: Option<&pb::Principal>) -> Value {
    p.map_or(Value::Null, |p| {
        json!({
            "kind": principal_kind(p),
            "name": p.name,
            "peer": text(&p.peer),
        })
    })
}

/// A saga with its steps and their attempts (the last ones, and what the
/// earlier ones were, unless every one was asked for).
pub fn saga(s: &pb::Saga) -> Value {
    json!({
        "id": s.id,
        "definition": s.definition,
        "state": saga_state_name(s.state),
        "payload": bytes_or_text(&s.payload),
        "idempotency_key": text(&s.idempotency_key),
        "error": text(&s.error),
        "cancel_reason": text(&s.cancel_reason),
        "trace_id": text(&s.trace_id),
        "created_at": time(s.created_at.as_ref()),
        "updated_at": time(s.updated_at.as_ref()),
        "finished_at": time(s.finished_at.as_ref()),
        "start_at": time(s.start_at.as_ref()),
        "deadline": time(s.deadline.as_ref()),
        "started_by": principal(s.started_by.as_ref()),
        "owner": text(&s.owner),
        "audit": s.audit.iter().map(|a| json!({
            "action": a.action,
            "at": time(a.at.as_ref()),
            "by": principal(a.by.as_ref()),
        })).collect::<Vec<_>>(),
        "steps": s.steps.iter().map(step).collect::<Vec<_>>(),
    })
}

/// A saga as `list` shows it: where it is and why, no payload, no attempts.
pub fn saga_summary(s: &pb::SagaSummary) -> Value {
    let current = s.current_step.as_ref().map(|c| {
        json!({
            "index": c.index,
            "name": c.name,
            "participant": c.participant,
            "state": step_state_name(c.state),
            "forward_attempts": c.forward_attempts,
            "compensate_attempts": c.compensate_attempts,
            "last_error": text(&c.last_error),
            "next_attempt_at": time(c.next_attempt_at.as_ref()),
        })
    });
    json!({
        "id": s.id,
        "definition": s.definition,
        "state": saga_state_name(s.state),
        "idempotency_key": text(&s.idempotency_key),
        "error": text(&s.error),
        "cancel_reason": text(&s.cancel_reason),
        "trace_id": text(&s.trace_id),
        "created_at": time(s.created_at.as_ref()),
        "updated_at": time(s.updated_at.as_ref()),
        "finished_at": time(s.finished_at.as_ref()),
        "step_count": s.step_count,
        "current_step": current,
        "started_by": principal(s.started_by.as_ref()),
    })
}

pub fn participant(p: &pb::Participant) -> Value {
    json!({
        "name": p.name,
        "protocol": protocol_name(p.protocol),
        "forward_endpoint": p.forward_endpoint,
        "compensate_endpoint": p.compensate_endpoint,
        "timeout": duration(p.timeout.as_ref()),
        "retry": retry(p.retry.as_ref()),
        "max_in_flight": (p.max_in_flight > 0).then_some(p.max_in_flight),
        "rate": text(&p.rate),
        "registered_at": time(p.registered_at.as_ref()),
        "registered_by": principal(p.registered_by.as_ref()),
    })
}

pub fn definition(d: &pb::SagaDefinition) -> Value {
    json!({
        "name": d.name,
        "description": text(&d.description),
        "deadline": duration(d.deadline.as_ref()),
        "steps": d.steps.iter().map(|s| json!({
            "name": s.name,
            "participant": s.participant,
            "kind": step_kind_name(s.kind),
            "input": mapping(&s.input),
            "timeout": duration(s.timeout.as_ref()),
            "retry": retry(s.retry.as_ref()),
        })).collect::<Vec<_>>(),
    })
}

/// One event of `watch`: the envelope, `"event"` naming its kind, and the
/// kind's fields alongside.
pub fn event(e: &pb::SagaEvent) -> Value {
    use pb::saga_event::Event as E;
    let mut value = json!({
        "saga_id": e.saga_id,
        "seq": e.seq,
        "offset": e.offset,
        "at": time(e.at.as_ref()),
        "state": saga_state_name(e.state),
    });
    let (kind, fields) = match &e.event {
        Some(E::SagaStarted(s)) => (
            "saga_started",
            json!({
                "definition": s.definition,
                "steps": s.steps,
                "idempotency_key": text(&s.idempotency_key),
                "started_by": principal(s.started_by.as_ref()),
                "start_at": time(s.start_at.as_ref()),
                "deadline": time(s.deadline.as_ref()),
            }),
        ),
        Some(E::AttemptStarted(a)) => (
            "attempt_started",
            json!({ "step": a.step, "action": action_name(a.action), "attempt": a.attempt }),
        ),
        Some(E::AttemptSucceeded(a)) => (
            "attempt_succeeded",
            json!({
                "step": a.step,
                "action": action_name(a.action),
                "attempt": a.attempt,
                "output": bytes_or_text(&a.output),
            }),
        ),
        Some(E::AttemptFailed(a)) => (
            "attempt_failed",
            json!({
                "step": a.step,
                "action": action_name(a.action),
                "attempt": a.attempt,
                "outcome": outcome_name(a.outcome),
                "error": text(&a.error),
                "next_attempt_at": time(a.next_attempt_at.as_ref()),
            }),
        ),
        Some(E::CancelRequested(c)) => (
            "cancel_requested",
            json!({ "reason": c.reason, "by": principal(c.by.as_ref()) }),
        ),
        Some(E::CompensationStarted(c)) => ("compensation_started", json!({ "reason": c.reason })),
        Some(E::SagaCompleted(_)) => ("saga_completed", json!({})),
        Some(E::SagaCompensated(_)) => ("saga_compensated", json!({})),
        Some(E::SagaFailed(f)) => ("saga_failed", json!({ "reason": f.reason })),
        Some(E::RetryRequested(r)) => {
            ("retry_requested", json!({ "by": principal(r.by.as_ref()) }))
        }
        Some(E::ResumeRequested(r)) => (
            "resume_requested",
            json!({ "by": principal(r.by.as_ref()) }),
        ),
        Some(E::StartReached(_)) => ("start_reached", json!({})),
        Some(E::InputResolved(r)) => (
            "input_resolved",
            json!({ "step": r.step, "input": bytes_or_text(&r.input) }),
        ),
        Some(E::InputUnresolved(r)) => (
            "input_unresolved",
            json!({ "step": r.step, "error": r.error }),
        ),
        Some(E::EndpointsRefreshed(r)) => (
            "endpoints_refreshed",
            json!({ "changes": r.changes.iter().map(endpoint_change).collect::<Vec<_>>() }),
        ),
        None => ("unknown", json!({})),
    };
    let object = value
        .as_object_mut()
        .expect("json! of an object literal is an object");
    object.insert("event".into(), Value::String(kind.into()));
    if let Value::Object(fields) = fields {
        object.extend(fields);
    }
    value
}
