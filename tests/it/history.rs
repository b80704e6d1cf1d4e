//! Long histories stay readable: sagas whose step made 10,000 attempts, listed
//! and read by a client that keeps the 4 MiB message limit grpc-go, grpcurl,
//! Python's grpcio and tonic all default to.
//!
//! The histories are written straight into a journal, as the engine would have
//! written them (its own pure `decide` and `attempt_finished`, driven on a clock
//! of their own), so no test waits 10,000 retry delays; a real `sagad` process
//! then serves that data directory.

use std::time::Duration;

use prost::Message;
use sagad::{
    journal::{Journal, SledJournal},
    proto::v1::{self as pb, coordinator_client::CoordinatorClient},
    saga::{
        Action, CallOutcome, Decision, Endpoint, Event, EventKind, Offset, RetryOverrides,
        RetryPolicy, SagaId, SagaState, StepSpec, Timestamp, attempt_finished, decide,
    },
};
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
        kind: sagad::saga::StepKind::Compensatable,
        forward: Endpoint::parse("f", "http://127.0.0.1:1/flaky.S/Do").unwrap(),
        compensate: Some(Endpoint::parse("c", "http://127.0.0.1:1/flaky.S/Undo").unwrap()),
        retry,
        timeout: Duration::from_secs(1),
        input: None,
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
            started_by: None,
            start_at: None,
            deadline: None,
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

/// How many attempts the seeded step made: every forward one, then the one
/// compensation that succeeded.
const STEP_ATTEMPTS: u32 = ATTEMPTS + 1;

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
    assert_eq!(page.summaries.len(), SAGAS);
    assert!(page.next_page_token.is_empty());
    // A summary's size does not grow with the history: a page of the most
    // a page can hold (1000) would still be far below the limit.
    let per_saga = page.encoded_len() / SAGAS;
    assert!(per_saga * 1000 < CLIENT_LIMIT, "{per_saga} bytes a summary");
    for summary in &page.summaries {
        assert_eq!(summary.state, pb::SagaState::Compensated as i32);
        assert_eq!(summary.definition, "flaky-history");
        assert_eq!(summary.step_count, 1);
        let step = summary.current_step.as_ref().expect("a current step");
        assert_eq!(
            (step.index, step.name.as_str(), step.state),
            (0, "flaky", pb::StepState::Compensated as i32)
        );
        assert_eq!(
            (step.forward_attempts, step.compensate_attempts),
            (ATTEMPTS, 1)
        );
        assert!(
            summary
                .error
                .contains(&format!("failed after {ATTEMPTS} attempts")),
            "why: {}",
            summary.error
        );
    }

    // One saga, as GetSaga answers by default: the step's last attempts in
    // full, the earlier ones as a summary, the counters exact.
    let id = page.summaries[0].id.clone();
    let saga = client
        .get_saga(pb::GetSagaRequest {
            id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|s| panic!("a saga of {STEP_ATTEMPTS} attempts does not decode: {s:?}"))
        .into_inner();
    let step = &saga.steps[0];
    assert_eq!(
        (step.forward_attempts, step.compensate_attempts),
        (ATTEMPTS, 1)
    );
    let shown: Vec<(i32, u32)> = step.attempts.iter().map(|a| (a.action, a.number)).collect();
    let forward = pb::Action::Forward as i32;
    let mut expected: Vec<(i32, u32)> = (ATTEMPTS - 18..=ATTEMPTS).map(|n| (forward, n)).collect();
    expected.push((pb::Action::Compensate as i32, 1));
    assert_eq!(shown, expected, "the last 20 attempts, in order");
    let elided = step
        .elided_attempts
        .as_ref()
        .expect("a summary of the rest");
    let count = STEP_ATTEMPTS - 20;
    assert_eq!(
        (elided.count, elided.forward, elided.not_delivered),
        (count, count, 0)
    );
    assert_eq!(
        elided.first_error,
        "the participant asked to retry (attempt 1)"
    );
    assert_eq!(
        elided.last_error,
        format!("the participant asked to retry (attempt {count})")
    );
    assert!(elided.first_started_at.is_some() && elided.last_finished_at.is_some());

    // Every attempt, for a client that raised its limit: the journal kept them.
    let mut roomy = client.max_decoding_message_size(16 * CLIENT_LIMIT);
    let whole = roomy
        .get_saga(pb::GetSagaRequest {
            id,
            all_attempts: true,
        })
        .await
        .unwrap()
        .into_inner();
    let step = &whole.steps[0];
    assert!(step.elided_attempts.is_none());
    let numbers: Vec<u32> = step
        .attempts
        .iter()
        .filter(|a| a.action == forward)
        .map(|a| a.number)
        .collect();
    assert_eq!(numbers, (1..=ATTEMPTS).collect::<Vec<_>>());
    assert_eq!(step.attempts.len(), STEP_ATTEMPTS as usize);
    // What a page of whole sagas was: over the limit this test holds to.
    assert!(
        whole.encoded_len() * SAGAS > CLIENT_LIMIT,
        "{SAGAS} whole sagas of {} bytes would fit: the test proves nothing",
        whole.encoded_len()
    );

    // The command line shows the same: the summary line, and every attempt
    // when asked; the list is summaries.
    let shown = cli(sagad.addr, &["get", &whole.id]);
    assert!(
        shown.contains(&format!(
            "… 9,981 earlier attempts: first error the participant asked to retry (attempt 1), \
             last error the participant asked to retry (attempt {count})"
        )),
        "{shown}"
    );
    assert!(shown.contains("--all-attempts"), "{shown}");
    let every: serde_json::Value = serde_json::from_str(&cli(
        sagad.addr,
        &["get", &whole.id, "--all-attempts", "--json"],
    ))
    .unwrap();
    let step = &every["steps"][0];
    assert_eq!(
        step["attempts"].as_array().unwrap().len(),
        STEP_ATTEMPTS as usize
    );
    assert_eq!(step["elided_attempts"], serde_json::Value::Null);
    let listed: serde_json::Value =
        serde_json::from_str(&cli(sagad.addr, &["list", "--json"])).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), SAGAS);
    assert!(
        listed
            .iter()
            .all(|s| s["current_step"]["forward_attempts"] == ATTEMPTS && s["steps"].is_null()),
        "{listed:?}"
    );
    sagad.kill();
}

/// Runs the `sagad` client verb `args` against `addr`; its stdout, once it
/// succeeded.
fn cli(addr: std::net::SocketAddr, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sagad"))
        .args(args)
        .arg("--addr")
        .arg(addr.to_string())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run sagad");
    assert!(
        out.status.success(),
        "sagad {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
