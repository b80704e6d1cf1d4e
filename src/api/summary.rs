//! What an answer leaves out of a saga's history, and what it says instead.
//!
//! A saga's history has no size of its own: a step retried for a day holds
//! thousands of attempts, and a payload can be a megabyte. Most gRPC clients
//! (grpc-go, grpcurl, Python's grpcio, tonic) refuse a message above 4 MiB, so
//! a page of whole sagas, or one saga with every attempt, could not be read at
//! all. The journal keeps everything; answers carry a bounded view of it:
//!
//! - `ListSagas` answers with [`saga_summary`]: where each saga is and why, no
//!   payload, no attempts; a summary's size does not grow with the history.
//! - A `Saga` carries the last [`ATTEMPTS_SHOWN`] attempts of each step in
//!   full and an [`AttemptsSummary`](pb::AttemptsSummary) of the earlier ones
//!   ([`Attempts::Last`]), unless `GetSaga` asks for all of them.
//!
//! Invariants:
//! - The counters (`forward_attempts`, `compensate_attempts`) always count
//!   every attempt, elided or not.
//! - What is elided is a prefix of the step's attempts: the ones shown are the
//!   latest, in order, so the attempt a step gave up at is always shown.

use crate::{
    proto::v1 as pb,
    saga::{Action, AttemptRecord, AttemptResult, Failure, SagaState},
};

use super::wire::{principal, saga_state, step_state, timestamp};

/// Attempts of each step a `Saga` answer carries in full unless every one is
/// asked for. Twenty covers a default compensation budget whole, and keeps a
/// saga of a few steps far below a client's 4 MiB.
pub const ATTEMPTS_SHOWN: usize = 20;

/// How many of a step's attempts an answer carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempts {
    /// Every one (`GetSaga` with `all_attempts`).
    All,
    /// The last this many, and a summary of the earlier ones.
    Last(usize),
}

impl Attempts {
    /// The view every `Saga` answer gives unless asked for more.
    pub const DEFAULT: Self = Self::Last(ATTEMPTS_SHOWN);

    /// `attempts` split into the elided earlier ones and the ones shown.
    pub fn split(self, attempts: &[AttemptRecord]) -> (&[AttemptRecord], &[AttemptRecord]) {
        match self {
            Self::All => attempts.split_at(0),
            Self::Last(n) => attempts.split_at(attempts.len().saturating_sub(n)),
        }
    }
}

/// What the elided attempts of a step were; `None` when none were elided.
pub fn elided(attempts: &[AttemptRecord]) -> Option<pb::AttemptsSummary> {
    let (first, last) = (attempts.first()?, attempts.last()?);
    let mut errors = attempts.iter().filter_map(|a| match &a.result {
        AttemptResult::Failed { error, .. } => Some(error.as_str()),
        AttemptResult::InFlight | AttemptResult::Succeeded => None,
    });
    let first_error = errors.next().unwrap_or_default().to_string();
    let last_error = errors
        .next_back()
        .map_or(first_error.clone(), str::to_string);
    let count = |keep: fn(&AttemptRecord) -> bool| attempts.iter().filter(|a| keep(a)).count();
    Some(pb::AttemptsSummary {
        count: attempts.len() as u32,
        forward: count(|a| a.action == Action::Forward) as u32,
        not_delivered: count(|a| {
            matches!(
                a.result,
                AttemptResult::Failed {
                    failure: Failure::NotDelivered,
                    ..
                }
            )
        }) as u32,
        first_error,
        last_error,
        first_started_at: Some(timestamp(first.started_at)),
        last_finished_at: last.finished_at.map(timestamp),
    })
}

/// A saga as a list shows it.
pub fn saga_summary(s: &SagaState) -> pb::SagaSummary {
    pb::SagaSummary {
        id: s.id.to_string(),
        definition: s.definition.clone(),
        state: saga_state(s.status) as i32,
        idempotency_key: s.idempotency_key.clone().unwrap_or_default(),
        created_at: Some(timestamp(s.created_at)),
        updated_at: Some(timestamp(s.updated_at)),
        finished_at: s.finished_at.map(timestamp),
        step_count: s.steps.len() as u32,
        current_step: s.current_step().map(|i| step_summary(s, i)),
        error: s.error.clone().unwrap_or_default(),
        cancel_reason: s.cancel_reason.clone().unwrap_or_default(),
        trace_id: s.trace().trace_id.to_string(),
        started_by: s.started_by.as_ref().map(principal),
    }
}

fn step_summary(s: &SagaState, i: usize) -> pb::StepSummary {
    let (spec, p) = (&s.steps[i], &s.progress[i]);
    pb::StepSummary {
        index: i as u32,
        name: spec.name.clone(),
        participant: spec.participant.clone(),
        state: step_state(s.step_status(i)) as i32,
        forward_attempts: p.forward.attempts,
        compensate_attempts: p.compensate.attempts,
        last_error: p.last_error.clone().unwrap_or_default(),
        next_attempt_at: p.next_attempt_at().map(timestamp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saga::Timestamp;

    fn failed(action: Action, number: u32, failure: Failure) -> AttemptRecord {
        AttemptRecord {
            action,
            number,
            started_at: Timestamp(1_000 * u64::from(number)),
            finished_at: Some(Timestamp(1_000 * u64::from(number) + 5)),
            result: AttemptResult::Failed {
                failure,
                error: format!("error {number}"),
                retry_at: None,
            },
        }
    }

    #[test]
    fn the_last_attempts_are_shown_and_the_earlier_ones_summarised() {
        let mut attempts: Vec<AttemptRecord> = (1..=25)
            .map(|n| failed(Action::Forward, n, Failure::NotDelivered))
            .collect();
        attempts[2] = failed(Action::Forward, 3, Failure::Transient);
        let (gone, shown) = Attempts::DEFAULT.split(&attempts);
        assert_eq!(shown.len(), ATTEMPTS_SHOWN);
        assert_eq!(shown[0].number, 6, "the latest, in order");
        let summary = elided(gone).unwrap();
        assert_eq!(
            summary,
            pb::AttemptsSummary {
                count: 5,
                forward: 5,
                not_delivered: 4,
                first_error: "error 1".into(),
                last_error: "error 5".into(),
                first_started_at: Some(timestamp(Timestamp(1_000))),
                last_finished_at: Some(timestamp(Timestamp(5_005))),
            }
        );

        let (gone, shown) = Attempts::All.split(&attempts);
        assert!(gone.is_empty() && shown.len() == 25);
        assert_eq!(elided(gone), None, "nothing elided, no summary");
        let few = &attempts[..ATTEMPTS_SHOWN];
        assert!(Attempts::DEFAULT.split(few).0.is_empty());
    }

    #[test]
    fn one_elided_attempt_is_its_own_first_and_last_error() {
        let one = [failed(Action::Compensate, 1, Failure::Rejected)];
        let summary = elided(&one).unwrap();
        assert_eq!((summary.count, summary.forward), (1, 0));
        assert_eq!(summary.first_error, "error 1");
        assert_eq!(summary.last_error, "error 1");
    }
}
