//! A [`Journal`] over any ordered key-value store, with group commit.
//!
//! One writer thread owns every write. It takes the first queued request, drains
//! whatever else is queued (up to [`JOURNAL_BATCH_MAX`]), turns them into one
//! atomic batch of key writes, makes that batch durable with one `sync`, and only
//! then answers every caller. Under load many appends share one flush; alone, an
//! append waits for nothing but its own flush.
//!
//! ```text
//!  append ─┐                     ┌─ ack
//!  append ─┼─▶ queue ─▶ writer ──┼─ ack     one write + one sync per batch
//!  append ─┘   (bounded)  thread └─ ack
//! ```
//!
//! The writer also keeps the indexes the reads need (unfinished sagas, listing
//! summaries, idempotency keys) in the same batch as the events they derive from,
//! so an index is never ahead of or behind its events after a crash. Retention's
//! removals (`retention.rs`) go through the same queue, so a removal and an
//! append are never interleaved within a batch's writes.
//!
//! Reads go to the store directly: the stores used here serve them from memory
//! or a page cache, and after an append is acknowledged its writes are visible.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::Instant,
};

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot, watch};

use super::{
    FlushObserver, JOURNAL_BATCH_MAX, JOURNAL_PROBE_INTERVAL, JOURNAL_QUEUE_CAPACITY, Journal,
    JournalError, JournalStats, ListQuery, SagaSummary, by_status,
    codec::{self, EVENT, IDEMPOTENCY, NEXT_OFFSET_KEY, PARTICIPANT, SUMMARY, UNFINISHED},
    offsets, retention,
    snapshots::{SnapshotCache, SnapshotWriter},
};
use crate::saga::{Event, EventKind, Participant, SagaId, SagaStatus, Timestamp};

/// One key write: `Some` puts the value, `None` removes the key.
pub type KeyWrite = (Vec<u8>, Option<Vec<u8>>);

/// A [`KeyWrite`] by reference.
pub type KeyWriteRef<'a> = (&'a [u8], Option<&'a [u8]>);

/// `writes` lent, as [`KvStore::write_ordered`] and compaction take them.
pub fn lend(writes: &[KeyWrite]) -> impl Iterator<Item = KeyWriteRef<'_>> {
    writes.iter().map(|(k, v)| (k.as_slice(), v.as_deref()))
}

/// A lent write copied into one of its own.
pub fn own((key, value): KeyWriteRef<'_>) -> KeyWrite {
    (key.to_vec(), value.map(<[u8]>::to_vec))
}

/// Writes what an open adds to a journal of an earlier version (an index built
/// from the records) before the writer starts, durably. The offset counter goes
/// with it, unchanged, so a store that requires every batch to carry something
/// the writer would also write stays consistent.
pub(super) fn write_at_open<S: KvStore + ?Sized>(
    store: &S,
    mut writes: Vec<KeyWrite>,
    next_offset: u64,
) -> Result<(), JournalError> {
    writes.push((
        NEXT_OFFSET_KEY.to_vec(),
        Some(next_offset.to_be_bytes().to_vec()),
    ));
    store.write(writes)?;
    store.sync()
}

/// A key/value entry read back.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Called with each entry of a reverse scan; answers whether to go on.
pub type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<bool, JournalError> + 'a;

