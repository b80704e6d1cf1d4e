//! Cluster mode as `/metrics` and health show it: one real `sagad serve
//! --journal postgres://…` with `--metrics-listen`, on a throwaway
//! PostgreSQL. Its lease, epoch and open sagas are exported; cut off from
//! the database longer than its lease while writing nothing, it turns
//! NOT_SERVING by itself; fenced behind its back meanwhile, it counts the
//! fence when the database answers again, joins again (its lease ran out),
//! and serves again under the new epoch. A survivor counts the node it
//! deposed and the sagas it took over. With sled there is no cluster, and
//! none of these series.

use std::{net::SocketAddr, time::Duration};

use tokio_postgres::Client as Sql;

use crate::common::{
    self, Answer, FakeParticipant, ServingStatus, poll_until,
    postgres::{database, sql},
    process::SagadProcess,
    sample, scrape,
};

/// Short, so a lapse comes within seconds (the setting's floor is a second).
const LEASE_TTL: &str = "2s";
const NODE: &str = "node-m";

const LEASE_HELD: &str = "sagad_cluster_lease_held";
const EPOCH: &str = "sagad_cluster_epoch";
const OWNED: &str = "sagad_cluster_owned_sagas";
const FENCED: &str = "sagad_cluster_fenced_total";
const REJOINS: &str = "sagad_cluster_rejoins_total";
const DEPOSED: &str = "sagad_cluster_nodes_deposed_total";
const TAKEN_OVER: &str = "sagad_takeover_sagas_total";

/// `sagad serve` as node `id` on the database at `url`, with `args`.
fn node(dir: &std::path::Path, url: &str, id: &str, args: &[&str]) -> SagadProcess {
    SagadProcess::spawn_with(
        dir,
        args,
        &[
            ("SAGAD_JOURNAL", url),
            ("SAGAD_NODE_ID", id),
            ("SAGAD_LEASE_TTL", LEASE_TTL),
        ],
    )
}

/// A shop that asks for every call to be tried again in an hour: a saga
/// started on it stays open, parked, and its node writes nothing while it
/// waits.
async fn waiting_shop() -> common::Served {
    common::serve(FakeParticipant::new(|_| {
        Answer::Retry(Some(Duration::from_secs(3600)))
    }))
    .await
}

