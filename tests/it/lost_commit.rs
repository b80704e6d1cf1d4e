//! A COMMIT whose answer never comes back (`common::commit_cutter`): the
//! PostgreSQL journal cannot tell whether the batch committed, says so
//! (uncertain, never "done" and never "nothing happened"), and goes on from
//! what the database holds; a coordinator whose commit answers are lost now
//! and then, both ways (committed, and rolled back), loses no acknowledged
//! saga and applies no effect twice.

use std::{sync::Arc, time::Duration};

use sagad::{
    error::JournalFault,
    journal::{
        Journal, JournalError, PgJournal,
        postgres::{NodeId, PgOptions, PgTarget},
    },
    saga::{Action, Endpoint, Event, EventKind, Offset, RetryPolicy, SagaId, StepSpec, Timestamp},
};

use crate::common::{
    chaos::Harness,
    commit_cutter::{CommitCutter, Cut, upstream},
    poll_until,
    postgres::{database, journal_is_whole, sql},
};

/// Event `seq` of saga `id`, an attempt of its one step.
fn next(id: SagaId, seq: u64, attempt: u32) -> Event {
    Event {
        saga: id,
        seq,
        offset: Offset::ZERO,
        at: Timestamp::now(),
        kind: EventKind::AttemptStarted {
            step: 0,
            action: Action::Forward,
            attempt,
        },
    }
}

/// The start of a one-step saga on endpoints nothing listens on.
fn started() -> Event {
    let step = StepSpec {
        name: "only".into(),
        participant: "p".into(),
        kind: sagad::saga::StepKind::Compensatable,
        forward: Endpoint::parse("f", "http://127.0.0.1:1/p.S/Do").unwrap(),
        compensate: Some(Endpoint::parse("c", "http://127.0.0.1:1/p.S/Undo").unwrap()),
        retry: RetryPolicy::default(),
        timeout: Duration::from_secs(1),
        input: None,
    };
    Event {
        saga: SagaId::generate(),
        seq: 1,
        offset: Offset::ZERO,
        at: Timestamp::now(),
        kind: EventKind::SagaStarted {
            definition: "shop".into(),
            inline_steps: None,
            steps: vec![step],
            payload: b"{}".to_vec(),
            idempotency_key: None,
            trace: None,
            started_by: None,
            start_at: None,
            deadline: None,
        },
    }
}

/// Appends `events` until the journal takes them: after a failed batch it
/// refuses writes until a probe of the database works.
async fn append_once_it_writes(journal: &PgJournal, events: Vec<Event>) {
    poll_until("the journal to write again", || {
        let events = events.clone();
        async move {
            match journal.append(events).await {
                Ok(_) => Some(()),
                Err(e) if JournalFault::of(&e) == JournalFault::Refused => None,
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
}

async fn seqs(db: &tokio_postgres::Client, id: SagaId) -> Vec<i64> {
    db.query(
        "SELECT seq FROM sagad.event WHERE saga_id = $1::text::uuid ORDER BY seq",
        &[&id.to_string()],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

fn uncertain(result: Result<Vec<Event>, JournalError>) {
    let e = result.expect_err("the commit's answer was lost");
    assert_eq!(JournalFault::of(&e), JournalFault::WriteUncertain, "{e}");
    assert!(e.to_string().contains("may have taken effect"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_without_an_answer_is_uncertain_and_the_journal_goes_on_from_what_postgresql_holds()
 {
    let url = database().await;
    let cutter = CommitCutter::start(upstream(&url)).await;
    let options = PgOptions::new(
        PgTarget::parse(&cutter.url(&url)).unwrap(),
        NodeId::new("node-a").unwrap(),
        "127.0.0.1:0",
    );
    let journal = PgJournal::open(options).await.unwrap();
    let db = sql(&url).await;
    let first = started();
    let id = first.saga;
    journal.append(vec![first]).await.unwrap();

    // Committed, and the answer lost: uncertain, and there.
    cutter.cut(Cut::AfterCommit);
    uncertain(journal.append(vec![next(id, 2, 1)]).await);
    assert_eq!(cutter.cuts(), 1);
    assert_eq!(seqs(&db, id).await, [1, 2]);
    let read = journal.read_saga(id).await.unwrap();
    assert_eq!(read.len(), 2, "the journal reads what committed");
    append_once_it_writes(&journal, vec![next(id, 3, 2)]).await;

    // Rolled back, and the answer lost: uncertain too, and not there; the
    // same append made again takes its place.
    cutter.cut(Cut::BeforeCommit);
    uncertain(journal.append(vec![next(id, 4, 3)]).await);
    assert_eq!(cutter.cuts(), 2);
    assert_eq!(seqs(&db, id).await, [1, 2, 3]);
    append_once_it_writes(&journal, vec![next(id, 4, 3)]).await;
    assert_eq!(seqs(&db, id).await, [1, 2, 3, 4]);
    assert_eq!(journal_is_whole(&db).await, 1);
    journal.close().await.unwrap();
}

const SAGAS: usize = 30;
const LANES: usize = 3;
const CUTS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_whose_commit_answers_are_lost_loses_nothing_and_applies_nothing_twice() {
    let url = database().await;
    let cutter = Arc::new(CommitCutter::start(upstream(&url)).await);
    let through = cutter.url(&url);
    let env = [
        ("SAGAD_JOURNAL", through.as_str()),
        ("SAGAD_NODE_ID", "node-1"),
    ];
    let harness = Harness::start(&env).await;
    let seed = std::env::var("SAGAD_LOST_COMMIT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("lost commit test seed {seed} (SAGAD_LOST_COMMIT_SEED sets it)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let lanes = harness.start_lanes(LANES, SAGAS, "lost-s", &mut rng);
    // One cut at a time, alternating, each while sagas are under way.
    for n in 0..CUTS {
        let seen = harness.shop.fake.calls().len();
        poll_until("more participant calls", || {
            let calls = harness.shop.fake.calls().len();
            async move { (calls >= seen + 3).then_some(()) }
        })
        .await;
        cutter.cut(if n % 2 == 0 {
            Cut::AfterCommit
        } else {
            Cut::BeforeCommit
        });
        poll_until("the armed commit to be cut", || {
            let idle = cutter.idle();
            async move { idle.then_some(()) }
        })
        .await;
    }
    lanes.finish().await;
    assert_eq!(cutter.cuts(), CUTS);
    let summary = harness.settle_and_check().await;
    println!("{summary:?}");
    assert!(summary.sagas >= SAGAS);
    assert_eq!(summary.listed, summary.sagas, "no saga twice, none lost");
    assert!(
        summary.completed > 0 && summary.compensated > 0,
        "{summary:?}"
    );
    let db = sql(&url).await;
    assert_eq!(journal_is_whole(&db).await, summary.sagas);
    harness.stop();
}
