//! Verifying a whole journal: every record's checksum, every saga's sequence and
//! fold, and every index entry against the events it derives from. Used by
//! `sagad journal check`; it reads, and reports every problem it finds instead
//! of stopping at the first.
//!
//! Sagas removed by retention leave no trace but holes in the offset index, all
//! at or below the archive horizon; the check holds the index to what the feed
//! (`read_after`) relies on: no hole above that horizon.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
};

use super::{
    codec::{
        self, EVENT, FAILED, FAILED_INDEX_KEY, IDEMPOTENCY, NEXT_OFFSET_KEY, OFFSET, PARTICIPANT,
        RunPointer, SUMMARY, UNFINISHED,
    },
    offsets, snapshots,
};
use crate::{
    journal::{JournalError, SagaSummary, store::KvStore},
    saga::{Event, EventKind, Participant, SagaId, SagaState, SagaStatus},
};

/// Problems listed in full before the rest are only counted.
const PROBLEMS_SHOWN: usize = 50;

/// What a check found.
#[derive(Debug, Default)]
pub struct CheckReport {
    pub sagas: usize,
    pub events: usize,
    pub participants: usize,
    /// The archive horizon: offsets at or below it may belong to removed sagas.
    pub archived_through: u64,
    /// Sagas by state name.
    pub by_state: BTreeMap<&'static str, usize>,
    /// Every problem, as "where: what".
    pub problems: Vec<String>,
}

impl CheckReport {
    /// True when nothing is damaged.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let states: Vec<String> = self
            .by_state
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect();
        writeln!(
            f,
            "sagas: {} ({}); events: {}; participants: {}",
            self.sagas,
            if states.is_empty() {
                "none".to_string()
            } else {
                states.join(", ")
            },
            self.events,
            self.participants
        )?;
        if self.archived_through > 0 {
            writeln!(
                f,
                "retention: sagas archived from the journal, offsets up to {} may be missing",
                self.archived_through
            )?;
        }
        if self.is_clean() {
            return writeln!(
                f,
                "journal OK: every record verified, every saga folds, indexes agree"
            );
        }
        writeln!(f, "journal DAMAGED: {} problem(s)", self.problems.len())?;
        for problem in self.problems.iter().take(PROBLEMS_SHOWN) {
            writeln!(f, "  {problem}")?;
        }
        if self.problems.len() > PROBLEMS_SHOWN {
            writeln!(f, "  … and {} more", self.problems.len() - PROBLEMS_SHOWN)?;
        }
        Ok(())
    }
}

/// Checks one pointer of the offset index against the events found.
fn check_pointer(
    first: u64,
    pointer: &RunPointer,
    offsets: &HashMap<u64, (SagaId, u64)>,
    archived: u64,
    indexed: &mut HashSet<u64>,
    report: &mut CheckReport,
) {
    let last = first + pointer.count.saturating_sub(1);
    if last <= archived && (first..=last).all(|o| !offsets.contains_key(&o)) {
        // A removed saga's pointer left in a bundle, as a build without the
        // rewrite hold (`overlay.rs`) could leave it: readers skip it like
        // any archived offset.
        return;
    }
    for i in 0..pointer.count {
        indexed.insert(first + i);
        if offsets.get(&(first + i)) != Some(&(pointer.saga, pointer.first_seq + i)) {
            report.problems.push(format!(
                "offset index entry {first}: points at event {} of saga {}, which does not have offset {}",
                pointer.first_seq + i,
                pointer.saga,
                first + i
            ));
        }
    }
}

