//! The journal's writer thread: group commit, batching, failure probing, and
//! the index writes that go with every append.
//!
//! One thread owns every write. It takes the first queued request, drains
//! whatever else is queued (up to [`JOURNAL_BATCH_MAX`]), turns them into one
//! atomic batch of key writes, makes that batch durable with one `sync`, and
//! only then answers every caller. Under load many appends share one flush;
//! alone, an append waits for nothing but its own flush.
//!
//! ```text
//!  append ─┐                     ┌─ ack
//!  append ─┼─▶ queue ─▶ writer ──┼─ ack     one write + one sync per batch
//!  remove ─┘   (bounded)  thread └─ ack
//! ```
//!
//! The writer also keeps the indexes the reads need (unfinished sagas, the
//! failed index, listing summaries, idempotency keys, the offset index) in the
//! same batch as the events they derive from, so an index is never ahead of or
//! behind its events after a crash. Retention's removals (`retention.rs`) go
//! through the same queue, so a removal and an append are never interleaved
//! within a batch's writes.
//!
//! Invariants:
//! - **Nothing is acknowledged before its sync returned.** A caller's reply is
//!   sent only after the batch that holds its writes is durable.
//! - **Offsets are spent, never reused.** Once a batch is in the store its
//!   offsets are handed out whether or not its sync works (a later sync may
//!   make it durable), so no offset is given to two events.
//! - **A failure stops writes.** After a failed write or sync every request is
//!   refused until a probe works again ([`JOURNAL_PROBE_INTERVAL`]): the store
//!   can take the write that failed, and a sync makes everything written so
//!   far durable, spent offsets included.

use std::{
    collections::HashMap,
    sync::{
        Arc, OnceLock, RwLockReadGuard,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::Instant,
};

use tokio::sync::{mpsc, oneshot, watch};

use super::{
    by_status,
    codec::{
        self, ARCHIVED_THROUGH_KEY, IDEMPOTENCY, MOVED_THROUGH_KEY, NEXT_OFFSET_KEY, PARTICIPANT,
        SUMMARY, UNFINISHED,
    },
    offsets, retention,
    snapshots::SnapshotWriter,
};
use crate::{
    journal::{
        FlushObserver, JOURNAL_BATCH_MAX, JOURNAL_PROBE_INTERVAL, JournalError, SagaSummary,
        history::SharedTier,
        request::RemovedTo,
        store::{KeyWrite, KvStore, StoreError},
    },
    saga::{Event, EventKind, Offset, SagaId, SagaStatus},
};

pub(super) use crate::journal::request::WriteRequest;

/// Counters the writer keeps and the journal handle reads.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) flushes: AtomicU64,
    pub(super) requests: AtomicU64,
    pub(super) events: AtomicU64,
    /// Told about each flush; read with one atomic load per flush.
    pub(super) observer: OnceLock<Arc<dyn FlushObserver>>,
}

/// The writer thread's state.
pub(super) struct Writer<S: KvStore> {
    pub(super) store: Arc<S>,
    pub(super) counters: Arc<Counters>,
    /// Why writes fail, while they do: read by the journal's `write_failures`.
    pub(super) failure: watch::Sender<Option<String>>,
    /// The offset the next event gets; advanced only once a batch is durable.
    pub(super) next_offset: u64,
    /// The archive horizon: the highest offset removed by retention so far.
    pub(super) archived_through: u64,
    /// The history horizon: the highest offset moved to the history tier.
    pub(super) moved_through: u64,
    /// The history tier, when the journal has one: an idempotency key its
    /// sagas hold is taken.
    pub(super) history: Option<Arc<SharedTier>>,
    /// Which step snapshots the store holds, so runs can refer to them.
    pub(super) snapshots: SnapshotWriter,
    /// Set by the first failed write or sync; every later write is refused.
    pub(super) failed: Option<Arc<StoreError>>,
    /// Where the last durable offset is published (read by `read_after` and feeds).
    pub(super) durable: Arc<watch::Sender<Offset>>,
}

