//! Verifying a whole journal: every record's checksum, every saga's sequence and
//! fold, and every index entry against the events it derives from. Used by
//! `sagad journal check`; it reads, and reports every problem it finds instead
//! of stopping at the first.
//!
//! Sagas removed by retention leave no trace but holes in the offset index, all
//! at or below the archive horizon; the check holds the index to what the feed
//! (`read_after`) relies on: no hole above that horizon. Sagas moved to the
//! history tier leave holes too, at or below the history horizon; there
//! [`check_with_history`] verifies each segment and holds the index and the
//! segments together to the same rule: every offset above the archive
//! horizon is in one or the other.
//!
//! [`check`] reads every event first ([`Histories`]), then holds each index
//! against them. An index's checker lives beside the code that keeps the
//! index: `by_status.rs` (unfinished, failed), `offsets.rs` (the offset
//! index), `snapshots.rs` (step snapshots); the rest (the offset counter,
//! listing entries, idempotency keys, participants) are checked here.

use std::collections::{BTreeMap, HashMap, HashSet};

use fixedbitset::FixedBitSet;

pub use self::report::CheckReport;
use self::report::Histories;
use super::{
    by_status,
    codec::{self, EVENT, IDEMPOTENCY, NEXT_OFFSET_KEY, PARTICIPANT, SUMMARY},
    offsets, snapshots,
};
use crate::{
    journal::{JournalError, SagaSummary, history::SharedTier, store::KvStore},
    saga::{EventKind, Participant, SagaId, SagaState},
};

pub(super) mod report;

/// Checks everything in `store` (holes below the history horizon are the
/// history tier's to fill: [`check_with_history`] checks that they are).
pub fn check<S: KvStore>(store: &S) -> Result<CheckReport, JournalError> {
    check_store(store).map(|(report, _)| report)
}

/// Checks everything in `store` and its history tier `history`: each
/// segment whole, and every offset between the archive and the history
/// horizons in the store's index or in a segment.
pub fn check_with_history<S: KvStore>(
    store: &S,
    history: &SharedTier,
) -> Result<CheckReport, JournalError> {
    let (mut report, indexed) = check_store(store)?;
    let archived = offsets::archived_through(store)?;
    let moved = offsets::moved_through(store)?;
    // One bit per offset in (archived, moved]: 60 MB at 50M W1 sagas, where
    // a set of them would be gigabytes.
    let span = moved.saturating_sub(archived) as usize;
    let mut held = FixedBitSet::with_capacity(span);
    let mut hold = |offset: u64| {
        if offset > archived && offset <= moved {
            held.insert((offset - archived - 1) as usize);
        }
    };
    indexed.into_iter().for_each(&mut hold);
    history.check(&mut |path, checked| {
        report.history_segments += 1;
        match checked {
            Ok(checked) => {
                report.history_sagas += checked.sagas;
                checked.offsets.into_iter().for_each(&mut hold);
            }
            Err(e) => report.problems.push(format!("{}: {e}", path.display())),
        }
    });
    for missing in missing_runs(&held) {
        let (first, last) = (
            archived + 1 + missing.start as u64,
            archived + missing.end as u64,
        );
        report.problems.push(format!(
            "offsets {first}..={last}: below the history horizon {moved}, but neither in the offset index nor in a segment of the history tier (the feed skips them)"
        ));
    }
    Ok(report)
}

/// The runs of unset bits in `held`.
fn missing_runs(held: &FixedBitSet) -> Vec<std::ops::Range<usize>> {
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    for bit in held.zeroes() {
        match runs.last_mut() {
            Some(run) if run.end == bit => run.end += 1,
            _ => runs.push(bit..bit + 1),
        }
    }
    runs
}

/// The store's checks, and the offsets its index holds.
fn check_store<S: KvStore>(store: &S) -> Result<(CheckReport, HashSet<u64>), JournalError> {
    let mut report = CheckReport::default();
    let histories = read_histories(store, &mut report)?;
    let next_offset = check_offset_counter(store, &histories, &mut report)?;
    check_listing(store, &histories, &mut report)?;
    by_status::check_unfinished_index(store, &histories, &mut report)?;
    by_status::check_failed_index(store, &histories, &mut report)?;
    check_idempotency_keys(store, &histories, &mut report)?;
    let indexed = offsets::check_index(store, &histories, next_offset, &mut report)?;
    check_participants(store, &mut report)?;
    snapshots::check_snapshots(store, &mut report);
    Ok((report, indexed))
}

