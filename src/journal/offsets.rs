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
//!   last offset of the last batch that was synced); a reader stops there, so it
//!   never hands out an event a crash could still take back (and whose offset a
//!   restarted journal would then hand out again).
//! - A journal written before the index existed gets it rebuilt from its events
//!   the first time it is opened ([`ensure_index`]).

use super::{
    JournalError,
    codec::{self, EVENT, NEXT_OFFSET_KEY, OFFSET},
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

/// Events with `after < offset <= horizon`, in offset order, at most `limit`.
pub fn read_after<S: KvStore + ?Sized>(
    store: &S,
    after: u64,
    horizon: u64,
    limit: usize,
) -> Result<Vec<Event>, JournalError> {
    let mut found = Vec::new();
    if after >= horizon || limit == 0 {
        return Ok(found);
    }
    let mut pointers: Vec<(u64, SagaId, u64)> = Vec::new();
    let want = limit.min((horizon - after) as usize);
    store.scan_from(
        &[OFFSET],
        &codec::offset_key(after + 1),
        &mut |key, value| {
            let offset = codec::offset_of_key(key)?;
            if offset > horizon {
                return Ok(false);
            }
            let (saga, seq): (SagaId, u64) = codec::decode(key, value)?;
            pointers.push((offset, saga, seq));
            Ok(pointers.len() < want)
        },
    )?;
    for (expected, (offset, saga, seq)) in (after + 1..).zip(pointers) {
        if offset != expected {
            return Err(JournalError::Corrupt {
                key: format!("offset index at {expected}"),
                why: format!(
                    "the next entry is offset {offset}: offsets {expected}..{offset} are missing"
                ),
            });
        }
        let key = codec::event_key(saga, seq);
        let value = store.get(&key)?.ok_or_else(|| JournalError::Corrupt {
            key: format!("offset index at {offset}"),
            why: format!("it points at event {seq} of saga {saga}, which does not exist"),
        })?;
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
