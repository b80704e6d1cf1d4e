//! Saga behaviour end to end: a real coordinator over loopback gRPC, a real sled
//! journal in a temp dir, and scripted participants that log every call.

use std::time::{Duration, SystemTime};

use sagad::proto::v1 as pb;
use tonic::Code;

use crate::common::*;

const ORDER: &str = r#"{"order_id":"o-1"}"#;

/// Parses a `grpc-timeout` header value ("300m", "299999u", ...).
fn grpc_timeout(value: &str) -> Duration {
    let (number, unit) = value.split_at(value.len() - 1);
    let n: u64 = number.parse().unwrap();
    match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        other => panic!("unknown grpc-timeout unit {other}"),
    }
}

fn fwd(r: &pb::StepRequest) -> bool {
    r.action == pb::Action::Forward as i32
}

#[tokio::test]
async fn happy_path_runs_every_step_once_in_order() {
    let server = TestServer::start().await;
    let shop = serve(FakeParticipant::new(|_| Answer::Ok)).await;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(3, 3)).await;

    let saga = start_order(&mut client, ORDER, true).await;
    assert_eq!(state(&saga), pb::SagaState::Completed);
    assert_eq!(step_states(&saga), vec![pb::StepState::Succeeded; 3]);
    assert_eq!(
        shop.fake.trace(&saga.id),
        vec!["F:validate-order#1", "F:charge-payment#1", "F:ship-order#1"]
    );
    let calls = shop.fake.calls();
    // Each call carries the step timeout as its deadline and a stable key.
    assert!(calls.iter().all(|c| c.deadline.is_some()), "{calls:?}");
    assert_eq!(calls[1].key, format!("{}/charge-payment/forward", saga.id));
    // Later steps see the outputs of earlier ones.
    let mut outputs = calls[2].outputs.clone();
    outputs.sort();
    assert_eq!(outputs, vec!["charge-payment", "validate-order"]);
    assert_eq!(saga.steps[0].output, b"out:validate-order");
    assert!(saga.finished_at.is_some());
}

#[tokio::test]
async fn rejection_at_each_step_compensates_the_earlier_ones_in_reverse() {
    let server = TestServer::start().await;
    // The payload names the step that rejects.
    let shop = serve(FakeParticipant::new(|r| {
        let reject: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
        if fwd(r) && reject["reject"] == r.step.as_str() {
            Answer::Reject("no thanks")
        } else {
            Answer::Ok
        }
    }))
    .await;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(3, 3)).await;

    use pb::StepState::{Compensated, Failed, Skipped};
    let cases = [
        (
            "validate-order",
            vec!["F:validate-order#1"],
            vec![Failed, Skipped, Skipped],
        ),
        (
            "charge-payment",
            vec![
                "F:validate-order#1",
                "F:charge-payment#1",
                "C:validate-order#1",
            ],
            vec![Compensated, Failed, Skipped],
        ),
        (
            "ship-order",
            vec![
                "F:validate-order#1",
                "F:charge-payment#1",
                "F:ship-order#1",
                "C:charge-payment#1",
                "C:validate-order#1",
            ],
            vec![Compensated, Compensated, Failed],
        ),
    ];
    for (step, trace, states) in cases {
        let payload = format!(r#"{{"reject":"{step}"}}"#);
        let saga = start_order(&mut client, &payload, true).await;
        assert_eq!(state(&saga), pb::SagaState::Compensated, "reject at {step}");
        assert_eq!(shop.fake.trace(&saga.id), trace, "reject at {step}");
        assert_eq!(step_states(&saga), states, "reject at {step}");
        assert!(
            saga.error
                .contains(&format!("step '{step}' was rejected: no thanks")),
            "{}",
            saga.error
        );
        // The rejected step is never compensated.
        assert!(!shop.fake.applied(&saga.id).contains(&format!("C:{step}")));
    }
}

