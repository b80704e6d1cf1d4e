//! A participant that is down or has moved: a connection it refuses is a call
//! that never reached it, retried within the step's time budget; a step whose
//! every attempt was refused did nothing and is not compensated (the steps done
//! before it are); a participant back within the budget lets the saga complete;
//! and a saga that FAILED because a participant moved is repaired by
//! `RetrySaga` with `refresh_endpoints`.
//!
//! "Down" is a loopback port nothing listens on. The policies are short (a
//! budget of a second or two, delays of tens of milliseconds); the tests poll
//! for states with the suite's generous deadline and assert what the journal
//! says, never how fast it happened.

use std::{net::SocketAddr, time::Duration};

use sagad::{
    journal::{Journal, SledJournal},
    proto::v1 as pb,
    saga::{
        Action, Endpoint, Event, EventKind, Failure, Offset, RetryPolicy, SagaId, StepSpec,
        Timestamp,
    },
};
use tokio::net::TcpListener;
use tonic::Code;

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
    register_split(client, name, addr, addr, retry).await;
}

/// Registers `name` with its forward method at `forward` and its compensate
/// method at `compensate`.
async fn register_split(
    client: &mut Client,
    name: &str,
    forward: SocketAddr,
    compensate: SocketAddr,
    retry: pb::RetryPolicy,
) {
    client
        .register_participant(pb::RegisterParticipantRequest {
            protocol: pb::Protocol::Grpc as i32,
            name: name.into(),
            forward_endpoint: method(forward, "Forward"),
            compensate_endpoint: method(compensate, "Compensate"),
            retry: Some(retry),
            timeout: Some(wire(Duration::from_secs(5))),
            ..Default::default()
        })
        .await
        .unwrap();
}

fn inline(name: &str, participant: &str) -> pb::StepDefinition {
    pb::StepDefinition {
        name: name.into(),
        participant: participant.into(),
        ..Default::default()
    }
}

/// Starts `validate` (orders) then `charge` (payments), inline.
async fn start(client: &mut Client) -> pb::Saga {
    start_steps(
        client,
        vec![inline("validate", "orders"), inline("charge", "payments")],
    )
    .await
}

