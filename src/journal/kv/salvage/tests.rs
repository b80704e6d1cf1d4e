use std::collections::BTreeSet;

use super::*;
use crate::journal::{
    Journal, MemoryJournal, check,
    store::{MemoryStore, lend},
};
use crate::saga::{Offset, SagaStatus};
use crate::testing::{self, attempt, next, started};

/// A journal of four sagas: one completed (with an idempotency key), one
/// running, one failed, one compensated; each appended a run at a time.
async fn journal() -> (MemoryJournal, Vec<SagaId>) {
    let journal = MemoryJournal::in_memory();
    let completed = testing::completing(Some("order-1"), 0);
    let running = started("shop", Some("order-2"));
    let failed = testing::cancelled(
        "shop",
        None,
        EventKind::SagaFailed {
            reason: "gave up".into(),
        },
    );
    let compensated = testing::cancelled("shop", None, EventKind::SagaCompensated);
    let ids = vec![
        completed[0].saga,
        running.saga,
        failed[0].saga,
        compensated[0].saga,
    ];
    for event in completed {
        journal.append(vec![event]).await.unwrap();
    }
    let id = running.saga;
    journal.append(vec![running]).await.unwrap();
    journal.append(vec![next(id, 2, attempt(1))]).await.unwrap();
    journal.append(failed).await.unwrap();
    journal.append(compensated).await.unwrap();
    (journal, ids)
}

fn nothing_unknown(_: &[u8]) -> bool {
    false
}

/// The salvaged writes as a journal, checked clean.
fn reopened(salvaged: &Salvaged) -> MemoryJournal {
    let store = MemoryStore::default();
    store.write_ordered(&mut lend(&salvaged.writes)).unwrap();
    let journal = MemoryJournal::new(store).unwrap();
    let report = check::check(journal.store()).unwrap();
    assert!(report.is_clean(), "{report}");
    journal
}

#[tokio::test]
async fn an_intact_journal_is_carried_whole_with_its_offsets() {
    let (journal, ids) = journal().await;
    let before = journal.read_after(Offset(0), 100).await.unwrap();
    let provenance = Provenance {
        unknown: &nothing_unknown,
        lost_batches: None,
        history_lost_through: 0,
    };
    let salvaged = salvage(journal.store(), &provenance).unwrap();
    let report = &salvaged.report;
    assert!(report.is_lossless(), "{report}");
    assert_eq!(report.sagas, 4);
    assert_eq!(report.events, before.len());
    let copy = reopened(&salvaged);
    assert_eq!(copy.read_after(Offset(0), 100).await.unwrap(), before);
    for id in ids {
        assert_eq!(
            copy.read_saga(id).await.unwrap(),
            journal.read_saga(id).await.unwrap()
        );
    }
    assert_eq!(
        copy.unfinished().await.unwrap(),
        journal.unfinished().await.unwrap()
    );
    assert!(copy.saga_for_key("order-1").await.unwrap().is_some());
    // The new journal goes on where the old one stopped.
    let more = copy.append(vec![started("shop", None)]).await.unwrap();
    assert_eq!(more[0].offset.get(), before.len() as u64 + 1);
}

