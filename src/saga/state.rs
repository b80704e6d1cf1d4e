//! A saga's state as the pure fold of its events.
//!
//! Invariants:
//! - `SagaState::fold(events)` depends on nothing but the events: the same history
//!   gives the same state in a running coordinator, after a restart, or in a test.
//! - An event that does not fit the history (a gap in `seq`, a step that does not
//!   exist, a result for an attempt that was never started) is a `FoldError`, never
//!   silently skipped: a journal that says something impossible is damaged.
//! - `attempts` of an action only grows; `budget_start` marks where the current
//!   attempt budget began (moved by `RetryRequested`), so attempt numbers are never
//!   reused while a resumed compensation still gets a full budget; and
//!   `budget_started_at` is the journaled time of that budget's first attempt,
//!   which a time budget counts from.

use super::{
    definition::{Endpoint, StepKind, StepSpec},
    event::{Event, EventKind, Failure},
    id::{Action, SagaId, Timestamp},
    principal::Principal,
    trace::TraceContext,
};

/// What a client or an operator did to a saga (the events that record who).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditAction {
    Started,
    CancelRequested,
    RetryRequested,
}

impl AuditAction {
    /// The action an event records, if it is one a caller asked for.
    pub fn of(kind: &EventKind) -> Option<AuditAction> {
        match kind {
            EventKind::SagaStarted { .. } => Some(AuditAction::Started),
            EventKind::CancelRequested { .. } => Some(AuditAction::CancelRequested),
            // Both are an operator's retry: the saga turns back or goes on,
            // as where it failed decides.
            EventKind::RetryRequested { .. } | EventKind::ResumeRequested { .. } => {
                Some(AuditAction::RetryRequested)
            }
            _ => None,
        }
    }

    /// Lower case, as shown: `started`, `cancel_requested`, `retry_requested`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Started => "started",
            AuditAction::CancelRequested => "cancel_requested",
            AuditAction::RetryRequested => "retry_requested",
        }
    }
}

/// One caller's action on a saga: what, when, and who (`None` for events
/// journaled before principals were, format 6).
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEntry {
    pub action: AuditAction,
    pub at: Timestamp,
    pub by: Option<Principal>,
}

impl AuditEntry {
    fn of(event: &Event) -> Option<AuditEntry> {
        AuditAction::of(&event.kind).map(|action| AuditEntry {
            action,
            at: event.at,
            by: event.kind.principal().cloned(),
        })
    }
}

/// The state of a saga as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum SagaStatus {
    Running,
    Compensating,
    Completed,
    Compensated,
    Failed,
    /// Journaled, waiting for its `start_at`: nothing called yet. (Appended:
    /// older summaries decode unchanged.)
    Scheduled,
}

impl SagaStatus {
    /// Completed, Compensated and Failed end a run (Failed can be resumed by RetrySaga).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            SagaStatus::Completed | SagaStatus::Compensated | SagaStatus::Failed
        )
    }

    /// Completed and Compensated: the saga ended and nothing can change it any
    /// more. Failed is terminal but not final: `RetrySaga` resumes it, so an
    /// operator must still be able to find it (retention never archives it).
    pub fn is_final(self) -> bool {
        matches!(self, SagaStatus::Completed | SagaStatus::Compensated)
    }

    /// The status an event moves a saga to, if it changes it.
    pub fn after(kind: &EventKind) -> Option<SagaStatus> {
        match kind {
            EventKind::SagaStarted {
                start_at: Some(_), ..
            } => Some(SagaStatus::Scheduled),
            EventKind::SagaStarted { .. }
            | EventKind::ResumeRequested { .. }
            | EventKind::StartReached => Some(SagaStatus::Running),
            EventKind::CompensationStarted { .. } | EventKind::RetryRequested { .. } => {
                Some(SagaStatus::Compensating)
            }
            EventKind::SagaCompleted => Some(SagaStatus::Completed),
            EventKind::SagaCompensated => Some(SagaStatus::Compensated),
            EventKind::SagaFailed { .. } => Some(SagaStatus::Failed),
            _ => None,
        }
    }

    /// Upper-case name, as in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            SagaStatus::Running => "RUNNING",
            SagaStatus::Compensating => "COMPENSATING",
            SagaStatus::Completed => "COMPLETED",
            SagaStatus::Compensated => "COMPENSATED",
            SagaStatus::Failed => "FAILED",
            SagaStatus::Scheduled => "SCHEDULED",
        }
    }
}

