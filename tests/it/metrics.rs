//! Metrics end to end: sagas run over real loopback gRPC against scripted
//! participants, and `/metrics` is scraped over real HTTP. Counters, the active
//! gauge across a restart, the call-latency histogram, one recorder per server,
//! and the `sagad serve` flags.

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sagad::{engine::EngineConfig, proto::v1 as pb, saga::SagaStatus};
use tonic::Code;

use crate::common::*;

const DEF: &str = "order-fulfillment";

fn fwd(r: &pb::StepRequest) -> bool {
    r.action == pb::Action::Forward as i32
}

fn with_metrics() -> Extras {
    Extras {
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Extras::default()
    }
}

async fn metrics_server() -> TestServer {
    TestServer::start_with_extras(
        vec![order_fulfillment()],
        EngineConfig::default(),
        with_metrics(),
    )
    .await
}

/// A series value, or 0 when the series is absent; fails on a malformed scrape.
fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or(0.0)
}

fn series(name: &str, labels: &[(&str, &str)]) -> String {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", labels.join(","))
}

fn attempts(participant: &str, action: &str, outcome: &str) -> String {
    series(
        "sagad_step_attempts_total",
        &[
            ("participant", participant),
            ("action", action),
            ("outcome", outcome),
        ],
    )
}

fn finished(state: &str) -> String {
    series(
        "sagad_sagas_finished_total",
        &[("definition", DEF), ("state", state)],
    )
}

fn active(state: &str) -> String {
    series(
        "sagad_sagas_active",
        &[("definition", DEF), ("state", state)],
    )
}

#[tokio::test]
async fn a_scrape_counts_completed_compensated_and_failed_sagas() {
    let server = metrics_server().await;
    let metrics_addr = server.metrics_addr.expect("metrics are served");
    // The payload decides the story: "ok" completes; "decline" has shipping say
    // no (compensated); "stuck" also has the refund say no (FAILED).
    let shop = serve(FakeParticipant::new(|r| {
        let payload = String::from_utf8_lossy(&r.payload).to_string();
        match (fwd(r), r.step.as_str(), payload.as_str()) {
            (true, "ship-order", "decline" | "stuck") => Answer::Reject("out of stock"),
            (false, "charge-payment", "stuck") => Answer::Reject("refund declined"),
            _ => Answer::Ok,
        }
    }))
    .await;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(3, 3)).await;

    // Before any saga: the FAILED counter already exists at 0, so an alert on
    // its increase sees the first failure.
    let before = scrape(metrics_addr).await;
    let failed = series("sagad_sagas_failed_total", &[("definition", DEF)]);
    assert_eq!(sample(&before, &failed), Some(0.0), "{before}");

    let outcomes = [
        ("ok", pb::SagaState::Completed),
        ("decline", pb::SagaState::Compensated),
        ("stuck", pb::SagaState::Failed),
    ];
    for (payload, expected) in outcomes {
        let saga = start_order(&mut client, payload, true).await;
        assert_eq!(state(&saga), expected, "{payload}");
    }

    let text = scrape(metrics_addr).await;
    let started = series("sagad_sagas_started_total", &[("definition", DEF)]);
    assert_eq!(sample(&text, &started), Some(3.0), "{text}");
    assert_eq!(sample(&text, &finished("completed")), Some(1.0), "{text}");
    assert_eq!(sample(&text, &finished("compensated")), Some(1.0), "{text}");
    assert_eq!(sample(&text, &finished("failed")), Some(1.0), "{text}");
    assert_eq!(sample(&text, &failed), Some(1.0), "{text}");
    let compensations = series(
        "sagad_compensations_started_total",
        &[("definition", DEF), ("cause", "step_failed")],
    );
    assert_eq!(sample(&text, &compensations), Some(2.0), "{text}");
    // Every saga ended: nothing is active, and the gauge says so (not absent).
    assert_eq!(sample(&text, &active("running")), Some(0.0), "{text}");
    assert_eq!(sample(&text, &active("compensating")), Some(0.0), "{text}");

    // Attempts by participant, action and outcome.
    for (participant, action, outcome, n) in [
        ("orders", "forward", "succeeded", 3.0),
        ("payments", "forward", "succeeded", 3.0),
        ("shipping", "forward", "succeeded", 1.0),
        ("shipping", "forward", "rejected", 2.0),
        ("payments", "compensate", "succeeded", 1.0),
        ("payments", "compensate", "rejected", 1.0),
        ("orders", "compensate", "succeeded", 1.0),
    ] {
        assert_eq!(
            value(&text, &attempts(participant, action, outcome)),
            n,
            "{participant} {action} {outcome}: {text}"
        );
    }
    assert_eq!(
        value(&text, &attempts("orders", "compensate", "rejected")),
        0.0
    );

    // The call latency histogram: one observation per call, in buckets.
    assert!(
        text.contains("# TYPE sagad_step_call_duration_seconds histogram"),
        "{text}"
    );
    let calls = |suffix: &str, extra: &[(&str, &str)]| {
        let mut labels = vec![("participant", "payments"), ("action", "forward")];
        labels.extend_from_slice(extra);
        value(
            &text,
            &series(
                &format!("sagad_step_call_duration_seconds{suffix}"),
                &labels,
            ),
        )
    };
    assert_eq!(calls("_count", &[]), 3.0, "{text}");
    assert_eq!(calls("_bucket", &[("le", "+Inf")]), 3.0, "{text}");
    assert!(calls("_sum", &[]) > 0.0, "{text}");

    // The journal: flushes and events, and a flush-size histogram that counts
    // every event the journal made durable.
    let flushes = sample(&text, "sagad_journal_flushes_total").expect("flush counter");
    let events = sample(&text, "sagad_journal_events_total").expect("event counter");
    assert!(flushes >= 1.0 && events >= 1.0, "{text}");
    assert!(
        text.contains("# TYPE sagad_journal_flush_duration_seconds histogram"),
        "{text}"
    );
    assert_eq!(
        sample(&text, "sagad_journal_flush_events_sum"),
        Some(events),
        "{text}"
    );
    assert_eq!(
        sample(&text, "sagad_journal_flush_events_count"),
        Some(flushes),
        "{text}"
    );
    assert!(
        sample(&text, "sagad_recovery_duration_seconds").is_some(),
        "{text}"
    );
}

