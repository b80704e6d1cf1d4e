//! Salvage: a whole, consistent journal rebuilt from what could be read of a
//! damaged one (`sagad journal salvage`). The store below handed over every
//! entry it could read, the keys it could not (`unknown`), and whether
//! batches were lost between it and the log (`store/salvage.rs`,
//! `store/wal/salvage.rs`); here that becomes the entries of a new store.
//!
//! The rule is that nothing is invented: a saga is carried into the new
//! journal only when its history reads whole, and then it is carried as it
//! was (its event records byte for byte, its events keeping their offsets);
//! everything derived from the events (listing entries, the unfinished and
//! failed indexes, idempotency keys, the offset index) is built again from
//! them, so the new journal's indexes agree with its events whatever was lost
//! of the old ones.
//!
//! A saga's history reads whole when its events run from seq 1 without a
//! hole, fold, and nothing that could still be read says it went further:
//! - its listing entry says the state its events end in;
//! - the offset index names no event of it beyond the last one read;
//! - the unfinished and failed indexes agree with that state;
//! - and, when batches were lost, it is final (COMPLETED or COMPENSATED:
//!   nothing changes it any more) or the log wrote it since the loss.
//!
//! Where an index could not be read it says nothing either way. A history
//! cut short, with every index that names the saga lost too, would pass:
//! that takes a damaged page in each of three places at once, where one
//! flipped byte damages one.
//!
//! Any other saga is *incomplete*: it is not carried, because resuming it
//! from an earlier state would repeat or undo what it already did
//! (participants see their calls again, a saga that compensated could go
//! forward). It is reported with why, and with the events that could be read,
//! for an operator to finish by hand. A saga named by an index whose events
//! are all gone is *lost*, and reported with what the index says. The
//! offsets of everything not carried are above the old archive horizon: the
//! horizon is raised over them, so the feed says "resume from here" instead
//! of handing out a journal with holes.

use std::collections::{BTreeMap, BTreeSet, HashMap};

pub use self::report::{Incomplete, LostSaga, SalvageReport};
use super::{
    by_status,
    codec::{
        self, ARCHIVED_THROUGH_KEY, EVENT, FAILED, FAILED_INDEX_KEY, IDEMPOTENCY,
        MOVED_THROUGH_KEY, NEXT_OFFSET_KEY, OFFSET, PARTICIPANT, SNAPSHOT, SUMMARY, UNFINISHED,
    },
    offsets, snapshots,
};
use crate::{
    journal::{
        JournalError, SagaSummary,
        store::{KeyWrite, KvStore},
    },
    saga::{Event, EventKind, Participant, SagaId, SagaState, StepSpec},
};

mod report;

/// What the store below knows about the entries it handed over.
pub struct Provenance<'a> {
    /// Whether a key lies where the damaged store could not be read: it may
    /// have existed.
    pub unknown: &'a dyn Fn(&[u8]) -> bool,
    /// When batches between the store and the log were lost (or may have
    /// been): why, and every key the log wrote since.
    pub lost_batches: Option<(String, &'a BTreeSet<Vec<u8>>)>,
    /// The highest offset of any history segment not carried (0 for none,
    /// `u64::MAX` when a lost one's footer could not say): the feed skips
    /// its sagas' offsets from now on, as an archived saga's.
    pub history_lost_through: u64,
}

/// The new store's entries, and what could not be carried into it.
pub struct Salvaged {
    /// Every key write of the new store, in key order.
    pub writes: Vec<KeyWrite>,
    pub report: SalvageReport,
}

/// One `e` record that decodes.
struct EventRecord {
    key: Vec<u8>,
    value: Vec<u8>,
    /// Its runs (one, or a bundle's).
    runs: Vec<Vec<Event>>,
}

/// Everything read of one saga, from its records and every index.
#[derive(Default)]
struct Found {
    /// Its event records that decode, by first seq.
    records: Vec<EventRecord>,
    /// Why records of it did not decode.
    damaged: Vec<String>,
    summary: Option<SagaSummary>,
    unfinished: bool,
    failed: bool,
    /// The highest seq the offset index names.
    indexed_to: u64,
    /// Idempotency keys that name it.
    keys: Vec<String>,
}

