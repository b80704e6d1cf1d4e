//! Parking: a saga whose next attempt is far away waits without a task, and
//! comes back when it is due, when a command (cancel, retry, wait, watch)
//! arrives, or after a restart — over real gRPC, sled and participants.
//!
//! The servers here park waits of `PARK_AFTER` or more (the default is 2 s) and
//! participants ask for `HINT` between attempts, so a test takes seconds.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use sagad::{engine::EngineConfig, proto::v1 as pb};
use tonic::Code;

use crate::common::*;

/// The shortest wait that parks a saga in these tests.
const PARK_AFTER: Duration = Duration::from_millis(300);
/// The `retry_after` the participants ask for: well above `PARK_AFTER`.
const HINT: Duration = Duration::from_millis(1500);
/// Far enough that no saga here reaches it by itself.
const FAR: Duration = Duration::from_secs(3600);
const DEF: &str = "order-fulfillment";

fn fwd(r: &pb::StepRequest) -> bool {
    r.action == pb::Action::Forward as i32
}

fn parking() -> EngineConfig {
    EngineConfig {
        park_after: PARK_AFTER,
        ..EngineConfig::default()
    }
}

async fn parking_server() -> TestServer {
    TestServer::start_with_extras(
        vec![order_fulfillment()],
        parking(),
        Extras {
            metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Extras::default()
        },
    )
    .await
}

/// Polls until exactly `n` sagas are parked.
async fn parked(server: &TestServer, n: usize) {
    let engine = server.server.as_ref().unwrap().engine().clone();
    poll_until(&format!("{n} parked sagas"), || {
        let parked = engine.parked_sagas();
        async move { (parked == n).then_some(()) }
    })
    .await;
}

fn active(state: &str) -> String {
    format!("sagad_sagas_active{{definition=\"{DEF}\",state=\"{state}\"}}")
}

/// The (running, compensating) active gauges.
async fn gauges(server: &TestServer) -> (Option<f64>, Option<f64>) {
    let text = scrape(server.metrics_addr.unwrap()).await;
    (
        sample(&text, &active("running")),
        sample(&text, &active("compensating")),
    )
}

fn due(step: &pb::Step) -> SystemTime {
    step.next_attempt_at
        .and_then(|t| SystemTime::try_from(t).ok())
        .expect("a step waiting in backoff has a due time")
}

/// The shop, whose first `times` charges ask to be retried after `hint`.
async fn charge_retried(times: u32, hint: Duration) -> Served {
    serve(FakeParticipant::new(move |r| {
        if fwd(r) && r.step == "charge-payment" && r.attempt <= times {
            Answer::Retry(Some(hint))
        } else {
            Answer::Ok
        }
    }))
    .await
}

