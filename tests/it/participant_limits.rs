//! Participant limits end to end (issue 19): `max_in_flight` and `rate` in
//! the registration, held whatever the number of sagas (checked from the
//! participant's own log, with generous bounds: never a timed assertion on
//! the coordinator), shown in the metrics, kept across a restart, and
//! refused when malformed.

use std::time::{Duration, Instant};

use sagad::{engine::EngineConfig, proto::v1 as pb};
use tonic::Code;

use crate::common::*;

const SAGAS: usize = 8;

/// Registers `name` at the served fake with `limits`.
async fn register_limited(
    client: &mut Client,
    shop: &Served,
    name: &str,
    max_in_flight: u32,
    rate: &str,
) -> Result<pb::Participant, tonic::Status> {
    client
        .register_participant(pb::RegisterParticipantRequest {
            name: name.into(),
            forward_endpoint: shop.forward_url(),
            compensate_endpoint: shop.compensate_url(),
            retry: Some(quick_retry(3, 3)),
            max_in_flight,
            rate: rate.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

/// The most calls of `step` the participant had open at once, by its log.
fn most_at_once(calls: &[Call], step: &str) -> usize {
    let spans: Vec<(Instant, Instant)> = calls
        .iter()
        .filter(|c| c.step == step && !c.compensate)
        .map(|c| (c.arrived, c.answered.expect("every call was answered")))
        .collect();
    spans
        .iter()
        .map(|(arrived, _)| {
            spans
                .iter()
                .filter(|(a, answered)| a <= arrived && arrived < answered)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_whatever_the_number_of_sagas_and_survive_a_restart() {
    let extras = Extras {
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Extras::default()
    };
    let mut server =
        TestServer::start_with_extras(vec![order_fulfillment()], EngineConfig::default(), extras)
            .await;
    // Each payment takes a while, so that calls would pile up unlimited.
    let shop = serve(FakeParticipant::new(|r| match r.step.as_str() {
        "charge-payment" => Answer::Slow(Duration::from_millis(150), Box::new(Answer::Ok)),
        _ => Answer::Ok,
    }))
    .await;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(3, 3)).await;
    register_limited(&mut client, &shop, "payments", 2, "")
        .await
        .unwrap();
    let shipping = register_limited(&mut client, &shop, "shipping", 0, "5/s")
        .await
        .unwrap();
    assert_eq!((shipping.max_in_flight, shipping.rate.as_str()), (0, "5/s"));

    let mut ids = Vec::new();
    for i in 0..SAGAS {
        let saga = start_order(&mut client, &format!(r#"{{"order":{i}}}"#), false).await;
        ids.push(saga.id);
    }
    for id in &ids {
        let done = until_terminal(&mut client, id).await;
        assert_eq!(
            state(&done),
            pb::SagaState::Completed,
            "waiting never fails a call"
        );
    }
    let calls = shop.fake.calls();
    let most = most_at_once(&calls, "charge-payment");
    assert!(most <= 2, "{most} payments at once");
    // Five a second, evenly spaced: eight shipments span at least 7 gaps of
    // 200 ms as sent; arrival jitter may eat into that, not by 600 ms.
    let mut shipped: Vec<Instant> = calls
        .iter()
        .filter(|c| c.step == "ship-order")
        .map(|c| c.arrived)
        .collect();
    shipped.sort();
    assert_eq!(shipped.len(), SAGAS);
    let span = shipped[SAGAS - 1] - shipped[0];
    assert!(
        span >= Duration::from_millis(800),
        "{SAGAS} shipments in {span:?}"
    );

    let text = scrape(server.metrics_addr.unwrap()).await;
    let waited = text
        .lines()
        .find(|l| {
            l.starts_with("sagad_participant_queue_wait_seconds_count")
                && l.contains("participant=\"payments\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok());
    assert_eq!(
        waited,
        Some(SAGAS as f64),
        "every payment passed the queue\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("sagad_participant_queue_depth")
                && l.contains("participant=\"shipping\"")
                && l.ends_with(" 0")),
        "nothing waits any more\n{text}"
    );

    drop(client);
    server.restart().await;
    let mut client = server.client().await;
    let listed = client
        .list_participants(pb::ListParticipantsRequest {})
        .await
        .unwrap()
        .into_inner()
        .participants;
    let limits = |name: &str| {
        let p = listed.iter().find(|p| p.name == name).unwrap();
        (p.max_in_flight, p.rate.clone())
    };
    assert_eq!(limits("payments"), (2, String::new()));
    assert_eq!(limits("shipping"), (0, "5/s".to_string()));
    assert_eq!(limits("orders"), (0, String::new()));

    // A malformed limit is refused, naming it, and changes nothing.
    for (max, rate, says) in [(0, "fast", "rate 'fast'"), (2_000_000, "", "max_in_flight")] {
        let err = register_limited(&mut client, &shop, "payments", max, rate)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(err.message().contains(says), "{}", err.message());
    }
    let again = client
        .list_participants(pb::ListParticipantsRequest {})
        .await
        .unwrap()
        .into_inner()
        .participants;
    assert_eq!(again, listed);
}
