//! `examples/payments.rs`, the participant the SDK's docs point to, takes the
//! `payments` step of real sagas over gRPC and over HTTP/JSON: a retry it asks
//! for, a refund, a decline.
//!
//! `cargo test` builds the example beside the test binary; a test run that
//! selects only this crate (`--test it`) may not, and then this test fails
//! saying how to build it.

use std::{path::PathBuf, process::Command};

use sagad::proto::v1 as pb;

use crate::common::{
    Client, KillOnDrop, TestServer, get, quick_retry, register_shop, serve_shop_with_carrier_down,
    spawn_announcing, start_order, state, step_states,
};

/// `target/<profile>/examples/payments`, beside `target/<profile>/deps/` where
/// this test binary runs from.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lives in target/<profile>/deps");
    let binary = profile
        .join("examples")
        .join(format!("payments{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "{} is missing: `cargo test` builds it; after a narrower run, build it with `cargo build --example payments`",
        binary.display()
    );
    binary
}

/// Starts the example on free loopback ports with its database in `dir`;
/// its gRPC and HTTP/JSON addresses.
fn start_example(dir: &std::path::Path) -> (KillOnDrop, String, String) {
    let mut command = Command::new(example_binary());
    command
        .args([
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--db",
        ])
        .arg(dir.join("payments-db"));
    let (child, lines) = spawn_announcing(
        command,
        "examples/payments.rs",
        "build it with `cargo build --example payments`",
        3,
    );
    let address = |line: &str, after: &str| {
        line.strip_prefix("payments listening on ")
            .and_then(|rest| rest.split_once(after))
            .map(|(addr, _)| addr.to_string())
            .unwrap_or_else(|| panic!("unexpected line {line:?}"))
    };
    let grpc = address(&lines[0], " (gRPC)");
    let http = address(&lines[2], " (HTTP/JSON)");
    (child, grpc, http)
}

async fn register_payments(
    client: &mut Client,
    protocol: pb::Protocol,
    forward: String,
    compensate: String,
) {
    client
        .register_participant(pb::RegisterParticipantRequest {
            name: "payments".into(),
            protocol: protocol as i32,
            forward_endpoint: forward,
            compensate_endpoint: compensate,
            retry: Some(quick_retry(3, 3)),
            timeout: None,
            ..Default::default()
        })
        .await
        .unwrap();
}

/// Runs an order that completes (its card asks for one retry), one whose
/// shipping fails (the charge is refunded) and one whose card is declined;
/// the first order's charge is number `first_charge`, the refunded one's next.
async fn three_orders(client: &mut Client, first_charge: u32) {
    let done = start_order(
        client,
        r#"{"order_id":"R-1","amount_cents":1250,"card":"flaky"}"#,
        true,
    )
    .await;
    let done = get(client, &done.id).await;
    assert_eq!(state(&done), pb::SagaState::Completed, "{done:?}");
    let charge = &done.steps[1];
    assert_eq!(
        charge.forward_attempts, 2,
        "the flaky card asked for a retry: {charge:?}"
    );
    let output: serde_json::Value = serde_json::from_slice(&charge.output).unwrap();
    assert_eq!(output["charge_id"], format!("ch_{first_charge}"));
    assert_eq!(output["amount_cents"], 1250);

    let undone = start_order(
        client,
        r#"{"order_id":"R-2","amount_cents":700,"carrier":"down"}"#,
        true,
    )
    .await;
    let undone = get(client, &undone.id).await;
    assert_eq!(state(&undone), pb::SagaState::Compensated, "{undone:?}");
    assert_eq!(
        step_states(&undone),
        [
            pb::StepState::Compensated,
            pb::StepState::Compensated,
            pb::StepState::Failed
        ]
    );
    let refunded: serde_json::Value = serde_json::from_slice(&undone.steps[1].output).unwrap();
    assert_eq!(refunded["charge_id"], format!("ch_{}", first_charge + 1));

    let declined = start_order(client, r#"{"card":"declined"}"#, true).await;
    let declined = get(client, &declined.id).await;
    assert_eq!(state(&declined), pb::SagaState::Compensated);
    assert!(
        declined.steps[1]
            .last_error
            .contains("card declined by the issuer"),
        "{}",
        declined.steps[1].last_error
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_example_participant_serves_sagas_over_grpc_and_http() {
    let dir = tempfile::tempdir().unwrap();
    let (_example, grpc, http) = start_example(dir.path());
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let shop = serve_shop_with_carrier_down().await;
    register_shop(&mut client, &shop, quick_retry(3, 3)).await;

    register_payments(
        &mut client,
        pb::Protocol::Grpc,
        format!("http://{grpc}/shop.Payments/Charge"),
        format!("http://{grpc}/shop.Payments/Refund"),
    )
    .await;
    three_orders(&mut client, 1).await;

    // The same handlers and barrier over HTTP/JSON: the charge numbers go on.
    register_payments(
        &mut client,
        pb::Protocol::Http,
        format!("http://{http}/forward"),
        format!("http://{http}/compensate"),
    )
    .await;
    three_orders(&mut client, 3).await;
}
