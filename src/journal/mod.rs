//! The durable record of every transition of every saga, and of the registered
//! participants.
//!
//! The engine talks to storage only through the [`Journal`] trait: async,
//! batch-oriented, and free of storage types, so a shared PostgreSQL journal can
//! sit behind it beside the sled one without touching the engine.
//!
//! # The map
//!
//! Three floors; each imports only from the floors below it.
//!
//! ```text
//!  engine ──▶ Journal            this file: the contract, its errors and values
//!                 ▲ implemented by            (sled.rs, memory.rs: assembly only)
//!  kv/        KvJournal          the saga schema over ordered keys: the writer
//!                 │              thread, the codec, the indexes, retention, check
//!                 ▼ keys and values through
//!  store/     KvStore            ordered key-value stores that know nothing of
//!                                sagas: WalStore (log, overlay, checkpoints)
//!                                in front of SledStore; MemoryStore
//! ```
//!
//! Beside the three floors stands a sibling that needs none of them:
//!
//! ```text
//!  engine ──▶ Journal
//!                 ▲ implemented by
//!  postgres/  PgJournal          the saga schema as tables in PostgreSQL: one
//!                                writer task, one pipelined transaction per
//!                                batch, nodes with epochs and leases
//! ```
//!
//! And one more, not wired into a journal yet (issue 23): `history/`, the
//! immutable segment files finished sagas are to move into, out of sled,
//! read with the journal's own record codec (`kv/codec`).
//!
//! | journal | assembled as | for |
//! |---|---|---|
//! | [`SledJournal`] | `KvJournal<WalStore<SledStore>>` | `sagad serve`: the embedded default |
//! | [`PgJournal`] | its own (`postgres/mod.rs` is its map) | `sagad serve --journal postgres://…`: shared by several coordinators |
//! | [`ReadOnlyJournal`] | `KvJournal<ReadOnlyLog<SledStore>>` | `journal check`, `export`: a stopped server's directory, read only |
//! | [`PgSnapshot`] | its own (`postgres/snapshot.rs`): one connection in one `REPEATABLE READ READ ONLY` transaction | `journal check --journal`, `export --journal`: a PostgreSQL journal, read only, beside live nodes |
//! | [`MemoryJournal`] | `KvJournal<MemoryStore>` | tests |
//! | [`Salvage`] | what a copy of sled still reads, the log over it, rebuilt (`salvage.rs`) | `journal salvage`: a new data directory from a damaged one |
//!
//! ## The write path (an append on the sled journal)
//!
//! 1. [`Journal::append`] queues a request for the writer thread (a bounded
//!    queue, [`JOURNAL_QUEUE_CAPACITY`]) and awaits its reply (`kv/mod.rs`).
//! 2. The writer drains up to [`JOURNAL_BATCH_MAX`] requests, gives their
//!    events offsets, and works out every key write: each run of events, its
//!    offset index entry, the saga's summary, its unfinished and failed index
//!    entries, the idempotency key, new step snapshots (`kv/writer.rs`, with
//!    `kv/codec/`, `kv/offsets.rs`, `kv/by_status.rs`, `kv/snapshots.rs`).
//! 3. `WalStore::write` appends the whole batch as one checksummed record to
//!    the current log segment and puts it in the in-memory overlay
//!    (`store/wal/mod.rs`, `segment.rs`, `overlay.rs`).
//! 4. `WalStore::sync` is one `fdatasync` of the segment. Only then does the
//!    writer publish the new durable offset and answer every caller.
//! 5. Later, on the checkpoint thread: the overlay's layer is frozen and
//!    compacted (`kv/compaction.rs` bundles each saga's runs), written to sled
//!    in key order with the log's batch marker last, sled is made durable
//!    (`store/sled.rs`), and the segments it covers are deleted
//!    (`store/wal/checkpoint.rs`). The next segment is zero-filled ahead of
//!    need (`spare.rs`); both threads run at a lower priority (`priority.rs`).
//!
//! ## The read path
//!
//! Reads (`read_saga`, `list`, `read_after`, …) skip the writer: `KvJournal`
//! reads keys from its store directly. `WalStore` answers from the overlay's
//! active layer, then its frozen one, then sled, merging range reads key by
//! key (`store/wal/overlay.rs`). Every value's version and checksum are checked
//! as it is decoded (`kv/codec/record.rs`); step snapshots come from a cache
//! (`kv/snapshots.rs`).
//!
//! ## The read-only open (`sagad journal check`, `sagad export`)
//!
//! An open for writing changes the directory: it locks and writes `LOCK`,
//! replays the log into sled, starts a fresh segment and deletes the old
//! ones, cuts a torn tail off. [`SledJournal::open_read_only`] changes no byte
//! of it, and reads what that open would:
//!
//! 1. `DATA_DIR/LOCK` is opened read-only and locked shared: refused while a
//!    server holds it exclusively, and no server can start until the log has
//!    been read (`store/sled.rs`, `SledStore::read_lock`).
//! 2. sled's files are copied to a temporary directory and sled is opened
//!    there: sled 0.34 locks and writes whatever it opens (`SledStore::open_copy`).
//! 3. The log is scanned and verified in place, and the batches the copy
//!    lacks are laid over it in an overlay, in memory; a torn tail is
//!    reported, not cut (`store/wal/read_only.rs`).
//! 4. `KvJournal` runs over that as over any store; the writes an open may
//!    make (the upgrade of an older journal's indexes) stay in memory.
//!
//! ## When sled's files are damaged (`sagad journal salvage`)
//!
//! After a clean stop the log holds nothing sled lacks: sled's files are the
//! only copy. sled 0.34 meets a flipped byte with `Read corrupted data at
//! file offset None` (or a panic), and its recovery zeroes the rest of the
//! segment before refusing it. So:
//!
//! 1. Before sled opens, `store/sled/damage.rs` reads what sled's recovery
//!    reads, as sled writes it; damage sled would refuse is refused first,
//!    named ([`StoreError::Damaged`]: file, byte, whether the log can rebuild
//!    the store), and nothing is written. Every call into sled is guarded
//!    against its panics.
//! 2. A copy (`SledStore::open_copy`, for the offline tools) steps around the
//!    damage so sled opens it; `store/salvage.rs` reads every key it still
//!    serves, past what it does not; `store/wal/salvage.rs` lays the log's
//!    batches over them.
//! 3. `kv/salvage/` keeps each saga whose history reads whole, with its
//!    offsets, rebuilds every index from the events, and names the rest;
//!    `salvage.rs` writes that as a new data directory and checks it.
//!
//! ## Why two logs
//!
//! sled keeps a log of its own, and still a write-ahead log sits in front of
//! it, because sled 0.34 (the last release; its 1.0 is a rewrite):
//! - recovers silently to its last good prefix when a file is truncated or a
//!   byte flipped, so acknowledged sagas could vanish without a word; the
//!   log checksums every record, names the file and byte of any damage, and
//!   tells a torn tail (a crash mid-write) from damage;
//! - ends `flush()` in `sync_file_range`, which does not reach through a disk's
//!   write cache (sled#1452), and never syncs its blob files: `SledStore`
//!   syncs them itself, which costs several syncs, so it happens at
//!   checkpoints, not per batch;
//! - copies a node on every insert: applying each batch to sled on the
//!   writer's path cost more than the log itself, while a checkpoint applies
//!   seconds of batches at once, each key once.
//!
//! So the log is the source of truth, sled a durable-at-checkpoints copy that
//! serves reads, and an open replays into sled whatever it lacks.
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
//!   may still become durable by a later sync; its offsets are never given to
//!   another event (PostgreSQL hands a rolled-back batch's offsets out again:
//!   no event of it can ever appear).
//!
//! Every implementation runs the suite in `conformance.rs` (the PostgreSQL
//! journal against a throwaway server, `postgres/throwaway.rs`); every store
//! under `KvJournal` runs the one in `store/conformance.rs`.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use tokio::sync::{mpsc, watch};