/// Checks everything in `store`.
pub fn check<S: KvStore>(store: &S) -> Result<CheckReport, JournalError> {
    let mut report = CheckReport::default();

    // Events, grouped by saga (keys sort by saga, then seq).
    let mut histories: BTreeMap<SagaId, Vec<Event>> = BTreeMap::new();
    let mut max_offset = 0;
    // Offset → (saga, seq), to check the offset index against.
    let mut offsets: HashMap<u64, (SagaId, u64)> = HashMap::new();
    for (key, value) in store.scan(&[EVENT])? {
        let run = match snapshots::decode_run(store, &key, &value) {
            Ok(run) => run,
            Err(e) => {
                report.problems.push(e.to_string());
                continue;
            }
        };
        let history = histories.entry(run[0].saga).or_default();
        if run[0].seq != history.len() as u64 + 1 {
            report.problems.push(format!(
                "{}: follows {} events of the saga",
                codec::describe_key(&key),
                history.len()
            ));
        }
        for event in run {
            report.events += 1;
            if offsets
                .insert(event.offset, (event.saga, event.seq))
                .is_some()
            {
                report.problems.push(format!(
                    "{}: offset {} is used twice",
                    codec::describe_key(&key),
                    event.offset
                ));
            }
            max_offset = max_offset.max(event.offset);
            history.push(event);
        }
    }
    let mut states: HashMap<SagaId, SagaState> = HashMap::new();
    for (id, events) in &histories {
        match SagaState::fold(events) {
            Ok(state) => {
                *report.by_state.entry(state.status.as_str()).or_default() += 1;
                states.insert(*id, state);
            }
            Err(e) => report.problems.push(format!("saga {id}: {e}")),
        }
    }
    report.sagas = histories.len();

    // The global offset counter must be past every event.
    let mut next_offset = 1;
    match store.get(NEXT_OFFSET_KEY)? {
        Some(bytes) if bytes.len() == 8 => {
            let next = u64::from_be_bytes(bytes.as_slice().try_into().unwrap_or_default());
            next_offset = next;
            if report.events > 0 && next <= max_offset {
                report.problems.push(format!(
                    "next_offset is {next} but an event has offset {max_offset}"
                ));
            }
        }
        Some(bytes) => report.problems.push(format!(
            "next_offset: {} bytes where 8 were expected",
            bytes.len()
        )),
        None if report.events > 0 => report.problems.push("next_offset is missing".into()),
        None => {}
    }

    // Listing summaries: one per saga, with its current state.
    let mut summarised = HashSet::new();
    for (key, value) in store.scan(&[SUMMARY])? {
        match codec::decode::<SagaSummary>(&key, &value) {
            Ok(summary) => {
                summarised.insert(summary.id);
                match states.get(&summary.id) {
                    Some(state) if state.status != summary.status => report.problems.push(format!(
                        "saga {}: listed as {} but its events say {}",
                        summary.id,
                        summary.status.as_str(),
                        state.status.as_str()
                    )),
                    Some(_) => {}
                    None if histories.contains_key(&summary.id) => {}
                    None => report
                        .problems
                        .push(format!("saga {}: listed but has no events", summary.id)),
                }
            }
            Err(e) => report.problems.push(e.to_string()),
        }
    }
    for id in states.keys().filter(|id| !summarised.contains(id)) {
        report
            .problems
            .push(format!("saga {id}: has events but no listing entry"));
    }

    // The unfinished index: exactly the sagas that are not terminal.
    let mut unfinished = HashSet::new();
    for (key, _) in store.scan(&[UNFINISHED])? {
        match codec::saga_of_key(&key) {
            Ok(id) => {
                unfinished.insert(id);
            }
            Err(e) => report.problems.push(e.to_string()),
        }
    }
    for (id, state) in &states {
        match (state.status.is_terminal(), unfinished.contains(id)) {
            (false, false) => report.problems.push(format!(
                "saga {id}: {} but not in the unfinished index (it would never resume)",
                state.status.as_str()
            )),
            (true, true) => report.problems.push(format!(
                "saga {id}: {} but still in the unfinished index",
                state.status.as_str()
            )),
            _ => {}
        }
    }
    for id in unfinished.iter().filter(|id| !histories.contains_key(id)) {
        report.problems.push(format!(
            "saga {id}: in the unfinished index but has no events"
        ));
    }

    // The failed index, once built: exactly the FAILED sagas.
    if store.get(FAILED_INDEX_KEY)?.is_some() {
        let mut failed = HashSet::new();
        for (key, _) in store.scan(&[FAILED])? {
            match codec::saga_of_key(&key) {
                Ok(id) => {
                    failed.insert(id);
                }
                Err(e) => report.problems.push(e.to_string()),
            }
        }
        for (id, state) in &states {
            match (state.status == SagaStatus::Failed, failed.contains(id)) {
                (true, false) => report.problems.push(format!(
                    "saga {id}: FAILED but not in the failed index (a list of FAILED sagas misses it)"
                )),
                (false, true) => report.problems.push(format!(
                    "saga {id}: {} but in the failed index",
                    state.status.as_str()
                )),
                _ => {}
            }
        }
        for id in failed.iter().filter(|id| !histories.contains_key(id)) {
            report
                .problems
                .push(format!("saga {id}: in the failed index but has no events"));
        }
    }

    // Idempotency keys name sagas started with that key.
    for (key, value) in store.scan(&[IDEMPOTENCY])? {
        let name = String::from_utf8_lossy(&key[1..]).into_owned();
        match codec::decode::<SagaId>(&key, &value) {
            Ok(id) => {
                let started_with = histories.get(&id).and_then(|events| match &events[0].kind {
                    EventKind::SagaStarted {
                        idempotency_key, ..
                    } => idempotency_key.clone(),
                    _ => None,
                });
                if started_with.as_deref() != Some(name.as_str()) {
                    report.problems.push(format!(
                        "idempotency key '{name}': names saga {id}, which was not started with it"
                    ));
                }
            }
            Err(e) => report.problems.push(e.to_string()),
        }
    }

    // The offset index: one pointer per run of events (an entry holds one, or
    // a bundle of them).
    let horizon = offsets::archived_through(store);
    let archived = *horizon.as_ref().unwrap_or(&0);
    let mut indexed = HashSet::new();
    // The previous entry and the highest offset it holds: a reader looks for
    // an offset in the last entry at or before it, so an entry must hold
    // nothing at or past the next one's key.
    let mut previous: Option<(u64, u64)> = None;
    for (key, value) in store.scan(&[OFFSET])? {
        let entry = codec::offset_of_key(&key)
            .and_then(|at| Ok((at, codec::decode_pointers(&key, &value)?)));
        match entry {
            Ok((at, Some(pointers))) => {
                if let Some((before, reach)) = previous
                    && reach >= at
                {
                    report.problems.push(format!(
                        "offset index entry {before}: holds offsets up to {reach}, past entry {at}: the feed misses the events between (the events themselves are intact)"
                    ));
                }
                let mut reach = at;
                for (first, pointer) in pointers {
                    if first < at {
                        report.problems.push(format!(
                            "offset index entry {at}: holds offset {first}, before its own key: readers do not look for it there"
                        ));
                    }
                    reach = reach.max(first + pointer.count.saturating_sub(1));
                    check_pointer(first, &pointer, &offsets, archived, &mut indexed, &mut report);
                }
                previous = Some((at, reach));
            }
            Ok((first, None)) => report.problems.push(format!(
                "offset index entry {first}: of an earlier layout (opening the journal rebuilds the index)"
            )),
            Err(e) => report.problems.push(e.to_string()),
        }
    }
    // Above the archive horizon, every offset handed out is in the index.
    match horizon {
        Ok(horizon) => {
            report.archived_through = horizon;
            let mut present: Vec<u64> = indexed.iter().copied().filter(|o| *o > horizon).collect();
            present.sort_unstable();
            let mut expected = horizon + 1;
            for offset in present.into_iter().chain([next_offset.max(expected)]) {
                if offset > expected {
                    report.problems.push(format!(
                        "offset index: offsets {expected}..{offset} are missing above the archive horizon {horizon} (the feed stops there)"
                    ));
                }
                expected = offset + 1;
            }
        }
        Err(e) => report.problems.push(e.to_string()),
    }
    let mut unindexed: Vec<u64> = offsets
        .keys()
        .filter(|o| !indexed.contains(o))
        .copied()
        .collect();
    unindexed.sort_unstable();
    for offset in unindexed {
        let (saga, seq) = offsets[&offset];
        report.problems.push(format!(
            "event {seq} of saga {saga}: offset {offset} is missing from the offset index"
        ));
    }

    for (key, value) in store.scan(&[PARTICIPANT])? {
        report.participants += 1;
        if let Err(e) = codec::decode::<Participant>(&key, &value) {
            report.problems.push(e.to_string());
        }
    }

    // Step snapshots are named by the hash of their content.
    match snapshots::all(store) {
        Ok(all) => {
            for (id, steps) in all {
                if codec::snapshot_id(&codec::encode(&steps)) != id {
                    report.problems.push(format!(
                        "{}: its content does not match its id",
                        codec::describe_key(&codec::snapshot_key(id))
                    ));
                }
            }
        }
        Err(e) => report.problems.push(e.to_string()),
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Journal, MemoryJournal, conformance};

    #[tokio::test]
    async fn a_clean_journal_checks_clean_and_damage_is_named() {
        let journal = MemoryJournal::in_memory();
        let first = conformance::started("shop", Some("k"));
        let id = first.saga;
        journal.append(vec![first]).await.unwrap();
        let report = check(journal.store()).unwrap();
        assert!(report.is_clean(), "{report}");
        assert_eq!((report.sagas, report.events), (1, 1));

        // Damage one byte of the event and drop the unfinished index entry.
        let key = codec::event_key(id, 1);
        let mut value = journal.store().get(&key).unwrap().unwrap();
        let last = value.len() - 1;
        value[last] ^= 1;
        journal
            .store()
            .write(vec![
                (key, Some(value)),
                (codec::saga_key(UNFINISHED, id), None),
            ])
            .unwrap();
        let report = check(journal.store()).unwrap();
        assert!(!report.is_clean());
        let text = report.to_string();
        assert!(
            text.contains(&format!(
                "of saga {id} from event 1 is damaged: checksum mismatch"
            )),
            "{text}"
        );
        assert!(text.contains("listed but has no events"), "{text}");

        // An offset index entry that is gone is named too.
        let other = journal
            .append(vec![conformance::started("shop", None)])
            .await
            .unwrap();
        journal
            .store()
            .write(vec![(codec::offset_key(other[0].offset), None)])
            .unwrap();
        let text = check(journal.store()).unwrap().to_string();
        assert!(
            text.contains(&format!(
                "offset {} is missing from the offset index",
                other[0].offset
            )),
            "{text}"
        );
    }

    #[tokio::test]
    async fn removed_sagas_check_clean_and_holes_above_the_horizon_are_named() {
        let journal = MemoryJournal::in_memory();
        let history = conformance::cancelled("shop", Some("k"), EventKind::SagaCompensated);
        let id = history[0].saga;
        journal.append(history).await.unwrap();
        let other = journal
            .append(vec![conformance::started("shop", None)])
            .await
            .unwrap();
        assert_eq!(journal.remove_sagas(vec![id]).await.unwrap(), vec![id]);
        let report = check(journal.store()).unwrap();
        assert!(report.is_clean(), "{report}");
        assert_eq!((report.sagas, report.archived_through), (1, 4));
        assert!(report.to_string().contains("offsets up to 4"), "{report}");

        journal
            .store()
            .write(vec![(codec::offset_key(other[0].offset), None)])
            .unwrap();
        let text = check(journal.store()).unwrap().to_string();
        assert!(
            text.contains("offsets 5..6 are missing above the archive horizon 4"),
            "{text}"
        );
    }

    /// The shape a retention edit could leave before it wrote edited entries
    /// as bundles (`offsets::unindex`): a bundle reaching over the next entry.
    #[tokio::test]
    async fn an_index_bundle_reaching_past_the_next_entry_is_named() {
        let journal = MemoryJournal::in_memory();
        let mut pointers = Vec::new();
        for _ in 0..3 {
            let run = journal
                .append(vec![conformance::started("shop", None)])
                .await
                .unwrap();
            pointers.push((
                run[0].offset,
                RunPointer {
                    saga: run[0].saga,
                    first_seq: 1,
                    count: 1,
                },
            ));
        }
        assert!(check(journal.store()).unwrap().is_clean());
        // Offsets 1 and 3 bundled under 1, while 2 keeps its own entry.
        journal
            .store()
            .write(vec![
                (
                    codec::offset_key(1),
                    Some(codec::encode_pointer_bundle(&[pointers[0], pointers[2]])),
                ),
                (codec::offset_key(3), None),
            ])
            .unwrap();
        let text = check(journal.store()).unwrap().to_string();
        assert!(
            text.contains("offset index entry 1: holds offsets up to 3, past entry 2"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_failed_saga_missing_from_the_failed_index_is_named() {
        let journal = MemoryJournal::in_memory();
        let history = conformance::cancelled(
            "shop",
            None,
            EventKind::SagaFailed {
                reason: "gave up".into(),
            },
        );
        let id = history[0].saga;
        journal.append(history).await.unwrap();
        let report = check(journal.store()).unwrap();
        assert!(report.is_clean(), "{report}");

        journal
            .store()
            .write(vec![(codec::saga_key(FAILED, id), None)])
            .unwrap();
        let text = check(journal.store()).unwrap().to_string();
        assert!(
            text.contains(&format!("saga {id}: FAILED but not in the failed index")),
            "{text}"
        );
    }
}
