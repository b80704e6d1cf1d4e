//! The key-value journal with a history tier (`journal/history/`): moving
//! final sagas out of the store, and the reads that find them afterwards.
//!
//! ```text
//!  move_to_history(cutoff)                 every read
//!    finished_before(cutoff) in the store    1. the store
//!    read them whole ──▶ SharedTier::add     2. the tier (what the store lacks)
//!    (a segment, synced, then readable)
//!    Remove { to: History } via the writer,
//!    in chunks (each raises `m moved_through` first)
//! ```
//!
//! Invariants:
//! - A saga is in the store, or in the tier, or in both (a move cut short
//!   after its segment was written): the tier gets it before the store lets
//!   it go, so a read that looks in the store first and in the tier second
//!   never misses a saga being moved, whatever moment the move reaches.
//! - Both copies are the same saga, final and so unchanging: a read that
//!   finds it in the store takes that copy, and merges of pages and feeds
//!   take each id, each offset, once.
//! - The index holes a move leaves are at or below `m moved_through`, and
//!   the tier holds the events that were there (`offsets.rs`): the feed reads
//!   them from the tier, so offsets keep their meaning and a move is not an
//!   archival (the archive horizon does not move).
//! - An idempotency key a moved saga holds stays taken: the writer looks in
//!   the tier for a key the store lacks (`writer.rs`).

use std::collections::BTreeMap;

use super::{
    KvJournal,
    codec::{self, SUMMARY},
    retention,
    snapshots::SnapshotCache,
    writer::WriteRequest,
};
use crate::{
    journal::{
        JournalError, ListQuery, SagaSummary,
        history::{FinishedSaga, Moved},
        request::RemovedTo,
        store::KvStore,
    },
    saga::{Event, EventKind, SagaId, SagaStatus, Timestamp},
};

impl<S: KvStore> KvJournal<S> {
    /// Moves up to `at_most` final sagas that ended before `cutoff` (oldest
    /// first) out of the store into one new segment of the history tier,
    /// if at least `at_least` are due; nothing without a tier. Durable on
    /// `Ok`: the segment is synced before the removal is written, and the
    /// removal is a write like any.
    pub(super) async fn move_finished(
        &self,
        cutoff: Timestamp,
        at_least: usize,
        at_most: usize,
    ) -> Result<Moved, JournalError> {
        let Some(history) = self.history.clone() else {
            return Ok(Moved::default());
        };
        let store = self.store.clone();
        let snapshots = self.snapshots.clone();
        // Reading a segment's worth of sagas and writing the file is
        // seconds of blocking work: off the async workers.
        let collected = blocking(move || {
            let ids = retention::finished_before(&*store, cutoff, None, at_most)?;
            if ids.len() < at_least.max(1) {
                return Ok((Vec::new(), 0));
            }
            let sagas = ids
                .into_iter()
                .filter_map(|id| finished(&*store, &snapshots, id).transpose())
                .collect::<Result<Vec<_>, JournalError>>()?;
            if sagas.is_empty() {
                return Ok((Vec::new(), 0));
            }
            let ids: Vec<SagaId> = sagas.iter().map(FinishedSaga::id).collect();
            let written = history.add(sagas)?;
            Ok((ids, written.bytes))
        })
        .await?;
        let (ids, bytes) = collected;
        if ids.is_empty() {
            return Ok(Moved::default());
        }
        crate::crash_point!("history::after_segment");
        // In chunks, as retention removes: one removal of a whole segment
        // would hold the writer (and every append behind it) for seconds.
        let mut removed = 0;
        for chunk in ids.chunks(REMOVE_CHUNK) {
            removed += self
                .request(|reply| WriteRequest::Remove {
                    ids: chunk.to_vec(),
                    to: RemovedTo::History,
                    reply,
                })
                .await?
                .len();
        }
        Ok(Moved {
            sagas: removed,
            bytes,
        })
    }

    /// [`crate::journal::Journal::history_ended_before`].
    pub(super) fn segments_ended_before(&self, cutoff: Timestamp) -> Vec<u64> {
        match &self.history {
            Some(history) => history
                .ended_before(cutoff)
                .into_iter()
                .map(|(n, _)| n)
                .collect(),
            None => Vec::new(),
        }
    }

    /// [`crate::journal::Journal::history_sagas`].
    pub(super) async fn segment_saga_ids(&self, number: u64) -> Result<Vec<SagaId>, JournalError> {
        let Some(history) = self.history.clone() else {
            return Ok(Vec::new());
        };
        blocking(move || Ok(history.saga_ids_of(number)?)).await
    }

