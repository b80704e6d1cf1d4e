//! Parking: a saga whose next attempt is far away waits without a task.
//!
//! A runner holds a task, its future, the saga's state, a command channel and a
//! tracing span: ~5 KB, which is what 100,000 sagas waiting in backoff would
//! cost. A saga whose decision is to wait until a journaled due time at least
//! [`PARK_AFTER`] away needs none of it: the runner *parks* it (its owner slot
//! becomes `Parked(due)` and one engine-wide timer holds `(due, id)`,
//! ~100 bytes together) and ends. The saga is *woken* — read back from the
//! journal and given a new runner, as recovery does — when it is due (by the
//! timer task) or when a command (cancel, retry, wait, watch) arrives for it.
//!
//! ```text
//!   runner ──WaitUntil(due ≥ now + PARK_AFTER)──▶ Parked(due) + timer ──┐
//!     ▲                                                                 │
//!     └──── fold the journal, new runner ◀── due (timer) or a command ──┘
//! ```
//!
//! Guarantees:
//! - Nothing is lost by parking: a runner parks only once everything it did is
//!   journaled (the due time included), so the journal alone says how to go on.
//! - A parked saga is still owned (`is_owned`, the active gauge, recovery all
//!   see it), and is woken exactly once per park: the timer and a command race
//!   under the owners lock, and only a `Parked` slot can be woken.
//! - No command is lost or answered wrongly: a command that wakes a saga is
//!   queued in the new runner's channel before anyone else can see it; a runner
//!   with a command queued does not park; a command sent to a runner that parked
//!   in between gets no answer, and its sender asks again (and wakes the saga).
//! - A saga someone waits on or watches is not parked: its waiters and watchers
//!   live in its runner.
//! - A saga is woken no earlier than its due time by the timer (`decide` then
//!   starts the attempt rather than parking it again).
//! - Shutdown needs nothing from parked sagas (their due times are journaled):
//!   the timer task stops with the engine, and the next start parks them again.

use std::time::Duration;

use super::{Command, CommandRx, CommandTx, Engine, owners::Woken, recovery};
use crate::saga::{Decision, SagaId, SagaState, Timestamp, decide};

/// The shortest wait that parks a saga by default. Shorter waits keep their
/// runner: waking costs a journal read and a fold, more than a short sleep.
pub const PARK_AFTER: Duration = Duration::from_secs(2);
/// Sagas the timer wakes under one hold of the owners lock.
const WAKE_BATCH: usize = 256;
/// Longest the timer sleeps without looking again: due times are wall-clock
/// (journaled), sleeps monotonic, so a wall-clock step is noticed this soon.
const TIMER_NAP_MAX: Duration = Duration::from_secs(60);

/// Where a command went (see [`Engine::route`]).
pub(super) enum Delivery {
    /// To a running saga: send it down this channel.
    Send(CommandTx, Box<Command>),
    /// The command woke a parked saga and is queued for its new runner.
    Queued,
}

impl Engine {
    /// Whether a saga that must wait until `due` should park rather than sleep.
    pub(super) fn parks(&self, due: Timestamp, now: Timestamp) -> bool {
        !self.inner.shutdown.is_cancelled() && due.since(now) >= self.inner.config.park_after
    }

    /// When a saga just read back should be parked rather than run: its next
    /// step is a wait long enough to park.
    pub(super) fn park_due(&self, state: &SagaState) -> Option<Timestamp> {
        let now = Timestamp::now();
        match decide(state, now) {
            Decision::WaitUntil(due) if self.parks(due, now) => Some(due),
            _ => None,
        }
    }

    /// Parks the running saga `id` until `due`, unless a command is queued on
    /// `command_rx` (the caller serves it first). On true the caller (the
    /// saga's runner or its claimer) must drop the channel and never touch the
    /// saga's owner slot again.
    pub(super) fn park(&self, id: SagaId, due: Timestamp, command_rx: &CommandRx) -> bool {
        match self.lock_owners().park(id, due, command_rx) {
            Some(first) => {
                if first {
                    // A permit is stored if the timer is not waiting right now.
                    self.inner.timer_changed.notify_one();
                }
                true
            }
            None => false,
        }
    }

