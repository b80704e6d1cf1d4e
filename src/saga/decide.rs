//! "What next" as pure functions of a saga's state: events in, decisions out.
//!
//! The engine runs a saga by asking `decide` again and again. A `Record` decision
//! is a transition to journal; the engine applies it, keeps asking, and journals
//! everything it collected in one append *before* it acts on a `Call`, a `WaitUntil`
//! or `Finished`. So transitions that can share one flush do (a step's result and
//! the next step's start), and nothing acts on a transition that is not durable.
//!
//! Invariants:
//! - Forward steps run in order; a later step never starts before an earlier one
//!   succeeded.
//! - Once a pivot succeeded, or a retriable step was called, the saga only
//!   goes forward: a step that then fails for good makes it FAILED for an
//!   operator (whose retry resumes it forward), and a cancel is ignored.
//! - Compensation starts only when no forward call is in flight (a cancel waits for
//!   the call to return), runs in reverse step order, one step at a time, and covers
//!   exactly the steps whose forward call may have had an effect.
//! - Each call's attempt number is one more than the last one journaled for that
//!   action; numbers are never reused, even across restarts.

use std::time::Duration;

use super::{
    event::{EventKind, Failure},
    id::{Action, Timestamp},
    input,
    state::{AttemptResult, SagaState, SagaStatus},
    text::{ERROR_TEXT_MAX_BYTES, clipped},
};

/// Longest delay a participant's `retry_after` hint can impose.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(3600);

/// What the engine should do next with a saga.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Journal this transition (apply it, then ask again).
    Record(EventKind),
    /// Call this attempt, which is already journaled as started.
    Call {
        step: u32,
        action: Action,
        attempt: u32,
    },
    /// Nothing to do before this time (a journaled retry due time), unless a
    /// command (cancel) arrives.
    WaitUntil(Timestamp),
    /// The saga reached a terminal state.
    Finished,
}

/// The answer of one call, as the participant layer classified it.
#[derive(Clone, Debug, PartialEq)]
pub enum CallOutcome {
    /// Done, with the participant's output.
    Succeeded { output: Vec<u8> },
    /// The participant said no.
    Rejected { reason: String },
    /// Outcome unknown: retry later, no sooner than `retry_after` if given.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The request certainly never reached the participant: retry later, as a
    /// transient failure is, but this attempt had no effect.
    NotDelivered { reason: String },
}

/// The next thing to do with `state` at time `now`.
pub fn decide(state: &SagaState, now: Timestamp) -> Decision {
    match state.status {
        SagaStatus::Completed | SagaStatus::Compensated | SagaStatus::Failed => Decision::Finished,
        SagaStatus::Scheduled => decide_scheduled(state, now),
        SagaStatus::Running => decide_forward(state, now),
        SagaStatus::Compensating => decide_compensation(state, now),
    }
}

/// A scheduled saga waits for its start; cancelled before it, it turns back
/// with nothing to undo, having called no one.
fn decide_scheduled(state: &SagaState, now: Timestamp) -> Decision {
    if let Some(reason) = &state.cancel_reason {
        return Decision::Record(EventKind::CompensationStarted {
            reason: format!("cancelled before its start: {reason}"),
        });
    }
    match state.start_at {
        Some(start) if start > now => Decision::WaitUntil(start),
        _ => Decision::Record(EventKind::StartReached),
    }
}

/// The saga's deadline, while it still counts: until the saga is past its
/// point of no return, where nothing may be undone any more (as a cancel is
/// refused there, a deadline is let pass).
fn live_deadline(state: &SagaState) -> Option<Timestamp> {
    state.deadline.filter(|_| state.can_turn_back())
}

fn decide_forward(state: &SagaState, now: Timestamp) -> Decision {
    // An in-flight call is waited for first, even when a cancel is pending: its
    // effect must be known (or its deadline passed) before anything is undone.
    if let Some(step) = state.in_flight_step(Action::Forward) {
        let attempt = state.progress[step as usize].forward.attempts;
        return Decision::Call {
            step,
            action: Action::Forward,
            attempt,
        };
    }
    // A cancel that arrived while the pivot's call was in flight counts
    // only if the pivot did not succeed: past it, the saga goes forward.
    if let Some(reason) = &state.cancel_reason
        && state.can_turn_back()
    {
        return Decision::Record(EventKind::CompensationStarted {
            reason: format!("cancelled: {reason}"),
        });
    }
    let Some(step) = state.progress.iter().position(|p| !p.forward.done) else {
        return Decision::Record(EventKind::SagaCompleted);
    };
    let progress = &state.progress[step];
    let forward = &progress.forward;
    if forward.gave_up {
        let spec = &state.steps[step];
        let name = &spec.name;
        let error = progress.last_error.as_deref().unwrap_or("no reason given");
        // Attempts left over: it was the time budget that ran out.
        let out_of_time = match spec.retry.max_duration {
            Some(budget) if forward.used() < spec.retry.max_attempts => {
                format!(
                    " (its time budget of {} ran out)",
                    humantime::format_duration(budget)
                )
            }
            _ => String::new(),
        };
        if let Some(pivot) = state.no_return_step() {
            // Nothing may be undone any more: an operator retries the step
            // (`ResumeRequested`) once what stopped it is fixed.
            let how = match forward.last_failure {
                Some(Failure::Rejected) => "was rejected".to_string(),
                _ => format!("failed after {} attempts{out_of_time}", forward.used()),
            };
            return Decision::Record(EventKind::SagaFailed {
                reason: format!(
                    "{} step '{name}' {how}, past the point of no return (step '{}'), so nothing is compensated; retry the saga once the step can succeed: {error}",
                    spec.kind.as_str(),
                    state.steps[pivot as usize].name
                ),
            });
        }
        let reason = match forward.last_failure {
            Some(Failure::Rejected) => format!("step '{name}' was rejected: {error}"),
            _ if !forward.may_have_reached => format!(
                "step '{name}' was never reached in {} attempts{out_of_time}, so it is not compensated: {error}",
                forward.attempts
            ),
            _ => format!(
                "step '{name}' failed after {} attempts{out_of_time}: {error}",
                forward.attempts
            ),
        };
        return Decision::Record(EventKind::CompensationStarted { reason });
    }
    // Like a cancel: only once no forward call is in flight (checked first).
    if let Some(deadline) = live_deadline(state)
        && deadline <= now
    {
        return Decision::Record(EventKind::CompensationStarted {
            reason: format!(
                "deadline: the saga did not finish by its deadline, {}",
                humantime::format_rfc3339_millis(deadline.to_system_time())
            ),
        });
    }
    // A mapped step's input is built before its first call, and journaled.
    let spec = &state.steps[step];
    if let (Some(input), None) = (&spec.input, &progress.input) {
        let output_of = |name: &str| {
            let i = state.steps.iter().position(|s| s.name == name)?;
            state.progress[i].output.as_deref()
        };
        return Decision::Record(match input::resolve(input, &state.payload, output_of) {
            Ok(input) => EventKind::InputResolved {
                step: step as u32,
                input,
            },
            Err(error) => EventKind::InputUnresolved {
                step: step as u32,
                error,
            },
        });
    }
    match next_attempt(
        step as u32,
        Action::Forward,
        forward.attempts,
        forward.retry_at,
        now,
    ) {
        // A retry wait ends early at the deadline.
        Decision::WaitUntil(due) => {
            Decision::WaitUntil(live_deadline(state).map_or(due, |deadline| due.min(deadline)))
        }
        decision => decision,
    }
}