/// An ordered key-value store a [`KvJournal`] can sit on.
///
/// Contract: `write` applies a batch atomically (all or nothing, also after a
/// crash) and makes it visible to reads; `sync` makes every write so far durable.
pub trait KvStore: Send + Sync + 'static {
    /// One key's value.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, JournalError>;
    /// Entries whose keys start with `prefix`, in ascending key order.
    fn scan(&self, prefix: &[u8]) -> Result<Vec<Entry>, JournalError>;
    /// Entries whose keys start with `prefix` and sort before `before` (if given),
    /// in descending key order, as long as `keep_going` says so.
    fn scan_rev(
        &self,
        prefix: &[u8],
        before: Option<&[u8]>,
        visit: &mut Visit<'_>,
    ) -> Result<(), JournalError>;
    /// Entries whose keys start with `prefix` and sort at or after `from`, in
    /// ascending key order, as long as `visit` says so. The default scans the
    /// whole prefix; stores override it with a range scan.
    fn scan_from(
        &self,
        prefix: &[u8],
        from: &[u8],
        visit: &mut Visit<'_>,
    ) -> Result<(), JournalError> {
        for (key, value) in self.scan(prefix)? {
            if key.as_slice() >= from && !visit(&key, &value)? {
                break;
            }
        }
        Ok(())
    }
    /// Applies a batch atomically; not yet durable.
    fn write(&self, batch: Vec<KeyWrite>) -> Result<(), JournalError>;
    /// Applies a batch's writes in order, not atomically: after a crash (before
    /// a `sync`) the store holds a prefix of all writes made. A write-ahead log
    /// that ends each batch with its own marker needs no more than this, and a
    /// store may do it much more cheaply than an atomic batch.
    /// The writes are lent, not given: a checkpoint writes from the layer
    /// readers still see, and the store copies what it keeps anyway.
    fn write_ordered(
        &self,
        batch: &mut dyn Iterator<Item = KeyWriteRef<'_>>,
    ) -> Result<(), JournalError> {
        self.write(batch.map(own).collect())
    }
    /// Makes every write so far durable.
    fn sync(&self) -> Result<(), JournalError>;
    /// Keeps the store from rewriting what was written before (a
    /// checkpoint's bundling, `overlay.rs`) until the guard drops. A writer
    /// that reads keys to work out edits of them holds it from its first read
    /// until its `write` returns. `None`: this store never rewrites.
    fn hold_rewrites(&self) -> Option<MutexGuard<'_, ()>> {
        None
    }
}

/// What the writer thread is asked to do.
enum WriteRequest {
    Append {
        events: Vec<Event>,
        reply: oneshot::Sender<Result<Vec<Event>, JournalError>>,
    },
    PutParticipant {
        participant: Box<Participant>,
        reply: oneshot::Sender<Result<(), JournalError>>,
    },
    /// Retention: remove these sagas, the final ones only (`retention.rs`).
    Remove {
        ids: Vec<SagaId>,
        reply: oneshot::Sender<Result<Vec<SagaId>, JournalError>>,
    },
    Close {
        reply: oneshot::Sender<Result<(), JournalError>>,
    },
}

#[derive(Default)]
struct Counters {
    flushes: AtomicU64,
    requests: AtomicU64,
    events: AtomicU64,
    /// Told about each flush; read with one atomic load per flush.
    observer: OnceLock<Arc<dyn FlushObserver>>,
}

/// A journal over a [`KvStore`]; see the module docs.
pub struct KvJournal<S: KvStore> {
    store: Arc<S>,
    request_tx: mpsc::Sender<WriteRequest>,
    counters: Arc<Counters>,
    /// Why writes fail, while they do (a std mutex: never held across an await).
    failure: Arc<Mutex<Option<String>>>,
    /// The writer thread, joined by `close` (a std mutex: never held across await).
    writer: Mutex<Option<thread::JoinHandle<()>>>,
    /// The last offset known durable, published by the writer after each sync.
    durable: Arc<watch::Sender<u64>>,
    /// Step snapshots read so far (they never change).
    snapshots: SnapshotCache,
}

impl<S: KvStore> KvJournal<S> {
    /// Starts the writer thread over `store`.
    pub fn new(store: S) -> Result<Self, JournalError> {
        let store = Arc::new(store);
        let next_offset = match store.get(NEXT_OFFSET_KEY)? {
            Some(bytes) => u64::from_be_bytes(bytes.as_slice().try_into().map_err(|_| {
                JournalError::Corrupt {
                    key: "next_offset".into(),
                    why: format!("{} bytes where 8 were expected", bytes.len()),
                }
            })?),
            None => 1,
        };
        offsets::ensure_index(&*store, next_offset)?;
        by_status::ensure_failed_index(&*store, next_offset)?;
        let archived_through = offsets::archived_through(&*store)?;
        let durable = Arc::new(watch::Sender::new(next_offset - 1));
        let (request_tx, request_rx) = mpsc::channel(JOURNAL_QUEUE_CAPACITY);
        let counters = Arc::new(Counters::default());
        let failure = Arc::new(Mutex::new(None));
        let writer = Writer {
            store: store.clone(),
            counters: counters.clone(),
            failure: failure.clone(),
            next_offset,
            archived_through,
            snapshots: SnapshotWriter::default(),
            failed: None,
            durable: durable.clone(),
        };
        let handle = thread::Builder::new()
            .name("sagad-journal".into())
            .spawn(move || writer.run(request_rx))
            .map_err(|e| JournalError::Io(format!("cannot start the journal writer: {e}")))?;
        Ok(Self {
            store,
            request_tx,
            counters,
            failure,
            writer: Mutex::new(Some(handle)),
            durable,
            snapshots: SnapshotCache::default(),
        })
    }