#[tokio::test]
async fn transient_failures_are_retried_with_growing_gaps() {
    let server = TestServer::start().await;
    let shop = serve(FakeParticipant::new(|r| {
        if fwd(r) && r.step == "charge-payment" && r.attempt < 4 {
            Answer::Status(Code::Unavailable)
        } else {
            Answer::Ok
        }
    }))
    .await;
    let mut client = server.client().await;
    let mut retry = quick_retry(5, 3);
    retry.initial_interval = Some(prost_types::Duration {
        seconds: 0,
        nanos: 50_000_000,
    });
    register_shop(&mut client, &shop, retry).await;

    let saga = start_order(&mut client, ORDER, true).await;
    assert_eq!(state(&saga), pb::SagaState::Completed);
    assert_eq!(saga.steps[1].forward_attempts, 4);
    let charges: Vec<_> = shop
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.step == "charge-payment")
        .collect();
    assert_eq!(
        charges.iter().map(|c| c.attempt).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    let gaps: Vec<Duration> = charges
        .windows(2)
        .map(|w| w[1].arrived - w[0].arrived)
        .collect();
    // Nominal delays 50, 100, 200 ms (no jitter): each gap is at least its
    // delay (how much longer depends on the machine's load, so only the
    // journaled schedule is asserted to grow).
    for (gap, floor) in gaps.iter().zip([50, 100, 200]) {
        assert!(*gap >= Duration::from_millis(floor), "gaps {gaps:?}");
    }
    let attempts = &saga.steps[1].attempts;
    let millis = |t: &prost_types::Timestamp| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000;
    let scheduled: Vec<i64> = attempts[..3]
        .iter()
        .map(|a| {
            millis(a.next_attempt_at.as_ref().unwrap()) - millis(a.finished_at.as_ref().unwrap())
        })
        .collect();
    assert_eq!(scheduled, [50, 100, 200], "the journaled delays double");
    // Every attempt is visible with its outcome and error.
    assert_eq!(attempts.len(), 4);
    assert_eq!(attempts[0].outcome, pb::AttemptOutcome::Transient as i32);
    assert!(
        attempts[0].error.contains("Unavailable"),
        "{}",
        attempts[0].error
    );
    assert!(attempts[0].next_attempt_at.is_some());
    assert_eq!(attempts[3].outcome, pb::AttemptOutcome::Succeeded as i32);
}

/// A participant that goes away and comes back on the same address (a
/// restart, a deploy): the calls made while it is down fail as transient and
/// are retried, and once it is back the coordinator connects again by itself.
#[tokio::test]
async fn a_participant_that_restarts_is_reached_again() {
    let server = TestServer::start().await;
    let shop = serve(FakeParticipant::new(|_| Answer::Ok)).await;
    let addr = shop.addr;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(1000, 3)).await;
    // One saga first, so that the coordinator holds a connection when the
    // participant goes away.
    let first = start_order(&mut client, ORDER, true).await;
    assert_eq!(state(&first), pb::SagaState::Completed);

    drop(shop);
    let saga = start_order(&mut client, r#"{"order_id":"o-2"}"#, false).await;
    let failed = poll_until("a failed attempt while the participant is down", || {
        let (mut client, id) = (client.clone(), saga.id.clone());
        async move {
            let saga = get(&mut client, &id).await;
            let attempt = saga.steps[0].attempts.first()?.clone();
            // Refused (not delivered), or, had the call gone out on the old
            // connection just as it closed, effect unknown.
            let failed = [
                pb::AttemptOutcome::NotDelivered,
                pb::AttemptOutcome::Transient,
            ]
            .map(|o| o as i32)
            .contains(&attempt.outcome);
            failed.then_some(attempt)
        }
    })
    .await;
    assert!(
        failed.error.contains("cannot reach") || failed.error.contains("Unavailable"),
        "{}",
        failed.error
    );

    let back = serve_at(FakeParticipant::new(|_| Answer::Ok), addr).await;
    let saga = until_terminal(&mut client, &saga.id).await;
    assert_eq!(state(&saga), pb::SagaState::Completed);
    assert_eq!(
        back.fake.applied(&saga.id),
        ["F:validate-order", "F:charge-payment", "F:ship-order"]
    );
    // Later sagas go straight through on the new connection.
    let later = start_order(&mut client, r#"{"order_id":"o-3"}"#, true).await;
    assert_eq!(state(&later), pb::SagaState::Completed);
    assert!(
        later.steps.iter().all(|s| s.forward_attempts == 1),
        "{:?}",
        later.steps
    );
}

#[tokio::test]
async fn exhausted_forward_retries_compensate_the_unknown_step_and_earlier_ones() {
    let server = TestServer::start().await;
    let shop = serve(FakeParticipant::new(|r| {
        if fwd(r) && r.step == "ship-order" {
            Answer::Retry(None)
        } else {
            Answer::Ok
        }
    }))
    .await;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(3, 3)).await;

    let saga = start_order(&mut client, ORDER, true).await;
    assert_eq!(state(&saga), pb::SagaState::Compensated);
    assert_eq!(
        shop.fake.trace(&saga.id),
        vec![
            "F:validate-order#1",
            "F:charge-payment#1",
            "F:ship-order#1",
            "F:ship-order#2",
            "F:ship-order#3",
            "C:ship-order#1",
            "C:charge-payment#1",
            "C:validate-order#1",
        ]
    );
    assert!(
        saga.error.contains("'ship-order' failed after 3 attempts"),
        "{}",
        saga.error
    );
}