    /// [`crate::journal::Journal::retire_history`]: the horizon first, so
    /// a crash before the file goes leaves a segment retention takes again
    /// (its sagas archived twice at worst), never a hole above the horizon.
    pub(super) async fn retire_segment(&self, number: u64) -> Result<usize, JournalError> {
        let Some(history) = self.history.clone() else {
            return Ok(0);
        };
        let Some(highest) = history.highest_offset(number) else {
            return Ok(0);
        };
        let ids = self.segment_saga_ids(number).await?;
        for chunk in ids.chunks(REMOVE_CHUNK) {
            self.request(|reply| WriteRequest::Remove {
                ids: chunk.to_vec(),
                to: RemovedTo::Archive,
                reply,
            })
            .await?;
        }
        self.request(|reply| WriteRequest::ArchiveThrough {
            offset: highest,
            reply,
        })
        .await?;
        blocking(move || Ok(history.retire(number)?)).await?;
        Ok(ids.len())
    }

    /// The saga's events from the tier, when the store had none.
    pub(super) fn history_of(&self, id: SagaId) -> Result<Vec<Event>, JournalError> {
        match &self.history {
            Some(history) => Ok(history.get(id)?.map(|s| s.events).unwrap_or_default()),
            None => Ok(Vec::new()),
        }
    }

    /// The saga the tier holds under idempotency key `key`.
    pub(super) fn history_key(&self, key: &str) -> Result<Option<SagaId>, JournalError> {
        match &self.history {
            Some(history) => Ok(history.saga_for_key(key)?),
            None => Ok(None),
        }
    }

    /// The store's page `found` merged with the tier's: the newest
    /// `query.limit` of both, each id once (the store's copy).
    pub(super) fn with_history_page(
        &self,
        query: &ListQuery,
        found: Vec<SagaSummary>,
    ) -> Result<Vec<SagaSummary>, JournalError> {
        let Some(history) = &self.history else {
            return Ok(found);
        };
        // The tier holds final sagas only.
        if query
            .status
            .is_some_and(|s| !matches!(s, SagaStatus::Completed | SagaStatus::Compensated))
        {
            return Ok(found);
        }
        let mut page: BTreeMap<SagaId, SagaSummary> = history
            .list(query)?
            .into_iter()
            .map(|s| (s.id, s))
            .collect();
        page.extend(found.into_iter().map(|s| (s.id, s)));
        Ok(page.into_values().rev().take(query.limit).collect())
    }

    /// The store's feed read `found` merged with the tier's events above
    /// `after` (up to `horizon`, the durable offset): the lowest `limit`
    /// offsets of both, each once.
    pub(super) fn with_history_events(
        &self,
        after: u64,
        horizon: u64,
        limit: usize,
        found: Vec<Event>,
    ) -> Result<Vec<Event>, JournalError> {
        let Some(history) = &self.history else {
            return Ok(found);
        };
        let moved = history.events_after(after, limit)?;
        if moved.is_empty() {
            return Ok(found);
        }
        let mut events: BTreeMap<u64, Event> = moved
            .into_iter()
            .filter(|e| e.offset.get() <= horizon)
            .map(|e| (e.offset.get(), e))
            .collect();
        events.extend(found.into_iter().map(|e| (e.offset.get(), e)));
        Ok(events.into_values().take(limit).collect())
    }
}

/// Sagas per removal request when sagas move or a segment retires: the
/// writer does a modest amount in one batch.
const REMOVE_CHUNK: usize = 256;

/// Runs `work` on a blocking thread: the tier's files are read and written
/// with plain file I/O.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, JournalError> + Send + 'static,
) -> Result<T, JournalError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        JournalError::Start(std::io::Error::other(format!("a history task failed: {e}")))
    })?
}

/// The saga `id` whole, as the store holds it, if it is there and final.
fn finished<S: KvStore + ?Sized>(
    store: &S,
    snapshots: &SnapshotCache,
    id: SagaId,
) -> Result<Option<FinishedSaga>, JournalError> {
    let summary_key = codec::saga_key(SUMMARY, id);
    let Some(value) = store.get(&summary_key)? else {
        return Ok(None);
    };
    let summary: SagaSummary = codec::decode(&summary_key, &value)?;
    if !summary.status.is_final() {
        return Ok(None);
    }
    let events = super::saga_in_store(store, snapshots, id)?;
    let idempotency_key = match events.first().map(|e| &e.kind) {
        Some(EventKind::SagaStarted {
            idempotency_key, ..
        }) => idempotency_key.clone(),
        _ => {
            return Err(JournalError::Corrupt {
                key: codec::describe_key(&summary_key),
                why: format!(
                    "saga {id} is listed, but its history does not begin with SagaStarted"
                ),
            });
        }
    };
    Ok(Some(FinishedSaga {
        summary,
        idempotency_key,
        events,
    }))
}
