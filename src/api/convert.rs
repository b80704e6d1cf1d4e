//! Protobuf ↔ domain conversions. Conversions from the wire check what the
//! protobuf types cannot express (negative durations, unknown enum values) and
//! say which field is wrong.

use std::time::Duration;

use tonic::Status;

pub use super::wire::{principal, saga_state, timestamp};
use super::{
    summary::{self, Attempts},
    wire::step_state,
};
use crate::{
    engine::{FeedItem, When},
    journal::postgres::{Lease, NodeInfo},
    proto::v1 as pb,
    saga::{
        Action, AttemptRecord, AttemptResult, AuditEntry, Definition, Endpoint, Event, EventKind,
        Failure, Participant, Protocol, RetryOverrides, RetryPolicy, SagaState, SagaStatus,
        StepDef, StepKind, Timestamp,
        input::InputMap,
        limits::{Limits, Rate, check_max_in_flight},
    },
};

pub fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// A lease's time left as a signed wire duration: negative once it has run
/// out, by how long ago (seconds and nanos share the sign, as protobuf says).
fn lease_remaining(lease: Lease) -> prost_types::Duration {
    match lease {
        Lease::Left(left) => duration(left),
        Lease::Expired { ago } => {
            let ago = duration(ago);
            prost_types::Duration {
                seconds: -ago.seconds,
                nanos: -ago.nanos,
            }
        }
    }
}

/// One node of the roster.
pub fn node(n: &NodeInfo) -> pb::Node {
    pb::Node {
        node_id: n.node.to_string(),
        addr: n.addr.clone(),
        epoch: n.epoch.0,
        lease_remaining: Some(lease_remaining(n.lease)),
        lease_expired: n.lease.is_expired(),
        owned_open: n.owned_open,
        joined_at: Some(timestamp(n.joined_at)),
    }
}

/// A wire duration, checked: `field` names it in the error.
pub fn duration_from(
    field: &str,
    d: Option<prost_types::Duration>,
) -> Result<Option<Duration>, Status> {
    d.map(|d| {
        Duration::try_from(d).map_err(|_| {
            Status::invalid_argument(format!(
                "{field} must be a non-negative duration (got {}s {}ns)",
                d.seconds, d.nanos
            ))
        })
    })
    .transpose()
}

/// A wire time, checked: `field` names it in the error.
pub fn timestamp_from(
    field: &str,
    t: Option<prost_types::Timestamp>,
) -> Result<Option<Timestamp>, Status> {
    t.map(|t| {
        std::time::SystemTime::try_from(t)
            .ok()
            .filter(|t| *t >= std::time::UNIX_EPOCH)
            .map(Timestamp::from)
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "{field} must be a time after 1970 (got {}s {}ns)",
                    t.seconds, t.nanos
                ))
            })
    })
    .transpose()
}

/// A time a request gives either absolute (`at_field`) or as a duration
/// (`after_field`), at most one of the two.
pub fn when_from(
    (at_field, at): (&str, Option<prost_types::Timestamp>),
    (after_field, after): (&str, Option<prost_types::Duration>),
) -> Result<Option<When>, Status> {
    match (
        timestamp_from(at_field, at)?,
        duration_from(after_field, after)?,
    ) {
        (Some(_), Some(_)) => Err(Status::invalid_argument(format!(
            "give {at_field} or {after_field}, not both"
        ))),
        (Some(t), None) => Ok(Some(When::At(t))),
        (None, Some(d)) => Ok(Some(When::After(d))),
        (None, None) => Ok(None),
    }
}

pub fn retry_overrides(field: &str, p: Option<pb::RetryPolicy>) -> Result<RetryOverrides, Status> {
    let Some(p) = p else {
        return Ok(RetryOverrides::default());
    };
    Ok(RetryOverrides {
        initial_interval: duration_from(&format!("{field}.initial_interval"), p.initial_interval)?,
        multiplier: p.multiplier,
        max_interval: duration_from(&format!("{field}.max_interval"), p.max_interval)?,
        max_attempts: p.max_attempts,
        max_compensate_attempts: p.max_compensate_attempts,
        jitter: p.jitter,
        max_duration: duration_from(&format!("{field}.max_duration"), p.max_duration)?,
    })
}

