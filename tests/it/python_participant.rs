//! The HTTP contract is language-neutral: `examples/python/payments.py`, a
//! participant written with nothing but Python's standard library, takes the
//! `payments` step of real sagas beside gRPC participants, and its SQLite
//! barrier holds the three traps (a repeat, a compensation before its forward,
//! a forward after its compensation).
//!
//! python3 must be installed: without it this test fails, saying so.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::{client::legacy::Client as HttpClient, rt::TokioExecutor};
use sagad::{
    participant::http::wire::call_body,
    proto::v1 as pb,
    saga::{Action, SagaId},
};

use crate::common::{
    KillOnDrop, TestServer, get, quick_retry, register_shop, serve_shop_with_carrier_down,
    spawn_announcing, start_order, state, step_states,
};

/// Starts the example on a free loopback port with its database in `dir`.
fn start_python(dir: &Path) -> (KillOnDrop, SocketAddr) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python/payments.py");
    let mut command = Command::new("python3");
    command
        .arg(&script)
        .args(["--listen", "127.0.0.1:0", "--db"])
        .arg(dir.join("payments.sqlite3"))
        // Its access log would only interleave with the test output.
        .stderr(Stdio::null());
    let (child, lines) = spawn_announcing(
        command,
        "examples/python/payments.py with python3",
        "install python3 (e.g. `apt-get install python3`) and run it again",
        1,
    );
    let addr = lines[0]
        .strip_prefix("payments listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {:?}", lines[0]))
        .parse()
        .unwrap();
    (child, addr)
}

/// POSTs `body` to `url`; the status and the JSON answered.
async fn post(url: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
    let client = HttpClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = http::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let answer = client.request(request).await.unwrap();
    let status = answer.status().as_u16();
    let body = answer.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

async fn charges(addr: SocketAddr) -> Vec<serde_json::Value> {
    let client = HttpClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let answer = client
        .get(format!("http://{addr}/charges").parse().unwrap())
        .await
        .unwrap();
    let body = answer.into_body().collect().await.unwrap().to_bytes();
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
    value["charges"].as_array().unwrap().clone()
}

/// A call body as sagad would send it for `action` of `charge-payment`.
fn call(saga: &str, action: Action, payload: &[u8]) -> Vec<u8> {
    let key = format!("{saga}/charge-payment/{}", action_name(action));
    call_body(
        saga,
        "order-fulfillment",
        "charge-payment",
        action,
        1,
        &key,
        payload,
        &[],
    )
}

fn action_name(action: Action) -> &'static str {
    sagad::participant::http::wire::action_name(action)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_participant_completes_compensates_and_keeps_its_barrier() {
    let dir = tempfile::tempdir().unwrap();
    let (_python, python) = start_python(dir.path());
    let server = TestServer::start().await;
    let mut client = server.client().await;

    // orders and shipping over gRPC; shipping is down for carrier "down".
    let shop = serve_shop_with_carrier_down().await;
    register_shop(&mut client, &shop, quick_retry(3, 3)).await;
    // payments over HTTP/JSON, at the Python example.
    client
        .register_participant(pb::RegisterParticipantRequest {
            name: "payments".into(),
            protocol: pb::Protocol::Http as i32,
            forward_endpoint: format!("http://{python}/charge"),
            compensate_endpoint: format!("http://{python}/refund"),
            retry: Some(quick_retry(3, 3)),
            timeout: None,
            ..Default::default()
        })
        .await
        .unwrap();

    // 1. Completes; the first charge attempt asks to retry after 1 s.
    let done = start_order(
        &mut client,
        r#"{"order_id":"P-1","amount_cents":1250,"card":"flaky"}"#,
        true,
    )
    .await;
    let done = get(&mut client, &done.id).await;
    assert_eq!(state(&done), pb::SagaState::Completed, "{done:?}");
    let charge = &done.steps[1];
    assert_eq!(charge.forward_attempts, 2, "{charge:?}");
    let output: serde_json::Value = serde_json::from_slice(&charge.output).unwrap();
    assert_eq!(output["charge"], "ch_1");
    assert_eq!(output["amount_cents"], 1250);

    // 2. Shipping says no: the charge is refunded by the Python participant.
    let undone = start_order(
        &mut client,
        r#"{"order_id":"P-2","amount_cents":700,"carrier":"down"}"#,
        true,
    )
    .await;
    let undone = get(&mut client, &undone.id).await;
    assert_eq!(state(&undone), pb::SagaState::Compensated, "{undone:?}");
    assert_eq!(
        step_states(&undone),
        [
            pb::StepState::Compensated,
            pb::StepState::Compensated,
            pb::StepState::Failed
        ]
    );

    // A declined card is a rejection (409): nothing charged, nothing refunded.
    let declined = start_order(&mut client, r#"{"card":"declined"}"#, true).await;
    let declined = get(&mut client, &declined.id).await;
    assert_eq!(state(&declined), pb::SagaState::Compensated);
    assert!(
        declined.steps[1]
            .last_error
            .contains("HTTP 409 Conflict: card declined by the issuer"),
        "{}",
        declined.steps[1].last_error
    );

    let net: Vec<(String, i64)> = charges(python)
        .await
        .iter()
        .map(|c| {
            (
                c["saga_id"].as_str().unwrap().to_string(),
                c["refunded"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(net, [(done.id.clone(), 0), (undone.id.clone(), 1)]);

    // The barrier, called directly as sagad would call it.
    // A duplicate delivery of saga 1's charge: the first answer, no new charge.
    let payload = br#"{"order_id":"P-1","amount_cents":1250}"#;
    let (status, answer) = post(
        &format!("http://{python}/charge"),
        call(&done.id, Action::Forward, payload),
    )
    .await;
    assert_eq!((status, &answer["output"]["charge"]), (200, &"ch_1".into()));
    // A compensation whose forward never ran: nothing to undo, and OK...
    let late = SagaId::generate().to_string();
    let (status, answer) = post(
        &format!("http://{python}/refund"),
        call(&late, Action::Compensate, payload),
    )
    .await;
    assert_eq!(
        (status, &answer["reason"]),
        (200, &"nothing to undo".into())
    );
    // ...and the forward that arrives after it does nothing and is rejected.
    let (status, answer) = post(
        &format!("http://{python}/charge"),
        call(&late, Action::Forward, payload),
    )
    .await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(charges(python).await.len(), 2, "still two charges");
}
