//! The mover: a background task that moves sagas which ended longer ago than
//! `--history-after` out of the journal's store into its history tier
//! (`journal/history/`), so that neither a start nor the store's memory grows
//! with finished history.
//!
//! Each pass, every [`interval`] (a tenth of the period, between a second and
//! a minute), asks the journal to move what is due, one segment of up to
//! [`SEGMENT_SAGAS_MAX`] sagas at a time, while at least
//! [`SEGMENT_SAGAS_MIN`] are due:
//!
//! ```text
//!  due = final sagas that ended before now - history_after, oldest first
//!  ─▶ read them whole ─▶ write a segment, sync, rename ─▶ [crash point
//!     history::after_segment] ─▶ remove them from the store
//! ```
//!
//! Invariants (the journal's: `journal/kv/tiered.rs`):
//! - **Nothing is lost.** A saga leaves the store only once its segment is
//!   durable; a crash in between leaves it in both, read once, and the next
//!   pass moves it again (into a newer segment; reads prefer the newest).
//! - **Nothing changes for readers.** `GetSaga`, `ListSagas`, `WatchSaga`,
//!   the feed and idempotency keys find a moved saga as before.
//! - **Few, large segments.** Fewer than [`SEGMENT_SAGAS_MIN`] due wait for
//!   the next pass: each segment costs an open file and a footer in memory,
//!   and a quiet journal is small enough to keep its finished sagas.
//! - **Sagas never wait for it.** The reads and the segment's write run on a
//!   blocking thread; the removal is ordinary requests in the writer's
//!   queue, a few hundred sagas each.

use std::{sync::Arc, time::Duration};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    journal::{Journal, JournalError, history::Moved},
    saga::Timestamp,
};

/// Most sagas in one segment: its write holds them all in memory.
pub const SEGMENT_SAGAS_MAX: usize = 100_000;
/// Fewest sagas worth a segment of their own.
pub const SEGMENT_SAGAS_MIN: usize = 10_000;
/// Shortest and longest pause between passes.
const INTERVAL_MIN: Duration = Duration::from_secs(1);
const INTERVAL_MAX: Duration = Duration::from_secs(60);

/// The pause between passes for a `--history-after` period.
pub fn interval(after: Duration) -> Duration {
    (after / 10).clamp(INTERVAL_MIN, INTERVAL_MAX)
}

/// Moves old final sagas from a journal's store to its history tier.
pub struct Mover {
    journal: Arc<dyn Journal>,
    after: Duration,
    /// Fewest sagas a move takes: [`SEGMENT_SAGAS_MIN`] (tests take fewer).
    at_least: usize,
}

impl Mover {
    pub fn new(journal: Arc<dyn Journal>, after: Duration) -> Self {
        Self {
            journal,
            after,
            at_least: SEGMENT_SAGAS_MIN,
        }
    }

    /// A mover that moves as few as `at_least` sagas at a time.
    pub fn with_at_least(mut self, at_least: usize) -> Self {
        self.at_least = at_least;
        self
    }

    /// Runs passes every [`interval`] until `shutdown`; returns once the
    /// move in progress (if any) is finished, so the journal can then close.
    pub fn spawn(self, shutdown: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(self.run(shutdown))
    }

    async fn run(self, shutdown: CancellationToken) {
        let every = interval(self.after);
        tracing::info!(history_after = ?self.after, every = ?every, "history mover started");
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.cancelled() => return,
            }
            if self.journal.write_failure().is_some() {
                continue; // the journal refuses writes: nothing could be removed
            }
            let cutoff = Timestamp::now().minus(self.after);
            match self.pass(cutoff, &shutdown).await {
                Ok(moved) if moved.sagas > 0 => tracing::info!(
                    sagas = moved.sagas,
                    bytes = moved.bytes,
                    "moved finished sagas to the history tier"
                ),
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "moving sagas to the history tier failed; retrying next pass")
                }
            }
        }
    }

    /// Moves what ended before `cutoff`, a segment at a time, while a full
    /// segment's worth is due or until `stop` (between segments only).
    pub async fn pass(
        &self,
        cutoff: Timestamp,
        stop: &CancellationToken,
    ) -> Result<Moved, JournalError> {
        let mut total = Moved::default();
        while !stop.is_cancelled() {
            let moved = self
                .journal
                .move_to_history(cutoff, self.at_least, SEGMENT_SAGAS_MAX)
                .await?;
            total.sagas += moved.sagas;
            total.bytes += moved.bytes;
            if moved.sagas < SEGMENT_SAGAS_MAX {
                break;
            }
        }
        Ok(total)
    }
}