#[tokio::test]
async fn compensation_retries_then_gives_up_and_retry_saga_finishes_it() {
    let server = TestServer::start().await;
    // charge-payment's refund fails transiently until the test flips the switch.
    let refunds_work = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let works = refunds_work.clone();
    let shop = serve(FakeParticipant::new(move |r| {
        match (fwd(r), r.step.as_str()) {
            (true, "ship-order") => Answer::Reject("out of stock"),
            (false, "charge-payment") if r.attempt == 1 => Answer::Status(Code::Internal),
            (false, "charge-payment") if !works.load(std::sync::atomic::Ordering::SeqCst) => {
                Answer::Status(Code::Unavailable)
            }
            _ => Answer::Ok,
        }
    }))
    .await;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(3, 3)).await;

    let saga = start_order(&mut client, ORDER, true).await;
    assert_eq!(state(&saga), pb::SagaState::Failed);
    assert!(
        saga.error
            .contains("compensation of step 'charge-payment' gave up after 3 attempts"),
        "{}",
        saga.error
    );
    assert_eq!(saga.steps[1].state, pb::StepState::Failed as i32);
    assert_eq!(saga.steps[1].compensate_attempts, 3);
    // validate-order is not compensated before charge-payment is: one at a time, in reverse.
    assert!(
        !shop
            .fake
            .trace(&saga.id)
            .iter()
            .any(|t| t.starts_with("C:validate-order"))
    );

    refunds_work.store(true, std::sync::atomic::Ordering::SeqCst);
    let retried = client
        .retry_saga(pb::RetrySagaRequest {
            id: saga.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state(&retried), pb::SagaState::Compensating);
    let done = until_terminal(&mut client, &saga.id).await;
    assert_eq!(state(&done), pb::SagaState::Compensated);
    // Attempt numbers go on from where they stopped.
    let trace = shop.fake.trace(&saga.id);
    assert_eq!(
        trace[trace.len() - 2..],
        [
            "C:charge-payment#4".to_string(),
            "C:validate-order#1".to_string()
        ]
    );
    assert_eq!(done.steps[1].state, pb::StepState::Compensated as i32);
}

#[tokio::test]
async fn compensation_failing_transiently_then_succeeding() {
    let server = TestServer::start().await;
    let shop = serve(FakeParticipant::new(|r| match (fwd(r), r.step.as_str()) {
        (true, "charge-payment") => Answer::Reject("declined"),
        (false, "validate-order") if r.attempt < 3 => Answer::Status(Code::Unavailable),
        _ => Answer::Ok,
    }))
    .await;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(3, 5)).await;
    let saga = start_order(&mut client, ORDER, true).await;
    assert_eq!(state(&saga), pb::SagaState::Compensated);
    assert_eq!(saga.steps[0].compensate_attempts, 3);
    assert_eq!(
        shop.fake.applied(&saga.id),
        vec!["F:validate-order", "C:validate-order"]
    );
}