/// Reads every event, grouped by saga (keys sort by saga, then seq), and
/// folds each saga's history.
fn read_histories<S: KvStore>(
    store: &S,
    report: &mut CheckReport,
) -> Result<Histories, JournalError> {
    let mut histories = Histories {
        events: BTreeMap::new(),
        states: HashMap::new(),
        offsets: HashMap::new(),
        max_offset: 0,
    };
    for (key, value) in store.scan(&[EVENT])? {
        let run = match snapshots::decode_run(store, &key, &value) {
            Ok(run) => run,
            Err(e) => {
                report.problems.push(e.to_string());
                continue;
            }
        };
        let history = histories.events.entry(run[0].saga).or_default();
        if run[0].seq != history.len() as u64 + 1 {
            report.problems.push(format!(
                "{}: follows {} events of the saga",
                codec::describe_key(&key),
                history.len()
            ));
        }
        for event in run {
            report.events += 1;
            if histories
                .offsets
                .insert(event.offset.get(), (event.saga, event.seq))
                .is_some()
            {
                report.problems.push(format!(
                    "{}: offset {} is used twice",
                    codec::describe_key(&key),
                    event.offset
                ));
            }
            histories.max_offset = histories.max_offset.max(event.offset.get());
            history.push(event);
        }
    }
    for (id, events) in &histories.events {
        match SagaState::fold(events) {
            Ok(state) => {
                *report.by_state.entry(state.status.as_str()).or_default() += 1;
                histories.states.insert(*id, state);
            }
            Err(e) => report.problems.push(format!("saga {id}: {e}")),
        }
    }
    report.sagas = histories.events.len();
    Ok(histories)
}

/// The global offset counter must be past every event; returns it (1 when
/// missing or unreadable).
fn check_offset_counter<S: KvStore>(
    store: &S,
    histories: &Histories,
    report: &mut CheckReport,
) -> Result<u64, JournalError> {
    let mut next_offset = 1;
    match store.get(NEXT_OFFSET_KEY)? {
        Some(bytes) if bytes.len() == 8 => {
            let next = u64::from_be_bytes(bytes.as_slice().try_into().unwrap_or_default());
            next_offset = next;
            if report.events > 0 && next <= histories.max_offset {
                report.problems.push(format!(
                    "next_offset is {next} but an event has offset {}",
                    histories.max_offset
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
    Ok(next_offset)
}

/// Listing summaries: one per saga, with its current state.
fn check_listing<S: KvStore>(
    store: &S,
    histories: &Histories,
    report: &mut CheckReport,
) -> Result<(), JournalError> {
    let mut summarised = HashSet::new();
    for (key, value) in store.scan(&[SUMMARY])? {
        match codec::decode::<SagaSummary>(&key, &value) {
            Ok(summary) => {
                summarised.insert(summary.id);
                match histories.states.get(&summary.id) {
                    Some(state) if state.status != summary.status => report.problems.push(format!(
                        "saga {}: listed as {} but its events say {}",
                        summary.id,
                        summary.status.as_str(),
                        state.status.as_str()
                    )),
                    Some(_) => {}
                    None if histories.events.contains_key(&summary.id) => {}
                    None => report
                        .problems
                        .push(format!("saga {}: listed but has no events", summary.id)),
                }
            }
            Err(e) => report.problems.push(e.to_string()),
        }
    }
    for id in histories
        .states
        .keys()
        .filter(|id| !summarised.contains(id))
    {
        report
            .problems
            .push(format!("saga {id}: has events but no listing entry"));
    }
    Ok(())
}

/// Idempotency keys name sagas started with that key.
fn check_idempotency_keys<S: KvStore>(
    store: &S,
    histories: &Histories,
    report: &mut CheckReport,
) -> Result<(), JournalError> {
    for (key, value) in store.scan(&[IDEMPOTENCY])? {
        let name = String::from_utf8_lossy(&key[1..]).into_owned();
        match codec::decode::<SagaId>(&key, &value) {
            Ok(id) => {
                let started_with =
                    histories
                        .events
                        .get(&id)
                        .and_then(|events| match &events[0].kind {
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
    Ok(())
}

/// Every participant record decodes.
fn check_participants<S: KvStore>(store: &S, report: &mut CheckReport) -> Result<(), JournalError> {
    for (key, value) in store.scan(&[PARTICIPANT])? {
        report.participants += 1;
        if let Err(e) = codec::decode::<Participant>(&key, &value) {
            report.problems.push(e.to_string());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{
        Journal, MemoryJournal,
        kv::codec::{FAILED, RunPointer, UNFINISHED},
    };
    use crate::testing;

    #[tokio::test]
    async fn a_clean_journal_checks_clean_and_damage_is_named() {
        let journal = MemoryJournal::in_memory();
        let first = testing::started("shop", Some("k"));
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
            .append(vec![testing::started("shop", None)])
            .await
            .unwrap();
        journal
            .store()
            .write(vec![(codec::offset_key(other[0].offset.get()), None)])
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
        let history = testing::cancelled("shop", Some("k"), EventKind::SagaCompensated);
        let id = history[0].saga;
        journal.append(history).await.unwrap();
        let other = journal
            .append(vec![testing::started("shop", None)])
            .await
            .unwrap();
        assert_eq!(journal.remove_sagas(vec![id]).await.unwrap(), vec![id]);
        let report = check(journal.store()).unwrap();
        assert!(report.is_clean(), "{report}");
        assert_eq!((report.sagas, report.archived_through), (1, 4));
        assert!(report.to_string().contains("offsets up to 4"), "{report}");

        journal
            .store()
            .write(vec![(codec::offset_key(other[0].offset.get()), None)])
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
                .append(vec![testing::started("shop", None)])
                .await
                .unwrap();
            pointers.push((
                run[0].offset.get(),
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
        let history = testing::cancelled(
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