fn decide_compensation(state: &SagaState, now: Timestamp) -> Decision {
    if let Some(step) = state.in_flight_step(Action::Compensate) {
        let attempt = state.progress[step as usize].compensate.attempts;
        return Decision::Call {
            step,
            action: Action::Compensate,
            attempt,
        };
    }
    // Reverse order, one at a time: the last step that needs undoing goes first.
    let next = state
        .progress
        .iter()
        .rposition(|p| p.needs_compensation() && !p.compensate.done);
    let Some(step) = next else {
        return Decision::Record(EventKind::SagaCompensated);
    };
    let progress = &state.progress[step];
    let compensate = &progress.compensate;
    if compensate.gave_up {
        let name = &state.steps[step].name;
        let error = progress.last_error.as_deref().unwrap_or("no reason given");
        let reason = match compensate.last_failure {
            Some(Failure::Rejected) => {
                format!("compensation of step '{name}' was rejected: {error}")
            }
            _ => format!(
                "compensation of step '{name}' gave up after {} attempts: {error}",
                compensate.used()
            ),
        };
        return Decision::Record(EventKind::SagaFailed { reason });
    }
    // A forward call cut off by a coordinator restart may still be running at the
    // participant until its deadline: undoing it before then could race it.
    if compensate.attempts == 0
        && let Some(deadline) = interrupted_forward_deadline(state, step)
        && deadline > now
    {
        return Decision::WaitUntil(deadline);
    }
    next_attempt(
        step as u32,
        Action::Compensate,
        compensate.attempts,
        compensate.retry_at,
        now,
    )
}

/// The deadline of step `step`'s last forward call, if that call was interrupted
/// by a restart (its outcome, and whether it is still running, are unknown).
fn interrupted_forward_deadline(state: &SagaState, step: usize) -> Option<Timestamp> {
    let last = state.progress[step]
        .attempts
        .iter()
        .rev()
        .find(|a| a.action == Action::Forward)?;
    match last.result {
        AttemptResult::Failed {
            failure: Failure::Interrupted,
            ..
        } => Some(last.started_at.plus(state.steps[step].timeout)),
        _ => None,
    }
}

fn next_attempt(
    step: u32,
    action: Action,
    attempts: u32,
    retry_at: Option<Timestamp>,
    now: Timestamp,
) -> Decision {
    match retry_at {
        Some(due) if due > now => Decision::WaitUntil(due),
        _ => Decision::Record(EventKind::AttemptStarted {
            step,
            action,
            attempt: attempts + 1,
        }),
    }
}

/// The event that records how a call ended.
///
/// `sample` is a uniform draw from `[0, 1)` for the backoff jitter. A transient
/// failure schedules the next attempt at `now + delay`, where the delay comes from
/// the step's policy and is stretched to the participant's `retry_after` hint; when
/// the attempt budget is spent, no next attempt is scheduled (`retry_at: None`).
pub fn attempt_finished(
    state: &SagaState,
    step: u32,
    action: Action,
    attempt: u32,
    outcome: CallOutcome,
    now: Timestamp,
    sample: f64,
) -> EventKind {
    match outcome {
        CallOutcome::Succeeded { output } => EventKind::AttemptSucceeded {
            step,
            action,
            attempt,
            output,
        },
        CallOutcome::Rejected { reason } => EventKind::AttemptFailed {
            step,
            action,
            attempt,
            failure: Failure::Rejected,
            error: clipped(reason, ERROR_TEXT_MAX_BYTES),
            retry_at: None,
        },
        CallOutcome::Transient {
            reason,
            retry_after,
        } => EventKind::AttemptFailed {
            step,
            action,
            attempt,
            failure: Failure::Transient,
            error: clipped(reason, ERROR_TEXT_MAX_BYTES),
            retry_at: retry_at(state, step, action, retry_after, now, sample),
        },
        CallOutcome::NotDelivered { reason } => EventKind::AttemptFailed {
            step,
            action,
            attempt,
            failure: Failure::NotDelivered,
            error: clipped(reason, ERROR_TEXT_MAX_BYTES),
            retry_at: retry_at(state, step, action, None, now, sample),
        },
    }
}

/// When the next attempt is due, or `None` when the budget is spent: its
/// attempts, or its time (no attempt starts after the budget's first attempt
/// plus `max_duration`; both times are journaled ones, so a restart counts
/// the same).
fn retry_at(
    state: &SagaState,
    step: u32,
    action: Action,
    retry_after: Option<Duration>,
    now: Timestamp,
    sample: f64,
) -> Option<Timestamp> {
    let spec = &state.steps[step as usize];
    let progress = state.progress[step as usize].action(action);
    let used = progress.used();
    if used >= spec.retry.max_attempts_for(action) {
        return None;
    }
    let delay = spec.retry.delay_after(used, sample);
    let hint = retry_after.unwrap_or_default().min(RETRY_AFTER_MAX);
    let due = now.plus(delay.max(hint));
    let budget_ends = progress
        .budget_started_at
        .and_then(|first| spec.retry.budget_ends(action, first));
    match budget_ends {
        Some(end) if due > end => None,
        _ => Some(due),
    }
}