/// Why a saga turned back (its `CompensationStarted`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TurnBack {
    Cancelled,
    StepFailed,
    Deadline,
}

impl TurnBack {
    /// Lower case, as in the metrics' `cause` label.
    pub fn as_str(self) -> &'static str {
        match self {
            TurnBack::Cancelled => "cancelled",
            TurnBack::StepFailed => "step_failed",
            TurnBack::Deadline => "deadline",
        }
    }
}

/// The state of one step, derived from its two actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    Compensating,
    Compensated,
    Skipped,
}

impl StepStatus {
    /// Upper-case name, as in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "PENDING",
            StepStatus::Running => "RUNNING",
            StepStatus::Succeeded => "SUCCEEDED",
            StepStatus::Failed => "FAILED",
            StepStatus::Compensating => "COMPENSATING",
            StepStatus::Compensated => "COMPENSATED",
            StepStatus::Skipped => "SKIPPED",
        }
    }
}

/// How one attempt ended, or that it has not yet.
#[derive(Clone, Debug, PartialEq)]
pub enum AttemptResult {
    InFlight,
    Succeeded,
    Failed {
        failure: Failure,
        error: String,
        retry_at: Option<Timestamp>,
    },
}

/// One call of one endpoint: the "every attempt is visible" record.
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptRecord {
    pub action: Action,
    pub number: u32,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub result: AttemptResult,
}

/// Progress of one action (forward or compensate) of one step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ActionProgress {
    /// Highest attempt number started.
    pub attempts: u32,
    /// `attempts` when the current budget began.
    pub budget_start: u32,
    /// An attempt was started and has no result yet.
    pub in_flight: bool,
    /// The action succeeded.
    pub done: bool,
    /// The action was rejected or ran out of attempts.
    pub gave_up: bool,
    /// How the last finished attempt failed, if it did.
    pub last_failure: Option<Failure>,
    /// When the next attempt is due, while waiting in backoff.
    pub retry_at: Option<Timestamp>,
    /// When the first attempt of the current budget started: where a time
    /// budget (`RetryPolicy::max_duration`) counts from.
    pub budget_started_at: Option<Timestamp>,
    /// Some finished attempt may have reached the participant: every attempt
    /// but one that was certainly not delivered.
    pub may_have_reached: bool,
}

impl ActionProgress {
    /// Attempts used from the current budget.
    pub fn used(&self) -> u32 {
        self.attempts - self.budget_start
    }
}

/// Progress of one step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepProgress {
    pub forward: ActionProgress,
    pub compensate: ActionProgress,
    /// The forward call's output, once it succeeded.
    pub output: Option<Vec<u8>>,
    /// The input its mapping built (`InputResolved`): what every call of
    /// the step sends as its payload.
    pub input: Option<Vec<u8>>,
    /// The last error of either action.
    pub last_error: Option<String>,
    pub attempts: Vec<AttemptRecord>,
    /// Endpoints a refresh replaced, oldest first (the step's spec holds the
    /// current ones).
    pub endpoint_changes: Vec<EndpointRecord>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
}

/// One endpoint a refresh replaced: when, which, from what to what.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointRecord {
    pub at: Timestamp,
    pub action: Action,
    pub old: Endpoint,
    pub new: Endpoint,
}

impl StepProgress {
    /// The progress of one action.
    pub fn action(&self, action: Action) -> &ActionProgress {
        match action {
            Action::Forward => &self.forward,
            Action::Compensate => &self.compensate,
        }
    }

    fn action_mut(&mut self, action: Action) -> &mut ActionProgress {
        match action {
            Action::Forward => &mut self.forward,
            Action::Compensate => &mut self.compensate,
        }
    }

    /// When the step's next attempt (of either action) is due, while it waits
    /// in backoff.
    pub fn next_attempt_at(&self) -> Option<Timestamp> {
        self.forward.retry_at.or(self.compensate.retry_at)
    }

