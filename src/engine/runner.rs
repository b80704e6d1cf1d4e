//! One saga's runner: the task that owns the saga until it is terminal.
//!
//! The loop asks the pure `decide` what next. `Record` decisions are applied to
//! the in-memory state and collected; before any effect (a call, a wait, the end,
//! a reply to a command) everything collected is journaled in one append, so
//! transitions that can share a flush do, and no effect is ever based on a
//! transition that is not durable.
//!
//! ```text
//!   decide ─Record─▶ pending ─┐
//!     ▲                       ├─▶ append (durable) ─▶ call / wait / finish
//!     └──── outcome event ◀───┘
//! ```
//!
//! Shutdown: no new attempt starts; an in-flight call gets the grace period and
//! its outcome is journaled; then the runner leaves the saga to the next start.
//!
//! Parking: a wait for a due time at least `park_after` away ends the runner
//! with the saga parked (`parking.rs`), unless someone waits on or watches the
//! saga (they are served by this runner) or a command is queued for it.
//!
//! Tracing: the runner runs in a `saga{saga_id, definition, trace_id}` span
//! (info), each call in an `attempt{step, action, attempt, participant}` span
//! (debug) inside it. A call's `traceparent` carries the saga's trace
//! (`crate::trace`), which is journaled, so a saga resumed by recovery stays in
//! the same trace.

use std::{
    mem,
    sync::{Arc, OnceLock},
    time::Duration,
};

use tokio::{
    sync::{broadcast, oneshot},
    time::Instant,
};
use tracing::Instrument;

use super::{Command, CommandRx, Engine};
use crate::{
    Error, Result,
    error::JournalFault,
    participant::CallRequest,
    saga::{
        Action, CallOutcome, Decision, Event, EventKind, Offset, SagaState, SagaStatus, StepKind,
        Timestamp, TraceContext, attempt_finished, decide, idempotency_key,
    },
    trace,
};

/// Events a slow watcher may fall behind by before it re-reads the journal.
const WATCH_BUFFER: usize = 64;

pub(super) struct Runner {
    engine: Engine,
    state: SagaState,
    /// Applied to `state`, not yet journaled.
    pending: Vec<Event>,
    command_rx: CommandRx,
    /// Told once the first append (the start or the retry) is durable.
    ack: Option<Ack>,
    /// Told the terminal state.
    waiters: Vec<oneshot::Sender<SagaState>>,
    /// Live events for watchers, created on the first watch.
    watchers: Option<broadcast::Sender<Event>>,
    /// The trace every call carries, from the saga's first event.
    trace: TraceContext,
}

/// Whom a runner tells once its first append (the start or the retry) is
/// durable, or that it could not be made so.
pub(super) enum Ack {
    /// Told the saga's state then.
    State(oneshot::Sender<Result<SagaState>>),
    /// Told only that it is durable: a start that waits for the end, whose
    /// answer is its waiter's (so the state is not copied for nothing).
    Durable(oneshot::Sender<Result<()>>),
}

impl Ack {
    // A caller that has gone away is no one's concern here: sends may fail.
    fn durable(self, state: &SagaState) {
        match self {
            Ack::State(reply) => drop(reply.send(Ok(state.clone()))),
            Ack::Durable(reply) => drop(reply.send(Ok(()))),
        }
    }

    fn failed(self, e: Error) {
        match self {
            Ack::State(reply) => drop(reply.send(Err(e))),
            Ack::Durable(reply) => drop(reply.send(Err(e))),
        }
    }
}

/// Releases a saga's owner slot when its runner is dropped, unless disarmed
/// because the runner parked the saga (it is the timer's then, and may even
/// have a new runner already).
struct Deregister {
    engine: Engine,
    id: crate::saga::SagaId,
    armed: bool,
}

impl Drop for Deregister {
    fn drop(&mut self) {
        if self.armed {
            self.engine.lock_owners().release(self.id);
        }
    }
}

/// Why the loop stopped.
enum Exit {
    Finished,
    ShuttingDown,
    /// The saga is parked until its next attempt is due.
    Parked,
}

impl Runner {
    pub(super) fn new(
        engine: Engine,
        state: SagaState,
        pending: Vec<Event>,
        command_rx: CommandRx,
        ack: Option<Ack>,
        waiters: Vec<oneshot::Sender<SagaState>>,
    ) -> Self {
        Self {
            engine,
            trace: state.trace(),
            state,
            pending,
            command_rx,
            ack,
            waiters,
            watchers: None,
        }
    }

