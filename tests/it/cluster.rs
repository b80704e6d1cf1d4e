//! Cluster mode: several `sagad serve --journal postgres://…` processes on one
//! throwaway PostgreSQL database. A node that dies has its sagas taken over
//! by a survivor, which finishes them; a node stopped past its lease (a
//! zombie) is fenced when it wakes, journals nothing for the sagas that
//! moved, and joins again with a new epoch; every participant call carries
//! its caller's epoch, which rises when a saga changes owner; three nodes
//! killed at random lose nothing and run nothing twice; a database crash
//! under load pauses the cluster, which then carries on by itself.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sagad::proto::v1::{self as pb, coordinator_client::CoordinatorClient};
use tokio_postgres::Client as Sql;

use crate::common::{
    self, Answer, Client, FakeParticipant, Served, ServingStatus,
    chaos::{Fate, check, script},
    poll_until,
    postgres::{database, journal_is_whole, sql},
    process::SagadProcess,
};

/// Sagas started on the node that goes away.
const SAGAS: usize = 8;
/// Short, so a takeover comes within seconds (at least a second: the setting's floor).
const LEASE_TTL: &str = "2s";

/// `sagad serve` as node `id` on the database at `url`.
pub(crate) fn node(dir: &Path, url: &str, id: &str) -> SagadProcess {
    SagadProcess::spawn(
        dir,
        &[
            ("SAGAD_JOURNAL", url),
            ("SAGAD_NODE_ID", id),
            ("SAGAD_LEASE_TTL", LEASE_TTL),
        ],
    )
}

pub(crate) async fn client(addr: SocketAddr) -> Client {
    CoordinatorClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

/// A shop whose every call asks to be tried again shortly, until `open`:
/// sagas stay running, mid-way, on whichever node owns them.
async fn gated_shop() -> (Served, Arc<AtomicBool>) {
    let open = Arc::new(AtomicBool::new(false));
    let gate = open.clone();
    let shop = common::serve(FakeParticipant::new(move |_| {
        if gate.load(Ordering::SeqCst) {
            Answer::Ok
        } else {
            Answer::Retry(Some(Duration::from_millis(200)))
        }
    }))
    .await;
    (shop, open)
}

/// Starts [`SAGAS`] orders on `client`, and waits until each has been called.
async fn start_orders(client: &mut Client, shop: &Served) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..SAGAS {
        ids.push(common::start_order(client, "{}", false).await.id);
    }
    let wanted: HashSet<String> = ids.iter().cloned().collect();
    poll_until("a call of every saga", || {
        let called: HashSet<String> = shop.fake.calls().into_iter().map(|c| c.saga_id).collect();
        let all = wanted.is_subset(&called);
        async move { all.then_some(()) }
    })
    .await;
    ids
}

/// Polls `client` until every saga of `ids` is COMPLETED.
async fn until_completed(client: &Client, ids: &[String]) {
    for id in ids {
        poll_until("the saga to complete on the survivor", || {
            let mut client = client.clone();
            let id = id.clone();
            async move {
                let saga = client
                    .get_saga(pb::GetSagaRequest {
                        id,
                        ..Default::default()
                    })
                    .await
                    .ok()?
                    .into_inner();
                (common::state(&saga) == pb::SagaState::Completed).then_some(())
            }
        })
        .await;
    }
}

