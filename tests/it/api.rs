//! The gRPC API over real loopback connections: every kind of bad input is
//! refused with the right code and a message that says what to fix, and changes
//! nothing; registration, definitions, health and reflection work as documented.

use std::time::Duration;

use sagad::proto::v1 as pb;
use tonic::{Code, Status, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::common::{self, Answer, Client, FakeParticipant, ServingStatus, TestServer};

/// A well-formed saga id no saga has.
const UNKNOWN_ID: &str = "0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b";

/// Asserts `result` failed with `code` and a message containing `needle`.
#[track_caller]
fn assert_refused<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, Status>,
    code: Code,
    needle: &str,
) -> Status {
    let status = match result {
        Ok(value) => panic!("{what}: expected {code:?}, got a success: {value:?}"),
        Err(status) => status,
    };
    assert_eq!(
        status.code(),
        code,
        "{what}: wrong code (message: {})",
        status.message()
    );
    assert!(
        status.message().contains(needle),
        "{what}: message {:?} does not say {needle:?}",
        status.message()
    );
    status
}

fn secs(seconds: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos: 0 })
}

fn nanos(nanos: i32) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds: 0, nanos })
}

/// A policy that retried in a hot loop before the floors: no delay at all.
fn no_delay() -> pb::RetryPolicy {
    pb::RetryPolicy {
        initial_interval: nanos(0),
        max_interval: nanos(0),
        ..common::quick_retry(3, 3)
    }
}

fn participant_request(
    name: &str,
    forward: &str,
    compensate: &str,
) -> pb::RegisterParticipantRequest {
    pb::RegisterParticipantRequest {
        protocol: pb::Protocol::Grpc as i32,
        name: name.into(),
        forward_endpoint: forward.into(),
        compensate_endpoint: compensate.into(),
        retry: None,
        timeout: secs(5),
        ..Default::default()
    }
}

fn step(name: &str, participant: &str) -> pb::StepDefinition {
    pb::StepDefinition {
        name: name.into(),
        participant: participant.into(),
        ..Default::default()
    }
}

