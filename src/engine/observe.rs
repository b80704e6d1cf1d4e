//! What the engine tells the outside world about sagas: metrics, the warning
//! for a FAILED saga, and its webhook notice.
//!
//! Runners call [`Engine::journaled`] right after each append returned, so
//! nothing here reports a transition a crash could still take back, and every
//! transition is reported once (recovery seeds the active-saga gauge with the
//! unfinished sagas it resumes; see `crate::metrics` for the invariants).

use std::time::Duration;

use super::Engine;
use crate::{
    metrics::{METRICS_UPKEEP_INTERVAL, Metrics},
    saga::{Action, Event, EventKind, SagaId, SagaState, SagaStatus, TurnBack},
    webhook::{Notice, Notifier},
};

impl Engine {
    /// This engine's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The metrics in the Prometheus text format, journal counters included
    /// (and, in cluster mode, what the journal knows of this node).
    pub fn render_metrics(&self) -> String {
        let journal = &self.inner.journal;
        if let Some(status) = journal.cluster() {
            self.inner.metrics.cluster(&status);
        }
        self.inner
            .metrics
            .participant_config_errors(&self.inner.caller.config_errors());
        if let Some(heap) = crate::allocator::heap_stats() {
            self.inner.metrics.heap(heap);
        }
        self.inner
            .metrics
            .render(journal.stats(), self.parked_sagas())
    }

    /// Sends a notice to `notifier` for every saga that becomes FAILED from now
    /// on. Set once, before recovery; a second notifier is ignored.
    pub fn notify_failed_to(&self, notifier: Notifier) {
        if self.inner.on_failed.set(notifier).is_err() {
            tracing::warn!("an on-failed notifier is already set; keeping the first");
        }
    }

    /// The on-failed notices of the FAILED sagas among `sagas`, just taken
    /// over from a dead node, are this node's to post now.
    pub(super) fn post_taken_over(&self, sagas: Vec<SagaId>) {
        if let Some(notifier) = self.inner.on_failed.get()
            && !sagas.is_empty()
        {
            notifier.post_taken_over(self.inner.journal.clone(), sagas);
        }
    }

    /// After a re-join: the notices of this node's FAILED sagas, whose
    /// deliveries stopped while it was fenced, are looked for again.
    pub(super) fn repost_after_rejoin(&self) {
        if let Some(notifier) = self.inner.on_failed.get() {
            notifier.redeliver_in_background(self.inner.journal.clone());
        }
    }

    /// Reports `events`, just made durable, of the saga now in `state`.
    pub(super) fn journaled(&self, state: &SagaState, events: &[Event]) {
        let metrics = &self.inner.metrics;
        let definition = state.definition.as_str();
        let participant = |step: u32| {
            state
                .steps
                .get(step as usize)
                .map_or("unknown", |s| s.participant.as_str())
        };
        for event in events {
            match &event.kind {
                EventKind::SagaStarted { start_at, .. } => {
                    metrics.saga_started(definition);
                    let to = match start_at {
                        Some(_) => SagaStatus::Scheduled,
                        None => SagaStatus::Running,
                    };
                    metrics.saga_moved(definition, None, to);
                }
                EventKind::StartReached => {
                    metrics.saga_moved(
                        definition,
                        Some(SagaStatus::Scheduled),
                        SagaStatus::Running,
                    );
                }
                EventKind::AttemptSucceeded { step, action, .. } => {
                    metrics.attempt_finished(participant(*step), *action, None);
                }
                EventKind::AttemptFailed {
                    step,
                    action,
                    failure,
                    ..
                } => metrics.attempt_finished(participant(*step), *action, Some(*failure)),
                EventKind::CompensationStarted { .. } => {
                    let cause = state.turn_back_cause().unwrap_or(TurnBack::StepFailed);
                    metrics.compensation_started(definition, cause);
                    // Cancelled before its start, a saga turns back from scheduled.
                    let from = match state.began_at {
                        Some(_) => SagaStatus::Running,
                        None => SagaStatus::Scheduled,
                    };
                    metrics.saga_moved(definition, Some(from), SagaStatus::Compensating);
                }
                EventKind::RetryRequested { .. } => {
                    metrics.saga_retried(definition);
                    metrics.saga_moved(
                        definition,
                        Some(SagaStatus::Failed),
                        SagaStatus::Compensating,
                    );
                }
                EventKind::ResumeRequested { .. } => {
                    metrics.saga_retried(definition);
                    metrics.saga_moved(definition, Some(SagaStatus::Failed), SagaStatus::Running);
                }
                EventKind::SagaCompleted => {
                    metrics.saga_finished(definition, SagaStatus::Completed);
                    metrics.saga_moved(
                        definition,
                        Some(SagaStatus::Running),
                        SagaStatus::Completed,
                    );
                }
                EventKind::SagaCompensated => {
                    metrics.saga_finished(definition, SagaStatus::Compensated);
                    metrics.saga_moved(
                        definition,
                        Some(SagaStatus::Compensating),
                        SagaStatus::Compensated,
                    );
                }
                EventKind::SagaFailed { .. } => {
                    metrics.saga_finished(definition, SagaStatus::Failed);
                    // Past the point of no return a forward step fails the
                    // saga straight from running.
                    let from = match state.can_turn_back() {
                        true => SagaStatus::Compensating,
                        false => SagaStatus::Running,
                    };
                    metrics.saga_moved(definition, Some(from), SagaStatus::Failed);
                    self.saga_failed(state);
                }
                EventKind::AttemptStarted { .. }
                | EventKind::InputResolved { .. }
                | EventKind::InputUnresolved { .. }
                | EventKind::CancelRequested { .. }
                | EventKind::EndpointsRefreshed { .. } => {}
            }
        }
    }

    /// A participant call of `step` returned after `took`.
    pub(super) fn call_returned(
        &self,
        state: &SagaState,
        step: u32,
        action: Action,
        took: Duration,
    ) {
        if let Some(spec) = state.steps.get(step as usize) {
            self.inner
                .metrics
                .call_returned(&spec.participant, action, took);
        }
    }

    /// Counts an unfinished saga that recovery resumes, in its journaled state.
    pub(super) fn recovered_saga(&self, state: &SagaState) {
        self.inner
            .metrics
            .saga_moved(&state.definition, None, state.status);
    }

    /// A saga became FAILED: it needs an operator. Say so loudly, and post it.
    fn saga_failed(&self, state: &SagaState) {
        let notice = Notice::for_failed(state);
        let (step, error) = notice
            .as_ref()
            .map(|n| (n.failed_step.as_deref(), n.last_error.as_deref()))
            .unwrap_or_default();
        tracing::warn!(
            saga = %state.id,
            definition = %state.definition,
            step = step.unwrap_or("-"),
            last_error = error.unwrap_or("-"),
            reason = state.error.as_deref().unwrap_or("-"),
            "saga FAILED: a compensation gave up; an operator must fix the cause and run `sagad retry`"
        );
        if let (Some(notifier), Some(notice)) = (self.inner.on_failed.get(), notice) {
            notifier.notify(notice);
        }
    }

    /// Drains histogram samples now and then until shutdown, so they do not pile
    /// up when nobody scrapes.
    pub(super) async fn metrics_upkeep(self) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(METRICS_UPKEEP_INTERVAL) => self.inner.metrics.upkeep(),
                _ = self.inner.shutdown.cancelled() => return,
            }
        }
    }
}
