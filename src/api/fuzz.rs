//! Fuzzing the API's request validation and proto conversion: every
//! Coordinator method called with requests built from hostile fields (any
//! string, huge ones, names and URLs that are nearly right, durations and
//! retry numbers at the edges, unknown enum values) and with requests
//! decoded from random bytes, against a real engine over the memory journal.
//! Each call either works or is refused with a status a client can act on (a
//! code that says the request was wrong, and a message); none panics, and
//! none answers as if the server had failed.

use std::sync::{Arc, atomic::AtomicBool};

use proptest::{collection::vec, option, prelude::*};
use prost::Message;
use tonic::{Code, Request};

use super::CoordinatorApi;
use crate::{
    engine::{Engine, EngineConfig},
    journal::MemoryJournal,
    participant::{CallRequest, Participants},
    proto::v1::{self as pb, coordinator_server::Coordinator},
    saga::CallOutcome,
    testing,
};

/// Every call succeeds at once: the fuzz is about the requests.
struct Agreeable;

#[async_trait::async_trait]
impl Participants for Agreeable {
    async fn call(&self, _request: CallRequest) -> CallOutcome {
        CallOutcome::Succeeded { output: vec![] }
    }
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z0-9._-]{1,12}",
        Just("payments".to_string()),
        Just(String::new()),
        "[a-z]{1,3}".prop_map(|s| s.repeat(40_000)),
        "[ -~]{0,8}".prop_map(|s| format!("http://127.0.0.1:1/{s}")),
        Just("http://127.0.0.1:1/shop.Payments/Charge".to_string()),
        Just("0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b".to_string()),
    ]
}

fn duration() -> impl Strategy<Value = Option<prost_types::Duration>> {
    option::of(
        (
            prop_oneof![any::<i64>(), -2i64..100_000],
            prop_oneof![any::<i32>(), 0i32..1_000_000_000],
        )
            .prop_map(|(seconds, nanos)| prost_types::Duration { seconds, nanos }),
    )
}

fn time() -> impl Strategy<Value = Option<prost_types::Timestamp>> {
    option::of(
        (
            prop_oneof![any::<i64>(), 1_700_000_000i64..1_900_000_000],
            prop_oneof![any::<i32>(), 0i32..1_000_000_000],
        )
            .prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
    )
}

fn retry() -> impl Strategy<Value = Option<pb::RetryPolicy>> {
    let number = || option::of(prop_oneof![any::<f64>(), 0.0f64..3.0]);
    let count = || option::of(prop_oneof![any::<u32>(), 0u32..5]);
    option::of(
        (
            duration(),
            number(),
            duration(),
            count(),
            count(),
            number(),
            duration(),
        )
            .prop_map(
                |(
                    initial_interval,
                    multiplier,
                    max_interval,
                    max_attempts,
                    max_compensate_attempts,
                    jitter,
                    max_duration,
                )| {
                    pb::RetryPolicy {
                        initial_interval,
                        multiplier,
                        max_interval,
                        max_attempts,
                        max_compensate_attempts,
                        jitter,
                        max_duration,
                    }
                },
            ),
    )
}

fn step() -> impl Strategy<Value = pb::StepDefinition> {
    (text(), text(), retry(), duration(), -1..4i32).prop_map(
        |(name, participant, retry, timeout, kind)| pb::StepDefinition {
            name,
            participant,
            retry,
            timeout,
            kind,
            input: Default::default(),
        },
    )
}

/// One call of the Coordinator API.
#[derive(Debug, Clone)]
enum Call {
    Register(pb::RegisterParticipantRequest),
    Start(pb::StartSagaRequest),
    /// A StartSagaRequest as whatever random bytes decode to.
    StartFromBytes(Vec<u8>),
    Get(String),
    List(pb::ListSagasRequest),
    Cancel(pb::CancelSagaRequest),
    Retry(pb::RetrySagaRequest),
    Subscribe(pb::SubscribeRequest),
}