/// A plain channel to the server, for the health and reflection clients.
async fn channel(server: &TestServer) -> Channel {
    Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn participants(client: &mut Client) -> Vec<pb::Participant> {
    client
        .list_participants(pb::ListParticipantsRequest {})
        .await
        .unwrap()
        .into_inner()
        .participants
}

async fn all_sagas(client: &mut Client) -> Vec<pb::SagaSummary> {
    client
        .list_sagas(pb::ListSagasRequest::default())
        .await
        .unwrap()
        .into_inner()
        .summaries
}

/// A participant that always succeeds at once, registered under `name`.
async fn register_ok(client: &mut Client, name: &str) -> common::Served {
    let served = common::serve(FakeParticipant::new(|_| Answer::Ok)).await;
    client
        .register_participant(pb::RegisterParticipantRequest {
            protocol: pb::Protocol::Grpc as i32,
            name: name.into(),
            forward_endpoint: served.forward_url(),
            compensate_endpoint: served.compensate_url(),
            retry: Some(common::quick_retry(3, 3)),
            timeout: secs(5),
            ..Default::default()
        })
        .await
        .unwrap();
    served
}

/// One refusal in a table of them: `request` must fail with `code` and a
/// message that says every one of `needles`.
struct Refusal<R> {
    /// Names the case in every failure message.
    name: String,
    request: R,
    code: Code,
    needles: Vec<&'static str>,
}

impl<R> Refusal<R> {
    fn new(name: impl Into<String>, request: R, code: Code, needles: &[&'static str]) -> Self {
        Self {
            name: name.into(),
            request,
            code,
            needles: needles.to_vec(),
        }
    }

    /// Asserts `result` is this case's refusal.
    #[track_caller]
    fn check<T: std::fmt::Debug>(&self, result: Result<T, Status>) {
        let status = assert_refused(&self.name, result, self.code, "");
        for needle in &self.needles {
            assert!(
                status.message().contains(needle),
                "{}: message {:?} does not say {needle:?}",
                self.name,
                status.message()
            );
        }
    }
}

/// A call on a saga id or a saga query, so that one table holds several methods.
#[derive(Clone)]
enum SagaCall {
    Get(pb::GetSagaRequest),
    List(pb::ListSagasRequest),
    Watch(pb::WatchSagaRequest),
    Cancel(pb::CancelSagaRequest),
    Retry(pb::RetrySagaRequest),
}

impl SagaCall {
    /// Sends the call; a success comes back as its debug text, for the failure message.
    async fn send(self, client: &mut Client) -> Result<String, Status> {
        fn shown<T: std::fmt::Debug>(r: tonic::Response<T>) -> String {
            format!("{:?}", r.into_inner())
        }
        match self {
            SagaCall::Get(r) => client.get_saga(r).await.map(shown),
            SagaCall::List(r) => client.list_sagas(r).await.map(shown),
            // Refused at once, as a status of the call: not as the first item of a stream.
            SagaCall::Watch(r) => client.watch_saga(r).await.map(|_| "a stream".into()),
            SagaCall::Cancel(r) => client.cancel_saga(r).await.map(shown),
            SagaCall::Retry(r) => client.retry_saga(r).await.map(shown),
        }
    }
}

#[tokio::test]
async fn register_participant_refuses_bad_input_and_changes_nothing() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let good_forward = "http://127.0.0.1:7002/shop.Payments/Charge";
    let good_compensate = "http://127.0.0.1:7002/shop.Payments/Refund";
    client
        .register_participant(participant_request(
            "payments",
            good_forward,
            good_compensate,
        ))
        .await
        .unwrap();
    let before = participants(&mut client).await;
    assert_eq!(before.len(), 1);

    let payments = || participant_request("payments", good_forward, good_compensate);
    // What is wrong with the URL, and the field it is wrong in.
    let bad_forward = |url: &str, why: &'static str| {
        Refusal::new(
            format!("forward_endpoint {url:?}"),
            participant_request("payments", url, good_compensate),
            Code::InvalidArgument,
            &[why, "forward_endpoint"],
        )
    };
    let cases = [
        Refusal::new(
            "empty name",
            participant_request("", good_forward, good_compensate),
            Code::InvalidArgument,
            &["name must not be empty"],
        ),
        Refusal::new(
            "name with spaces",
            participant_request("pay ments!", good_forward, good_compensate),
            Code::InvalidArgument,
            &["letters, digits"],
        ),
        bad_forward("localhost:7000/x", "must start with http://"),
        bad_forward("http://h:1/onlyservice", "/package.Service/Method"),
        bad_forward(
            "ftp://127.0.0.1:7002/shop.Payments/Charge",
            "http:// or https://",
        ),
        bad_forward("https://127.0.0.1:7002", "/Service/Method"),
        bad_forward("", "must start with http://"),
        Refusal::new(
            "malformed compensate_endpoint",
            participant_request("payments", good_forward, "http://h:1/a.B"),
            Code::InvalidArgument,
            &["compensate_endpoint"],
        ),
        Refusal::new(
            "negative timeout",
            pb::RegisterParticipantRequest {
                timeout: secs(-1),
                ..payments()
            },
            Code::InvalidArgument,
            &["timeout must be a non-negative duration"],
        ),
        Refusal::new(
            "multiplier 0.5",
            pb::RegisterParticipantRequest {
                retry: Some(pb::RetryPolicy {
                    multiplier: Some(0.5),
                    ..Default::default()
                }),
                ..payments()
            },
            Code::InvalidArgument,
            &["retry.multiplier must be a number >= 1"],
        ),
        Refusal::new(
            "max_attempts 0",
            pb::RegisterParticipantRequest {
                retry: Some(pb::RetryPolicy {
                    max_attempts: Some(0),
                    ..Default::default()
                }),
                ..payments()
            },
            Code::InvalidArgument,
            &["retry.max_attempts must be at least 1"],
        ),
        // A timeout beyond a day is refused up front: gRPC deadlines cannot carry
        // absurd ones, and a call that may take longer than a day is not a saga step.
        Refusal::new(
            "a timeout of 400e9 s",
            pb::RegisterParticipantRequest {
                name: "forever".into(),
                retry: Some(common::quick_retry(3, 3)),
                timeout: secs(400_000_000_000),
                ..payments()
            },
            Code::InvalidArgument,
            &["at most 24h"],
        ),
        // The floors: below them a step retried in a hot loop, thousands of
        // attempts a second, each one journaled.
        Refusal::new(
            "retry intervals of zero",
            pb::RegisterParticipantRequest {
                retry: Some(no_delay()),
                ..payments()
            },
            Code::InvalidArgument,
            &["retry.initial_interval must be at least 10ms", "got 0ns"],
        ),
        Refusal::new(
            "max_interval below the floor",
            pb::RegisterParticipantRequest {
                retry: Some(pb::RetryPolicy {
                    initial_interval: nanos(10_000_000),
                    max_interval: nanos(9_999_999),
                    ..common::quick_retry(3, 3)
                }),
                ..payments()
            },
            Code::InvalidArgument,
            &["retry.max_interval must be at least 10ms"],
        ),
        Refusal::new(
            "max_attempts 4294967295",
            pb::RegisterParticipantRequest {
                retry: Some(common::quick_retry(u32::MAX, 3)),
                ..payments()
            },
            Code::InvalidArgument,
            &["retry.max_attempts must be at most 10000", "4294967295"],
        ),
        Refusal::new(
            "max_compensate_attempts 4294967295",
            pb::RegisterParticipantRequest {
                retry: Some(common::quick_retry(3, u32::MAX)),
                ..payments()
            },
            Code::InvalidArgument,
            &["retry.max_compensate_attempts must be at most 10000"],
        ),
        Refusal::new(
            "a timeout of 1ns",
            pb::RegisterParticipantRequest {
                timeout: nanos(1),
                ..payments()
            },
            Code::InvalidArgument,
            &["timeout must be at least 10ms", "got 1ns"],
        ),
        // A policy that contradicts the server defaults would fail every start.
        Refusal::new(
            "initial_interval 60s above the default max_interval",
            pb::RegisterParticipantRequest {
                name: "slowpoke".into(),
                retry: Some(pb::RetryPolicy {
                    max_interval: None,
                    initial_interval: secs(60),
                    ..common::quick_retry(3, 3)
                }),
                timeout: None,
                ..payments()
            },
            Code::InvalidArgument,
            &["max_interval"],
        ),
    ];

    for case in cases {
        let r = client.register_participant(case.request.clone()).await;
        case.check(r);
        assert_eq!(
            participants(&mut client).await,
            before,
            "{}: the refused registration changed nothing",
            case.name
        );
    }
}

