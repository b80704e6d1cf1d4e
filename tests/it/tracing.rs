//! Tracing end to end: the W3C `traceparent` a saga is started with reaches
//! every participant call (forward and compensate), durably across a restart;
//! sagas started without one (or with an invalid one) still get one trace per
//! saga; and `sagad serve --log-format json` writes JSON lines that carry the
//! saga and attempt spans.

use std::{
    collections::HashSet,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use sagad::proto::v1::{self as pb, coordinator_client::CoordinatorClient};
use serde_json::Value;
use tonic::Code;

use crate::common::{process::SagadProcess, *};

/// The W3C specification's example.
const INCOMING: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const INCOMING_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const INCOMING_PARENT: &str = "00f067aa0ba902b7";
const TRACESTATE: &str = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";

/// A `traceparent` a participant received, checked against the W3C format on
/// its own terms (not with sagad's parser).
#[derive(Debug)]
struct Received {
    trace_id: String,
    span_id: String,
    flags: String,
}

fn parse_w3c(header: &str) -> Received {
    let fields: Vec<&str> = header.split('-').collect();
    let lower_hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    assert_eq!(fields.len(), 4, "{header}");
    assert_eq!(fields[0], "00", "version 00: {header}");
    assert!(lower_hex(fields[1], 32), "trace id: {header}");
    assert!(lower_hex(fields[2], 16), "span id: {header}");
    assert!(lower_hex(fields[3], 2), "flags: {header}");
    assert_ne!(fields[1], "0".repeat(32), "zero trace id: {header}");
    assert_ne!(fields[2], "0".repeat(16), "zero span id: {header}");
    Received {
        trace_id: fields[1].into(),
        span_id: fields[2].into(),
        flags: fields[3].into(),
    }
}

/// The calls of one saga, each with its parsed `traceparent`.
fn received(shop: &Served, saga_id: &str) -> Vec<(Call, Received)> {
    shop.fake
        .calls()
        .into_iter()
        .filter(|c| c.saga_id == saga_id)
        .map(|c| {
            let header = c
                .traceparent
                .clone()
                .expect("every call carries a traceparent");
            let parsed = parse_w3c(&header);
            (c, parsed)
        })
        .collect()
}

/// The trace id of a saga started without a traceparent: its id's hex digits.
fn own_trace(saga_id: &str) -> String {
    saga_id.replace('-', "")
}

/// Starts an order-fulfillment saga with the given trace metadata.
async fn start_traced(
    client: &mut Client,
    payload: &str,
    traceparent: Option<&str>,
    tracestate: Option<&str>,
    wait: bool,
) -> pb::Saga {
    let mut request = tonic::Request::new(pb::StartSagaRequest {
        definition: "order-fulfillment".into(),
        payload: payload.as_bytes().to_vec(),
        wait,
        ..Default::default()
    });
    if let Some(value) = traceparent {
        request
            .metadata_mut()
            .insert("traceparent", value.parse().unwrap());
    }
    if let Some(value) = tracestate {
        request
            .metadata_mut()
            .insert("tracestate", value.parse().unwrap());
    }
    client
        .start_saga(request)
        .await
        .expect("a trace header never makes a start fail")
        .into_inner()
        .saga
        .unwrap()
}

/// A shop whose shipping rejects: the saga goes forward, then compensates.
async fn rejecting_shop(client: &mut Client) -> Served {
    let shop = serve(FakeParticipant::new(|r| {
        if r.action == pb::Action::Forward as i32 && r.step == "ship-order" {
            Answer::Reject("no courier")
        } else {
            Answer::Ok
        }
    }))
    .await;
    register_shop(client, &shop, quick_retry(3, 3)).await;
    shop
}

#[tokio::test]
async fn the_incoming_traceparent_reaches_every_forward_and_compensate_call() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let shop = rejecting_shop(&mut client).await;

    let saga = start_traced(&mut client, "{}", Some(INCOMING), Some(TRACESTATE), true).await;
    assert_eq!(state(&saga), pb::SagaState::Compensated);
    assert_eq!(saga.trace_id, INCOMING_TRACE, "GetSaga names the trace");
    let calls = received(&shop, &saga.id);
    assert_eq!(
        shop.fake.trace(&saga.id),
        [
            "F:validate-order#1",
            "F:charge-payment#1",
            "F:ship-order#1",
            "C:charge-payment#1",
            "C:validate-order#1"
        ]
    );
    let mut spans = HashSet::new();
    for (call, tp) in &calls {
        assert_eq!(tp.trace_id, INCOMING_TRACE, "{call:?}");
        assert_eq!(tp.flags, "01", "the caller's flags are passed on: {call:?}");
        assert_ne!(tp.span_id, INCOMING_PARENT, "each call is its own span");
        assert!(
            spans.insert(tp.span_id.clone()),
            "span ids are distinct: {calls:?}"
        );
        assert_eq!(call.tracestate.as_deref(), Some(TRACESTATE), "{call:?}");
    }
    assert_eq!(get(&mut client, &saga.id).await.trace_id, INCOMING_TRACE);

    // An unsampled trace stays unsampled; no tracestate is invented.
    let unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    let saga = start_traced(&mut client, "{}", Some(unsampled), None, true).await;
    let calls = received(&shop, &saga.id);
    assert_eq!(calls.len(), 5);
    for (call, tp) in &calls {
        assert_eq!(tp.trace_id, "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(tp.flags, "00");
        assert_eq!(call.tracestate, None);
    }
}

#[tokio::test]
async fn without_a_traceparent_each_saga_has_a_trace_of_its_own() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let shop = rejecting_shop(&mut client).await;

    let mut traces = HashSet::new();
    for i in 0..3 {
        let saga = start_traced(&mut client, &format!("{{\"n\":{i}}}"), None, None, true).await;
        let calls = received(&shop, &saga.id);
        assert_eq!(calls.len(), 5, "forward and compensate calls: {calls:?}");
        let ids: HashSet<_> = calls.iter().map(|(_, tp)| tp.trace_id.clone()).collect();
        assert_eq!(ids.len(), 1, "one trace per saga: {calls:?}");
        let trace = ids.into_iter().next().unwrap();
        assert_eq!(trace, own_trace(&saga.id), "the saga id names the trace");
        assert_eq!(saga.trace_id, trace);
        let spans: HashSet<_> = calls.iter().map(|(_, tp)| tp.span_id.clone()).collect();
        assert_eq!(spans.len(), 5, "a new span id per call");
        assert!(
            calls
                .iter()
                .all(|(c, tp)| tp.flags == "01" && c.tracestate.is_none())
        );
        assert!(traces.insert(trace), "sagas do not share traces");
    }
}