    /// Runs the saga to its end (or to shutdown) inside the saga's span.
    ///
    /// Every saga waiting in backoff holds this future (with 100,000 waiting,
    /// each KB of it is 100 MB of the coordinator), so it is kept small: this
    /// is a plain function, not an `async fn` (which would keep a copy of
    /// `self` beside the inner future), and the runner is boxed (an `async fn`
    /// taking `self` by value keeps the argument and its moved-in local apart,
    /// rust-lang/rust#62958). Together: 1 KB a saga instead of 2.8 KB.
    pub(super) fn run(self) -> impl Future<Output = ()> + Send + 'static {
        let span = tracing::info_span!(
            "saga",
            saga_id = %self.state.id,
            definition = %self.state.definition,
            trace_id = %self.trace.trace_id,
        );
        trace::set_span_parent(&span, &self.trace);
        Box::new(self).run_in_span().instrument(span)
    }

    async fn run_in_span(mut self: Box<Self>) {
        let id = self.state.id;
        // Deregister only after the last append: whoever finds no runner reads
        // a journal that already holds everything this runner did. A guard, so
        // that even a panicking runner does not leave a dead entry behind.
        let mut deregister = Deregister {
            engine: self.engine.clone(),
            id,
            armed: true,
        };
        let result = self.drive().await;
        deregister.armed = !matches!(result, Ok(Exit::Parked));
        drop(deregister);
        match result {
            Ok(Exit::Finished) => {
                tracing::debug!(saga = %id, definition = %self.state.definition, state = self.state.status.as_str(), "saga finished");
                let Runner {
                    state, mut waiters, ..
                } = *self;
                // The last waiter takes the state itself: no copy when one waits.
                if let Some(last) = waiters.pop() {
                    for waiter in waiters {
                        let _ = waiter.send(state.clone());
                    }
                    let _ = last.send(state);
                }
            }
            Ok(Exit::ShuttingDown) => {
                tracing::debug!(saga = %id, "saga left for the next start");
            }
            Ok(Exit::Parked) => {
                tracing::debug!(saga = %id, "saga parked until its next attempt is due");
            }
            Err(e) if e.journal_fault() == Some(JournalFault::Moved) => {
                // Taken over while this node was cut off: its new owner
                // runs it from the journal; nothing here may act on it.
                tracing::warn!(saga = %id, error = %e, "saga dropped: another node runs it now");
                if let Some(ack) = self.ack.take() {
                    ack.failed(e);
                }
            }
            Err(e) => {
                tracing::error!(saga = %id, error = %e, "saga paused: its progress could not be journaled");
                if e.journal_fault().is_some_and(JournalFault::pauses_sagas) {
                    self.engine.stall(id);
                }
                if let Some(ack) = self.ack.take() {
                    ack.failed(e);
                }
            }
        }
    }

    async fn drive(&mut self) -> Result<Exit> {
        loop {
            let now = Timestamp::now();
            match decide(&self.state, now) {
                Decision::Record(kind) => {
                    if matches!(kind, EventKind::AttemptStarted { .. }) && self.shutting_down() {
                        self.flush().await?;
                        return Ok(Exit::ShuttingDown);
                    }
                    self.record(kind, now)?;
                }
                Decision::Call {
                    step,
                    action,
                    attempt,
                } => {
                    self.flush().await?;
                    // Boxed: the call's state is the largest of the loop, and
                    // a waiting saga would carry its room in `drive` for nothing
                    // (one allocation per call instead of 300 bytes per saga).
                    let Some((outcome, took)) = Box::pin(self.call(step, action, attempt)).await?
                    else {
                        return Ok(Exit::ShuttingDown);
                    };
                    self.engine.call_returned(&self.state, step, action, took);
                    crate::crash_point!("runner::after_call");
                    let now = Timestamp::now();
                    let kind = attempt_finished(
                        &self.state,
                        step,
                        action,
                        attempt,
                        outcome,
                        now,
                        fastrand::f64(),
                    );
                    self.record(kind, now)?;
                }
                Decision::WaitUntil(due) => {
                    self.flush().await?;
                    if self.may_park(due) && self.engine.park(self.state.id, due, &self.command_rx)
                    {
                        return Ok(Exit::Parked);
                    }
                    if !self.wait_until(due).await? {
                        return Ok(Exit::ShuttingDown);
                    }
                }
                Decision::Finished => {
                    self.flush().await?;
                    return Ok(Exit::Finished);
                }
            }
        }
    }

    /// Whether waiting until `due` may end this runner with the saga parked:
    /// the wait is long, and no one waits on or watches the saga here.
    fn may_park(&self, due: Timestamp) -> bool {
        self.engine.parks(due, Timestamp::now())
            && self.ack.is_none()
            && self.waiters.is_empty()
            && self
                .watchers
                .as_ref()
                .is_none_or(|watchers| watchers.receiver_count() == 0)
    }

    fn shutting_down(&self) -> bool {
        self.engine.inner.shutdown.is_cancelled()
    }

    /// Applies a transition, decided at `at`, to the state and queues it for
    /// the next append.
    fn record(&mut self, kind: EventKind, at: Timestamp) -> Result<()> {
        let event = Event {
            saga: self.state.id,
            seq: self.state.last_seq + 1,
            offset: Offset::ZERO,
            at,
            kind,
        };
        // decide() only proposes events that fit the state; an error here is a bug,
        // and the saga stops rather than journal something it cannot replay.
        self.state.apply(&event)?;
        self.pending.push(event);
        Ok(())
    }

    /// Journals everything pending in one append.
    async fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let events = mem::take(&mut self.pending);
        let appended = self.engine.inner.journal.append(events).await?;
        self.engine.journaled(&self.state, &appended);
        if let Some(watchers) = &self.watchers {
            for event in appended {
                let _ = watchers.send(event);
            }
        }
        if let Some(ack) = self.ack.take() {
            ack.durable(&self.state);
        }
        Ok(())
    }

    fn call_request(
        &self,
        step: u32,
        action: Action,
        attempt: u32,
        span: &tracing::Span,
    ) -> Option<CallRequest> {
        let spec = &self.state.steps[step as usize];
        Some(CallRequest {
            endpoint: spec.endpoint(action)?.clone(),
            participant: spec.participant.clone(),
            timeout: spec.timeout,
            saga_id: self.state.id,
            definition: self.state.definition.clone(),
            step: spec.name.clone(),
            action,
            attempt,
            idempotency_key: idempotency_key(self.state.id, &spec.name, action),
            // A mapped step sends its journaled input, forward and back.
            payload: self.state.progress[step as usize]
                .input
                .as_ref()
                .unwrap_or(&self.state.payload)
                .clone(),
            outputs: self
                .state
                .outputs()
                .map(|(name, output)| (name.to_string(), output.to_vec()))
                .collect(),
            traceparent: self.trace.traceparent(trace::call_span_id(span)),
            tracestate: self.trace.tracestate.clone(),
            epoch: self.engine.inner.journal.epoch(),
        })
    }

    /// Makes the call, serving commands meanwhile: its outcome, and how long
    /// it took from when it was sent (not counting its wait for the
    /// participant's limits). `None` when shutdown's grace period ran out
    /// first: the outcome is unknown and recovery will say so.
    async fn call(
        &mut self,
        step: u32,
        action: Action,
        attempt: u32,
    ) -> Result<Option<(CallOutcome, Duration)>> {
        crate::crash_point!("runner::before_call");
        if action == Action::Compensate {
            crate::crash_point!("runner::before_compensate_call");
        }
        let span = {
            let spec = &self.state.steps[step as usize];
            tracing::debug_span!(
                "attempt",
                step = %spec.name,
                %action,
                attempt,
                participant = %spec.participant,
            )
        };
        let Some(request) = self.call_request(step, action, attempt, &span) else {
            // Never decided (a step without a compensate endpoint is never
            // turned back), and refused rather than guessed at if it were.
            let refused = CallOutcome::Rejected {
                reason: format!("step has no {action} endpoint"),
            };
            return Ok(Some((refused, Duration::ZERO)));
        };
        // Inside the attempt span, which names the saga, step and attempt.
        span.in_scope(|| tracing::debug!("calling"));
        let limits = self.engine.limits_of(&request.participant);
        let sent: Arc<OnceLock<Instant>> = Arc::default();
        let call = {
            let (engine, sent) = (self.engine.clone(), sent.clone());
            async move {
                // The participant's limits first: the step's timeout starts
                // when the call is sent, not while it waits.
                let _admitted = match limits.is_none() {
                    true => None,
                    false => Some(engine.wait_for_limits(&request.participant, limits).await),
                };
                let _ = sent.set(Instant::now());
                engine.inner.caller.call(request).await
            }
            .instrument(span)
        };
        tokio::pin!(call);
        let took = || sent.get().map_or(Duration::ZERO, Instant::elapsed);
        let shutdown = self.engine.inner.shutdown.clone();
        loop {
            tokio::select! {
                outcome = &mut call => return Ok(Some((outcome, took()))),
                Some(command) = self.command_rx.recv() => self.handle(*command).await?,
                _ = shutdown.cancelled() => break,
            }
        }
        let grace = self.engine.inner.config.shutdown_grace;
        match tokio::time::timeout(grace, call).await {
            Ok(outcome) => Ok(Some((outcome, took()))),
            // Still waiting for the participant's limits: it never left.
            Err(_) if sent.get().is_none() => {
                let unsent = CallOutcome::NotDelivered {
                    reason:
                        "the coordinator stopped while the call waited for the participant's limits"
                            .into(),
                };
                Ok(Some((unsent, Duration::ZERO)))
            }
            Err(_) => {
                tracing::warn!(saga = %self.state.id, step, %action, attempt, "call still in flight at the end of the shutdown grace period");
                Ok(None)
            }
        }
    }

    /// Waits for a due time, serving commands meanwhile; returns when the saga
    /// should decide again (true) or stop for shutdown (false).
    async fn wait_until(&mut self, due: Timestamp) -> Result<bool> {
        let delay = due.since(Timestamp::now());
        let deadline = Instant::now() + delay.min(Duration::from_secs(86_400 * 365));
        let shutdown = self.engine.inner.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => Ok(true),
            Some(command) = self.command_rx.recv() => {
                // A command (a cancel) may change what is next: decide again.
                self.handle(*command).await?;
                Ok(true)
            }
            _ = shutdown.cancelled() => Ok(false),
        }
    }

    async fn handle(&mut self, command: Command) -> Result<()> {
        match command {
            Command::Cancel { reason, by, reply } => {
                let past = self.state.no_return_step();
                let answer = match (self.state.status, &self.state.cancel_reason) {
                    (SagaStatus::Running, _) if let Some(step) = past => {
                        let spec = &self.state.steps[step as usize];
                        Err(Error::FailedPrecondition(format!(
                            "saga {} is past its point of no return ({} step '{}' {}): it can no longer be cancelled, and goes on forward",
                            self.state.id,
                            spec.kind.as_str(),
                            spec.name,
                            match (spec.kind, self.state.progress[step as usize].forward.done) {
                                (StepKind::Pivot, true) => "succeeded",
                                (StepKind::Pivot, false) => "was called, and nothing can undo it",
                                _ => "was called",
                            }
                        )))
                    }
                    (SagaStatus::Running | SagaStatus::Scheduled, None) => {
                        tracing::info!(saga = %self.state.id, by = %by, "saga cancelled by an operator");
                        let by = Some(by);
                        self.record(EventKind::CancelRequested { reason, by }, Timestamp::now())?;
                        self.flush().await?;
                        Ok(self.state.clone())
                    }
                    // Cancelling twice is not an error: the first one is under way.
                    (SagaStatus::Running | SagaStatus::Scheduled, Some(_)) => {
                        Ok(self.state.clone())
                    }
                    (status, _) => Err(Error::FailedPrecondition(format!(
                        "saga {} is already {}; only a RUNNING or SCHEDULED saga can be cancelled",
                        self.state.id,
                        status.as_str()
                    ))),
                };
                let _ = reply.send(answer);
            }
            Command::Retry { reply } => {
                let _ = reply.send(Err(Error::FailedPrecondition(format!(
                    "saga {} is {}; only a FAILED saga can be retried",
                    self.state.id,
                    self.state.status.as_str()
                ))));
            }
            Command::Wait { reply } => self.waiters.push(reply),
            Command::Watch { reply } => {
                let watchers = self
                    .watchers
                    .get_or_insert_with(|| broadcast::channel(WATCH_BUFFER).0);
                let _ = reply.send(watchers.subscribe());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::mpsc;

    use super::*;
    use crate::{
        engine::{EngineConfig, RUNNER_COMMAND_CAPACITY},
        journal::MemoryJournal,
        participant::GrpcParticipants,
        testing,
    };

    /// Most bytes the future of a runner may take, its boxed runner included.
    /// Every saga waiting in backoff holds one (see `Runner::run`); measured
    /// 616 + 456 bytes with Rust 1.95, against 2,784 before the runner was boxed
    /// and the call future was.
    const RUNNER_AT_REST_MAX: usize = 1536;

    #[tokio::test]
    async fn a_runner_at_rest_is_small() {
        let engine = Engine::new(
            Arc::new(MemoryJournal::in_memory()),
            Arc::new(GrpcParticipants::new(1024)),
            vec![],
            EngineConfig::default(),
        )
        .await
        .unwrap();
        let state = SagaState::start(&testing::started("d", None)).unwrap();
        let (_command_tx, command_rx) = mpsc::channel(RUNNER_COMMAND_CAPACITY);
        let runner = Runner::new(engine, state, vec![], command_rx, None, vec![]);
        let boxed = std::mem::size_of_val(&runner);
        let future = runner.run();
        let size = std::mem::size_of_val(&future) + boxed;
        assert!(
            size <= RUNNER_AT_REST_MAX,
            "a runner's future takes {size} bytes; every waiting saga holds one"
        );
    }
}
