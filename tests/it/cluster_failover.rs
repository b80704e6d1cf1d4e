//! Store failover: the coordinators' database is a primary with a
//! synchronous streaming standby, and each coordinator is given both hosts
//! (`postgres://…@primary,standby/db?target_session_attrs=read-write`). Under
//! load the primary crashes (SIGKILL of its postmaster; its backends die with
//! it) and the standby is promoted: with no change of configuration, every
//! coordinator writes to the new primary and serves again, every
//! acknowledged saga finishes and keeps its promises (each checked against
//! its fate and the participants' ledger), no saga is lost or doubled, and
//! the journal's offsets and every saga's seqs stay gap-free.

use std::sync::Arc;

use sagad::{journal::postgres::throwaway, proto::v1 as pb};

use crate::{
    cluster::{self, Cluster, LOOP_NODES, client, knob},
    common::{self, FakeParticipant, ServingStatus, chaos::script, poll_until, postgres::sql},
};

/// Sagas started around the failover.
const SAGAS: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_killed_under_load_and_its_standby_promoted_lose_nothing() {
    let _heavy = common::heavy().await;
    let seed = knob("SAGAD_CLUSTER_SEED", fastrand::u64(..));
    println!("store failover: seed {seed} (SAGAD_CLUSTER_SEED)");
    let mut rng = fastrand::Rng::with_seed(seed);
    // Servers of its own: this test kills one and promotes the other.
    let primary = Arc::new(
        tokio::task::spawn_blocking(throwaway::Cluster::start)
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let copying = primary.clone();
    let standby = tokio::task::spawn_blocking(move || copying.standby())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    let url = primary.database().await.unwrap();
    let (head, db_name) = url.rsplit_once('/').unwrap();
    // The primary first; with read-write, only a server that takes writes.
    let both = format!(
        "{head},127.0.0.1:{}/{db_name}?target_session_attrs=read-write",
        standby.port()
    );
    let shop = common::serve(FakeParticipant::new(script)).await;
    let cluster = Cluster::start(&both);
    cluster::register_chaos_shop(&cluster, &shop).await;
    let (started, _, lanes) = cluster::start_lanes(&cluster, SAGAS, &mut rng);
    poll_until("sagas under way", || {
        let calls = shop.fake.calls().len();
        async move { (calls >= 30).then_some(()) }
    })
    .await;

    // A crash of the primary. The standby still answers, read-only, so no
    // coordinator may take it: a start is refused, and the node that tried
    // it turns NOT_SERVING. (Not every node: health follows failed writes,
    // and a node with nothing in flight fails only reads meanwhile.)
    let killing = primary.clone();
    tokio::task::spawn_blocking(move || killing.kill())
        .await
        .unwrap();
    let addr = cluster.addrs.lock().unwrap()[0].unwrap();
    let refused = poll_until(
        "a start to be refused while there is no primary",
        || async {
            client(addr)
                .await
                .start_saga(pb::StartSagaRequest {
                    definition: "order-fulfillment".into(),
                    payload: b"{}".to_vec(),
                    ..Default::default()
                })
                .await
                .err()
        },
    )
    .await;
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    common::until_health(addr, "", ServingStatus::NotServing).await;
    // No primary until every node's lease ran out, as the standby (which
    // serves reads) has them: whatever each node was doing, it comes back
    // to a lapsed lease, and the nodes race to depose each other on the
    // new primary, as after a crash of the only server.
    let on_standby = sql(&standby.url(db_name)).await;
    poll_until("every node's lease to run out", || async {
        on_standby
            .query_one(
                "SELECT bool_and(lease_until < clock_timestamp()) FROM sagad.node",
                &[],
            )
            .await
            .unwrap()
            .get::<_, bool>(0)
            .then_some(())
    })
    .await;
    drop(on_standby);

    // The failover: nothing is told to the coordinators.
    let promoted = tokio::task::spawn_blocking(move || standby.promote())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    for lane in lanes {
        lane.await.unwrap();
    }
    let db = sql(&promoted.url(db_name)).await;
    let (completed, compensated) = cluster::settle_and_check(&cluster, &started, &shop, &db).await;
    println!("store failover: {completed} completed, {compensated} compensated");
    assert_eq!(
        completed + compensated,
        SAGAS,
        "every acknowledged saga ended"
    );
    for i in 0..LOOP_NODES {
        let addr = cluster.addrs.lock().unwrap()[i].unwrap();
        common::until_health(addr, "", ServingStatus::Serving).await;
    }
    cluster.stop();
}