fn retry_policy_pb(o: RetryOverrides) -> Option<pb::RetryPolicy> {
    (!o.is_empty()).then(|| pb::RetryPolicy {
        initial_interval: o.initial_interval.map(duration),
        multiplier: o.multiplier,
        max_interval: o.max_interval.map(duration),
        max_attempts: o.max_attempts,
        max_compensate_attempts: o.max_compensate_attempts,
        jitter: o.jitter,
        max_duration: o.max_duration.map(duration),
    })
}

fn resolved_policy_pb(p: RetryPolicy) -> pb::RetryPolicy {
    retry_policy_pb(p.into()).unwrap_or_default()
}

/// The wire form of a protocol; gRPC is written out, never left unspecified.
pub fn protocol_pb(protocol: Protocol) -> pb::Protocol {
    match protocol {
        Protocol::Grpc => pb::Protocol::Grpc,
        Protocol::Http => pb::Protocol::Http,
        Protocol::H2c => pb::Protocol::H2c,
    }
}

/// The protocol a registration asks for; unspecified is gRPC, as it was
/// before the field existed. An unknown number is refused, naming it.
pub fn protocol_from(value: i32) -> Result<Protocol, Status> {
    match pb::Protocol::try_from(value) {
        Ok(pb::Protocol::Unspecified | pb::Protocol::Grpc) => Ok(Protocol::Grpc),
        Ok(pb::Protocol::Http) => Ok(Protocol::Http),
        Ok(pb::Protocol::H2c) => Ok(Protocol::H2c),
        Err(_) => Err(Status::invalid_argument(format!(
            "protocol {value} is not one this server knows: use PROTOCOL_GRPC (1), PROTOCOL_HTTP (2) or PROTOCOL_H2C (3)"
        ))),
    }
}

/// An endpoint's URL, or empty for none (a step that cannot be undone).
fn url_or_empty(e: Option<&Endpoint>) -> String {
    e.map(|e| e.url().to_string()).unwrap_or_default()
}

pub fn participant(p: &Participant) -> pb::Participant {
    pb::Participant {
        protocol: protocol_pb(p.forward.protocol()) as i32,
        name: p.name.clone(),
        forward_endpoint: p.forward.url().to_string(),
        compensate_endpoint: url_or_empty(p.compensate.as_ref()),
        retry: retry_policy_pb(p.retry),
        timeout: p.timeout.map(duration),
        registered_at: Some(timestamp(p.registered_at)),
        registered_by: p.registered_by.as_ref().map(principal),
        max_in_flight: p.limits.max_in_flight.unwrap_or(0),
        rate: p.limits.rate.map(|r| r.to_string()).unwrap_or_default(),
    }
}

/// A registration's limits from the wire: 0 and empty are none.
pub fn limits_from(max_in_flight: u32, rate: &str) -> Result<Limits, Status> {
    let max_in_flight = match max_in_flight {
        0 => None,
        n => Some(check_max_in_flight(n).map_err(Status::invalid_argument)?),
    };
    let rate = match rate.trim() {
        "" => None,
        text => Some(text.parse::<Rate>().map_err(Status::invalid_argument)?),
    };
    Ok(Limits {
        max_in_flight,
        rate,
    })
}

fn audit_entry(a: &AuditEntry) -> pb::AuditEntry {
    pb::AuditEntry {
        action: a.action.as_str().to_string(),
        at: Some(timestamp(a.at)),
        by: a.by.as_ref().map(principal),
    }
}

