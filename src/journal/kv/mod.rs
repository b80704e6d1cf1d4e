//! The saga schema over any ordered key-value store: [`KvJournal`].
//!
//! Everything the [`Journal`] contract promises is built here out of keys and
//! values of a [`KvStore`] (`store/`), which knows nothing of sagas:
//!
//! | file | job |
//! |---|---|
//! | `mod.rs` | [`KvJournal`]: the reads, and the handle to the writer |
//! | `writer.rs` | the writer thread: group commit, batching, failure probing, index writes |
//! | `codec/` | the keys (one table of every key), the values, runs and bundles, older formats |
//! | `offsets.rs` | the offset index: reading the journal of all sagas in order |
//! | `by_status.rs` | the failed and unfinished indexes: listing by status |
//! | `snapshots.rs` | step snapshots stored once per definition |
//! | `retention.rs` | removing whole final sagas |
//! | `tiered.rs` | moving final sagas to the history tier, and reading them there |
//! | `compaction.rs` | what a checkpoint bundles (handed to the log, `store/wal/`) |
//! | `upgrade.rs` | what an open adds to a journal of an earlier version |
//! | `check/` | verifying a whole journal (`sagad journal check`) |
//! | `salvage/` | a consistent journal rebuilt from what a damaged one still holds (`sagad journal salvage`) |
//!
//! Writes go through the writer thread (`writer.rs`); reads go to the store
//! directly: the stores used here serve them from memory or a page cache,
//! and after an append is acknowledged its writes are visible.

use std::{
    sync::{Arc, Mutex, atomic::Ordering},
    thread,
};

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot, watch};

use self::{
    codec::{EVENT, IDEMPOTENCY, NEXT_OFFSET_KEY, PARTICIPANT, SUMMARY, UNFINISHED},
    snapshots::{SnapshotCache, SnapshotWriter},
    writer::{Counters, WriteRequest, Writer},
};
use crate::{
    journal::{
        FlushObserver, Journal, JournalError, JournalStats, ListQuery, LocalStats, SagaSummary,
        history::{Moved, SharedTier},
        request::RemovedTo,
        store::{KvStore, StoreError},
    },
    saga::{Event, Offset, Participant, SagaId, Timestamp},
};

mod by_status;
pub mod check;
pub(in crate::journal) mod codec;
pub mod compaction;
mod offsets;
mod retention;
pub mod salvage;
mod snapshots;
mod tiered;
mod upgrade;
mod writer;

/// Scans whose visitor decodes what it visits, and so may fail: the
/// visitor's first error stops the scan and is what the scan returns.
trait TryScan: KvStore {
    /// [`KvStore::scan_from`] with a visitor that may fail.
    fn try_scan_from(
        &self,
        prefix: &[u8],
        from: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<bool, JournalError>,
    ) -> Result<(), JournalError> {
        let mut failed = None;
        self.scan_from(prefix, from, &mut |k, v| go_on(&mut failed, visit(k, v)))?;
        failed.map_or(Ok(()), Err)
    }

    /// [`KvStore::scan_rev`] with a visitor that may fail.
    fn try_scan_rev(
        &self,
        prefix: &[u8],
        before: Option<&[u8]>,
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<bool, JournalError>,
    ) -> Result<(), JournalError> {
        let mut failed = None;
        self.scan_rev(prefix, before, &mut |k, v| go_on(&mut failed, visit(k, v)))?;
        failed.map_or(Ok(()), Err)
    }
}

impl<S: KvStore + ?Sized> TryScan for S {}

/// Whether a scan goes on after a visit; keeps the visit's error.
fn go_on(failed: &mut Option<JournalError>, visited: Result<bool, JournalError>) -> bool {
    visited.unwrap_or_else(|e| {
        *failed = Some(e);
        false
    })
}