async fn start_steps(client: &mut Client, steps: Vec<pb::StepDefinition>) -> pb::Saga {
    client
        .start_saga(pb::StartSagaRequest {
            steps,
            payload: b"{}".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .saga
        .unwrap()
}

async fn retry(
    client: &mut Client,
    id: &str,
    refresh_endpoints: bool,
) -> Result<pb::Saga, tonic::Status> {
    client
        .retry_saga(pb::RetrySagaRequest {
            id: id.into(),
            refresh_endpoints,
        })
        .await
        .map(|r| r.into_inner())
}

/// Every event of saga `id` up to its `SagaCompensated`, from the feed of all
/// sagas (`WatchSaga` ends at a saga's first terminal event, and a retried
/// saga has two).
async fn history(client: &mut Client, id: &str) -> Vec<pb::SagaEvent> {
    let mut stream = client
        .subscribe(pb::SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Some(item) = stream.message().await.unwrap() {
        let event = item.event.unwrap();
        if event.saga_id != id {
            continue;
        }
        let last = event_kind(&event) == "compensated";
        events.push(event);
        if last {
            return events;
        }
    }
    panic!("the feed ended before saga {id} was compensated")
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
    // By the journal's times: no attempt was due after the budget's end (an
    // attempt starts when it is due, or a moment later on a busy machine).
    let first = millis(charge.attempts[0].started_at.as_ref().unwrap());
    for attempt in &charge.attempts {
        if let Some(due) = attempt.next_attempt_at.as_ref() {
            let due = millis(due);
            assert!(
                due <= first + BUDGET.as_millis() as i64,
                "attempt {} scheduled the next {} ms after the first",
                attempt.number,
                due - first
            );
        }
    }
    assert!(
        charge.attempts.last().unwrap().next_attempt_at.is_none(),
        "the last attempt scheduled none: the budget was spent"
    );
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
    // Three attempts refused, not only started: a third still connecting
    // when the service comes back would get through.
    poll_until("3 refused attempts of step 1", || {
        let mut client = client.clone();
        let id = id.clone();
        async move {
            let saga = get(&mut client, &id).await;
            let refused = outcomes(&saga.steps[1], pb::Action::Forward)
                .into_iter()
                .filter(|o| *o == pb::AttemptOutcome::NotDelivered)
                .count();
            (refused >= 3).then_some(())
        }
    })
    .await;
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

#[tokio::test]
async fn a_saga_failed_on_a_moved_participant_is_repaired_with_its_current_endpoints() {
    let mut server = TestServer::start().await;
    // Orders and shipping: shipping says no, so the saga turns back.
    let shop = serve(FakeParticipant::new(|r| {
        if r.step == "ship" && r.action == pb::Action::Forward as i32 {
            Answer::Reject("no carrier")
        } else {
            Answer::Ok
        }
    }))
    .await;
    let old_payments = serve(FakeParticipant::new(|_| Answer::Ok)).await;
    let gone = dead_address().await;
    let mut client = server.client().await;
    register(&mut client, "orders", shop.addr, quick_retry(3, 3)).await;
    register(&mut client, "shipping", shop.addr, quick_retry(3, 3)).await;
    // The payments service charged at its old home, and moved before refunding.
    register_split(
        &mut client,
        "payments",
        old_payments.addr,
        gone,
        quick_retry(3, 3),
    )
    .await;
    let steps = vec![
        inline("validate", "orders"),
        inline("charge", "payments"),
        inline("ship", "shipping"),
    ];
    let id = start_steps(&mut client, steps).await.id;
    let failed = until_terminal(&mut client, &id).await;
    assert_eq!(state(&failed), pb::SagaState::Failed, "{failed:?}");
    let old_refund = failed.steps[1].compensate_endpoint.clone();
    assert_eq!(old_refund, method(gone, "Compensate"));

    // Registered again at its new address: a plain retry still calls the old one.
    let new_payments = serve(FakeParticipant::new(|_| Answer::Ok)).await;
    register(
        &mut client,
        "payments",
        new_payments.addr,
        quick_retry(3, 3),
    )
    .await;
    retry(&mut client, &id, false).await.unwrap();
    let again = until_terminal(&mut client, &id).await;
    assert_eq!(state(&again), pb::SagaState::Failed);
    assert_eq!(again.steps[1].compensate_endpoint, old_refund);
    assert!(new_payments.fake.trace(&id).is_empty());

    // With refresh_endpoints it takes the current registration, and says so.
    let retried = retry(&mut client, &id, true).await.unwrap();
    let new_refund = method(new_payments.addr, "Compensate");
    let charge = &retried.steps[1];
    assert_eq!(charge.compensate_endpoint, new_refund);
    assert_eq!(
        charge.forward_endpoint,
        method(old_payments.addr, "Forward"),
        "the forward endpoint is the one the charge went to"
    );
    let [change] = charge.endpoint_changes.as_slice() else {
        panic!("{:?}", charge.endpoint_changes)
    };
    assert_eq!(
        (
            change.step.as_str(),
            change.action,
            change.old_endpoint.as_str(),
            change.new_endpoint.as_str()
        ),
        (
            "charge",
            pb::Action::Compensate as i32,
            old_refund.as_str(),
            new_refund.as_str()
        )
    );
    // `validate`'s participant did not move: nothing of it changed.
    assert!(retried.steps[0].endpoint_changes.is_empty());
    let done = until_terminal(&mut client, &id).await;
    assert_eq!(state(&done), pb::SagaState::Compensated, "{done:?}");
    let refunds = new_payments.fake.trace(&id);
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert!(refunds[0].starts_with("C:charge#"), "{refunds:?}");
    assert_eq!(shop.fake.applied(&id), ["F:validate", "C:validate"]);

    // The history holds the change, just before the retry it came with, and a
    // restart folds the same endpoints back.
    let events = history(&mut client, &id).await;
    let kinds: Vec<&str> = events.iter().map(event_kind).collect();
    let at = kinds
        .iter()
        .position(|k| *k == "refreshed")
        .expect("a refresh event");
    assert_eq!(kinds[at + 1], "retry", "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "refreshed").count(), 1);
    let Some(pb::saga_event::Event::EndpointsRefreshed(refreshed)) = &events[at].event else {
        unreachable!()
    };
    assert_eq!(refreshed.changes[0].old_endpoint, old_refund);
    assert_eq!(refreshed.changes[0].new_endpoint, new_refund);
    server.restart().await;
    let mut client = server.client().await;
    let reread = get(&mut client, &id).await;
    assert_eq!(reread.steps[1].compensate_endpoint, new_refund);
    assert_eq!(
        reread.steps[1].endpoint_changes,
        done.steps[1].endpoint_changes
    );
}

/// The events of a FAILED saga whose two steps still need undoing: `validate`
/// of participant `orders`, and `charge` of `ghost`, whose compensation gave up.
fn failed_saga(endpoint: &str) -> Vec<Event> {
    let id = SagaId::generate();
    let spec = |name: &str, participant: &str| StepSpec {
        kind: sagad::saga::StepKind::Compensatable,
        name: name.into(),
        participant: participant.into(),
        forward: Endpoint::parse("f", &format!("{endpoint}/Forward")).unwrap(),
        compensate: Some(Endpoint::parse("c", &format!("{endpoint}/Compensate")).unwrap()),
        retry: RetryPolicy::default(),
        timeout: Duration::from_secs(5),
        input: None,
    };
    let started = EventKind::SagaStarted {
        definition: "inline".into(),
        inline_steps: None,
        steps: vec![spec("validate", "orders"), spec("charge", "ghost")],
        payload: b"{}".to_vec(),
        idempotency_key: None,
        trace: None,
        started_by: None,
        start_at: None,
        deadline: None,
    };
    let mut kinds = vec![started];
    for step in [0, 1] {
        kinds.push(EventKind::AttemptStarted {
            step,
            action: Action::Forward,
            attempt: 1,
        });
        kinds.push(EventKind::AttemptSucceeded {
            step,
            action: Action::Forward,
            attempt: 1,
            output: vec![],
        });
    }
    kinds.extend([
        EventKind::CancelRequested {
            reason: "test".into(),
            by: None,
        },
        EventKind::CompensationStarted {
            reason: "cancelled: test".into(),
        },
        EventKind::AttemptStarted {
            step: 1,
            action: Action::Compensate,
            attempt: 1,
        },
        EventKind::AttemptFailed {
            step: 1,
            action: Action::Compensate,
            attempt: 1,
            failure: Failure::Transient,
            error: "unavailable".into(),
            retry_at: None,
        },
        EventKind::SagaFailed {
            reason: "compensation of step 'charge' gave up".into(),
        },
    ]);
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, kind)| Event {
            saga: id,
            seq: i as u64 + 1,
            offset: Offset::ZERO,
            at: Timestamp::now(),
            kind,
        })
        .collect()
}

#[tokio::test]
async fn a_refresh_naming_a_participant_no_longer_registered_is_refused_and_changes_nothing() {
    // A journal holding a FAILED saga whose participant `ghost` is registered
    // no more (sagad has no call that unregisters one; the journal is written
    // directly).
    let dir = tempfile::tempdir().unwrap();
    let old = format!(
        "http://{}/sagad.v1.ParticipantService",
        dead_address().await
    );
    let events = failed_saga(&old);
    let id = events[0].saga.to_string();
    {
        let journal = SledJournal::open(dir.path()).unwrap();
        journal.append(events).await.unwrap();
        journal.close().await.unwrap();
    }
    let server = TestServer::reopen(dir.path().to_path_buf()).await;
    let mut client = server.client().await;
    // `orders` is registered, at a new address: it alone would change.
    let orders = serve(FakeParticipant::new(|_| Answer::Ok)).await;
    register(&mut client, "orders", orders.addr, quick_retry(3, 3)).await;
    let before = get(&mut client, &id).await;
    assert_eq!(state(&before), pb::SagaState::Failed);

    let refused = retry(&mut client, &id, true).await.unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
    assert!(
        refused.message().contains("participant 'ghost'")
            && refused.message().contains("no longer registered"),
        "{}",
        refused.message()
    );
    // Nothing changed: not the endpoints, not the state, not the history.
    let after = get(&mut client, &id).await;
    assert_eq!(after, before);
    assert_eq!(
        after.steps[0].compensate_endpoint,
        format!("{old}/Compensate")
    );
    assert!(orders.fake.trace(&id).is_empty());
    // (`updated_at` is the last event's time: no event was journaled.)
    assert_eq!(after.updated_at, before.updated_at);
}
