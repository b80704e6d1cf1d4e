//! The offset index: the journal of all sagas, read in the order events became
//! durable.
//!
//! Every event gets a global offset when the writer appends it (`kv.rs`). Next to
//! the event itself the writer puts one index entry, in the same atomic batch:
//!
//! ```text
//! o <offset:8 BE> → (saga id, seq)      points at  e <saga id:16> <seq:8>
//! ```
//!
//! so "the events after offset N" is a range scan of the index from `N + 1`,
//! never a scan of every saga.
//!
//! Invariants:
//! - An index entry and its event are written in the same batch: neither exists
//!   without the other, also after a crash.
//! - Offsets in the index are gap-free up to the journal's durable horizon (the
//!   last offset of the last batch that was synced), except for the events of
//!   sagas removed by retention; a reader stops at the durable horizon, so it
//!   never hands out an event a crash could still take back (and whose offset a
//!   restarted journal would then hand out again).
//! - Removal (`kv.rs`, `remove_sagas`) deletes a saga's index entries with its
//!   events, and first raises the *archive horizon* (`m archived_through`) to
//!   the highest offset it removes. So every hole in the index is at or below
//!   the archive horizon: a reader skips those holes, and reports any hole above
//!   it as damage, as before. Above the archive horizon the index is gap-free.
//! - A journal written before the index existed gets it rebuilt from its events
//!   the first time it is opened ([`ensure_index`]).

use super::{
    JournalError,
    codec::{self, ARCHIVED_THROUGH_KEY, EVENT, NEXT_OFFSET_KEY, OFFSET},
    kv::{KeyWrite, KvStore},
};
use crate::saga::{Event, SagaId};

/// The index entry of an event whose offset is assigned.
pub fn index_entry(event: &Event) -> KeyWrite {
    (
        codec::offset_key(event.offset),
        Some(codec::encode(&(event.saga, event.seq))),
    )
}

/// The archive horizon: the highest offset of any event removed by retention
/// (0 when nothing was removed).
pub fn archived_through<S: KvStore + ?Sized>(store: &S) -> Result<u64, JournalError> {
    match store.get(ARCHIVED_THROUGH_KEY)? {
        Some(bytes) => codec::decode_u64(ARCHIVED_THROUGH_KEY, &bytes),
        None => Ok(0),
    }
}

/// Events with `after < offset <= horizon` that are still in the journal, in
/// offset order, at most `limit`. Fewer than `limit` only when the horizon is
/// reached. A missing offset at or below the archive horizon is an archived
/// event and is skipped; one above it is damage.
pub fn read_after<S: KvStore + ?Sized>(
    store: &S,
    after: u64,
    horizon: u64,
    limit: usize,
) -> Result<Vec<Event>, JournalError> {
    let mut found = Vec::new();
    // Read only when a hole is met, and again at each hole it does not cover: a
    // removal raises it before it deletes anything, and applies its deletions
    // while this read runs, so a fresh read covers every hole it made.
    let mut archived = 0;
    let mut archived_covers = |offset: u64| -> Result<bool, JournalError> {
        if offset > archived {
            archived = archived_through(store)?;
        }
        Ok(offset <= archived)
    };
    // The next offset to expect.
    let mut next = after.saturating_add(1);
    while found.len() < limit && next <= horizon {
        let want = (limit - found.len()).min((horizon - next + 1) as usize);
        let mut pointers: Vec<(u64, SagaId, u64)> = Vec::with_capacity(want);
        store.scan_from(&[OFFSET], &codec::offset_key(next), &mut |key, value| {
            let offset = codec::offset_of_key(key)?;
            if offset > horizon {
                return Ok(false);
            }
            let (saga, seq): (SagaId, u64) = codec::decode(key, value)?;
            pointers.push((offset, saga, seq));
            Ok(pointers.len() < want)
        })?;
        let index_ends = pointers.len() < want;
        for (offset, saga, seq) in pointers {
            if offset != next && !archived_covers(offset - 1)? {
                return Err(JournalError::Corrupt {
                    key: format!("offset index at {next}"),
                    why: format!(
                        "the next entry is offset {offset}: offsets {next}..{offset} are missing"
                    ),
                });
            }
            next = offset + 1;
            let key = codec::event_key(saga, seq);
            let Some(value) = store.get(&key)? else {
                if archived_covers(offset)? {
                    continue; // removed by retention after the scan saw its entry
                }
                return Err(JournalError::Corrupt {
                    key: format!("offset index at {offset}"),
                    why: format!("it points at event {seq} of saga {saga}, which does not exist"),
                });
            };
            let event: Event = codec::decode(&key, &value)?;
            if event.offset != offset {
                return Err(JournalError::Corrupt {
                    key: codec::describe_key(&key),
                    why: format!(
                        "the offset index says offset {offset}; the event says {}",
                        event.offset
                    ),
                });
            }
            found.push(event);
        }
        if index_ends {
            break;
        }
    }
    Ok(found)
}