/// A saga's events as the store holds them; empty if it holds none.
fn saga_in_store<S: KvStore + ?Sized>(
    store: &S,
    snapshots: &SnapshotCache,
    id: SagaId,
) -> Result<Vec<Event>, JournalError> {
    let entries = store.scan(&codec::saga_key(EVENT, id))?;
    let mut events: Vec<Event> = Vec::with_capacity(entries.len() * 2);
    for (key, value) in entries {
        let run = codec::decode_run(&key, &value, &|id| snapshots.get(store, id))?;
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
    if holed && store.get(&codec::saga_key(SUMMARY, id))?.is_none() {
        events.clear();
    }
    Ok(events)
}

/// A journal over a [`KvStore`]; see the module docs.
pub struct KvJournal<S: KvStore> {
    store: Arc<S>,
    request_tx: mpsc::Sender<WriteRequest>,
    counters: Arc<Counters>,
    /// Why writes fail, while they do; the writer thread sends the changes.
    failure: watch::Receiver<Option<String>>,
    /// The writer thread, joined by `close` (a std mutex: never held across await).
    writer: Mutex<Option<thread::JoinHandle<()>>>,
    /// The last offset known durable, published by the writer after each sync.
    durable: Arc<watch::Sender<Offset>>,
    /// Step snapshots read so far (they never change); shared with a move's
    /// blocking task.
    snapshots: Arc<SnapshotCache>,
    /// Where finished sagas go to leave the store (`journal/history/`), for
    /// a journal that has one: every read looks there after the store.
    history: Option<Arc<SharedTier>>,
}

impl<S: KvStore> KvJournal<S> {
    /// Starts the writer thread over `store`.
    pub fn new(store: S) -> Result<Self, JournalError> {
        Self::with_history(store, None)
    }

    /// Starts the writer thread over `store`, with the history tier
    /// `history` holding the sagas moved out of it.
    pub fn with_history(store: S, history: Option<Arc<SharedTier>>) -> Result<Self, JournalError> {
        let store = Arc::new(store);
        let next_offset = match store.get(NEXT_OFFSET_KEY)? {
            Some(bytes) => codec::decode_u64(NEXT_OFFSET_KEY, &bytes)?,
            None => 1,
        };
        upgrade::at_open(&*store, next_offset)?;
        let archived_through = offsets::archived_through(&*store)?;
        let moved_through = offsets::moved_through(&*store)?;
        let durable = Arc::new(watch::Sender::new(Offset(next_offset - 1)));
        let counters = Arc::new(Counters::default());
        let (failure_tx, failure) = watch::channel(None);
        let writer = Writer {
            store: store.clone(),
            counters: counters.clone(),
            failure: failure_tx,
            next_offset,
            archived_through,
            moved_through,
            history: history.clone(),
            snapshots: SnapshotWriter::default(),
            failed: None,
            durable: durable.clone(),
        };
        let (request_tx, handle) = writer.spawn()?;
        Ok(Self {
            store,
            request_tx,
            counters,
            failure,
            writer: Mutex::new(Some(handle)),
            durable,
            snapshots: Arc::default(),
            history,
        })
    }

    /// The store under this journal.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The history tier holding the sagas moved out of the store, if the
    /// journal has one.
    pub fn history(&self) -> Option<&SharedTier> {
        self.history.as_deref()
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, JournalError>>) -> WriteRequest,
    ) -> Result<T, JournalError> {
        crate::journal::request::send(&self.request_tx, make).await
    }
}

#[async_trait]
impl<S: KvStore> Journal for KvJournal<S> {
    async fn append(&self, events: Vec<Event>) -> Result<Vec<Event>, JournalError> {
        self.request(|reply| WriteRequest::Append { events, reply })
            .await
    }

    async fn read_saga(&self, id: SagaId) -> Result<Vec<Event>, JournalError> {
        let events = saga_in_store(&*self.store, &self.snapshots, id)?;
        if events.is_empty() {
            return self.history_of(id);
        }
        Ok(events)
    }

