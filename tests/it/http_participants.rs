//! HTTP/JSON participants end to end over real loopback HTTP, HTTP/1.1 and
//! h2c: the answer table of docs/participant.md ("The HTTP contract") as a
//! saga lives it, read back through GetSaga and the journaled times.

use std::time::Duration;

use axum::http::Version;
use sagad::{engine::EngineConfig, participant::http::wire::AnswerBody, proto::v1 as pb};

use crate::common::{
    TestServer, get,
    http::{HttpCall, HttpFake, Reply, register_http_shop},
    order_fulfillment, poll_until,
    process::SagadProcess,
    quick_retry, sample, scrape, start_order, state, step_states, until_terminal,
};

const PROTOCOLS: [(pb::Protocol, Version); 2] = [
    (pb::Protocol::Http, Version::HTTP_11),
    (pb::Protocol::H2c, Version::HTTP_2),
];

const TIMEOUT: Duration = Duration::from_secs(5);

fn calls_of(fake: &HttpFake, saga: &str) -> Vec<HttpCall> {
    fake.calls()
        .into_iter()
        .filter(|c| c.body.saga_id == saga)
        .collect()
}

fn seconds(t: &prost_types::Timestamp) -> f64 {
    t.seconds as f64 + f64::from(t.nanos) / 1e9
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_completes_over_http1_and_h2c_with_the_contract_s_headers_and_body() {
    for (protocol, version) in PROTOCOLS {
        let server = TestServer::start().await;
        let mut client = server.client().await;
        // `orders` answers a bare 204; the others a JSON output.
        let fake = HttpFake::serve(|call| {
            if call.path.starts_with("/orders/") {
                Reply::status(204)
            } else {
                Reply::ok(call)
            }
        })
        .await;
        register_http_shop(&mut client, &fake, protocol, quick_retry(3, 3), TIMEOUT).await;

        let saga = start_order(&mut client, r#"{"order_id":"H-1"}"#, true).await;
        assert_eq!(
            state(&saga),
            pb::SagaState::Completed,
            "{protocol:?}: {saga:?}"
        );
        let saga = get(&mut client, &saga.id).await;
        assert_eq!(saga.steps[0].output, b"", "a bare 2xx has no output");
        assert_eq!(saga.steps[1].output, br#"{"done":"charge-payment"}"#);
        assert_eq!(
            saga.steps[0].forward_protocol, protocol as i32,
            "GetSaga says what each endpoint speaks"
        );

        let calls = calls_of(&fake, &saga.id);
        let paths: Vec<&str> = calls.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            ["/orders/forward", "/payments/forward", "/shipping/forward"]
        );
        for call in &calls {
            assert_eq!(call.version, version, "{protocol:?}");
            assert_eq!(call.header("content-type"), Some("application/json"));
            assert_eq!(
                call.header("idempotency-key"),
                Some(call.body.idempotency_key.as_str())
            );
            // The step's timeout: the definition gives charge-payment 15s.
            let timeout = if call.body.step == "charge-payment" {
                "15000"
            } else {
                "5000"
            };
            assert_eq!(call.header("x-sagad-timeout-ms"), Some(timeout));
            let traceparent = call.header("traceparent").expect("a traceparent");
            assert!(traceparent.starts_with("00-"), "{traceparent}");
            assert_eq!(call.body.attempt, 1);
            assert_eq!(call.body.definition, "order-fulfillment");
            // The JSON payload is embedded as JSON, not as a string.
            assert_eq!(call.json()["payload"]["order_id"], "H-1");
            assert_eq!(call.json()["payload_encoding"], "json");
        }
        // Earlier outputs travel too: a JSON one as JSON, an empty one as text.
        let shipping = calls[2].json();
        assert_eq!(
            shipping["outputs"]["charge-payment"]["done"],
            "charge-payment"
        );
        assert_eq!(shipping["outputs"]["validate-order"], "");
        assert_eq!(shipping["output_encodings"]["validate-order"], "text");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_409_or_422_is_a_rejection_and_the_done_steps_are_compensated() {
    for (protocol, _) in PROTOCOLS {
        for status in [409, 422] {
            let server = TestServer::start().await;
            let mut client = server.client().await;
            let fake = HttpFake::serve(move |call| {
                if call.path == "/payments/forward" {
                    let answer = AnswerBody {
                        reason: Some("card declined".into()),
                        ..AnswerBody::default()
                    };
                    Reply::json(status, &answer)
                } else {
                    Reply::ok(call)
                }
            })
            .await;
            register_http_shop(&mut client, &fake, protocol, quick_retry(3, 3), TIMEOUT).await;

            let saga = start_order(&mut client, "{}", true).await;
            let saga = get(&mut client, &saga.id).await;
            assert_eq!(state(&saga), pb::SagaState::Compensated, "{saga:?}");
            assert_eq!(
                step_states(&saga),
                [
                    pb::StepState::Compensated,
                    pb::StepState::Failed,
                    pb::StepState::Skipped
                ],
                "{protocol:?} {status}"
            );
            let payments = &saga.steps[1];
            assert_eq!(payments.forward_attempts, 1, "a rejection is not retried");
            assert!(
                payments.last_error.contains(&format!("HTTP {status}"))
                    && payments.last_error.contains("card declined"),
                "{}",
                payments.last_error
            );
            let paths: Vec<String> = calls_of(&fake, &saga.id)
                .into_iter()
                .map(|c| c.path)
                .collect();
            assert_eq!(
                paths,
                ["/orders/forward", "/payments/forward", "/orders/compensate"]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_with_retry_after_waits_at_least_the_hint_then_succeeds() {
    for (protocol, _) in PROTOCOLS {
        let server = TestServer::start().await;
        let mut client = server.client().await;
        let fake = HttpFake::serve(|call| {
            if call.path == "/payments/forward" && call.body.attempt == 1 {
                Reply::body(503, "maintenance").with_header("retry-after", "1")
            } else {
                Reply::ok(call)
            }
        })
        .await;
        // Backoff alone would retry after 20ms: the hint must stretch it.
        register_http_shop(&mut client, &fake, protocol, quick_retry(3, 3), TIMEOUT).await;

        let saga = start_order(&mut client, "{}", true).await;
        let saga = get(&mut client, &saga.id).await;
        assert_eq!(state(&saga), pb::SagaState::Completed, "{saga:?}");
        let payments = &saga.steps[1];
        assert_eq!(payments.forward_attempts, 2);
        let first = &payments.attempts[0];
        assert_eq!(first.outcome, pb::AttemptOutcome::Transient as i32);
        assert!(
            first.error.contains("HTTP 503") && first.error.contains("maintenance"),
            "{}",
            first.error
        );
        // Read from the journaled times, not from a clock here.
        let gap = seconds(first.next_attempt_at.as_ref().unwrap())
            - seconds(first.finished_at.as_ref().unwrap());
        assert!(gap >= 0.999, "{protocol:?}: retried after {gap}s");
        let second = &payments.attempts[1];
        assert!(
            seconds(second.started_at.as_ref().unwrap())
                >= seconds(first.next_attempt_at.as_ref().unwrap()) - 0.001
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_its_timeout_is_cut_and_retried() {
    for (protocol, _) in PROTOCOLS {
        let server = TestServer::start().await;
        let mut client = server.client().await;
        // The first shipping call is held (charge-payment has a timeout of its
        // own in the definition) until the test has seen its attempt fail:
        // the coordinator gave up on its own, without the answer.
        let fake = HttpFake::serve(|call| {
            if call.path == "/shipping/forward" && call.body.attempt == 1 {
                Reply::ok(call).gated()
            } else {
                Reply::ok(call)
            }
        })
        .await;
        let timeout = Duration::from_millis(500);
        register_http_shop(&mut client, &fake, protocol, quick_retry(3, 3), timeout).await;

        let saga = start_order(&mut client, "{}", false).await;
        let failed = poll_until("the held call to count as timed out", || {
            let (mut client, id) = (client.clone(), saga.id.clone());
            async move {
                let saga = get(&mut client, &id).await;
                let attempt = saga.steps[2].attempts.first()?.clone();
                (attempt.outcome == pb::AttemptOutcome::Transient as i32).then_some(attempt)
            }
        })
        .await;
        assert!(
            failed
                .error
                .contains("no answer within the step timeout of 500ms"),
            "{}",
            failed.error
        );
        fake.release();
        let saga = until_terminal(&mut client, &saga.id).await;
        assert_eq!(state(&saga), pb::SagaState::Completed, "{saga:?}");
        let shipments: Vec<HttpCall> = calls_of(&fake, &saga.id)
            .into_iter()
            .filter(|c| c.path == "/shipping/forward")
            .collect();
        assert_eq!(shipments.len(), 2, "{protocol:?}");
        assert!(
            shipments
                .iter()
                .all(|c| c.header("x-sagad-timeout-ms") == Some("500")),
            "the participant is told its deadline"
        );
        // The same key both times: the participant can dedupe the retry.
        assert_eq!(
            shipments[0].body.idempotency_key,
            shipments[1].body.idempotency_key
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_that_is_not_json_or_too_large_is_transient_and_says_why() {
    for (protocol, _) in PROTOCOLS {
        let config = EngineConfig {
            max_payload_bytes: 4096,
            ..EngineConfig::default()
        };
        let server = TestServer::start_with(vec![order_fulfillment()], config).await;
        let mut client = server.client().await;
        let fake = HttpFake::serve(|call| match (call.path.as_str(), call.body.attempt) {
            ("/payments/forward", 1) => Reply::body(200, "<html>charged</html>"),
            ("/payments/forward", 2) => Reply::body(200, vec![b' '; 10_000]),
            _ => Reply::ok(call),
        })
        .await;
        register_http_shop(&mut client, &fake, protocol, quick_retry(3, 3), TIMEOUT).await;

        let saga = start_order(&mut client, "{}", true).await;
        let saga = get(&mut client, &saga.id).await;
        assert_eq!(state(&saga), pb::SagaState::Completed, "{saga:?}");
        let attempts = &saga.steps[1].attempts;
        assert_eq!(attempts.len(), 3, "{attempts:?}");
        assert!(
            attempts[0]
                .error
                .contains("HTTP 200 with a body that is not the JSON of an answer")
                && attempts[0].error.contains("<html>charged</html>"),
            "{}",
            attempts[0].error
        );
        assert!(
            attempts[1]
                .error
                .contains("larger than the 4096 bytes an answer may have"),
            "{}",
            attempts[1].error
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_not_delivered_and_retried() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    // A port the kernel just gave out and took back: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    client
        .register_participant(pb::RegisterParticipantRequest {
            name: "nobody".into(),
            protocol: pb::Protocol::Http as i32,
            forward_endpoint: format!("http://127.0.0.1:{port}/do"),
            compensate_endpoint: format!("http://127.0.0.1:{port}/undo"),
            retry: Some(quick_retry(2, 2)),
            timeout: None,
            ..Default::default()
        })
        .await
        .unwrap();
    let saga = client
        .start_saga(pb::StartSagaRequest {
            steps: vec![pb::StepDefinition {
                name: "only".into(),
                participant: "nobody".into(),
                ..Default::default()
            }],
            wait: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .saga
        .unwrap();
    assert_eq!(state(&saga), pb::SagaState::Compensated, "{saga:?}");
    let step = &get(&mut client, &saga.id).await.steps[0];
    assert_eq!(step.forward_attempts, 2);
    assert!(
        step.attempts
            .iter()
            .all(|a| a.outcome == pb::AttemptOutcome::NotDelivered as i32),
        "{step:?}"
    );
    assert!(
        step.last_error.contains("(the request was not sent)"),
        "{}",
        step.last_error
    );
    // Never delivered, so nothing to undo: no compensation was called.
    assert_eq!(step.compensate_attempts, 0, "{step:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_4xx_is_retried_logged_once_and_counted_as_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let sagad = SagadProcess::spawn_with(dir.path(), &["--metrics-listen", "127.0.0.1:0"], &[]);
    let mut client = sagad::proto::v1::coordinator_client::CoordinatorClient::connect(format!(
        "http://{}",
        sagad.addr
    ))
    .await
    .unwrap();
    let fake = HttpFake::serve(|call| {
        if call.path == "/shipping/forward" {
            Reply::body(404, "no route /shipping/forward")
        } else {
            Reply::ok(call)
        }
    })
    .await;
    crate::common::until_health(sagad.addr, "", crate::common::ServingStatus::Serving).await;
    register_http_shop(
        &mut client,
        &fake,
        pb::Protocol::Http,
        quick_retry(3, 3),
        TIMEOUT,
    )
    .await;

    // Two sagas: six 404s from one participant, one log line.
    for _ in 0..2 {
        let saga = start_order(&mut client, "{}", true).await;
        let saga = get(&mut client, &saga.id).await;
        assert_eq!(state(&saga), pb::SagaState::Compensated, "{saga:?}");
        let shipping = &saga.steps[2];
        assert_eq!(shipping.forward_attempts, 3, "a 404 is retried");
        assert!(
            shipping.last_error.contains("HTTP 404")
                && shipping.last_error.contains("no route /shipping/forward")
                && shipping
                    .last_error
                    .contains("check the participant's registration"),
            "{}",
            shipping.last_error
        );
    }
    let metrics = sagad.metrics_addr();
    let series = r#"sagad_participant_config_errors_total{participant="shipping",status="404"}"#;
    let text = scrape(metrics).await;
    assert_eq!(sample(&text, series), Some(6.0), "{text}");
    let logged = poll_until("the configuration error to be logged", || {
        let stderr = sagad.stderr_so_far();
        async move { (stderr.contains("misconfigured")).then_some(stderr) }
    })
    .await;
    let lines: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains("misconfigured"))
        .collect();
    assert_eq!(lines.len(), 1, "logged once per participant: {logged}");
    assert!(
        lines[0].contains("shipping") && lines[0].contains("404"),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains("no route /shipping/forward"),
        "{}",
        lines[0]
    );
    sagad.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_mid_answer_is_transient_with_an_unknown_effect() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // Reads each request, starts a 2xx answer and hangs up half way through.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move {
        loop {
            let mut stream = tokio::select! {
                accepted = listener.accept() => accepted.unwrap().0,
                () = stopped.cancelled() => return,
            };
            let mut buffer = vec![0u8; 64 * 1024];
            let _ = stream.read(&mut buffer).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"outp")
                .await;
        }
    });
    let _stop = stop.drop_guard();
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client
        .register_participant(pb::RegisterParticipantRequest {
            name: "flaky".into(),
            protocol: pb::Protocol::Http as i32,
            forward_endpoint: format!("http://{addr}/do"),
            compensate_endpoint: format!("http://{addr}/undo"),
            retry: Some(quick_retry(2, 2)),
            timeout: None,
            ..Default::default()
        })
        .await
        .unwrap();
    let saga = client
        .start_saga(pb::StartSagaRequest {
            steps: vec![pb::StepDefinition {
                name: "only".into(),
                participant: "flaky".into(),
                ..Default::default()
            }],
            wait: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .saga
        .unwrap();
    // The forward may have happened, so it is compensated, and the
    // compensation fails the same way: the saga needs an operator.
    assert_eq!(state(&saga), pb::SagaState::Failed, "{saga:?}");
    let step = &get(&mut client, &saga.id).await.steps[0];
    assert_eq!((step.forward_attempts, step.compensate_attempts), (2, 2));
    for attempt in &step.attempts {
        assert_eq!(attempt.outcome, pb::AttemptOutcome::Transient as i32);
        assert!(
            attempt
                .error
                .contains("HTTP 200: the connection failed while the answer was read"),
            "{}",
            attempt.error
        );
    }
}