#[tokio::test]
async fn the_active_gauge_is_right_after_a_restart() {
    let mut server = metrics_server().await;
    let open = Arc::new(AtomicBool::new(false));
    let gate = open.clone();
    // "slow-charge" retries its charge until the gate opens (RUNNING);
    // "slow-refund" is declined at shipping and its refund fails until then
    // (COMPENSATING).
    let shop = serve(FakeParticipant::new(move |r| {
        let payload = String::from_utf8_lossy(&r.payload).to_string();
        let opened = gate.load(Ordering::SeqCst);
        match (fwd(r), r.step.as_str(), payload.as_str()) {
            (true, "charge-payment", "slow-charge") if !opened => {
                Answer::Retry(Some(Duration::from_millis(50)))
            }
            (true, "ship-order", "slow-refund") => Answer::Reject("out of stock"),
            (false, "charge-payment", "slow-refund") if !opened => {
                Answer::Status(Code::Unavailable)
            }
            _ => Answer::Ok,
        }
    }))
    .await;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(10_000, 10_000)).await;
    let running = start_order(&mut client, "slow-charge", false).await;
    let compensating = start_order(&mut client, "slow-refund", false).await;
    poll_until("one saga running and one compensating", || {
        let mut client = client.clone();
        let (a, b) = (running.id.clone(), compensating.id.clone());
        async move {
            let a = get(&mut client, &a).await;
            let b = get(&mut client, &b).await;
            // Past their first retry: the appends that moved the gauge are
            // behind them (it moves just after an append returns).
            (state(&a) == pb::SagaState::Running
                && a.steps[1].forward_attempts >= 2
                && state(&b) == pb::SagaState::Compensating
                && b.steps[1].compensate_attempts >= 2)
                .then_some(())
        }
    })
    .await;
    let text = scrape(server.metrics_addr.unwrap()).await;
    assert_eq!(sample(&text, &active("running")), Some(1.0), "{text}");
    assert_eq!(sample(&text, &active("compensating")), Some(1.0), "{text}");

    server.restart().await;
    until_read_back(server.metrics_addr.unwrap()).await;
    let text = scrape(server.metrics_addr.unwrap()).await;
    assert_eq!(sample(&text, &active("running")), Some(1.0), "{text}");
    assert_eq!(sample(&text, &active("compensating")), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, "sagad_recovery_resumed_sagas"),
        Some(2.0),
        "{text}"
    );
    // Counters start again with the process; the gauge does not.
    assert_eq!(
        value(
            &text,
            &series("sagad_sagas_started_total", &[("definition", DEF)])
        ),
        0.0
    );

    open.store(true, Ordering::SeqCst);
    // The engine's wait answers once the runner is done, metrics included.
    let engine = server.server.as_ref().unwrap().engine();
    let done = engine.wait(running.id.parse().unwrap()).await.unwrap();
    assert_eq!(done.status, SagaStatus::Completed);
    let done = engine.wait(compensating.id.parse().unwrap()).await.unwrap();
    assert_eq!(done.status, SagaStatus::Compensated);
    let text = scrape(server.metrics_addr.unwrap()).await;
    assert_eq!(sample(&text, &active("running")), Some(0.0), "{text}");
    assert_eq!(sample(&text, &active("compensating")), Some(0.0), "{text}");
    assert_eq!(sample(&text, &finished("completed")), Some(1.0), "{text}");
    assert_eq!(sample(&text, &finished("compensated")), Some(1.0), "{text}");
}