pub fn step_def(index: usize, s: pb::StepDefinition) -> Result<StepDef, Status> {
    Ok(StepDef {
        retry: retry_overrides(&format!("steps[{index}].retry"), s.retry)?,
        timeout: duration_from(&format!("steps[{index}].timeout"), s.timeout)?,
        kind: step_kind_from(&format!("steps[{index}].kind"), s.kind)?,
        input: (!s.input.is_empty()).then(|| s.input.into_iter().collect()),
        name: s.name,
        participant: s.participant,
    })
}

fn step_kind_from(field: &str, value: i32) -> Result<StepKind, Status> {
    match pb::StepKind::try_from(value) {
        Ok(pb::StepKind::Compensatable) => Ok(StepKind::Compensatable),
        Ok(pb::StepKind::Pivot) => Ok(StepKind::Pivot),
        Ok(pb::StepKind::Retriable) => Ok(StepKind::Retriable),
        Err(_) => Err(Status::invalid_argument(format!(
            "{field} is {value}, not a StepKind (0 compensatable, 1 pivot, 2 retriable)"
        ))),
    }
}

pub fn step_kind_pb(kind: StepKind) -> pb::StepKind {
    match kind {
        StepKind::Compensatable => pb::StepKind::Compensatable,
        StepKind::Pivot => pb::StepKind::Pivot,
        StepKind::Retriable => pb::StepKind::Retriable,
    }
}

fn step_def_pb(s: &StepDef) -> pb::StepDefinition {
    pb::StepDefinition {
        name: s.name.clone(),
        participant: s.participant.clone(),
        retry: retry_policy_pb(s.retry),
        timeout: s.timeout.map(duration),
        kind: step_kind_pb(s.kind) as i32,
        input: input_pb(s.input.as_ref()),
    }
}

/// An input mapping on the wire (empty: none).
fn input_pb(input: Option<&InputMap>) -> std::collections::HashMap<String, String> {
    input
        .into_iter()
        .flatten()
        .map(|(f, p)| (f.clone(), p.clone()))
        .collect()
}

pub fn definition(d: &Definition) -> pb::SagaDefinition {
    pb::SagaDefinition {
        name: d.name.clone(),
        description: d.description.clone(),
        steps: d.steps.iter().map(step_def_pb).collect(),
        deadline: d.deadline.map(duration),
    }
}

/// A state filter from the wire: `None` for unspecified (any state).
pub fn saga_status_from(value: i32) -> Result<Option<SagaStatus>, Status> {
    let state = pb::SagaState::try_from(value).map_err(|_| {
        Status::invalid_argument(format!(
            "state {value} is not a SagaState (use 1-6, e.g. SAGA_STATE_RUNNING)"
        ))
    })?;
    Ok(match state {
        pb::SagaState::Unspecified => None,
        pb::SagaState::Running => Some(SagaStatus::Running),
        pb::SagaState::Compensating => Some(SagaStatus::Compensating),
        pb::SagaState::Completed => Some(SagaStatus::Completed),
        pb::SagaState::Compensated => Some(SagaStatus::Compensated),
        pb::SagaState::Failed => Some(SagaStatus::Failed),
        pb::SagaState::Scheduled => Some(SagaStatus::Scheduled),
    })
}

pub fn action(a: Action) -> pb::Action {
    match a {
        Action::Forward => pb::Action::Forward,
        Action::Compensate => pb::Action::Compensate,
    }
}

fn failure_outcome(f: Failure) -> pb::AttemptOutcome {
    match f {
        Failure::Rejected => pb::AttemptOutcome::Rejected,
        Failure::Transient => pb::AttemptOutcome::Transient,
        Failure::Interrupted => pb::AttemptOutcome::Interrupted,
        Failure::NotDelivered => pb::AttemptOutcome::NotDelivered,
    }
}

fn endpoint_change(
    step: &str,
    a: Action,
    old: &Endpoint,
    new: &Endpoint,
    at: Timestamp,
) -> pb::EndpointChange {
    pb::EndpointChange {
        step: step.to_string(),
        action: action(a) as i32,
        old_endpoint: old.url().to_string(),
        new_endpoint: new.url().to_string(),
        at: Some(timestamp(at)),
    }
}