    /// Sagas parked right now.
    pub fn parked_sagas(&self) -> usize {
        self.lock_owners().parked()
    }

    /// Routes a command to the saga's runner, waking the saga if it is parked.
    /// `None` when the saga is not owned (or is parked while the engine shuts
    /// down: it is left for the next start).
    pub(super) fn route(&self, id: SagaId, command: Box<Command>) -> Option<Delivery> {
        let mut owners = self.lock_owners();
        if self.inner.shutdown.is_cancelled() && owners.abandon(id) {
            return None;
        }
        match owners.route(id, command)? {
            Ok((command_tx, command)) => Some(Delivery::Send(command_tx, command)),
            Err(woken) => {
                drop(owners);
                tracing::debug!(saga = %id, "parked saga woken by a command");
                self.unpark(woken);
                Some(Delivery::Queued)
            }
        }
    }

    /// Reads a woken saga back from the journal and parks it again or hands
    /// it to a new runner (`recovery::revive`), in a task of its own: a caller
    /// that gives up waiting must not strand it.
    fn unpark(&self, woken: Woken) {
        let engine = self.clone();
        self.inner.tracker.spawn(async move {
            recovery::revive(&engine, woken).await;
        });
    }

    /// The timer: wakes each parked saga when it is due; runs until shutdown.
    pub(super) async fn run_timer(self) {
        let shutdown = self.inner.shutdown.clone();
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let now = Timestamp::now();
            let (woken, next) = {
                let mut owners = self.lock_owners();
                let woken = owners.wake_due(now, WAKE_BATCH);
                (woken, owners.next_due())
            };
            let full = woken.len() == WAKE_BATCH;
            for woken in woken {
                tracing::debug!(saga = %woken.id, "parked saga due");
                self.unpark(woken);
            }
            if full {
                // More may be due: let others at the lock first.
                tokio::task::yield_now().await;
                continue;
            }
            let nap = next.map_or(TIMER_NAP_MAX, |due| due.since(now).min(TIMER_NAP_MAX));
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = self.inner.timer_changed.notified() => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Instant};

    use super::*;
    use crate::{
        engine::EngineConfig,
        journal::{Journal, MemoryJournal},
        participant::GrpcParticipants,
        saga::{Action, Event, EventKind, Failure, Principal, SagaStatus},
        testing,
    };

    /// An engine over `journal` whose participants are unreachable
    /// (127.0.0.1:1 refuses), parking waits of `park_after` or more.
    async fn engine(journal: Arc<MemoryJournal>, park_after: Duration) -> Engine {
        Engine::new(
            journal,
            Arc::new(GrpcParticipants::new(1024)),
            vec![],
            EngineConfig {
                park_after,
                shutdown_grace: Duration::from_millis(100),
                ..EngineConfig::default()
            },
        )
        .await
        .unwrap()
    }

    /// Journals a one-step saga whose first forward attempt failed, the next
    /// one due at `retry_at`; `None` leaves the attempt in flight instead.
    async fn seed(journal: &MemoryJournal, retry_at: Option<Timestamp>) -> SagaId {
        let started = testing::started("d", None);
        let id = started.saga;
        let attempt = |attempt| EventKind::AttemptStarted {
            step: 0,
            action: Action::Forward,
            attempt,
        };
        let mut events = vec![started, testing::next(id, 2, attempt(1))];
        if let Some(retry_at) = retry_at {
            events.push(testing::next(
                id,
                3,
                EventKind::AttemptFailed {
                    step: 0,
                    action: Action::Forward,
                    attempt: 1,
                    failure: Failure::Transient,
                    error: "busy".into(),
                    retry_at: Some(retry_at),
                },
            ));
        }
        journal.append(events).await.unwrap();
        id
    }