/// A request accepted into the current batch, waiting for the flush.
enum Pending {
    Append(
        oneshot::Sender<Result<Vec<Event>, JournalError>>,
        Vec<Event>,
    ),
    /// A participant's write, or the archive horizon's: answered with `()`.
    Written(oneshot::Sender<Result<(), JournalError>>),
    Remove(
        oneshot::Sender<Result<Vec<SagaId>, JournalError>>,
        Vec<SagaId>,
    ),
}

impl Pending {
    /// The batch is durable: tells the caller what it got.
    fn succeed(self) {
        match self {
            Pending::Append(reply, events) => drop(reply.send(Ok(events))),
            Pending::Written(reply) => drop(reply.send(Ok(()))),
            Pending::Remove(reply, removed) => drop(reply.send(Ok(removed))),
        }
    }

    /// The batch's write or sync failed.
    fn fail(self, error: JournalError) {
        match self {
            Pending::Append(reply, _) => drop(reply.send(Err(error))),
            Pending::Written(reply) => drop(reply.send(Err(error))),
            Pending::Remove(reply, _) => drop(reply.send(Err(error))),
        }
    }
}

/// One batch being gathered: its key writes, who waits for them, and the
/// index state that requests earlier in the same batch changed ahead of the
/// store.
struct Batch {
    writes: Vec<KeyWrite>,
    pending: Vec<Pending>,
    /// The offset the batch's next event gets.
    offset: u64,
    /// Idempotency keys claimed in this batch.
    keys: HashMap<String, SagaId>,
    /// Listing summaries changed in this batch.
    summaries: HashMap<SagaId, SagaSummary>,
    /// Offset index entries retention edited in this batch.
    index_entries: offsets::EditedEntries,
}

impl Batch {
    fn new(offset: u64, requests: usize) -> Self {
        Self {
            // An append writes 2 to 4 keys (its run, its index entry, and the
            // saga's summary and unfinished mark when its status changes); the
            // batch adds the offset counter, and the log its batch marker.
            // Sized ahead: growing it copied every key write several times per
            // batch.
            writes: Vec::with_capacity(requests * 4 + 2),
            pending: Vec::with_capacity(requests),
            offset,
            keys: HashMap::new(),
            summaries: HashMap::new(),
            index_entries: offsets::EditedEntries::new(),
        }
    }
}

impl<S: KvStore> Writer<S> {
    /// Starts the writer thread; requests go to the returned sender.
    pub(super) fn spawn(
        self,
    ) -> Result<(mpsc::Sender<WriteRequest>, thread::JoinHandle<()>), JournalError> {
        let (request_tx, request_rx) = mpsc::channel(crate::journal::JOURNAL_QUEUE_CAPACITY);
        let handle = thread::Builder::new()
            .name("sagad-journal".into())
            .spawn(move || self.run(request_rx))
            .map_err(JournalError::Start)?;
        Ok((request_tx, handle))
    }

    fn run(mut self, mut request_rx: mpsc::Receiver<WriteRequest>) {
        let mut requests = Vec::with_capacity(JOURNAL_BATCH_MAX);
        loop {
            let first = if self.failed.is_some() {
                // While writes fail, refuse requests at once and probe the disk:
                // one successful sync makes everything written so far durable.
                match request_rx.try_recv() {
                    Ok(request) => request,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        thread::sleep(JOURNAL_PROBE_INTERVAL);
                        self.probe();
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                }
            } else {
                match request_rx.blocking_recv() {
                    Some(request) => request,
                    None => return,
                }
            };
            requests.push(first);
            while requests.len() < JOURNAL_BATCH_MAX {
                match request_rx.try_recv() {
                    Ok(request) => requests.push(request),
                    Err(_) => break,
                }
            }
            if self.write_batch(&mut requests) {
                return;
            }
        }
    }