use crate::saga::{Event, Offset, Participant, SagaId, SagaStatus, Timestamp};

#[cfg(test)]
pub mod conformance;
pub mod history;
pub mod kv;
pub mod memory;
pub mod postgres;
pub mod relay;
mod request;
pub mod salvage;
pub mod sled;
pub mod store;

pub use kv::{KvJournal, check};
pub use memory::MemoryJournal;
pub use postgres::{PgError, PgJournal, PgSnapshot};
pub use relay::Relay;
pub use salvage::Salvage;
pub use sled::{ReadOnlyJournal, SledJournal};
pub use store::{StoreError, StoreUpkeep};

/// Most write requests one flush takes; more wait for the next batch.
pub const JOURNAL_BATCH_MAX: usize = 1024;
/// Write requests that can queue for the writer before appenders wait.
pub const JOURNAL_QUEUE_CAPACITY: usize = 4096;
/// How often a journal whose writes fail tries the disk again.
pub const JOURNAL_PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

/// What can go wrong with the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The store cannot be opened (another process owns the directory, the
    /// directory is unusable), or what an open adds to it cannot be written.
    #[error(transparent)]
    Open(StoreError),
    /// A read from the store failed; nothing was asked to change.
    #[error("journal read failed: {0}")]
    Read(#[source] StoreError),
    /// A batch's write or sync failed: what it wrote may still become durable
    /// by a later sync that works.
    #[error("journal write failed: {0}")]
    Write(#[source] Arc<StoreError>),
    /// Refused before anything was written: an earlier write failed and no
    /// sync has worked since.
    #[error(
        "the journal refuses writes after an earlier failure ({0}); it takes them again by itself once the disk works"
    )]
    Failed(#[source] Arc<StoreError>),
    /// A record of the saga schema is damaged.
    #[error("journal record {key} is damaged: {why}")]
    Corrupt { key: String, why: String },
    #[error("idempotency key '{key}' already belongs to saga {existing}")]
    IdempotencyConflict { key: String, existing: SagaId },
    /// The store's last work at close failed (the log's last checkpoint):
    /// nothing acknowledged is lost, the next open replays the log.
    #[error(
        "closing the journal failed ({0}); nothing acknowledged is lost: the next start replays the log"
    )]
    Close(#[source] Arc<StoreError>),
    /// The PostgreSQL journal failed: [`PgError`] says how, and
    /// `crate::error` what that means for a caller.
    #[error(transparent)]
    Postgres(#[from] PgError),
    /// The writer thread could not be started.
    #[error("cannot start the journal writer: {0}")]
    Start(#[source] std::io::Error),
    #[error("the journal is closed")]
    Closed,
    /// A read or a write of the history tier failed (`history/`).
    #[error(transparent)]
    History(#[from] history::HistoryError),
}

/// A store error met on the way: one that says the store cannot be opened is
/// an open failure, any other one a failed read (writes go through the
/// writer, which says [`JournalError::Write`] itself).
impl From<StoreError> for JournalError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Locked { .. } | StoreError::Open { .. } => JournalError::Open(e),
            e => JournalError::Read(e),
        }
    }
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
    /// The embedded journal's history tier and store, `None` for a journal
    /// without them (PostgreSQL).
    pub local: Option<LocalStats>,
}

