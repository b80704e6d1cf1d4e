//! A saga's times end to end (issue 19): a delayed start (SCHEDULED until
//! then, cancelled without calling anyone) and a deadline (the saga turns
//! back like a cancelled one), each kept across a restart, against a real
//! coordinator and a scripted participant that logs every call with its
//! wall-clock arrival.

use std::{
    path::Path,
    time::{Duration, SystemTime},
};

use sagad::{api::convert::duration, engine::EngineConfig, proto::v1 as pb, saga::definition};
use tonic::Code;

use crate::common::*;

fn wall(t: &prost_types::Timestamp) -> SystemTime {
    SystemTime::try_from(*t).unwrap()
}

async fn start(client: &mut Client, request: pb::StartSagaRequest) -> pb::Saga {
    let request = pb::StartSagaRequest {
        definition: "order-fulfillment".into(),
        ..request
    };
    start_request(client, request).await
}

/// A start `delay` from now: SCHEDULED, listed as such, and no participant
/// hears of it before the journaled start time.
#[tokio::test]
async fn a_delayed_start_is_scheduled_and_calls_no_one_before_its_time() {
    let server = TestServer::start().await;
    let shop = serve(FakeParticipant::new(|_| Answer::Ok)).await;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(3, 3)).await;

    let saga = start(
        &mut client,
        pb::StartSagaRequest {
            payload: br#"{"order":"later"}"#.to_vec(),
            start_delay: Some(duration(Duration::from_millis(800))),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(state(&saga), pb::SagaState::Scheduled);
    let start_at = wall(saga.start_at.as_ref().expect("a start time"));
    assert!(start_at > wall(saga.created_at.as_ref().unwrap()));
    let listed = client
        .list_sagas(pb::ListSagasRequest {
            state: pb::SagaState::Scheduled as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.summaries.iter().any(|s| s.id == saga.id));

    let done = until_terminal(&mut client, &saga.id).await;
    assert_eq!(state(&done), pb::SagaState::Completed);
    let calls: Vec<Call> = shop
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.saga_id == saga.id)
        .collect();
    assert_eq!(calls.len(), 3);
    for call in &calls {
        assert!(
            call.arrived_wall >= start_at,
            "{} arrived before the saga's start",
            call.step
        );
    }
    let kinds: Vec<&str> = watched(&mut client, &saga.id)
        .await
        .iter()
        .map(event_kind)
        .collect();
    assert_eq!(&kinds[..3], ["started", "start-reached", "attempt"]);
}

/// A saga scheduled an hour ahead stays scheduled across a restart, and a
/// cancel ends it COMPENSATED without a single call.
#[tokio::test]
async fn a_scheduled_saga_survives_a_restart_and_a_cancel_ends_it_calling_no_one() {
    let mut server = TestServer::start().await;
    let shop = serve(FakeParticipant::new(|_| Answer::Ok)).await;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(3, 3)).await;
    let in_an_hour = SystemTime::now() + Duration::from_secs(3_600);
    let saga = start(
        &mut client,
        pb::StartSagaRequest {
            start_at: Some(in_an_hour.into()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(state(&saga), pb::SagaState::Scheduled);
    drop(client);

    server.restart().await;
    let mut client = server.client().await;
    let after = get(&mut client, &saga.id).await;
    assert_eq!(state(&after), pb::SagaState::Scheduled);
    assert_eq!(after.start_at, saga.start_at, "the journal kept the start");

    let cancelled = client
        .cancel_saga(pb::CancelSagaRequest {
            id: saga.id.clone(),
            reason: "order withdrawn".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.cancel_reason, "order withdrawn");
    let done = until_terminal(&mut client, &saga.id).await;
    assert_eq!(state(&done), pb::SagaState::Compensated);
    assert!(
        done.error.contains("cancelled before its start"),
        "{}",
        done.error
    );
    assert!(shop.fake.trace(&saga.id).is_empty(), "no one was called");

    // The offline check folds the scheduled saga's history like any other.
    drop(client);
    server.stop().await;
    let data_dir = server.data_dir.to_str().unwrap().to_string();
    let checked = sagad(&["journal", "check", "--data-dir", &data_dir], &[]).await;
    let out = text(&checked.stdout);
    assert!(
        checked.status.success() && out.contains("journal OK"),
        "{out}"
    );
}

/// The payment service keeps failing transiently; the saga's deadline ends
/// its retries, and it compensates the done step and the unknown one, the
/// same after a restart (the deadline is journaled).
#[tokio::test]
async fn a_deadline_turns_a_retrying_saga_back_and_a_restart_keeps_it() {
    let mut server = TestServer::start().await;
    let shop = serve(FakeParticipant::new(|r| {
        match (r.step.as_str(), r.action == pb::Action::Forward as i32) {
            ("charge-payment", true) => Answer::Retry(None),
            _ => Answer::Ok,
        }
    }))
    .await;
    let mut client = server.client().await;
    // Far more attempts than the deadline leaves time for.
    register_shop(&mut client, &shop, quick_retry(1_000, 3)).await;

    let deadline = Duration::from_millis(700);
    let first = start(
        &mut client,
        pb::StartSagaRequest {
            deadline: Some(duration(deadline)),
            ..Default::default()
        },
    )
    .await;
    let second = start(
        &mut client,
        pb::StartSagaRequest {
            deadline: Some(duration(deadline)),
            ..Default::default()
        },
    )
    .await;
    // The second saga's deadline must hold across a restart.
    drop(client);
    server.restart().await;
    let mut client = server.client().await;

    for saga in [&first, &second] {
        let at = wall(saga.deadline.as_ref().expect("a deadline"));
        assert_eq!(at, wall(saga.created_at.as_ref().unwrap()) + deadline);
        let done = until_terminal(&mut client, &saga.id).await;
        assert_eq!(state(&done), pb::SagaState::Compensated);
        assert!(done.error.starts_with("deadline: "), "{}", done.error);
        assert_eq!(done.deadline, saga.deadline);
        assert_eq!(
            step_states(&done),
            [
                pb::StepState::Compensated,
                pb::StepState::Compensated,
                pb::StepState::Skipped
            ]
        );
        // Every forward attempt was journaled before the deadline, every
        // compensation reached its participant after it.
        let all = client
            .get_saga(pb::GetSagaRequest {
                id: saga.id.clone(),
                all_attempts: true,
            })
            .await
            .unwrap()
            .into_inner();
        for attempt in all.steps.iter().flat_map(|s| &s.attempts) {
            if attempt.action == pb::Action::Forward as i32 {
                assert!(wall(attempt.started_at.as_ref().unwrap()) < at);
            }
        }
        let undo: Vec<Call> = shop
            .fake
            .calls()
            .into_iter()
            .filter(|c| c.saga_id == saga.id && c.compensate)
            .collect();
        assert_eq!(undo.len(), 2, "{undo:?}");
        assert!(undo.iter().all(|c| c.arrived_wall >= at));
    }
}

/// A definition's deadline applies to its sagas and ListDefinitions shows
/// it; a request's own replaces it. Bad times are refused, naming the field,
/// and start nothing.
#[tokio::test]
async fn deadlines_come_from_the_definition_or_the_request_and_bad_times_are_refused() {
    let text = r#"
name = "quick-order"
deadline = "10m"

[[steps]]
name = "validate-order"
participant = "orders"
"#;
    let quick = definition::parse_definition(Path::new("quick-order.toml"), text).unwrap();
    let server = TestServer::start_with(vec![quick], EngineConfig::default()).await;
    let shop = serve(FakeParticipant::new(|_| Answer::Ok)).await;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(3, 3)).await;

    let listed = client
        .list_definitions(pb::ListDefinitionsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed.definitions[0].deadline,
        Some(duration(Duration::from_secs(600)))
    );
    let by_definition = start_definition(&mut client, "quick-order", "{}", true).await;
    let created = wall(by_definition.created_at.as_ref().unwrap());
    assert_eq!(
        wall(by_definition.deadline.as_ref().unwrap()),
        created + Duration::from_secs(600)
    );
    let request = pb::StartSagaRequest {
        definition: "quick-order".into(),
        deadline: Some(duration(Duration::from_secs(30))),
        wait: true,
        ..Default::default()
    };
    let own = start_request(&mut client, request).await;
    assert_eq!(state(&own), pb::SagaState::Completed);
    assert_eq!(
        wall(own.deadline.as_ref().unwrap()),
        wall(own.created_at.as_ref().unwrap()) + Duration::from_secs(30)
    );

    let past = SystemTime::now() - Duration::from_secs(60);
    let bad = [
        (
            pb::StartSagaRequest {
                deadline_at: Some(past.into()),
                ..Default::default()
            },
            "is not after the saga's start",
        ),
        (
            pb::StartSagaRequest {
                start_at: Some(SystemTime::now().into()),
                start_delay: Some(duration(Duration::from_secs(1))),
                ..Default::default()
            },
            "give start_at or start_delay, not both",
        ),
        (
            pb::StartSagaRequest {
                deadline: Some(prost_types::Duration {
                    seconds: -5,
                    nanos: 0,
                }),
                ..Default::default()
            },
            "deadline must be a non-negative duration",
        ),
        (
            pb::StartSagaRequest {
                start_delay: Some(duration(Duration::from_secs(200 * 365 * 86_400))),
                ..Default::default()
            },
            "at most 100 years are allowed",
        ),
    ];
    for (request, why) in bad {
        let err = client
            .start_saga(pb::StartSagaRequest {
                definition: "quick-order".into(),
                idempotency_key: "bad-times".into(),
                ..request
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(err.message().contains(why), "{}", err.message());
    }
    let all = client
        .list_sagas(pb::ListSagasRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.summaries.len(), 2, "the refused starts started nothing");
}
