//! The participant SDK end to end: a real `sagad` process drives sagas
//! through three participants written on `sagad::sdk` (each behind a durable
//! sled barrier in a temp dir), once over gRPC and once over HTTP/JSON, one
//! saga completing and one compensating; the effects the handlers wrote
//! through their barrier's transaction are then read back, and a duplicate
//! delivery over the wire is answered from the barrier without running the
//! handler again.

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicU32, Ordering},
};

use async_trait::async_trait;
use sagad::{
    proto::v1::{
        self as pb, coordinator_client::CoordinatorClient,
        participant_service_client::ParticipantServiceClient,
    },
    sdk::{Handler, Output, Participant, Reject, Request, SledBarrier, SledTx},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Code, transport::server::TcpIncoming};

use crate::common::{
    Client, poll_until, process::SagadProcess, quick_retry, start_order, state, until_terminal,
};

/// A shop step: writes `done` for the saga on forward and `undone` on
/// compensate, through the barrier's transaction; `shipping` refuses a
/// payload with `"ship": "refuse"`.
struct Step {
    role: &'static str,
    forward_runs: AtomicU32,
    compensate_runs: AtomicU32,
}

#[async_trait]
impl Handler<SledBarrier> for Step {
    async fn forward(&self, request: &Request, tx: &mut SledTx<'_>) -> Result<Output, Reject> {
        self.forward_runs.fetch_add(1, Ordering::SeqCst);
        let payload: serde_json::Value = request.payload_json().unwrap_or_default();
        if self.role == "shipping" && payload["ship"] == "refuse" {
            return Err(Reject::rejected("no carrier serves this address"));
        }
        tx.insert(format!("{}/{}", self.role, request.saga_id), "done");
        Ok(Output::json(&serde_json::json!({ "by": self.role })))
    }

    async fn compensate(&self, request: &Request, tx: &mut SledTx<'_>) -> Result<(), Reject> {
        self.compensate_runs.fetch_add(1, Ordering::SeqCst);
        let key = format!("{}/{}", self.role, request.saga_id);
        assert_eq!(tx.get(&key)?.as_deref(), Some(&b"done"[..]), "{key}");
        tx.insert(key, "undone");
        Ok(())
    }
}

type Shop = Participant<SledBarrier, Step>;

fn shop(dir: &std::path::Path) -> Vec<Shop> {
    ["orders", "payments", "shipping"]
        .into_iter()
        .map(|role| {
            let barrier = SledBarrier::open(dir.join(role)).unwrap();
            let step = Step {
                role,
                forward_runs: AtomicU32::new(0),
                compensate_runs: AtomicU32::new(0),
            };
            Participant::new(barrier, step)
        })
        .collect()
}

/// Serves `p` over gRPC until `stop`.
async fn serve_grpc(p: &Shop, stop: &CancellationToken) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(p.grpc())
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener),
                stop.clone().cancelled_owned(),
            ),
    );
    addr
}

/// Serves `p` over HTTP/1.1 until `stop`.
async fn serve_http(p: &Shop, stop: &CancellationToken) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = p.router();
    let stopped = stop.clone().cancelled_owned();
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(stopped)
            .await
    });
    addr
}

async fn register(client: &mut Client, name: &str, protocol: pb::Protocol, addr: SocketAddr) {
    let (forward, compensate) = match protocol {
        pb::Protocol::Http => (
            format!("http://{addr}/forward"),
            format!("http://{addr}/compensate"),
        ),
        _ => (
            format!("http://{addr}/sagad.v1.ParticipantService/Forward"),
            format!("http://{addr}/sagad.v1.ParticipantService/Compensate"),
        ),
    };
    let request = pb::RegisterParticipantRequest {
        name: name.into(),
        protocol: protocol as i32,
        forward_endpoint: forward,
        compensate_endpoint: compensate,
        retry: Some(quick_retry(3, 3)),
        timeout: None,
        ..Default::default()
    };
    poll_until("the coordinator to accept a registration", || {
        let (mut client, request) = (client.clone(), request.clone());
        async move {
            match client.register_participant(request).await {
                Ok(_) => Some(()),
                Err(s) if s.code() == Code::Unavailable => None,
                Err(s) => panic!("RegisterParticipant: {s:?}"),
            }
        }
    })
    .await;
}