fn attempt(a: &AttemptRecord) -> pb::Attempt {
    let (outcome, error, next) = match &a.result {
        AttemptResult::InFlight => (pb::AttemptOutcome::InFlight, String::new(), None),
        AttemptResult::Succeeded => (pb::AttemptOutcome::Succeeded, String::new(), None),
        AttemptResult::Failed {
            failure,
            error,
            retry_at,
        } => (
            failure_outcome(*failure),
            error.clone(),
            retry_at.map(timestamp),
        ),
    };
    pb::Attempt {
        action: action(a.action) as i32,
        number: a.number,
        outcome: outcome as i32,
        started_at: Some(timestamp(a.started_at)),
        finished_at: a.finished_at.map(timestamp),
        error,
        next_attempt_at: next,
    }
}

/// A saga with its steps, carrying as many of each step's attempts as
/// `shown` says (the rest summarised, see `summary.rs`), and no owner.
pub fn saga(s: &SagaState, shown: Attempts) -> pb::Saga {
    let steps = s
        .steps
        .iter()
        .zip(&s.progress)
        .enumerate()
        .map(|(i, (spec, p))| {
            let (elided, attempts) = shown.split(&p.attempts);
            pb::Step {
                name: spec.name.clone(),
                participant: spec.participant.clone(),
                kind: step_kind_pb(spec.kind) as i32,
                state: step_state(s.step_status(i)) as i32,
                forward_attempts: p.forward.attempts,
                compensate_attempts: p.compensate.attempts,
                last_error: p.last_error.clone().unwrap_or_default(),
                output: p.output.clone().unwrap_or_default(),
                started_at: p.started_at.map(timestamp),
                finished_at: p.finished_at.map(timestamp),
                next_attempt_at: p.next_attempt_at().map(timestamp),
                attempts: attempts.iter().map(attempt).collect(),
                elided_attempts: summary::elided(elided),
                forward_endpoint: spec.forward.url().to_string(),
                compensate_endpoint: url_or_empty(spec.compensate.as_ref()),
                forward_protocol: protocol_pb(spec.forward.protocol()) as i32,
                compensate_protocol: spec
                    .compensate
                    .as_ref()
                    .map_or(pb::Protocol::Unspecified, |e| protocol_pb(e.protocol()))
                    as i32,
                retry: Some(resolved_policy_pb(spec.retry)),
                timeout: Some(duration(spec.timeout)),
                input_mapping: input_pb(spec.input.as_ref()),
                input: p.input.clone().unwrap_or_default(),
                endpoint_changes: p
                    .endpoint_changes
                    .iter()
                    .map(|c| endpoint_change(&spec.name, c.action, &c.old, &c.new, c.at))
                    .collect(),
            }
        })
        .collect();
    pb::Saga {
        id: s.id.to_string(),
        definition: s.definition.clone(),
        state: saga_state(s.status) as i32,
        payload: s.payload.clone(),
        idempotency_key: s.idempotency_key.clone().unwrap_or_default(),
        steps,
        error: s.error.clone().unwrap_or_default(),
        cancel_reason: s.cancel_reason.clone().unwrap_or_default(),
        created_at: Some(timestamp(s.created_at)),
        updated_at: Some(timestamp(s.updated_at)),
        finished_at: s.finished_at.map(timestamp),
        trace_id: s.trace().trace_id.to_string(),
        started_by: s.started_by.as_ref().map(principal),
        audit: s.audit.iter().map(audit_entry).collect(),
        // Not part of the saga's events: GetSaga reads it from the journal.
        owner: String::new(),
        start_at: s.start_at.map(timestamp),
        deadline: s.deadline.map(timestamp),
    }
}

