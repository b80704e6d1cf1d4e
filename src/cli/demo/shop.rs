//! The demo's three participants (`orders`, `payments`, `shipping`), written
//! on the participant SDK (`sagad::sdk`): each is a real gRPC server on a free
//! loopback port (or, with `sagad demo --http`, an HTTP/JSON one: `http.rs`),
//! steered by the saga payload:
//!
//! | payload field | effect |
//! | --- | --- |
//! | `"card": "declined"` | `payments` rejects the charge (a business "no") |
//! | `"carrier": "down"` | `shipping` asks for a retry on every attempt |
//! | `"delay_ms": N` | every forward call takes N ms (to watch a saga live) |
//!
//! The SDK's barrier (an embedded sled store that lives as long as the demo)
//! does what real participants must: each idempotency key is applied once and
//! repeats get the first answer, a compensation whose forward never ran is
//! nothing to undo, and a forward that arrives after it is refused.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use async_trait::async_trait;
use sagad::sdk::{Handler, Output, Participant, Reject, Request, SledBarrier, SledTx};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::transport::server::TcpIncoming;

/// Longest `delay_ms` honoured, so a typo cannot hang a call past its timeout.
const DELAY_MAX: Duration = Duration::from_secs(4);

/// What a demo service does on its forward call.
#[derive(Clone, Copy, Debug)]
pub enum Role {
    Orders,
    Payments,
    Shipping,
}

impl Role {
    /// The participant name the shipped definition refers to.
    pub fn name(self) -> &'static str {
        match self {
            Role::Orders => "orders",
            Role::Payments => "payments",
            Role::Shipping => "shipping",
        }
    }
}

/// One demo participant's handlers; they keep no state of their own (the
/// barrier's records are all there is to remember).
pub(super) struct DemoHandler {
    role: Role,
}

/// A demo participant, whatever protocol serves it.
pub(super) type DemoParticipant = Participant<SledBarrier, DemoHandler>;

/// The participant for `role`, behind a barrier that lives as long as the demo.
pub(super) fn participant(role: Role) -> anyhow::Result<DemoParticipant> {
    let barrier = SledBarrier::temporary()
        .with_context(|| format!("opening the demo {} participant's barrier", role.name()))?;
    Ok(Participant::new(barrier, DemoHandler { role }))
}

#[async_trait]
impl Handler<SledBarrier> for DemoHandler {
    async fn forward(&self, request: &Request, _tx: &mut SledTx<'_>) -> Result<Output, Reject> {
        let payload: serde_json::Value = request.payload_json().unwrap_or_default();
        if let Some(ms) = payload["delay_ms"].as_u64() {
            tokio::time::sleep(Duration::from_millis(ms).min(DELAY_MAX)).await;
        }
        let order = payload["order_id"].as_str().unwrap_or("?");
        let json = |value: serde_json::Value| Ok(Output::json(&value));
        match self.role {
            Role::Orders => json(serde_json::json!({ "order": order, "valid": true })),
            Role::Payments if payload["card"] == "declined" => {
                Err(Reject::rejected("card declined by the issuer"))
            }
            Role::Payments => json(serde_json::json!({ "charge": format!("ch_{order}") })),
            Role::Shipping if payload["carrier"] == "down" => {
                Err(Reject::retry("carrier API is down"))
            }
            Role::Shipping => json(serde_json::json!({ "tracking": format!("TRK-{order}") })),
        }
    }

    async fn compensate(&self, _request: &Request, _tx: &mut SledTx<'_>) -> Result<(), Reject> {
        // Nothing was kept beyond the barrier's record, so nothing to undo
        // but to answer: the record the barrier writes now bars a late forward.
        Ok(())
    }
}

/// Serves one demo participant over gRPC on a free loopback port until
/// `stop` is cancelled; the server task is tracked by `tasks` so the demo can
/// wait for it.
pub async fn serve(
    role: Role,
    stop: &CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .with_context(|| format!("binding the demo {} participant", role.name()))?;
    let addr = listener.local_addr()?;
    let participant = participant(role)?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tasks.spawn(
        tonic::transport::Server::builder()
            .add_service(participant.grpc())
            .serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned()),
    );
    Ok(addr)
}
