//! What an open adds to a journal written by an earlier version: the indexes
//! that version did not keep, built from the records, before the writer starts.
//!
//! - The offset index (`offsets.rs`): built from the events when the journal
//!   predates it, or rebuilt when it holds the one-entry-per-event layout of
//!   builds before runs.
//! - The failed index (`by_status.rs`): built from the listing entries, once;
//!   the `m failed_index` key says it was.
//!
//! Whatever they build is written in one batch with the offset counter,
//! unchanged, and synced before the journal takes writes: a store that
//! requires every batch to carry something the writer would also write (the
//! log's batch marker) stays consistent, and a crash in the middle leaves the
//! journal as it was, to be upgraded at the next open.

use super::{
    TryScan,
    codec::{self, EVENT, FAILED, FAILED_INDEX_KEY, NEXT_OFFSET_KEY, OFFSET, SUMMARY},
    offsets, snapshots,
};
use crate::{
    journal::{
        JournalError, SagaSummary,
        store::{KeyWrite, KvStore},
    },
    saga::SagaStatus,
};

/// Builds what the journal in `store` lacks, durably; `next_offset` is its
/// offset counter.
pub(super) fn at_open<S: KvStore>(store: &S, next_offset: u64) -> Result<(), JournalError> {
    let mut writes = Vec::new();
    writes.extend(offset_index(store, next_offset)?.into_iter().flatten());
    writes.extend(failed_index(store)?.into_iter().flatten());
    if writes.is_empty() {
        return Ok(());
    }
    writes.push((
        NEXT_OFFSET_KEY.to_vec(),
        Some(next_offset.to_be_bytes().to_vec()),
    ));
    // Failures here are the open's: the journal cannot start as it is.
    store.write(writes).map_err(JournalError::Open)?;
    store.sync().map_err(JournalError::Open)
}

/// The offset index built from the events if the journal predates it (events
/// exist but no index entry does) or holds an earlier layout of it (its newest
/// entry is one); `None` when it needs nothing.
fn offset_index<S: KvStore>(
    store: &S,
    next_offset: u64,
) -> Result<Option<Vec<KeyWrite>>, JournalError> {
    if next_offset <= 1 {
        return Ok(None);
    }
    let mut newest = None;
    store.try_scan_rev(&[OFFSET], None, |k, v| {
        newest = Some(codec::decode_pointers(k, v)?.is_some());
        Ok(false)
    })?;
    match newest {
        Some(true) => return Ok(None),
        Some(false) => {}
        None => {
            let mut any_event = false;
            store.scan_from(&[EVENT], &[EVENT], &mut |_, _| {
                any_event = true;
                false
            })?;
            if !any_event {
                return Ok(None);
            }
        }
    }
    let mut writes: Vec<KeyWrite> = store
        .scan(&[OFFSET])?
        .into_iter()
        .map(|(key, _)| (key, None))
        .collect();
    let mut events = 0;
    for (key, value) in store.scan(&[EVENT])? {
        for run in snapshots::decode_runs(store, &key, &value)? {
            events += run.len();
            writes.push(offsets::index_entry(&run));
        }
    }
    if events == 0 {
        return Ok(None);
    }
    tracing::info!(
        events,
        "building the journal's offset index (first open by this version)"
    );
    Ok(Some(writes))
}