/// Which indexes name a saga, for the report of a lost one.
fn named_by(found: &Found) -> Vec<&'static str> {
    let mut names = Vec::new();
    if found.summary.is_some() {
        names.push("listing");
    }
    if found.unfinished {
        names.push("unfinished index");
    }
    if found.failed {
        names.push("failed index");
    }
    if !found.keys.is_empty() {
        names.push("idempotency key");
    }
    if found.indexed_to > 0 {
        names.push("offset index");
    }
    names
}

/// Rebuilds a journal from `store` (what a salvage read), see the module docs.
pub fn salvage<S: KvStore>(
    store: &S,
    provenance: &Provenance<'_>,
) -> Result<Salvaged, JournalError> {
    let unknown = provenance.unknown;
    let mut report = SalvageReport::default();
    let mut writes: Vec<KeyWrite> = Vec::new();
    let mut sagas: BTreeMap<SagaId, Found> = BTreeMap::new();
    let mut max_offset = 0;

    for (key, value) in store.scan(&[EVENT])? {
        let id = match codec::saga_of_key(&key) {
            Ok(id) => id,
            Err(e) => {
                report.problems.push(e.to_string());
                continue;
            }
        };
        let found = sagas.entry(id).or_default();
        match codec::decode_runs(&key, &value, &|id| steps(store, unknown, id)) {
            Ok(runs) => {
                for event in runs.iter().flatten() {
                    max_offset = max_offset.max(event.offset.get());
                }
                found.records.push(EventRecord { key, value, runs });
            }
            Err(e) => found.damaged.push(e.to_string()),
        }
    }
    for (key, value) in store.scan(&[SUMMARY])? {
        match codec::decode::<SagaSummary>(&key, &value) {
            Ok(summary) => {
                let id = summary.id;
                sagas.entry(id).or_default().summary = Some(summary);
            }
            // Rebuilt from the events anyway: the saga is judged without it.
            Err(e) => report.problems.push(e.to_string()),
        }
    }
    for (prefix, set) in [(UNFINISHED, true), (FAILED, false)] {
        for (key, _) in store.scan(&[prefix])? {
            match codec::saga_of_key(&key) {
                Ok(id) if set => sagas.entry(id).or_default().unfinished = true,
                Ok(id) => sagas.entry(id).or_default().failed = true,
                Err(e) => report.problems.push(e.to_string()),
            }
        }
    }
    for (key, value) in store.scan(&[IDEMPOTENCY])? {
        let name = String::from_utf8_lossy(&key[1..]).into_owned();
        match codec::decode::<SagaId>(&key, &value) {
            Ok(id) => sagas.entry(id).or_default().keys.push(name),
            Err(e) => report.problems.push(e.to_string()),
        }
    }
    for (key, value) in store.scan(&[OFFSET])? {
        match codec::decode_pointers(&key, &value) {
            Ok(pointers) => {
                for (offset, pointer) in pointers.unwrap_or_default() {
                    let last = pointer.first_seq + pointer.count.saturating_sub(1);
                    let found = sagas.entry(pointer.saga).or_default();
                    found.indexed_to = found.indexed_to.max(last);
                    max_offset = max_offset.max(offset + pointer.count.saturating_sub(1));
                }
            }
            Err(e) => report.problems.push(e.to_string()),
        }
    }
    for (key, value) in store.scan(&[PARTICIPANT])? {
        match codec::decode::<Participant>(&key, &value) {
            Ok(_) => {
                report.participants += 1;
                writes.push((key, Some(value)));
            }
            Err(e) => report.problems.push(e.to_string()),
        }
    }
    for (key, value) in store.scan(&[SNAPSHOT])? {
        match codec::decode::<Vec<StepSpec>>(&key, &value) {
            Ok(_) => writes.push((key, Some(value))),
            Err(e) => report.problems.push(e.to_string()),
        }
    }
    if unknown(&[PARTICIPANT]) || unknown(&[PARTICIPANT, 0xff]) {
        report.problems.push(
            "participants may be missing (their records lie where the store could not be read): register them again".into(),
        );
    }

    let failed_index_built = store.get(FAILED_INDEX_KEY)?.is_some();
    let mut offsets_used = Vec::new();
    let mut key_owner: HashMap<String, SagaId> = HashMap::new();
    for (id, found) in sagas {
        let history = match read_history(&found) {
            Ok(events) => events,
            Err((why, prefix)) => {
                report.note_incomplete(id, why, prefix, found.summary.as_ref());
                continue;
            }
        };
        if history.is_empty() {
            if !found.damaged.is_empty() {
                let why = found.damaged.join("; ");
                report.note_incomplete(id, why, Vec::new(), found.summary.as_ref());
            } else {
                report.lost.push(LostSaga {
                    id,
                    named_by: named_by(&found),
                    summary: found.summary.clone(),
                });
            }
            continue;
        }
        let state = match SagaState::fold(&history) {
            Ok(state) => state,
            Err(e) => {
                report.note_incomplete(
                    id,
                    format!("its events do not fold: {e}"),
                    Vec::new(),
                    found.summary.as_ref(),
                );
                continue;
            }
        };
        if let Some(why) =
            contradiction(id, &found, &state, &history, provenance, failed_index_built)
        {
            report.note_incomplete(id, why, history, found.summary.as_ref());
            continue;
        }
        if let Some(key) = &state.idempotency_key {
            let taken_by = store
                .get(&codec::name_key(IDEMPOTENCY, key))?
                .and_then(|v| codec::decode::<SagaId>(&codec::name_key(IDEMPOTENCY, key), &v).ok());
            if taken_by.is_some_and(|other| other != id) || key_owner.contains_key(key) {
                report.note_incomplete(
                    id,
                    format!("its idempotency key '{key}' names another saga"),
                    history,
                    found.summary.as_ref(),
                );
                continue;
            }
            key_owner.insert(key.clone(), id);
        }
        writes.extend(saga_writes(id, &found, &state, &history));
        offsets_used.extend(history.iter().map(|e| e.offset.get()));
        report.carry(&state, history.len());
    }

    let stored_next = store
        .get(NEXT_OFFSET_KEY)?
        .and_then(|v| codec::decode_u64(NEXT_OFFSET_KEY, &v).ok());
    let next_offset = stored_next.unwrap_or(1).max(max_offset + 1);
    let old_horizon = offsets::archived_through(store).unwrap_or(0);
    // Below the history horizon, the history tier (copied whole, and
    // checked on its own) holds the events the store lacks.
    let moved = offsets::moved_through(store).unwrap_or(0);
    offsets_used.sort_unstable();
    report.lost_offsets = holes(&offsets_used, old_horizon.max(moved), next_offset);
    let horizon = report
        .lost_offsets
        .last()
        .map_or(old_horizon, |(_, last)| old_horizon.max(*last))
        .max(provenance.history_lost_through.min(moved));
    report.archived_through = (old_horizon, horizon);
    report.next_offset = next_offset;
    if stored_next.is_none() && unknown(NEXT_OFFSET_KEY) {
        report.problems.push(format!(
            "the offset counter could not be read: rebuilt as {next_offset}, past every offset still named"
        ));
    }
    writes.push((
        NEXT_OFFSET_KEY.to_vec(),
        Some(next_offset.to_be_bytes().to_vec()),
    ));
    if horizon > 0 {
        writes.push((
            ARCHIVED_THROUGH_KEY.to_vec(),
            Some(horizon.to_be_bytes().to_vec()),
        ));
    }
    if moved > 0 {
        writes.push((
            MOVED_THROUGH_KEY.to_vec(),
            Some(moved.to_be_bytes().to_vec()),
        ));
    }
    writes.push((FAILED_INDEX_KEY.to_vec(), Some(Vec::new())));
    writes.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Salvaged { writes, report })
}