    /// Writes one batch and answers its callers; true when asked to close.
    fn write_batch(&mut self, requests: &mut Vec<WriteRequest>) -> bool {
        let store = self.store.clone();
        // Removals edit index entries they read (`wal/overlay.rs`): no
        // checkpoint may bundle those until the batch is written.
        let removes = requests
            .iter()
            .any(|r| matches!(r, WriteRequest::Remove { .. }));
        let rewrites_held = removes.then(|| store.hold_rewrites());
        let mut batch = Batch::new(self.next_offset, requests.len());
        let mut close = None;
        for request in requests.drain(..) {
            match request {
                WriteRequest::Close { reply } => close = Some(reply),
                request if self.failed.is_some() => request.refuse(self.refusal()),
                WriteRequest::Remove { ids, to, reply } => {
                    self.gather_removal(&mut batch, ids, to, reply)
                }
                WriteRequest::Append { events, reply } => {
                    self.gather_append(&mut batch, events, reply)
                }
                WriteRequest::ArchiveThrough { offset, reply } => {
                    // Spent like offsets: never lowered, even if the sync fails.
                    self.archived_through = self.archived_through.max(offset);
                    batch.writes.push((
                        ARCHIVED_THROUGH_KEY.to_vec(),
                        Some(self.archived_through.to_be_bytes().to_vec()),
                    ));
                    batch.pending.push(Pending::Written(reply));
                }
                WriteRequest::PutParticipant { participant, reply } => {
                    batch.writes.push((
                        codec::name_key(PARTICIPANT, &participant.name),
                        Some(codec::encode(&*participant)),
                    ));
                    batch.pending.push(Pending::Written(reply));
                }
            }
        }
        if !batch.pending.is_empty() {
            let started = Instant::now();
            let result = self.commit(&mut batch, rewrites_held);
            self.finish(batch.pending, batch.offset, result, started);
        }
        match close {
            Some(reply) => {
                // A last try: what was written since the failure may still
                // become durable. If not, the stop says so (not that the
                // journal refuses writes, which is advice for a running one).
                if self.failed.is_some() {
                    self.probe();
                }
                let result = match &self.failed {
                    Some(e) => Err(JournalError::Close(e.clone())),
                    // Not a read: a last sync that fails is a close that did.
                    None => self
                        .store
                        .sync()
                        .map_err(|e| JournalError::Close(Arc::new(e))),
                };
                let _ = reply.send(result);
                true
            }
            None => false,
        }
    }