#[tokio::test]
async fn an_invalid_traceparent_is_ignored_not_refused() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let shop = serve(FakeParticipant::new(|_| Answer::Ok)).await;
    register_shop(&mut client, &shop, quick_retry(3, 3)).await;

    for header in [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "not a traceparent",
    ] {
        let saga = start_traced(&mut client, "{}", Some(header), Some(TRACESTATE), true).await;
        assert_eq!(state(&saga), pb::SagaState::Completed, "{header}");
        assert_eq!(saga.trace_id, own_trace(&saga.id), "{header}");
        for (call, tp) in received(&shop, &saga.id) {
            assert_eq!(tp.trace_id, own_trace(&saga.id), "{header}: {call:?}");
            // A tracestate belongs to the traceparent it came with.
            assert_eq!(call.tracestate, None, "{header}");
        }
    }
}

#[tokio::test]
async fn a_saga_resumed_after_a_restart_keeps_its_trace() {
    let mut server = TestServer::start().await;
    let mut client = server.client().await;
    // Validation fails until the coordinator has restarted: every saga is
    // still running, in backoff, when it stops.
    let restarted = Arc::new(AtomicBool::new(false));
    let shop = serve(FakeParticipant::new({
        let restarted = restarted.clone();
        move |r| {
            if r.step == "validate-order" && !restarted.load(Ordering::SeqCst) {
                Answer::Status(Code::Unavailable)
            } else {
                Answer::Ok
            }
        }
    }))
    .await;
    register_shop(&mut client, &shop, quick_retry(1000, 3)).await;
    let traced = start_traced(&mut client, "{}", Some(INCOMING), Some(TRACESTATE), false).await;
    let untraced = start_traced(&mut client, "{}", None, None, false).await;
    poll_until("both sagas to have failed an attempt", || {
        let calls = shop.fake.calls();
        let started = [traced.id.clone(), untraced.id.clone()];
        async move {
            started
                .iter()
                .all(|id| calls.iter().any(|c| &c.saga_id == id))
                .then_some(())
        }
    })
    .await;

    server.restart().await;
    let resumed_at = Instant::now();
    restarted.store(true, Ordering::SeqCst);
    let mut client = server.client().await;
    for (saga, trace) in [
        (&traced, INCOMING_TRACE.to_string()),
        (&untraced, own_trace(&untraced.id)),
    ] {
        let done = until_terminal(&mut client, &saga.id).await;
        assert_eq!(state(&done), pb::SagaState::Completed);
        assert_eq!(done.trace_id, trace, "the journal kept the trace");
        let calls = received(&shop, &saga.id);
        let after = calls
            .iter()
            .filter(|(c, _)| c.arrived >= resumed_at)
            .count();
        assert!(after >= 3, "the saga ran on after the restart: {calls:?}");
        for (call, tp) in &calls {
            assert_eq!(tp.trace_id, trace, "{call:?}");
        }
        if saga.id == traced.id {
            assert!(
                calls
                    .iter()
                    .all(|(c, _)| c.tracestate.as_deref() == Some(TRACESTATE)),
                "tracestate survives the restart too"
            );
        }
    }
}

