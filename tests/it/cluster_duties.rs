//! Cluster mode's duties: two `sagad serve --journal postgres://…` processes
//! on one throwaway PostgreSQL database, both with `--retention`, both
//! posting to one on-failed webhook. One node archives at a time, into its
//! own data directory; when it dies (SIGKILL), the other takes the duty and
//! archives what is left, and a holder killed between its archive flush and
//! the removal loses nothing (the next holder archives those sagas again).
//! A FAILED saga's notice is posted once cluster-wide, by its owner: not
//! again by another node's start, and, when the owner dies before the
//! webhook's answer, posted again by the node that takes its sagas over (a
//! repeat at most, never none).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::Path,
};

use sagad::proto::v1::{self as pb, coordinator_client::CoordinatorClient};
use serde_json::Value;
use tokio_postgres::Client as Sql;

use crate::{
    archive::archive_lines,
    common::{
        self, Answer, Client, FakeParticipant, Served, poll_until,
        postgres::{database, sql},
        process::SagadProcess,
        quick_retry, register_shop, sample, scrape, start_order, state,
    },
    webhook::{self, Receiver},
};

/// Short, so a takeover comes within seconds (at least a second: the setting's floor).
const LEASE_TTL: &str = "2s";
/// Long enough that the sagas a test finishes right before it stops a node
/// are not old enough yet; short enough that archiving comes quickly.
const RETENTION: &str = "2s";

/// `sagad serve` as node `id` on the database at `url`, with `extra`
/// settings.
fn node(dir: &Path, url: &str, id: &str, extra: &[(&str, &str)]) -> SagadProcess {
    let mut env = vec![
        ("SAGAD_JOURNAL", url),
        ("SAGAD_NODE_ID", id),
        ("SAGAD_LEASE_TTL", LEASE_TTL),
    ];
    env.extend_from_slice(extra);
    SagadProcess::spawn(dir, &env)
}