    async fn poll<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(value) = check().await {
                return value;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn recovery_parks_waiting_sagas_without_a_runner_and_a_command_wakes_one() {
        let journal = Arc::new(MemoryJournal::in_memory());
        let far = Timestamp::now().plus(Duration::from_secs(3600));
        let waiting = seed(&journal, Some(far)).await;
        let soon = seed(
            &journal,
            Some(Timestamp::now().plus(Duration::from_millis(50))),
        )
        .await;
        let in_flight = seed(&journal, None).await;
        let engine = engine(journal.clone(), PARK_AFTER).await;

        let report = recovery::recover(&engine).await.unwrap().finished().await;
        assert_eq!(
            (report.resumed, report.parked, report.interrupted),
            (3, 1, 1),
            "only the far wait parks; a short one and an interrupted call get runners"
        );
        assert!(engine.lock_owners().is_parked(waiting));
        for id in [soon, in_flight] {
            assert!(engine.is_owned(id) && !engine.lock_owners().is_parked(id));
        }
        // Recovery journaled nothing for the parked saga.
        assert_eq!(engine.get(waiting).await.unwrap().last_seq, 3);

        let cancelled = engine
            .cancel(waiting, "test".into(), Principal::anonymous(None))
            .await
            .unwrap();
        assert_eq!(cancelled.cancel_reason.as_deref(), Some("test"));
        assert!(
            !engine.lock_owners().is_parked(waiting),
            "the cancel woke it"
        );
        assert!(engine.is_owned(waiting), "and it runs, compensating");
        let journaled = engine.get(waiting).await.unwrap();
        assert_eq!(journaled.cancel_reason.as_deref(), Some("test"));
        engine.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn recovery_claims_every_saga_at_once_and_reads_them_back_after() {
        let journal = Arc::new(MemoryJournal::in_memory());
        let far = Timestamp::now().plus(Duration::from_secs(3600));
        let mut waiting = Vec::new();
        // More than one batch of every loader.
        for _ in 0..600 {
            waiting.push(seed(&journal, Some(far)).await);
        }
        let engine = engine(journal.clone(), PARK_AFTER).await;
        let recovering = recovery::recover(&engine).await.unwrap();
        assert_eq!(recovering.resumed(), 600);
        assert!(
            waiting.iter().all(|&id| engine.is_owned(id)),
            "once recover returns, the engine answers for every saga"
        );
        let report = recovering.finished().await;
        assert_eq!(
            (report.resumed, report.parked, report.interrupted),
            (600, 600, 0)
        );
        assert_eq!(engine.parked_sagas(), 600);
        assert_eq!(engine.lock_owners().unread(), 0);
        engine.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn a_command_for_a_saga_not_read_back_yet_reads_it_first() {
        let journal = Arc::new(MemoryJournal::in_memory());
        let far = Timestamp::now().plus(Duration::from_secs(3600));
        let id = seed(&journal, Some(far)).await;
        let engine = engine(journal.clone(), PARK_AFTER).await;
        // Claimed as recovery claims it, before any loader reached it.
        assert!(engine.lock_owners().claim_unread(id));
        let cancelled = engine
            .cancel(id, "test".into(), Principal::anonymous(None))
            .await
            .unwrap();
        assert_eq!(cancelled.cancel_reason.as_deref(), Some("test"));
        assert_eq!(engine.lock_owners().unread(), 0, "it was read back");
        assert!(engine.is_owned(id), "and runs, compensating");
        engine.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn the_timer_wakes_a_parked_saga_when_due_and_not_before() {
        let journal = Arc::new(MemoryJournal::in_memory());
        let due = Timestamp::now().plus(Duration::from_millis(700));
        let id = seed(&journal, Some(due)).await;
        let engine = engine(journal.clone(), Duration::from_millis(200)).await;
        let report = recovery::recover(&engine).await.unwrap().finished().await;
        assert_eq!(report.parked, 1);

        // The second attempt starts (and fails: nothing listens) once due.
        let second = poll("the second attempt", async || {
            let events = journal.read_saga(id).await.unwrap();
            events
                .into_iter()
                .find(|e: &Event| matches!(e.kind, EventKind::AttemptStarted { attempt: 2, .. }))
        })
        .await;
        assert!(
            second.at >= due,
            "attempt 2 at {:?}, due {due:?}",
            second.at
        );
        let events = journal.read_saga(id).await.unwrap();
        let starts = events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::AttemptStarted { attempt: 2, .. }))
            .count();
        assert_eq!(starts, 1, "one wake-up, one runner, one attempt 2");
        assert_eq!(
            SagaState::fold(&events).unwrap().status,
            SagaStatus::Running
        );
        engine.shutdown().await.unwrap();
    }
}