/// Registers the shop at a running process and runs one saga there.
async fn run_one_saga(addr: std::net::SocketAddr) -> (Served, pb::Saga) {
    let mut client = CoordinatorClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let shop = serve(FakeParticipant::new(|_| Answer::Ok)).await;
    register_shop(&mut client, &shop, quick_retry(3, 3)).await;
    let saga = start_traced(&mut client, "{}", Some(INCOMING), None, true).await;
    assert_eq!(state(&saga), pb::SagaState::Completed);
    (shop, saga)
}

/// Every stderr line, parsed: each one must be a JSON object.
fn json_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}\n{stderr}"));
            assert!(value.is_object(), "{line}");
            for key in ["timestamp", "level", "target"] {
                assert!(value.get(key).is_some(), "no {key}: {line}");
            }
            value
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_writes_json_log_lines_with_the_saga_and_attempt_spans() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_path_buf();
    let process = tokio::task::spawn_blocking(move || {
        SagadProcess::spawn_with(
            &data_dir,
            &["--log-format", "json"],
            &[("SAGAD_LOG", "info,sagad=debug")],
        )
    })
    .await
    .unwrap();
    let (_shop, saga) = run_one_saga(process.addr).await;
    let (status, stderr) = tokio::task::spawn_blocking(move || process.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}\n{stderr}");
    let lines = json_lines(&stderr);

    let serving = lines
        .iter()
        .find(|l| l["message"] == "serving")
        .unwrap_or_else(|| panic!("a 'serving' line:\n{stderr}"));
    assert_eq!(serving["level"], "INFO");
    assert!(
        serving["addr"].is_string(),
        "event fields are top-level: {serving}"
    );

    // Every call logs "calling" inside its saga and attempt spans.
    let calling: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "calling" && l["spans"][0]["saga_id"] == saga.id.as_str())
        .collect();
    assert_eq!(calling.len(), 3, "one per forward call:\n{stderr}");
    let spans = &calling[0]["spans"];
    assert_eq!(spans[0]["name"], "saga");
    assert_eq!(spans[0]["definition"], "order-fulfillment");
    assert_eq!(spans[0]["trace_id"], INCOMING_TRACE);
    assert_eq!(spans[1]["name"], "attempt");
    assert_eq!(spans[1]["step"], "validate-order");
    assert_eq!(spans[1]["action"], "forward");
    assert_eq!(spans[1]["attempt"], 1);
    assert_eq!(spans[1]["participant"], "orders");
    assert!(
        lines.iter().any(|l| l["message"] == "stopped cleanly"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_log_format_can_come_from_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sagad.toml");
    std::fs::write(&config, "log_format = \"json\"\n").unwrap();
    let data_dir = dir.path().join("data");
    let process = tokio::task::spawn_blocking(move || {
        SagadProcess::spawn_with(
            &data_dir,
            &["--config", config.to_str().unwrap()],
            &[("SAGAD_LOG", "info")],
        )
    })
    .await
    .unwrap();
    let (status, stderr) = tokio::task::spawn_blocking(move || process.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}\n{stderr}");
    let lines = json_lines(&stderr);
    assert!(lines.iter().any(|l| l["message"] == "serving"), "{stderr}");
}

/// Runs `sagad serve` with `args` that must be refused before it starts.
fn refused(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_sagad"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(args)
        .env_remove("SAGAD_LOG_FORMAT")
        .env_remove("SAGAD_OTLP_ENDPOINT");
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().expect("run sagad");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing is written when the configuration is refused"
    );
    (output.status.code(), stderr)
}