/// Builds the offset index from the events if the journal predates it: the entry
/// of the last offset handed out is missing although events exist. Runs before
/// the writer starts, and makes what it wrote durable.
pub fn ensure_index<S: KvStore + ?Sized>(store: &S, next_offset: u64) -> Result<(), JournalError> {
    if next_offset <= 1 || store.get(&codec::offset_key(next_offset - 1))?.is_some() {
        return Ok(());
    }
    let mut writes: Vec<KeyWrite> = Vec::new();
    for (key, value) in store.scan(&[EVENT])? {
        let event: Event = codec::decode(&key, &value)?;
        writes.push(index_entry(&event));
    }
    if writes.is_empty() {
        return Ok(());
    }
    tracing::info!(
        events = writes.len(),
        "building the journal's offset index (first open by this version)"
    );
    // Written with the offset counter unchanged, so a store that requires every
    // batch to carry something the writer would also write stays consistent.
    writes.push((
        NEXT_OFFSET_KEY.to_vec(),
        Some(next_offset.to_be_bytes().to_vec()),
    ));
    store.write(writes)?;
    store.sync()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{
        Journal, MemoryJournal,
        conformance::{next, started},
        memory::MemoryStore,
    };
    use crate::saga::EventKind;

    #[tokio::test]
    async fn a_journal_without_the_index_gets_it_rebuilt() {
        let store = MemoryStore::default();
        let first = started("shop", None);
        let id = first.saga;
        let mut events = vec![first, next(id, 2, EventKind::SagaCompleted)];
        for (i, e) in events.iter_mut().enumerate() {
            e.offset = i as u64 + 1;
        }
        // Events and the offset counter, as an older build wrote them: no index.
        let mut writes: Vec<KeyWrite> = events
            .iter()
            .map(|e| (codec::event_key(e.saga, e.seq), Some(codec::encode(e))))
            .collect();
        writes.push((NEXT_OFFSET_KEY.to_vec(), Some(3u64.to_be_bytes().to_vec())));
        store.write(writes).unwrap();

        let journal = MemoryJournal::new(store).unwrap();
        let read = journal.read_after(0, 10).await.unwrap();
        assert_eq!(read, events);
        assert_eq!(journal.read_after(1, 10).await.unwrap(), events[1..]);
    }

    #[test]
    fn reading_stops_at_the_horizon_and_at_the_limit() {
        let store = MemoryStore::default();
        let first = started("shop", None);
        let id = first.saga;
        let mut events = vec![first];
        for seq in 2..=5 {
            events.push(next(id, seq, EventKind::RetryRequested));
        }
        let mut writes = Vec::new();
        for (i, e) in events.iter_mut().enumerate() {
            e.offset = i as u64 + 1;
            writes.push((codec::event_key(e.saga, e.seq), Some(codec::encode(&*e))));
            writes.push(index_entry(e));
        }
        store.write(writes).unwrap();
        let offsets = |v: Vec<Event>| v.iter().map(|e| e.offset).collect::<Vec<_>>();
        assert_eq!(offsets(read_after(&store, 0, 3, 100).unwrap()), [1, 2, 3]);
        assert_eq!(offsets(read_after(&store, 1, 5, 2).unwrap()), [2, 3]);
        assert_eq!(offsets(read_after(&store, 4, 5, 100).unwrap()), [5]);
        assert!(read_after(&store, 5, 5, 100).unwrap().is_empty());
    }

    #[test]
    fn a_hole_in_the_index_is_reported_not_skipped() {
        let store = MemoryStore::default();
        let mut a = started("shop", None);
        let mut b = started("shop", None);
        a.offset = 1;
        b.offset = 3;
        let writes = [&a, &b]
            .into_iter()
            .flat_map(|e| {
                [
                    (codec::event_key(e.saga, e.seq), Some(codec::encode(e))),
                    index_entry(e),
                ]
            })
            .collect();
        store.write(writes).unwrap();
        let err = read_after(&store, 0, 3, 10).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