async fn client(addr: SocketAddr) -> Client {
    CoordinatorClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

/// A shop that does everything asked.
async fn willing_shop() -> Served {
    common::serve(FakeParticipant::new(|_| Answer::Ok)).await
}

/// The node holding the archiver duty, if any did yet.
async fn archiver(db: &Sql) -> Option<String> {
    db.query_opt(
        "SELECT node_id FROM sagad.duty WHERE name = 'archiver'",
        &[],
    )
    .await
    .unwrap()
    .map(|row| row.get(0))
}

/// Polls until none of `ids` is in the journal any more.
async fn until_archived(db: &Sql, ids: &[String]) {
    poll_until("the sagas to leave the journal", || async move {
        let left: i64 = db
            .query_one(
                "SELECT count(*) FROM sagad.saga WHERE saga_id::text = ANY($1)",
                &[&ids],
            )
            .await
            .unwrap()
            .get(0);
        (left == 0).then_some(())
    })
    .await;
}

/// The archived records under `data_dir`, by saga id, every copy.
fn archived(data_dir: &Path) -> BTreeMap<String, Vec<Value>> {
    let mut by_id: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (_, record) in archive_lines(data_dir) {
        by_id
            .entry(record["id"].as_str().unwrap().to_string())
            .or_default()
            .push(record);
    }
    by_id
}

fn set(ids: &[String]) -> BTreeSet<String> {
    ids.iter().cloned().collect()
}

/// Starts `n` orders on `client` and waits for each to complete.
async fn completed_orders(client: &mut Client, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let saga = start_order(client, "{}", true).await;
        assert_eq!(state(&saga), pb::SagaState::Completed);
        ids.push(saga.id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_archives_and_when_it_dies_the_other_archives_what_is_left() {
    let _heavy = common::heavy().await;
    let url = database().await;
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let retain = [("SAGAD_RETENTION", RETENTION)];
    let mut nodes = vec![
        node(dirs[0].path(), &url, "node-a", &retain),
        node(dirs[1].path(), &url, "node-b", &retain),
    ];
    let shop = willing_shop().await;
    let mut clients = vec![client(nodes[0].addr).await, client(nodes[1].addr).await];
    for c in &mut clients {
        register_shop(c, &shop, quick_retry(5, 5)).await;
    }
    // Sagas run on both nodes; the archive takes them all, whoever ran them.
    let mut first = completed_orders(&mut clients[0], 3).await;
    first.extend(completed_orders(&mut clients[1], 3).await);
    let db = sql(&url).await;
    until_archived(&db, &first).await;

    let holder = archiver(&db).await.expect("a node holds the archiver duty");
    let (h, s) = if holder == "node-a" { (0, 1) } else { (1, 0) };
    let in_holder = archived(dirs[h].path());
    assert_eq!(
        in_holder.keys().cloned().collect::<BTreeSet<_>>(),
        set(&first)
    );
    assert!(
        in_holder.values().all(|copies| copies.len() == 1),
        "each saga archived once"
    );
    assert!(
        archive_lines(dirs[s].path()).is_empty(),
        "only the duty's holder archives"
    );

    // The holder is frozen (so it archives nothing more), sagas end on the
    // survivor, and the holder is killed: the survivor takes the duty once
    // its lease ran out, and archives them.
    nodes[h].signal("STOP");
    let second = completed_orders(&mut clients[s], 4).await;
    let survivor = nodes.remove(s);
    nodes.remove(0).kill();
    until_archived(&db, &second).await;
    assert_eq!(
        archiver(&db).await.as_deref(),
        Some(if s == 0 { "node-a" } else { "node-b" })
    );
    let in_survivor = archived(dirs[s].path());
    assert_eq!(
        in_survivor.keys().cloned().collect::<BTreeSet<_>>(),
        set(&second),
        "the survivor archives what was left, and only that"
    );
    assert_eq!(
        archived(dirs[h].path())
            .keys()
            .cloned()
            .collect::<BTreeSet<_>>(),
        set(&first),
        "the dead holder's archive is as it left it"
    );
    let (status, stderr) = survivor.terminate();
    assert!(status.success(), "{status}: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_killed_between_its_archive_flush_and_the_removal_loses_nothing() {
    let _heavy = common::heavy().await;
    let url = database().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let db = sql(&url).await;
    // node-a alone first, so the duty is its own; it dies at its first
    // batch, right after the archive is synced, before the removal.
    let mut a = node(
        dir_a.path(),
        &url,
        "node-a",
        &[
            ("SAGAD_RETENTION", "1s"),
            ("FAILPOINTS", "archive::after_flush=return"),
        ],
    );
    poll_until("node-a to hold the archiver duty", || async {
        (archiver(&db).await.as_deref() == Some("node-a")).then_some(())
    })
    .await;
    let b = node(dir_b.path(), &url, "node-b", &[("SAGAD_RETENTION", "1s")]);
    let shop = willing_shop().await;
    let mut on_b = client(b.addr).await;
    register_shop(&mut on_b, &shop, quick_retry(5, 5)).await;
    let started = completed_orders(&mut on_b, 4).await;

    let (_, stderr) = tokio::task::spawn_blocking(move || a.wait_exit())
        .await
        .unwrap();
    assert!(
        stderr.contains("crash point archive::after_flush"),
        "died elsewhere:\n{stderr}"
    );
    let at_crash = archived(dir_a.path());
    assert!(!at_crash.is_empty(), "the crash follows a synced batch");

    // node-b takes the duty and archives everything, the sagas node-a
    // archived without removing them too: they were still in the journal.
    until_archived(&db, &started).await;
    assert_eq!(archiver(&db).await.as_deref(), Some("node-b"));
    let in_b = archived(dir_b.path());
    for (id, copies) in &at_crash {
        assert_eq!(
            in_b.get(id),
            Some(copies),
            "saga {id}: archived again by node-b, the same record"
        );
    }
    // Read together, the two archives hold every saga; kept once per id.
    let mut union = in_b.keys().cloned().collect::<BTreeSet<_>>();
    union.extend(at_crash.keys().cloned());
    assert_eq!(union, set(&started), "every saga archived, none lost");
    let (status, stderr) = b.terminate();
    assert!(status.success(), "{status}: {stderr}");
}

/// Two nodes posting to `receiver`, serving `/metrics`.
fn webhook_node(dir: &Path, url: &str, id: &str, receiver: &Receiver) -> SagadProcess {
    let hook = receiver.url();
    node(
        dir,
        url,
        id,
        &[
            ("SAGAD_ON_FAILED_WEBHOOK", &hook),
            ("SAGAD_METRICS_LISTEN", "127.0.0.1:0"),
        ],
    )
}

/// Starts a saga on `client` that ends FAILED.
async fn failed_saga(client: &mut Client) -> String {
    let saga = start_order(client, "stuck", true).await;
    assert_eq!(state(&saga), pb::SagaState::Failed);
    saga.id
}

/// The node whose acknowledgement of saga `id`'s notice is recorded, once one is.
async fn until_acknowledged_by(db: &Sql, id: &str) -> String {
    poll_until(
        &format!("an acknowledgement of {id}'s notice"),
        || async move {
            db.query_opt(
                "SELECT acked_by FROM sagad.notice WHERE saga_id::text = $1",
                &[&id],
            )
            .await
            .unwrap()
            .map(|row| row.get(0))
        },
    )
    .await
}

/// Waits until `node`'s start-up scan of notices ended; returns how many it
/// posted again.
async fn scan_posted(node: &SagadProcess) -> f64 {
    let metrics = node.metrics_addr();
    poll_until("the start-up scan of notices to end", || async move {
        sample(&scrape(metrics).await, "sagad_webhook_redelivered_notices")
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sagas_notice_is_posted_once_by_its_owner_never_per_node() {
    let _heavy = common::heavy().await;
    let url = database().await;
    let receiver = Receiver::start(0).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = webhook_node(dir_a.path(), &url, "node-a", &receiver);
    let b = webhook_node(dir_b.path(), &url, "node-b", &receiver);
    let shop = webhook::shop().await;
    let (mut on_a, mut on_b) = (client(a.addr).await, client(b.addr).await);
    for c in [&mut on_a, &mut on_b] {
        register_shop(c, &shop, quick_retry(3, 3)).await;
    }
    let on_a_failed = failed_saga(&mut on_a).await;
    let on_b_failed = failed_saga(&mut on_b).await;
    receiver.until_acknowledged(&on_a_failed).await;
    receiver.until_acknowledged(&on_b_failed).await;
    let db = sql(&url).await;
    assert_eq!(until_acknowledged_by(&db, &on_a_failed).await, "node-a");
    assert_eq!(until_acknowledged_by(&db, &on_b_failed).await, "node-b");

    // node-b starts again: its scan finds nothing to post, node-a's
    // acknowledged notice no more than its own (a ledger per node would
    // post node-a's again).
    let (status, stderr) = b.terminate();
    assert!(status.success(), "{status}: {stderr}");
    let b = webhook_node(dir_b.path(), &url, "node-b", &receiver);
    assert_eq!(scan_posted(&b).await, 0.0);
    for id in [&on_a_failed, &on_b_failed] {
        assert_eq!(receiver.about(id).len(), 1, "saga {id} posted once");
    }
    assert!(
        !dir_a.path().join(sagad::webhook::LEDGER_FILE).exists(),
        "no ledger of its own beside a shared journal"
    );
    for node in [a, b] {
        let (status, stderr) = node.terminate();
        assert!(status.success(), "{status}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_in_flight_when_its_owner_dies_is_posted_again_by_the_new_owner() {
    let _heavy = common::heavy().await;
    let url = database().await;
    let receiver = Receiver::start(0).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = webhook_node(dir_a.path(), &url, "node-a", &receiver);
    let b = webhook_node(dir_b.path(), &url, "node-b", &receiver);
    let shop = webhook::shop().await;
    let mut on_a = client(a.addr).await;
    register_shop(&mut on_a, &shop, quick_retry(3, 3)).await;

    // node-a's POST arrives and waits for its answer; node-a dies meanwhile.
    receiver.hold(true);
    let id = failed_saga(&mut on_a).await;
    poll_until("node-a's POST to arrive", || {
        let arrived = !receiver.about(&id).is_empty();
        async move { arrived.then_some(()) }
    })
    .await;
    a.kill();
    receiver.hold(false);

    // node-b takes the saga over with the rest of node-a's, finds the
    // notice unacknowledged, and posts it: once more, not never.
    let db = sql(&url).await;
    assert_eq!(until_acknowledged_by(&db, &id).await, "node-b");
    let posts = receiver.about(&id);
    assert_eq!(
        posts.len(),
        2,
        "node-a's, unanswered, then node-b's: {posts:#?}"
    );
    assert_eq!(posts[1].status, 200);
    assert!(
        posts
            .iter()
            .all(|p| p.body["delivery_id"] == posts[0].body["delivery_id"]),
        "one delivery id, for the receiver to dedupe on"
    );
    // Acknowledged now: node-b's next start posts nothing.
    let (status, stderr) = b.terminate();
    assert!(status.success(), "{status}: {stderr}");
    let b = webhook_node(dir_b.path(), &url, "node-b", &receiver);
    assert_eq!(scan_posted(&b).await, 0.0);
    assert_eq!(receiver.about(&id).len(), 2);
    let (status, stderr) = b.terminate();
    assert!(status.success(), "{status}: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_its_dead_owner_never_got_acknowledged_is_posted_by_the_new_owner() {
    let _heavy = common::heavy().await;
    let url = database().await;
    // Refused until node-a is gone: node-a fails its POSTs, then dies.
    let receiver = Receiver::start(u32::MAX).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = webhook_node(dir_a.path(), &url, "node-a", &receiver);
    let b = webhook_node(dir_b.path(), &url, "node-b", &receiver);
    let shop = webhook::shop().await;
    let mut on_a = client(a.addr).await;
    register_shop(&mut on_a, &shop, quick_retry(3, 3)).await;
    let id = failed_saga(&mut on_a).await;
    poll_until("a refused POST from node-a", || {
        let refused = receiver.about(&id).iter().any(|p| p.status == 500);
        async move { refused.then_some(()) }
    })
    .await;
    a.kill();
    let refused = receiver.about(&id).len();
    receiver
        .hook
        .fail_next
        .store(0, std::sync::atomic::Ordering::SeqCst);

    let db = sql(&url).await;
    assert_eq!(until_acknowledged_by(&db, &id).await, "node-b");
    // node-b's POST, answered; and at most one more, if a POST node-a sent
    // just before it died reached the receiver after the kill.
    let posts = receiver.about(&id);
    let answered = posts.iter().filter(|p| p.status == 200).count();
    assert!((1..=2).contains(&answered), "{posts:#?}");
    assert!(posts.len() <= refused + 2, "{posts:#?}");
    let (status, stderr) = b.terminate();
    assert!(status.success(), "{status}: {stderr}");
}