#[tokio::test]
async fn cancel_waits_for_the_slow_forward_call_before_compensating() {
    let server = TestServer::start().await;
    let shop = serve(FakeParticipant::new(|r| {
        if fwd(r) && r.step == "charge-payment" {
            Answer::Slow(Duration::from_millis(600), Box::new(Answer::Ok))
        } else {
            Answer::Ok
        }
    }))
    .await;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(3, 3)).await;
    let saga = start_order(&mut client, ORDER, false).await;

    // Cancel while the charge is in flight.
    poll_until("the slow charge to arrive", || {
        let calls = shop.fake.calls();
        async move {
            calls
                .iter()
                .any(|c| c.step == "charge-payment")
                .then_some(())
        }
    })
    .await;
    let cancelled = client
        .cancel_saga(pb::CancelSagaRequest {
            id: saga.id.clone(),
            reason: "customer asked".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.cancel_reason, "customer asked");
    assert_eq!(
        state(&cancelled),
        pb::SagaState::Running,
        "still waiting for the call"
    );

    let done = until_terminal(&mut client, &saga.id).await;
    assert_eq!(state(&done), pb::SagaState::Compensated);
    assert_eq!(done.error, "cancelled: customer asked");
    let calls = shop.fake.calls();
    let charge = calls
        .iter()
        .find(|c| c.step == "charge-payment" && !c.compensate)
        .unwrap();
    let first_compensation = calls.iter().find(|c| c.compensate).unwrap();
    assert!(
        first_compensation.arrived >= charge.answered.unwrap(),
        "compensation started before the forward call returned"
    );
    assert_eq!(
        shop.fake.trace(&saga.id),
        vec![
            "F:validate-order#1",
            "F:charge-payment#1",
            "C:charge-payment#1",
            "C:validate-order#1"
        ]
    );
    assert_eq!(done.steps[2].state, pb::StepState::Skipped as i32);
}