/// The failed index built from the listing entries if this journal has not
/// got it yet (written by an earlier version), with the marker that says it
/// has; `None` when it has.
fn failed_index<S: KvStore>(store: &S) -> Result<Option<Vec<KeyWrite>>, JournalError> {
    if store.get(FAILED_INDEX_KEY)?.is_some() {
        return Ok(None);
    }
    let mut writes: Vec<KeyWrite> = Vec::new();
    let mut sagas = 0usize;
    store.try_scan_from(&[SUMMARY], &[SUMMARY], |key, value| {
        sagas += 1;
        let summary: SagaSummary = codec::decode(key, value)?;
        if summary.status == SagaStatus::Failed {
            writes.push((codec::saga_key(FAILED, summary.id), Some(Vec::new())));
        }
        Ok(true)
    })?;
    if sagas > 0 {
        tracing::info!(
            sagas,
            failed = writes.len(),
            "building the journal's index of FAILED sagas (first open by this version)"
        );
    }
    writes.push((FAILED_INDEX_KEY.to_vec(), Some(Vec::new())));
    Ok(Some(writes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Journal, ListQuery, MemoryJournal, store::MemoryStore};
    use crate::saga::EventKind;
    use crate::saga::Offset;
    use crate::testing::{next, started};

    #[tokio::test]
    async fn a_journal_without_the_index_gets_it_rebuilt() {
        let store = MemoryStore::default();
        let first = started("shop", None);
        let id = first.saga;
        let mut events = vec![first, next(id, 2, EventKind::SagaCompleted)];
        for (i, e) in events.iter_mut().enumerate() {
            e.offset = Offset(i as u64 + 1);
        }
        // Events and the offset counter, as an older build wrote them: no index.
        let mut writes: Vec<KeyWrite> = events
            .iter()
            .map(|e| {
                let record = codec::encode_as_version(2, e);
                (codec::event_key(e.saga, e.seq), Some(record))
            })
            .collect();
        writes.push((
            codec::NEXT_OFFSET_KEY.to_vec(),
            Some(3u64.to_be_bytes().to_vec()),
        ));
        store.write(writes).unwrap();

        let journal = MemoryJournal::new(store).unwrap();
        let read = journal.read_after(Offset(0), 10).await.unwrap();
        assert_eq!(read, events);
        assert_eq!(
            journal.read_after(Offset(1), 10).await.unwrap(),
            events[1..]
        );
    }

    #[tokio::test]
    async fn an_index_of_the_one_entry_per_event_layout_is_rebuilt() {
        let store = MemoryStore::default();
        let first = started("shop", None);
        let id = first.saga;
        let mut events = vec![
            first,
            next(
                id,
                2,
                EventKind::CancelRequested {
                    reason: "r".into(),
                    by: None,
                },
            ),
        ];
        let mut writes: Vec<KeyWrite> = Vec::new();
        for (i, e) in events.iter_mut().enumerate() {
            e.offset = Offset(i as u64 + 1);
            // As the previous build wrote them: an event per record and per entry.
            writes.push((
                codec::event_key(e.saga, e.seq),
                Some(codec::encode_as_version(2, &*e)),
            ));
            writes.push((
                codec::offset_key(e.offset.get()),
                Some(codec::encode_as_version(2, &(e.saga, e.seq))),
            ));
        }
        writes.push((
            codec::NEXT_OFFSET_KEY.to_vec(),
            Some(3u64.to_be_bytes().to_vec()),
        ));
        store.write(writes).unwrap();

        let journal = MemoryJournal::new(store).unwrap();
        assert_eq!(journal.read_after(Offset(0), 10).await.unwrap(), events);
        assert_eq!(
            journal.read_after(Offset(1), 10).await.unwrap(),
            events[1..]
        );
        // (The hand-written journal has no listing entries; only the index counts.)
        let report = crate::journal::check::check(journal.store()).unwrap();
        assert!(
            !report.problems.iter().any(|p| p.contains("offset")),
            "{report}"
        );
    }

    /// A journal of an earlier version: a FAILED saga, no failed index.
    #[tokio::test]
    async fn an_earlier_journal_gets_its_failed_index_at_first_open() {
        let journal = MemoryJournal::in_memory();
        let failed = started("shop", None);
        let id = failed.saga;
        let running = started("shop", None);
        journal.append(vec![failed, running]).await.unwrap();
        journal
            .append(vec![next(
                id,
                2,
                EventKind::SagaFailed { reason: "r".into() },
            )])
            .await
            .unwrap();
        // Back to what an earlier version left: no index, no marker.
        let store = MemoryStore::default();
        let mut writes: Vec<KeyWrite> = journal
            .store()
            .scan(&[])
            .unwrap()
            .into_iter()
            .filter(|(k, _)| k.first() != Some(&FAILED) && k.as_slice() != FAILED_INDEX_KEY)
            .map(|(k, v)| (k, Some(v)))
            .collect();
        writes.sort();
        store.write(writes).unwrap();
        assert_eq!(store.get(&codec::saga_key(FAILED, id)).unwrap(), None);

        let reopened = MemoryJournal::new(store).unwrap();
        let query = ListQuery {
            status: Some(SagaStatus::Failed),
            limit: 10,
            ..Default::default()
        };
        let listed: Vec<_> = reopened.list(&query).await.unwrap();
        assert_eq!(listed.iter().map(|s| s.id).collect::<Vec<_>>(), vec![id]);
        assert!(reopened.store().get(FAILED_INDEX_KEY).unwrap().is_some());
    }
}