    /// The forward call may have had an effect that must be undone: it succeeded,
    /// or a call may have reached the participant (one in flight, or one that
    /// failed other than as certainly not delivered) and its last answer was not
    /// a rejection (a rejected step did nothing, per the participant contract;
    /// a repeat of an applied call would have been answered as the first was).
    pub fn needs_compensation(&self) -> bool {
        let forward = &self.forward;
        forward.done
            || forward.in_flight
            || (forward.may_have_reached && forward.last_failure != Some(Failure::Rejected))
    }
}

/// Why a history cannot be folded.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum FoldError {
    #[error("saga history is empty")]
    Empty,
    #[error("saga {saga}: the first event is {found}, not SagaStarted")]
    NotStarted { saga: SagaId, found: &'static str },
    #[error("saga {saga}: event seq {found} where {expected} was expected")]
    Sequence {
        saga: SagaId,
        expected: u64,
        found: u64,
    },
    #[error("saga {saga}: event {seq} belongs to saga {other}")]
    WrongSaga {
        saga: SagaId,
        seq: u64,
        other: SagaId,
    },
    #[error("saga {saga}: event {seq} ({event}) does not fit the history: {why}")]
    Invalid {
        saga: SagaId,
        seq: u64,
        event: &'static str,
        why: String,
    },
}

/// A saga, folded from its events.
#[derive(Clone, Debug, PartialEq)]
pub struct SagaState {
    pub id: SagaId,
    pub definition: String,
    pub inline_steps: Option<Vec<super::definition::StepDef>>,
    pub steps: Vec<StepSpec>,
    pub payload: Vec<u8>,
    pub idempotency_key: Option<String>,
    /// The trace context the saga was started under, if the request carried
    /// one; [`SagaState::trace`] gives the one its calls use either way.
    pub caller_trace: Option<TraceContext>,
    pub status: SagaStatus,
    /// When a scheduled saga may make its first call (`SagaStarted`).
    pub start_at: Option<Timestamp>,
    /// When the saga stops going forward and compensates (`SagaStarted`).
    pub deadline: Option<Timestamp>,
    /// When it began going forward: at its start, or when a scheduled one
    /// reached its `start_at` (`None` while scheduled).
    pub began_at: Option<Timestamp>,
    pub progress: Vec<StepProgress>,
    /// Set by CancelRequested; the saga compensates once no forward call is in flight.
    pub cancel_reason: Option<String>,
    /// Why the saga is compensating or failed.
    pub error: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    /// `seq` of the last event applied.
    pub last_seq: u64,
    /// Who started the saga (`None` when journaled before principals were).
    pub started_by: Option<Principal>,
    /// Every start, cancel and retry of the saga, in order, with who asked.
    pub audit: Vec<AuditEntry>,
}

