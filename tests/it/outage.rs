//! A participant that is down: a connection it refuses is a call that never
//! reached it, retried within the step's time budget; a step whose every
//! attempt was refused did nothing and is not compensated (the steps done
//! before it are); a participant back within the budget lets the saga complete.
//!
//! "Down" is a loopback port nothing listens on. The policies are short (a
//! budget of a second or two, delays of tens of milliseconds); the tests poll
//! for states with the suite's generous deadline and assert what the journal
//! says, never how fast it happened.

use std::{net::SocketAddr, time::Duration};

use sagad::proto::v1 as pb;
use tokio::net::TcpListener;

use crate::common::*;

/// A loopback address nothing listens on: a port the kernel just gave out and
/// took back (so a participant can be started there later).
async fn dead_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

fn wire(d: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(d).unwrap()
}

/// Short delays, many attempts: the time budget is what ends the step.
fn within(budget: Duration) -> pb::RetryPolicy {
    pb::RetryPolicy {
        max_interval: Some(wire(Duration::from_millis(200))),
        max_duration: Some(wire(budget)),
        ..quick_retry(1000, 5)
    }
}

fn method(addr: SocketAddr, name: &str) -> String {
    format!("http://{addr}/sagad.v1.ParticipantService/{name}")
}

async fn register(client: &mut Client, name: &str, addr: SocketAddr, retry: pb::RetryPolicy) {
    client
        .register_participant(pb::RegisterParticipantRequest {
            name: name.into(),
            forward_endpoint: method(addr, "Forward"),
            compensate_endpoint: method(addr, "Compensate"),
            retry: Some(retry),
            timeout: Some(wire(Duration::from_secs(5))),
        })
        .await
        .unwrap();
}

/// Starts `validate` (orders) then `charge` (payments), inline.
async fn start(client: &mut Client) -> pb::Saga {
    let step = |name: &str, participant: &str| pb::StepDefinition {
        name: name.into(),
        participant: participant.into(),
        ..Default::default()
    };
    client
        .start_saga(pb::StartSagaRequest {
            steps: vec![step("validate", "orders"), step("charge", "payments")],
            payload: b"{}".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .saga
        .unwrap()
}

fn outcomes(step: &pb::Step, action: pb::Action) -> Vec<pb::AttemptOutcome> {
    step.attempts
        .iter()
        .filter(|a| a.action == action as i32)
        .map(|a| pb::AttemptOutcome::try_from(a.outcome).unwrap())
        .collect()
}

fn millis(t: &prost_types::Timestamp) -> i64 {
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
}

/// Polls until the saga's step `i` has made at least `n` forward attempts.
async fn until_attempts(client: &mut Client, id: &str, i: usize, n: u32) {
    poll_until(&format!("{n} attempts of step {i}"), || {
        let mut client = client.clone();
        async move { (get(&mut client, id).await.steps[i].forward_attempts >= n).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn a_refused_step_is_retried_then_not_compensated_and_the_done_ones_are() {
    const BUDGET: Duration = Duration::from_secs(2);
    let mut server = TestServer::start().await;
    let orders = serve(FakeParticipant::new(|_| Answer::Ok)).await;
    let mut client = server.client().await;
    register(&mut client, "orders", orders.addr, quick_retry(3, 3)).await;
    register(
        &mut client,
        "payments",
        dead_address().await,
        within(BUDGET),
    )
    .await;

    let id = start(&mut client).await.id;
    until_attempts(&mut client, &id, 1, 2).await;
    // A restart in the middle neither resets the budget nor reuses a number.
    server.restart().await;
    let mut client = server.client().await;
    let saga = until_terminal(&mut client, &id).await;

    assert_eq!(state(&saga), pb::SagaState::Compensated, "{saga:?}");
    assert_eq!(
        step_states(&saga),
        [pb::StepState::Compensated, pb::StepState::Failed]
    );
    let charge = &saga.steps[1];
    let refused = outcomes(charge, pb::Action::Forward);
    assert!(refused.len() >= 2, "{charge:?}");
    assert!(
        refused
            .iter()
            .all(|o| *o == pb::AttemptOutcome::NotDelivered),
        "every attempt was refused: {refused:?}"
    );
    assert_eq!(charge.compensate_attempts, 0, "it did nothing: no undo");
    let numbers: Vec<u32> = charge.attempts.iter().map(|a| a.number).collect();
    assert_eq!(numbers, (1..=refused.len() as u32).collect::<Vec<_>>());
    // By the journal's times: no attempt started after the budget's end.
    let first = millis(charge.attempts[0].started_at.as_ref().unwrap());
    for attempt in &charge.attempts {
        let at = millis(attempt.started_at.as_ref().unwrap());
        assert!(
            at <= first + BUDGET.as_millis() as i64,
            "attempt {} started {} ms after the first",
            attempt.number,
            at - first
        );
    }
    assert!(
        saga.error.contains("step 'charge' was never reached in")
            && saga.error.contains("so it is not compensated"),
        "{}",
        saga.error
    );
    // The done step was undone; the participant saw nothing else.
    assert_eq!(orders.fake.trace(&id), ["F:validate#1", "C:validate#1"]);
}

#[tokio::test]
async fn a_participant_back_within_the_budget_completes_the_saga() {
    let server = TestServer::start().await;
    let orders = serve(FakeParticipant::new(|_| Answer::Ok)).await;
    let payments_addr = dead_address().await;
    let mut client = server.client().await;
    register(&mut client, "orders", orders.addr, quick_retry(3, 3)).await;
    // A budget far longer than the test needs: the participant comes back first.
    register(
        &mut client,
        "payments",
        payments_addr,
        within(Duration::from_secs(600)),
    )
    .await;

    let id = start(&mut client).await.id;
    until_attempts(&mut client, &id, 1, 3).await;
    // The payments service is back, at the address it was registered with.
    let payments = serve_at(FakeParticipant::new(|_| Answer::Ok), payments_addr).await;
    let saga = until_terminal(&mut client, &id).await;

    assert_eq!(state(&saga), pb::SagaState::Completed, "{saga:?}");
    let forward = outcomes(&saga.steps[1], pb::Action::Forward);
    let (last, before) = forward.split_last().unwrap();
    assert_eq!(*last, pb::AttemptOutcome::Succeeded);
    assert!(before.len() >= 3, "{forward:?}");
    assert!(
        before
            .iter()
            .all(|o| *o == pb::AttemptOutcome::NotDelivered),
        "{forward:?}"
    );
    // It saw one call: the one that came through, under its attempt number.
    let calls = payments.fake.trace(&id);
    assert_eq!(calls, [format!("F:charge#{}", forward.len())]);
    assert_eq!(orders.fake.trace(&id), ["F:validate#1"]);
}