fn call() -> impl Strategy<Value = Call> {
    prop_oneof![
        // Protocols beyond the known ones too: an unknown number is refused.
        (
            (text(), text(), text(), retry(), duration(), -1i32..5),
            (prop_oneof![Just(0u32), any::<u32>(), 1u32..4], text()),
        )
            .prop_map(
                |((name, f, c, retry, timeout, protocol), (max_in_flight, rate))| {
                    Call::Register(pb::RegisterParticipantRequest {
                        name,
                        forward_endpoint: f,
                        compensate_endpoint: c,
                        max_in_flight,
                        rate,
                        retry,
                        timeout,
                        protocol,
                    })
                }
            ),
        (
            (text(), vec(step(), 0..3), vec(any::<u8>(), 0..32), text()),
            (time(), duration(), time(), duration()),
        )
            .prop_map(
                |(
                    (definition, steps, payload, key),
                    (start_at, start_delay, deadline_at, deadline),
                )| Call::Start(pb::StartSagaRequest {
                    definition,
                    steps,
                    payload,
                    idempotency_key: key,
                    wait: false,
                    start_at,
                    start_delay,
                    deadline_at,
                    deadline,
                })
            ),
        vec(any::<u8>(), 0..128).prop_map(Call::StartFromBytes),
        text().prop_map(Call::Get),
        (any::<i32>(), text(), any::<u32>(), text()).prop_map(
            |(state, definition, page_size, page_token)| {
                Call::List(pb::ListSagasRequest {
                    state: state % 8,
                    definition,
                    page_size,
                    page_token,
                })
            }
        ),
        (text(), text())
            .prop_map(|(id, reason)| Call::Cancel(pb::CancelSagaRequest { id, reason })),
        (text(), any::<bool>()).prop_map(|(id, refresh_endpoints)| {
            Call::Retry(pb::RetrySagaRequest {
                id,
                refresh_endpoints,
            })
        }),
        (any::<u64>(), text(), any::<bool>()).prop_map(
            |(after_offset, definition, state_changes_only)| {
                Call::Subscribe(pb::SubscribeRequest {
                    after_offset,
                    definition,
                    state_changes_only,
                })
            }
        ),
    ]
}

/// The call's status: `None` when it worked.
async fn make(api: &CoordinatorApi, call: Call) -> Option<tonic::Status> {
    let result = match call {
        Call::Register(r) => api.register_participant(Request::new(r)).await.map(drop),
        Call::Start(r) => api.start_saga(Request::new(r)).await.map(drop),
        Call::StartFromBytes(bytes) => match pb::StartSagaRequest::decode(&bytes[..]) {
            Ok(r) => api
                .start_saga(Request::new(pb::StartSagaRequest { wait: false, ..r }))
                .await
                .map(drop),
            Err(_) => Ok(()),
        },
        Call::Get(id) => api
            .get_saga(Request::new(pb::GetSagaRequest {
                id,
                ..Default::default()
            }))
            .await
            .map(drop),
        Call::List(r) => api.list_sagas(Request::new(r)).await.map(drop),
        Call::Cancel(r) => api.cancel_saga(Request::new(r)).await.map(drop),
        Call::Retry(r) => api.retry_saga(Request::new(r)).await.map(drop),
        Call::Subscribe(r) => api.subscribe(Request::new(r)).await.map(drop),
    };
    result.err()
}

#[test]
fn every_request_is_served_or_refused_as_the_callers_mistake() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let engine = runtime.block_on(async {
        Engine::new(
            Arc::new(MemoryJournal::in_memory()),
            Arc::new(Agreeable),
            vec![],
            // Thousands of hostile cursors: each is refused at once.
            EngineConfig {
                cursor_patience: std::time::Duration::ZERO,
                ..EngineConfig::default()
            },
        )
        .await
        .unwrap()
    });
    let api = CoordinatorApi::new(engine.clone(), Arc::new(AtomicBool::new(true)));
    testing::fuzz("API requests", vec(call(), 1..4), |calls| {
        for call in calls {
            let what: String = format!("{call:?}").chars().take(300).collect();
            if let Some(status) = runtime.block_on(make(&api, call)) {
                prop_assert!(
                    matches!(
                        status.code(),
                        Code::InvalidArgument
                            | Code::NotFound
                            | Code::AlreadyExists
                            | Code::FailedPrecondition
                            | Code::OutOfRange
                    ),
                    "{what}: {status:?}"
                );
                prop_assert!(
                    !status.message().is_empty(),
                    "{what}: a status without a message"
                );
            }
        }
        Ok(())
    });
    runtime.block_on(engine.shutdown()).unwrap();
}