/// The steps of snapshot `id`, for decoding a run: said plainly when the
/// snapshot lies where the store could not be read, as every saga started
/// with it then lacks its steps.
fn steps<S: KvStore>(
    store: &S,
    unknown: &dyn Fn(&[u8]) -> bool,
    id: u64,
) -> Result<Vec<StepSpec>, JournalError> {
    let key = codec::snapshot_key(id);
    match store.get(&key)? {
        None if unknown(&key) => Err(JournalError::Corrupt {
            key: codec::describe_key(&key),
            why: "it could not be read, and the steps of the sagas started with it are kept only there"
                .into(),
        }),
        _ => snapshots::read(store, id),
    }
}

/// A saga's events from seq 1, from its records in key order; a record
/// that repeats events already read (a log batch laid over the checkpoint
/// that bundled it) is left out. `Err` with why and the events read before
/// when they do not run whole.
fn read_history(found: &Found) -> Result<Vec<Event>, (String, Vec<Event>)> {
    let mut events: Vec<Event> = Vec::new();
    for EventRecord { runs, .. } in &found.records {
        let record: Vec<&Event> = runs.iter().flatten().collect();
        let (first, last) = (record[0].seq, record[record.len() - 1].seq);
        let have = events.len() as u64;
        if first == have + 1 {
            events.extend(record.into_iter().cloned());
        } else if last <= have && record.iter().all(|e| events[(e.seq - 1) as usize] == **e) {
            continue;
        } else if first <= have {
            return Err((
                format!("records of events {first}..={last} overlap others that differ"),
                events,
            ));
        } else {
            return Err((
                format!("events {}..={} are missing", have + 1, first - 1),
                events,
            ));
        }
    }
    if !found.damaged.is_empty() && !events.is_empty() {
        return Err((found.damaged.join("; "), events));
    }
    Ok(events)
}

