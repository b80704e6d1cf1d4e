//! The key-value journal with a history tier (`journal/history/`): moving
//! final sagas out of the store, and the reads that find them afterwards.
//!
//! ```text
//!  move_to_history(cutoff)                 every read
//!    finished_before(cutoff) in the store    1. the store
//!    read them whole ──▶ SharedTier::add     2. the tier (what the store lacks)
//!    (a segment, synced, then readable)
//!    Remove { to: History } via the writer
//!    (raises `m moved_through` first)
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
    /// Moves up to `limit` final sagas that ended before `cutoff` (oldest
    /// first) out of the store into one new segment of the history tier;
    /// nothing without a tier. Durable on `Ok`: the segment is synced
    /// before the removal is written, and the removal is a write like any.
    pub(super) async fn move_finished(
        &self,
        cutoff: Timestamp,
        limit: usize,
    ) -> Result<Moved, JournalError> {
        let Some(history) = self.history.clone() else {
            return Ok(Moved::default());
        };
        let store = self.store.clone();
        let snapshots = self.snapshots.clone();
        // Reading a segment's worth of sagas and writing the file is
        // seconds of blocking work: off the async workers.
        let collected = tokio::task::spawn_blocking(move || {
            let ids = retention::finished_before(&*store, cutoff, None, limit)?;
            let sagas = ids
                .into_iter()
                .filter_map(|id| finished(&*store, &snapshots, id).transpose())
                .collect::<Result<Vec<_>, JournalError>>()?;
            if sagas.is_empty() {
                return Ok((Vec::new(), 0));
            }
            let ids: Vec<SagaId> = sagas.iter().map(FinishedSaga::id).collect();
            let written = history.add(sagas)?;
            Ok::<_, JournalError>((ids, written.bytes))
        })
        .await
        .map_err(|e| JournalError::Start(std::io::Error::other(e.to_string())))??;
        let (ids, bytes) = collected;
        if ids.is_empty() {
            return Ok(Moved::default());
        }
        let removed = self
            .request(|reply| WriteRequest::Remove {
                ids,
                to: RemovedTo::History,
                reply,
            })
            .await?;
        Ok(Moved {
            sagas: removed.len(),
            bytes,
        })
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
