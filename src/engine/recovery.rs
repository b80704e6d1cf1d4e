//! Resuming every unfinished saga at start.
//!
//! Recovery reads the journal's index of unfinished sagas, folds each history,
//! records any call that was in flight when the coordinator stopped as an
//! interrupted attempt (its outcome is unknown, so it is retried with the same
//! idempotency key, under the usual budget and backoff), and hands each saga to a
//! runner. A saga waiting in backoff keeps its journaled due time; if that is at
//! least the engine's `park_after` away (and nothing had to be recorded), it is
//! parked at once (`parking.rs`): no task until it is due or a command arrives.
//! Finished sagas are never read.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{Engine, RUNNER_COMMAND_CAPACITY};
use crate::{
    Result,
    saga::{self, Event, Offset, SagaId, SagaState, Timestamp},
};

/// What recovery found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Sagas handed back to runners or parked.
    pub resumed: usize,
    /// Of those, sagas parked until their next attempt is due.
    pub parked: usize,
    /// Calls that were in flight when the coordinator stopped.
    pub interrupted: usize,
    pub took: Duration,
}

/// How one saga was resumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Resumed {
    /// In-flight calls recorded as interrupted.
    pub interrupted: usize,
    /// Parked rather than given a runner.
    pub parked: bool,
}

/// A saga's state as its journal says, made safe to run again: calls that were
/// in flight are recorded as interrupted, in the returned events (applied to the
/// state, not journaled yet). `None` when the saga is terminal. The caller must
/// own the saga (a claim or a wake), so nothing changes it meanwhile.
pub(super) async fn load(engine: &Engine, id: SagaId) -> Result<Option<(SagaState, Vec<Event>)>> {
    let mut state = engine.get(id).await?;
    if state.status.is_terminal() {
        return Ok(None);
    }
    let now = Timestamp::now();
    let mut pending = Vec::new();
    for kind in saga::recover(&state, now, fastrand::f64()) {
        let event = Event {
            saga: id,
            seq: state.last_seq + 1,
            offset: Offset::ZERO,
            at: now,
            kind,
        };
        state.apply(&event)?;
        pending.push(event);
    }
    Ok(Some((state, pending)))
}

/// Hands one saga back to a runner, or parks it, as its journal says it is.
/// `None` when the saga is terminal or already owned. `count_active`: add the
/// saga to the active-saga gauge (at start-up, not when a stalled saga
/// resumes: it is counted).
pub(crate) async fn resume(
    engine: &Engine,
    id: SagaId,
    count_active: bool,
) -> Result<Option<Resumed>> {
    let (command_tx, command_rx) = mpsc::channel(RUNNER_COMMAND_CAPACITY);
    if !engine.lock_owners().claim(id, command_tx) {
        return Ok(None);
    }
    // From here the saga is ours: read it only now, so nothing can change it.
    let (state, pending) = match load(engine, id).await {
        Ok(Some(loaded)) => loaded,
        other => {
            engine.lock_owners().release(id);
            other?;
            return Ok(None);
        }
    };
    if count_active {
        engine.recovered_saga(&state);
    }
    // Interrupted attempts must be journaled first: the runner does that, and
    // parks the saga itself if it then has long to wait.
    if pending.is_empty()
        && let Some(due) = engine.park_due(&state)
        && engine.park(id, due, &command_rx)
    {
        return Ok(Some(Resumed {
            interrupted: 0,
            parked: true,
        }));
    }
    let interrupted = pending.len();
    engine.spawn_runner(state, pending, command_rx, None, vec![]);
    Ok(Some(Resumed {
        interrupted,
        parked: false,
    }))
}

/// Resumes every unfinished saga of the engine's journal.
pub async fn recover(engine: &Engine) -> Result<RecoveryReport> {
    let started = Instant::now();
    let journal = engine.journal().clone();
    let mut report = RecoveryReport::default();
    for id in journal.unfinished().await? {
        if let Some(resumed) = resume(engine, id, true).await? {
            report.resumed += 1;
            report.parked += usize::from(resumed.parked);
            report.interrupted += resumed.interrupted;
        }
        crate::crash_point!("recovery::after_resume");
    }
    report.took = started.elapsed();
    engine.metrics().recovered(report.resumed, report.took);
    tracing::info!(
        resumed = report.resumed,
        parked = report.parked,
        interrupted = report.interrupted,
        took_ms = report.took.as_millis() as u64,
        "recovery finished"
    );
    Ok(report)
}