#[test]
fn an_unknown_log_format_is_refused_naming_where_it_came_from() {
    let (code, stderr) = refused(&["--log-format", "xml"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--log-format"), "{stderr}");
    assert!(stderr.contains("text or json"), "{stderr}");

    let (code, stderr) = refused(&[], &[("SAGAD_LOG_FORMAT", "xml")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.starts_with("sagad: SAGAD_LOG_FORMAT"), "{stderr}");
}

#[cfg(not(feature = "otlp"))]
#[test]
fn otlp_export_without_the_feature_is_refused_saying_how_to_get_it() {
    let (code, stderr) = refused(&["--otlp-endpoint", "http://127.0.0.1:4317"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--otlp-endpoint"), "{stderr}");
    assert!(stderr.contains("rebuild with --features otlp"), "{stderr}");

    let (code, stderr) = refused(&[], &[("SAGAD_OTLP_ENDPOINT", "http://127.0.0.1:4317")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("SAGAD_OTLP_ENDPOINT"), "{stderr}");
}

/// With the `otlp` feature: a fake OTLP collector receives the saga and
/// attempt spans, in the caller's trace, and the participants' parent span ids
/// are the attempts' exported span ids.
#[cfg(feature = "otlp")]
mod otlp {
    use std::sync::Mutex;

    use opentelemetry_proto::tonic::{
        collector::trace::v1::{
            ExportTraceServiceRequest, ExportTraceServiceResponse,
            trace_service_server::{TraceService, TraceServiceServer},
        },
        common::v1::any_value::Value as AnyValue,
        trace::v1::Span,
    };
    use tokio::net::TcpListener;
    use tonic::{Request, Response, Status, transport::server::TcpIncoming};

    use super::*;

    /// Every span exported to it, in arrival order.
    #[derive(Clone, Default)]
    struct Collector {
        spans: Arc<Mutex<Vec<Span>>>,
    }

    #[tonic::async_trait]
    impl TraceService for Collector {
        async fn export(
            &self,
            request: Request<ExportTraceServiceRequest>,
        ) -> Result<Response<ExportTraceServiceResponse>, Status> {
            let mut spans = self.spans.lock().unwrap();
            for resource in request.into_inner().resource_spans {
                for scope in resource.scope_spans {
                    spans.extend(scope.spans);
                }
            }
            Ok(Response::new(ExportTraceServiceResponse::default()))
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn attribute(span: &Span, key: &str) -> Option<String> {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(s) => Some(s.clone()),
                AnyValue::IntValue(i) => Some(i.to_string()),
                _ => None,
            })
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn spans_are_exported_in_the_sagas_trace_and_participants_nest_under_attempts() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let collector_addr = listener.local_addr().unwrap();
        let collector = Collector::default();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(collector.clone()))
                .serve_with_incoming(TcpIncoming::from(listener)),
        );

        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_path_buf();
        let endpoint = format!("http://{collector_addr}");
        let process = tokio::task::spawn_blocking(move || {
            SagadProcess::spawn_with(&data_dir, &["--otlp-endpoint", &endpoint], &[])
        })
        .await
        .unwrap();
        let mut client = CoordinatorClient::connect(format!("http://{}", process.addr))
            .await
            .unwrap();
        let shop = rejecting_shop(&mut client).await;
        let traced = start_traced(&mut client, "{}", Some(INCOMING), None, true).await;
        let untraced = start_traced(&mut client, "{}", None, None, true).await;
        // A clean stop exports what is still batched.
        let (status, stderr) = tokio::task::spawn_blocking(move || process.terminate())
            .await
            .unwrap();
        assert!(status.success(), "{status:?}\n{stderr}");

        let spans = collector.spans.lock().unwrap().clone();
        // A saga started without a trace hangs under a root span id derived
        // from its id (the id's last 8 bytes), the same after any restart.
        let own_root = own_trace(&untraced.id)[16..].to_string();
        for (saga, trace, parent) in [
            (
                &traced,
                INCOMING_TRACE.to_string(),
                INCOMING_PARENT.to_string(),
            ),
            (&untraced, own_trace(&untraced.id), own_root),
        ] {
            let saga_spans: Vec<&Span> = spans
                .iter()
                .filter(|s| {
                    s.name == "saga" && attribute(s, "saga_id").as_deref() == Some(&saga.id)
                })
                .collect();
            assert_eq!(saga_spans.len(), 1, "one saga span: {spans:#?}");
            let saga_span = saga_spans[0];
            assert_eq!(hex(&saga_span.trace_id), trace);
            assert_eq!(
                hex(&saga_span.parent_span_id),
                parent,
                "the caller's span is the parent"
            );
            let attempts: Vec<&Span> = spans
                .iter()
                .filter(|s| s.name == "attempt" && s.parent_span_id == saga_span.span_id)
                .collect();
            assert_eq!(
                attempts.len(),
                5,
                "forward and compensate attempts: {spans:#?}"
            );
            assert!(attempts.iter().all(|s| hex(&s.trace_id) == trace));
            assert!(
                attempts
                    .iter()
                    .any(|s| attribute(s, "action").as_deref() == Some("compensate"))
            );
            // What each participant was told is its parent is an exported attempt.
            let exported: HashSet<String> = attempts.iter().map(|s| hex(&s.span_id)).collect();
            let told: HashSet<String> = received(&shop, &saga.id)
                .into_iter()
                .map(|(_, tp)| tp.span_id)
                .collect();
            assert_eq!(told, exported);
        }
    }
}
