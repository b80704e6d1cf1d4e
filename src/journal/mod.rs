//! The durable record of every transition of every saga, and of the registered
//! participants.
//!
//! The engine talks to storage only through the [`Journal`] trait: async,
//! batch-oriented, and free of storage types, so a shared PostgreSQL journal can
//! sit behind it later without touching the engine.
//!
//! Contract of every implementation:
//! - **Durable on `Ok`.** When `append` or `put_participant` returns `Ok`, what it
//!   wrote survives a crash of the process or the machine. Nothing may act on an
//!   event before its append returned `Ok`.
//! - **Per-saga order.** A saga's events are read back in `seq` order; an append
//!   holds one saga's events in order, and its events land after those of every
//!   append of that saga that returned before it was called.
//! - **Offsets.** Every appended event gets a global offset: gap-free, increasing,
//!   in the order events became durable.
//! - **Reading by offset.** `read_after` returns durable events in offset order,
//!   without scanning every saga; it never returns an event that a crash could
//!   still take back, and never skips an event still in the journal.
//!   `durable_offset` publishes the last durable offset, so a feed can wait for
//!   more without polling.
//! - **Retention.** `remove_sagas` deletes whole sagas, and only final ones
//!   (COMPLETED or COMPENSATED: nothing can change them any more; a FAILED saga
//!   stays, as an operator may retry it). It raises the *archive horizon*
//!   (`archived_through`) to the highest offset it removed: above the horizon,
//!   offsets are gap-free; at or below it, offsets of removed sagas are missing
//!   and `read_after` skips them. A removed saga's idempotency key is free again.
//! - **Atomic appends.** An append is wholly written or not at all; an append whose
//!   `SagaStarted` names an idempotency key another saga holds writes nothing and
//!   fails with [`JournalError::IdempotencyConflict`].
//! - **Group commit.** Concurrent appends share one flush: the cost of durability is
//!   paid per batch, not per caller.
//! - **Failure stops writes.** After a write or flush fails, the journal refuses
//!   every write until a sync succeeds again (it probes the disk meanwhile): nothing
//!   may go on in a state that is not known to be on disk. An append that failed
//!   may still become durable by a later sync; its offsets are never reused.

use std::{path::PathBuf, sync::Arc, time::Duration};

use async_trait::async_trait;
use tokio::sync::watch;

use crate::saga::{Event, Participant, SagaId, SagaStatus, Timestamp};

mod background;
mod by_status;
pub mod check;
mod codec;
mod compaction;
#[cfg(test)]
pub mod conformance;
pub mod kv;
pub mod memory;
mod offsets;
mod overlay;
mod retention;
pub mod sled;
mod snapshots;
mod spare;
pub mod wal;

pub use kv::KvJournal;
pub use memory::MemoryJournal;
pub use sled::SledJournal;

/// Most write requests one flush takes; more wait for the next batch.
pub const JOURNAL_BATCH_MAX: usize = 1024;
/// Write requests that can queue for the writer before appenders wait.
pub const JOURNAL_QUEUE_CAPACITY: usize = 4096;
/// How often a journal whose writes fail tries the disk again.
pub const JOURNAL_PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

/// What can go wrong with the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(
        "data directory {dir} is already in use by another sagad process ({holder}); stop it or choose another --data-dir"
    )]
    Locked { dir: PathBuf, holder: String },
    #[error("cannot open the journal in {dir}: {why}")]
    Open { dir: PathBuf, why: String },
    #[error("journal write failed: {0}")]
    Io(String),
    #[error(
        "the journal refuses writes after an earlier failure ({0}); restart sagad once the disk is healthy"
    )]
    Failed(String),
    #[error("journal record {key} is damaged: {why}")]
    Corrupt { key: String, why: String },
    #[error("idempotency key '{key}' already belongs to saga {existing}")]
    IdempotencyConflict { key: String, existing: SagaId },
    #[error("the journal is closed")]
    Closed,
}

/// The listing fields of one saga, kept current by the journal as events land.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SagaSummary {
    pub id: SagaId,
    pub status: SagaStatus,
    pub definition: String,
    pub created_at: Timestamp,
}