async fn client(addr: SocketAddr) -> common::Client {
    sagad::proto::v1::coordinator_client::CoordinatorClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

/// Scrapes `addr` until `series` reads `want`; returns that scrape.
async fn until_metric(addr: SocketAddr, series: &str, want: f64) -> String {
    poll_until(&format!("{series} to read {want}"), || async move {
        let text = scrape(addr).await;
        (sample(&text, series) == Some(want)).then_some(text)
    })
    .await
}

async fn row_epoch(db: &Sql) -> i64 {
    db.query_one("SELECT epoch FROM sagad.node WHERE node_id = $1", &[&NODE])
        .await
        .unwrap()
        .get(0)
}

/// The test's database as the node sees it: reachable, or not at all.
struct Reach {
    /// A session on the server's `postgres` database: a database cannot
    /// refuse connections from a session of its own.
    admin: Sql,
    /// The test's database.
    name: String,
    /// The test's own session on it, which the outage spares.
    spared: i32,
}

impl Reach {
    async fn new(url: &str, db: &Sql) -> Self {
        let (server, _) = url.rsplit_once('/').unwrap();
        let row = db
            .query_one("SELECT current_database(), pg_backend_pid()", &[])
            .await
            .unwrap();
        Self {
            admin: sql(&format!("{server}/postgres")).await,
            name: row.get(0),
            spared: row.get(1),
        }
    }

    /// Refuses every new connection to the database and ends every session
    /// on it but the test's: to the node, the database is unreachable, while
    /// the test can still change it.
    async fn cut_off(&self) {
        self.allow(false).await;
        self.admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = $1 AND pid <> $2",
                &[&self.name, &self.spared],
            )
            .await
            .unwrap();
    }

    async fn restore(&self) {
        self.allow(true).await;
    }

    async fn allow(&self, allow: bool) {
        self.admin
            .batch_execute(&format!(
                "ALTER DATABASE \"{}\" ALLOW_CONNECTIONS {allow}",
                self.name
            ))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_epoch_and_owned_sagas_are_exported_and_health_follows_the_lease() {
    let _heavy = common::heavy().await;
    let url = database().await;
    let dir = tempfile::tempdir().unwrap();
    let shop = waiting_shop().await;
    let node = node(dir.path(), &url, NODE, &["--metrics-listen", "127.0.0.1:0"]);
    let metrics = node.metrics_addr();
    let db = sql(&url).await;
    common::until_health(node.addr, "", ServingStatus::Serving).await;

    // Joined: the lease is held, at the epoch its row holds, nothing owned.
    let text = scrape(metrics).await;
    let joined = row_epoch(&db).await;
    assert_eq!(sample(&text, LEASE_HELD), Some(1.0), "{text}");
    assert_eq!(sample(&text, EPOCH), Some(joined as f64), "{text}");
    assert_eq!(sample(&text, OWNED), Some(0.0), "{text}");
    for counter in [FENCED, REJOINS, DEPOSED, TAKEN_OVER] {
        assert_eq!(sample(&text, counter), Some(0.0), "{counter} in {text}");
    }
    assert!(text.contains(&format!("# HELP {LEASE_HELD} ")), "{text}");

    // A saga that waits is counted at the next renewal.
    let mut client = client(node.addr).await;
    common::register_shop(&mut client, &shop, common::quick_retry(10, 10)).await;
    common::start_order(&mut client, "{}", false).await;
    until_metric(metrics, OWNED, 1.0).await;
    until_metric(metrics, "sagad_sagas_parked", 1.0).await;

    // Cut off from the database, idle: no batch fails, and still the lease
    // runs out by the node's own count.
    let reach = Reach::new(&url, &db).await;
    reach.cut_off().await;
    common::until_health(node.addr, "", ServingStatus::NotServing).await;
    until_metric(metrics, LEASE_HELD, 0.0).await;

    // Meanwhile the cluster fences it: its lease is in the past and its
    // epoch moved on, as a takeover leaves it.
    let fenced: i64 = db
        .query_one(
            "UPDATE sagad.node SET epoch = nextval('sagad.epoch_seq'),
                 lease_until = clock_timestamp() - interval '1 second'
             WHERE node_id = $1 RETURNING epoch",
            &[&NODE],
        )
        .await
        .unwrap()
        .get(0);
    reach.restore().await;

    // Back in touch: it learns of the fence, and (nobody holds its name)
    // joins again with a new epoch, and serves again.
    until_metric(metrics, FENCED, 1.0).await;
    until_metric(metrics, REJOINS, 1.0).await;
    common::until_health(node.addr, "", ServingStatus::Serving).await;
    let rejoined = row_epoch(&db).await;
    assert!(rejoined > fenced, "{joined} → {fenced} → {rejoined}");
    let text = until_metric(metrics, EPOCH, rejoined as f64).await;
    assert_eq!(sample(&text, LEASE_HELD), Some(1.0), "{text}");
    assert_eq!(sample(&text, FENCED), Some(1.0), "counted once: {text}");
    // Nobody took its saga: it is still the node's.
    until_metric(metrics, OWNED, 1.0).await;

    let (status, stderr) = node.terminate();
    assert!(status.success(), "{status}: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_survivor_counts_the_node_it_deposed_and_the_sagas_it_took_over() {
    let _heavy = common::heavy().await;
    let url = database().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let shop = waiting_shop().await;
    let a = node(dir_a.path(), &url, "node-a", &[]);
    let b = node(
        dir_b.path(),
        &url,
        "node-b",
        &["--metrics-listen", "127.0.0.1:0"],
    );
    let metrics = b.metrics_addr();
    let mut on_a = client(a.addr).await;
    common::register_shop(&mut on_a, &shop, common::quick_retry(10, 10)).await;
    let saga = common::start_order(&mut on_a, "{}", false).await;
    poll_until("the saga's first call", || {
        let called = shop.fake.calls().iter().any(|c| c.saga_id == saga.id);
        async move { called.then_some(()) }
    })
    .await;
    common::until_health(b.addr, "", ServingStatus::Serving).await;
    let text = scrape(metrics).await;
    assert_eq!(sample(&text, OWNED), Some(0.0), "{text}");

    a.kill();
    until_metric(metrics, TAKEN_OVER, 1.0).await;
    let text = until_metric(metrics, OWNED, 1.0).await;
    assert_eq!(sample(&text, DEPOSED), Some(1.0), "{text}");
    assert_eq!(sample(&text, LEASE_HELD), Some(1.0), "{text}");
    assert_eq!(sample(&text, FENCED), Some(0.0), "{text}");
    // The survivor took a new epoch before it claimed the saga.
    let db = sql(&url).await;
    let epoch: i64 = db
        .query_one("SELECT epoch FROM sagad.node WHERE node_id = 'node-b'", &[])
        .await
        .unwrap()
        .get(0);
    until_metric(metrics, EPOCH, epoch as f64).await;
    let (status, stderr) = b.terminate();
    assert!(status.success(), "{status}: {stderr}");
}

#[tokio::test]
async fn a_sled_coordinator_exports_no_cluster_series() {
    let server = common::TestServer::start_with_extras(
        vec![common::order_fulfillment()],
        sagad::engine::EngineConfig::default(),
        common::Extras {
            metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..common::Extras::default()
        },
    )
    .await;
    let text = scrape(server.metrics_addr.expect("metrics are served")).await;
    // No cluster, so no lease, epoch or takeover to show (not a constant 1).
    for name in [
        LEASE_HELD, EPOCH, OWNED, FENCED, REJOINS, DEPOSED, TAKEN_OVER,
    ] {
        assert!(!text.contains(name), "{name} in {text}");
    }
    assert!(text.contains("sagad_sagas_failed_total"), "{text}");
}
