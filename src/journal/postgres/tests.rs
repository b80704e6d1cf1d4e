//! The PostgreSQL journal against a real server (one throwaway server for
//! the test binary, a fresh database per test): the conformance suite, and
//! what only a shared journal has: nodes, epochs, leases, several writers.

use std::{sync::Arc, time::Duration};

use tokio_postgres::NoTls;

use super::*;
use crate::{
    error::JournalFault,
    journal::Journal,
    saga::EventKind,
    testing::{attempt, next, started, turning_back},
};

/// A fresh database on the shared throwaway server; fails the test (never
/// skips it) without PostgreSQL's binaries.
async fn database() -> String {
    throwaway::shared_database()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn options(url: &str, node: &str) -> PgOptions {
    PgOptions::new(
        PgTarget::parse(url).unwrap(),
        NodeId::new(node).unwrap(),
        "127.0.0.1:0",
    )
}

async fn open(url: &str, node: &str) -> PgJournal {
    PgJournal::open(options(url, node)).await.unwrap()
}

async fn fresh() -> (Arc<dyn Journal>, ()) {
    let url = database().await;
    (Arc::new(open(&url, "node-a").await), ())
}

crate::journal_conformance!(async fresh());

/// A plain connection to run SQL behind the journal's back.
async fn sql(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

async fn count_events(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM sagad.event", &[])
        .await
        .unwrap()
        .get(0)
}

/// Polls `check` every 10 ms for up to 30 s.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_node_journals_nothing_more() {
    let url = database().await;
    let journal = open(&url, "node-a").await;
    assert_eq!(journal.membership().epoch, Epoch(1));
    let first = started("shop", None);
    let id = first.saga;
    journal.append(vec![first]).await.unwrap();

    // Another process takes the node's identity (or a takeover fences it).
    let client = sql(&url).await;
    client
        .execute(
            "UPDATE sagad.node SET epoch = epoch + 1 WHERE node_id = 'node-a'",
            &[],
        )
        .await
        .unwrap();
    let err = journal
        .append(vec![next(id, 2, attempt(1))])
        .await
        .unwrap_err();
    assert_eq!(JournalFault::of(&err), JournalFault::Refused, "{err}");
    assert!(err.to_string().contains("fenced"), "{err}");
    assert!(err.to_string().contains("epoch 2"), "{err}");
    let failure = journal.write_failure().expect("health sees the fence");
    assert!(failure.contains("fenced"), "{failure}");
    // For good: no probe brings it back, nothing of it reaches the journal.
    tokio::time::sleep(crate::journal::JOURNAL_PROBE_INTERVAL * 3).await;
    for _ in 0..3 {
        assert!(journal.append(vec![started("shop", None)]).await.is_err());
    }
    let participant = crate::saga::Participant::new(
        "payments",
        "http://127.0.0.1:7/shop.Payments/Charge",
        "http://127.0.0.1:7/shop.Payments/Refund",
        crate::saga::RetryOverrides::default(),
        None,
        crate::saga::Timestamp::now(),
    )
    .unwrap();
    assert!(journal.put_participant(participant).await.is_err());
    assert_eq!(count_events(&client).await, 1);
    assert!(journal.write_failure().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_with_the_same_node_id_fences_the_first() {
    let url = database().await;
    let old = open(&url, "node-a").await;
    let first = started("shop", None);
    let id = first.saga;
    old.append(vec![first]).await.unwrap();

    let new = open(&url, "node-a").await;
    assert_eq!(new.membership().epoch, Epoch(2), "joining bumps the epoch");
    assert_eq!(
        new.unfinished().await.unwrap(),
        vec![id],
        "the node's sagas are the new process's"
    );
    let err = old.append(vec![next(id, 2, attempt(1))]).await.unwrap_err();
    assert!(err.to_string().contains("fenced"), "{err}");
    new.append(vec![next(id, 2, attempt(1))])
        .await
        .expect("the new process goes on with the saga");
    assert_eq!(new.read_saga(id).await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_lease_stops_writes_until_it_is_renewed() {
    let url = database().await;
    // A lease far longer than the test: no heartbeat renews it behind the
    // test's back; only the probe after the refused write does.
    let journal = PgJournal::open(PgOptions {
        lease_ttl: Duration::from_secs(3600),
        ..options(&url, "node-a")
    })
    .await
    .unwrap();
    let client = sql(&url).await;
    client
        .execute(
            "UPDATE sagad.node SET lease_until = clock_timestamp() - interval '1 second'",
            &[],
        )
        .await
        .unwrap();
    let err = journal
        .append(vec![started("shop", None)])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("lease ran out"), "{err}");
    assert_eq!(
        count_events(&client).await,
        0,
        "nothing written on a lapsed lease"
    );
    // The probe renews it: the epoch did not change, nobody took over.
    until("writes to work again", || journal.write_failure().is_none()).await;
    journal.append(vec![started("shop", None)]).await.unwrap();
    assert_eq!(count_events(&client).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_stops_writes_until_a_probe_connects_again() {
    // A server of its own: this test stops it.
    let cluster = Arc::new(
        tokio::task::spawn_blocking(throwaway::Cluster::start)
            .await
            .unwrap()
            .unwrap(),
    );
    let url = cluster.database().await.unwrap();
    let journal = open(&url, "node-a").await;
    journal.append(vec![started("shop", None)]).await.unwrap();

    let stopping = cluster.clone();
    tokio::task::spawn_blocking(move || stopping.stop())
        .await
        .unwrap();
    let err = journal
        .append(vec![started("shop", None)])
        .await
        .unwrap_err();
    assert!(
        JournalFault::of(&err).pauses_sagas(),
        "an outage pauses sagas: {err}"
    );
    assert!(journal.write_failure().is_some(), "health sees the outage");
    let refused = journal
        .append(vec![started("shop", None)])
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("refuses writes"), "{refused}");

    let restarting = cluster.clone();
    tokio::task::spawn_blocking(move || restarting.restart())
        .await
        .unwrap()
        .unwrap();
    until("writes to work again", || journal.write_failure().is_none()).await;
    let later = journal.append(vec![started("shop", None)]).await.unwrap();
    assert_eq!(
        journal.read_saga(later[0].saga).await.unwrap(),
        later,
        "reads connect again too"
    );
    assert_eq!(
        journal.read_after(Offset::ZERO, 10).await.unwrap().len(),
        2,
        "only the acknowledged appends are in the journal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_gap_free_and_in_commit_order_across_nodes() {
    let url = database().await;
    let nodes = [open(&url, "node-a").await, open(&url, "node-b").await];
    let nodes: Vec<Arc<PgJournal>> = nodes.into_iter().map(Arc::new).collect();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let journal = nodes[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            let first = started("shop", None);
            let id = first.saga;
            let mut written = journal.append(vec![first]).await.unwrap();
            for seq in 2..=6 {
                written.extend(
                    journal
                        .append(vec![next(id, seq, attempt(seq as u32))])
                        .await
                        .unwrap(),
                );
            }
            written
        }));
    }
    let mut written = Vec::new();
    for task in tasks {
        written.extend(task.await.unwrap());
    }
    written.sort_by_key(|e| e.offset);
    let offsets: Vec<u64> = written.iter().map(|e| e.offset.get()).collect();
    assert_eq!(
        offsets,
        (1..=96).collect::<Vec<_>>(),
        "one gap-free sequence for both nodes"
    );
    for journal in &nodes {
        assert_eq!(
            journal.read_after(Offset::ZERO, 1000).await.unwrap(),
            written
        );
        // Each node hears of the other's commits too.
        let durable = journal.durable_offset();
        until("the durable offset to cover both nodes", || {
            *durable.borrow() == Offset(96)
        })
        .await;
        assert_eq!(
            journal.unfinished().await.unwrap().len(),
            8,
            "each node recovers its own"
        );
    }
    // A key is one saga's across nodes.
    nodes[0]
        .append(vec![started("shop", Some("k"))])
        .await
        .unwrap();
    let err = nodes[1]
        .append(vec![started("shop", Some("k"))])
        .await
        .unwrap_err();
    assert!(
        matches!(err, JournalError::IdempotencyConflict { .. }),
        "{err}"
    );
    // A node cannot write a saga another node owns.
    let theirs = started("shop", None);
    nodes[0].append(vec![theirs.clone()]).await.unwrap();
    let err = nodes[1]
        .append(vec![next(
            theirs.saga,
            2,
            EventKind::CancelRequested {
                reason: "x".into(),
                by: None,
            },
        )])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("belongs to node node-a"), "{err}");
    assert_eq!(nodes[1].read_saga(theirs.saga).await.unwrap().len(), 1);
}

/// Whether `journal` holds the archiver duty now (taking or renewing it).
async fn holds(journal: &PgJournal) -> bool {
    journal
        .hold_duty(Duty::ARCHIVER, Duration::from_millis(100))
        .await
        .unwrap()
}

/// The node holding the archiver duty, by its row.
async fn duty_holder(db: &tokio_postgres::Client) -> String {
    db.query_one(
        "SELECT node_id FROM sagad.duty WHERE name = 'archiver'",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duty_has_one_holder_and_moves_once_its_lease_ran_out_or_its_holder_left() {
    let url = database().await;
    let (a, b) = (open(&url, "node-a").await, open(&url, "node-b").await);
    assert!(holds(&a).await, "the first to ask takes it");
    assert!(!holds(&b).await, "taken while its lease runs");
    assert!(holds(&a).await, "the holder renews it");
    let db = sql(&url).await;
    assert_eq!(duty_holder(&db).await, "node-a");

    // The holder stops asking: once the lease ran out, another takes it.
    db.execute(
        "UPDATE sagad.duty SET lease_until = clock_timestamp() - interval '1 second'",
        &[],
    )
    .await
    .unwrap();
    assert!(holds(&b).await);
    assert!(!holds(&a).await, "one holder at a time");
    assert_eq!(duty_holder(&db).await, "node-b");

    // A clean close gives it up at once.
    b.close().await.unwrap();
    assert!(holds(&a).await);

    // A deposed node holds nothing, even while its duty's lease runs.
    db.execute(
        "UPDATE sagad.node SET epoch = nextval('sagad.epoch_seq') WHERE node_id = 'node-a'",
        &[],
    )
    .await
    .unwrap();
    assert!(!holds(&a).await);
    let c = open(&url, "node-c").await;
    assert!(!holds(&c).await, "node-a's lease still runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sagas_notice_is_due_to_its_owner_until_acknowledged() {
    let url = database().await;
    let (a, b) = (open(&url, "node-a").await, open(&url, "node-b").await);
    let fail = || turning_back(EventKind::SagaFailed { reason: "r".into() }, 1_000);
    let (acked, unacked) = (fail(), fail());
    for events in [&acked, &unacked] {
        a.append(events.clone()).await.unwrap();
    }
    let running = started("shop", None);
    a.append(vec![running.clone()]).await.unwrap();
    let (on_a, on_b) = (a.notices().unwrap(), b.notices().unwrap());
    let key = |events: &[Event]| (events[0].saga, events.last().unwrap().seq);
    let (acked, unacked) = (key(&acked), key(&unacked));
    let mut both = vec![acked, unacked];
    both.sort();
    assert_eq!(on_a.pending().await.unwrap(), both);
    assert!(
        on_b.pending().await.unwrap().is_empty(),
        "not node-b's sagas"
    );
    assert!(on_a.due(acked.0, acked.1).await.unwrap());
    assert!(
        !on_b.due(acked.0, acked.1).await.unwrap(),
        "only the owner posts"
    );
    assert!(
        !on_a.due(acked.0, acked.1 - 1).await.unwrap(),
        "another failure"
    );
    assert!(!on_a.due(running.saga, 1).await.unwrap(), "not FAILED");

    on_a.acknowledged(acked.0, acked.1).await.unwrap();
    assert!(!on_a.due(acked.0, acked.1).await.unwrap(), "acknowledged");
    assert_eq!(on_a.pending().await.unwrap(), vec![unacked]);

    // Taken over: the new owner posts what was not acknowledged, only that.
    let db = sql(&url).await;
    db.execute("UPDATE sagad.saga SET owner_node = 'node-b'", &[])
        .await
        .unwrap();
    assert_eq!(on_b.pending().await.unwrap(), vec![unacked]);
    assert!(on_b.due(unacked.0, unacked.1).await.unwrap());
    assert!(!on_b.due(acked.0, acked.1).await.unwrap());
    assert!(!on_a.due(unacked.0, unacked.1).await.unwrap(), "moved away");
    on_b.acknowledged(unacked.0, unacked.1).await.unwrap();
    assert!(on_b.pending().await.unwrap().is_empty());
    let by: String = db
        .query_one(
            "SELECT acked_by FROM sagad.notice WHERE saga_id = $1",
            &[&batch::uuid(unacked.0)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(by, "node-b");

    // A deposed node is told no, never to post.
    db.execute("UPDATE sagad.saga SET owner_node = 'node-a'", &[])
        .await
        .unwrap();
    db.batch_execute(
        "DELETE FROM sagad.notice;
         UPDATE sagad.node SET epoch = nextval('sagad.epoch_seq') WHERE node_id = 'node-a'",
    )
    .await
    .unwrap();
    assert!(!on_a.due(unacked.0, unacked.1).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_call_is_taken_once_by_the_sagas_owner_and_answered_to_its_caller() {
    use crate::journal::relay::{CallAnswer, CallState, OwnerCall, Refusal};
    use crate::saga::Principal;

    let url = database().await;
    let (a, b) = (open(&url, "node-a").await, open(&url, "node-b").await);
    let saga = started("shop", None);
    let id = saga.saga;
    a.append(vec![saga]).await.unwrap();
    let (on_a, on_b) = (a.relay().unwrap(), b.relay().unwrap());
    let cancel = OwnerCall::Cancel {
        reason: "asked on node-b".into(),
        by: Principal::anonymous(None),
    };
    let unknown = crate::saga::SagaId::generate();
    assert_eq!(
        on_b.send(unknown, &cancel).await.unwrap(),
        None,
        "no such saga"
    );

    // Left on node-b, taken by node-a (the owner) only, once.
    let call = on_b.send(id, &cancel).await.unwrap().unwrap();
    assert_eq!(on_b.state(call).await.unwrap(), CallState::Waiting);
    assert!(on_b.take().await.unwrap().is_empty(), "not node-b's saga");
    let taken = on_a.take().await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(
        (taken[0].id, taken[0].saga, &taken[0].call),
        (call, id, &cancel)
    );
    assert!(on_a.take().await.unwrap().is_empty(), "taken once");
    assert_eq!(on_b.state(call).await.unwrap(), CallState::Taken);

    // Put back, it is taken again; answered, its caller reads the answer.
    on_a.put_back(call).await.unwrap();
    assert_eq!(on_b.state(call).await.unwrap(), CallState::Waiting);
    assert_eq!(on_a.take().await.unwrap().len(), 1);
    let refused = CallAnswer::Refused {
        refusal: Refusal::FailedPrecondition,
        message: "saga is already COMPENSATING".into(),
    };
    on_b.reply(call, &CallAnswer::Done).await.unwrap();
    assert_eq!(
        on_b.state(call).await.unwrap(),
        CallState::Taken,
        "only the taker answers"
    );
    on_a.reply(call, &refused).await.unwrap();
    on_a.reply(call, &CallAnswer::Done).await.unwrap();
    assert_eq!(
        on_b.state(call).await.unwrap(),
        CallState::Answered(refused.clone()),
        "the first answer stands"
    );
    assert_eq!(
        on_b.withdraw(call).await.unwrap(),
        CallState::Answered(refused)
    );

    // Withdrawn before anyone took it: gone, so nothing will be done.
    let waiting = on_b.send(id, &cancel).await.unwrap().unwrap();
    assert_eq!(on_b.withdraw(waiting).await.unwrap(), CallState::Waiting);
    assert_eq!(on_b.state(waiting).await.unwrap(), CallState::Gone);
    assert!(on_a.take().await.unwrap().is_empty());
    // Withdrawn once taken: the caller learns it may take effect.
    let taken = on_b.send(id, &cancel).await.unwrap().unwrap();
    assert_eq!(on_a.take().await.unwrap().len(), 1);
    assert_eq!(on_b.withdraw(taken).await.unwrap(), CallState::Taken);

    // A waiting call follows its saga to a new owner; a fenced node takes
    // nothing.
    let moving = on_b.send(id, &cancel).await.unwrap().unwrap();
    let db = sql(&url).await;
    db.execute("UPDATE sagad.saga SET owner_node = 'node-b'", &[])
        .await
        .unwrap();
    assert!(on_a.take().await.unwrap().is_empty(), "moved away");
    let taken = on_b.take().await.unwrap();
    assert_eq!(taken.iter().map(|t| t.id).collect::<Vec<_>>(), [moving]);
    on_b.put_back(moving).await.unwrap();
    db.execute(
        "UPDATE sagad.node SET epoch = nextval('sagad.epoch_seq') WHERE node_id = 'node-b'",
        &[],
    )
    .await
    .unwrap();
    let _ = b.append(vec![next(id, 2, attempt(1))]).await;
    assert!(
        b.shared.fence.get().is_some(),
        "node-b learnt it was fenced"
    );
    assert!(on_b.take().await.unwrap().is_empty(), "fenced");

    // Removed with its saga.
    db.execute("DELETE FROM sagad.saga", &[]).await.unwrap();
    assert_eq!(on_a.state(moving).await.unwrap(), CallState::Gone);
    assert_eq!(on_a.withdraw(moving).await.unwrap(), CallState::Gone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_refused_naming_both_versions() {
    let url = database().await;
    let journal = open(&url, "node-a").await;
    journal.close().await.unwrap();
    sql(&url)
        .await
        .execute("UPDATE sagad.schema_version SET version = 99", &[])
        .await
        .unwrap();
    let err = PgJournal::open(options(&url, "node-a"))
        .await
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(
        text.contains("version 99")
            && text.contains(&format!("version {}", schema::SCHEMA_VERSION)),
        "{text}"
    );
    assert_eq!(JournalFault::of(&err), JournalFault::CannotOpen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_journal_is_upgraded_and_epochs_go_on_above_its_own() {
    let url = database().await;
    open(&url, "node-a").await.close().await.unwrap();
    // What a version 1 journal looked like: no sequence, epochs counted per
    // node, and none of the later tables.
    let db = sql(&url).await;
    db.batch_execute(
        "DROP TABLE sagad.relay, sagad.notice, sagad.duty;
         DROP SEQUENCE sagad.epoch_seq;
         UPDATE sagad.schema_version SET version = 1;
         UPDATE sagad.node SET epoch = 5",
    )
    .await
    .unwrap();
    let b = open(&url, "node-b").await;
    assert_eq!(b.membership().epoch, Epoch(6), "above every epoch held");
    assert!(holds(&b).await, "the duties' table is made by the upgrade");
    let version: i32 = db
        .query_one("SELECT version FROM sagad.schema_version", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, schema::SCHEMA_VERSION);
    let a = open(&url, "node-a").await;
    assert_eq!(
        a.membership().epoch,
        Epoch(7),
        "one sequence for every node"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_hosts_are_tried_in_order_for_a_primary() {
    let url = database().await;
    // Nothing listens on the first host: a dead primary's address.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (head, db) = url.rsplit_once('/').unwrap();
    let (user, live) = head.rsplit_once('@').unwrap();
    let url = format!("{user}@127.0.0.1:{closed},{live}/{db}?target_session_attrs=read-write");
    let journal = open(&url, "node-a").await;
    let written = journal.append(vec![started("shop", None)]).await.unwrap();
    assert_eq!(journal.read_saga(written[0].saga).await.unwrap(), written);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_given_both_hosts_writes_on_the_promoted_standby() {
    // Servers of its own: this test kills one and promotes the other.
    let primary = Arc::new(
        tokio::task::spawn_blocking(throwaway::Cluster::start)
            .await
            .unwrap()
            .unwrap(),
    );
    let copying = primary.clone();
    let standby = tokio::task::spawn_blocking(move || copying.standby())
        .await
        .unwrap()
        .unwrap();
    let url = primary.database().await.unwrap();
    let (head, db) = url.rsplit_once('/').unwrap();
    let both = format!(
        "{head},127.0.0.1:{}/{db}?target_session_attrs=read-write",
        standby.port()
    );
    let journal = open(&both, "node-a").await;
    let written = journal.append(vec![started("shop", None)]).await.unwrap();

    let killing = primary.clone();
    tokio::task::spawn_blocking(move || killing.kill())
        .await
        .unwrap();
    // The standby answers, read-only: it is not taken for writes.
    let err = journal
        .append(vec![started("shop", None)])
        .await
        .unwrap_err();
    assert!(JournalFault::of(&err).pauses_sagas(), "{err}");
    assert!(journal.write_failure().is_some(), "health sees the outage");

    let promoted = tokio::task::spawn_blocking(move || standby.promote())
        .await
        .unwrap()
        .unwrap();
    until("writes to work again", || journal.write_failure().is_none()).await;
    let later = journal.append(vec![started("shop", None)]).await.unwrap();
    // What was acknowledged before the kill is there; offsets go on gap-free.
    assert_eq!(journal.read_saga(written[0].saga).await.unwrap(), written);
    assert_eq!(later[0].offset.get(), written[0].offset.get() + 1);
    drop(journal);
    drop(promoted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_requires_tls_of_a_server_without_it_is_refused_at_open() {
    let url = database().await;
    let err = PgJournal::open(options(&format!("{url}?sslmode=require"), "node-a"))
        .await
        .err()
        .expect("the shared server has no TLS");
    assert_eq!(JournalFault::of(&err), JournalFault::CannotOpen, "{err}");
    assert!(err.to_string().contains("127.0.0.1"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_stopped_inside_a_transaction_lets_its_locks_go() {
    let url = database().await;
    let journal = open(&url, "node-a").await;
    // What a node stopped mid-batch leaves: its row locked FOR SHARE, and
    // nothing more sent.
    let stopped = connect(&PgTarget::parse(&url).unwrap()).await.unwrap();
    stopped
        .batch_execute("BEGIN; SELECT 1 FROM sagad.node WHERE node_id = 'node-a' FOR SHARE")
        .await
        .unwrap();
    // A survivor's deposing update waits for that lock, then goes through.
    let deposed = tokio::time::timeout(
        IDLE_IN_TRANSACTION_TIMEOUT * 6,
        sql(&url).await.execute(
            "UPDATE sagad.node SET epoch = nextval('sagad.epoch_seq') WHERE node_id = 'node-a'",
            &[],
        ),
    )
    .await
    .expect("the stopped session's lock is let go")
    .unwrap();
    assert_eq!(deposed, 1);
    assert!(
        stopped.batch_execute("COMMIT").await.is_err(),
        "PostgreSQL ended the idle session"
    );
    drop(journal);
}

/// An error and its causes, as the binary prints them.
fn said(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        line.push_str(&format!(": {e}"));
        cause = e.source();
    }
    line
}

/// A trigger that holds the COMMIT of any batch with an event of saga `id`
/// until the test lets go of advisory lock 42, then lets it pass or fails it.
async fn hold_commits_of(db: &tokio_postgres::Client, id: SagaId, then_fail: bool) {
    let fail = match then_fail {
        true => "RAISE EXCEPTION 'refused at commit by the test';",
        false => "",
    };
    db.batch_execute(&format!(
        "CREATE FUNCTION sagad.hold_commit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.saga_id = '{}' THEN PERFORM pg_advisory_lock(42); {fail} END IF;
           RETURN NULL;
         END $$;
         CREATE CONSTRAINT TRIGGER hold_commit AFTER INSERT ON sagad.event
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION sagad.hold_commit();",
        batch::uuid(id)
    ))
    .await
    .unwrap();
}

/// Polls until a session of the journal waits as `wait_event_type` says
/// (`Lock` with `wait_event` `advisory`: held at its COMMIT; `Lock` on
/// anything else: a batch waiting for the feed head's row).
async fn until_waiting(db: &tokio_postgres::Client, what: &str, advisory: bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE application_name = 'sagad' AND wait_event_type = 'Lock'
                   AND (wait_event = 'advisory') = $1",
                &[&advisory],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Two appends in flight on one node: the first one's COMMIT held by
/// [`hold_commits_of`] (failing when let go, if `then_fail`), the second
/// one's statements in, waiting for the feed head's row lock.
struct TwoInFlight {
    journal: Arc<PgJournal>,
    db: tokio_postgres::Client,
    held: tokio_postgres::Client,
    first: tokio::task::JoinHandle<Result<Vec<crate::saga::Event>, JournalError>>,
    second: tokio::task::JoinHandle<Result<Vec<crate::saga::Event>, JournalError>>,
    second_id: SagaId,
}

async fn two_in_flight(then_fail: bool) -> TwoInFlight {
    let url = database().await;
    let journal = Arc::new(open(&url, "node-a").await);
    let (db, held) = (sql(&url).await, sql(&url).await);
    let first = started("shop", None);
    hold_commits_of(&db, first.saga, then_fail).await;
    held.execute("SELECT pg_advisory_lock(42)", &[])
        .await
        .unwrap();
    let writing = journal.clone();
    let first = tokio::spawn(async move { writing.append(vec![first]).await });
    until_waiting(&db, "the first batch's COMMIT to be held", true).await;
    let second = started("shop", None);
    let second_id = second.saga;
    let writing = journal.clone();
    let second = tokio::spawn(async move { writing.append(vec![second]).await });
    until_waiting(&db, "the second batch to wait for the feed head", false).await;
    TwoInFlight {
        journal,
        db,
        held,
        first,
        second,
        second_id,
    }
}

impl TwoInFlight {
    /// Lets the first batch's COMMIT go on.
    async fn let_go(&self) {
        self.held
            .execute("SELECT pg_advisory_unlock(42)", &[])
            .await
            .unwrap();
    }
}

/// The next batch's statements run while the previous batch's COMMIT is
/// out; it commits after it, with the offsets after its own, and neither
/// is answered before its COMMIT is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_goes_in_while_the_one_before_commits_and_commits_after_it() {
    let batches = two_in_flight(false).await;
    assert!(!batches.first.is_finished() && !batches.second.is_finished());
    assert_eq!(count_events(&batches.db).await, 0, "nothing committed yet");

    batches.let_go().await;
    let first = batches.first.await.unwrap().unwrap();
    let second = batches.second.await.unwrap().unwrap();
    assert_eq!(first[0].offset.get(), 1);
    assert_eq!(second[0].offset.get(), 2, "committed after the first");
    assert_eq!(
        batches.journal.read_after(Offset::ZERO, 10).await.unwrap(),
        [first, second].concat()
    );
}

/// When a batch's COMMIT fails, the next batch, whose statements went in
/// meanwhile, is rolled back and refused as not written: nothing after a
/// failed batch is written, until a probe finds the database working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_went_in_while_the_one_before_failed_to_commit_is_not_written() {
    let batches = two_in_flight(true).await;
    batches.let_go().await;
    let doomed_err = batches.first.await.unwrap().unwrap_err();
    assert!(
        said(&doomed_err).contains("refused at commit by the test"),
        "{doomed_err}"
    );
    let next_err = batches.second.await.unwrap().unwrap_err();
    for err in [&doomed_err, &next_err] {
        assert_eq!(
            JournalFault::of(err),
            JournalFault::Refused,
            "certainly not written: {err}"
        );
    }
    assert!(
        said(&next_err).contains("refused at commit by the test"),
        "the next batch says why: {next_err}"
    );
    let journal = &batches.journal;
    assert_eq!(count_events(&batches.db).await, 0);
    assert!(
        journal
            .read_saga(batches.second_id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(journal.write_failure().is_some(), "writes stop");

    until("writes to work again", || journal.write_failure().is_none()).await;
    let later = journal.append(vec![started("shop", None)]).await.unwrap();
    assert_eq!(
        later[0].offset.get(),
        1,
        "the refused batches' offsets are taken again"
    );
}

fn payments() -> crate::saga::Participant {
    crate::saga::Participant::new(
        "payments",
        "http://127.0.0.1:7/shop.Payments/Charge",
        "http://127.0.0.1:7/shop.Payments/Refund",
        crate::saga::RetryOverrides::default(),
        None,
        crate::saga::Timestamp::now(),
    )
    .unwrap()
}

/// Every row of every table of the journal, as text: what a read-only open
/// must leave exactly as it found it.
async fn everything(client: &tokio_postgres::Client) -> Vec<String> {
    let tables = client
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = 'sagad' ORDER BY table_name",
            &[],
        )
        .await
        .unwrap();
    let mut rows = Vec::new();
    for table in &tables {
        let name: String = table.get(0);
        let text: Option<String> = client
            .query_one(
                &format!("SELECT string_agg(t::text, ';' ORDER BY t::text) FROM sagad.{name} t"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        rows.push(format!("{name}: {}", text.unwrap_or_default()));
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_reads_one_moment_beside_a_live_node_and_writes_nothing() {
    let url = database().await;
    let journal = open(&url, "node-a").await;
    let first = journal
        .append(vec![started("shop", Some("k"))])
        .await
        .unwrap();
    journal.put_participant(payments()).await.unwrap();
    let db = sql(&url).await;
    let before = everything(&db).await;

    let snapshot = PgSnapshot::open(PgTarget::parse(&url).unwrap())
        .await
        .unwrap();
    assert_eq!(snapshot.feed_head(), first[0].offset);
    // The node goes on; the snapshot still sees the moment it was taken.
    let later = journal.append(vec![started("shop", None)]).await.unwrap();
    assert_eq!(
        snapshot.read_after(Offset::ZERO, 10).await.unwrap(),
        first,
        "the later saga is not in the snapshot"
    );
    assert!(snapshot.read_saga(later[0].saga).await.unwrap().is_empty());
    assert_eq!(snapshot.unfinished().await.unwrap(), vec![first[0].saga]);
    assert_eq!(
        snapshot.saga_for_key("k").await.unwrap(),
        Some(first[0].saga)
    );
    let report = snapshot.check().await.unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(
        (report.sagas, report.events, report.participants),
        (1, 1, 1)
    );

    // Every write is refused, naming the read-only open; none reaches the
    // database.
    let refused = snapshot
        .append(vec![started("shop", None)])
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("opened read-only"),
        "{refused}"
    );
    assert!(snapshot.remove_sagas(vec![first[0].saga]).await.is_err());
    assert!(snapshot.put_participant(payments()).await.is_err());
    snapshot.close().await.unwrap();
    assert!(matches!(
        snapshot.read_saga(first[0].saga).await,
        Err(JournalError::Closed)
    ));
    drop(snapshot);

    // Only the node's own write is new: no epoch drawn, no node row, no lease.
    journal.close().await.unwrap();
    let after = everything(&db).await;
    let changed: Vec<_> = after.iter().filter(|t| !before.contains(t)).collect();
    for table in &changed {
        assert!(
            ["event", "saga", "feed_head", "node"]
                .iter()
                .any(|t| table.starts_with(&format!("{t}: "))),
            "{table}"
        );
    }
    let epochs: i64 = db
        .query_one("SELECT last_value FROM sagad.epoch_seq", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(epochs, 1, "the snapshot drew no epoch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_a_database_without_the_schema_or_with_a_newer_one_is_refused() {
    let url = database().await;
    let err = PgSnapshot::open(PgTarget::parse(&url).unwrap())
        .await
        .err()
        .expect("no schema");
    assert!(err.to_string().starts_with("no sagad journal in "), "{err}");
    let db = sql(&url).await;
    let created: bool = db
        .query_one("SELECT to_regnamespace('sagad') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!created, "a read-only open creates nothing");

    drop(open(&url, "node-a").await);
    db.execute("UPDATE sagad.schema_version SET version = 99", &[])
        .await
        .unwrap();
    let err = PgSnapshot::open(PgTarget::parse(&url).unwrap())
        .await
        .err()
        .expect("newer schema");
    assert!(
        matches!(
            err,
            JournalError::Postgres(PgError::NewerSchema { found: 99, .. })
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_names_rows_without_events_events_without_rows_orphans_and_bad_participants() {
    let url = database().await;
    let journal = open(&url, "node-a").await;
    let running = journal.append(vec![started("shop", None)]).await.unwrap();
    let alone = journal.append(vec![started("shop", None)]).await.unwrap();
    journal.put_participant(payments()).await.unwrap();
    journal.close().await.unwrap();
    let db = sql(&url).await;
    let snapshot = || async {
        PgSnapshot::open(PgTarget::parse(&url).unwrap())
            .await
            .unwrap()
    };
    assert!(snapshot().await.check().await.unwrap().is_clean());

    let (running, alone) = (running[0].saga, alone[0].saga);
    db.batch_execute(&format!(
        "INSERT INTO sagad.saga (saga_id, definition, status, created_at, owner_node, owner_epoch, last_seq)
             VALUES ('{}', 'shop', 'completed', now(), 'node-a', 1, 3);
         DELETE FROM sagad.saga WHERE saga_id = '{alone}';
         UPDATE sagad.saga SET owner_node = 'node-gone' WHERE saga_id = '{running}';
         UPDATE sagad.participant SET body = '\\x01';
         UPDATE sagad.feed_head SET last = 1",
        crate::saga::SagaId::generate()
    ))
    .await
    .unwrap();
    let report = snapshot().await.check().await.unwrap();
    let text = report.to_string();
    for want in [
        "has a saga row but no events".to_string(),
        format!("saga {alone}: has 1 event(s) but no saga row"),
        format!(
            "saga {running}: running, owned by node 'node-gone', which has no row in sagad.node"
        ),
        "'payments' is damaged".to_string(),
        "sagad.feed_head: last is 1, but an event has offset 2".to_string(),
    ] {
        assert!(text.contains(&want), "{want} in {text}");
    }
    assert_eq!(report.problems.len(), 5, "{text}");
}