#[tokio::test]
async fn start_saga_refuses_bad_input_and_starts_nothing() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let _solo = register_ok(&mut client, "solo").await;

    let cases = [
        Refusal::new(
            "unknown definition",
            pb::StartSagaRequest {
                definition: "no-such-saga".into(),
                ..Default::default()
            },
            Code::NotFound,
            // The message lists the known definitions.
            &["definition 'no-such-saga' not found", "order-fulfillment"],
        ),
        Refusal::new(
            "order-fulfillment without its participants",
            pb::StartSagaRequest {
                definition: "order-fulfillment".into(),
                ..Default::default()
            },
            Code::NotFound,
            &["participant 'orders', which is not registered"],
        ),
        Refusal::new(
            "inline step with an unregistered participant",
            pb::StartSagaRequest {
                steps: vec![step("a", "solo"), step("b", "ghost")],
                ..Default::default()
            },
            Code::NotFound,
            &["participant 'ghost', which is not registered"],
        ),
        Refusal::new(
            "duplicate step names",
            pb::StartSagaRequest {
                steps: vec![step("a", "solo"), step("a", "solo")],
                ..Default::default()
            },
            Code::InvalidArgument,
            &["step name 'a' is used twice"],
        ),
        Refusal::new(
            "empty step name",
            pb::StartSagaRequest {
                steps: vec![step("", "solo")],
                ..Default::default()
            },
            Code::InvalidArgument,
            &["step name must not be empty"],
        ),
        Refusal::new(
            "inline step retrying without delay",
            pb::StartSagaRequest {
                steps: vec![pb::StepDefinition {
                    retry: Some(no_delay()),
                    ..step("a", "solo")
                }],
                ..Default::default()
            },
            Code::InvalidArgument,
            &["step 'a'", "retry.initial_interval must be at least 10ms"],
        ),
        Refusal::new(
            "inline step with 4294967295 attempts",
            pb::StartSagaRequest {
                steps: vec![pb::StepDefinition {
                    retry: Some(pb::RetryPolicy {
                        max_attempts: Some(u32::MAX),
                        ..Default::default()
                    }),
                    ..step("a", "solo")
                }],
                ..Default::default()
            },
            Code::InvalidArgument,
            &["step 'a'", "retry.max_attempts must be at most 10000"],
        ),
        Refusal::new(
            "inline step with a timeout of 1ns",
            pb::StartSagaRequest {
                steps: vec![pb::StepDefinition {
                    timeout: nanos(1),
                    ..step("a", "solo")
                }],
                ..Default::default()
            },
            Code::InvalidArgument,
            &["step 'a' timeout must be at least 10ms"],
        ),
        Refusal::new(
            "both definition and steps",
            pb::StartSagaRequest {
                definition: "order-fulfillment".into(),
                steps: vec![step("a", "solo")],
                ..Default::default()
            },
            Code::InvalidArgument,
            &["not both"],
        ),
        Refusal::new(
            "neither definition nor steps",
            pb::StartSagaRequest::default(),
            Code::InvalidArgument,
            &["give a definition name or inline steps"],
        ),
        Refusal::new(
            "payload over the limit",
            pb::StartSagaRequest {
                steps: vec![step("a", "solo")],
                payload: vec![b'x'; 1024 * 1024 + 1],
                ..Default::default()
            },
            Code::InvalidArgument,
            // The message says how big the payload was.
            &["the limit is 1048576 bytes", "1048577"],
        ),
    ];

    for case in cases {
        let r = client.start_saga(case.request.clone()).await;
        case.check(r);
        assert!(
            all_sagas(&mut client).await.is_empty(),
            "{}: the refused start left a saga behind",
            case.name
        );
    }
}