fn effect(p: &Shop, saga: &str) -> Option<String> {
    let key = format!("{}/{saga}", p.handler().role);
    p.barrier()
        .get(key)
        .unwrap()
        .map(|v| String::from_utf8(v).unwrap())
}

fn runs(p: &Shop) -> (u32, u32) {
    let h = p.handler();
    (
        h.forward_runs.load(Ordering::SeqCst),
        h.compensate_runs.load(Ordering::SeqCst),
    )
}

async fn one_completes_one_compensates(protocol: pb::Protocol) {
    let dir = tempfile::tempdir().unwrap();
    let sagad = SagadProcess::spawn(&dir.path().join("sagad"), &[]);
    let stop = CancellationToken::new();
    let shop = shop(dir.path());
    let mut client = CoordinatorClient::connect(format!("http://{}", sagad.addr))
        .await
        .unwrap();
    let mut grpc_addrs = Vec::new();
    for p in &shop {
        let addr = match protocol {
            pb::Protocol::Http => serve_http(p, &stop).await,
            _ => serve_grpc(p, &stop).await,
        };
        register(&mut client, p.handler().role, protocol, addr).await;
        grpc_addrs.push(addr);
    }
    let [orders, payments, shipping] = &shop[..] else {
        unreachable!()
    };

    let done = start_order(&mut client, r#"{"order_id":"S-1"}"#, false).await;
    let done = until_terminal(&mut client, &done.id).await;
    assert_eq!(state(&done), pb::SagaState::Completed, "{done:?}");
    for p in &shop {
        assert_eq!(effect(p, &done.id).as_deref(), Some("done"));
        assert_eq!(runs(p), (1, 0));
    }

    let undone = start_order(&mut client, r#"{"order_id":"S-2","ship":"refuse"}"#, false).await;
    let undone = until_terminal(&mut client, &undone.id).await;
    assert_eq!(state(&undone), pb::SagaState::Compensated, "{undone:?}");
    assert_eq!(effect(orders, &undone.id).as_deref(), Some("undone"));
    assert_eq!(effect(payments, &undone.id).as_deref(), Some("undone"));
    assert_eq!(
        effect(shipping, &undone.id),
        None,
        "a rejected step did nothing"
    );
    assert_eq!(runs(orders), (2, 1));
    assert_eq!(runs(payments), (2, 1));
    assert_eq!(runs(shipping), (2, 0));

    if protocol == pb::Protocol::Grpc {
        // A duplicate of the completed saga's charge, as a retry after a lost
        // answer would send it: the first answer, and no second charge.
        let mut again = ParticipantServiceClient::connect(format!("http://{}", grpc_addrs[1]))
            .await
            .unwrap();
        let answer = again
            .forward(pb::StepRequest {
                saga_id: done.id.clone(),
                definition: "order-fulfillment".into(),
                step: "charge-payment".into(),
                action: pb::Action::Forward as i32,
                attempt: 2,
                idempotency_key: format!("{}/charge-payment/forward", done.id),
                payload: br#"{"order_id":"S-1"}"#.to_vec(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.outcome, pb::Outcome::Succeeded as i32);
        assert_eq!(answer.output, br#"{"by":"payments"}"#);
        assert_eq!(runs(payments), (2, 1), "the duplicate ran nothing");
    }
    stop.cancel();
    sagad.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_participants_over_grpc_complete_and_compensate() {
    one_completes_one_compensates(pb::Protocol::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_participants_over_http_complete_and_compensate() {
    one_completes_one_compensates(pb::Protocol::Http).await;
}
