//! Repairing a FAILED saga whose compensations call an address that is gone.
//!
//! A saga calls the endpoints it started with (its step snapshot), so that
//! re-registering a participant never changes a saga under way. When a
//! participant has moved and a saga's compensation gave up on the old address,
//! an operator retries it with `refresh_endpoints`: the steps still to be
//! compensated take the compensate endpoint their participant is registered
//! with now. The change is journaled (`EventKind::EndpointsRefreshed`, with the
//! old and new endpoint of each step), so every later call and every replay
//! after a restart uses the new endpoints, and the history says why.
//!
//! A saga that failed past its point of no return (a retriable step gave
//! up after a pivot succeeded) is resumed forward instead: its step that gave
//! up takes the forward endpoint its participant is registered with now.
//!
//! Invariants:
//! - Only what is still to be called changes: steps whose forward call may
//!   have had an effect and whose compensation has not succeeded, or the
//!   forward step a saga past its point of no return gave up on. Other
//!   forward endpoints stay as they were called; retry policies and timeouts
//!   stay as the saga started with them.
//! - All or nothing: if any such step's participant is no longer registered,
//!   the refresh is refused as a whole and nothing changes.

use super::{
    definition::Participant,
    event::EndpointChange,
    id::Action,
    state::{SagaState, SagaStatus},
};

/// Why a saga's endpoints cannot be refreshed.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum RefreshError {
    #[error(
        "step '{step}' of saga {saga} names participant '{participant}', which is no longer registered: register it again, or retry without refreshing endpoints"
    )]
    UnknownParticipant {
        saga: super::SagaId,
        step: String,
        participant: String,
    },
    #[error("saga {saga} is {status}; only a FAILED saga's endpoints can be refreshed")]
    NotFailed {
        saga: super::SagaId,
        status: &'static str,
    },
}

