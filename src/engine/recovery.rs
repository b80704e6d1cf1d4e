//! Resuming every unfinished saga at start, in two phases.
//!
//! ```text
//!  recover:   journal.unfinished() ──▶ claim each as Unread ──▶ SERVING
//!                                      (owners + read-back queue; no read)
//!  read back: a loader per core takes ids from the queue ──▶ fold the history ──▶
//!             record interrupted calls ──▶ park (a long wait) or a runner
//!  a command for an Unread saga reads it back at once, like a parked one
//! ```
//!
//! Reading a saga back folds its history, records any call that was in
//! flight when the coordinator stopped as an interrupted attempt (its outcome
//! is unknown, so it is retried with the same idempotency key, under the
//! usual budget and backoff), and hands the saga to a runner. A saga waiting
//! in backoff keeps its journaled due time; if that is at least the engine's
//! `park_after` away (and nothing had to be recorded), it is parked at once
//! (`parking.rs`): no task until it is due or a command arrives. Finished
//! sagas are never read.
//!
//! Why two phases: reading a saga back costs a journal read and a fold
//! (about 7 µs), so a million sagas waiting in backoff kept the coordinator
//! from serving for 7 s when recovery read them before opening. Claiming
//! costs a map insert. Once every unfinished saga is claimed, every call is
//! answered right: reads go to the journal, and a command (cancel, retry,
//! wait, watch) for a saga not read yet reads it back first, as it wakes a
//! parked one. What the read-back delays is only the next step of sagas
//! whose next step is due now, by the seconds it takes to reach them, and
//! it reaches them in the order the journal lists them (oldest first).

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, watch};

use super::{Engine, RUNNER_COMMAND_CAPACITY, owners::Woken};
use crate::{
    Result,
    saga::{self, Event, Offset, SagaId, SagaState, Timestamp},
};

/// Most tasks reading claimed sagas back at once, one per core. A read back
/// never waits (the store's reads do not yield), so a loader holds its
/// worker thread for a whole batch and then yields: without the yield, a
/// loader per core kept the health checks out until the read-back ended;
/// with it, they are answered between batches (BENCHMARKS.md, issue 23).
const LOADERS_MAX: usize = 4;
/// Sagas a loader takes from the queue under one hold of the owners lock,
/// and reads back before it yields its thread (about half a millisecond).
const LOAD_BATCH: usize = 64;
/// Sagas claimed under one hold of the owners lock.
const CLAIM_BATCH: usize = 4096;

/// What recovery found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Sagas claimed at start: handed back to runners or parked, once read.
    pub resumed: usize,
    /// Of those, sagas parked until their next attempt is due, at their
    /// read-back (a saga a command read back first is not counted).
    pub parked: usize,
    /// Calls that were in flight when the coordinator stopped, recorded by
    /// the read-back.
    pub interrupted: usize,
    /// From the start of recovery until every claimed saga was read back.
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

/// Reads a woken saga (parked, or unread since start-up) back from the
/// journal and parks it again or hands it to a runner, as [`resume`] does
/// with a saga it claims. A read that fails leaves the saga stalled: `heal`
/// resumes it once the journal reads again.
pub(super) async fn revive(engine: &Engine, woken: Woken) -> Option<Resumed> {
    let Woken {
        id,
        command_rx,
        first_read,
    } = woken;
    match load(engine, id).await {
        Ok(Some((state, pending))) => {
            if first_read {
                engine.recovered_saga(&state);
            }
            if pending.is_empty()
                && let Some(due) = engine.park_due(&state)
                && engine.park(id, due, &command_rx)
            {
                return Some(Resumed {
                    interrupted: 0,
                    parked: true,
                });
            }
            let interrupted = pending.len();
            engine.spawn_runner(state, pending, command_rx, None, vec![]);
            Some(Resumed {
                interrupted,
                parked: false,
            })
        }
        Ok(None) => {
            // Only this engine writes its sagas, and it owned this one
            // unfinished: nothing to run, nothing to keep.
            tracing::warn!(saga = %id, "a saga owned unfinished was found finished or gone when read back");
            engine.lock_owners().release(id);
            None
        }
        Err(e) => {
            tracing::error!(saga = %id, error = %e, "cannot read a saga back; it is retried once the journal recovers");
            engine.lock_owners().release(id);
            if first_read {
                engine.stall_uncounted(id);
            } else {
                engine.stall(id);
            }
            None
        }
    }
}

