//! Retention in the key-value journals: finding sagas that ended long ago, and
//! removing every key of a saga in one batch.
//!
//! Finding them never walks the whole journal. The listing index `s <id>` is in
//! id order, and ids are UUIDv7, so it is in creation order; a saga cannot end
//! before it started, so a scan from the oldest summary stops at the first saga
//! created after the cutoff. What it passes over on the way are the old sagas
//! the journal keeps on purpose (FAILED, still running, or ended recently), and
//! only those that are final get their last event read.
//!
//! Invariants of a removal (run by the writer thread, in one atomic batch):
//! - Only a final saga (COMPLETED or COMPENSATED) is removed. It can never get
//!   another event, so a removal cannot race an append of the same saga.
//! - Every key of the saga goes: its runs of events, their offset index entries, listing and
//!   unfinished entries, and its idempotency key (if it still names this saga).
//! - The archive horizon (`m archived_through`) is raised to the highest removed
//!   offset *before* any deletion in the batch: a store that applies writes in
//!   order never shows a hole in the offset index above the horizon. A saga
//!   moved to the history tier is removed the same way, raising the history
//!   horizon (`m moved_through`) instead: its offsets stay in the feed, read
//!   from the tier.
//! - The listing entry goes before the events: a reader that meets a history
//!   with a hole finds the listing entry gone too, and knows the saga is being
//!   removed (`kv.rs`, `read_saga`).

use std::collections::HashMap;

use super::{
    TryScan,
    codec::{self, EVENT, IDEMPOTENCY, SUMMARY, UNFINISHED},
    offsets, snapshots,
};
use crate::{
    journal::{
        JournalError, SagaSummary,
        store::{KeyWrite, KvStore},
    },
    saga::{Event, EventKind, SagaId, Timestamp},
};

/// Final sagas whose last event is older than `cutoff`, in id order, with ids
/// above `after`, at most `limit`; fewer only when there are no more.
pub fn finished_before<S: KvStore + ?Sized>(
    store: &S,
    cutoff: Timestamp,
    after: Option<SagaId>,
    limit: usize,
) -> Result<Vec<SagaId>, JournalError> {
    let mut found = Vec::new();
    let mut after = after;
    while found.len() < limit {
        // A chunk of final sagas created before the cutoff. A store may hold a
        // lock while it visits, so their last events are read after the scan.
        let from = match after {
            // The first key after this saga's: its key with a zero byte appended.
            Some(id) => {
                let mut key = codec::saga_key(SUMMARY, id);
                key.push(0);
                key
            }
            None => vec![SUMMARY],
        };
        let mut candidates = Vec::new();
        let mut more = false;
        store.try_scan_from(&[SUMMARY], &from, |key, value| {
            let summary: SagaSummary = codec::decode(key, value)?;
            if summary.created_at >= cutoff {
                return Ok(false); // created after the cutoff: it ended after it too
            }
            if summary.status.is_final() {
                candidates.push(summary.id);
                if candidates.len() == limit {
                    more = true;
                    return Ok(false);
                }
            }
            Ok(true)
        })?;
        for &id in &candidates {
            if found.len() < limit
                && last_event(store, id)?.is_some_and(|e| e.kind.is_terminal() && e.at < cutoff)
            {
                found.push(id);
            }
        }
        if !more {
            break;
        }
        after = candidates.last().copied();
    }
    Ok(found)
}

/// The last event of a saga, if it has any.
fn last_event<S: KvStore + ?Sized>(store: &S, id: SagaId) -> Result<Option<Event>, JournalError> {
    let mut last = None;
    // Decoded after the scan: a store may hold a lock while it visits, and
    // decoding may read a step snapshot.
    store.scan_rev(&codec::saga_key(EVENT, id), None, &mut |key, value| {
        last = Some((key.to_vec(), value.to_vec()));
        false
    })?;
    match last {
        Some((key, value)) => Ok(snapshots::decode_run(store, &key, &value)?.pop()),
        None => Ok(None),
    }
}

/// The key writes that remove the final sagas among `ids`, and which ones they
/// remove. Sagas unknown, not final, or changed earlier in this same batch
/// (`batch_summaries`) are left alone. `horizon` (the meta key
/// `horizon_key`: `archived_through` for retention, `moved_through` for a
/// move to the history tier) is raised to the highest removed offset.
pub fn removal_writes<S: KvStore + ?Sized>(
    store: &S,
    ids: &[SagaId],
    batch_summaries: &HashMap<SagaId, SagaSummary>,
    edited_entries: &mut offsets::EditedEntries,
    (horizon_key, horizon): (&[u8], &mut u64),
) -> Result<(Vec<KeyWrite>, Vec<SagaId>), JournalError> {
    let mut writes: Vec<KeyWrite> = Vec::new();
    let mut removed = Vec::new();
    let mut highest = *horizon;
    for &id in ids {
        if batch_summaries.contains_key(&id) || removed.contains(&id) {
            continue;
        }
        let summary_key = codec::saga_key(SUMMARY, id);
        let Some(value) = store.get(&summary_key)? else {
            continue; // unknown, or removed already
        };
        let summary: SagaSummary = codec::decode(&summary_key, &value)?;
        if !summary.status.is_final() {
            continue;
        }
        let events = store.scan(&codec::saga_key(EVENT, id))?;
        writes.push((summary_key, None));
        writes.push((codec::saga_key(UNFINISHED, id), None));
        for (key, value) in events {
            let runs = snapshots::decode_runs(store, &key, &value)?;
            // Each run has its pointer in the offset index, also inside a bundle.
            let firsts: Vec<u64> = runs.iter().map(|run| run[0].offset.get()).collect();
            writes.extend(offsets::unindex(store, &firsts, edited_entries)?);
            let run: Vec<Event> = runs.into_iter().flatten().collect();
            if let EventKind::SagaStarted {
                idempotency_key: Some(k),
                ..
            } = &run[0].kind
            {
                let key_key = codec::name_key(IDEMPOTENCY, k);
                let holder = store
                    .get(&key_key)?
                    .map(|v| codec::decode::<SagaId>(&key_key, &v))
                    .transpose()?;
                if holder == Some(id) {
                    writes.push((key_key, None));
                }
            }
            let last = run.last().map_or(run[0].offset, |e| e.offset).get();
            highest = highest.max(last);
            writes.push((key, None));
        }
        removed.push(id);
    }
    if removed.is_empty() {
        return Ok((Vec::new(), removed));
    }
    *horizon = highest;
    // First in the batch: see the module docs.
    writes.insert(
        0,
        (horizon_key.to_vec(), Some(highest.to_be_bytes().to_vec())),
    );
    Ok((writes, removed))
}
