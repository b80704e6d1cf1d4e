//! Resuming every unfinished saga at start.
//!
//! Recovery reads the journal's index of unfinished sagas, folds each history,
//! records any call that was in flight when the coordinator stopped as an
//! interrupted attempt (its outcome is unknown, so it is retried with the same
//! idempotency key, under the usual budget and backoff), and hands each saga to a
//! runner. Sagas waiting in backoff keep their journaled due time. Finished sagas
//! are never read.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{Engine, RUNNER_COMMAND_CAPACITY};
use crate::{
    Result,
    saga::{self, Event, SagaId, Timestamp},
};

/// What recovery found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Sagas handed back to runners.
    pub resumed: usize,
    /// Calls that were in flight when the coordinator stopped.
    pub interrupted: usize,
    pub took: Duration,
}

/// Hands one saga back to a runner, as its journal says it is. Returns how many
/// in-flight calls were recorded as interrupted, or `None` when the saga is
/// terminal or already has a runner. `count_active`: add the saga to the
/// active-saga gauge (at start-up, not when a stalled saga resumes: it is counted).
pub(crate) async fn resume(
    engine: &Engine,
    id: SagaId,
    count_active: bool,
) -> Result<Option<usize>> {
    let (command_tx, command_rx) = mpsc::channel(RUNNER_COMMAND_CAPACITY);
    {
        let mut runners = engine.lock_runners();
        if runners.contains_key(&id) {
            return Ok(None);
        }
        runners.insert(id, command_tx);
    }
    // From here the saga is ours: read it only now, so nothing can change it.
    let mut state = match engine.get(id).await {
        Ok(state) if !state.status.is_terminal() => state,
        other => {
            engine.lock_runners().remove(&id);
            other?;
            return Ok(None);
        }
    };
    if count_active {
        engine.recovered_saga(&state);
    }
    let now = Timestamp::now();
    let mut pending = Vec::new();
    for kind in saga::recover(&state, now, fastrand::f64()) {
        let event = Event {
            saga: id,
            seq: state.last_seq + 1,
            offset: 0,
            at: now,
            kind,
        };
        state.apply(&event)?;
        pending.push(event);
    }
    let interrupted = pending.len();
    engine.spawn_runner(state, pending, command_rx, None, vec![]);
    Ok(Some(interrupted))
}

/// Resumes every unfinished saga of the engine's journal.
pub async fn recover(engine: &Engine) -> Result<RecoveryReport> {
    let started = Instant::now();
    let journal = engine.journal().clone();
    let mut report = RecoveryReport::default();
    for id in journal.unfinished().await? {
        if let Some(interrupted) = resume(engine, id, true).await? {
            report.resumed += 1;
            report.interrupted += interrupted;
        }
        crate::crash_point!("recovery::after_resume");
    }
    report.took = started.elapsed();
    engine.metrics().recovered(report.resumed, report.took);
    tracing::info!(
        resumed = report.resumed,
        interrupted = report.interrupted,
        took_ms = report.took.as_millis() as u64,
        "recovery finished"
    );
    Ok(report)
}