async fn start_keyed(client: &mut Client, key: &str, wait: bool) -> pb::Saga {
    client
        .start_saga(pb::StartSagaRequest {
            definition: DEF.into(),
            payload: key.as_bytes().to_vec(),
            idempotency_key: key.into(),
            wait,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .saga
        .unwrap()
}

#[tokio::test]
async fn a_saga_waiting_long_parks_and_runs_its_attempt_when_due() {
    let server = parking_server().await;
    let shop = charge_retried(1, HINT).await;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(5, 5)).await;
    let saga = start_order(&mut client, "parks", false).await;

    parked(&server, 1).await;
    let engine = server.server.as_ref().unwrap().engine();
    assert_eq!(engine.active_sagas(), 1, "a parked saga is still owned");
    let waiting = get(&mut client, &saga.id).await;
    assert_eq!(state(&waiting), pb::SagaState::Running);
    assert_eq!(waiting.steps[1].forward_attempts, 1);
    let due = due(&waiting.steps[1]);

    let done = until_terminal(&mut client, &saga.id).await;
    assert_eq!(state(&done), pb::SagaState::Completed);
    assert_eq!(
        shop.fake.trace(&saga.id),
        [
            "F:validate-order#1",
            "F:charge-payment#1",
            "F:charge-payment#2",
            "F:ship-order#1"
        ]
    );
    let second = shop
        .fake
        .calls()
        .into_iter()
        .find(|c| c.saga_id == saga.id && c.step == "charge-payment" && c.attempt == 2)
        .unwrap();
    assert!(
        second.arrived_wall >= due,
        "the parked attempt ran before its due time"
    );
    poll_until("the finished saga owned by no one", || {
        let owned = (engine.active_sagas(), engine.parked_sagas());
        async move { (owned == (0, 0)).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn commands_wake_parked_sagas_and_are_answered_right() {
    let server = parking_server().await;
    // Every charge asks to be retried in an hour: these sagas only move on a command.
    let shop = serve(FakeParticipant::new(|r| {
        if fwd(r) && r.step == "charge-payment" {
            Answer::Retry(Some(FAR))
        } else {
            Answer::Ok
        }
    }))
    .await;
    let mut client = server.client().await;
    // A time budget beyond the hour, or the hint would end it.
    let retry = pb::RetryPolicy {
        max_duration: Some(prost_types::Duration {
            seconds: 2 * FAR.as_secs() as i64,
            nanos: 0,
        }),
        ..quick_retry(5, 5)
    };
    register_shop(&mut client, &shop, retry).await;
    let [retried, cancelled, watched, waited] = ["retried", "cancelled", "watched", "waited"];
    let mut ids = Vec::new();
    for key in [retried, cancelled, watched, waited] {
        ids.push(start_keyed(&mut client, key, false).await.id);
    }
    let [retried_id, cancelled_id, watched_id, waited_id] = ids.try_into().unwrap();
    parked(&server, 4).await;

    // Retry: only a FAILED saga can be retried. The saga is woken to answer
    // that, and parks again since nothing else changed.
    let refused = client
        .retry_saga(pb::RetrySagaRequest {
            id: retried_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("RUNNING"), "{refused:?}");
    parked(&server, 4).await;
    assert_eq!(
        shop.fake.trace(&retried_id),
        ["F:validate-order#1", "F:charge-payment#1"],
        "waking made no call"
    );

    // Cancel: journaled, answered, and the saga compensates.
    let answer = client
        .cancel_saga(pb::CancelSagaRequest {
            id: cancelled_id.clone(),
            reason: "customer called".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.cancel_reason, "customer called");
    let done = until_terminal(&mut client, &cancelled_id).await;
    assert_eq!(state(&done), pb::SagaState::Compensated);
    assert_eq!(
        shop.fake.trace(&cancelled_id),
        [
            "F:validate-order#1",
            "F:charge-payment#1",
            "C:charge-payment#1",
            "C:validate-order#1"
        ]
    );
    assert_eq!(
        shop.fake.applied(&cancelled_id),
        ["F:validate-order", "C:validate-order"]
    );
    parked(&server, 3).await;

    // Watch: the history, then live events; the watched saga stays awake.
    let mut stream = client
        .watch_saga(pb::WatchSagaRequest {
            id: watched_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    use pb::saga_event::Event as E;
    let mut events = Vec::new();
    while !matches!(
        events.last().and_then(|e: &pb::SagaEvent| e.event.as_ref()),
        Some(E::AttemptFailed(_))
    ) {
        events.push(stream.message().await.unwrap().expect("the history"));
    }
    parked(&server, 2).await;
    client
        .cancel_saga(pb::CancelSagaRequest {
            id: watched_id.clone(),
            reason: "watched".into(),
        })
        .await
        .unwrap();
    while let Some(event) = stream.message().await.unwrap() {
        events.push(event);
    }
    let kinds: Vec<&str> = events.iter().map(event_kind).collect();
    assert_eq!(
        kinds,
        [
            "started",
            "attempt",
            "ok",
            "attempt",
            "failed",
            "cancel",
            "compensating",
            "attempt",
            "ok",
            "attempt",
            "ok",
            "compensated"
        ]
    );
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=12).collect::<Vec<u64>>(), "no event missed");

    // Wait (a repeated start with `wait`): answered with the terminal state.
    let waiter = {
        let mut client = client.clone();
        tokio::spawn(async move { start_keyed(&mut client, waited, true).await })
    };
    parked(&server, 1).await;
    client
        .cancel_saga(pb::CancelSagaRequest {
            id: waited_id.clone(),
            reason: "waited".into(),
        })
        .await
        .unwrap();
    let answer = waiter.await.unwrap();
    assert_eq!(answer.id, waited_id);
    assert_eq!(state(&answer), pb::SagaState::Compensated);

    // The one left is still parked, its backoff intact.
    let left = get(&mut client, &retried_id).await;
    assert_eq!(state(&left), pb::SagaState::Running);
    assert!(due(&left.steps[1]) > SystemTime::now() + FAR / 2);
}

#[tokio::test]
async fn a_restart_parks_waiting_sagas_again_and_they_finish() {
    let mut server = parking_server().await;
    let open = Arc::new(AtomicBool::new(false));
    let gate = open.clone();
    // Until the gate opens, "slow-charge" sagas wait to retry their charge
    // (RUNNING) and the "slow-refund" one, declined at shipping, waits to retry
    // its refund (COMPENSATING).
    let shop = serve(FakeParticipant::new(move |r| {
        let opened = gate.load(Ordering::SeqCst);
        let payload = String::from_utf8_lossy(&r.payload).to_string();
        match (fwd(r), r.step.as_str(), payload.as_str()) {
            (true, "charge-payment", "slow-charge") if !opened => Answer::Retry(Some(HINT)),
            (true, "ship-order", "slow-refund") => Answer::Reject("out of stock"),
            (false, "charge-payment", "slow-refund") if !opened => Answer::Retry(Some(HINT)),
            _ => Answer::Ok,
        }
    }))
    .await;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(100, 100)).await;
    let mut charging = Vec::new();
    for _ in 0..4 {
        charging.push(start_order(&mut client, "slow-charge", false).await.id);
    }
    let refunding = start_order(&mut client, "slow-refund", false).await.id;
    parked(&server, 5).await;
    let refund = get(&mut client, &refunding).await;
    assert_eq!(state(&refund), pb::SagaState::Compensating);
    // Parking moves no gauge: a parked saga is active in its state.
    assert_eq!(gauges(&server).await, (Some(4.0), Some(1.0)));
    let text = scrape(server.metrics_addr.unwrap()).await;
    assert_eq!(sample(&text, "sagad_sagas_parked"), Some(5.0), "{text}");

    server.restart().await;
    until_read_back(server.metrics_addr.unwrap()).await;
    let text = scrape(server.metrics_addr.unwrap()).await;
    assert_eq!(
        sample(&text, "sagad_recovery_resumed_sagas"),
        Some(5.0),
        "{text}"
    );
    assert_eq!(gauges(&server).await, (Some(4.0), Some(1.0)));
    // Parked again after the restart (each may wake to retry, and park again).
    parked(&server, 5).await;
    assert_eq!(
        server.server.as_ref().unwrap().engine().active_sagas(),
        5,
        "every saga is owned"
    );

    open.store(true, Ordering::SeqCst);
    let mut client = server.client().await;
    for id in &charging {
        let done = until_terminal(&mut client, id).await;
        assert_eq!(state(&done), pb::SagaState::Completed, "{id}");
        assert_eq!(
            shop.fake.applied(id),
            ["F:validate-order", "F:charge-payment", "F:ship-order"]
        );
    }
    let done = until_terminal(&mut client, &refunding).await;
    assert_eq!(state(&done), pb::SagaState::Compensated);
    assert_eq!(
        shop.fake.applied(&refunding),
        [
            "F:validate-order",
            "F:charge-payment",
            "C:charge-payment",
            "C:validate-order"
        ]
    );
    // Every wait was kept, the one across the restart too: each retried call
    // came at least HINT after the one before it (the due time is journaled).
    for id in charging.iter().chain([&refunding]) {
        let charges: Vec<_> = shop
            .fake
            .calls()
            .into_iter()
            // The forward charges of a slow charge, the refunds of the slow refund.
            .filter(|c| &c.saga_id == id && c.step == "charge-payment")
            .filter(|c| c.compensate == (id == &refunding))
            .collect();
        assert!(charges.len() >= 2, "{id}: {charges:?}");
        for pair in charges.windows(2) {
            let gap = pair[1]
                .arrived_wall
                .duration_since(pair[0].arrived_wall)
                .unwrap_or_default();
            assert!(
                gap + Duration::from_millis(5) >= HINT,
                "{id}: a retry came {gap:?} after the call before it"
            );
        }
    }
    poll_until("the gauges back to zero", || {
        let server = &server;
        async move { (gauges(server).await == (Some(0.0), Some(0.0))).then_some(()) }
    })
    .await;
    parked(&server, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_racing_the_timer_are_all_answered_right() {
    const RETRIES: u32 = 6;
    // Just above PARK_AFTER: the saga parks and wakes again and again.
    let hint = PARK_AFTER + Duration::from_millis(50);
    let server = parking_server().await;
    let shop = charge_retried(RETRIES, hint).await;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(100, 100)).await;
    let saga = start_keyed(&mut client, "raced", false).await;
    parked(&server, 1).await;

    // Retries hammer the saga while it parks and wakes; halfway, a waiter joins
    // (and keeps it awake from then on).
    let engine = server.server.as_ref().unwrap().engine().clone();
    let (mut waiter, mut refusals, mut seen_parked) = (None, 0, 0);
    loop {
        if engine.parked_sagas() == 1 {
            seen_parked += 1;
        }
        let charged = shop
            .fake
            .trace(&saga.id)
            .iter()
            .filter(|c| c.starts_with("F:charge-payment"))
            .count();
        if waiter.is_none() && charged > RETRIES as usize / 2 {
            let mut client = client.clone();
            waiter = Some(tokio::spawn(async move {
                start_keyed(&mut client, "raced", true).await
            }));
        }
        let refused = client
            .retry_saga(pb::RetrySagaRequest {
                id: saga.id.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        refusals += 1;
        if refused.message().contains("COMPLETED") {
            break;
        }
        assert!(refused.message().contains("RUNNING"), "{refused:?}");
    }
    assert!(refusals > 1 && seen_parked > 0, "{refusals} {seen_parked}");
    // (Had the machine stalled past the end, the waiter joins a finished saga.)
    let waiter = waiter.unwrap_or_else(|| {
        let mut client = client.clone();
        tokio::spawn(async move { start_keyed(&mut client, "raced", true).await })
    });
    let waited = waiter.await.unwrap();
    assert_eq!(state(&waited), pb::SagaState::Completed);

    // Each attempt ran once, none before its due time.
    let charges: Vec<_> = shop
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.saga_id == saga.id && c.step == "charge-payment")
        .collect();
    let attempts: Vec<u32> = charges.iter().map(|c| c.attempt).collect();
    assert_eq!(attempts, (1..=RETRIES + 1).collect::<Vec<_>>());
    for pair in charges.windows(2) {
        let gap = pair[1]
            .arrived_wall
            .duration_since(pair[0].arrived_wall)
            .unwrap_or_default();
        assert!(
            gap + Duration::from_millis(5) >= hint,
            "a retry after {gap:?}"
        );
    }
    let done = get(&mut client, &saga.id).await;
    assert_eq!(state(&done), pb::SagaState::Completed);
    assert_eq!(done.steps[1].forward_attempts, RETRIES + 1);
}