async fn epochs(db: &Sql) -> HashMap<String, i64> {
    db.query("SELECT node_id, epoch FROM sagad.node", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

pub(crate) async fn owners(db: &Sql, ids: &[String]) -> HashSet<String> {
    db.query(
        "SELECT DISTINCT owner_node FROM sagad.saga WHERE saga_id::text = ANY($1)",
        &[&ids],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Once the new owner (`new` epoch) made its first call, the old one (`old`)
/// made none; and every call carried one of the two.
fn only_the_new_owner_after_its_first_call(shop: &Served, old: u64, new: u64) {
    let calls = shop.fake.calls();
    let first_new = calls
        .iter()
        .filter(|c| c.epoch == Some(new))
        .map(|c| c.arrived)
        .min()
        .expect("the new owner called");
    for call in &calls {
        assert!(
            call.epoch == Some(new) || (call.epoch == Some(old) && call.arrived < first_new),
            "a call of epoch {:?} (old {old}, new {new}) at the wrong time: {call:?}",
            call.epoch
        );
    }
}

/// Each forward effect of each saga applied once, none compensated.
fn applied_once(shop: &Served, ids: &[String]) {
    for id in ids {
        assert_eq!(
            shop.fake.applied(id),
            ["F:validate-order", "F:charge-payment", "F:ship-order"],
            "saga {id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_sagas_are_taken_over_and_finished_by_a_survivor() {
    let _heavy = common::heavy().await;
    let url = database().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (shop, open) = gated_shop().await;
    let a = node(dir_a.path(), &url, "node-a");
    let b = node(dir_b.path(), &url, "node-b");
    let mut on_a = client(a.addr).await;
    common::register_shop(&mut on_a, &shop, common::quick_retry(10_000, 10)).await;
    let ids = start_orders(&mut on_a, &shop).await;
    let db = sql(&url).await;
    assert_eq!(
        owners(&db, &ids).await,
        HashSet::from(["node-a".to_string()])
    );
    let before = epochs(&db).await;
    let a_epoch = before["node-a"] as u64;
    assert!(
        shop.fake.calls().iter().all(|c| c.epoch == Some(a_epoch)),
        "every call carries its caller's epoch"
    );

    // Watched on the node that does not run it (yet): from the journal.
    let mut watched = client(b.addr)
        .await
        .watch_saga(pb::WatchSagaRequest { id: ids[0].clone() })
        .await
        .unwrap()
        .into_inner();
    let watching = tokio::spawn(async move {
        let mut seqs = Vec::new();
        let mut last = None;
        while let Some(event) = watched.message().await.unwrap() {
            seqs.push(event.seq);
            last = event.event;
        }
        (seqs, last)
    });

    a.kill();
    open.store(true, Ordering::SeqCst);
    let on_b = client(b.addr).await;
    until_completed(&on_b, &ids).await;
    let (seqs, last) = tokio::time::timeout(Duration::from_secs(60), watching)
        .await
        .expect("the watch ends with the saga")
        .unwrap();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert!(
        matches!(last, Some(pb::saga_event::Event::SagaCompleted(_))),
        "{last:?}"
    );

    assert_eq!(
        owners(&db, &ids).await,
        HashSet::from(["node-b".to_string()])
    );
    let after = epochs(&db).await;
    assert!(
        after["node-a"] > before["node-a"],
        "the dead node was deposed: {after:?}"
    );
    assert!(
        after["node-b"] > after["node-a"],
        "the survivor took a new epoch above the deposed one's: {after:?}"
    );
    only_the_new_owner_after_its_first_call(&shop, a_epoch, after["node-b"] as u64);
    applied_once(&shop, &ids);
    journal_is_whole(&db).await;
    let (status, stderr) = b.terminate();
    assert!(status.success(), "{status}: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_node_is_fenced_lets_its_moved_sagas_go_and_joins_again() {
    let _heavy = common::heavy().await;
    let url = database().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (shop, open) = gated_shop().await;
    let a = node(dir_a.path(), &url, "node-a");
    let b = node(dir_b.path(), &url, "node-b");
    let mut on_a = client(a.addr).await;
    common::register_shop(&mut on_a, &shop, common::quick_retry(10_000, 10)).await;
    let ids = start_orders(&mut on_a, &shop).await;
    let db = sql(&url).await;
    let joined = epochs(&db).await["node-a"];

    // Stopped, not dead: its lease runs out, and node-b takes its sagas.
    a.signal("STOP");
    poll_until("node-b to own every saga", || {
        let (db, ids) = (&db, &ids);
        async move {
            (owners(db, ids).await == HashSet::from(["node-b".to_string()])).then_some(())
        }
    })
    .await;
    let taken = epochs(&db).await;
    let events_before: i64 = db
        .query_one("SELECT count(*) FROM sagad.event", &[])
        .await
        .unwrap()
        .get(0);

    // It wakes with the sagas still in memory, and calls still "due".
    a.signal("CONT");
    poll_until("node-a to join again", || {
        let said = a.stderr_so_far();
        async move { said.contains("joined the journal again").then_some(()) }
    })
    .await;
    let rejoined = epochs(&db).await["node-a"];
    assert!(
        rejoined > taken["node-a"] && taken["node-a"] > joined,
        "deposed, then joined again with a new epoch: {joined} → {} → {rejoined}",
        taken["node-a"]
    );
    common::until_health(a.addr, "", ServingStatus::Serving).await;
    open.store(true, Ordering::SeqCst);
    let on_b = client(b.addr).await;
    until_completed(&on_b, &ids).await;

    // Nothing node-a did after it woke reached a participant: each call
    // needs its attempt journaled first, and node-a's were refused.
    only_the_new_owner_after_its_first_call(&shop, joined as u64, taken["node-b"] as u64);
    let events_after: i64 = db
        .query_one("SELECT count(*) FROM sagad.event", &[])
        .await
        .unwrap()
        .get(0);
    assert!(events_after > events_before);
    assert_eq!(
        owners(&db, &ids).await,
        HashSet::from(["node-b".to_string()])
    );
    for call in shop.fake.calls() {
        assert!(
            call.epoch != Some(rejoined as u64),
            "node-a called a participant for a saga it no longer owns: {call:?}"
        );
    }
    applied_once(&shop, &ids);
    journal_is_whole(&db).await;

    // And it serves again: a new saga started on it runs there.
    let mut on_a = client(a.addr).await;
    let fresh = common::start_order(&mut on_a, "{}", true).await;
    assert_eq!(common::state(&fresh), pb::SagaState::Completed);
    assert_eq!(
        owners(&db, std::slice::from_ref(&fresh.id)).await,
        HashSet::from(["node-a".to_string()])
    );
    for node in [a, b] {
        let (status, stderr) = node.terminate();
        assert!(status.success(), "{status}: {stderr}");
    }
}

/// Sagas of the kill loop, and its kills; `SAGAD_CLUSTER_SAGAS` and
/// `SAGAD_CLUSTER_KILLS` raise them for a soak, `SAGAD_CLUSTER_SEED` replays
/// a run.
const LOOP_SAGAS: usize = 300;
const LOOP_KILLS: u32 = 10;
pub(crate) const LOOP_NODES: usize = 3;
const LOOP_LANES: usize = 4;

pub(crate) fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
        })
        .unwrap_or(default)
}

/// Three nodes on one database, each restartable; calls go to any live one.
pub(crate) struct Cluster {
    url: String,
    dirs: Vec<tempfile::TempDir>,
    nodes: std::sync::Mutex<Vec<Option<SagadProcess>>>,
    pub(crate) addrs: std::sync::Mutex<Vec<Option<SocketAddr>>>,
}

impl Cluster {
    pub(crate) fn start(url: &str) -> Arc<Self> {
        let dirs: Vec<_> = (0..LOOP_NODES)
            .map(|_| tempfile::tempdir().unwrap())
            .collect();
        let nodes: Vec<_> = (0..LOOP_NODES)
            .map(|i| Some(node(dirs[i].path(), url, &format!("node-{i}"))))
            .collect();
        let addrs = nodes.iter().map(|n| n.as_ref().map(|n| n.addr)).collect();
        Arc::new(Self {
            url: url.to_string(),
            dirs,
            nodes: std::sync::Mutex::new(nodes),
            addrs: std::sync::Mutex::new(addrs),
        })
    }

    fn kill(&self, i: usize) {
        self.addrs.lock().unwrap()[i] = None;
        if let Some(process) = self.nodes.lock().unwrap()[i].take() {
            process.kill();
        }
    }

    fn restart(&self, i: usize) {
        let process = node(self.dirs[i].path(), &self.url, &format!("node-{i}"));
        self.addrs.lock().unwrap()[i] = Some(process.addr);
        self.nodes.lock().unwrap()[i] = Some(process);
    }

    /// Calls live nodes from `first` on, until one answers; statuses that a
    /// dead or recovering node explains are tried again elsewhere.
    async fn call<T, F, Fut>(&self, first: usize, mut f: F) -> T
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = std::time::Instant::now() + common::chaos::SETTLE_DEADLINE;
        for i in (first..).map(|i| i % LOOP_NODES) {
            assert!(std::time::Instant::now() < deadline, "no node answered");
            let Some(addr) = self.addrs.lock().unwrap()[i] else {
                continue;
            };
            let Ok(client) = CoordinatorClient::connect(format!("http://{addr}")).await else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            match f(client).await {
                Ok(response) => return response.into_inner(),
                Err(s) if common::chaos::explained_by_a_restart(&s) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(s) => panic!("unexpected answer {:?}: {}", s.code(), s.message()),
            }
        }
        unreachable!("the node loop never ends")
    }

    pub(crate) fn stop(&self) {
        for process in self.nodes.lock().unwrap().iter_mut() {
            if let Some(process) = process.take() {
                let (status, stderr) = process.terminate();
                assert!(status.success(), "{status}: {stderr}");
            }
        }
    }
}

pub(crate) type Started = Arc<std::sync::Mutex<HashMap<String, (String, Fate)>>>;

/// The chaos shop's participants, registered through any node (2 s timeout,
/// quick retries, a compensation budget that never runs out here).
pub(crate) async fn register_chaos_shop(cluster: &Cluster, shop: &Served) {
    for name in ["orders", "payments", "shipping"] {
        let request = pb::RegisterParticipantRequest {
            protocol: pb::Protocol::Grpc as i32,
            name: name.into(),
            forward_endpoint: shop.forward_url(),
            compensate_endpoint: shop.compensate_url(),
            retry: Some(common::quick_retry(8, 100)),
            timeout: Some(prost_types::Duration {
                seconds: 2,
                nanos: 0,
            }),
            ..Default::default()
        };
        cluster
            .call(0, |mut c| {
                let request = request.clone();
                async move { c.register_participant(request).await }
            })
            .await;
    }
}

/// Lanes that start `sagas` sagas of seeded fates round-robin over the
/// nodes, paced over a few seconds, each acknowledged start recorded.
pub(crate) fn start_lanes(
    cluster: &Arc<Cluster>,
    sagas: usize,
    rng: &mut fastrand::Rng,
) -> (
    Started,
    Arc<std::sync::atomic::AtomicUsize>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let started: Started = Arc::default();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut lanes = Vec::new();
    for lane in 0..LOOP_LANES {
        let (cluster, started, next) = (cluster.clone(), started.clone(), next.clone());
        let mut rng = fastrand::Rng::with_seed(rng.u64(..) ^ lane as u64);
        lanes.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= sagas {
                    break;
                }
                let fate = match i {
                    0 => Fate::Complete,
                    1 => Fate::Reject { step: 2, fails: 1 },
                    _ => Fate::pick(&mut rng),
                };
                let key = format!("c{i}");
                let request = pb::StartSagaRequest {
                    definition: "order-fulfillment".into(),
                    payload: fate.payload(&key).into_bytes(),
                    idempotency_key: key.clone(),
                    ..Default::default()
                };
                let answer = cluster
                    .call(i, |mut c| {
                        let request = request.clone();
                        async move { c.start_saga(request).await }
                    })
                    .await;
                let id = answer.saga.unwrap().id;
                let before = started.lock().unwrap().insert(key, (id.clone(), fate));
                if let Some((other, _)) = before {
                    assert_eq!(other, id, "one idempotency key, one saga");
                }
                // Paced, so that the starts last about as long as the faults.
                tokio::time::sleep(Duration::from_millis(rng.u64(50..350))).await;
            }
        }));
    }
    (started, next, lanes)
}

