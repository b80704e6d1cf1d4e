//! The no-op participants of the benchmark saga, and the echo of the limit probe.
//!
//! Three gRPC servers in one process, one per participant (so the coordinator
//! holds one connection per participant, as it would with real services), each
//! serving `sagad.v1.ParticipantService`:
//!
//! | step | forward | compensate |
//! |---|---|---|
//! | `reserve-inventory` | succeeds | succeeds |
//! | `charge-payment` | succeeds | succeeds |
//! | `ship-order` | W1 succeeds, W2 answers `OUTCOME_REJECTED` | succeeds |
//!
//! The workload is a field of the saga payload (`{"order_id":"…","workload":"W2"}`),
//! so one process serves both workloads. A forward call whose step is [`ECHO_STEP`]
//! answers at once without looking at anything: the no-op unary call the limit
//! probe measures.
//!
//! They are written on the participant SDK (`sagad::sdk`) with its
//! [`NoBarrier`]: no record, no lock, no disk per call. They keep no state
//! and are no-ops, so there is nothing to dedupe, and the benchmark measures
//! the coordinator, not a participant's store.
//! Each is served twice: as gRPC on its port, and as the HTTP/JSON contract
//! (`Participant::router`, HTTP/1.1) on a port of its own, for `run
//! --protocol http`.
//!
//! The process prints one line, `sagad-bench participants listening inventory=…
//! payments=… shipping=… inventory-http=… payments-http=… shipping-http=…`, and
//! stops at SIGINT or SIGTERM.

use std::net::SocketAddr;

use anyhow::Context;
use async_trait::async_trait;
use sagad::sdk::{Handler, NoBarrier, NoTx, Output, Participant, Reject, Request};
use serde::Deserialize;
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use crate::ParticipantsArgs;

/// The step name of an echo call.
pub const ECHO_STEP: &str = "echo";
/// The prefix of the line that announces the addresses.
pub const ANNOUNCE: &str = "sagad-bench participants listening";
/// The participants, in the order they are announced and served.
pub const NAMES: [&str; 3] = ["inventory", "payments", "shipping"];
/// The step whose forward call W2 rejects.
const REJECTING_STEP: &str = "ship-order";

/// The announced name of `name`'s HTTP/JSON port.
pub fn http_name(name: &str) -> String {
    format!("{name}-http")
}

/// What a participant reads of the saga payload.
#[derive(Deserialize)]
struct Payload {
    workload: Option<String>,
}

/// A participant that does nothing, except that shipping refuses W2 orders.
struct NoopParticipant;

#[async_trait]
impl Handler<NoBarrier> for NoopParticipant {
    async fn forward(&self, request: &Request, _tx: &mut NoTx<'_>) -> Result<Output, Reject> {
        if request.step == REJECTING_STEP {
            let payload: Payload = request
                .payload_json()
                .map_err(|e| Reject::retry(format!("payload is not JSON: {e}")))?;
            if payload.workload.as_deref() == Some("W2") {
                return Err(Reject::rejected("W2: shipping rejects every order"));
            }
        }
        Ok(Output::empty())
    }

    async fn compensate(&self, _request: &Request, _tx: &mut NoTx<'_>) -> Result<(), Reject> {
        Ok(())
    }
}

/// Binds one listener per participant: `listen` for the first, then the next
/// ports (or any free ports when the port is 0).
async fn bind(listen: SocketAddr) -> anyhow::Result<Vec<TcpListener>> {
    let mut listeners = Vec::with_capacity(2 * NAMES.len());
    for i in 0..2 * NAMES.len() {
        let mut addr = listen;
        if addr.port() != 0 {
            addr.set_port(addr.port() + i as u16);
        }
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Serves the participants until SIGINT or SIGTERM.
pub async fn serve(args: ParticipantsArgs) -> anyhow::Result<()> {
    let mut listeners = bind(args.listen).await?;
    let http_listeners = listeners.split_off(NAMES.len());
    let stop = CancellationToken::new();
    let mut servers = Vec::with_capacity(listeners.len());
    let mut announce = ANNOUNCE.to_string();
    let mut http_servers = Vec::with_capacity(http_listeners.len());
    for (name, listener) in NAMES.iter().zip(http_listeners) {
        announce.push_str(&format!(" {}={}", http_name(name), listener.local_addr()?));
        let router = Participant::new(NoBarrier, NoopParticipant).router();
        http_servers.push(tokio::spawn(serve_http(listener, router, stop.clone())));
    }
    for (name, listener) in NAMES.iter().zip(listeners) {
        announce.push_str(&format!(" {name}={}", listener.local_addr()?));
        // Nagle off on the accepted sockets: the builder's tcp_nodelay is
        // ignored by serve_with_incoming, and with Nagle on, 64 concurrent calls
        // on one connection reached 26-30k calls/s (p99 ~43 ms) instead of 42-51k.
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        servers.push(tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(Participant::new(NoBarrier, NoopParticipant).grpc())
                .serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned()),
        ));
    }
    println!("{announce}");

    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    stop.cancel();
    for server in servers {
        server.await?.context("participant server failed")?;
    }
    for server in http_servers {
        server.await?;
    }
    Ok(())
}

/// Serves `router` on `listener` (HTTP/1.1, Nagle off) until `stop`.
async fn serve_http(listener: TcpListener, router: axum::Router, stop: CancellationToken) {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let _ = axum::serve(listener, router)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await;
}