/// Why what could still be read says the saga went beyond its events
/// (see the module docs), if it does.
fn contradiction(
    id: SagaId,
    found: &Found,
    state: &SagaState,
    history: &[Event],
    provenance: &Provenance<'_>,
    failed_index_built: bool,
) -> Option<String> {
    let unknown = provenance.unknown;
    let status = state.status;
    match &found.summary {
        Some(summary) if summary.status != status => {
            return Some(format!(
                "it is listed as {} but its events read end {}: its last events are lost",
                summary.status.as_str(),
                status.as_str()
            ));
        }
        None if !unknown(&codec::saga_key(SUMMARY, id)) => {
            return Some("it has no listing entry".into());
        }
        _ => {}
    }
    let read = history.len() as u64;
    if found.indexed_to > read {
        return Some(format!(
            "the offset index names its events up to {}, and {read} read",
            found.indexed_to
        ));
    }
    if found.unfinished == status.is_terminal() && !unknown(&codec::saga_key(UNFINISHED, id)) {
        return Some(format!(
            "the unfinished index disagrees with its events (which end {})",
            status.as_str()
        ));
    }
    let is_failed = status == crate::saga::SagaStatus::Failed;
    if failed_index_built && found.failed != is_failed && !unknown(&codec::saga_key(FAILED, id)) {
        return Some(format!(
            "the failed index disagrees with its events (which end {})",
            status.as_str()
        ));
    }
    if let Some((why, written)) = &provenance.lost_batches
        && !status.is_final()
        && !found.records.iter().any(|r| written.contains(&r.key))
    {
        return Some(format!(
            "it is {} and may have gone on in the batches lost ({why})",
            status.as_str()
        ));
    }
    None
}

/// The new store's writes for a carried saga: its records as they were,
/// and every index entry built from its events.
fn saga_writes(id: SagaId, found: &Found, state: &SagaState, history: &[Event]) -> Vec<KeyWrite> {
    let mut writes = Vec::new();
    let mut kept_to = 0;
    for EventRecord { key, value, runs } in &found.records {
        // The records `read_history` read the events from, not the repeats.
        if runs[0][0].seq != kept_to + 1 {
            continue;
        }
        for run in runs {
            writes.push(offsets::index_entry(run));
            kept_to = run[run.len() - 1].seq;
        }
        writes.push((key.clone(), Some(value.clone())));
    }
    let definition = match &history[0].kind {
        EventKind::SagaStarted { definition, .. } => definition.clone(),
        _ => state.definition.clone(),
    };
    let summary = SagaSummary {
        id,
        status: state.status,
        definition,
        created_at: history[0].at,
    };
    writes.push((codec::saga_key(SUMMARY, id), Some(codec::encode(&summary))));
    if !state.status.is_terminal() {
        writes.push((codec::saga_key(UNFINISHED, id), Some(Vec::new())));
    }
    writes.extend(by_status::failed_index_write(id, None, state.status));
    if let Some(key) = &state.idempotency_key {
        writes.push((codec::name_key(IDEMPOTENCY, key), Some(codec::encode(&id))));
    }
    writes
}

/// The offsets above `horizon` and below `next` that no carried event has,
/// as inclusive ranges; `used` is sorted.
fn holes(used: &[u64], horizon: u64, next: u64) -> Vec<(u64, u64)> {
    let mut holes = Vec::new();
    let mut expected = horizon + 1;
    for &offset in used.iter().filter(|o| **o > horizon) {
        if offset > expected {
            holes.push((expected, offset - 1));
        }
        expected = expected.max(offset + 1);
    }
    if expected < next {
        holes.push((expected, next - 1));
    }
    holes
}

#[cfg(test)]
mod tests;
