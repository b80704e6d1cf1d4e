//! Whether a saga ended as its workload requires (docs/workload.md: any other outcome
//! is an error and is left out of the latency figures).
//!
//! - W1: `COMPLETED`, every step `SUCCEEDED` at its first attempt.
//! - W2: `COMPENSATED`; `ship-order` `FAILED` after one forward attempt and never
//!   compensated; `charge-payment` and `reserve-inventory` `COMPENSATED` once
//!   each, `charge-payment` first: its compensation started no later than
//!   `reserve-inventory`'s and finished no later than that one started.
//!
//! The Saga's timestamps have millisecond resolution, so two compensations in the
//! same millisecond tie and the order check on them can only be "not after".
//! [`compensation_order`] checks the strict order on the journal's events
//! (`WatchSaga`, sequence-numbered), for a sample of each W2 measurement.

use sagad::proto::v1::{self as pb, coordinator_client::CoordinatorClient, saga_event};
use tonic::transport::Channel;

/// Which saga outcome a measurement drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Every step succeeds: `COMPLETED`.
    W1,
    /// `ship-order` rejects: `COMPENSATED`.
    W2,
}

impl Workload {
    pub fn as_str(self) -> &'static str {
        match self {
            Workload::W1 => "W1",
            Workload::W2 => "W2",
        }
    }
}

/// The benchmark saga's steps, in order.
pub const STEPS: [&str; 3] = ["reserve-inventory", "charge-payment", "ship-order"];

/// Checks a saga returned by StartSaga(wait): Ok if it ended as `workload` requires.
pub fn saga(workload: Workload, saga: Option<&pb::Saga>) -> Result<(), String> {
    let saga = saga.ok_or("StartSaga answered without a saga")?;
    let names: Vec<&str> = saga.steps.iter().map(|s| s.name.as_str()).collect();
    if names != STEPS {
        return Err(format!("unexpected steps {names:?}"));
    }
    match workload {
        Workload::W1 => completed(saga),
        Workload::W2 => compensated(saga),
    }
}

fn completed(saga: &pb::Saga) -> Result<(), String> {
    expect_saga_state(saga, pb::SagaState::Completed)?;
    for step in &saga.steps {
        expect_step(step, pb::StepState::Succeeded, 1, 0)?;
    }
    Ok(())
}

fn compensated(saga: &pb::Saga) -> Result<(), String> {
    expect_saga_state(saga, pb::SagaState::Compensated)?;
    let [reserve, charge, ship] = &saga.steps[..] else {
        return Err("expected three steps".into());
    };
    expect_step(ship, pb::StepState::Failed, 1, 0)?;
    expect_step(charge, pb::StepState::Compensated, 1, 1)?;
    expect_step(reserve, pb::StepState::Compensated, 1, 1)?;
    let (charge_started, charge_finished) = compensate_times(charge)?;
    let (reserve_started, _) = compensate_times(reserve)?;
    if charge_started > reserve_started || charge_finished > reserve_started {
        return Err(format!(
            "compensations out of order: charge-payment ran {charge_started:?}..{charge_finished:?}, \
             reserve-inventory started {reserve_started:?}"
        ));
    }
    Ok(())
}

fn expect_saga_state(saga: &pb::Saga, want: pb::SagaState) -> Result<(), String> {
    if saga.state == want as i32 {
        return Ok(());
    }
    let got = pb::SagaState::try_from(saga.state).map_or("?", |s| s.as_str_name());
    Err(format!(
        "saga {} ended {got}, not {} ({})",
        saga.id,
        want.as_str_name(),
        saga.error
    ))
}

fn expect_step(
    step: &pb::Step,
    want: pb::StepState,
    forward_attempts: u32,
    compensate_attempts: u32,
) -> Result<(), String> {
    let got = (step.state, step.forward_attempts, step.compensate_attempts);
    if got == (want as i32, forward_attempts, compensate_attempts) {
        return Ok(());
    }
    let state = pb::StepState::try_from(step.state).map_or("?", |s| s.as_str_name());
    Err(format!(
        "step {} is {state} after {} forward and {} compensate attempts, not {} after \
         {forward_attempts} and {compensate_attempts} ({})",
        step.name,
        step.forward_attempts,
        step.compensate_attempts,
        want.as_str_name(),
        step.last_error
    ))
}

/// A protobuf timestamp as (seconds, nanos), which orders like the time.
type Instant = (i64, i32);

/// When the step's compensate attempt started and finished.
fn compensate_times(step: &pb::Step) -> Result<(Instant, Instant), String> {
    let attempt = step
        .attempts
        .iter()
        .find(|a| a.action == pb::Action::Compensate as i32)
        .ok_or_else(|| format!("step {} lists no compensate attempt", step.name))?;
    let time = |t: &Option<prost_types::Timestamp>, what: &str| {
        t.as_ref()
            .map(|t| (t.seconds, t.nanos))
            .ok_or_else(|| format!("step {}'s compensate attempt has no {what}", step.name))
    };
    Ok((
        time(&attempt.started_at, "started_at")?,
        time(&attempt.finished_at, "finished_at")?,
    ))
}

