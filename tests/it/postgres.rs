//! `sagad serve --journal postgres://…`: the real binary over a throwaway
//! PostgreSQL (`common::postgres`): sagas of mixed fates survive SIGKILLs and
//! restarts, a fenced coordinator journals nothing more, bad journals stop
//! the start with a message that says which and why, and the nodes sharing
//! a journal are listed with their leases and the sagas they own.

use std::{collections::HashMap, time::Duration};

use sagad::{
    journal::{
        Journal, PgJournal,
        postgres::{NodeId, PgOptions, PgTarget},
    },
    proto::v1 as pb,
};
use tonic::Code;

use crate::common::{
    self, Answer, FakeParticipant, ServingStatus,
    chaos::Harness,
    poll_until,
    postgres::{database, journal_is_whole, sql},
    process::{SagadProcess, sagad_client},
};

const SAGAS: usize = 40;
const KILLS: u32 = 3;
const LANES: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_killed_mid_way_finishes_every_acknowledged_saga() {
    let url = database().await;
    let env = [("SAGAD_JOURNAL", url.as_str()), ("SAGAD_NODE_ID", "node-1")];
    let owned_env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let harness = Harness::start(&env).await;
    let seed = fastrand::u64(..);
    println!("postgres kill test seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let lanes = harness.start_lanes(LANES, SAGAS, "pg-s", &mut rng);
    // Kill while sagas are in flight: each time a few more participant
    // calls have arrived since the last restart.
    for _ in 0..KILLS {
        let seen = harness.shop.fake.calls().len();
        poll_until("more participant calls", || {
            let calls = harness.shop.fake.calls().len();
            async move { (calls >= seen + 5).then_some(()) }
        })
        .await;
        let (harness, env) = (harness.clone(), owned_env.clone());
        tokio::task::spawn_blocking(move || {
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            harness.kill_and_restart(&env);
        })
        .await
        .unwrap();
    }
    lanes.finish().await;
    let summary = harness.settle_and_check().await;
    println!("{summary:?}");
    assert!(summary.sagas >= SAGAS);
    assert_eq!(summary.listed, summary.sagas, "no saga twice, none lost");
    assert!(
        summary.completed > 0 && summary.compensated > 0,
        "{summary:?}"
    );
    assert_eq!(summary.kills, KILLS);

    // What PostgreSQL holds: every restart joined with a new epoch; offsets
    // gap-free from 1; each saga's events numbered 1, 2, 3, … without a hole.
    let client = sql(&url).await;
    let epoch: i64 = client
        .query_one("SELECT epoch FROM sagad.node WHERE node_id = 'node-1'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        epoch,
        1 + i64::from(KILLS),
        "each start joins with a new epoch"
    );
    assert_eq!(journal_is_whole(&client).await, summary.sagas);
    let open: i64 = client
        .query_one(
            "SELECT count(*) FROM sagad.saga WHERE status IN ('running', 'compensating')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(open, 0, "the saga rows say every saga ended");
    harness.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_coordinator_journals_nothing_more() {
    let url = database().await;
    let dir = tempfile::tempdir().unwrap();
    let shop = common::serve(FakeParticipant::new(|_| Answer::Ok)).await;
    let process = SagadProcess::spawn(
        dir.path(),
        &[("SAGAD_JOURNAL", &url), ("SAGAD_NODE_ID", "node-1")],
    );
    let mut client =
        pb::coordinator_client::CoordinatorClient::connect(format!("http://{}", process.addr))
            .await
            .unwrap();
    common::register_shop(&mut client, &shop, common::quick_retry(3, 3)).await;
    let done = common::start_order(&mut client, "{}", true).await;
    assert_eq!(common::state(&done), pb::SagaState::Completed);

    let db = sql(&url).await;
    let count = |table: &'static str| {
        let db = &db;
        async move {
            db.query_one(&format!("SELECT count(*) FROM sagad.{table}"), &[])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    let (events, sagas, calls) = (
        count("event").await,
        count("saga").await,
        shop.fake.calls().len(),
    );
    // Another process takes this node's identity behind its back.
    db.execute(
        "UPDATE sagad.node SET epoch = epoch + 1 WHERE node_id = 'node-1'",
        &[],
    )
    .await
    .unwrap();
    let order = || pb::StartSagaRequest {
        definition: "order-fulfillment".into(),
        payload: b"{}".to_vec(),
        ..Default::default()
    };
    let refused = client.start_saga(order()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("fenced"),
        "{}",
        refused.message()
    );
    common::until_health(process.addr, "", ServingStatus::NotServing).await;
    let again = client.start_saga(order()).await.unwrap_err();
    assert_eq!(again.code(), Code::Unavailable);
    assert_eq!(
        count("event").await,
        events,
        "no event journaled once fenced"
    );
    assert_eq!(count("saga").await, sagas);
    assert_eq!(shop.fake.calls().len(), calls, "no participant called");
    // Reads still answer from the journal.
    let read = common::get(&mut client, &done.id).await;
    assert_eq!(common::state(&read), pb::SagaState::Completed);
    drop(process);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_journal_stops_the_start_naming_the_host_not_the_password() {
    // A port nothing listens on: bound, then let go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://sagad:hunter2@127.0.0.1:{port}/sagad");
    let (code, stderr) = common::sagad_exit(&["--journal", &url], &[]).await;
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(stderr.contains("cannot connect"), "{stderr}");
    assert!(
        !stderr.contains("hunter2"),
        "the password is never shown: {stderr}"
    );
    // A value that is no URL at all is refused before anything is tried.
    let (code, stderr) =
        common::sagad_exit(&[], &[("SAGAD_JOURNAL", "mysql://root:hunter2@db")]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("SAGAD_JOURNAL"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_of_a_newer_sagad_is_refused_naming_both_versions() {
    let url = database().await;
    let options = PgOptions::new(
        PgTarget::parse(&url).unwrap(),
        NodeId::new("node-1").unwrap(),
        "127.0.0.1:0",
    );
    PgJournal::open(options)
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
    let db = sql(&url).await;
    db.execute("UPDATE sagad.schema_version SET version = 7", &[])
        .await
        .unwrap();
    let epochs = || async {
        db.query("SELECT node_id, epoch FROM sagad.node", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect::<HashMap<String, i64>>()
    };
    let before = epochs().await;
    let (code, stderr) = common::sagad_exit(&["--journal", &url], &[]).await;
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("schema version 7")
            && stderr.contains(&format!(
                "version {}",
                sagad::journal::postgres::schema::SCHEMA_VERSION
            )),
        "{stderr}"
    );
    let after = epochs().await;
    assert_eq!(before, after, "a refused start changes nothing (no join)");
}

/// A client of the coordinator at `addr`, once its recovery is done (until
/// then every call answers UNAVAILABLE "still recovering").
async fn ready_client(addr: std::net::SocketAddr) -> common::Client {
    let client = pb::coordinator_client::CoordinatorClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    common::until_health(addr, "", ServingStatus::Serving).await;
    client
}

/// The roster as `node` answers it, by node id.
async fn list_nodes(client: &mut common::Client) -> Vec<pb::Node> {
    client
        .list_nodes(pb::ListNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_nodes_shows_every_node_its_lease_and_the_sagas_it_owns() {
    let url = database().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Every call is answered "retry in a minute": the saga waits, RUNNING,
    // owned by the node that started it.
    let shop = common::serve(FakeParticipant::new(|_| {
        Answer::Retry(Some(Duration::from_secs(60)))
    }))
    .await;
    let a = SagadProcess::spawn(
        dir_a.path(),
        &[("SAGAD_JOURNAL", &url), ("SAGAD_NODE_ID", "node-a")],
    );
    let b = SagadProcess::spawn(
        dir_b.path(),
        &[("SAGAD_JOURNAL", &url), ("SAGAD_NODE_ID", "node-b")],
    );
    let (mut on_a, mut on_b) = (ready_client(a.addr).await, ready_client(b.addr).await);
    common::register_shop(&mut on_a, &shop, common::quick_retry(100, 3)).await;
    let waiting = common::start_order(&mut on_a, "{}", false).await;
    poll_until("the saga's first call", || {
        let called = !shop.fake.calls().is_empty();
        async move { called.then_some(()) }
    })
    .await;

    // Either node answers for the whole cluster, from the database.
    for client in [&mut on_a, &mut on_b] {
        let nodes = list_nodes(client).await;
        let ids: Vec<&str> = nodes.iter().map(|n| n.node_id.as_str()).collect();
        assert_eq!(ids, ["node-a", "node-b"], "{nodes:?}");
        for n in &nodes {
            assert!(n.epoch >= 1, "{n:?}");
            assert!(!n.lease_expired, "{n:?}");
            let left = n.lease_remaining.unwrap();
            assert!(left.seconds > 0 || left.nanos > 0, "{n:?}");
            assert!(n.joined_at.is_some(), "{n:?}");
        }
        let owned: Vec<u64> = nodes.iter().map(|n| n.owned_open).collect();
        assert_eq!(owned, [1, 0], "node-a owns the waiting saga: {nodes:?}");
        // Where each really serves, its port 0 resolved.
        let addrs: Vec<&str> = nodes.iter().map(|n| n.addr.as_str()).collect();
        assert_eq!(addrs, [a.addr.to_string(), b.addr.to_string()], "{nodes:?}");
    }
    for client in [&mut on_a, &mut on_b] {
        let saga = common::get(client, &waiting.id).await;
        assert_eq!(common::state(&saga), pb::SagaState::Running);
        assert_eq!(saga.owner, "node-a");
    }

    // The command line: the table names both nodes, `get` the owner.
    let run = sagad_client(b.addr, &["cluster", "nodes"]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(
        lines[0].starts_with("NODE") && lines[0].contains("LEASE"),
        "{run:#?}"
    );
    assert!(
        lines[1].starts_with("node-a") && lines[1].contains("s left"),
        "{run:#?}"
    );
    assert!(lines[2].starts_with("node-b"), "{run:#?}");
    let run = sagad_client(a.addr, &["cluster", "nodes", "--json"]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json[0]["node_id"], "node-a", "{json:#}");
    assert_eq!(json[0]["owned_open"], 1, "{json:#}");
    assert_eq!(json[1]["node_id"], "node-b", "{json:#}");
    assert!(
        json[1]["lease_remaining_ms"].as_f64().unwrap() > 0.0,
        "{json:#}"
    );
    let run = sagad_client(b.addr, &["get", &waiting.id]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        run.stdout.lines().any(|l| l.trim() == "owner     node-a"),
        "{run:#?}"
    );
    let run = sagad_client(b.addr, &["get", &waiting.id, "--json"]).await;
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["owner"], "node-a", "{json:#}");

    // node-b dies; its lease runs out (set back here rather than waited for:
    // the lease is 10 s). The roster says so, by the database's clock.
    b.kill();
    let db = sql(&url).await;
    db.execute(
        "UPDATE sagad.node SET lease_until = clock_timestamp() - interval '3 seconds'
         WHERE node_id = 'node-b'",
        &[],
    )
    .await
    .unwrap();
    let nodes = list_nodes(&mut on_a).await;
    let dead = &nodes[1];
    assert!(dead.lease_expired, "{nodes:?}");
    assert!(dead.lease_remaining.unwrap().seconds <= -3, "{nodes:?}");
    assert!(!nodes[0].lease_expired, "{nodes:?}");
    let run = sagad_client(a.addr, &["cluster", "nodes"]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("node-b"))
        .unwrap();
    let ago: u64 = line
        .split("expired ")
        .nth(1)
        .and_then(|rest| rest.split("s ago").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no 'expired Ns ago' in {line:?}"));
    assert!(ago >= 3, "{run:#?}");
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_coordinator_has_no_nodes_to_list_and_no_owners() {
    let server = common::TestServer::start().await;
    let mut client = server.client().await;
    let refused = client
        .list_nodes(pb::ListNodesRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert_eq!(refused.message(), sagad::engine::NO_CLUSTER);
    let run = sagad_client(server.addr, &["cluster", "nodes"]).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert_eq!(
        run.stderr.trim_end(),
        format!(
            "sagad: server error FAILED_PRECONDITION: {}",
            sagad::engine::NO_CLUSTER
        ),
        "{run:#?}"
    );
    assert!(run.stdout.is_empty(), "{run:#?}");

    let shop = common::serve(FakeParticipant::new(|_| Answer::Ok)).await;
    common::register_shop(&mut client, &shop, common::quick_retry(3, 3)).await;
    let done = common::start_order(&mut client, "{}", true).await;
    assert_eq!(common::get(&mut client, &done.id).await.owner, "");
    let run = sagad_client(server.addr, &["get", &done.id]).await;
    assert!(!run.stdout.contains("owner"), "{run:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_in_use_by_a_sled_server_is_refused_before_joining() {
    let url = database().await;
    let dir = tempfile::tempdir().unwrap();
    let sled = SagadProcess::spawn(dir.path(), &[]);
    let (code, stderr) = common::sagad_exit(
        &["--data-dir", &dir.path().display().to_string()],
        &[("SAGAD_JOURNAL", url.as_str()), ("SAGAD_NODE_ID", "node-1")],
    )
    .await;
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("already in use by another sagad process"),
        "{stderr}"
    );
    let joined: i64 = sql(&url)
        .await
        .query_one("SELECT count(*) FROM sagad.node", &[])
        .await
        .map(|row| row.get(0))
        .unwrap_or(0);
    assert_eq!(joined, 0, "a refused start joins nothing");
    drop(sled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_with_the_same_node_id_fences_the_first_for_good() {
    let url = database().await;
    let (first_dir, second_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let env = [
        ("SAGAD_JOURNAL", url.as_str()),
        ("SAGAD_NODE_ID", "node-1"),
        ("SAGAD_LEASE_TTL", "2s"),
    ];
    let first = SagadProcess::spawn(first_dir.path(), &env);
    common::until_health(first.addr, "", ServingStatus::Serving).await;
    // The newer process wins the name; the older one is fenced, and stays
    // so (its lease is the newer one's, and runs): it never takes it back.
    let second = SagadProcess::spawn(second_dir.path(), &env);
    common::until_health(second.addr, "", ServingStatus::Serving).await;
    common::until_health(first.addr, "", ServingStatus::NotServing).await;
    poll_until("the first to say it stays fenced", || {
        let said = first.stderr_so_far();
        async move {
            said.contains("another process runs as this node")
                .then_some(())
        }
    })
    .await;
    let mut on_second =
        pb::coordinator_client::CoordinatorClient::connect(format!("http://{}", second.addr))
            .await
            .unwrap();
    let shop = common::serve(FakeParticipant::new(|_| Answer::Ok)).await;
    common::register_shop(&mut on_second, &shop, common::quick_retry(3, 3)).await;
    let done = common::start_order(&mut on_second, "{}", true).await;
    assert_eq!(common::state(&done), pb::SagaState::Completed);
    common::until_health(first.addr, "", ServingStatus::NotServing).await;
    assert!(!first.stderr_so_far().contains("joined the journal again"));
    drop(first);
    drop(second);
}
