//! Long histories stay readable: sagas whose step made 10,000 attempts, listed
//! and read by a client that keeps the 4 MiB message limit grpc-go, grpcurl,
//! Python's grpcio and tonic all default to.
//!
//! The histories are written straight into a journal, as the engine would have
//! written them (its own pure `decide` and `attempt_finished`, driven on a clock
//! of their own), so no test waits 10,000 retry delays; a real `sagad` process
//! then serves that data directory.

use sagad::{
    journal::{Journal, SledJournal},
    proto::v1::{self as pb, coordinator_client::CoordinatorClient},
    saga::{
        Action, CallOutcome, Decision, Endpoint, Event, EventKind, Offset, RetryOverrides,
        RetryPolicy, SagaId, SagaState, StepSpec, Timestamp, attempt_finished, decide,
    },
};
use std::time::Duration;
use tonic::{Code, transport::Channel};

use crate::common::{poll_until, process::SagadProcess};

/// Forward attempts of each seeded saga's one step.
const ATTEMPTS: u32 = 10_000;
/// Seeded sagas: enough that their whole histories together exceed the limit.
const SAGAS: usize = 6;
/// The default largest message a gRPC client decodes, in most languages.
const CLIENT_LIMIT: usize = 4 * 1024 * 1024;
/// How long each seeded call took.
const CALL_TOOK: Duration = Duration::from_millis(1);
/// Events per journal append while seeding.
const SEED_APPEND: usize = 2_000;

/// The one step: a participant that asked to retry 10,000 times, so the step
/// gave up and was compensated.
fn flaky_step() -> StepSpec {
    let retry = RetryOverrides {
        initial_interval: Some(Duration::from_millis(10)),
        multiplier: Some(1.0),
        max_interval: Some(Duration::from_millis(10)),
        jitter: Some(0.0),
        max_attempts: Some(ATTEMPTS),
        max_compensate_attempts: Some(3),
        max_duration: Some(Duration::from_secs(3600)),
    }
    .resolve(&RetryPolicy::default())
    .unwrap();
    StepSpec {
        name: "flaky".into(),
        participant: "flaky".into(),
        forward: Endpoint::parse("f", "http://127.0.0.1:1/flaky.S/Do").unwrap(),
        compensate: Endpoint::parse("c", "http://127.0.0.1:1/flaky.S/Undo").unwrap(),
        retry,
        timeout: Duration::from_secs(1),
    }
}

/// One saga's whole history, as the engine's runner would have journaled it:
/// every forward call answered "retry", the compensation "done".
fn history(began: Timestamp) -> Vec<Event> {
    let mut now = began;
    let started = Event {
        saga: SagaId::generate(),
        seq: 1,
        offset: Offset::ZERO,
        at: now,
        kind: EventKind::SagaStarted {
            definition: "flaky-history".into(),
            inline_steps: None,
            steps: vec![flaky_step()],
            payload: br#"{"order_id":"long-history"}"#.to_vec(),
            idempotency_key: None,
            trace: None,
        },
    };
    let mut state = SagaState::start(&started).unwrap();
    let mut events = vec![started];
    let mut record = |state: &mut SagaState, kind: EventKind, at: Timestamp| {
        let event = Event {
            saga: state.id,
            seq: state.last_seq + 1,
            offset: Offset::ZERO,
            at,
            kind,
        };
        state.apply(&event).unwrap();
        events.push(event);
    };
    loop {
        match decide(&state, now) {
            Decision::Record(kind) => record(&mut state, kind, now),
            Decision::Call {
                step,
                action,
                attempt,
            } => {
                now = now.plus(CALL_TOOK);
                let outcome = match action {
                    Action::Forward => CallOutcome::Transient {
                        reason: format!("the participant asked to retry (attempt {attempt})"),
                        retry_after: None,
                    },
                    Action::Compensate => CallOutcome::Succeeded { output: Vec::new() },
                };
                let kind = attempt_finished(&state, step, action, attempt, outcome, now, 0.5);
                record(&mut state, kind, now);
            }
            Decision::WaitUntil(due) => now = due,
            Decision::Finished => return events,
        }
    }
}

/// A data directory holding [`SAGAS`] compensated sagas of [`ATTEMPTS`]
/// forward attempts each.
async fn seeded() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let journal = SledJournal::open(dir.path()).unwrap();
    // Back in time far enough that every seeded attempt lies in the past.
    let began = Timestamp::now().minus(Duration::from_secs(24 * 3600));
    for _ in 0..SAGAS {
        let events = history(began);
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            journal
                .append(events.by_ref().take(SEED_APPEND).collect())
                .await
                .unwrap();
        }
    }
    journal.close().await.unwrap();
    dir
}

/// A client of `sagad` at `addr` that decodes messages up to `limit` bytes,
/// once the server answers (it is UNAVAILABLE until recovery is done).
async fn client(addr: std::net::SocketAddr, limit: usize) -> CoordinatorClient<Channel> {
    let client = CoordinatorClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
        .max_decoding_message_size(limit);
    poll_until("the coordinator to finish recovery", || {
        let mut client = client.clone();
        async move {
            match client.list_definitions(pb::ListDefinitionsRequest {}).await {
                Ok(_) => Some(()),
                Err(s) if s.code() == Code::Unavailable => None,
                Err(s) => panic!("ListDefinitions: {s:?}"),
            }
        }
    })
    .await;
    client
}

#[tokio::test]
async fn a_page_of_sagas_with_10000_attempts_each_fits_a_4_mib_client() {
    let dir = seeded().await;
    let sagad = SagadProcess::spawn(dir.path(), &[]);
    let mut client = client(sagad.addr, CLIENT_LIMIT).await;

    let page = client
        .list_sagas(pb::ListSagasRequest {
            page_size: 50,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|s| panic!("a page of {SAGAS} long sagas does not decode: {s:?}"))
        .into_inner();
    assert_eq!(page.sagas.len(), SAGAS);
    sagad.kill();
}