/// Checks, on a W2 saga's journal events, that `charge-payment`'s compensation
/// started strictly before `reserve-inventory`'s and that `ship-order` was
/// never compensated.
pub fn compensation_order(events: &[pb::SagaEvent]) -> Result<(), String> {
    let mut compensations = Vec::new();
    for event in events {
        if let Some(saga_event::Event::AttemptStarted(started)) = &event.event
            && started.action == pb::Action::Compensate as i32
        {
            compensations.push((event.seq, started.step.as_str()));
        }
    }
    let order: Vec<&str> = compensations.iter().map(|(_, step)| *step).collect();
    if order != ["charge-payment", "reserve-inventory"] {
        return Err(format!(
            "journal shows compensations {order:?}, not [charge-payment, reserve-inventory]"
        ));
    }
    // Events arrive in sequence order; say so if they did not.
    if compensations[0].0 >= compensations[1].0 {
        return Err(format!("journal sequence out of order: {compensations:?}"));
    }
    Ok(())
}

/// Reads a W2 saga's journal (`WatchSaga`) and checks its compensation order.
pub async fn journal_order(
    client: &mut CoordinatorClient<Channel>,
    id: &str,
) -> Result<(), String> {
    let watch = |e: tonic::Status| format!("WatchSaga({id}): {:?} {}", e.code(), e.message());
    let mut stream = client
        .watch_saga(pb::WatchSagaRequest { id: id.to_string() })
        .await
        .map_err(watch)?
        .into_inner();
    let mut events = Vec::new();
    while let Some(event) = stream.message().await.map_err(watch)? {
        events.push(event);
    }
    compensation_order(&events).map_err(|e| format!("saga {id}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(millis: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp {
            seconds: millis / 1000,
            nanos: ((millis % 1000) * 1_000_000) as i32,
        })
    }

    fn step(name: &str, state: pb::StepState, compensated: Option<(i64, i64)>) -> pb::Step {
        let mut attempts = vec![pb::Attempt {
            action: pb::Action::Forward as i32,
            number: 1,
            started_at: ts(0),
            finished_at: ts(0),
            ..Default::default()
        }];
        if let Some((from, to)) = compensated {
            attempts.push(pb::Attempt {
                action: pb::Action::Compensate as i32,
                number: 1,
                started_at: ts(from),
                finished_at: ts(to),
                ..Default::default()
            });
        }
        pb::Step {
            name: name.into(),
            state: state as i32,
            forward_attempts: 1,
            compensate_attempts: compensated.is_some() as u32,
            attempts,
            ..Default::default()
        }
    }

    fn w2(charge: (i64, i64), reserve: (i64, i64)) -> pb::Saga {
        pb::Saga {
            state: pb::SagaState::Compensated as i32,
            steps: vec![
                step(
                    "reserve-inventory",
                    pb::StepState::Compensated,
                    Some(reserve),
                ),
                step("charge-payment", pb::StepState::Compensated, Some(charge)),
                step("ship-order", pb::StepState::Failed, None),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn w2_compensations_in_order() {
        assert_eq!(saga(Workload::W2, Some(&w2((10, 11), (11, 12)))), Ok(()));
        // Same millisecond: a tie is not a disorder.
        assert_eq!(saga(Workload::W2, Some(&w2((10, 10), (10, 10)))), Ok(()));
        assert!(saga(Workload::W2, Some(&w2((11, 12), (10, 11)))).is_err());
        assert!(saga(Workload::W2, Some(&w2((10, 12), (11, 13)))).is_err());
    }

    #[test]
    fn w2_is_not_w1() {
        assert!(saga(Workload::W1, Some(&w2((10, 11), (11, 12)))).is_err());
        let mut ship_compensated = w2((10, 11), (11, 12));
        ship_compensated.steps[2].compensate_attempts = 1;
        assert!(saga(Workload::W2, Some(&ship_compensated)).is_err());
    }

    #[test]
    fn w1_completed() {
        let done = |name| step(name, pb::StepState::Succeeded, None);
        let mut s = pb::Saga {
            state: pb::SagaState::Completed as i32,
            steps: STEPS.iter().map(|n| done(n)).collect(),
            ..Default::default()
        };
        assert_eq!(saga(Workload::W1, Some(&s)), Ok(()));
        s.steps[1].forward_attempts = 2;
        assert!(saga(Workload::W1, Some(&s)).is_err());
        assert!(saga(Workload::W1, None).is_err());
    }

    #[test]
    fn journal_order() {
        let started = |seq, step: &str, action: pb::Action| pb::SagaEvent {
            seq,
            event: Some(saga_event::Event::AttemptStarted(pb::AttemptStarted {
                step: step.into(),
                action: action as i32,
                attempt: 1,
            })),
            ..Default::default()
        };
        let good = [
            started(2, "reserve-inventory", pb::Action::Forward),
            started(5, "charge-payment", pb::Action::Compensate),
            started(7, "reserve-inventory", pb::Action::Compensate),
        ];
        assert_eq!(compensation_order(&good), Ok(()));
        let bad = [
            started(5, "reserve-inventory", pb::Action::Compensate),
            started(7, "charge-payment", pb::Action::Compensate),
        ];
        assert!(compensation_order(&bad).is_err());
    }
}