/// One event of the feed of all sagas.
pub fn feed_event(item: &FeedItem) -> pb::FeedEvent {
    pb::FeedEvent {
        event: Some(event(&item.event, item.status, &item.steps)),
        definition: item.definition.to_string(),
    }
}

/// A journaled event, with the saga's state after it. `steps` names the saga's
/// steps (from its `SagaStarted`), so events can say which step they are about.
pub fn event(e: &Event, status: SagaStatus, steps: &[String]) -> pb::SagaEvent {
    use pb::saga_event::Event as E;
    let step_name = |i: u32| {
        steps
            .get(i as usize)
            .cloned()
            .unwrap_or_else(|| format!("#{i}"))
    };
    let body = match &e.kind {
        EventKind::SagaStarted {
            definition,
            idempotency_key,
            started_by,
            start_at,
            deadline,
            ..
        } => E::SagaStarted(pb::SagaStarted {
            definition: definition.clone(),
            steps: steps.to_vec(),
            idempotency_key: idempotency_key.clone().unwrap_or_default(),
            started_by: started_by.as_deref().map(principal),
            start_at: start_at.map(timestamp),
            deadline: deadline.map(timestamp),
        }),
        EventKind::AttemptStarted {
            step,
            action: a,
            attempt,
        } => E::AttemptStarted(pb::AttemptStarted {
            step: step_name(*step),
            action: action(*a) as i32,
            attempt: *attempt,
        }),
        EventKind::AttemptSucceeded {
            step,
            action: a,
            attempt,
            output,
        } => E::AttemptSucceeded(pb::AttemptSucceeded {
            step: step_name(*step),
            action: action(*a) as i32,
            attempt: *attempt,
            output: output.clone(),
        }),
        EventKind::AttemptFailed {
            step,
            action: a,
            attempt,
            failure,
            error,
            retry_at,
        } => E::AttemptFailed(pb::AttemptFailed {
            step: step_name(*step),
            action: action(*a) as i32,
            attempt: *attempt,
            outcome: failure_outcome(*failure) as i32,
            error: error.clone(),
            next_attempt_at: retry_at.map(timestamp),
        }),
        EventKind::CancelRequested { reason, by } => E::CancelRequested(pb::CancelRequested {
            reason: reason.clone(),
            by: by.as_ref().map(principal),
        }),
        EventKind::CompensationStarted { reason } => {
            E::CompensationStarted(pb::CompensationStarted {
                reason: reason.clone(),
            })
        }
        EventKind::SagaCompleted => E::SagaCompleted(pb::SagaCompleted {}),
        EventKind::SagaCompensated => E::SagaCompensated(pb::SagaCompensated {}),
        EventKind::SagaFailed { reason } => E::SagaFailed(pb::SagaFailed {
            reason: reason.clone(),
        }),
        EventKind::RetryRequested { by } => E::RetryRequested(pb::RetryRequested {
            by: by.as_ref().map(principal),
        }),
        EventKind::ResumeRequested { by } => E::ResumeRequested(pb::ResumeRequested {
            by: by.as_ref().map(principal),
        }),
        EventKind::StartReached => E::StartReached(pb::StartReached {}),
        EventKind::InputResolved { step, input } => E::InputResolved(pb::InputResolved {
            step: step_name(*step),
            input: input.clone(),
        }),
        EventKind::InputUnresolved { step, error } => E::InputUnresolved(pb::InputUnresolved {
            step: step_name(*step),
            error: error.clone(),
        }),
        EventKind::EndpointsRefreshed { changes } => {
            E::EndpointsRefreshed(pb::EndpointsRefreshed {
                changes: changes
                    .iter()
                    .map(|c| endpoint_change(&step_name(c.step), c.action, &c.old, &c.new, e.at))
                    .collect(),
            })
        }
    };
    pb::SagaEvent {
        saga_id: e.saga.to_string(),
        seq: e.seq,
        offset: e.offset.get(),
        at: Some(timestamp(e.at)),
        state: saga_state(status) as i32,
        event: Some(body),
    }
}