/// What the sled journal's history tier holds and its store's upkeep did
/// ([`JournalStats::local`]): whether the mover keeps up, and what the next
/// start will replay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalStats {
    /// Sagas in the history tier's segments (one moved twice by a crash
    /// between its segment and its removal counts twice until retired).
    pub history_sagas: u64,
    /// Segment files in the history tier.
    pub history_segments: u64,
    /// The store's own upkeep.
    pub store: StoreUpkeep,
}

/// What a node of a journal several coordinators share knows of its own
/// place among them ([`Journal::cluster`]): read by the metrics at each
/// scrape and by health at each recheck, so it is a copy of what the
/// journal keeps in memory, never a read of the database.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClusterStatus {
    /// Whether this node holds its lease now, as far as it knows: not
    /// fenced, the database did not say it ran out, and its last renewal
    /// that worked was sent less than a lease ago (by this node's monotonic
    /// clock, so it turns false no later than the database's judgement,
    /// even when nothing is written and the database does not answer).
    pub lease_held: bool,
    /// The epoch this node writes under now ([`Journal::epoch`]).
    pub epoch: u64,
    /// This node's open sagas (running, compensating, failed) as last
    /// counted: at the join, then after each lease renewal that worked.
    pub owned_open: u64,
    /// Times this node learnt it was fenced (once per fence: a re-join
    /// ends it, and the next fence counts again).
    pub fenced: u64,
    /// Times this node joined again after a fence.
    pub rejoins: u64,
    /// Nodes whose lease ran out that this node deposed (gave a new epoch)
    /// before taking their sagas over.
    pub deposed: u64,
}

/// Told about every durable flush. Called on the journal's writer thread, once
/// per flush (not per event): it **must** be cheap and never block.
pub trait FlushObserver: Send + Sync + 'static {
    /// A flush made `events` events durable (0 for participant-only writes), and
    /// writing plus syncing it took `took` (with PostgreSQL: one batch
    /// transaction, from its BEGIN to its COMMIT's answer).
    fn flushed(&self, events: u64, took: Duration);
}