/// Which sagas to list: newest first, optional filters, keyset pagination.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListQuery {
    pub status: Option<SagaStatus>,
    pub definition: Option<String>,
    /// Only sagas older than this one (the previous page's last id).
    pub before: Option<SagaId>,
    pub limit: usize,
}

/// Counters for tests, benchmarks and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Durable flushes done.
    pub flushes: u64,
    /// Write requests (appends, participant writes) made durable.
    pub requests: u64,
    /// Events made durable.
    pub events: u64,
}

/// Told about every durable flush. Called on the journal's writer thread, once
/// per flush (not per event): it **must** be cheap and never block.
pub trait FlushObserver: Send + Sync + 'static {
    /// A flush made `events` events durable (0 for participant-only writes), and
    /// writing plus syncing it took `took`.
    fn flushed(&self, events: u64, took: Duration);
}

/// The journal: see the module docs for the contract every implementation must keep.
#[async_trait]
pub trait Journal: Send + Sync + 'static {
    /// Appends events durably, in order, and returns them with their offsets.
    async fn append(&self, events: Vec<Event>) -> Result<Vec<Event>, JournalError>;

    /// A saga's events in `seq` order; empty if the saga does not exist.
    async fn read_saga(&self, id: SagaId) -> Result<Vec<Event>, JournalError>;

    /// Durable events with an offset above `after`, in offset order, at most
    /// `limit` of them (fewer only when no more are durable). Every event still
    /// in the journal is returned: the only offsets skipped are those of sagas
    /// removed by retention, all at or below [`Journal::archived_through`].
    async fn read_after(&self, after: u64, limit: usize) -> Result<Vec<Event>, JournalError>;

    /// The archive horizon: the highest offset of any event removed by
    /// [`Journal::remove_sagas`], 0 when none was. It only grows.
    async fn archived_through(&self) -> Result<u64, JournalError>;

    /// Final sagas (COMPLETED or COMPENSATED) whose terminal event is older
    /// than `cutoff`, in id order (which is creation order), with ids above
    /// `after`, at most `limit`; fewer only when there are no more. It must not
    /// cost a scan of every saga: it may stop at the first saga created at or
    /// after `cutoff` (such a saga cannot have ended before it).
    async fn finished_before(
        &self,
        cutoff: Timestamp,
        after: Option<SagaId>,
        limit: usize,
    ) -> Result<Vec<SagaId>, JournalError>;

    /// Removes the final sagas among `ids` entirely (events, offsets, listing,
    /// idempotency key), durably, in one batch; returns the ids removed. A saga
    /// that is unknown or not final is left untouched and not returned.
    async fn remove_sagas(&self, ids: Vec<SagaId>) -> Result<Vec<SagaId>, JournalError>;

    /// The last durable offset (0 when the journal is empty); it changes each time
    /// more events become durable, and the receiver sees the change.
    fn durable_offset(&self) -> watch::Receiver<u64>;

    /// Every saga that has not reached a terminal state.
    async fn unfinished(&self) -> Result<Vec<SagaId>, JournalError>;

    /// The saga started with this idempotency key, if any.
    async fn saga_for_key(&self, key: &str) -> Result<Option<SagaId>, JournalError>;

    /// Sagas matching `query`, newest first.
    async fn list(&self, query: &ListQuery) -> Result<Vec<SagaSummary>, JournalError>;

    /// Creates or replaces a participant, durably.
    async fn put_participant(&self, participant: Participant) -> Result<(), JournalError>;

    /// Every registered participant, by name.
    async fn participants(&self) -> Result<Vec<Participant>, JournalError>;

    /// Counters since open.
    fn stats(&self) -> JournalStats;

    /// Reports every later durable flush to `observer` (for metrics). Only the
    /// first observer is kept; journals without a flush of their own ignore it.
    fn observe_flushes(&self, _observer: Arc<dyn FlushObserver>) {}

    /// Why writes fail, while they do: `Some` from a failed write until the
    /// journal has made everything written so far durable again.
    fn write_failure(&self) -> Option<String>;

    /// Waits for queued writes, flushes, and stops the writer. Later writes fail
    /// with [`JournalError::Closed`].
    async fn close(&self) -> Result<(), JournalError>;
}