#[tokio::test]
async fn idempotency_key_reused_with_another_payload_is_refused() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let _solo = register_ok(&mut client, "solo").await;
    let request = |payload: &str| pb::StartSagaRequest {
        steps: vec![step("a", "solo")],
        payload: payload.as_bytes().to_vec(),
        idempotency_key: "order-42".into(),
        ..Default::default()
    };

    let first = client.start_saga(request("{\"n\":1}")).await.unwrap();
    let first = first.into_inner();
    assert!(first.created);
    let id = first.saga.unwrap().id;

    let r = client.start_saga(request("{\"n\":2}")).await;
    let status = assert_refused(
        "same key, other payload",
        r,
        Code::AlreadyExists,
        "idempotency_key 'order-42' already started saga",
    );
    assert!(
        status.message().contains(&id),
        "the message names the existing saga: {}",
        status.message()
    );

    let again = client.start_saga(request("{\"n\":1}")).await.unwrap();
    let again = again.into_inner();
    assert!(!again.created, "same key and request: the same saga");
    assert_eq!(again.saga.unwrap().id, id);

    let sagas = all_sagas(&mut client).await;
    assert_eq!(
        sagas.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        vec![id.as_str()],
        "exactly one saga exists"
    );
}

#[tokio::test]
async fn get_list_watch_cancel_retry_refuse_bad_ids_and_queries() {
    let server = TestServer::start().await;
    let mut client = server.client().await;

    let cases = [
        Refusal::new(
            "GetSaga unknown id",
            SagaCall::Get(pb::GetSagaRequest {
                id: UNKNOWN_ID.into(),
                ..Default::default()
            }),
            Code::NotFound,
            &["not found"],
        ),
        Refusal::new(
            "GetSaga malformed id",
            SagaCall::Get(pb::GetSagaRequest {
                id: "nope".into(),
                ..Default::default()
            }),
            Code::InvalidArgument,
            &["'nope' is not a saga id"],
        ),
        Refusal::new(
            "GetSaga empty id",
            SagaCall::Get(pb::GetSagaRequest {
                id: String::new(),
                ..Default::default()
            }),
            Code::InvalidArgument,
            &["id is required"],
        ),
        Refusal::new(
            "ListSagas page_size 1001",
            SagaCall::List(pb::ListSagasRequest {
                page_size: 1001,
                ..Default::default()
            }),
            Code::InvalidArgument,
            &["at most 1000"],
        ),
        Refusal::new(
            "ListSagas garbage page_token",
            SagaCall::List(pb::ListSagasRequest {
                page_token: "garbage!".into(),
                ..Default::default()
            }),
            Code::InvalidArgument,
            &["next_page_token"],
        ),
        Refusal::new(
            "ListSagas state 99",
            SagaCall::List(pb::ListSagasRequest {
                state: 99,
                ..Default::default()
            }),
            Code::InvalidArgument,
            &["state 99 is not a SagaState"],
        ),
        Refusal::new(
            "WatchSaga unknown id",
            SagaCall::Watch(pb::WatchSagaRequest {
                id: UNKNOWN_ID.into(),
            }),
            Code::NotFound,
            &["not found"],
        ),
        Refusal::new(
            "CancelSaga unknown id",
            SagaCall::Cancel(pb::CancelSagaRequest {
                id: UNKNOWN_ID.into(),
                reason: "test".into(),
            }),
            Code::NotFound,
            &["not found"],
        ),
        Refusal::new(
            "RetrySaga unknown id",
            SagaCall::Retry(pb::RetrySagaRequest {
                id: UNKNOWN_ID.into(),
                ..Default::default()
            }),
            Code::NotFound,
            &["not found"],
        ),
        Refusal::new(
            "CancelSaga malformed id",
            SagaCall::Cancel(pb::CancelSagaRequest {
                id: "nope".into(),
                reason: String::new(),
            }),
            Code::InvalidArgument,
            &["not a saga id"],
        ),
    ];

    for case in cases {
        let r = case.request.clone().send(&mut client).await;
        case.check(r);
        assert!(
            all_sagas(&mut client).await.is_empty(),
            "{}: the refused call left a saga behind",
            case.name
        );
    }
}