/// The events that make a state read back after a restart safe to run again: a call
/// that was in flight when the coordinator stopped has an unknown outcome, so it is
/// recorded as an interrupted attempt and retried (with the same idempotency key)
/// under the usual budget and backoff.
pub fn recover(state: &SagaState, now: Timestamp, sample: f64) -> Vec<EventKind> {
    [Action::Forward, Action::Compensate]
        .into_iter()
        .filter_map(|action| {
            let step = state.in_flight_step(action)?;
            let attempt = state.progress[step as usize].action(action).attempts;
            Some(EventKind::AttemptFailed {
                step,
                action,
                attempt,
                failure: Failure::Interrupted,
                error:
                    "the coordinator stopped while this call was in flight; its outcome is unknown"
                        .into(),
                retry_at: retry_at(state, step, action, None, now, sample),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::saga::{
        Offset,
        definition::{Endpoint, StepKind, StepSpec},
        event::Event,
        id::SagaId,
        retry::RetryPolicy,
        state::{FoldError, StepStatus, TurnBack},
    };

    const T0: Timestamp = Timestamp(1_000_000);

    fn spec(name: &str) -> StepSpec {
        StepSpec {
            name: name.into(),
            participant: name.into(),
            kind: crate::saga::StepKind::Compensatable,
            forward: Endpoint::parse("f", "http://127.0.0.1:1/p.S/Do").unwrap(),
            compensate: Some(Endpoint::parse("c", "http://127.0.0.1:1/p.S/Undo").unwrap()),
            retry: RetryPolicy {
                initial_interval: Duration::from_millis(100),
                multiplier: 2.0,
                max_interval: Duration::from_secs(10),
                max_attempts: 3,
                max_compensate_attempts: 2,
                jitter: 0.0,
                max_duration: None,
            },
            timeout: Duration::from_secs(1),
            input: None,
        }
    }

    /// A saga driven through the pure functions only.
    struct Run {
        state: SagaState,
        now: Timestamp,
        /// Every call made, as (step, action, attempt, time).
        calls: Vec<(u32, Action, u32, Timestamp)>,
        /// Every event recorded, by name.
        recorded: Vec<&'static str>,
    }

    impl Run {
        fn new(steps: usize) -> Self {
            Self::with_kinds(&vec![StepKind::Compensatable; steps])
        }

        /// Steps `a`, `b`, ... of these kinds.
        fn with_kinds(kinds: &[StepKind]) -> Self {
            Self::timed(kinds, None, None)
        }

        /// [`Run::with_kinds`], with a start time and a deadline.
        fn timed(
            kinds: &[StepKind],
            start_at: Option<Timestamp>,
            deadline: Option<Timestamp>,
        ) -> Self {
            let steps = kinds.len();
            let started = Event {
                saga: SagaId::from_bytes([7; 16]),
                seq: 1,
                offset: Offset::ZERO,
                at: T0,
                kind: EventKind::SagaStarted {
                    definition: "shop".into(),
                    inline_steps: None,
                    steps: ["a", "b", "c", "d"][..steps]
                        .iter()
                        .zip(kinds)
                        .map(|(n, &kind)| StepSpec { kind, ..spec(n) })
                        .collect(),
                    payload: b"{}".to_vec(),
                    idempotency_key: None,
                    trace: None,
                    started_by: None,
                    start_at,
                    deadline,
                },
            };
            Self {
                state: SagaState::start(&started).unwrap(),
                now: T0,
                calls: vec![],
                recorded: vec!["SagaStarted"],
            }
        }

        fn record(&mut self, kind: EventKind) {
            self.recorded.push(kind.name());
            let event = Event {
                saga: self.state.id,
                seq: self.state.last_seq + 1,
                offset: Offset::ZERO,
                at: self.now,
                kind,
            };
            self.state.apply(&event).unwrap();
        }

        /// Runs until the saga finishes, answering calls with `answer`; a wait
        /// advances the clock to the due time.
        fn drive(&mut self, answer: impl FnMut(u32, Action, u32) -> CallOutcome) {
            self.drive_until(|_| false, answer);
        }

        /// Runs until step `step`'s forward call is in flight (journaled as
        /// started, not answered), answering the calls before it.
        fn drive_until_call(
            &mut self,
            step: u32,
            answer: impl FnMut(u32, Action, u32) -> CallOutcome,
        ) {
            let called = |d: &Decision| matches!(d, Decision::Call { step: s, action: Action::Forward, .. } if *s == step);
            assert!(
                self.drive_until(called, answer),
                "finished before step {step} was called"
            );
        }

        /// [`Run::drive`] until a decision `stop` picks (true), or the end (false).
        fn drive_until(
            &mut self,
            stop: impl Fn(&Decision) -> bool,
            mut answer: impl FnMut(u32, Action, u32) -> CallOutcome,
        ) -> bool {
            for _ in 0..1_000 {
                let decision = decide(&self.state, self.now);
                if stop(&decision) {
                    return true;
                }
                match decision {
                    Decision::Record(kind) => self.record(kind),
                    Decision::Call {
                        step,
                        action,
                        attempt,
                    } => {
                        self.calls.push((step, action, attempt, self.now));
                        let outcome = answer(step, action, attempt);
                        let kind = attempt_finished(
                            &self.state,
                            step,
                            action,
                            attempt,
                            outcome,
                            self.now,
                            0.5,
                        );
                        self.record(kind);
                    }
                    Decision::WaitUntil(t) => {
                        assert!(t > self.now, "a wait must be for a later time");
                        self.now = t;
                    }
                    Decision::Finished => return false,
                }
            }
            panic!("the saga did not finish in 1000 decisions");
        }

        fn call_order(&self) -> Vec<String> {
            self.calls
                .iter()
                .map(|(s, a, n, _)| {
                    let tag = if *a == Action::Forward { "F" } else { "C" };
                    format!("{tag}{s}#{n}")
                })
                .collect()
        }

        fn step_states(&self) -> Vec<StepStatus> {
            (0..self.state.steps.len())
                .map(|i| self.state.step_status(i))
                .collect()
        }
    }

    fn ok() -> CallOutcome {
        CallOutcome::Succeeded {
            output: b"out".to_vec(),
        }
    }
    fn no() -> CallOutcome {
        CallOutcome::Rejected {
            reason: "declined".into(),
        }
    }
    fn flaky() -> CallOutcome {
        CallOutcome::Transient {
            reason: "unavailable".into(),
            retry_after: None,
        }
    }
    fn unsent() -> CallOutcome {
        CallOutcome::NotDelivered {
            reason: "connection refused".into(),
        }
    }

    use StepStatus::{Compensated as Cd, Failed as F, Skipped as Sk, Succeeded as S};

    #[test]
    fn table_of_fates() {
        // (name, steps, answer, expected calls, final status, final step states)
        type Answer = fn(u32, Action, u32) -> CallOutcome;
        type Case = (
            &'static str,
            usize,
            Answer,
            &'static str,
            SagaStatus,
            Vec<StepStatus>,
        );
        let cases: Vec<Case> = vec![
            (
                "all succeed",
                3,
                |_, _, _| ok(),
                "F0#1 F1#1 F2#1",
                SagaStatus::Completed,
                vec![S, S, S],
            ),
            (
                "rejected at the first step",
                3,
                |s, _, _| if s == 0 { no() } else { ok() },
                "F0#1",
                SagaStatus::Compensated,
                vec![F, Sk, Sk],
            ),
            (
                "rejected at the second step",
                3,
                |s, a, _| {
                    if s == 1 && a == Action::Forward {
                        no()
                    } else {
                        ok()
                    }
                },
                "F0#1 F1#1 C0#1",
                SagaStatus::Compensated,
                vec![Cd, F, Sk],
            ),
            (
                "rejected at the last step",
                3,
                |s, a, _| {
                    if s == 2 && a == Action::Forward {
                        no()
                    } else {
                        ok()
                    }
                },
                "F0#1 F1#1 F2#1 C1#1 C0#1",
                SagaStatus::Compensated,
                vec![Cd, Cd, F],
            ),
            (
                "transient then success",
                2,
                |s, _, n| if s == 0 && n < 3 { flaky() } else { ok() },
                "F0#1 F0#2 F0#3 F1#1",
                SagaStatus::Completed,
                vec![S, S],
            ),
            (
                "forward retries exhausted: the unknown-effect step is compensated too",
                3,
                |s, a, _| {
                    if s == 1 && a == Action::Forward {
                        flaky()
                    } else {
                        ok()
                    }
                },
                "F0#1 F1#1 F1#2 F1#3 C1#1 C0#1",
                SagaStatus::Compensated,
                vec![Cd, Cd, Sk],
            ),
            (
                "never delivered: retried, then not compensated (the earlier steps are)",
                3,
                |s, a, _| {
                    if s == 1 && a == Action::Forward {
                        unsent()
                    } else {
                        ok()
                    }
                },
                "F0#1 F1#1 F1#2 F1#3 C0#1",
                SagaStatus::Compensated,
                vec![Cd, F, Sk],
            ),
            (
                "one attempt may have arrived before the others were not delivered: compensated",
                3,
                |s, a, n| match (s, a) {
                    (1, Action::Forward) if n == 1 => flaky(),
                    (1, Action::Forward) => unsent(),
                    _ => ok(),
                },
                "F0#1 F1#1 F1#2 F1#3 C1#1 C0#1",
                SagaStatus::Compensated,
                vec![Cd, Cd, Sk],
            ),
            (
                "not delivered, then delivered",
                2,
                |s, _, n| if s == 1 && n < 3 { unsent() } else { ok() },
                "F0#1 F1#1 F1#2 F1#3",
                SagaStatus::Completed,
                vec![S, S],
            ),
            (
                "a compensation not delivered is retried, then FAILED",
                2,
                |s, a, _| match (s, a) {
                    (1, Action::Forward) => no(),
                    (0, Action::Compensate) => unsent(),
                    _ => ok(),
                },
                "F0#1 F1#1 C0#1 C0#2",
                SagaStatus::Failed,
                vec![F, F],
            ),
            (
                "compensation transient then success",
                2,
                |s, a, n| match (s, a) {
                    (1, Action::Forward) => no(),
                    (0, Action::Compensate) if n == 1 => flaky(),
                    _ => ok(),
                },
                "F0#1 F1#1 C0#1 C0#2",
                SagaStatus::Compensated,
                vec![Cd, F],
            ),
            (
                "compensation exhausted",
                2,
                |s, a, _| match (s, a) {
                    (1, Action::Forward) => no(),
                    (0, Action::Compensate) => flaky(),
                    _ => ok(),
                },
                "F0#1 F1#1 C0#1 C0#2",
                SagaStatus::Failed,
                vec![F, F],
            ),
            (
                "compensation rejected",
                3,
                |s, a, _| match (s, a) {
                    (2, Action::Forward) => no(),
                    (1, Action::Compensate) => no(),
                    _ => ok(),
                },
                "F0#1 F1#1 F2#1 C1#1",
                SagaStatus::Failed,
                vec![S, F, F],
            ),
        ];
        for (name, steps, answer, calls, status, states) in cases {
            let mut run = Run::new(steps);
            run.drive(answer);
            assert_eq!(run.call_order().join(" "), calls, "{name}: calls");
            assert_eq!(run.state.status, status, "{name}: status");
            assert_eq!(run.step_states(), states, "{name}: step states");
        }
    }

    #[test]
    fn the_current_step_is_the_one_last_acted_on() {
        use Action::{Compensate, Forward};
        assert_eq!(Run::new(3).state.current_step(), None, "no attempt yet");
        // A step waiting in backoff is where a running saga is.
        let mut run = Run::new(3);
        loop {
            match decide(&run.state, run.now) {
                Decision::Record(kind) => run.record(kind),
                Decision::Call {
                    step,
                    action,
                    attempt,
                } => {
                    let outcome = if step == 1 { flaky() } else { ok() };
                    let kind =
                        attempt_finished(&run.state, step, action, attempt, outcome, run.now, 0.5);
                    run.record(kind);
                }
                Decision::WaitUntil(_) => break,
                Decision::Finished => panic!("step 1 never succeeds"),
            }
        }
        assert_eq!(run.state.current_step(), Some(1), "in backoff");

        type Answer = fn(u32, Action, u32) -> CallOutcome;
        let cases: [(&str, Answer, Option<usize>); 3] = [
            ("completed: the last step", |_, _, _| ok(), Some(2)),
            (
                "compensated: the first step, undone last",
                |s, a, _| if (s, a) == (2, Forward) { no() } else { ok() },
                Some(0),
            ),
            (
                "failed: the step whose compensation gave up",
                |s, a, _| match (s, a) {
                    (2, Forward) | (1, Compensate) => no(),
                    _ => ok(),
                },
                Some(1),
            ),
        ];
        for (name, answer, current) in cases {
            let mut run = Run::new(3);
            run.drive(answer);
            assert_eq!(run.state.current_step(), current, "{name}");
        }
    }

    #[test]
    fn results_and_next_starts_share_one_journal_batch() {
        // Between two calls, decide must yield only Records, so the runner can
        // journal a step's result together with the next step's start.
        let mut run = Run::new(3);
        let mut batches = vec![];
        let mut batch = vec![];
        loop {
            match decide(&run.state, run.now) {
                Decision::Record(kind) => {
                    batch.push(kind.name());
                    run.record(kind);
                }
                Decision::Call {
                    step,
                    action,
                    attempt,
                } => {
                    batches.push(std::mem::take(&mut batch));
                    let kind =
                        attempt_finished(&run.state, step, action, attempt, ok(), run.now, 0.5);
                    batch.push(kind.name());
                    run.record(kind);
                }
                Decision::Finished => break,
                Decision::WaitUntil(_) => unreachable!(),
            }
        }
        batches.push(batch);
        assert_eq!(
            batches,
            vec![
                vec!["AttemptStarted"],
                vec!["AttemptSucceeded", "AttemptStarted"],
                vec!["AttemptSucceeded", "AttemptStarted"],
                vec!["AttemptSucceeded", "SagaCompleted"],
            ]
        );
    }

    #[test]
    fn backoff_due_times_grow_and_are_waited_for() {
        let mut run = Run::new(1);
        run.drive(|_, _, n| if n < 3 { flaky() } else { ok() });
        let times: Vec<u64> = run
            .calls
            .iter()
            .map(|c| c.3.millis() - T0.millis())
            .collect();
        // jitter 0 in the spec; sample 0.5 is the nominal delay: 100ms, then 200ms.
        assert_eq!(times, vec![0, 100, 300]);
    }

    #[test]
    fn retry_after_hint_stretches_the_delay() {
        let mut run = Run::new(1);
        run.drive(|_, _, n| {
            if n == 1 {
                CallOutcome::Transient {
                    reason: "busy".into(),
                    retry_after: Some(Duration::from_secs(5)),
                }
            } else {
                ok()
            }
        });
        assert_eq!(run.calls[1].3.millis() - T0.millis(), 5_000);
    }

    #[test]
    fn cancel_waits_for_the_in_flight_call() {
        let mut run = Run::new(3);
        run.record(EventKind::AttemptStarted {
            step: 0,
            action: Action::Forward,
            attempt: 1,
        });
        run.record(EventKind::CancelRequested {
            reason: "customer changed their mind".into(),
            by: None,
        });
        // The call is still in flight: decide keeps calling it, never compensates.
        assert_eq!(
            decide(&run.state, run.now),
            Decision::Call {
                step: 0,
                action: Action::Forward,
                attempt: 1
            }
        );
        run.drive(|_, _, _| ok());
        assert_eq!(run.call_order().join(" "), "F0#1 C0#1");
        assert_eq!(run.state.status, SagaStatus::Compensated);
        assert_eq!(
            run.state.error.as_deref(),
            Some("cancelled: customer changed their mind")
        );
        assert_eq!(run.step_states(), vec![Cd, Sk, Sk]);
    }

    #[test]
    fn a_participant_error_text_is_kept_clipped() {
        let mut run = Run::new(1);
        run.record(EventKind::AttemptStarted {
            step: 0,
            action: Action::Forward,
            attempt: 1,
        });
        let long = CallOutcome::Rejected {
            reason: "no".repeat(500_000),
        };
        match attempt_finished(&run.state, 0, Action::Forward, 1, long, run.now, 0.5) {
            EventKind::AttemptFailed { error, .. } => {
                assert!(
                    error.len() < ERROR_TEXT_MAX_BYTES + 64,
                    "{} bytes kept",
                    error.len()
                );
                assert!(
                    error.ends_with("more bytes cut)"),
                    "{}",
                    &error[error.len() - 40..]
                );
            }
            other => panic!("expected AttemptFailed, got {other:?}"),
        }
    }

    #[test]
    fn cancel_during_backoff_compensates_the_step_with_unknown_effect() {
        let mut run = Run::new(2);
        run.record(EventKind::AttemptStarted {
            step: 0,
            action: Action::Forward,
            attempt: 1,
        });
        let kind = attempt_finished(&run.state, 0, Action::Forward, 1, flaky(), run.now, 0.5);
        run.record(kind);
        assert!(matches!(
            decide(&run.state, run.now),
            Decision::WaitUntil(_)
        ));
        run.record(EventKind::CancelRequested {
            reason: "stop".into(),
            by: None,
        });
        assert!(matches!(
            decide(&run.state, run.now),
            Decision::Record(EventKind::CompensationStarted { .. })
        ));
        run.drive(|_, _, _| ok());
        assert_eq!(run.call_order().join(" "), "C0#1");
        assert_eq!(run.state.status, SagaStatus::Compensated);
    }

    #[test]
    fn retry_requested_resumes_with_a_fresh_budget_and_later_numbers() {
        let mut run = Run::new(2);
        run.drive(|s, a, _| match (s, a) {
            (1, Action::Forward) => no(),
            (0, Action::Compensate) => flaky(),
            _ => ok(),
        });
        assert_eq!(run.state.status, SagaStatus::Failed);
        assert!(
            run.state
                .error
                .as_deref()
                .unwrap()
                .contains("gave up after 2 attempts")
        );
        run.record(EventKind::RetryRequested { by: None });
        assert_eq!(run.state.status, SagaStatus::Compensating);
        run.drive(|_, _, n| if n == 3 { flaky() } else { ok() });
        assert_eq!(run.call_order().join(" "), "F0#1 F1#1 C0#1 C0#2 C0#3 C0#4");
        assert_eq!(run.state.status, SagaStatus::Compensated);
    }

    #[test]
    fn recover_turns_in_flight_calls_into_interrupted_attempts() {
        let mut run = Run::new(2);
        run.record(EventKind::AttemptStarted {
            step: 0,
            action: Action::Forward,
            attempt: 1,
        });
        let events = recover(&run.state, run.now, 0.5);
        assert_eq!(
            events,
            vec![EventKind::AttemptFailed {
                step: 0,
                action: Action::Forward,
                attempt: 1,
                failure: Failure::Interrupted,
                error:
                    "the coordinator stopped while this call was in flight; its outcome is unknown"
                        .into(),
                retry_at: Some(T0.plus(Duration::from_millis(100))),
            }]
        );
        for e in events {
            run.record(e);
        }
        run.drive(|_, _, _| ok());
        // The interrupted attempt keeps its number: the retry is attempt 2.
        assert_eq!(run.call_order().join(" "), "F0#2 F1#1");
        assert!(recover(&run.state, run.now, 0.5).is_empty());
    }

    #[test]
    fn compensation_waits_out_the_deadline_of_an_interrupted_forward_call() {
        let mut run = Run::new(2);
        run.record(EventKind::AttemptStarted {
            step: 0,
            action: Action::Forward,
            attempt: 1,
        });
        // The coordinator restarts 100ms later; an operator cancels at once.
        run.now = T0.plus(Duration::from_millis(100));
        for kind in recover(&run.state, run.now, 0.5) {
            run.record(kind);
        }
        run.record(EventKind::CancelRequested {
            reason: "stop".into(),
            by: None,
        });
        assert!(matches!(
            decide(&run.state, run.now),
            Decision::Record(EventKind::CompensationStarted { .. })
        ));
        run.record(EventKind::CompensationStarted {
            reason: "cancelled: stop".into(),
        });
        // The forward call may run at the participant until T0 + timeout (1s).
        assert_eq!(
            decide(&run.state, run.now),
            Decision::WaitUntil(T0.plus(Duration::from_secs(1)))
        );
        run.drive(|_, _, _| ok());
        assert_eq!(run.calls[0].3, T0.plus(Duration::from_secs(1)));
        assert_eq!(run.call_order().join(" "), "C0#1");
    }

    #[test]
    fn interrupted_last_attempt_counts_against_the_budget() {
        let mut run = Run::new(1);
        for n in 1..=3 {
            run.record(EventKind::AttemptStarted {
                step: 0,
                action: Action::Forward,
                attempt: n,
            });
            let kind = if n < 3 {
                attempt_finished(&run.state, 0, Action::Forward, n, flaky(), run.now, 0.5)
            } else {
                recover(&run.state, run.now, 0.5).remove(0)
            };
            run.record(kind);
            run.now = run.state.next_retry_at().unwrap_or(run.now);
        }
        run.drive(|_, _, _| ok());
        assert_eq!(
            run.state.status,
            SagaStatus::Compensated,
            "exhausted, unknown effect: undone"
        );
        assert_eq!(run.call_order().join(" "), "C0#1");
    }

    /// A one-step run whose policy is `spec`'s with `change` applied.
    fn run_with(change: impl Fn(&mut RetryPolicy)) -> Run {
        let mut run = Run::new(1);
        change(&mut run.state.steps[0].retry);
        run
    }

    #[test]
    fn the_time_budget_ends_forward_attempts_before_the_attempts_do() {
        let mut run = run_with(|p| {
            p.max_attempts = 100;
            p.max_duration = Some(Duration::from_secs(1));
        });
        run.drive(|_, a, _| if a == Action::Forward { flaky() } else { ok() });
        // Attempts at 0, 100, 300 and 700 ms; the next would start at 1.5 s,
        // past the budget's end at 1 s after the first.
        let times: Vec<u64> = run
            .calls
            .iter()
            .map(|c| c.3.since(T0).as_millis() as u64)
            .collect();
        assert_eq!(times, vec![0, 100, 300, 700, 700]);
        assert_eq!(run.call_order().join(" "), "F0#1 F0#2 F0#3 F0#4 C0#1");
        let why = run.state.error.as_deref().unwrap();
        assert!(
            why.contains("failed after 4 attempts (its time budget of 1s ran out)"),
            "{why}"
        );
    }

    #[test]
    fn the_time_budget_counts_from_the_journaled_first_attempt() {
        let mut run = run_with(|p| p.max_duration = Some(Duration::from_secs(60)));
        let fail = |run: &mut Run, n: u32| {
            run.record(EventKind::AttemptStarted {
                step: 0,
                action: Action::Forward,
                attempt: n,
            });
            attempt_finished(&run.state, 0, Action::Forward, n, flaky(), run.now, 0.5)
        };
        let first = fail(&mut run, 1);
        assert!(matches!(
            first,
            EventKind::AttemptFailed {
                retry_at: Some(_),
                ..
            }
        ));
        run.record(first);
        // The second attempt fails 59.9 s after the first started: a retry
        // 200 ms later would start past the minute.
        run.now = T0.plus(Duration::from_millis(59_900));
        let second = fail(&mut run, 2);
        assert!(matches!(
            second,
            EventKind::AttemptFailed { retry_at: None, .. }
        ));
        // The fold keeps where the budget began: the first attempt's journaled
        // start, so a restart that folds the events counts from there too.
        assert_eq!(run.state.progress[0].forward.budget_started_at, Some(T0));
    }

    #[test]
    fn without_a_time_budget_only_attempts_count_and_compensations_never_have_one() {
        // A saga journaled before there was a time budget: a day between
        // attempts changes nothing.
        let mut run = run_with(|p| p.max_duration = None);
        for n in 1..=2 {
            run.record(EventKind::AttemptStarted {
                step: 0,
                action: Action::Forward,
                attempt: n,
            });
            run.now = run.now.plus(Duration::from_secs(86_400));
            let kind = attempt_finished(&run.state, 0, Action::Forward, n, flaky(), run.now, 0.5);
            assert!(
                matches!(
                    kind,
                    EventKind::AttemptFailed {
                        retry_at: Some(_),
                        ..
                    }
                ),
                "{n}"
            );
            run.record(kind);
            run.now = run.state.next_retry_at().unwrap();
        }
        // max_duration bounds forward attempts only: a compensation retries
        // long past it.
        let mut run = Run::new(2);
        for step in &mut run.state.steps {
            step.retry.max_duration = Some(Duration::from_millis(1));
            step.retry.max_compensate_attempts = 5;
        }
        run.drive(|s, a, n| match (s, a) {
            (1, Action::Forward) => no(),
            (_, Action::Compensate) if n < 4 => flaky(),
            _ => ok(),
        });
        assert_eq!(run.call_order().join(" "), "F0#1 F1#1 C0#1 C0#2 C0#3 C0#4");
        assert_eq!(run.state.status, SagaStatus::Compensated);
    }

    #[test]
    fn a_step_never_reached_says_so_and_a_cancel_leaves_it_alone() {
        let mut run = Run::new(2);
        run.drive(|s, _, _| if s == 1 { unsent() } else { ok() });
        let why = run.state.error.as_deref().unwrap();
        assert_eq!(
            why,
            "step 'b' was never reached in 3 attempts, so it is not compensated: connection refused"
        );
        assert!(!run.state.progress[1].needs_compensation());

        // Cancelled while waiting to retry a call that was not delivered: the
        // step did nothing, nothing of it is undone.
        let mut run = Run::new(1);
        run.record(EventKind::AttemptStarted {
            step: 0,
            action: Action::Forward,
            attempt: 1,
        });
        let kind = attempt_finished(&run.state, 0, Action::Forward, 1, unsent(), run.now, 0.5);
        assert!(matches!(
            kind,
            EventKind::AttemptFailed {
                failure: Failure::NotDelivered,
                retry_at: Some(_),
                ..
            }
        ));
        run.record(kind);
        run.record(EventKind::CancelRequested {
            reason: "stop".into(),
            by: None,
        });
        run.drive(|_, _, _| ok());
        assert_eq!(run.call_order().join(" "), "");
        assert_eq!(run.state.status, SagaStatus::Compensated);
    }

    #[test]
    fn fold_refuses_histories_that_cannot_be() {
        let mut run = Run::new(1);
        let bad = |run: &Run, seq, kind| {
            let event = Event {
                saga: run.state.id,
                seq,
                offset: Offset::ZERO,
                at: T0,
                kind,
            };
            run.state.clone().apply(&event).unwrap_err()
        };
        let start = EventKind::AttemptStarted {
            step: 0,
            action: Action::Forward,
            attempt: 1,
        };
        assert!(matches!(
            bad(&run, 3, start.clone()),
            FoldError::Sequence {
                expected: 2,
                found: 3,
                ..
            }
        ));
        let unknown_step = EventKind::AttemptStarted {
            step: 5,
            action: Action::Forward,
            attempt: 1,
        };
        assert!(matches!(
            bad(&run, 2, unknown_step),
            FoldError::Invalid { .. }
        ));
        let result_without_start = EventKind::AttemptSucceeded {
            step: 0,
            action: Action::Forward,
            attempt: 1,
            output: vec![],
        };
        assert!(matches!(
            bad(&run, 2, result_without_start),
            FoldError::Invalid { .. }
        ));
        assert!(matches!(
            bad(&run, 2, EventKind::SagaCompleted),
            FoldError::Invalid { .. }
        ));
        run.record(start);
        let skipped_number = EventKind::AttemptStarted {
            step: 0,
            action: Action::Forward,
            attempt: 2,
        };
        assert!(matches!(
            bad(&run, 3, skipped_number),
            FoldError::Invalid { .. }
        ));
        let compensation_while_in_flight = EventKind::CompensationStarted { reason: "x".into() };
        assert!(matches!(
            bad(&run, 3, compensation_while_in_flight),
            FoldError::Invalid { .. }
        ));
        assert!(matches!(
            bad(&run, 3, EventKind::RetryRequested { by: None }),
            FoldError::Invalid { .. }
        ));
        assert!(matches!(SagaState::fold([]), Err(FoldError::Empty)));
    }

    #[test]
    fn fold_is_the_same_whether_replayed_or_applied_live() {
        let mut run = Run::new(3);
        let mut history = vec![];
        // Record a history by driving, keeping every event.
        let started = Event {
            saga: run.state.id,
            seq: 1,
            offset: Offset::ZERO,
            at: T0,
            kind: EventKind::SagaStarted {
                definition: "shop".into(),
                inline_steps: None,
                steps: run.state.steps.clone(),
                payload: b"{}".to_vec(),
                idempotency_key: None,
                trace: None,
                started_by: None,
                start_at: None,
                deadline: None,
            },
        };
        history.push(started);
        loop {
            let kind = match decide(&run.state, run.now) {
                Decision::Record(kind) => kind,
                Decision::Call {
                    step,
                    action,
                    attempt,
                } => {
                    let outcome = if step == 2 { no() } else { ok() };
                    attempt_finished(&run.state, step, action, attempt, outcome, run.now, 0.5)
                }
                Decision::WaitUntil(t) => {
                    run.now = t;
                    continue;
                }
                Decision::Finished => break,
            };
            history.push(Event {
                saga: run.state.id,
                seq: run.state.last_seq + 1,
                offset: Offset::ZERO,
                at: run.now,
                kind: kind.clone(),
            });
            run.record(kind);
        }
        let replayed = SagaState::fold(&history).unwrap();
        assert_eq!(replayed, run.state);
        assert_eq!(replayed.status, SagaStatus::Compensated);
        let outputs: Vec<_> = replayed.outputs().map(|(n, _)| n).collect();
        assert_eq!(outputs, vec!["a", "b"]);
    }

    use StepKind::{Compensatable as Comp, Pivot, Retriable as Retr};

    /// Compensatable, then a pivot, then retriable steps: compensation only
    /// while the pivot has not succeeded; past it, a step that fails for
    /// good fails the saga for an operator and nothing is undone.
    #[test]
    fn table_of_fates_with_a_pivot() {
        type Answer = fn(u32, Action, u32) -> CallOutcome;
        type Case = (
            &'static str,
            Vec<StepKind>,
            Answer,
            &'static str,
            SagaStatus,
            Vec<StepStatus>,
        );
        let cases: Vec<Case> = vec![
            (
                "all succeed",
                vec![Comp, Pivot, Retr],
                |_, _, _| ok(),
                "F0#1 F1#1 F2#1",
                SagaStatus::Completed,
                vec![S, S, S],
            ),
            (
                "the pivot is rejected: what came before is undone",
                vec![Comp, Pivot, Retr],
                |s, a, _| {
                    if a == Action::Forward && s == 1 {
                        no()
                    } else {
                        ok()
                    }
                },
                "F0#1 F1#1 C0#1",
                SagaStatus::Compensated,
                vec![Cd, F, Sk],
            ),
            (
                "the pivot's outcome is unknown: it is undone too",
                vec![Comp, Pivot, Retr],
                |s, a, _| {
                    if a == Action::Forward && s == 1 {
                        flaky()
                    } else {
                        ok()
                    }
                },
                "F0#1 F1#1 F1#2 F1#3 C1#1 C0#1",
                SagaStatus::Compensated,
                vec![Cd, Cd, Sk],
            ),
            (
                "a retriable step is rejected past the pivot: nothing is undone",
                vec![Comp, Pivot, Retr],
                |s, _, _| if s == 2 { no() } else { ok() },
                "F0#1 F1#1 F2#1",
                SagaStatus::Failed,
                vec![S, S, F],
            ),
            (
                "a retriable step runs out of attempts past the pivot",
                vec![Comp, Pivot, Retr, Retr],
                |s, _, _| if s == 2 { flaky() } else { ok() },
                "F0#1 F1#1 F2#1 F2#2 F2#3",
                SagaStatus::Failed,
                vec![S, S, F, StepStatus::Pending],
            ),
            (
                "a retriable step succeeds on its last attempt",
                vec![Comp, Pivot, Retr],
                |s, _, n| if s == 2 && n < 3 { flaky() } else { ok() },
                "F0#1 F1#1 F2#1 F2#2 F2#3",
                SagaStatus::Completed,
                vec![S, S, S],
            ),
            (
                "retriable steps without a pivot: reaching one commits the saga",
                vec![Comp, Retr],
                |s, _, _| if s == 1 { flaky() } else { ok() },
                "F0#1 F1#1 F1#2 F1#3",
                SagaStatus::Failed,
                vec![S, F],
            ),
            (
                "a pivot first, rejected: nothing to undo",
                vec![Pivot, Retr],
                |s, _, _| if s == 0 { no() } else { ok() },
                "F0#1",
                SagaStatus::Compensated,
                vec![F, Sk],
            ),
        ];
        for (name, kinds, answer, calls, status, steps) in cases {
            let mut run = Run::with_kinds(&kinds);
            run.drive(answer);
            assert_eq!(run.call_order().join(" "), calls, "{name}");
            assert_eq!(run.state.status, status, "{name}");
            assert_eq!(run.step_states(), steps, "{name}");
            let undone = run.recorded.contains(&"CompensationStarted");
            assert_eq!(undone, status == SagaStatus::Compensated, "{name}");
            // A saga FAILED past its pivot says so.
            if status == SagaStatus::Failed {
                assert!(
                    run.state
                        .error
                        .as_deref()
                        .unwrap()
                        .contains("point of no return"),
                    "{name}: {:?}",
                    run.state.error
                );
            }
        }
    }

    /// A cancel that arrives while the pivot's call is in flight counts
    /// only if the pivot fails; past the pivot, a cancel cannot be journaled.
    #[test]
    fn a_cancel_counts_only_before_the_pivot_succeeded() {
        for (pivot_answer, expected) in [
            (ok(), SagaStatus::Completed),
            (no(), SagaStatus::Compensated),
        ] {
            let mut run = Run::with_kinds(&[Comp, Pivot, Retr]);
            let mut answers = vec![pivot_answer.clone()];
            run.drive_until_call(1, |_, _, _| ok());
            run.record(EventKind::CancelRequested {
                reason: "customer left".into(),
                by: None,
            });
            run.drive(|s, _, _| {
                if s == 1 {
                    answers.pop().unwrap_or_else(ok)
                } else {
                    ok()
                }
            });
            assert_eq!(run.state.status, expected, "{pivot_answer:?}");
            assert_eq!(
                run.recorded.contains(&"CompensationStarted"),
                expected == SagaStatus::Compensated
            );
        }
        // Past the pivot, the fold refuses a cancel.
        let mut run = Run::with_kinds(&[Comp, Pivot, Retr]);
        run.drive_until_call(2, |_, _, _| ok());
        assert_eq!(run.state.no_return_step(), Some(1));
        assert!(!run.state.can_turn_back());
        let cancel = Event {
            saga: run.state.id,
            seq: run.state.last_seq + 1,
            offset: Offset::ZERO,
            at: run.now,
            kind: EventKind::CancelRequested {
                reason: "too late".into(),
                by: None,
            },
        };
        let err = run.state.clone().apply(&cancel).unwrap_err();
        assert!(err.to_string().contains("point of no return"), "{err}");
    }

    /// A saga FAILED past its point of no return resumes forward: the step
    /// that gave up gets a fresh budget, attempt numbers go on, and it never
    /// compensates; a retry that would turn it back is refused.
    #[test]
    fn a_saga_failed_past_the_pivot_resumes_forward() {
        let mut run = Run::with_kinds(&[Comp, Pivot, Retr]);
        run.drive(|s, _, _| if s == 2 { flaky() } else { ok() });
        assert_eq!(run.state.status, SagaStatus::Failed);
        let next = |run: &Run, kind| Event {
            saga: run.state.id,
            seq: run.state.last_seq + 1,
            offset: Offset::ZERO,
            at: run.now,
            kind,
        };
        let back = next(&run, EventKind::RetryRequested { by: None });
        let err = run.state.clone().apply(&back).unwrap_err();
        assert!(err.to_string().contains("cannot turn back"), "{err}");

        run.record(EventKind::ResumeRequested { by: None });
        assert_eq!(run.state.status, SagaStatus::Running);
        run.drive(|_, _, _| ok());
        assert_eq!(run.state.status, SagaStatus::Completed);
        assert_eq!(
            run.call_order().join(" "),
            "F0#1 F1#1 F2#1 F2#2 F2#3 F2#4",
            "the resumed step's attempts go on from 4"
        );
        assert!(!run.recorded.contains(&"CompensationStarted"));
        assert_eq!(
            run.state.audit.last().map(|a| a.action),
            Some(crate::saga::AuditAction::RetryRequested),
            "a resume is an operator's retry in the audit"
        );

        // A saga that can still turn back is not resumed forward.
        let mut run = Run::with_kinds(&[Comp, Comp]);
        run.drive(|s, a, _| match (s, a) {
            (1, Action::Forward) => no(),
            (0, Action::Compensate) => no(),
            _ => ok(),
        });
        assert_eq!(run.state.status, SagaStatus::Failed);
        let resume = next(&run, EventKind::ResumeRequested { by: None });
        assert!(run.state.clone().apply(&resume).is_err());
    }

    #[test]
    fn a_scheduled_saga_waits_for_its_start_then_goes_forward() {
        let start = T0.plus(Duration::from_secs(60));
        let mut run = Run::timed(&[Comp, Comp], Some(start), None);
        assert_eq!(run.state.status, SagaStatus::Scheduled);
        assert_eq!(run.state.began_at, None);
        assert_eq!(decide(&run.state, run.now), Decision::WaitUntil(start));
        run.drive(|_, _, _| ok());
        assert_eq!(run.state.status, SagaStatus::Completed);
        assert_eq!(
            &run.recorded[..3],
            ["SagaStarted", "StartReached", "AttemptStarted"]
        );
        assert_eq!(run.state.began_at, Some(start));
        assert!(
            run.calls.iter().all(|c| c.3 >= start),
            "nothing called before its start"
        );
    }

    #[test]
    fn a_scheduled_saga_cancelled_before_its_start_calls_no_one() {
        let start = T0.plus(Duration::from_secs(3_600));
        let mut run = Run::timed(&[Comp, Comp], Some(start), None);
        run.record(EventKind::CancelRequested {
            reason: "order withdrawn".into(),
            by: None,
        });
        run.drive(|_, _, _| ok());
        assert!(run.calls.is_empty(), "{:?}", run.calls);
        assert_eq!(run.state.status, SagaStatus::Compensated);
        assert_eq!(
            run.state.error.as_deref(),
            Some("cancelled before its start: order withdrawn")
        );
        assert_eq!(run.state.turn_back_cause(), Some(TurnBack::Cancelled));
        assert_eq!(run.now, T0, "it did not wait for its start");
        assert_eq!(run.step_states(), vec![Sk, Sk]);
    }

    #[test]
    fn a_deadline_during_a_retry_wait_turns_the_saga_back_at_the_deadline() {
        let deadline = T0.plus(Duration::from_millis(2_000));
        let mut run = Run::timed(&[Comp, Comp], None, Some(deadline));
        run.state.steps[1].retry.max_attempts = 100;
        // Step b fails transiently for ever: its waits grow (100 ms, 200 ms,
        // ...) and the one that would end past the deadline ends at it.
        run.drive(|s, a, _| match (s, a) {
            (1, Action::Forward) => flaky(),
            _ => ok(),
        });
        assert_eq!(run.state.status, SagaStatus::Compensated);
        let why = run.state.error.as_deref().unwrap();
        assert!(why.starts_with("deadline: "), "{why}");
        assert_eq!(run.state.turn_back_cause(), Some(TurnBack::Deadline));
        let forward_last = run.calls.iter().rfind(|c| c.1 == Action::Forward);
        assert!(
            forward_last.unwrap().3 < deadline,
            "no forward call at or past it"
        );
        let first_undo = run
            .calls
            .iter()
            .find(|c| c.1 == Action::Compensate)
            .unwrap();
        assert_eq!(first_undo.3, deadline, "the wait ended at the deadline");
        // b's effect is unknown (transient failures), so it is undone too.
        assert_eq!(run.step_states(), vec![Cd, Cd]);
    }

    #[test]
    fn a_deadline_waits_for_the_call_in_flight_like_a_cancel() {
        let deadline = T0.plus(Duration::from_millis(500));
        let mut run = Run::timed(&[Comp, Comp], None, Some(deadline));
        run.record(EventKind::AttemptStarted {
            step: 0,
            action: Action::Forward,
            attempt: 1,
        });
        run.now = deadline.plus(Duration::from_millis(1));
        assert!(matches!(
            decide(&run.state, run.now),
            Decision::Call { step: 0, .. }
        ));
        run.drive(|_, _, _| ok());
        assert_eq!(run.call_order().join(" "), "F0#1 C0#1");
        assert_eq!(run.state.turn_back_cause(), Some(TurnBack::Deadline));
    }

    #[test]
    fn past_the_pivot_a_deadline_is_let_pass() {
        let deadline = T0.plus(Duration::from_millis(150));
        let mut run = Run::timed(&[Comp, Pivot, Retr], None, Some(deadline));
        // The retriable step fails twice, well past the deadline, then succeeds.
        run.drive(|s, _, n| match (s, n) {
            (2, 1 | 2) => flaky(),
            _ => ok(),
        });
        assert_eq!(run.state.status, SagaStatus::Completed);
        assert!(run.now > deadline);
        assert!(run.calls.iter().all(|c| c.1 == Action::Forward));
        assert_eq!(run.state.turn_back_cause(), None);
    }

    #[test]
    fn a_scheduled_saga_makes_no_call_before_its_start_is_journaled() {
        let mut run = Run::timed(&[Comp], Some(T0.plus(Duration::from_secs(1))), None);
        let early = Event {
            saga: run.state.id,
            seq: 2,
            offset: Offset::ZERO,
            at: T0,
            kind: EventKind::AttemptStarted {
                step: 0,
                action: Action::Forward,
                attempt: 1,
            },
        };
        let err = run.state.apply(&early).unwrap_err().to_string();
        assert!(err.contains("scheduled"), "{err}");
        let reached_twice = Event {
            kind: EventKind::StartReached,
            ..early
        };
        run.state.apply(&reached_twice).unwrap();
        let again = Event {
            seq: 3,
            ..reached_twice
        };
        assert!(run.state.apply(&again).is_err(), "a start is reached once");
    }

    fn json_out(text: &str) -> CallOutcome {
        CallOutcome::Succeeded {
            output: text.as_bytes().to_vec(),
        }
    }

    fn mapped(run: &mut Run, step: usize, pairs: &[(&str, &str)]) {
        run.state.steps[step].input = Some(
            pairs
                .iter()
                .map(|(f, p)| (f.to_string(), p.to_string()))
                .collect(),
        );
    }

    #[test]
    fn a_mapped_step_builds_its_input_once_before_its_first_attempt() {
        let mut run = Run::new(2);
        mapped(
            &mut run,
            1,
            &[
                ("amount", "/steps/a/output/total"),
                ("id", "/payload/order"),
            ],
        );
        run.state.payload = br#"{"order":"A-1"}"#.to_vec();
        run.drive(|s, a, n| match (s, a, n) {
            (0, Action::Forward, _) => json_out(r#"{"total":7}"#),
            (1, Action::Forward, 1) => flaky(),
            _ => ok(),
        });
        assert_eq!(run.state.status, SagaStatus::Completed);
        assert_eq!(run.call_order().join(" "), "F0#1 F1#1 F1#2");
        let built = run
            .recorded
            .iter()
            .position(|r| *r == "InputResolved")
            .unwrap();
        assert_eq!(
            run.recorded[built + 1],
            "AttemptStarted",
            "built just before"
        );
        assert_eq!(
            run.recorded
                .iter()
                .filter(|r| **r == "InputResolved")
                .count(),
            1,
            "built once, kept across the retry"
        );
        let input: serde_json::Value =
            serde_json::from_slice(run.state.progress[1].input.as_ref().unwrap()).unwrap();
        assert_eq!(input, serde_json::json!({"amount": 7, "id": "A-1"}));
        assert_eq!(run.state.progress[0].input, None, "unmapped: no input");
    }

    #[test]
    fn an_unresolved_pointer_rejects_the_step_without_a_call() {
        let mut run = Run::new(3);
        mapped(&mut run, 1, &[("amount", "/steps/a/output/vat")]);
        run.drive(|s, _, _| match s {
            0 => json_out(r#"{"total":7}"#),
            _ => ok(),
        });
        assert_eq!(run.call_order().join(" "), "F0#1 C0#1");
        assert_eq!(run.state.status, SagaStatus::Compensated);
        let why = run.state.error.as_deref().unwrap();
        assert!(
            why.contains("step 'b' was rejected")
                && why.contains("pointer '/steps/a/output/vat' resolves to nothing"),
            "{why}"
        );
        assert_eq!(run.step_states(), vec![Cd, F, Sk]);
        assert!(run.recorded.contains(&"InputUnresolved"));
    }

    #[test]
    fn past_the_pivot_an_unresolved_input_fails_the_saga_and_a_resume_builds_it_again() {
        let mut run = Run::with_kinds(&[Comp, Pivot, Retr]);
        mapped(&mut run, 2, &[("parcel", "/steps/b/output/parcel")]);
        run.drive(|s, _, _| match s {
            1 => json_out(r#"{"carrier":"x"}"#),
            _ => ok(),
        });
        assert_eq!(run.state.status, SagaStatus::Failed);
        assert_eq!(run.call_order().join(" "), "F0#1 F1#1");
        run.record(EventKind::ResumeRequested { by: None });
        // Still nothing there: it fails the same way, calling no one.
        run.drive(|_, _, _| ok());
        assert_eq!(run.state.status, SagaStatus::Failed);
        assert_eq!(
            run.recorded
                .iter()
                .filter(|r| **r == "InputUnresolved")
                .count(),
            2
        );
        assert_eq!(run.call_order().join(" "), "F0#1 F1#1");
    }

    /// A pivot nothing can undo (its participant has no compensate endpoint).
    fn undoable_pivot() -> Run {
        let mut run = Run::with_kinds(&[Comp, Pivot, Retr]);
        run.state.steps[1].compensate = None;
        run
    }

    #[test]
    fn a_pivot_that_cannot_be_undone_commits_the_saga_once_it_may_have_acted() {
        // Its effect unknown: FAILED for an operator, nothing undone.
        let mut run = undoable_pivot();
        run.drive(|s, _, _| if s == 1 { flaky() } else { ok() });
        assert_eq!(run.state.status, SagaStatus::Failed);
        assert_eq!(run.call_order().join(" "), "F0#1 F1#1 F1#2 F1#3");
        let why = run.state.error.as_deref().unwrap();
        assert!(why.contains("past the point of no return"), "{why}");
        // An operator's retry goes forward: the pivot gets a fresh budget.
        run.record(EventKind::ResumeRequested { by: None });
        run.drive(|_, _, _| ok());
        assert_eq!(run.state.status, SagaStatus::Completed);
        assert_eq!(run.call_order().join(" "), "F0#1 F1#1 F1#2 F1#3 F1#4 F2#1");

        // Rejected, or never delivered, it did nothing: the saga turns back
        // and undoes what came before it, never calling the pivot back.
        for (answer, order) in [
            (no(), "F0#1 F1#1 C0#1"),
            (unsent(), "F0#1 F1#1 F1#2 F1#3 C0#1"),
        ] {
            let mut run = undoable_pivot();
            let answer = answer.clone();
            run.drive(|s, a, _| match (s, a) {
                (1, Action::Forward) => answer.clone(),
                _ => ok(),
            });
            assert_eq!(run.state.status, SagaStatus::Compensated);
            assert_eq!(run.call_order().join(" "), order);
        }
    }

    #[test]
    fn a_cancel_is_refused_while_a_pivot_that_cannot_be_undone_is_in_flight() {
        let mut run = undoable_pivot();
        run.drive_until_call(1, |_, _, _| ok());
        assert!(!run.state.can_turn_back());
        let cancel = Event {
            saga: run.state.id,
            seq: run.state.last_seq + 1,
            offset: Offset::ZERO,
            at: run.now,
            kind: EventKind::CancelRequested {
                reason: "stop".into(),
                by: None,
            },
        };
        let err = run.state.clone().apply(&cancel).unwrap_err().to_string();
        assert!(err.contains("point of no return"), "{err}");
    }
}