/// Waits until every acknowledged saga ended, checks each against its fate
/// and the participants' ledger, then the journal as a whole; returns how
/// many completed and how many were compensated.
pub(crate) async fn settle_and_check(
    cluster: &Cluster,
    started: &Started,
    shop: &Served,
    db: &Sql,
) -> (usize, usize) {
    let started: Vec<(String, (String, Fate))> = started
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let (mut completed, mut compensated) = (0, 0);
    for (n, (key, (id, fate))) in started.iter().enumerate() {
        let saga = loop {
            let saga = cluster
                .call(n, |mut c| {
                    let id = id.clone();
                    async move {
                        c.get_saga(pb::GetSagaRequest {
                            id,
                            all_attempts: true,
                        })
                        .await
                    }
                })
                .await;
            if matches!(
                common::state(&saga),
                pb::SagaState::Completed | pb::SagaState::Compensated | pb::SagaState::Failed
            ) {
                break saga;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        check(&saga, key, fate, &shop.fake, false);
        match common::state(&saga) {
            pb::SagaState::Completed => completed += 1,
            _ => compensated += 1,
        }
    }
    journal_is_whole(db).await;
    let keys: i64 = db
        .query_one(
            "SELECT count(DISTINCT idempotency_key) FROM sagad.saga",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(keys as usize, started.len(), "no saga twice, none lost");
    (completed, compensated)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_killed_at_random_lose_nothing_and_run_nothing_twice() {
    let _heavy = common::heavy().await;
    let sagas = knob("SAGAD_CLUSTER_SAGAS", LOOP_SAGAS as u64) as usize;
    let kills = knob("SAGAD_CLUSTER_KILLS", u64::from(LOOP_KILLS)) as u32;
    let seed = knob("SAGAD_CLUSTER_SEED", fastrand::u64(..));
    println!("cluster kill loop: seed {seed} (SAGAD_CLUSTER_SEED), {sagas} sagas, {kills} kills");
    let mut rng = fastrand::Rng::with_seed(seed);
    let url = database().await;
    let shop = common::serve(FakeParticipant::new(script)).await;
    let cluster = Cluster::start(&url);
    register_chaos_shop(&cluster, &shop).await;
    let db = sql(&url).await;
    let joined = epochs(&db).await;
    let (started, next, lanes) = start_lanes(&cluster, sagas, &mut rng);
    let mut killed = HashSet::new();
    for round in 0..kills {
        // A few more calls since the last kill (unless every saga started:
        // then the rest of the kills land on a cluster finishing its work).
        let seen = shop.fake.calls().len();
        poll_until("more participant calls", || {
            let calls = shop.fake.calls().len();
            let all_started = next.load(Ordering::SeqCst) >= sagas;
            async move { (calls >= seen + 5 || all_started).then_some(()) }
        })
        .await;
        let victim = rng.usize(0..LOOP_NODES);
        let name = format!("node-{victim}");
        killed.insert(name.clone());
        cluster.kill(victim);
        if round % 2 == 1 {
            // Back only once the others took its sagas: the takeover path.
            poll_until("the survivors to take the dead node's sagas", || {
                let (db, name) = (&db, name.clone());
                async move { (open_of(db, &name).await == 0).then_some(()) }
            })
            .await;
        }
        // Even rounds: back at once, recovering its own (the restart path).
        cluster.restart(victim);
    }
    for lane in lanes {
        lane.await.unwrap();
    }
    let (completed, compensated) = settle_and_check(&cluster, &started, &shop, &db).await;
    println!("cluster kill loop: {completed} completed, {compensated} compensated, {kills} kills");
    assert!(completed > 0 && compensated > 0);
    let now = epochs(&db).await;
    for name in &killed {
        assert!(now[name] > joined[name], "{name}: {joined:?} → {now:?}");
    }

    // Subscribe from offset 0 on a node gives every journaled event once, in
    // offset order, each saga's seqs contiguous.
    let total: i64 = db
        .query_one("SELECT count(*) FROM sagad.event", &[])
        .await
        .unwrap()
        .get(0);
    let addr = cluster.addrs.lock().unwrap()[0].unwrap();
    let mut feed = client(addr)
        .await
        .subscribe(pb::SubscribeRequest {
            after_offset: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    let mut offset = 0;
    while offset < total as u64 {
        let event = tokio::time::timeout(Duration::from_secs(60), feed.message())
            .await
            .expect("the feed goes on")
            .unwrap()
            .expect("the feed does not end")
            .event
            .unwrap();
        assert_eq!(event.offset, offset + 1, "offsets gap-free and in order");
        offset = event.offset;
        let seq = last_seq.entry(event.saga_id.clone()).or_insert(0);
        assert_eq!(
            event.seq,
            *seq + 1,
            "saga {} seqs contiguous",
            event.saga_id
        );
        *seq = event.seq;
    }
    assert_eq!(last_seq.len(), sagas);
    drop(feed);
    cluster.stop();
}

/// Open (running or compensating) sagas `node` owns.
async fn open_of(db: &Sql, node: &str) -> i64 {
    db.query_one(
        "SELECT count(*) FROM sagad.saga WHERE owner_node = $1
         AND status IN ('running', 'compensating')",
        &[&node],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_crash_under_load_pauses_the_cluster_and_loses_nothing() {
    let _heavy = common::heavy().await;
    let seed = knob("SAGAD_CLUSTER_SEED", fastrand::u64(..));
    println!("database crash: seed {seed} (SAGAD_CLUSTER_SEED)");
    let mut rng = fastrand::Rng::with_seed(seed);
    // A server of its own: this test stops it.
    let server = Arc::new(
        tokio::task::spawn_blocking(sagad::journal::postgres::throwaway::Cluster::start)
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let url = server.database().await.unwrap();
    let shop = common::serve(FakeParticipant::new(script)).await;
    let cluster = Cluster::start(&url);
    register_chaos_shop(&cluster, &shop).await;
    let sagas = 60;
    let (started, _, lanes) = start_lanes(&cluster, sagas, &mut rng);
    poll_until("sagas under way", || {
        let calls = shop.fake.calls().len();
        async move { (calls >= 30).then_some(()) }
    })
    .await;

    // Immediate shutdown: what a crash of the database leaves behind.
    let stopping = server.clone();
    tokio::task::spawn_blocking(move || stopping.stop())
        .await
        .unwrap();
    let addr = cluster.addrs.lock().unwrap()[0].unwrap();
    let refused = poll_until(
        "a start to be refused while the database is down",
        || async {
            let answer = client(addr)
                .await
                .start_saga(pb::StartSagaRequest {
                    definition: "order-fulfillment".into(),
                    payload: b"{}".to_vec(),
                    ..Default::default()
                })
                .await;
            answer.err()
        },
    )
    .await;
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    // Down until every node has noticed (a write failed, or its lease ran
    // out), so the restart meets a whole cluster that lost its database.
    for i in 0..LOOP_NODES {
        let addr = cluster.addrs.lock().unwrap()[i].unwrap();
        common::until_health(addr, "", ServingStatus::NotServing).await;
    }
    let restarting = server.clone();
    tokio::task::spawn_blocking(move || restarting.restart())
        .await
        .unwrap()
        .unwrap();

    // The coordinators carry on by themselves.
    for lane in lanes {
        lane.await.unwrap();
    }
    let db = sql(&url).await;
    let (completed, compensated) = settle_and_check(&cluster, &started, &shop, &db).await;
    println!("database crash: {completed} completed, {compensated} compensated");
    for i in 0..LOOP_NODES {
        let addr = cluster.addrs.lock().unwrap()[i].unwrap();
        common::until_health(addr, "", ServingStatus::Serving).await;
    }
    cluster.stop();
}