#[tokio::test]
async fn two_servers_in_one_process_count_only_their_own_sagas() {
    let a = metrics_server().await;
    let b = metrics_server().await;
    let shop = serve(FakeParticipant::new(|_| Answer::Ok)).await;
    for (server, sagas) in [(&a, 1), (&b, 2)] {
        let mut client = server.client().await;
        register_shop(&mut client, &shop, quick_retry(3, 3)).await;
        for _ in 0..sagas {
            start_order(&mut client, "{}", true).await;
        }
    }
    let started = series("sagad_sagas_started_total", &[("definition", DEF)]);
    let text_a = scrape(a.metrics_addr.unwrap()).await;
    let text_b = scrape(b.metrics_addr.unwrap()).await;
    assert_eq!(sample(&text_a, &started), Some(1.0), "{text_a}");
    assert_eq!(sample(&text_b, &started), Some(2.0), "{text_b}");
    assert_eq!(
        value(&text_a, &attempts("orders", "forward", "succeeded")),
        1.0
    );
    assert_eq!(
        value(&text_b, &attempts("orders", "forward", "succeeded")),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_metrics_settings_are_refused_naming_the_flag() {
    let (code, stderr) = sagad_exit(&["--metrics-listen", "nonsense"], &[]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--metrics-listen") && stderr.contains("nonsense"),
        "{stderr}"
    );

    let (code, stderr) = sagad_exit(&[], &[("SAGAD_METRICS_LISTEN", "here")]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("SAGAD_METRICS_LISTEN"), "{stderr}");

    // An address in use is a start-up error that names the setting.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = taken.local_addr().unwrap();
    let (code, stderr) = sagad_exit(&["--metrics-listen", &addr.to_string()], &[]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("--metrics-listen") && stderr.contains(&addr.to_string()),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sagad_serve_prints_and_serves_its_metrics_address() {
    use std::io::{BufRead, BufReader};

    let dir = tempfile::tempdir().unwrap();
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_sagad"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--sagas")
            .arg(process::sagas_dir())
            .env("SAGAD_LOG", "warn")
            .env_remove("FAILPOINTS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.starts_with("sagad metrics on "))
    });
    let line = tokio::time::timeout(DEADLINE, line).await;
    let scraped = match line {
        Ok(Ok(Some(line))) => {
            let url = line["sagad metrics on ".len()..].trim().to_string();
            let addr: SocketAddr = url
                .strip_prefix("http://")
                .and_then(|u| u.strip_suffix("/metrics"))
                .unwrap()
                .parse()
                .unwrap();
            Some(scrape(addr).await)
        }
        _ => None,
    };
    drop(child);
    let text = scraped.expect("sagad prints its metrics address");
    let failed = series("sagad_sagas_failed_total", &[("definition", DEF)]);
    assert_eq!(sample(&text, &failed), Some(0.0), "{text}");
}