/// The endpoint changes that bring a FAILED saga's remaining compensations to
/// their participants' current registrations (`registered` looks one up by
/// name); empty when every one is current already.
pub fn endpoint_changes<'a>(
    state: &SagaState,
    registered: impl Fn(&str) -> Option<&'a Participant>,
) -> Result<Vec<EndpointChange>, RefreshError> {
    if state.status != SagaStatus::Failed {
        return Err(RefreshError::NotFailed {
            saga: state.id,
            status: state.status.as_str(),
        });
    }
    let forward = !state.can_turn_back();
    let mut changes = Vec::new();
    for (i, (spec, progress)) in state.steps.iter().zip(&state.progress).enumerate() {
        let (action, to_call) = match forward {
            true => (Action::Forward, progress.forward.gave_up),
            false => (
                Action::Compensate,
                progress.needs_compensation() && !progress.compensate.done,
            ),
        };
        if !to_call {
            continue;
        }
        let participant =
            registered(&spec.participant).ok_or_else(|| RefreshError::UnknownParticipant {
                saga: state.id,
                step: spec.name.clone(),
                participant: spec.participant.clone(),
            })?;
        // A step without a compensate endpoint is never compensated (its
        // kind does not allow it); nor is a registration that lost its own
        // a replacement.
        let (Some(now), Some(then)) = (participant.endpoint(action), spec.endpoint(action)) else {
            continue;
        };
        if now != then {
            changes.push(EndpointChange {
                step: i as u32,
                action,
                old: then.clone(),
                new: now.clone(),
            });
        }
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, time::Duration};

    use super::*;
    use crate::saga::{
        Endpoint, Event, EventKind, Failure, Offset, RetryOverrides, RetryPolicy, SagaId, StepSpec,
        Timestamp,
    };

    fn endpoint(host: &str, method: &str) -> Endpoint {
        Endpoint::parse("e", &format!("http://{host}/p.S/{method}")).unwrap()
    }

    fn spec(name: &str, participant: &str) -> StepSpec {
        StepSpec {
            name: name.into(),
            participant: participant.into(),
            kind: crate::saga::StepKind::Compensatable,
            forward: endpoint("127.0.0.1:1", "Do"),
            compensate: Some(endpoint("127.0.0.1:1", "Undo")),
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(1),
            input: None,
        }
    }

    fn registered(name: &str, host: &str) -> Participant {
        Participant {
            name: name.into(),
            forward: endpoint(host, "Do"),
            compensate: Some(endpoint(host, "Undo")),
            retry: RetryOverrides::default(),
            timeout: None,
            registered_at: Timestamp(1),
            registered_by: None,
            limits: Default::default(),
        }
    }

    /// A FAILED saga: `a` and `b` succeeded, `c` was rejected; `b`'s
    /// compensation succeeded and `a`'s gave up.
    fn failed() -> SagaState {
        let id = SagaId::from_bytes([3; 16]);
        let mut kinds = vec![];
        for step in 0..3 {
            kinds.push(EventKind::AttemptStarted {
                step,
                action: Action::Forward,
                attempt: 1,
            });
            kinds.push(if step < 2 {
                EventKind::AttemptSucceeded {
                    step,
                    action: Action::Forward,
                    attempt: 1,
                    output: vec![],
                }
            } else {
                EventKind::AttemptFailed {
                    step,
                    action: Action::Forward,
                    attempt: 1,
                    failure: Failure::Rejected,
                    error: "no".into(),
                    retry_at: None,
                }
            });
        }
        kinds.push(EventKind::CompensationStarted { reason: "c".into() });
        for (step, ok) in [(1, true), (0, false)] {
            kinds.push(EventKind::AttemptStarted {
                step,
                action: Action::Compensate,
                attempt: 1,
            });
            kinds.push(if ok {
                EventKind::AttemptSucceeded {
                    step,
                    action: Action::Compensate,
                    attempt: 1,
                    output: vec![],
                }
            } else {
                EventKind::AttemptFailed {
                    step,
                    action: Action::Compensate,
                    attempt: 1,
                    failure: Failure::Transient,
                    error: "unavailable".into(),
                    retry_at: None,
                }
            });
        }
        kinds.push(EventKind::SagaFailed {
            reason: "gave up".into(),
        });
        let started = EventKind::SagaStarted {
            definition: "d".into(),
            inline_steps: None,
            steps: vec![spec("a", "pa"), spec("b", "pb"), spec("c", "pc")],
            payload: vec![],
            idempotency_key: None,
            trace: None,
            started_by: None,
            start_at: None,
            deadline: None,
        };
        let events: Vec<Event> = [started]
            .into_iter()
            .chain(kinds)
            .enumerate()
            .map(|(i, kind)| Event {
                saga: id,
                seq: i as u64 + 1,
                offset: Offset::ZERO,
                at: Timestamp(100 + i as u64),
                kind,
            })
            .collect();
        let state = SagaState::fold(&events).unwrap();
        assert_eq!(state.status, SagaStatus::Failed);
        state
    }

    #[test]
    fn only_the_remaining_compensations_take_the_current_registration() {
        let state = failed();
        let now: HashMap<String, Participant> =
            [("pa", "127.0.0.1:7002"), ("pb", "127.0.0.1:7003")]
                .into_iter()
                .map(|(name, host)| (name.to_string(), registered(name, host)))
                .collect();
        // `b` is undone already and `c` did nothing: only `a` changes (and
        // `pc`, not registered at all, is not needed).
        let changes = endpoint_changes(&state, |name| now.get(name)).unwrap();
        assert_eq!(
            changes,
            vec![EndpointChange {
                step: 0,
                action: Action::Compensate,
                old: endpoint("127.0.0.1:1", "Undo"),
                new: endpoint("127.0.0.1:7002", "Undo"),
            }]
        );

        // Folded, the saga calls the new endpoint, and says when it changed.
        let mut refreshed = state.clone();
        let event = |seq, kind| Event {
            saga: state.id,
            seq,
            offset: Offset::ZERO,
            at: Timestamp(500),
            kind,
        };
        refreshed
            .apply(&event(
                state.last_seq + 1,
                EventKind::EndpointsRefreshed {
                    changes: changes.clone(),
                },
            ))
            .unwrap();
        assert_eq!(
            refreshed.steps[0].compensate,
            Some(endpoint("127.0.0.1:7002", "Undo"))
        );
        assert_eq!(refreshed.steps[0].forward, endpoint("127.0.0.1:1", "Do"));
        assert_eq!(refreshed.progress[0].endpoint_changes.len(), 1);
        assert_eq!(refreshed.status, SagaStatus::Failed);
        // Once current, there is nothing more to refresh.
        assert_eq!(
            endpoint_changes(&refreshed, |name| now.get(name)),
            Ok(vec![])
        );
        // A change that does not start from the current endpoint is damage.
        assert!(
            refreshed
                .clone()
                .apply(&event(
                    refreshed.last_seq + 1,
                    EventKind::EndpointsRefreshed { changes }
                ))
                .is_err()
        );
        // And once retried the saga is not FAILED: no refresh then.
        refreshed
            .apply(&event(
                refreshed.last_seq + 1,
                EventKind::RetryRequested { by: None },
            ))
            .unwrap();
        assert!(matches!(
            endpoint_changes(&refreshed, |name| now.get(name)),
            Err(RefreshError::NotFailed { .. })
        ));
    }

    #[test]
    fn a_participant_no_longer_registered_refuses_the_whole_refresh() {
        let state = failed();
        let now: HashMap<String, Participant> = [("pb", "127.0.0.1:7003")]
            .into_iter()
            .map(|(name, host)| (name.to_string(), registered(name, host)))
            .collect();
        let err = endpoint_changes(&state, |name| now.get(name)).unwrap_err();
        assert_eq!(
            err,
            RefreshError::UnknownParticipant {
                saga: state.id,
                step: "a".into(),
                participant: "pa".into(),
            }
        );
        assert!(err.to_string().contains("participant 'pa'"), "{err}");
    }
}