#[tokio::test]
async fn cancel_and_retry_refuse_a_completed_saga() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let served = common::serve(FakeParticipant::new(|_| Answer::Ok)).await;
    common::register_shop(&mut client, &served, common::quick_retry(3, 3)).await;
    let saga = common::start_order(&mut client, "{}", true).await;
    assert_eq!(common::state(&saga), pb::SagaState::Completed);

    let cases = [
        Refusal::new(
            "CancelSaga on a COMPLETED saga",
            SagaCall::Cancel(pb::CancelSagaRequest {
                id: saga.id.clone(),
                reason: "too late".into(),
            }),
            Code::FailedPrecondition,
            &["only a RUNNING or SCHEDULED saga can be cancelled"],
        ),
        Refusal::new(
            "RetrySaga on a COMPLETED saga",
            SagaCall::Retry(pb::RetrySagaRequest {
                id: saga.id.clone(),
                ..Default::default()
            }),
            Code::FailedPrecondition,
            &["only a FAILED saga can be retried"],
        ),
    ];

    for case in cases {
        let r = case.request.clone().send(&mut client).await;
        case.check(r);
        let after = common::get(&mut client, &saga.id).await;
        assert_eq!(
            common::state(&after),
            pb::SagaState::Completed,
            "{}",
            case.name
        );
        assert!(
            after.cancel_reason.is_empty(),
            "{}: the refused call left no trace",
            case.name
        );
        assert_eq!(
            served.fake.calls().len(),
            3,
            "{}: no participant was called again",
            case.name
        );
    }
}