    /// The store under this journal.
    pub fn store(&self) -> &S {
        &self.store
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, JournalError>>) -> WriteRequest,
    ) -> Result<T, JournalError> {
        let (reply, result) = oneshot::channel();
        self.request_tx
            .send(make(reply))
            .await
            .map_err(|_| JournalError::Closed)?;
        result.await.map_err(|_| JournalError::Closed)?
    }
}

#[async_trait]
impl<S: KvStore> Journal for KvJournal<S> {
    async fn append(&self, events: Vec<Event>) -> Result<Vec<Event>, JournalError> {
        self.request(|reply| WriteRequest::Append { events, reply })
            .await
    }

    async fn read_saga(&self, id: SagaId) -> Result<Vec<Event>, JournalError> {
        let entries = self.store.scan(&codec::saga_key(EVENT, id))?;
        let mut events: Vec<Event> = Vec::with_capacity(entries.len() * 2);
        for (key, value) in entries {
            let run = codec::decode_run(&key, &value, &|id| self.snapshots.get(&*self.store, id))?;
            if run[0].seq != events.len() as u64 + 1 {
                return Err(JournalError::Corrupt {
                    key: codec::describe_key(&key),
                    why: format!("saga {id} has {} events before it", events.len()),
                });
            }
            events.extend(run);
        }
        // Retention deletes the listing entry, then the events in seq order, and
        // a scan is no snapshot: a history with a hole, whose listing entry is
        // gone, is one being removed right now.
        let holed = events
            .iter()
            .enumerate()
            .any(|(i, e)| e.seq != i as u64 + 1);
        if holed && self.store.get(&codec::saga_key(SUMMARY, id))?.is_none() {
            events.clear();
        }
        Ok(events)
    }

    async fn read_after(&self, after: u64, limit: usize) -> Result<Vec<Event>, JournalError> {
        let horizon = *self.durable.borrow();
        offsets::read_after(&*self.store, &self.snapshots, after, horizon, limit)
    }

    fn durable_offset(&self) -> watch::Receiver<u64> {
        self.durable.subscribe()
    }

    async fn unfinished(&self) -> Result<Vec<SagaId>, JournalError> {
        self.store
            .scan(&[UNFINISHED])?
            .iter()
            .map(|(key, _)| codec::saga_of_key(key))
            .collect()
    }