/// A start-up recovery under way: every unfinished saga is claimed, and the
/// loaders read them back.
pub struct Recovering {
    resumed: usize,
    finished: watch::Receiver<Option<RecoveryReport>>,
}

impl Recovering {
    /// Sagas claimed.
    pub fn resumed(&self) -> usize {
        self.resumed
    }

    /// Waits until every claimed saga was read back (or the engine stopped
    /// first: then what was read until then).
    pub async fn finished(mut self) -> RecoveryReport {
        let waited = self.finished.wait_for(Option::is_some).await.map(|r| *r);
        match waited {
            Ok(report) => report.unwrap_or_default(),
            Err(_) => self.finished.borrow().unwrap_or_default(),
        }
    }
}

/// The loaders' shared account of the read-back.
struct Tally {
    started: Instant,
    resumed: usize,
    parked: AtomicUsize,
    interrupted: AtomicUsize,
    /// Loaders still running; the last one out reports.
    loaders: AtomicUsize,
    report: watch::Sender<Option<RecoveryReport>>,
}

/// Claims every unfinished saga of the engine's journal as unread, and
/// starts reading them back in the background. Once this returns, the
/// engine answers for each of them (see the module docs).
pub async fn recover(engine: &Engine) -> Result<Recovering> {
    let started = Instant::now();
    let journal = engine.journal().clone();
    let unfinished = journal.unfinished().await?;
    let mut resumed = 0;
    for chunk in unfinished.chunks(CLAIM_BATCH) {
        let mut owners = engine.lock_owners();
        resumed += chunk.iter().filter(|&&id| owners.claim_unread(id)).count();
    }
    drop(unfinished);
    engine.metrics().recovering(resumed, resumed);
    tracing::info!(
        resumed,
        took_ms = started.elapsed().as_millis() as u64,
        "recovery claimed every unfinished saga; reading them back"
    );
    let (report_tx, finished) = watch::channel(None);
    let loaders = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, LOADERS_MAX)
        .min(resumed.max(1));
    let tally = Arc::new(Tally {
        started,
        resumed,
        parked: AtomicUsize::new(0),
        interrupted: AtomicUsize::new(0),
        loaders: AtomicUsize::new(loaders),
        report: report_tx,
    });
    for _ in 0..loaders {
        engine
            .inner
            .tracker
            .spawn(read_back(engine.clone(), Arc::clone(&tally)));
    }
    Ok(Recovering { resumed, finished })
}

/// One loader: reads claimed sagas back until none is left unread or the
/// engine stops; the last loader out reports.
async fn read_back(engine: Engine, tally: Arc<Tally>) {
    loop {
        if engine.inner.shutdown.is_cancelled() {
            break;
        }
        let batch = engine.lock_owners().take_unread(LOAD_BATCH);
        if batch.is_empty() {
            break;
        }
        let taken = batch.len();
        for woken in batch {
            if let Some(resumed) = revive(&engine, woken).await {
                tally
                    .parked
                    .fetch_add(usize::from(resumed.parked), Ordering::Relaxed);
                tally
                    .interrupted
                    .fetch_add(resumed.interrupted, Ordering::Relaxed);
            }
            crate::crash_point!("recovery::after_resume");
        }
        // Another loader's batch counts until it is read back; a count read
        // earlier is only ever too high, and the last loader out says 0.
        let unread = {
            let mut owners = engine.lock_owners();
            owners.read_back_done(taken);
            owners.not_read_back()
        };
        engine.metrics().recovering(tally.resumed, unread);
        // Let the calls waiting for this worker thread in.
        tokio::task::yield_now().await;
    }
    if tally.loaders.fetch_sub(1, Ordering::AcqRel) != 1 {
        return;
    }
    let report = RecoveryReport {
        resumed: tally.resumed,
        parked: tally.parked.load(Ordering::Relaxed),
        interrupted: tally.interrupted.load(Ordering::Relaxed),
        took: tally.started.elapsed(),
    };
    if engine.inner.shutdown.is_cancelled() {
        tracing::info!(
            resumed = report.resumed,
            "recovery stopped by the shutdown; the sagas not read back are read at the next start"
        );
    } else {
        engine.metrics().recovered(report.took);
        tracing::info!(
            resumed = report.resumed,
            parked = report.parked,
            interrupted = report.interrupted,
            took_ms = report.took.as_millis() as u64,
            "recovery finished"
        );
    }
    tally.report.send_replace(Some(report));
}