#[tokio::test]
async fn retry_refuses_a_running_saga() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    // Answers far later than the test lasts: the saga stays RUNNING throughout.
    let served = common::serve(FakeParticipant::new(|_| {
        Answer::Slow(Duration::from_secs(3600), Box::new(Answer::Ok))
    }))
    .await;
    client
        .register_participant(pb::RegisterParticipantRequest {
            protocol: pb::Protocol::Grpc as i32,
            name: "slow".into(),
            forward_endpoint: served.forward_url(),
            compensate_endpoint: served.compensate_url(),
            retry: Some(common::quick_retry(3, 3)),
            timeout: secs(3600),
            ..Default::default()
        })
        .await
        .unwrap();
    let saga = client
        .start_saga(pb::StartSagaRequest {
            steps: vec![step("wait-a-while", "slow")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .saga
        .unwrap();
    let fake = served.fake.clone();
    common::poll_until("the slow call to arrive", || {
        let arrived = !fake.calls().is_empty();
        async move { arrived.then_some(()) }
    })
    .await;

    let r = client
        .retry_saga(pb::RetrySagaRequest {
            id: saga.id.clone(),
            ..Default::default()
        })
        .await;
    let status = assert_refused(
        "RetrySaga on a RUNNING saga",
        r,
        Code::FailedPrecondition,
        "only a FAILED saga can be retried",
    );
    assert!(
        status.message().contains("RUNNING"),
        "the message says the saga's state: {}",
        status.message()
    );
    let now = common::get(&mut client, &saga.id).await;
    assert_eq!(common::state(&now), pb::SagaState::Running);
    assert_eq!(
        served.fake.calls().len(),
        1,
        "the refused retry called no one"
    );
}

#[tokio::test]
async fn participants_register_list_and_replace() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    assert!(participants(&mut client).await.is_empty());

    let first = client
        .register_participant(participant_request(
            "payments",
            "http://127.0.0.1:7002/shop.Payments/Charge",
            "http://127.0.0.1:7002/shop.Payments/Refund",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.name, "payments");
    let listed = participants(&mut client).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "payments");
    assert_eq!(
        listed[0].forward_endpoint,
        "http://127.0.0.1:7002/shop.Payments/Charge"
    );
    assert_eq!(
        listed[0].compensate_endpoint,
        "http://127.0.0.1:7002/shop.Payments/Refund"
    );
    assert_eq!(listed[0].timeout, secs(5));
    assert!(listed[0].registered_at.is_some());

    client
        .register_participant(participant_request(
            "payments",
            "http://127.0.0.1:8002/shop.Payments2/Charge",
            "http://127.0.0.1:8002/shop.Payments2/Refund",
        ))
        .await
        .unwrap();
    let listed = participants(&mut client).await;
    assert_eq!(listed.len(), 1, "the same name replaces, never adds");
    assert_eq!(
        listed[0].forward_endpoint,
        "http://127.0.0.1:8002/shop.Payments2/Charge"
    );
    assert_eq!(
        listed[0].compensate_endpoint,
        "http://127.0.0.1:8002/shop.Payments2/Refund"
    );
}

#[tokio::test]
async fn list_definitions_shows_order_fulfillment() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let definitions = client
        .list_definitions(pb::ListDefinitionsRequest {})
        .await
        .unwrap()
        .into_inner()
        .definitions;
    let order = definitions
        .iter()
        .find(|d| d.name == "order-fulfillment")
        .unwrap_or_else(|| panic!("order-fulfillment is listed: {definitions:?}"));
    let steps: Vec<_> = order
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.participant.as_str()))
        .collect();
    assert_eq!(
        steps,
        vec![
            ("validate-order", "orders"),
            ("charge-payment", "payments"),
            ("ship-order", "shipping"),
        ]
    );
    assert!(!order.description.is_empty());
    assert_eq!(
        order.steps[1].timeout,
        secs(15),
        "the file's per-step timeout is shown"
    );
}

#[tokio::test]
async fn registration_survives_a_restart() {
    let mut server = TestServer::start().await;
    let mut client = server.client().await;
    let mut request = participant_request(
        "payments",
        "http://127.0.0.1:7002/shop.Payments/Charge",
        "http://127.0.0.1:7002/shop.Payments/Refund",
    );
    request.retry = Some(common::quick_retry(4, 7));
    client.register_participant(request).await.unwrap();
    let before = participants(&mut client).await;
    drop(client);

    server.restart().await;
    let mut client = server.client().await;
    let after = participants(&mut client).await;
    assert_eq!(after.len(), 1);
    assert_eq!(
        after, before,
        "the participant comes back exactly as registered"
    );
    assert_eq!(
        after[0].retry.as_ref().unwrap().max_compensate_attempts,
        Some(7)
    );
}

#[tokio::test]
async fn health_reports_serving() {
    let server = TestServer::start().await;
    for service in ["", "sagad.v1.Coordinator"] {
        common::until_health(server.addr, service, ServingStatus::Serving).await;
    }
    let mut health = HealthClient::new(channel(&server).await);
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await;
    assert_refused("health of an unknown service", unknown, Code::NotFound, "");
}