    async fn read_after(&self, after: Offset, limit: usize) -> Result<Vec<Event>, JournalError> {
        let horizon = self.durable.borrow().get();
        let found =
            offsets::read_after(&*self.store, &self.snapshots, after.get(), horizon, limit)?;
        self.with_history_events(after.get(), horizon, limit, found)
    }

    fn durable_offset(&self) -> watch::Receiver<Offset> {
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
        match self.store.get(&k)? {
            Some(v) => codec::decode(&k, &v).map(Some),
            None => self.history_key(key),
        }
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<SagaSummary>, JournalError> {
        let mut found = Vec::new();
        if query.limit == 0 {
            return Ok(found);
        }
        if let Some(index) = query.status.and_then(by_status::index_of) {
            // Indexes of sagas that are not final: the tier has none.
            return by_status::list(&*self.store, index, query);
        }
        let before = query.before.map(|id| codec::saga_key(SUMMARY, id));
        self.store
            .try_scan_rev(&[SUMMARY], before.as_deref(), |key, value| {
                let summary: SagaSummary = codec::decode(key, value)?;
                if by_status::wanted(query, &summary) {
                    found.push(summary);
                }
                Ok(found.len() < query.limit)
            })?;
        self.with_history_page(query, found)
    }

    async fn finished_before(
        &self,
        cutoff: Timestamp,
        after: Option<SagaId>,
        limit: usize,
    ) -> Result<Vec<SagaId>, JournalError> {
        retention::finished_before(&*self.store, cutoff, after, limit)
    }

    async fn move_to_history(
        &self,
        cutoff: Timestamp,
        at_least: usize,
        at_most: usize,
    ) -> Result<Moved, JournalError> {
        self.move_finished(cutoff, at_least, at_most).await
    }

    fn history_ended_before(&self, cutoff: Timestamp) -> Vec<u64> {
        self.segments_ended_before(cutoff)
    }

    async fn history_sagas(&self, number: u64) -> Result<Vec<SagaId>, JournalError> {
        self.segment_saga_ids(number).await
    }

    async fn retire_history(&self, number: u64) -> Result<usize, JournalError> {
        self.retire_segment(number).await
    }

    async fn remove_sagas(&self, ids: Vec<SagaId>) -> Result<Vec<SagaId>, JournalError> {
        if ids.is_empty() {
            return Ok(ids);
        }
        self.request(|reply| WriteRequest::Remove {
            ids,
            to: RemovedTo::Archive,
            reply,
        })
        .await
    }

    async fn archived_through(&self) -> Result<Offset, JournalError> {
        offsets::archived_through(&*self.store).map(Offset)
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
            local: self.history.as_ref().map(|tier| LocalStats {
                history_sagas: tier.sagas(),
                history_segments: tier.segments() as u64,
                store: self.store.upkeep_stats(),
            }),
        }
    }

    fn observe_flushes(&self, observer: Arc<dyn FlushObserver>) {
        let _ = self.counters.observer.set(observer);
    }

    fn write_failure(&self) -> Option<String> {
        let failed = self.failure.borrow().clone();
        failed.or_else(|| self.store.failure())
    }

    fn write_failures(&self) -> watch::Receiver<Option<String>> {
        self.failure.clone()
    }

    async fn close(&self) -> Result<(), JournalError> {
        let result = crate::journal::request::close(&self.request_tx).await;
        let handle = self.writer.lock().expect("writer handle lock").take();
        if let Some(handle) = handle {
            // The writer answered Close and is about to return; joining is quick.
            tokio::task::spawn_blocking(move || handle.join())
                .await
                .ok();
        }
        // The store's last work (the log's last checkpoint) runs whatever the
        // writer said: its threads stop either way.
        let store = self.store.clone();
        let closed = tokio::task::spawn_blocking(move || store.close())
            .await
            .unwrap_or_else(|e| Err(StoreError::Engine(format!("closing the store: {e}"))));
        result.and(closed.map_err(|e| JournalError::Close(Arc::new(e))))
    }
}
