//! The conformance suite every [`Journal`] must pass. Each implementation runs
//! it with `journal_conformance!(make)` where `make` builds a fresh journal.

use std::{sync::Arc, time::Duration};

use super::{Journal, JournalError, ListQuery};
use crate::{
    saga::{
        Action, Event, EventKind, Offset, Participant, RetryOverrides, SagaId, SagaStatus,
        Timestamp,
    },
    testing::{attempt, completing, next, started, turning_back},
};

/// Instantiates the suite as `#[tokio::test]`s, given an expression that builds a
/// fresh `(Arc<dyn Journal>, guard)`; the guard (a temp dir, say) lives as long as
/// the test. `journal_conformance!(async make())` takes a future of that pair
/// instead, awaited inside each test's runtime (a journal in a database is
/// opened with a connection, which belongs to the runtime that made it).
#[macro_export]
macro_rules! journal_conformance {
    (@suite $make:block) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance_append_read_and_offsets() {
            let (journal, _guard) = $make;
            $crate::journal::conformance::append_read_and_offsets(journal).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance_per_saga_order_under_concurrency() {
            let (journal, _guard) = $make;
            $crate::journal::conformance::per_saga_order_under_concurrency(journal).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance_concurrent_appends_share_flushes() {
            let (journal, _guard) = $make;
            $crate::journal::conformance::concurrent_appends_share_flushes(journal).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance_idempotency_keys_are_unique() {
            let (journal, _guard) = $make;
            $crate::journal::conformance::idempotency_keys_are_unique(journal).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance_indexes_follow_events() {
            let (journal, _guard) = $make;
            $crate::journal::conformance::indexes_follow_events(journal).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance_scheduled_sagas_are_unfinished_until_they_end() {
            let (journal, _guard) = $make;
            $crate::journal::conformance::scheduled_sagas_are_unfinished_until_they_end(journal)
                .await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance_participants_are_replaced_by_name() {
            let (journal, _guard) = $make;
            $crate::journal::conformance::participants_are_replaced_by_name(journal).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance_read_after_follows_offsets() {
            let (journal, _guard) = $make;
            $crate::journal::conformance::read_after_follows_offsets(journal).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance_retention_removes_only_final_sagas() {
            let (journal, _guard) = $make;
            $crate::journal::conformance::retention_removes_only_final_sagas(journal).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance_read_after_skips_removed_sagas() {
            let (journal, _guard) = $make;
            $crate::journal::conformance::read_after_skips_removed_sagas(journal).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance_reads_during_removals_see_whole_sagas_or_none() {
            let (journal, _guard) = $make;
            $crate::journal::conformance::reads_during_removals_see_whole_sagas_or_none(journal)
                .await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance_close_refuses_later_writes() {
            let (journal, _guard) = $make;
            $crate::journal::conformance::close_refuses_later_writes(journal).await;
        }
    };
    (async $make:expr) => {
        $crate::journal_conformance!(@suite { $make.await });
    };
    ($make:expr) => {
        $crate::journal_conformance!(@suite { $make });
    };
}

pub async fn append_read_and_offsets(journal: Arc<dyn Journal>) {
    let first = started("shop", None);
    let id = first.saga;
    let a = journal
        .append(vec![first.clone(), next(id, 2, attempt(1))])
        .await
        .unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(
        a[1].offset,
        a[0].offset + 1,
        "offsets within an append are consecutive"
    );
    let b = journal
        .append(vec![next(
            id,
            3,
            EventKind::CancelRequested {
                reason: "x".into(),
                by: None,
            },
        )])
        .await
        .unwrap();
    assert_eq!(
        b[0].offset,
        a[1].offset + 1,
        "offsets across appends are gap-free"
    );

    let read = journal.read_saga(id).await.unwrap();
    let seqs: Vec<u64> = read.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(read[0].kind, first.kind);
    assert_eq!(
        read[2].offset, b[0].offset,
        "offsets are stored with the events"
    );
    assert!(
        journal
            .read_saga(SagaId::generate())
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn per_saga_order_under_concurrency(journal: Arc<dyn Journal>) {
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let journal = journal.clone();
        tasks.push(tokio::spawn(async move {
            let first = started("shop", None);
            let id = first.saga;
            journal.append(vec![first]).await.unwrap();
            for seq in 2..=20u64 {
                let kind = if seq % 2 == 0 {
                    attempt(seq as u32 / 2)
                } else {
                    EventKind::AttemptFailed {
                        step: 0,
                        action: Action::Forward,
                        attempt: seq as u32 / 2,
                        failure: crate::saga::Failure::Transient,
                        error: "e".into(),
                        retry_at: Some(Timestamp::now()),
                    }
                };
                journal.append(vec![next(id, seq, kind)]).await.unwrap();
            }
            id
        }));
    }
    let mut all_offsets = Vec::new();
    for task in tasks {
        let id = task.await.unwrap();
        let events = journal.read_saga(id).await.unwrap();
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=20).collect::<Vec<_>>(), "saga {id}");
        assert!(
            events.windows(2).all(|w| w[0].offset < w[1].offset),
            "offsets follow seq"
        );
        // The history must fold: nothing reordered or lost.
        crate::saga::SagaState::fold(&events).unwrap();
        all_offsets.extend(events.iter().map(|e| e.offset));
    }
    all_offsets.sort_unstable();
    let first = all_offsets[0];
    assert!(
        all_offsets
            .iter()
            .enumerate()
            .all(|(i, o)| *o == first + i as u64),
        "global offsets are gap-free and unique"
    );
}

pub async fn concurrent_appends_share_flushes(journal: Arc<dyn Journal>) {
    let before = journal.stats();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let journal = journal.clone();
        tasks.push(tokio::spawn(async move {
            let first = started("shop", None);
            let id = first.saga;
            journal.append(vec![first]).await.unwrap();
            journal.append(vec![next(id, 2, attempt(1))]).await.unwrap();
            let done = EventKind::AttemptSucceeded {
                step: 0,
                action: Action::Forward,
                attempt: 1,
                output: vec![],
            };
            journal
                .append(vec![
                    next(id, 3, done),
                    next(id, 4, EventKind::SagaCompleted),
                ])
                .await
                .unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let after = journal.stats();
    let requests = after.requests - before.requests;
    let flushes = after.flushes - before.flushes;
    assert_eq!(requests, 64 * 3, "every acknowledged append is counted");
    assert_eq!(after.events - before.events, 64 * 4);
    assert!(
        flushes * 2 <= requests,
        "64 concurrent appenders must share flushes: {flushes} flushes for {requests} appends"
    );
}

pub async fn idempotency_keys_are_unique(journal: Arc<dyn Journal>) {
    let first = started("shop", Some("order-17"));
    let id = first.saga;
    journal.append(vec![first]).await.unwrap();
    assert_eq!(journal.saga_for_key("order-17").await.unwrap(), Some(id));
    assert_eq!(journal.saga_for_key("order-18").await.unwrap(), None);

    let second = started("shop", Some("order-17"));
    let err = journal.append(vec![second.clone()]).await.unwrap_err();
    assert!(
        matches!(&err, JournalError::IdempotencyConflict { existing, .. } if *existing == id),
        "{err}"
    );
    assert!(
        journal.read_saga(second.saga).await.unwrap().is_empty(),
        "a refused append writes nothing"
    );

    // Racing starts with one key: exactly one wins, even within one batch.
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let journal = journal.clone();
        tasks.push(tokio::spawn(async move {
            journal.append(vec![started("shop", Some("race"))]).await
        }));
    }
    let mut winners = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => winners += 1,
            Err(JournalError::IdempotencyConflict { .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(winners, 1);
}

pub async fn indexes_follow_events(journal: Arc<dyn Journal>) {
    let mut ids = Vec::new();
    for definition in ["shop", "shop", "refund", "shop"] {
        let e = started(definition, None);
        ids.push(e.saga);
        journal.append(vec![e]).await.unwrap();
    }
    let unfinished = journal.unfinished().await.unwrap();
    assert!(ids.iter().all(|id| unfinished.contains(id)));

    // ids[0]: compensating then failed, then retried; ids[1]: completed.
    let reason = || "r".to_string();
    journal
        .append(vec![next(
            ids[0],
            2,
            EventKind::CompensationStarted { reason: reason() },
        )])
        .await
        .unwrap();
    journal
        .append(vec![
            next(ids[1], 2, attempt(1)),
            next(ids[1], 3, EventKind::SagaCompleted),
        ])
        .await
        .unwrap();
    journal
        .append(vec![next(
            ids[0],
            3,
            EventKind::SagaFailed { reason: reason() },
        )])
        .await
        .unwrap();
    let unfinished = journal.unfinished().await.unwrap();
    assert!(!unfinished.contains(&ids[0]) && !unfinished.contains(&ids[1]));
    assert!(unfinished.contains(&ids[2]) && unfinished.contains(&ids[3]));

    let ids_ref = &ids;
    let journal_ref = &journal;
    let list = |query: ListQuery| async move {
        journal_ref
            .list(&query)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .filter(|id| ids_ref.contains(id))
            .collect::<Vec<_>>()
    };
    let all = list(ListQuery {
        limit: 100,
        ..Default::default()
    })
    .await;
    assert_eq!(all, vec![ids[3], ids[2], ids[1], ids[0]], "newest first");
    let failed = list(ListQuery {
        status: Some(SagaStatus::Failed),
        limit: 100,
        ..Default::default()
    })
    .await;
    assert_eq!(failed, vec![ids[0]]);
    let refunds = list(ListQuery {
        definition: Some("refund".into()),
        limit: 100,
        ..Default::default()
    })
    .await;
    assert_eq!(refunds, vec![ids[2]]);
    let page = list(ListQuery {
        before: Some(ids[2]),
        limit: 1,
        ..Default::default()
    })
    .await;
    assert_eq!(
        page,
        vec![ids[1]],
        "keyset pagination continues after the cursor"
    );

    journal
        .append(vec![next(
            ids[0],
            4,
            EventKind::RetryRequested { by: None },
        )])
        .await
        .unwrap();
    assert!(
        journal.unfinished().await.unwrap().contains(&ids[0]),
        "a retried saga is unfinished again"
    );
    let compensating = list(ListQuery {
        status: Some(SagaStatus::Compensating),
        limit: 100,
        ..Default::default()
    })
    .await;
    assert_eq!(compensating, vec![ids[0]]);
}

/// A saga journaled to start later is listed as SCHEDULED and is
/// unfinished (recovery and takeover must find it) until it reaches its
/// start and runs, or is cancelled before it; its times read back.
pub async fn scheduled_sagas_are_unfinished_until_they_end(journal: Arc<dyn Journal>) {
    let later = |mut e: Event| {
        if let EventKind::SagaStarted {
            start_at, deadline, ..
        } = &mut e.kind
        {
            *start_at = Some(e.at.plus(Duration::from_secs(3_600)));
            *deadline = Some(e.at.plus(Duration::from_secs(4_200)));
        }
        e
    };
    let (runs, cancelled) = (later(started("shop", None)), later(started("shop", None)));
    let ids = [runs.saga, cancelled.saga];
    journal.append(vec![runs.clone(), cancelled]).await.unwrap();
    let scheduled = |journal: Arc<dyn Journal>| async move {
        let query = ListQuery {
            status: Some(SagaStatus::Scheduled),
            limit: 100,
            ..Default::default()
        };
        let mut listed: Vec<SagaId> = journal
            .list(&query)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        listed.sort();
        listed
    };
    let mut both = ids.to_vec();
    both.sort();
    assert_eq!(scheduled(journal.clone()).await, both);
    let unfinished = journal.unfinished().await.unwrap();
    assert!(ids.iter().all(|id| unfinished.contains(id)));
    assert_eq!(journal.read_saga(ids[0]).await.unwrap()[0].kind, runs.kind);

    journal
        .append(vec![
            next(ids[0], 2, EventKind::StartReached),
            next(ids[0], 3, attempt(1)),
            next(
                ids[1],
                2,
                EventKind::CancelRequested {
                    reason: "r".into(),
                    by: None,
                },
            ),
            next(
                ids[1],
                3,
                EventKind::CompensationStarted { reason: "r".into() },
            ),
            next(ids[1], 4, EventKind::SagaCompensated),
        ])
        .await
        .unwrap();
    assert!(scheduled(journal.clone()).await.is_empty());
    let unfinished = journal.unfinished().await.unwrap();
    assert!(unfinished.contains(&ids[0]) && !unfinished.contains(&ids[1]));
    let running = journal
        .list(&ListQuery {
            status: Some(SagaStatus::Running),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(running.iter().any(|s| s.id == ids[0]));
}

pub async fn participants_are_replaced_by_name(journal: Arc<dyn Journal>) {
    let make = |fwd: &str| {
        Participant::new(
            "payments",
            fwd,
            "http://127.0.0.1:7/shop.Payments/Refund",
            RetryOverrides::default(),
            None,
            Timestamp::now(),
        )
        .unwrap()
    };
    journal
        .put_participant(make("http://127.0.0.1:7/shop.Payments/Charge"))
        .await
        .unwrap();
    journal
        .put_participant(make("http://127.0.0.1:8/shop.Payments/Charge"))
        .await
        .unwrap();
    let all = journal.participants().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(
        all[0].forward.url(),
        "http://127.0.0.1:8/shop.Payments/Charge"
    );
}

pub async fn close_refuses_later_writes(journal: Arc<dyn Journal>) {
    let first = started("shop", None);
    let id = first.saga;
    journal.append(vec![first]).await.unwrap();
    journal.close().await.unwrap();
    let err = journal
        .append(vec![started("shop", None)])
        .await
        .unwrap_err();
    assert!(matches!(err, JournalError::Closed), "{err}");
    assert_eq!(
        journal.read_saga(id).await.unwrap().len(),
        1,
        "reads still work after close"
    );
}

pub async fn read_after_follows_offsets(journal: Arc<dyn Journal>) {
    let mut durable = journal.durable_offset();
    assert_eq!(
        *durable.borrow_and_update(),
        Offset::ZERO,
        "an empty journal"
    );
    assert!(journal.read_after(Offset(0), 100).await.unwrap().is_empty());
    // Concurrent appends of several sagas: the offset order interleaves them.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let journal = journal.clone();
        tasks.push(tokio::spawn(async move {
            // Appends of one and of several events (stored as one run each):
            // pages of 5 start and end inside runs.
            let first = started("shop", None);
            let id = first.saga;
            let mut appended = journal.append(vec![first]).await.unwrap();
            appended.extend(
                journal
                    .append(vec![next(id, 2, attempt(1)), next(id, 3, attempt(2))])
                    .await
                    .unwrap(),
            );
            appended.extend(journal.append(vec![next(id, 4, attempt(3))]).await.unwrap());
            assert_eq!(journal.read_saga(id).await.unwrap(), appended);
            appended
        }));
    }
    let mut appended = Vec::new();
    for task in tasks {
        appended.extend(task.await.unwrap());
    }
    appended.sort_by_key(|e| e.offset);
    assert_eq!(appended.len(), 32);
    assert!(
        durable.has_changed().unwrap(),
        "appends publish the durable offset"
    );
    assert_eq!(*durable.borrow_and_update(), appended[31].offset);

    let all = journal.read_after(Offset(0), 1000).await.unwrap();
    assert_eq!(all, appended, "every acknowledged event, in offset order");
    let offsets: Vec<u64> = all.iter().map(|e| e.offset.get()).collect();
    assert_eq!(offsets, (1..=32).collect::<Vec<_>>(), "gap-free from 1");

    // Paging by the last offset seen reads each event exactly once.
    let mut paged = Vec::new();
    let mut after = Offset::ZERO;
    loop {
        let page = journal.read_after(after, 5).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 5);
        after = page.last().unwrap().offset;
        paged.extend(page);
    }
    assert_eq!(paged, appended);
    assert_eq!(
        journal.read_after(Offset(10), 3).await.unwrap(),
        appended[10..13]
    );
    assert!(journal.read_after(Offset(32), 10).await.unwrap().is_empty());

    // A waiter sees the next append.
    let waiter = tokio::spawn(async move {
        durable.changed().await.unwrap();
        *durable.borrow()
    });
    let more = journal.append(vec![started("shop", None)]).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen, more[0].offset);
    assert_eq!(journal.read_after(Offset(32), 10).await.unwrap(), more);
}

pub async fn retention_removes_only_final_sagas(journal: Arc<dyn Journal>) {
    // Created in this order (ids are time-ordered), each ending a little later.
    let completed = completing(Some("order-1"), 1_000);
    let compensated = turning_back(EventKind::SagaCompensated, 2_000);
    let mut running = started("shop", None);
    running.at = Timestamp(3_000);
    let failed = turning_back(EventKind::SagaFailed { reason: "r".into() }, 4_000);
    for events in [&completed, &compensated, &vec![running.clone()], &failed] {
        journal.append(events.clone()).await.unwrap();
    }
    let (c, k, r, f) = (
        completed[0].saga,
        compensated[0].saga,
        running.saga,
        failed[0].saga,
    );

    let later = Timestamp::now().plus(Duration::from_secs(60));
    assert_eq!(
        journal.finished_before(later, None, 100).await.unwrap(),
        vec![c, k],
        "only COMPLETED and COMPENSATED sagas, oldest first; never FAILED or running"
    );
    assert_eq!(
        journal.finished_before(later, None, 1).await.unwrap(),
        vec![c]
    );
    assert_eq!(
        journal.finished_before(later, Some(c), 1).await.unwrap(),
        vec![k],
        "pages continue after the last id"
    );
    assert!(
        journal
            .finished_before(later, Some(k), 1)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        journal
            .finished_before(Timestamp(1_003), None, 100)
            .await
            .unwrap()
            .is_empty(),
        "a saga that ended at the cutoff is kept"
    );
    assert_eq!(
        journal
            .finished_before(Timestamp(2_002), None, 100)
            .await
            .unwrap(),
        vec![c],
        "the compensated saga started before this cutoff but ended after it"
    );

    let removed = journal
        .remove_sagas(vec![r, f, c, SagaId::generate(), k])
        .await
        .unwrap();
    assert_eq!(removed, vec![c, k], "only final sagas are removed");
    assert!(journal.read_saga(c).await.unwrap().is_empty());
    assert!(journal.read_saga(k).await.unwrap().is_empty());
    assert_eq!(
        journal.read_saga(r).await.unwrap().len(),
        1,
        "running untouched"
    );
    assert_eq!(
        journal.read_saga(f).await.unwrap().len(),
        4,
        "FAILED untouched"
    );
    let listed: Vec<SagaId> = journal
        .list(&ListQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(listed, vec![f, r]);
    assert_eq!(journal.unfinished().await.unwrap(), vec![r]);
    assert!(
        journal
            .finished_before(later, None, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(journal.remove_sagas(vec![c]).await.unwrap().is_empty());

    // The key is free again: retention bounds the idempotency window.
    assert_eq!(journal.saga_for_key("order-1").await.unwrap(), None);
    let again = started("shop", Some("order-1"));
    journal.append(vec![again.clone()]).await.unwrap();
    assert_eq!(
        journal.saga_for_key("order-1").await.unwrap(),
        Some(again.saga)
    );
}

pub async fn read_after_skips_removed_sagas(journal: Arc<dyn Journal>) {
    assert_eq!(journal.archived_through().await.unwrap(), Offset::ZERO);
    // Interleaved offsets: a's, b's, a's, b's.
    let a = completing(None, 1_000);
    let b0 = started("shop", None);
    let b = b0.saga;
    let mut written = journal.append(vec![a[0].clone()]).await.unwrap();
    written.extend(journal.append(vec![b0]).await.unwrap());
    written.extend(journal.append(a[1..].to_vec()).await.unwrap());
    written.extend(journal.append(vec![next(b, 2, attempt(1))]).await.unwrap());
    assert_eq!(journal.read_after(Offset(0), 100).await.unwrap(), written);
    let a_last = written
        .iter()
        .filter(|e| e.saga == a[0].saga)
        .map(|e| e.offset)
        .max();

    assert_eq!(
        journal.remove_sagas(vec![a[0].saga]).await.unwrap(),
        vec![a[0].saga]
    );
    assert_eq!(
        Some(journal.archived_through().await.unwrap()),
        a_last,
        "the archive horizon is the highest removed offset"
    );
    let bs: Vec<Event> = written.iter().filter(|e| e.saga == b).cloned().collect();
    assert_eq!(
        journal.read_after(Offset(0), 100).await.unwrap(),
        bs,
        "the removed saga's offsets are skipped, nothing else"
    );
    // Paging across the holes: a page is short only at the end.
    assert_eq!(journal.read_after(Offset(0), 1).await.unwrap(), bs[..1]);
    assert_eq!(journal.read_after(bs[0].offset, 1).await.unwrap(), bs[1..]);
    assert!(
        journal
            .read_after(bs[1].offset, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Offsets go on after the last one handed out, gap-free above the horizon.
    let more = journal.append(vec![started("shop", None)]).await.unwrap();
    assert_eq!(more[0].offset, written.last().unwrap().offset + 1);
    assert_eq!(journal.read_after(bs[1].offset, 10).await.unwrap(), more);
    assert_eq!(*journal.durable_offset().borrow(), more[0].offset);
}

pub async fn reads_during_removals_see_whole_sagas_or_none(journal: Arc<dyn Journal>) {
    let mut sagas = Vec::new();
    for i in 0..120 {
        let events = completing(None, 1_000 + i * 10);
        sagas.push(events[0].saga);
        journal.append(events).await.unwrap();
    }
    let kept = journal.append(vec![started("shop", None)]).await.unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (journal, done, sagas) = (journal.clone(), done.clone(), sagas.clone());
        let kept = kept.clone();
        tokio::spawn(async move {
            let mut rounds = 0;
            while !done.load(std::sync::atomic::Ordering::Acquire) || rounds == 0 {
                rounds += 1;
                let feed = journal.read_after(Offset(0), 10_000).await.unwrap();
                assert_eq!(feed.last(), kept.last(), "the kept saga is always read");
                assert!(feed.windows(2).all(|w| w[0].offset < w[1].offset));
                for id in sagas.iter().step_by(7) {
                    let history = journal.read_saga(*id).await.unwrap();
                    assert!(
                        history.is_empty() || history.len() == 4,
                        "saga {id}: {} events",
                        history.len()
                    );
                }
                journal
                    .list(&ListQuery {
                        limit: 1000,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
            }
            rounds
        })
    };
    for chunk in sagas.chunks(8) {
        assert_eq!(journal.remove_sagas(chunk.to_vec()).await.unwrap(), chunk);
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    assert!(reader.await.unwrap() > 0);
    assert_eq!(journal.read_after(Offset(0), 10_000).await.unwrap(), kept);
}