/// The services reflection lists, asked in the reflection version `$v`
/// (`v1` or `v1alpha`: the two differ only in their package name).
macro_rules! listed_services {
    ($v:ident, $channel:expr) => {{
        use tonic_reflection::pb::$v::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut reflection = ServerReflectionClient::new($channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = reflection
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner();
        let response = responses
            .message()
            .await
            .unwrap()
            .expect("one answer to ListServices");
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("expected a ListServicesResponse, got {response:?}");
        };
        list.service
            .into_iter()
            .map(|s| s.name)
            .collect::<Vec<String>>()
    }};
}

#[tokio::test]
async fn reflection_lists_the_services_in_v1_and_v1alpha() {
    let server = TestServer::start().await;
    let v1 = listed_services!(v1, channel(&server).await);
    // What Python's grpcio-reflection and other older clients ask.
    let v1alpha = listed_services!(v1alpha, channel(&server).await);
    for names in [&v1, &v1alpha] {
        for wanted in ["sagad.v1.Coordinator", "grpc.health.v1.Health"] {
            assert!(
                names.contains(&wanted.to_string()),
                "{wanted} is listed: {names:?}"
            );
        }
    }
}

#[tokio::test]
async fn inline_steps_run_as_an_inline_saga() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let solo = register_ok(&mut client, "solo").await;
    let response = client
        .start_saga(pb::StartSagaRequest {
            steps: vec![step("first", "solo"), step("second", "solo")],
            payload: b"{\"n\":1}".to_vec(),
            wait: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(response.created);
    let saga = response.saga.unwrap();
    assert_eq!(saga.definition, "inline");
    assert_eq!(common::state(&saga), pb::SagaState::Completed);
    assert_eq!(
        saga.steps
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        vec!["first", "second"]
    );
    assert_eq!(
        solo.fake.trace(&saga.id),
        vec!["F:first#1", "F:second#1"],
        "both steps ran once, in order"
    );
    let fetched = common::get(&mut client, &saga.id).await;
    assert_eq!(fetched.definition, "inline");
    let listed = client
        .list_sagas(pb::ListSagasRequest {
            definition: "inline".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .summaries;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, saga.id);
}

/// Hostile sizes: every value is bounded, each refusal names its cap, and
/// quotes no more of the value than a few dozen characters, so the answer
/// itself stays small (a whole 100 KB name in a status message was a
/// transport error instead of the refusal).
#[tokio::test]
async fn hostile_sizes_get_short_refusals_naming_the_cap() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let shop = register_ok(&mut client, "solo").await;
    let huge = "x".repeat(100_000);
    let huge_url = format!("http://127.0.0.1:1/{huge}.S/M");
    let running = client
        .start_saga(pb::StartSagaRequest {
            steps: vec![step("a", "solo")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .saga
        .unwrap();
    let refused = [
        (
            "a 100 KB name",
            client
                .register_participant(participant_request(
                    &huge,
                    "http://h:1/a.B/C",
                    "http://h:1/a.B/D",
                ))
                .await
                .map(drop),
            Code::InvalidArgument,
            "at most 128",
        ),
        (
            "a 100 KB endpoint",
            client
                .register_participant(participant_request("p", &huge_url, "http://h:1/a.B/D"))
                .await
                .map(drop),
            Code::InvalidArgument,
            "2048 bytes",
        ),
        (
            "a 100 KB definition name",
            client
                .start_saga(pb::StartSagaRequest {
                    definition: huge.clone(),
                    ..Default::default()
                })
                .await
                .map(drop),
            Code::NotFound,
            "100000 bytes",
        ),
        (
            "a 100 KB saga id",
            client
                .get_saga(pb::GetSagaRequest {
                    id: huge.clone(),
                    ..Default::default()
                })
                .await
                .map(drop),
            Code::InvalidArgument,
            "is not a saga id",
        ),
        (
            "a 100 KB cancel reason",
            client
                .cancel_saga(pb::CancelSagaRequest {
                    id: running.id.clone(),
                    reason: huge.clone(),
                })
                .await
                .map(drop),
            Code::InvalidArgument,
            "at most 1024",
        ),
    ];
    for (what, result, code, needle) in refused {
        let status = assert_refused(what, result, code, needle);
        assert!(
            status.message().len() < 1024,
            "{what}: a {} byte message",
            status.message().len()
        );
    }
    drop(shop);

    // A payload a little too large and a request far too large to decode
    // get the same code and the same words.
    for size in [1024 * 1024 + 1, 3 * 1024 * 1024] {
        let too_large = client
            .start_saga(pb::StartSagaRequest {
                steps: vec![step("a", "solo")],
                payload: vec![b'7'; size],
                ..Default::default()
            })
            .await;
        let status = assert_refused(
            &format!("a {size} byte payload"),
            too_large,
            Code::InvalidArgument,
            "--max-payload-bytes",
        );
        assert!(
            status.message().contains("1048576 bytes"),
            "{}",
            status.message()
        );
    }
}

/// One connection holds at most `MAX_STREAMS_PER_CONNECTION` calls open:
/// the next one waits (HTTP/2's limit, which the client obeys) until one
/// ends, and is then served.
#[tokio::test]
async fn one_connection_holds_a_bounded_number_of_streams() {
    use sagad::server::MAX_STREAMS_PER_CONNECTION;
    let server = TestServer::start().await;
    let client = server.client().await;
    let subscribe = |mut client: Client| async move {
        client
            .subscribe(pb::SubscribeRequest::default())
            .await
            .map(tonic::Response::into_inner)
    };
    let mut open = Vec::new();
    for _ in 0..MAX_STREAMS_PER_CONNECTION {
        open.push(subscribe(client.clone()).await.unwrap());
    }
    let mut waiting = tokio::spawn(subscribe(client.clone()));
    // Nothing can answer it while every stream is taken; a moment is enough
    // to see that it waits (its success would be the failure).
    let early = tokio::time::timeout(Duration::from_millis(300), &mut waiting).await;
    assert!(
        early.is_err(),
        "a stream beyond the limit was opened: {early:?}"
    );
    open.pop();
    let served = tokio::time::timeout(common::DEADLINE, waiting)
        .await
        .expect("served once a stream ended")
        .unwrap();
    assert!(served.is_ok(), "{served:?}");
}

/// The number of participants is bounded (each name is a metrics label
/// value): one past the limit is refused, re-registering one is not.
#[tokio::test]
async fn participants_are_bounded_in_number() {
    use sagad::engine::PARTICIPANTS_MAX;
    let server = TestServer::start().await;
    let client = server.client().await;
    let register = |mut client: Client, name: String| async move {
        client
            .register_participant(participant_request(
                &name,
                "http://127.0.0.1:1/a.B/C",
                "http://127.0.0.1:1/a.B/D",
            ))
            .await
    };
    let all: Vec<_> = (0..PARTICIPANTS_MAX)
        .map(|n| tokio::spawn(register(client.clone(), format!("p{n}"))))
        .collect();
    for registration in all {
        registration.await.unwrap().unwrap();
    }
    let one_more = register(client.clone(), "one-more".into()).await;
    assert_refused(
        "one participant too many",
        one_more,
        Code::FailedPrecondition,
        "the most there can be",
    );
    register(client.clone(), "p7".into())
        .await
        .expect("a registered one can be replaced");
}

/// No participant may point at the coordinator: its Coordinator service on
/// any host (a step could cancel its own saga), or any method on its own
/// listener under any local name.
#[tokio::test]
async fn participants_cannot_point_at_the_coordinator() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let port = server.addr.port();
    let elsewhere = "http://127.0.0.1:1/a.B/D";
    let cases = [
        (
            "http://10.0.0.9:50051/sagad.v1.Coordinator/CancelSaga".to_string(),
            "Coordinator service",
        ),
        (
            format!("http://127.0.0.1:{port}/shop.Payments/Charge"),
            "own address",
        ),
        (
            format!("http://localhost:{port}/shop.Payments/Charge"),
            "own address",
        ),
        (
            format!("http://[::1]:{port}/shop.Payments/Charge"),
            "own address",
        ),
    ];
    for (url, why) in &cases {
        let forward = client
            .register_participant(participant_request("self", url, elsewhere))
            .await;
        assert_refused(
            &format!("forward {url}"),
            forward,
            Code::InvalidArgument,
            why,
        );
        let compensate = client
            .register_participant(participant_request("self", elsewhere, url))
            .await;
        assert_refused(
            &format!("compensate {url}"),
            compensate,
            Code::InvalidArgument,
            why,
        );
    }
    assert!(
        participants(&mut client).await.is_empty(),
        "nothing was registered"
    );
}