/// A change of which sagas this coordinator owns, in a journal several share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnershipChange {
    /// These sagas were `from`'s, a node whose lease ran out, and are this
    /// node's now: resume them, as a restart resumes its own.
    Adopted { from: String, sagas: Vec<SagaId> },
    /// This node was fenced and joined again with a new epoch: sagas it
    /// holds in memory may be another node's now.
    Rejoined,
}

/// A cluster-wide duty: work that, of all the coordinators sharing a journal,
/// one does at a time ([`Journal::hold_duty`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Duty(&'static str);

impl Duty {
    /// Retention's archiver (`crate::archive`): two nodes archiving at once
    /// would only write every saga twice, into two data directories.
    pub const ARCHIVER: Duty = Duty("archiver");

    /// The name the journal keeps the duty under.
    pub fn name(self) -> &'static str {
        self.0
    }
}

impl std::fmt::Display for Duty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// The on-failed webhook's notices, kept by a journal several coordinators
/// share ([`Journal::notices`]), so that which notices were acknowledged,
/// and which node must post the others, is one truth for all of them
/// (`crate::webhook`).
///
/// A notice is about one failure: a FAILED saga and the `seq` of its
/// `SagaFailed`. It is *pending* while the saga is FAILED at that seq and no
/// acknowledgement of it is recorded; the saga's owner posts it.
#[async_trait]
pub trait Notices: Send + Sync + 'static {
    /// This node's pending notices, `(saga, seq)`, in saga id order: the
    /// FAILED sagas it owns whose failure has no acknowledgement.
    async fn pending(&self) -> Result<Vec<(SagaId, u64)>, JournalError>;

    /// Whether this node must post the notice of saga `id`'s failure `seq`
    /// now: it owns the saga, under its current epoch and a running lease;
    /// the saga is FAILED at `seq`; no acknowledgement of it is recorded.
    /// `false` is for good (another node's saga now, already acknowledged,
    /// retried since, or this node fenced); an error (a lapsed lease, an
    /// unreachable database) means: ask again later, post nothing meanwhile.
    async fn due(&self, id: SagaId, seq: u64) -> Result<bool, JournalError>;

    /// Records, durably, that the webhook acknowledged the notice of saga
    /// `id`'s failure `seq`: no node posts it again.
    async fn acknowledged(&self, id: SagaId, seq: u64) -> Result<(), JournalError>;
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
    async fn read_after(&self, after: Offset, limit: usize) -> Result<Vec<Event>, JournalError>;

    /// The archive horizon: the highest offset of any event removed by
    /// [`Journal::remove_sagas`], 0 when none was. It only grows.
    async fn archived_through(&self) -> Result<Offset, JournalError>;

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

    /// Moves final sagas whose terminal event is older than `cutoff`
    /// (oldest first, at most `at_most`) out of the journal's store into one
    /// new segment of its history tier (`history/`), durably: every read
    /// finds them there as before (offsets, idempotency keys and listing
    /// included), and the store no longer holds them. Fewer than `at_least`
    /// due move nothing (a segment is worth its file). A journal without a
    /// tier moves nothing.
    async fn move_to_history(
        &self,
        _cutoff: Timestamp,
        _at_least: usize,
        _at_most: usize,
    ) -> Result<history::Moved, JournalError> {
        Ok(history::Moved::default())
    }

    /// The segments of the history tier whose every saga ended before
    /// `cutoff`, oldest first: retention archives them whole. None without
    /// a tier.
    fn history_ended_before(&self, _cutoff: Timestamp) -> Vec<u64> {
        Vec::new()
    }

    /// The ids of the sagas in history segment `number`, in id order (none
    /// if it is gone).
    async fn history_sagas(&self, _number: u64) -> Result<Vec<SagaId>, JournalError> {
        Ok(Vec::new())
    }

    /// Retires history segment `number`, whose sagas the caller archived:
    /// the archive horizon rises to its highest offset, a copy of its sagas
    /// the store still holds is removed, and then its file, durably; its
    /// sagas are gone from every read. Returns how many sagas it held.
    async fn retire_history(&self, _number: u64) -> Result<usize, JournalError> {
        Ok(0)
    }

    /// Removes the final sagas among `ids` entirely (events, offsets, listing,
    /// idempotency key), durably, in one batch; returns the ids removed. A saga
    /// that is unknown or not final is left untouched and not returned.
    async fn remove_sagas(&self, ids: Vec<SagaId>) -> Result<Vec<SagaId>, JournalError>;

    /// The last durable offset (0 when the journal is empty); it changes each time
    /// more events become durable, and the receiver sees the change.
    fn durable_offset(&self) -> watch::Receiver<Offset>;

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
    /// journal has made everything written so far durable again and can take
    /// the write that failed, and while its store fails every operation
    /// (sled after a full disk, until it is opened again), which a write
    /// would meet.
    fn write_failure(&self) -> Option<String>;

    /// Failed writes as they come and go (a failing store is seen only by
    /// asking [`Journal::write_failure`]): health checks follow both.
    fn write_failures(&self) -> watch::Receiver<Option<String>>;

    /// Waits for queued writes, flushes, and stops the writer. Later writes fail
    /// with [`JournalError::Closed`].
    async fn close(&self) -> Result<(), JournalError>;

    /// In a journal shared by several coordinators: the changes of which
    /// sagas this one owns (takeovers, re-joins), for the engine to act on.
    /// Given to the first caller only; `None` after that, and always for a
    /// journal only this process writes.
    fn ownership_changes(&self) -> Option<mpsc::UnboundedReceiver<OwnershipChange>> {
        None
    }

    /// In a journal shared by several coordinators: the epoch this node writes
    /// under now (its fencing token, sent to participants with every call);
    /// `None` for a journal only this process writes.
    fn epoch(&self) -> Option<u64> {
        None
    }

    /// In a journal shared by several coordinators: records where this node
    /// serves (its bound gRPC address, which other nodes and operators are
    /// shown); nothing for a journal only this process writes.
    async fn advertise(&self, _addr: &str) -> Result<(), JournalError> {
        Ok(())
    }

    // What a journal shared by several nodes knows of them. A journal with
    // no nodes (sled, memory) keeps the defaults: no owner, no roster.

    /// The node that owns saga `id` (writes its events); `None` for an
    /// unknown saga, and always for a journal without nodes.
    async fn owner(&self, _id: SagaId) -> Result<Option<postgres::NodeId>, JournalError> {
        Ok(None)
    }

    /// Every node sharing the journal, its lease judged by the database's
    /// clock; `None` for a journal without nodes.
    async fn nodes(&self) -> Result<Option<Vec<postgres::NodeInfo>>, JournalError> {
        Ok(None)
    }

    /// In a journal shared by several coordinators: this node's lease,
    /// epoch, owned sagas and what it saw happen ([`ClusterStatus`]), for
    /// metrics and health. It **must** be cheap and do no I/O: it is read at
    /// every scrape and every health recheck. `None` for a journal without
    /// nodes.
    fn cluster(&self) -> Option<ClusterStatus> {
        None
    }

    // Work that, of all the nodes sharing a journal, one does at a time. A
    // journal only this process writes keeps the defaults: every duty is
    // this process's, and the webhook keeps its own ledger.

    /// Takes or renews `duty` for this node, and says whether it holds it
    /// now. At most one node holds a duty at a time, judged by one clock
    /// (the journal's, never a node's). The holder keeps it while it asks
    /// again within `within` of its last ask (and its node's lease runs);
    /// once it stops asking, dies, is fenced or closes, another node may take
    /// it. The holder **must** ask before each piece of the duty's work, and
    /// do none of it on `false` or an error. Always `true` for a journal only
    /// this process writes.
    async fn hold_duty(&self, _duty: Duty, _within: Duration) -> Result<bool, JournalError> {
        Ok(true)
    }

    /// The on-failed webhook's notices, when this journal keeps them for
    /// every node sharing it; `None` (the default) when the webhook keeps its
    /// own ledger beside the journal, as it does with sled.
    fn notices(&self) -> Option<Arc<dyn Notices>> {
        None
    }

    /// Calls for a saga's owner, carried through this journal to whichever
    /// node owns the saga ([`Relay`]); `None` (the default) for a journal
    /// only this process writes, where every saga is this process's.
    fn relay(&self) -> Option<Arc<dyn Relay>> {
        None
    }

    /// Which node this process writes as; `None` for a journal without nodes.
    fn node(&self) -> Option<postgres::NodeId> {
        None
    }
}
