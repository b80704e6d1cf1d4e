//! Data flow between steps end to end (issue 19): a step's input built from
//! JSON Pointers into the payload and earlier outputs, journaled before its
//! first call, and sent unchanged by every attempt, after a restart, and to
//! its compensation; a pointer to nothing rejects the step without a call.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use sagad::{engine::EngineConfig, proto::v1 as pb, saga::definition};
use serde_json::{Value, json};
use tonic::Code;

use crate::common::*;

const PRICED: &str = r#"
name = "priced-order"

[[steps]]
name = "validate-order"
participant = "orders"

[[steps]]
name = "charge-payment"
participant = "payments"
[steps.input]
amount = "/steps/validate-order/output/total"
order = "/payload/order_id"

[[steps]]
name = "ship-order"
participant = "shipping"
"#;

fn payloads(shop: &Served, saga: &str, step: &str, compensate: bool) -> Vec<Value> {
    shop.fake
        .calls()
        .iter()
        .filter(|c| c.saga_id == saga && c.step == step && c.compensate == compensate)
        .map(|c| serde_json::from_slice(&c.payload).unwrap())
        .collect()
}

#[tokio::test]
async fn a_mapped_input_is_sent_unchanged_by_every_attempt_a_restart_and_the_compensation() {
    let priced = definition::parse_definition(Path::new("priced-order.toml"), PRICED).unwrap();
    let mut server = TestServer::start_with(vec![priced], EngineConfig::default()).await;
    // The card service fails until the test lets it through.
    let card_down = Arc::new(AtomicBool::new(true));
    let down = card_down.clone();
    let shop = serve(FakeParticipant::new(move |r| {
        let forward = r.action == pb::Action::Forward as i32;
        let text = String::from_utf8_lossy(&r.payload).to_string();
        match r.step.as_str() {
            "validate-order" if forward => Answer::OkWith(r#"{"total":42,"currency":"EUR"}"#),
            "charge-payment" if forward && down.load(Ordering::SeqCst) => Answer::Retry(None),
            "ship-order" if forward && text.contains("no-carrier") => Answer::Reject("no carrier"),
            _ => Answer::Ok,
        }
    }))
    .await;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(1_000, 3)).await;

    let saga = start_definition(&mut client, "priced-order", r#"{"order_id":"A-1"}"#, false).await;
    poll_until("two attempts of charge-payment", || {
        let n = payloads(&shop, &saga.id, "charge-payment", false).len();
        async move { (n >= 2).then_some(()) }
    })
    .await;
    drop(client);
    server.restart().await;
    let before_restart = payloads(&shop, &saga.id, "charge-payment", false).len();
    card_down.store(false, Ordering::SeqCst);
    let mut client = server.client().await;
    let done = until_terminal(&mut client, &saga.id).await;
    assert_eq!(state(&done), pb::SagaState::Completed);

    let sent = payloads(&shop, &saga.id, "charge-payment", false);
    assert!(
        sent.len() > before_restart,
        "attempts after the restart too"
    );
    for payload in &sent {
        assert_eq!(payload, &json!({"amount": 42, "order": "A-1"}));
    }
    // Unmapped steps get the saga's payload as it is.
    assert_eq!(
        payloads(&shop, &saga.id, "ship-order", false),
        [json!({"order_id": "A-1"})]
    );
    let charge = &done.steps[1];
    assert_eq!(
        serde_json::from_slice::<Value>(&charge.input).unwrap(),
        json!({"amount": 42, "order": "A-1"})
    );
    assert_eq!(
        charge.input_mapping.get("amount").map(String::as_str),
        Some("/steps/validate-order/output/total")
    );
    let kinds: Vec<&str> = watched(&mut client, &saga.id)
        .await
        .iter()
        .map(event_kind)
        .collect();
    let built = kinds
        .iter()
        .position(|k| *k == "input")
        .expect("InputResolved");
    assert_eq!(kinds[built + 1], "attempt");
    assert_eq!(kinds.iter().filter(|k| **k == "input").count(), 1);

    // The shipment rejected: the charge's compensation gets the charge's input.
    let turned = start_definition(
        &mut client,
        "priced-order",
        r#"{"order_id":"A-2","note":"no-carrier"}"#,
        true,
    )
    .await;
    assert_eq!(state(&turned), pb::SagaState::Compensated);
    assert_eq!(
        payloads(&shop, &turned.id, "charge-payment", true),
        [json!({"amount": 42, "order": "A-2"})]
    );

    // The offline tools read the new events: the check folds every saga,
    // the export writes the built input.
    drop(client);
    server.stop().await;
    let data_dir = server.data_dir.to_str().unwrap().to_string();
    let checked = sagad(&["journal", "check", "--data-dir", &data_dir], &[]).await;
    let out = text(&checked.stdout);
    assert!(
        checked.status.success() && out.contains("journal OK"),
        "{out}"
    );
    let exported = sagad(&["export", "--data-dir", &data_dir], &[]).await;
    let out = text(&exported.stdout);
    assert!(exported.status.success(), "{out}");
    assert!(
        out.contains(r#""input_resolved""#) && out.contains(r#""amount":42"#),
        "{out}"
    );
}

#[tokio::test]
async fn a_pointer_to_nothing_rejects_the_step_without_calling_it() {
    let priced = definition::parse_definition(Path::new("priced-order.toml"), PRICED).unwrap();
    let server = TestServer::start_with(vec![priced], EngineConfig::default()).await;
    let shop = serve(FakeParticipant::new(|r| match r.step.as_str() {
        "validate-order" => Answer::OkWith(r#"{"total":42}"#),
        _ => Answer::Ok,
    }))
    .await;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(3, 3)).await;

    // No order_id in the payload.
    let saga = start_definition(&mut client, "priced-order", r#"{"order":"B-1"}"#, true).await;
    assert_eq!(state(&saga), pb::SagaState::Compensated);
    assert_eq!(
        shop.fake.trace(&saga.id),
        ["F:validate-order#1", "C:validate-order#1"]
    );
    assert!(
        saga.error.contains("step 'charge-payment' was rejected")
            && saga
                .error
                .contains("pointer '/payload/order_id' resolves to nothing"),
        "{}",
        saga.error
    );
    assert_eq!(
        step_states(&saga),
        [
            pb::StepState::Compensated,
            pb::StepState::Failed,
            pb::StepState::Skipped
        ]
    );
}

#[tokio::test]
async fn inline_steps_map_inputs_and_a_bad_pointer_is_refused() {
    let server = TestServer::start().await;
    let shop = serve(FakeParticipant::new(|r| match r.step.as_str() {
        "quote" => Answer::OkWith(r#"{"price":{"net":10}}"#),
        _ => Answer::Ok,
    }))
    .await;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(3, 3)).await;
    let steps = |pointer: &str| {
        vec![
            pb::StepDefinition {
                name: "quote".into(),
                participant: "orders".into(),
                ..Default::default()
            },
            pb::StepDefinition {
                name: "pay".into(),
                participant: "payments".into(),
                input: [("net".to_string(), pointer.to_string())].into(),
                ..Default::default()
            },
        ]
    };
    let request = pb::StartSagaRequest {
        steps: steps("/steps/quote/output/price/net"),
        payload: b"{}".to_vec(),
        wait: true,
        ..Default::default()
    };
    let saga = start_request(&mut client, request).await;
    assert_eq!(state(&saga), pb::SagaState::Completed);
    assert_eq!(
        payloads(&shop, &saga.id, "pay", false),
        [json!({"net": 10})]
    );

    let err = client
        .start_saga(pb::StartSagaRequest {
            steps: steps("/steps/pay/output"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(
        err.message().contains("step 'pay' input field 'net'")
            && err.message().contains("a step cannot read its own output"),
        "{}",
        err.message()
    );
}
