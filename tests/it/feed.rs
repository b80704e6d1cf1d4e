//! The resumable feed end to end: `Subscribe` over loopback gRPC against a real
//! sled journal, from the first offset, from a middle one, and across a
//! coordinator restart; and `sagad tail` as a real process.

use std::{collections::HashMap, time::Instant};

use sagad::proto::v1::{self as pb, saga_event::Event as E};
use tokio_stream::StreamExt;
use tonic::Streaming;

use crate::common::*;

/// Payload that makes the payments step reject, so the saga compensates.
const DECLINED: &str = r#"{"card":"declined"}"#;
const OK: &str = r#"{"card":"ok"}"#;

/// A shop whose payments step rejects declined cards.
async fn shop() -> Served {
    serve(FakeParticipant::new(|r| {
        let forward = r.action == pb::Action::Forward as i32;
        if forward && r.step == "charge-payment" && r.payload == DECLINED.as_bytes() {
            Answer::Reject("card declined")
        } else {
            Answer::Ok
        }
    }))
    .await
}

async fn subscribe(client: &mut Client, after: u64) -> Streaming<pb::FeedEvent> {
    client
        .subscribe(pb::SubscribeRequest {
            after_offset: after,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

fn is_end(e: &pb::SagaEvent) -> bool {
    matches!(
        e.event,
        Some(E::SagaCompleted(_) | E::SagaCompensated(_) | E::SagaFailed(_))
    )
}

/// Reads events until every saga in `ids` has ended, failing at the deadline.
async fn until_ended(
    stream: &mut Streaming<pb::FeedEvent>,
    ids: &[String],
    mut events: Vec<pb::SagaEvent>,
) -> Vec<pb::SagaEvent> {
    let start = Instant::now();
    while !ids
        .iter()
        .all(|id| events.iter().any(|e| &e.saga_id == id && is_end(e)))
    {
        let left = DEADLINE.saturating_sub(start.elapsed());
        let next = tokio::time::timeout(left, stream.next())
            .await
            .expect("every saga ends on the feed within the deadline")
            .expect("the feed stays open")
            .expect("no feed error");
        events.push(next.event.expect("a feed event carries its event"));
    }
    events
}

/// Reads exactly `n` events.
async fn take(stream: &mut Streaming<pb::FeedEvent>, n: usize) -> Vec<pb::FeedEvent> {
    let mut got = Vec::new();
    while got.len() < n {
        let next = tokio::time::timeout(DEADLINE, stream.next())
            .await
            .expect("feed event within the deadline")
            .expect("the feed stays open")
            .expect("no feed error");
        got.push(next);
    }
    got
}

/// Offsets are 1, 2, 3, … and each saga's events come in seq order from 1.
fn assert_complete_and_ordered(events: &[pb::SagaEvent]) {
    let offsets: Vec<u64> = events.iter().map(|e| e.offset).collect();
    let expected: Vec<u64> = (1..=events.len() as u64).collect();
    assert_eq!(offsets, expected, "every offset once, in order");
    let mut seqs: HashMap<&str, u64> = HashMap::new();
    for e in events {
        let last = seqs.entry(&e.saga_id).or_default();
        assert_eq!(e.seq, *last + 1, "saga {} events in seq order", e.saga_id);
        *last = e.seq;
    }
}

async fn start_sagas(client: &mut Client, payloads: &[&str]) -> Vec<String> {
    let mut ids = Vec::new();
    for payload in payloads {
        ids.push(start_order(client, payload, false).await.id);
    }
    ids
}

#[tokio::test]
async fn from_zero_and_from_the_middle_every_event_once_in_order() {
    let server = TestServer::start().await;
    let shop = shop().await;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(3, 3)).await;

    // Subscribed before anything runs: the first events arrive live.
    let mut live = subscribe(&mut client, 0).await;
    let mut ids = start_sagas(&mut client, &[OK, DECLINED, OK]).await;
    let first = until_ended(&mut live, &ids, Vec::new()).await;
    // More sagas while the subscription is live.
    let more = start_sagas(&mut client, &[DECLINED, OK, OK, DECLINED]).await;
    ids.extend(more);
    let all = until_ended(&mut live, &ids, first).await;
    assert_complete_and_ordered(&all);
    assert_eq!(
        all.iter().filter(|e| is_end(e)).count(),
        ids.len(),
        "one end per saga"
    );
    // The state after each event matches the saga's outcome.
    let compensated = all
        .iter()
        .filter(|e| matches!(e.event, Some(E::SagaCompensated(_))))
        .count();
    assert_eq!(compensated, 3);
    assert!(all.iter().filter(|e| is_end(e)).all(|e| {
        let state = pb::SagaState::try_from(e.state).unwrap();
        matches!(e.event, Some(E::SagaCompleted(_))) == (state == pb::SagaState::Completed)
    }));

    // A new subscription from zero sees the same history; one from the middle
    // sees exactly the rest, with the saga's state and definition.
    let replay: Vec<pb::SagaEvent> = take(&mut subscribe(&mut client, 0).await, all.len())
        .await
        .into_iter()
        .map(|f| f.event.unwrap())
        .collect();
    assert_eq!(replay, all);
    let middle = all.len() as u64 / 2;
    let rest = take(
        &mut subscribe(&mut client, middle).await,
        all.len() - middle as usize,
    )
    .await;
    assert!(rest.iter().all(|f| f.definition == "order-fulfillment"));
    let rest: Vec<pb::SagaEvent> = rest.into_iter().map(|f| f.event.unwrap()).collect();
    assert_eq!(rest, all[middle as usize..]);

    // Nothing beyond what was journaled arrives.
    let mut tail = subscribe(&mut client, all.len() as u64).await;
    let nothing = tokio::time::timeout(std::time::Duration::from_millis(300), tail.next()).await;
    assert!(
        nothing.is_err(),
        "no event past the last offset: {nothing:?}"
    );

    // A cursor beyond it was never handed out: refused, not a silent wait.
    let beyond = client
        .subscribe(pb::SubscribeRequest {
            after_offset: all.len() as u64 + 1,
            ..Default::default()
        })
        .await
        .expect_err("a cursor past the last offset is refused");
    assert_eq!(beyond.code(), tonic::Code::OutOfRange, "{beyond}");
    assert!(
        beyond
            .message()
            .contains(&format!("after_offset={}", all.len())),
        "{beyond}"
    );

    // Filters: one definition's state changes only.
    let mut changes = client
        .subscribe(pb::SubscribeRequest {
            after_offset: 0,
            definition: "order-fulfillment".into(),
            state_changes_only: true,
        })
        .await
        .unwrap()
        .into_inner();
    // Per saga: started, then completed; or started, compensating, compensated.
    let expected = 4 * 2 + 3 * 3;
    let changes = take(&mut changes, expected).await;
    assert!(changes.iter().all(|f| {
        let e = f.event.as_ref().unwrap();
        !matches!(
            e.event,
            Some(E::AttemptStarted(_) | E::AttemptSucceeded(_) | E::AttemptFailed(_))
        )
    }));
}

#[tokio::test]
async fn resuming_after_a_restart_sees_every_event_exactly_once() {
    let mut server = TestServer::start().await;
    let shop = shop().await;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(3, 3)).await;

    let mut ids = start_sagas(&mut client, &[OK, DECLINED, OK]).await;
    let mut feed = subscribe(&mut client, 0).await;
    // Read part of the history, remember the last offset, lose the connection.
    let seen: Vec<pb::SagaEvent> = take(&mut feed, 5)
        .await
        .into_iter()
        .map(|f| f.event.unwrap())
        .collect();
    let last = seen.last().unwrap().offset;
    server.restart().await;
    // The old stream ends with an error (the server stopped) rather than
    // silently skipping anything.
    let end = tokio::time::timeout(DEADLINE, async {
        loop {
            match feed.next().await {
                Some(Ok(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the old stream ends");
    assert!(!matches!(end, Some(Ok(_))));

    let mut client = server.client().await;
    ids.extend(start_sagas(&mut client, &[DECLINED, OK]).await);
    let mut resumed = subscribe(&mut client, last).await;
    let all = until_ended(&mut resumed, &ids, seen).await;
    assert_complete_and_ordered(&all);

    // The same as a fresh read of the whole journal.
    let fresh: Vec<pb::SagaEvent> = take(&mut subscribe(&mut client, 0).await, all.len())
        .await
        .into_iter()
        .map(|f| f.event.unwrap())
        .collect();
    assert_eq!(fresh, all);
}

#[tokio::test]
async fn sagad_tail_prints_events_with_offsets_and_resumes_after_one() {
    let server = TestServer::start().await;
    let shop = shop().await;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(3, 3)).await;
    let saga = start_order(&mut client, OK, true).await;
    let addr = format!("http://{}", server.addr);

    // The server shares this test's runtime: the CLI runs on a blocking
    // thread so the server keeps answering it.
    let tail = async |args: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sagad"));
        command
            .arg("tail")
            .args(args)
            .args(["--addr", &addr, "--json"])
            .env_remove("SAGAD_ADDR");
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .unwrap()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .collect::<Vec<_>>()
    };
    // A completed three-step saga: started, then three attempts started and
    // succeeded, then completed.
    let lines = tail(&["--limit", "8"]).await;
    let offsets: Vec<u64> = lines
        .iter()
        .map(|l| l["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, (1..=8).collect::<Vec<_>>());
    assert_eq!(lines[0]["event"], "saga_started");
    assert_eq!(lines[7]["event"], "saga_completed");
    assert!(
        lines
            .iter()
            .all(|l| l["saga_id"] == saga.id.as_str() && l["definition"] == "order-fulfillment")
    );

    let rest = tail(&["--after", "6", "--limit", "2"]).await;
    let offsets: Vec<u64> = rest.iter().map(|l| l["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, [7, 8]);
}