#[tokio::test]
async fn idempotency_key_gives_one_saga_and_one_run() {
    let server = TestServer::start().await;
    let shop = serve(FakeParticipant::new(|_| Answer::Ok)).await;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(3, 3)).await;
    let request = pb::StartSagaRequest {
        definition: "order-fulfillment".into(),
        payload: ORDER.as_bytes().to_vec(),
        idempotency_key: "order-o-1".into(),
        wait: true,
        ..Default::default()
    };
    let first = client
        .start_saga(request.clone())
        .await
        .unwrap()
        .into_inner();
    let second = client
        .start_saga(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(first.created && !second.created);
    let (a, b) = (first.saga.unwrap(), second.saga.unwrap());
    assert_eq!(a.id, b.id);
    assert_eq!(state(&b), pb::SagaState::Completed);
    assert_eq!(shop.fake.calls().len(), 3, "one run only");

    // Concurrent starts with one new key: still one saga.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut client = server.client().await;
        let mut request = request.clone();
        request.idempotency_key = "order-o-2".into();
        request.wait = false;
        tasks.push(tokio::spawn(async move {
            client
                .start_saga(request)
                .await
                .unwrap()
                .into_inner()
                .saga
                .unwrap()
                .id
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");

    let mut different = request.clone();
    different.payload = br#"{"order_id":"o-9"}"#.to_vec();
    let err = client.start_saga(different).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains("order-o-1"), "{}", err.message());
}

#[tokio::test]
async fn watch_streams_every_event_in_order_and_ends_at_the_terminal_one() {
    let server = TestServer::start().await;
    let shop = serve(FakeParticipant::new(|r| {
        if fwd(r) && r.step == "ship-order" && r.attempt == 1 {
            Answer::Slow(
                Duration::from_millis(200),
                Box::new(Answer::Status(Code::Unavailable)),
            )
        } else {
            Answer::Ok
        }
    }))
    .await;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(3, 3)).await;
    let saga = start_order(&mut client, ORDER, false).await;

    let mut stream = client
        .watch_saga(pb::WatchSagaRequest {
            id: saga.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Some(event) = stream.message().await.unwrap() {
        events.push(event);
    }
    use pb::saga_event::Event as E;
    let kinds: Vec<&str> = events.iter().map(event_kind).collect();
    assert_eq!(
        kinds,
        vec![
            "started",
            "attempt",
            "ok",
            "attempt",
            "ok",
            "attempt",
            "failed",
            "attempt",
            "ok",
            "completed"
        ]
    );
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<u64>>());
    assert!(events.windows(2).all(|w| w[0].offset < w[1].offset));
    assert_eq!(
        events.last().unwrap().state,
        pb::SagaState::Completed as i32
    );
    if let Some(E::AttemptFailed(failed)) = &events[6].event {
        assert_eq!(failed.step, "ship-order");
        assert!(failed.next_attempt_at.is_some());
    } else {
        panic!("event 7 is not the failed attempt");
    }

    // Watching a finished saga replays its history and ends.
    let mut replay = client
        .watch_saga(pb::WatchSagaRequest {
            id: saga.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut count = 0;
    while replay.message().await.unwrap().is_some() {
        count += 1;
    }
    assert_eq!(count, events.len());
}

#[tokio::test]
async fn list_sagas_pages_newest_first_and_filters() {
    let server = TestServer::start().await;
    let shop = serve(FakeParticipant::new(|r| {
        if fwd(r) && r.payload.starts_with(b"bad") && r.step == "validate-order" {
            Answer::Reject("invalid")
        } else {
            Answer::Ok
        }
    }))
    .await;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(3, 3)).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let payload = if i % 3 == 0 { "bad" } else { "good" };
        ids.push(start_order(&mut client, payload, true).await.id);
    }
    ids.reverse(); // newest first

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_sagas(pb::ListSagasRequest {
                page_size: 3,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.summaries.len() <= 3);
        seen.extend(page.summaries.into_iter().map(|s| s.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ids);

    let compensated = client
        .list_sagas(pb::ListSagasRequest {
            state: pb::SagaState::Compensated as i32,
            definition: "order-fulfillment".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(compensated.summaries.len(), 3);
    assert!(
        compensated
            .summaries
            .iter()
            .all(|s| s.state == pb::SagaState::Compensated as i32)
    );
    let other = client
        .list_sagas(pb::ListSagasRequest {
            definition: "refunds".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(other.summaries.is_empty());
}

#[tokio::test]
async fn step_timeout_is_the_call_deadline_and_a_late_answer_is_retried() {
    let server = TestServer::start().await;
    let shop = serve(FakeParticipant::new(|r| {
        if fwd(r) && r.step == "validate-order" && r.attempt == 1 {
            Answer::Slow(Duration::from_secs(3), Box::new(Answer::Ok))
        } else {
            Answer::Ok
        }
    }))
    .await;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(3, 3)).await;
    let saga = client
        .start_saga(pb::StartSagaRequest {
            steps: vec![pb::StepDefinition {
                name: "validate-order".into(),
                participant: "orders".into(),
                timeout: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 300_000_000,
                }),
                ..Default::default()
            }],
            payload: ORDER.into(),
            wait: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .saga
        .unwrap();
    assert_eq!(state(&saga), pb::SagaState::Completed);
    assert_eq!(saga.definition, "inline");
    let attempts = &saga.steps[0].attempts;
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].outcome, pb::AttemptOutcome::Transient as i32);
    assert!(
        attempts[0].error.contains("timeout") || attempts[0].error.contains("DeadlineExceeded"),
        "{}",
        attempts[0].error
    );
    let deadline = grpc_timeout(
        shop.fake.calls()[0]
            .deadline
            .as_deref()
            .expect("a deadline"),
    );
    assert!(
        deadline > Duration::ZERO && deadline <= Duration::from_millis(300),
        "the call's deadline is the step timeout: {deadline:?}"
    );
}

#[tokio::test]
async fn restart_during_backoff_resumes_every_saga_without_early_attempts() {
    let mut server = TestServer::start().await;
    // Every step fails twice before it succeeds: sagas spend most time in backoff.
    let shop = serve(FakeParticipant::new(|r| {
        if fwd(r) && r.attempt <= 2 {
            Answer::Status(Code::Unavailable)
        } else {
            Answer::Ok
        }
    }))
    .await;
    let mut client = server.client().await;
    let mut retry = quick_retry(5, 3);
    retry.initial_interval = Some(prost_types::Duration {
        seconds: 0,
        nanos: 300_000_000,
    });
    register_shop(&mut client, &shop, retry).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            start_order(&mut client, &format!(r#"{{"order_id":"r-{i}"}}"#), false)
                .await
                .id,
        );
    }
    // Wait until every saga has failed at least once, so each waits in backoff.
    poll_until("every saga to wait in backoff", || {
        let calls = shop.fake.calls();
        let ids = ids.clone();
        async move {
            ids.iter()
                .all(|id| calls.iter().any(|c| &c.saga_id == id))
                .then_some(())
        }
    })
    .await;
    server.restart().await;
    let mut client = server.client().await;
    for id in &ids {
        let saga = until_terminal(&mut client, id).await;
        assert_eq!(state(&saga), pb::SagaState::Completed, "saga {id}");
        let calls: Vec<_> = shop
            .fake
            .calls()
            .into_iter()
            .filter(|c| &c.saga_id == id)
            .collect();
        for (step, journaled) in saga.steps.iter().enumerate() {
            let step_calls: Vec<_> = calls.iter().filter(|c| c.step == journaled.name).collect();
            let numbers: Vec<u32> = step_calls.iter().map(|c| c.attempt).collect();
            assert_eq!(
                numbers,
                vec![1, 2, 3],
                "saga {id} step {step}: attempts never repeat or reset"
            );
            // No attempt arrived before the due time journaled by the one before it.
            for (call, attempt) in step_calls.iter().skip(1).zip(&journaled.attempts) {
                let due = attempt
                    .next_attempt_at
                    .as_ref()
                    .expect("a failed attempt journals its due time");
                let due =
                    SystemTime::UNIX_EPOCH + Duration::new(due.seconds as u64, due.nanos as u32);
                assert!(
                    call.arrived_wall + Duration::from_millis(2) >= due,
                    "saga {id}: attempt {} arrived {:?} before its due time",
                    call.attempt,
                    due.duration_since(call.arrived_wall).unwrap_or_default()
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_sagas_share_journal_flushes() {
    let server = TestServer::start().await;
    let shop = serve(FakeParticipant::new(|r| {
        if fwd(r) && r.step == "ship-order" && r.payload.ends_with(b"7\"}") {
            Answer::Reject("no courier")
        } else {
            Answer::Ok
        }
    }))
    .await;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(3, 3)).await;
    let journal = server.server.as_ref().unwrap().engine().journal().clone();
    let before = journal.stats();

    let mut tasks = Vec::new();
    for i in 0..300 {
        let mut client = server.client().await;
        tasks.push(tokio::spawn(async move {
            let saga = start_order(&mut client, &format!(r#"{{"order_id":"c-{i}"}}"#), true).await;
            (i, state(&saga))
        }));
    }
    for task in tasks {
        let (i, final_state) = task.await.unwrap();
        let expected = if i % 10 == 7 {
            pb::SagaState::Compensated
        } else {
            pb::SagaState::Completed
        };
        assert_eq!(final_state, expected, "saga {i}");
    }
    let after = journal.stats();
    let (events, flushes) = (after.events - before.events, after.flushes - before.flushes);
    let appends = after.requests - before.requests;
    // 270 completed sagas of 8 events and 30 compensated ones of 13.
    assert_eq!(events, 270 * 8 + 30 * 13);
    // How many appends share a flush depends on how long a flush takes (the
    // faster the writer, the smaller its batches), so only that they share:
    // a journal without group commit makes one flush per append.
    assert!(
        flushes < appends,
        "concurrent sagas must share flushes: {flushes} flushes for {appends} appends"
    );
}