#[tokio::test]
async fn a_saga_whose_records_are_unreadable_is_lost_and_its_offsets_go_under_the_horizon() {
    let (journal, ids) = journal().await;
    let running = ids[1];
    // Both records of the running saga were in a page that cannot be read.
    let prefix = codec::saga_key(EVENT, running);
    let gone: Vec<KeyWrite> = journal
        .store()
        .scan(&prefix)
        .unwrap()
        .into_iter()
        .map(|(key, _)| (key, None))
        .collect();
    assert_eq!(gone.len(), 2);
    journal.store().write(gone).unwrap();
    let unknown = move |key: &[u8]| key.starts_with(&prefix);
    let provenance = Provenance {
        unknown: &unknown,
        lost_batches: None,
        history_lost_through: 0,
    };
    let salvaged = salvage(journal.store(), &provenance).unwrap();
    let report = &salvaged.report;
    assert_eq!(report.sagas, 3, "{report}");
    assert_eq!(report.lost.len(), 1, "{report}");
    assert_eq!(report.lost[0].id, running);
    assert_eq!(
        report.lost[0].summary.as_ref().map(|s| s.status),
        Some(SagaStatus::Running)
    );
    // Offsets 5 and 6 were the running saga's; 7 on are kept.
    assert_eq!(report.lost_offsets, vec![(5, 6)]);
    assert_eq!(report.archived_through, (0, 6));
    let text = report.to_string();
    assert!(
        text.contains(&format!("saga {running} (listed as RUNNING")),
        "{text}"
    );
    let copy = reopened(&salvaged);
    assert!(copy.read_saga(running).await.unwrap().is_empty());
    assert!(copy.unfinished().await.unwrap().is_empty());
    assert_eq!(
        copy.saga_for_key("order-2").await.unwrap(),
        None,
        "free again"
    );
    let feed = copy.read_after(Offset(0), 100).await.unwrap();
    assert!(feed.iter().all(|e| e.saga != running));
    assert_eq!(copy.archived_through().await.unwrap(), Offset(6));
}

#[tokio::test]
async fn a_saga_cut_short_is_not_carried_and_keeps_its_readable_events() {
    let (journal, ids) = journal().await;
    let running = ids[1];
    // Its second record is gone; its listing entry and index still read.
    journal
        .store()
        .write(vec![(codec::event_key(running, 2), None)])
        .unwrap();
    let provenance = Provenance {
        unknown: &nothing_unknown,
        lost_batches: None,
        history_lost_through: 0,
    };
    let salvaged = salvage(journal.store(), &provenance).unwrap();
    let report = &salvaged.report;
    assert_eq!(report.incomplete.len(), 1, "{report}");
    let cut = &report.incomplete[0];
    assert_eq!(cut.id, running);
    assert_eq!(cut.events.len(), 1, "its first event reads");
    assert!(
        cut.why.contains("offset index names its events up to 2"),
        "{}",
        cut.why
    );
    assert_eq!(report.lost_offsets, vec![(5, 6)]);
    let copy = reopened(&salvaged);
    assert!(copy.read_saga(running).await.unwrap().is_empty());
}

#[tokio::test]
async fn after_lost_batches_only_final_sagas_and_those_written_since_are_carried() {
    let (journal, ids) = journal().await;
    let written: BTreeSet<Vec<u8>> = BTreeSet::new();
    let provenance = Provenance {
        unknown: &nothing_unknown,
        lost_batches: Some(("batches 9..=12".into(), &written)),
        history_lost_through: 0,
    };
    let salvaged = salvage(journal.store(), &provenance).unwrap();
    let report = &salvaged.report;
    // The completed and compensated sagas cannot have changed; the running
    // and the failed one (an operator may have retried it) may have.
    assert_eq!(report.sagas, 2, "{report}");
    let not: BTreeSet<SagaId> = report.incomplete.iter().map(|i| i.id).collect();
    assert_eq!(not, BTreeSet::from([ids[1], ids[2]]));
    assert!(
        report.incomplete[0].why.contains("batches 9..=12"),
        "{report}"
    );

    // The log wrote the running saga's last record after the loss: current.
    let written = BTreeSet::from([codec::event_key(ids[1], 2)]);
    let provenance = Provenance {
        unknown: &nothing_unknown,
        lost_batches: Some(("batches 9..=12".into(), &written)),
        history_lost_through: 0,
    };
    let salvaged = salvage(journal.store(), &provenance).unwrap();
    assert_eq!(salvaged.report.sagas, 3, "{}", salvaged.report);
}

#[test]
fn holes_are_the_offsets_above_the_horizon_without_an_event() {
    assert_eq!(holes(&[1, 2, 3], 0, 4), vec![]);
    assert_eq!(holes(&[2, 3, 7], 0, 9), vec![(1, 1), (4, 6), (8, 8)]);
    assert_eq!(holes(&[2, 3, 7], 3, 8), vec![(4, 6)]);
}