    /// Adds a removal's writes to the batch (or answers it at once, when it
    /// removes nothing or fails).
    fn gather_removal(
        &mut self,
        batch: &mut Batch,
        ids: Vec<SagaId>,
        to: RemovedTo,
        reply: oneshot::Sender<Result<Vec<SagaId>, JournalError>>,
    ) {
        let (key, held) = match to {
            RemovedTo::Archive => (ARCHIVED_THROUGH_KEY, &mut self.archived_through),
            RemovedTo::History => (MOVED_THROUGH_KEY, &mut self.moved_through),
        };
        let mut horizon = *held;
        match retention::removal_writes(
            &*self.store,
            &ids,
            &batch.summaries,
            &mut batch.index_entries,
            (key, &mut horizon),
        ) {
            Ok((_, removed)) if removed.is_empty() => {
                let _ = reply.send(Ok(removed));
            }
            Ok((writes, removed)) => {
                // Spent like offsets: never lowered, even if the sync fails.
                *held = horizon;
                batch.writes.extend(writes);
                batch.pending.push(Pending::Remove(reply, removed));
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Adds an append's events, with their offsets, and the index writes they
    /// cause to the batch (or refuses it, writing nothing of it).
    fn gather_append(
        &mut self,
        batch: &mut Batch,
        mut events: Vec<Event>,
        reply: oneshot::Sender<Result<Vec<Event>, JournalError>>,
    ) {
        match self.idempotency_conflict(&events, &batch.keys) {
            Ok(None) => {}
            Ok(Some(conflict)) | Err(conflict) => {
                let _ = reply.send(Err(conflict));
                return;
            }
        }
        let first_offset = batch.offset;
        match index_writes(
            &*self.store,
            &mut self.snapshots,
            &mut events,
            &mut batch.offset,
            &mut batch.keys,
            &mut batch.summaries,
        ) {
            Ok(writes) => {
                batch.writes.extend(writes);
                batch.pending.push(Pending::Append(reply, events));
            }
            Err(e) => {
                batch.offset = first_offset;
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Writes the batch (with the offset counter) and syncs it.
    fn commit(
        &mut self,
        batch: &mut Batch,
        rewrites_held: Option<Option<RwLockReadGuard<'_, ()>>>,
    ) -> Result<(), StoreError> {
        let mut writes = std::mem::take(&mut batch.writes);
        writes.push((
            NEXT_OFFSET_KEY.to_vec(),
            Some(batch.offset.to_be_bytes().to_vec()),
        ));
        let written = self.store.write(writes);
        // The edits are in (or failed): a checkpoint may bundle them now.
        drop(rewrites_held);
        match written {
            Ok(()) => {
                self.snapshots.written();
                // The batch is in the store: its offsets are spent whether or
                // not this sync succeeds (a later sync may make it durable),
                // so they are never handed out twice.
                crate::crash_point!("journal::before_sync");
                let synced = self.store.sync();
                if synced.is_err() {
                    self.next_offset = batch.offset;
                }
                synced
            }
            Err(e) => {
                self.snapshots.abandoned();
                Err(e)
            }
        }
    }

    /// While failed, asks the store to make itself able to take the write
    /// that failed (`KvStore::recover`), then tries a sync; when both work the
    /// journal takes writes again. A sync alone is not enough: with the disk
    /// full, the failed rollover to the next log segment would fail again at
    /// the next write, and the journal would flap between failed and working.
    fn probe(&mut self) {
        if self
            .store
            .recover()
            .and_then(|()| self.store.sync())
            .is_ok()
        {
            tracing::warn!(
                after = %self.failed.as_deref().map(ToString::to_string).unwrap_or_default(),
                "journal writes work again"
            );
            self.failed = None;
            self.failure.send_replace(None);
            // Everything written so far, spent offsets included, is durable now.
            self.durable.send_replace(Offset(self.next_offset - 1));
        }
    }

    /// Answers the batch's callers: every one of them, after the sync.
    fn finish(
        &mut self,
        pending: Vec<Pending>,
        offset: u64,
        result: Result<(), StoreError>,
        started: Instant,
    ) {
        match result {
            Ok(()) => {
                // Before the acks, like the counters: whoever saw an ack sees it counted.
                if let Some(observer) = self.counters.observer.get() {
                    observer.flushed(offset - self.next_offset, started.elapsed());
                }
                self.counters.flushes.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .requests
                    .fetch_add(pending.len() as u64, Ordering::Relaxed);
                self.counters
                    .events
                    .fetch_add(offset - self.next_offset, Ordering::Relaxed);
                self.next_offset = offset;
                // Before the acks: an acknowledged event is readable by offset.
                self.durable.send_replace(Offset(offset - 1));
                pending.into_iter().for_each(Pending::succeed);
            }
            Err(e) => {
                tracing::error!(error = %e, "journal write failed; refusing writes until the disk works again");
                let e = Arc::new(e);
                self.failure.send_replace(Some(e.to_string()));
                self.failed = Some(e.clone());
                for p in pending {
                    p.fail(JournalError::Write(e.clone()));
                }
            }
        }
    }

    fn refusal(&self) -> JournalError {
        match &self.failed {
            Some(e) => JournalError::Failed(e.clone()),
            None => JournalError::Closed,
        }
    }

    /// The conflict, if `events` start a saga under a key another saga holds.
    fn idempotency_conflict(
        &self,
        events: &[Event],
        batch_keys: &HashMap<String, SagaId>,
    ) -> Result<Option<JournalError>, JournalError> {
        for event in events {
            if let EventKind::SagaStarted {
                idempotency_key: Some(key),
                ..
            } = &event.kind
            {
                let existing = match batch_keys.get(key) {
                    Some(id) => Some(*id),
                    None => {
                        let k = codec::name_key(IDEMPOTENCY, key);
                        let stored = self
                            .store
                            .get(&k)?
                            .map(|v| codec::decode::<SagaId>(&k, &v))
                            .transpose()?;
                        // A moved saga left the store only after the tier
                        // had it, and moves are written by this thread:
                        // the store or the tier holds every taken key.
                        match (stored, &self.history) {
                            (None, Some(history)) => history.saga_for_key(key)?,
                            (stored, _) => stored,
                        }
                    }
                };
                if let Some(existing) = existing.filter(|id| *id != event.saga) {
                    return Ok(Some(JournalError::IdempotencyConflict {
                        key: key.clone(),
                        existing,
                    }));
                }
            }
        }
        Ok(None)
    }
}

/// The key writes for `events`: the events themselves, with offsets assigned from
/// `offset`, and the index entries they change.
fn index_writes<S: KvStore>(
    store: &S,
    snapshots: &mut SnapshotWriter,
    events: &mut [Event],
    offset: &mut u64,
    batch_keys: &mut HashMap<String, SagaId>,
    batch_summaries: &mut HashMap<SagaId, SagaSummary>,
) -> Result<Vec<KeyWrite>, JournalError> {
    let mut writes = Vec::with_capacity(4);
    for event in events.iter_mut() {
        event.offset = Offset(*offset);
        *offset += 1;
    }
    // One record and one index entry per saga's consecutive events (an append
    // normally holds one saga's).
    let mut new_snapshots = Vec::new();
    for run in events.chunk_by(|a, b| a.saga == b.saga && b.seq == a.seq + 1) {
        let snapshot = snapshots.intern(store, run, &mut writes, &mut new_snapshots)?;
        writes.push((
            codec::event_key(run[0].saga, run[0].seq),
            Some(codec::encode_run(run, snapshot)),
        ));
        writes.push(offsets::index_entry(run));
    }
    for event in events.iter() {
        let Some(status) = SagaStatus::after(&event.kind) else {
            continue;
        };
        // Whether the saga was out of the unfinished index before this event.
        let mut was_out = true;
        let mut previous = None;
        let summary = match &event.kind {
            EventKind::SagaStarted {
                definition,
                idempotency_key,
                ..
            } => {
                if let Some(key) = idempotency_key {
                    batch_keys.insert(key.clone(), event.saga);
                    writes.push((
                        codec::name_key(IDEMPOTENCY, key),
                        Some(codec::encode(&event.saga)),
                    ));
                }
                SagaSummary {
                    id: event.saga,
                    status,
                    definition: definition.clone(),
                    created_at: event.at,
                }
            }
            _ => {
                let mut summary = match batch_summaries.remove(&event.saga) {
                    Some(s) => s,
                    None => {
                        let key = codec::saga_key(SUMMARY, event.saga);
                        match store.get(&key)? {
                            Some(v) => codec::decode(&key, &v)?,
                            None => {
                                return Err(JournalError::Corrupt {
                                    key: codec::describe_key(&key),
                                    why: format!(
                                        "{} for a saga that never started",
                                        event.kind.name()
                                    ),
                                });
                            }
                        }
                    }
                };
                was_out = summary.status.is_terminal();
                previous = Some(summary.status);
                summary.status = status;
                summary
            }
        };
        // Only when a saga enters or leaves the index: a store write less for
        // every state change in between.
        if was_out != status.is_terminal() {
            let unfinished = codec::saga_key(UNFINISHED, event.saga);
            writes.push((unfinished, (!status.is_terminal()).then(Vec::new)));
        }
        writes.extend(by_status::failed_index_write(event.saga, previous, status));
        writes.push((
            codec::saga_key(SUMMARY, event.saga),
            Some(codec::encode(&summary)),
        ));
        batch_summaries.insert(event.saga, summary);
    }
    snapshots.add(new_snapshots);
    Ok(writes)
}

#[cfg(test)]
mod tests {
    use crate::journal::{
        Journal, JournalError, KvJournal,
        store::{DiskFault, FaultyStore, MemoryStore},
    };

    /// A close whose last sync fails says the close failed, whether or not
    /// a write failed before it (a failing store behind the log met only by
    /// that sync was reported as a failed read).
    #[tokio::test]
    async fn a_close_whose_last_sync_fails_says_so() {
        for wrote_first in [false, true] {
            let fault = DiskFault::new();
            let journal =
                KvJournal::new(FaultyStore::new(MemoryStore::default(), fault.clone())).unwrap();
            fault.fail();
            if wrote_first {
                let events = crate::testing::completing(None, 0);
                journal.append(events).await.expect_err("the disk fails");
            }
            let closed = journal.close().await.expect_err("the last sync fails");
            assert!(matches!(closed, JournalError::Close(_)), "{closed:?}");
            assert!(
                closed.to_string().starts_with("closing the journal failed"),
                "{closed}"
            );
        }
    }
}