    async fn saga_for_key(&self, key: &str) -> Result<Option<SagaId>, JournalError> {
        let k = codec::name_key(IDEMPOTENCY, key);
        self.store
            .get(&k)?
            .map(|v| codec::decode(&k, &v))
            .transpose()
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<SagaSummary>, JournalError> {
        let mut found = Vec::new();
        if query.limit == 0 {
            return Ok(found);
        }
        if let Some(index) = query.status.and_then(by_status::index_of) {
            return by_status::list(&*self.store, index, query);
        }
        let before = query.before.map(|id| codec::saga_key(SUMMARY, id));
        self.store
            .scan_rev(&[SUMMARY], before.as_deref(), &mut |key, value| {
                let summary: SagaSummary = codec::decode(key, value)?;
                if by_status::wanted(query, &summary) {
                    found.push(summary);
                }
                Ok(found.len() < query.limit)
            })?;
        Ok(found)
    }

    async fn finished_before(
        &self,
        cutoff: Timestamp,
        after: Option<SagaId>,
        limit: usize,
    ) -> Result<Vec<SagaId>, JournalError> {
        retention::finished_before(&*self.store, cutoff, after, limit)
    }

    async fn remove_sagas(&self, ids: Vec<SagaId>) -> Result<Vec<SagaId>, JournalError> {
        if ids.is_empty() {
            return Ok(ids);
        }
        self.request(|reply| WriteRequest::Remove { ids, reply })
            .await
    }

    async fn archived_through(&self) -> Result<u64, JournalError> {
        offsets::archived_through(&*self.store)
    }

    async fn put_participant(&self, participant: Participant) -> Result<(), JournalError> {
        self.request(|reply| WriteRequest::PutParticipant {
            participant: Box::new(participant),
            reply,
        })
        .await
    }

    async fn participants(&self) -> Result<Vec<Participant>, JournalError> {
        self.store
            .scan(&[PARTICIPANT])?
            .iter()
            .map(|(key, value)| codec::decode(key, value))
            .collect()
    }

    fn stats(&self) -> JournalStats {
        JournalStats {
            flushes: self.counters.flushes.load(Ordering::Relaxed),
            requests: self.counters.requests.load(Ordering::Relaxed),
            events: self.counters.events.load(Ordering::Relaxed),
        }
    }

    fn observe_flushes(&self, observer: Arc<dyn FlushObserver>) {
        let _ = self.counters.observer.set(observer);
    }

    fn write_failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn close(&self) -> Result<(), JournalError> {
        let result = match self.request(|reply| WriteRequest::Close { reply }).await {
            Err(JournalError::Closed) => Ok(()),
            other => other,
        };
        let handle = self.writer.lock().expect("writer handle lock").take();
        if let Some(handle) = handle {
            // The writer answered Close and is about to return; joining is quick.
            tokio::task::spawn_blocking(move || handle.join())
                .await
                .ok();
        }
        result
    }
}

/// The writer thread's state.
struct Writer<S: KvStore> {
    store: Arc<S>,
    counters: Arc<Counters>,
    /// Shared with the journal handle, for `write_failure`.
    failure: Arc<Mutex<Option<String>>>,
    /// The offset the next event gets; advanced only once a batch is durable.
    next_offset: u64,
    /// The archive horizon: the highest offset removed by retention so far.
    archived_through: u64,
    /// Which step snapshots the store holds, so runs can refer to them.
    snapshots: SnapshotWriter,
    /// Set by the first failed write or sync; every later write is refused.
    failed: Option<String>,
    /// Where the last durable offset is published (read by `read_after` and feeds).
    durable: Arc<watch::Sender<u64>>,
}

/// A request accepted into the current batch, waiting for the flush.
enum Pending {
    Append(
        oneshot::Sender<Result<Vec<Event>, JournalError>>,
        Vec<Event>,
    ),
    Participant(oneshot::Sender<Result<(), JournalError>>),
    Remove(
        oneshot::Sender<Result<Vec<SagaId>, JournalError>>,
        Vec<SagaId>,
    ),
}

impl<S: KvStore> Writer<S> {
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
        // An append writes 2 to 4 keys (its run, its index entry, and the
        // saga's summary and unfinished mark when its status changes); the
        // batch adds the offset counter, and the log its batch marker. Sized
        // ahead: growing it copied every key write several times per batch.
        let mut writes: Vec<KeyWrite> = Vec::with_capacity(requests.len() * 4 + 2);
        let mut pending = Vec::with_capacity(requests.len());
        let mut close = None;
        // Index state changed earlier in this same batch, ahead of the store.
        let mut batch_keys: HashMap<String, SagaId> = HashMap::new();
        let mut batch_summaries: HashMap<SagaId, SagaSummary> = HashMap::new();
        let mut batch_index_entries = offsets::EditedEntries::new();
        let mut offset = self.next_offset;
        let store = self.store.clone();
        let mut rewrites_held = None;
        for request in requests.drain(..) {
            match request {
                WriteRequest::Close { reply } => close = Some(reply),
                WriteRequest::Append { reply, .. } if self.failed.is_some() => {
                    let _ = reply.send(Err(self.refusal()));
                }
                WriteRequest::PutParticipant { reply, .. } if self.failed.is_some() => {
                    let _ = reply.send(Err(self.refusal()));
                }
                WriteRequest::Remove { reply, .. } if self.failed.is_some() => {
                    let _ = reply.send(Err(self.refusal()));
                }
                WriteRequest::Remove { ids, reply } => {
                    // Until the batch is written: removal edits index entries
                    // it reads (`overlay.rs`).
                    rewrites_held.get_or_insert_with(|| store.hold_rewrites());
                    let mut archived_through = self.archived_through;
                    match retention::removal_writes(
                        &*self.store,
                        &ids,
                        &batch_summaries,
                        &mut batch_index_entries,
                        &mut archived_through,
                    ) {
                        Ok((_, removed)) if removed.is_empty() => {
                            let _ = reply.send(Ok(removed));
                        }
                        Ok((w, removed)) => {
                            // Spent like offsets: never lowered, even if the sync fails.
                            self.archived_through = archived_through;
                            writes.extend(w);
                            pending.push(Pending::Remove(reply, removed));
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                WriteRequest::Append { mut events, reply } => {
                    match self.idempotency_conflict(&events, &batch_keys) {
                        Ok(None) => {}
                        Ok(Some(conflict)) | Err(conflict) => {
                            let _ = reply.send(Err(conflict));
                            continue;
                        }
                    }
                    let first_offset = offset;
                    match index_writes(
                        &*self.store,
                        &mut self.snapshots,
                        &mut events,
                        &mut offset,
                        &mut batch_keys,
                        &mut batch_summaries,
                    ) {
                        Ok(w) => writes.extend(w),
                        Err(e) => {
                            offset = first_offset;
                            let _ = reply.send(Err(e));
                            continue;
                        }
                    }
                    pending.push(Pending::Append(reply, events));
                }
                WriteRequest::PutParticipant { participant, reply } => {
                    writes.push((
                        codec::name_key(PARTICIPANT, &participant.name),
                        Some(codec::encode(&*participant)),
                    ));
                    pending.push(Pending::Participant(reply));
                }
            }
        }
        if !pending.is_empty() {
            writes.push((
                NEXT_OFFSET_KEY.to_vec(),
                Some(offset.to_be_bytes().to_vec()),
            ));
            let started = Instant::now();
            let written = self.store.write(writes);
            // The edits are in (or failed): a checkpoint may bundle them now.
            drop(rewrites_held);
            let result = match written {
                Ok(()) => {
                    self.snapshots.written();
                    // The batch is in the store: its offsets are spent whether or
                    // not this sync succeeds (a later sync may make it durable),
                    // so they are never handed out twice.
                    crate::crash_point!("journal::before_sync");
                    let synced = self.store.sync();
                    if synced.is_err() {
                        self.next_offset = offset;
                    }
                    synced
                }
                Err(e) => {
                    self.snapshots.abandoned();
                    Err(e)
                }
            };
            self.finish(pending, offset, result, started);
        }
        match close {
            Some(reply) => {
                let result = match &self.failed {
                    Some(_) => Err(self.refusal()),
                    None => self.store.sync(),
                };
                let _ = reply.send(result);
                true
            }
            None => false,
        }
    }

    /// Tries a sync while failed; on success the journal takes writes again.
    fn probe(&mut self) {
        if self.store.sync().is_ok() {
            tracing::warn!(
                after = self.failed.as_deref().unwrap_or_default(),
                "journal writes work again"
            );
            self.failed = None;
            *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = None;
            // Everything written so far, spent offsets included, is durable now.
            self.durable.send_replace(self.next_offset - 1);
        }
    }

    fn finish(
        &mut self,
        pending: Vec<Pending>,
        offset: u64,
        result: Result<(), JournalError>,
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
                self.durable.send_replace(offset - 1);
                for p in pending {
                    match p {
                        Pending::Append(reply, events) => {
                            let _ = reply.send(Ok(events));
                        }
                        Pending::Participant(reply) => {
                            let _ = reply.send(Ok(()));
                        }
                        Pending::Remove(reply, removed) => {
                            let _ = reply.send(Ok(removed));
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "journal write failed; refusing writes until the disk works again");
                self.failed = Some(e.to_string());
                *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                for p in pending {
                    match p {
                        Pending::Append(reply, _) => {
                            let _ = reply.send(Err(JournalError::Io(e.to_string())));
                        }
                        Pending::Participant(reply) => {
                            let _ = reply.send(Err(JournalError::Io(e.to_string())));
                        }
                        Pending::Remove(reply, _) => {
                            let _ = reply.send(Err(JournalError::Io(e.to_string())));
                        }
                    }
                }
            }
        }
    }

    fn refusal(&self) -> JournalError {
        JournalError::Failed(self.failed.clone().unwrap_or_default())
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
                        self.store
                            .get(&k)?
                            .map(|v| codec::decode::<SagaId>(&k, &v))
                            .transpose()?
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
        event.offset = *offset;
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
