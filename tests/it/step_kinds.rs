//! Step kinds end to end (issue 19): compensatable steps, a pivot and a
//! retriable step, declared in TOML, run by a real coordinator against a
//! scripted participant that logs every call.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sagad::{engine::EngineConfig, proto::v1 as pb, saga::definition};
use tonic::Code;

use crate::common::*;

/// Reserve (compensatable), ship (the pivot), notify (retriable).
const SHIP_IT: &str = r#"
name = "ship-it"

[[steps]]
name = "reserve"
participant = "orders"

[[steps]]
name = "ship"
participant = "shipping"
kind = "pivot"

[[steps]]
name = "notify"
participant = "payments"
kind = "retriable"
"#;

async fn start(client: &mut Client, payload: &str, wait: bool) -> pb::Saga {
    start_definition(client, "ship-it", payload, wait).await
}

fn has(r: &pb::StepRequest, what: &str) -> bool {
    String::from_utf8_lossy(&r.payload).contains(what)
}

#[tokio::test]
async fn a_pivot_divides_what_is_undone_from_what_is_retried() {
    let definition = definition::parse_definition(Path::new("ship-it.toml"), SHIP_IT).unwrap();
    let server = TestServer::start_with(vec![definition], EngineConfig::default()).await;
    // The mail service is down until the test says otherwise.
    let mail_down = Arc::new(AtomicBool::new(true));
    let down = mail_down.clone();
    let shop = serve(FakeParticipant::new(move |r| {
        let forward = r.action == pb::Action::Forward as i32;
        match r.step.as_str() {
            "ship" if forward && has(r, "no-carrier") => Answer::Reject("no carrier"),
            "notify" if has(r, "mail") && down.load(Ordering::SeqCst) => Answer::Retry(None),
            "notify" if has(r, "slow") => {
                Answer::Slow(Duration::from_millis(1500), Box::new(Answer::Ok))
            }
            _ => Answer::Ok,
        }
    }))
    .await;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(3, 3)).await;

    // GetSaga and the definition list say which step is which.
    let happy = start(&mut client, r#"{"order":"fine"}"#, true).await;
    assert_eq!(state(&happy), pb::SagaState::Completed);
    let kinds: Vec<i32> = happy.steps.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        [
            pb::StepKind::Compensatable,
            pb::StepKind::Pivot,
            pb::StepKind::Retriable
        ]
        .map(|k| k as i32)
    );
    let listed = client
        .list_definitions(pb::ListDefinitionsRequest {})
        .await
        .unwrap()
        .into_inner();
    let steps = &listed.definitions[0].steps;
    assert_eq!(steps[1].kind, pb::StepKind::Pivot as i32);

    // The pivot rejected: what came before it is undone.
    let turned = start(&mut client, r#"{"order":"no-carrier"}"#, true).await;
    assert_eq!(state(&turned), pb::SagaState::Compensated);
    assert_eq!(
        shop.fake.trace(&turned.id),
        ["F:reserve#1", "F:ship#1", "C:reserve#1"]
    );

    // Past the pivot, a retriable step that runs out of attempts fails the
    // saga for an operator, and nothing is compensated.
    let stuck = start(&mut client, r#"{"order":"mail"}"#, true).await;
    assert_eq!(state(&stuck), pb::SagaState::Failed);
    assert_eq!(
        shop.fake.trace(&stuck.id),
        [
            "F:reserve#1",
            "F:ship#1",
            "F:notify#1",
            "F:notify#2",
            "F:notify#3"
        ]
    );
    assert!(
        stuck.error.contains("point of no return"),
        "{}",
        stuck.error
    );
    assert_eq!(
        step_states(&stuck),
        [
            pb::StepState::Succeeded,
            pb::StepState::Succeeded,
            pb::StepState::Failed
        ]
    );

    // Fixed, and retried: the saga goes forward, attempt numbers go on.
    mail_down.store(false, Ordering::SeqCst);
    client
        .retry_saga(pb::RetrySagaRequest {
            id: stuck.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let resumed = until_terminal(&mut client, &stuck.id).await;
    assert_eq!(state(&resumed), pb::SagaState::Completed);
    assert_eq!(
        shop.fake.trace(&stuck.id),
        [
            "F:reserve#1",
            "F:ship#1",
            "F:notify#1",
            "F:notify#2",
            "F:notify#3",
            "F:notify#4"
        ]
    );
    let events = watched(&mut client, &stuck.id).await;
    let kinds: Vec<&str> = events.iter().map(event_kind).collect();
    assert!(kinds.contains(&"resume"), "{kinds:?}");
    assert!(!kinds.contains(&"compensating"), "{kinds:?}");

    // A cancel past the pivot is refused, and changes nothing.
    let slow = start(&mut client, r#"{"order":"slow"}"#, false).await;
    poll_until("the retriable step to be called", || {
        let mut client = client.clone();
        let id = slow.id.clone();
        async move {
            let saga = get(&mut client, &id).await;
            (saga.steps[2].forward_attempts > 0).then_some(())
        }
    })
    .await;
    let refused = client
        .cancel_saga(pb::CancelSagaRequest {
            id: slow.id.clone(),
            reason: "customer left".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("point of no return"),
        "{refused:?}"
    );
    let done = until_terminal(&mut client, &slow.id).await;
    assert_eq!(state(&done), pb::SagaState::Completed);
}

/// Inline steps declare kinds too, and an order that could not be undone
/// is refused before anything is journaled.
#[tokio::test]
async fn inline_steps_declare_kinds_and_a_bad_order_is_refused() {
    let server = TestServer::start().await;
    let shop = serve(FakeParticipant::new(|_| Answer::Ok)).await;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(3, 3)).await;
    let step = |name: &str, participant: &str, kind: pb::StepKind| pb::StepDefinition {
        name: name.into(),
        participant: participant.into(),
        kind: kind as i32,
        ..Default::default()
    };
    let refused = client
        .start_saga(pb::StartSagaRequest {
            steps: vec![
                step("ship", "shipping", pb::StepKind::Pivot),
                step("charge", "payments", pb::StepKind::Compensatable),
            ],
            payload: b"{}".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("step 'charge' is a compensatable step after the pivot step 'ship'"),
        "{refused:?}"
    );
    let listed = client
        .list_sagas(pb::ListSagasRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.summaries.is_empty(), "nothing was journaled");

    let saga = client
        .start_saga(pb::StartSagaRequest {
            steps: vec![
                step("charge", "payments", pb::StepKind::Compensatable),
                step("ship", "shipping", pb::StepKind::Pivot),
            ],
            payload: b"{}".to_vec(),
            wait: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .saga
        .unwrap();
    assert_eq!(state(&saga), pb::SagaState::Completed);
    assert_eq!(saga.steps[1].kind, pb::StepKind::Pivot as i32);
}

/// A participant nothing can undo (registered without a compensate
/// endpoint) may serve a pivot or a retriable step, never a compensatable
/// one. Such a pivot, rejected, lets the saga undo what came before it; its
/// effect unknown, it fails the saga for an operator with nothing undone.
#[tokio::test]
async fn a_pivot_nothing_can_undo_fails_the_saga_when_its_effect_is_unknown() {
    let server = TestServer::start().await;
    let shop = serve(FakeParticipant::new(|r| {
        let forward = r.action == pb::Action::Forward as i32;
        match r.step.as_str() {
            "ship" if forward && has(r, "no-carrier") => Answer::Reject("no carrier"),
            "ship" if forward && has(r, "carrier-down") => Answer::Retry(None),
            _ => Answer::Ok,
        }
    }))
    .await;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(3, 3)).await;
    let carrier = client
        .register_participant(pb::RegisterParticipantRequest {
            name: "carrier".into(),
            forward_endpoint: shop.forward_url(),
            compensate_endpoint: String::new(),
            retry: Some(quick_retry(3, 3)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(carrier.compensate_endpoint, "");

    let steps = |kind: pb::StepKind| {
        vec![
            pb::StepDefinition {
                name: "reserve".into(),
                participant: "orders".into(),
                ..Default::default()
            },
            pb::StepDefinition {
                name: "ship".into(),
                participant: "carrier".into(),
                kind: kind as i32,
                ..Default::default()
            },
        ]
    };
    let start = |kind: pb::StepKind, payload: &str| pb::StartSagaRequest {
        steps: steps(kind),
        payload: payload.as_bytes().to_vec(),
        wait: true,
        ..Default::default()
    };
    let err = client
        .start_saga(start(pb::StepKind::Compensatable, "{}"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(
        err.message()
            .contains("participant 'carrier' has no compensate endpoint"),
        "{}",
        err.message()
    );

    let run = |payload: &'static str| {
        let mut client = client.clone();
        async move { start_request(&mut client, start(pb::StepKind::Pivot, payload)).await }
    };
    let shipped = run(r#"{"order":"fine"}"#).await;
    assert_eq!(state(&shipped), pb::SagaState::Completed);
    assert_eq!(shipped.steps[1].compensate_endpoint, "");

    let refused = run(r#"{"order":"no-carrier"}"#).await;
    assert_eq!(state(&refused), pb::SagaState::Compensated);
    assert_eq!(
        shop.fake.trace(&refused.id),
        ["F:reserve#1", "F:ship#1", "C:reserve#1"]
    );

    let unknown = run(r#"{"order":"carrier-down"}"#).await;
    assert_eq!(state(&unknown), pb::SagaState::Failed);
    assert!(
        unknown.error.contains("past the point of no return"),
        "{}",
        unknown.error
    );
    assert_eq!(
        shop.fake.trace(&unknown.id),
        ["F:reserve#1", "F:ship#1", "F:ship#2", "F:ship#3"],
        "nothing undone"
    );
}
