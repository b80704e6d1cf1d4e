//! The history tier end to end: a coordinator whose finished sagas the mover
//! took out of sled (`--history-after`) answers for them as before over
//! gRPC (GetSaga, ListSagas, WatchSaga, Subscribe, an idempotent StartSaga),
//! after a restart too; and the offline tools read them (`journal check`
//! verifies the segments, `export` writes them).

use std::{collections::BTreeSet, path::Path, time::Duration};

use sagad::proto::v1 as pb;
use serde_json::Value;

use crate::common::{
    Answer, Extras, FakeParticipant, TestServer, get, order_fulfillment, poll_until, quick_retry,
    register_shop, sagad, serve, text,
};

/// Sagas started: enough for a page to cross the store and the tier.
const SAGAS: usize = 6;

fn segments(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("history")).map_or(0, |entries| {
        entries
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "segment"))
            })
            .count()
    })
}

async fn start_keyed(client: &mut crate::common::Client, key: &str, payload: &str) -> pb::Saga {
    client
        .start_saga(pb::StartSagaRequest {
            definition: "order-fulfillment".into(),
            payload: payload.as_bytes().to_vec(),
            idempotency_key: key.into(),
            wait: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .saga
        .unwrap()
}

async fn page(client: &mut crate::common::Client) -> Vec<String> {
    client
        .list_sagas(pb::ListSagasRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .summaries
        .into_iter()
        .map(|s| s.id)
        .collect()
}

#[tokio::test]
async fn moved_sagas_answer_as_before_over_grpc_and_in_the_offline_tools() {
    let shop = serve(FakeParticipant::new(|r| {
        let payload: Value = serde_json::from_slice(&r.payload).unwrap_or_default();
        let forward = r.action == pb::Action::Forward as i32;
        if forward && r.step == "charge-payment" && payload["card"] == "declined" {
            Answer::Reject("card declined")
        } else {
            Answer::Ok
        }
    }))
    .await;
    let extras = Extras {
        history_after: Some(Duration::from_millis(1)),
        ..Extras::default()
    };
    let mut server =
        TestServer::start_with_extras(vec![order_fulfillment()], Default::default(), extras).await;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(3, 3)).await;
    let mut finished = Vec::new();
    for i in 0..SAGAS {
        let payload = if i % 3 == 0 {
            r#"{"card":"declined"}"#
        } else {
            "{}"
        };
        finished.push(start_keyed(&mut client, &format!("order-{i}"), payload).await);
    }
    let states: BTreeSet<i32> = finished.iter().map(|s| s.state).collect();
    assert_eq!(
        states,
        [
            pb::SagaState::Completed as i32,
            pb::SagaState::Compensated as i32
        ]
        .into(),
        "both kinds of final saga move"
    );
    let mut before = Vec::new();
    for saga in &finished {
        before.push(get(&mut client, &saga.id).await);
    }
    let listed = page(&mut client).await;

    // The mover runs every second; it takes them once they ended 1 ms ago.
    poll_until("the mover to write a segment", || {
        let n = segments(&server.data_dir);
        async move { (n > 0).then_some(()) }
    })
    .await;
    // A stop waits for the move in progress: they are out of sled now.
    server.restart().await;
    let mut client = server.client().await;
    for (saga, seen) in finished.iter().zip(&before) {
        assert_eq!(
            &get(&mut client, &saga.id).await,
            seen,
            "GetSaga of a moved saga"
        );
    }
    assert_eq!(page(&mut client).await, listed, "ListSagas");
    // The same key finds the same saga, and starts nothing.
    let again = start_keyed(&mut client, "order-1", "{}").await;
    assert_eq!(again.id, finished[1].id);
    assert_eq!(page(&mut client).await, listed, "no new saga");
    // A watch of a finished saga replays it and ends.
    let mut watch = client
        .watch_saga(pb::WatchSagaRequest {
            id: finished[0].id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut watched = 0;
    while let Some(event) = watch.message().await.unwrap() {
        assert_eq!(event.saga_id, finished[0].id);
        watched += 1;
    }
    assert!(watched >= 4, "{watched} events");
    // The feed hands out every offset once, in order, from the tier.
    let mut feed = client
        .subscribe(pb::SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut offsets = Vec::new();
    let mut sagas_seen = BTreeSet::new();
    while sagas_seen.len() < SAGAS || offsets.len() < 4 * SAGAS {
        let event = feed.message().await.unwrap().expect("the feed goes on");
        let event = event.event.expect("a saga event");
        offsets.push(event.offset);
        sagas_seen.insert(event.saga_id);
        if offsets.len() > 200 {
            break;
        }
    }
    assert_eq!(offsets[0], 1);
    assert!(
        offsets.windows(2).all(|w| w[1] == w[0] + 1),
        "gap-free: {offsets:?}"
    );
    drop(feed);
    server.stop().await;

    let data_dir = server.data_dir.to_str().unwrap().to_string();
    let checked = sagad(&["journal", "check", "--data-dir", &data_dir], &[]).await;
    let (out, err) = (text(&checked.stdout), text(&checked.stderr));
    assert!(checked.status.success(), "{out}{err}");
    assert!(out.contains("journal OK"), "{out}");
    assert!(out.contains("sagas: 0 (none)"), "none left in sled: {out}");
    assert!(
        out.contains(&format!("history: {SAGAS} finished sagas in")),
        "{out}"
    );
    let exported = sagad(&["export", "--data-dir", &data_dir], &[]).await;
    let (out, err) = (text(&exported.stdout), text(&exported.stderr));
    assert!(exported.status.success(), "{err}");
    let exported: BTreeSet<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let ids: BTreeSet<String> = finished.iter().map(|s| s.id.clone()).collect();
    assert_eq!(exported, ids, "export reads the tier");
}