impl SagaState {
    /// Folds a whole history.
    pub fn fold<'a>(events: impl IntoIterator<Item = &'a Event>) -> Result<Self, FoldError> {
        let mut events = events.into_iter();
        let first = events.next().ok_or(FoldError::Empty)?;
        let mut state = Self::start(first)?;
        for event in events {
            state.apply(event)?;
        }
        Ok(state)
    }

    /// The state right after `SagaStarted`.
    pub fn start(event: &Event) -> Result<Self, FoldError> {
        let EventKind::SagaStarted {
            definition,
            inline_steps,
            steps,
            payload,
            idempotency_key,
            trace,
            started_by,
            start_at,
            deadline,
        } = &event.kind
        else {
            return Err(FoldError::NotStarted {
                saga: event.saga,
                found: event.kind.name(),
            });
        };
        if event.seq != 1 {
            return Err(FoldError::Sequence {
                saga: event.saga,
                expected: 1,
                found: event.seq,
            });
        }
        Ok(Self {
            id: event.saga,
            definition: definition.clone(),
            inline_steps: inline_steps.clone(),
            steps: steps.clone(),
            payload: payload.clone(),
            idempotency_key: idempotency_key.clone(),
            caller_trace: trace.as_deref().cloned(),
            status: match start_at {
                Some(_) => SagaStatus::Scheduled,
                None => SagaStatus::Running,
            },
            start_at: *start_at,
            deadline: *deadline,
            began_at: start_at.is_none().then_some(event.at),
            progress: vec![StepProgress::default(); steps.len()],
            cancel_reason: None,
            error: None,
            created_at: event.at,
            updated_at: event.at,
            finished_at: None,
            last_seq: 1,
            started_by: started_by.as_deref().cloned(),
            audit: AuditEntry::of(event).into_iter().collect(),
        })
    }

    /// The trace the saga's calls carry: the caller's, or one named by the saga
    /// id when the start request carried none (`crate::trace`).
    pub fn trace(&self) -> TraceContext {
        self.caller_trace
            .clone()
            .unwrap_or_else(|| TraceContext::for_saga(self.id))
    }

    /// Applies the next event of this saga.
    pub fn apply(&mut self, event: &Event) -> Result<(), FoldError> {
        if event.saga != self.id {
            return Err(FoldError::WrongSaga {
                saga: self.id,
                seq: event.seq,
                other: event.saga,
            });
        }
        if event.seq != self.last_seq + 1 {
            return Err(FoldError::Sequence {
                saga: self.id,
                expected: self.last_seq + 1,
                found: event.seq,
            });
        }
        let invalid = |why: String| FoldError::Invalid {
            saga: event.saga,
            seq: event.seq,
            event: event.kind.name(),
            why,
        };
        let resumes = matches!(
            event.kind,
            EventKind::RetryRequested { .. }
                | EventKind::ResumeRequested { .. }
                | EventKind::EndpointsRefreshed { .. }
        );
        if self.status.is_terminal() && !resumes {
            return Err(invalid(format!(
                "the saga is already {}",
                self.status.as_str()
            )));
        }
        let at = event.at;
        match &event.kind {
            EventKind::SagaStarted { .. } => {
                return Err(invalid("the saga already started".into()));
            }
            EventKind::AttemptStarted {
                step,
                action,
                attempt,
            } => {
                if self.status == SagaStatus::Scheduled {
                    return Err(invalid(
                        "the saga is scheduled: its start was not reached".into(),
                    ));
                }
                let p = self
                    .step_mut(*step)
                    .ok_or_else(|| invalid(format!("no step {step}")))?;
                let a = p.action_mut(*action);
                if a.in_flight || *attempt != a.attempts + 1 || a.done || a.gave_up {
                    return Err(invalid(format!(
                        "attempt {attempt} of {action} cannot start after attempt {} (in flight: {}, done: {}, gave up: {})",
                        a.attempts, a.in_flight, a.done, a.gave_up
                    )));
                }
                if a.used() == 0 {
                    a.budget_started_at = Some(at);
                }
                a.attempts = *attempt;
                a.in_flight = true;
                a.retry_at = None;
                p.started_at.get_or_insert(at);
                p.attempts.push(AttemptRecord {
                    action: *action,
                    number: *attempt,
                    started_at: at,
                    finished_at: None,
                    result: AttemptResult::InFlight,
                });
            }
            EventKind::AttemptSucceeded {
                step,
                action,
                attempt,
                output,
            } => {
                let p = self
                    .step_mut(*step)
                    .ok_or_else(|| invalid(format!("no step {step}")))?;
                finish_attempt(p, *action, *attempt, at, AttemptResult::Succeeded)
                    .map_err(invalid)?;
                let a = p.action_mut(*action);
                a.done = true;
                a.may_have_reached = true;
                a.last_failure = None;
                if *action == Action::Forward {
                    p.output = Some(output.clone());
                }
                p.finished_at = Some(at);
            }
            EventKind::AttemptFailed {
                step,
                action,
                attempt,
                failure,
                error,
                retry_at,
            } => {
                let p = self
                    .step_mut(*step)
                    .ok_or_else(|| invalid(format!("no step {step}")))?;
                let result = AttemptResult::Failed {
                    failure: *failure,
                    error: error.clone(),
                    retry_at: *retry_at,
                };
                finish_attempt(p, *action, *attempt, at, result).map_err(invalid)?;
                let a = p.action_mut(*action);
                a.last_failure = Some(*failure);
                a.may_have_reached |= *failure != Failure::NotDelivered;
                a.retry_at = *retry_at;
                a.gave_up = *failure == Failure::Rejected || retry_at.is_none();
                let gave_up = a.gave_up;
                p.last_error = Some(error.clone());
                if gave_up {
                    p.finished_at = Some(at);
                }
            }
            EventKind::CancelRequested { reason, .. } => {
                if !matches!(self.status, SagaStatus::Running | SagaStatus::Scheduled) {
                    return Err(invalid(
                        "only a running or scheduled saga can be cancelled".into(),
                    ));
                }
                if let Some(step) = self.no_return_step() {
                    return Err(invalid(format!(
                        "the saga is past its point of no return (step {step})"
                    )));
                }
                self.cancel_reason = Some(reason.clone());
            }
            EventKind::CompensationStarted { reason } => {
                // A scheduled saga cancelled before its start turns back
                // with nothing to undo.
                if !matches!(self.status, SagaStatus::Running | SagaStatus::Scheduled) {
                    return Err(invalid("compensation already started".into()));
                }
                if let Some(step) = self.no_return_step() {
                    return Err(invalid(format!(
                        "the saga is past its point of no return (step {step})"
                    )));
                }
                if let Some(i) = self.in_flight_step(Action::Forward) {
                    return Err(invalid(format!("step {i} has a forward call in flight")));
                }
                self.status = SagaStatus::Compensating;
                self.error = Some(reason.clone());
            }
            EventKind::SagaCompleted => {
                if self.status != SagaStatus::Running
                    || self.progress.iter().any(|p| !p.forward.done)
                {
                    return Err(invalid("not every step succeeded".into()));
                }
                self.status = SagaStatus::Completed;
                self.finished_at = Some(at);
            }
            EventKind::SagaCompensated => {
                let pending = self
                    .progress
                    .iter()
                    .any(|p| p.needs_compensation() && !p.compensate.done);
                if self.status != SagaStatus::Compensating || pending {
                    return Err(invalid("a done step is not compensated".into()));
                }
                self.status = SagaStatus::Compensated;
                self.finished_at = Some(at);
            }
            EventKind::SagaFailed { reason } => {
                // A compensation gave up; or, past the point of no return, a
                // forward step did, which nothing may undo.
                let forward_stuck =
                    self.status == SagaStatus::Running && self.stuck_forward().is_some();
                if self.status != SagaStatus::Compensating && !forward_stuck {
                    return Err(invalid(
                        "the saga is not compensating, nor stuck past its point of no return"
                            .into(),
                    ));
                }
                self.status = SagaStatus::Failed;
                self.error = Some(reason.clone());
                self.finished_at = Some(at);
            }
            EventKind::EndpointsRefreshed { changes } => {
                // Only a FAILED saga: nothing is in flight, and the retry that
                // follows is the next thing to call anyone.
                if self.status != SagaStatus::Failed {
                    return Err(invalid(format!(
                        "only a FAILED saga's endpoints can be refreshed, not a {} one's",
                        self.status.as_str()
                    )));
                }
                for change in changes {
                    let step = self
                        .steps
                        .get_mut(change.step as usize)
                        .ok_or_else(|| invalid(format!("no step {}", change.step)))?;
                    let endpoint = step.endpoint_mut(change.action).ok_or_else(|| {
                        invalid(format!(
                            "step {} has no {} endpoint to replace",
                            change.step, change.action
                        ))
                    })?;
                    if *endpoint != change.old {
                        return Err(invalid(format!(
                            "step {} calls {} at {}, not at {}",
                            change.step, change.action, endpoint, change.old
                        )));
                    }
                    *endpoint = change.new.clone();
                    self.progress[change.step as usize]
                        .endpoint_changes
                        .push(EndpointRecord {
                            at,
                            action: change.action,
                            old: change.old.clone(),
                            new: change.new.clone(),
                        });
                }
            }
            EventKind::InputResolved { step, input } => {
                let p = self.forward_to_start(*step).map_err(invalid)?;
                p.input = Some(input.clone());
            }
            EventKind::InputUnresolved { step, error } => {
                // Rejected without a call: it did nothing, so it is never
                // compensated; a resume resolves it again.
                let p = self.forward_to_start(*step).map_err(invalid)?;
                p.forward.gave_up = true;
                p.forward.last_failure = Some(Failure::Rejected);
                p.last_error = Some(error.clone());
                p.finished_at = Some(at);
            }
            EventKind::StartReached => {
                if self.status != SagaStatus::Scheduled {
                    return Err(invalid(format!(
                        "only a SCHEDULED saga reaches its start, not a {} one",
                        self.status.as_str()
                    )));
                }
                self.status = SagaStatus::Running;
                self.began_at = Some(at);
            }
            EventKind::ResumeRequested { .. } => {
                let (SagaStatus::Failed, Some(step)) = (self.status, self.stuck_forward()) else {
                    return Err(invalid(format!(
                        "only a FAILED saga stuck going forward past its point of no return can resume forward, not this {} one",
                        self.status.as_str(),
                    )));
                };
                self.status = SagaStatus::Running;
                self.finished_at = None;
                let f = &mut self.progress[step].forward;
                f.gave_up = false;
                f.retry_at = None;
                f.budget_start = f.attempts;
                f.budget_started_at = None;
            }
            EventKind::RetryRequested { .. } => {
                if self.status != SagaStatus::Failed {
                    return Err(invalid(format!(
                        "only a FAILED saga can be retried, not a {} one",
                        self.status.as_str()
                    )));
                }
                if let Some(step) = self.stuck_forward() {
                    return Err(invalid(format!(
                        "step {step} failed past the point of no return: the saga resumes going forward (ResumeRequested), it cannot turn back"
                    )));
                }
                self.status = SagaStatus::Compensating;
                self.finished_at = None;
                for p in &mut self.progress {
                    let c = &mut p.compensate;
                    if !c.done {
                        c.gave_up = false;
                        c.retry_at = None;
                        c.budget_start = c.attempts;
                        c.budget_started_at = None;
                    }
                }
            }
        }
        self.audit.extend(AuditEntry::of(event));
        self.last_seq = event.seq;
        self.updated_at = at;
        Ok(())
    }

    fn step_mut(&mut self, step: u32) -> Option<&mut StepProgress> {
        self.progress.get_mut(step as usize)
    }

    /// The step past which the saga can no longer turn back, once it got
    /// there: a pivot that succeeded, or the first retriable step that was
    /// called (retriable steps are never undone, so reaching one commits the
    /// saga to going forward). A pivot that nothing can undo (no compensate
    /// endpoint) commits it as soon as its call may have had an effect (in
    /// flight, or failed other than rejected or undelivered). `None` while
    /// the saga may still compensate.
    pub fn no_return_step(&self) -> Option<u32> {
        self.steps
            .iter()
            .zip(&self.progress)
            .position(|(spec, p)| match spec.kind {
                StepKind::Compensatable => false,
                StepKind::Pivot => {
                    p.forward.done || (spec.compensate.is_none() && p.needs_compensation())
                }
                StepKind::Retriable => p.forward.attempts > 0,
            })
            .map(|i| i as u32)
    }

    /// The forward step that gave up past the point of no return: what
    /// fails the saga from `RUNNING`, and what `ResumeRequested` retries.
    fn stuck_forward(&self) -> Option<usize> {
        self.no_return_step()?;
        self.progress.iter().position(|p| p.forward.gave_up)
    }

    /// Step `step`, whose input is still to be resolved: the saga goes
    /// forward, the step has a mapping, no input yet, and no call in flight.
    fn forward_to_start(&mut self, step: u32) -> Result<&mut StepProgress, String> {
        if self.status != SagaStatus::Running {
            return Err(format!(
                "only a RUNNING saga resolves inputs, not a {} one",
                self.status.as_str()
            ));
        }
        let mapped = self
            .steps
            .get(step as usize)
            .ok_or_else(|| format!("no step {step}"))?
            .input
            .is_some();
        let p = &mut self.progress[step as usize];
        if !mapped
            || p.input.is_some()
            || p.forward.in_flight
            || p.forward.done
            || p.forward.gave_up
        {
            return Err(format!(
                "step {step} has no input to resolve (mapped: {mapped}, resolved: {}, in flight: {}, done: {}, gave up: {})",
                p.input.is_some(),
                p.forward.in_flight,
                p.forward.done,
                p.forward.gave_up
            ));
        }
        Ok(p)
    }

    /// Why the saga turned back, once it has: in the order `decide` asks
    /// (a cancel first, then a step that gave up, then the deadline).
    pub fn turn_back_cause(&self) -> Option<TurnBack> {
        if matches!(self.status, SagaStatus::Running | SagaStatus::Scheduled)
            || self.stuck_forward().is_some()
            || self.status == SagaStatus::Completed
        {
            return None;
        }
        Some(if self.cancel_reason.is_some() {
            TurnBack::Cancelled
        } else if self.progress.iter().any(|p| p.forward.gave_up) {
            TurnBack::StepFailed
        } else {
            TurnBack::Deadline
        })
    }

    /// Whether the saga can still turn back and compensate (a cancel is
    /// then accepted).
    pub fn can_turn_back(&self) -> bool {
        self.no_return_step().is_none()
    }

    /// The step with a call of `action` in flight, if any.
    pub fn in_flight_step(&self, action: Action) -> Option<u32> {
        self.progress
            .iter()
            .position(|p| p.action(action).in_flight)
            .map(|i| i as u32)
    }

    /// The step the saga is at, or last acted on: the one it compensates or
    /// last compensated, else the furthest one it called forward; `None`
    /// before its first attempt. Compensations run last step first, so the
    /// latest is the lowest step with a compensate attempt; forward calls run
    /// first step first, so the latest is the highest with a forward attempt.
    pub fn current_step(&self) -> Option<usize> {
        self.progress
            .iter()
            .position(|p| p.compensate.attempts > 0)
            .or_else(|| self.progress.iter().rposition(|p| p.forward.attempts > 0))
    }

    /// The derived state of step `i`.
    pub fn step_status(&self, i: usize) -> StepStatus {
        let p = &self.progress[i];
        let (fw, cp) = (&p.forward, &p.compensate);
        if cp.done {
            StepStatus::Compensated
        } else if cp.gave_up {
            StepStatus::Failed
        } else if cp.attempts > 0 {
            StepStatus::Compensating
        } else if fw.done {
            StepStatus::Succeeded
        } else if fw.gave_up {
            StepStatus::Failed
        } else if fw.in_flight || (fw.attempts > 0 && self.status == SagaStatus::Running) {
            StepStatus::Running
        } else if fw.attempts > 0 {
            // Tried, then the saga turned back: effect unknown, to be compensated.
            StepStatus::Failed
        } else if self.status == SagaStatus::Running
            || (self.status == SagaStatus::Failed && !self.can_turn_back())
        {
            // Past the point of no return a FAILED saga still goes forward
            // once retried: its later steps are still to run.
            StepStatus::Pending
        } else {
            StepStatus::Skipped
        }
    }

    /// The outputs of the steps that succeeded, by step name, in step order.
    pub fn outputs(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.steps
            .iter()
            .zip(&self.progress)
            .filter(|(_, p)| p.forward.done)
            .map(|(s, p)| (s.name.as_str(), p.output.as_deref().unwrap_or_default()))
    }

    /// When the next attempt of any step is due, while the saga waits in backoff.
    pub fn next_retry_at(&self) -> Option<Timestamp> {
        self.progress
            .iter()
            .flat_map(|p| [p.forward.retry_at, p.compensate.retry_at])
            .flatten()
            .min()
    }
}

fn finish_attempt(
    p: &mut StepProgress,
    action: Action,
    attempt: u32,
    at: Timestamp,
    result: AttemptResult,
) -> Result<(), String> {
    let a = p.action_mut(action);
    if !a.in_flight || a.attempts != attempt {
        return Err(format!(
            "attempt {attempt} of {action} is not in flight (last started: {}, in flight: {})",
            a.attempts, a.in_flight
        ));
    }
    a.in_flight = false;
    let record = p
        .attempts
        .iter_mut()
        .rev()
        .find(|r| r.action == action && r.number == attempt)
        .ok_or_else(|| format!("attempt {attempt} of {action} has no start"))?;
    record.finished_at = Some(at);
    record.result = result;
    Ok(())
}
