//! The demo's three participants (`orders`, `payments`, `shipping`), each a real
//! gRPC server on a free loopback port (or, with `sagad demo --http`, an
//! HTTP/JSON one: `http.rs`), steered by the saga payload:
//!
//! | payload field | effect |
//! | --- | --- |
//! | `"card": "declined"` | `payments` rejects the charge (a business "no") |
//! | `"carrier": "down"` | `shipping` answers UNAVAILABLE on every attempt |
//! | `"delay_ms": N` | every forward call takes N ms (to watch a saga live) |
//!
//! Like real participants they apply each idempotency key once and answer
//! repeats with the first answer, and treat an unknown key in a compensation as
//! nothing to undo (and refuse that step's forward if it arrives afterwards).

use std::{collections::HashMap, net::SocketAddr, sync::Mutex, time::Duration};

use anyhow::Context;
use sagad::proto::v1::{
    self as pb,
    participant_service_server::{ParticipantService, ParticipantServiceServer},
};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::{Request, Response, Status, transport::server::TcpIncoming};

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

/// One demo participant, whatever protocol serves it.
pub(super) struct DemoParticipant {
    role: Role,
    /// Answers by idempotency key. A std mutex: never held across an await.
    applied: Mutex<HashMap<String, pb::StepResponse>>,
}

fn payload(request: &pb::StepRequest) -> serde_json::Value {
    serde_json::from_slice(&request.payload).unwrap_or_default()
}

impl DemoParticipant {
    pub(super) fn new(role: Role) -> Self {
        Self {
            role,
            applied: Mutex::new(HashMap::new()),
        }
    }

    fn forward(&self, request: &pb::StepRequest) -> Result<pb::StepResponse, Status> {
        let payload = payload(request);
        let order = payload["order_id"].as_str().unwrap_or("?");
        let ok = |output: serde_json::Value| pb::StepResponse {
            output: output.to_string().into_bytes(),
            ..Default::default()
        };
        match self.role {
            Role::Orders => Ok(ok(serde_json::json!({ "order": order, "valid": true }))),
            Role::Payments if payload["card"] == "declined" => Ok(pb::StepResponse {
                outcome: pb::Outcome::Rejected as i32,
                reason: "card declined by the issuer".into(),
                ..Default::default()
            }),
            Role::Payments => Ok(ok(serde_json::json!({ "charge": format!("ch_{order}") }))),
            Role::Shipping if payload["carrier"] == "down" => {
                Err(Status::unavailable("carrier API is down"))
            }
            Role::Shipping => Ok(ok(
                serde_json::json!({ "tracking": format!("TRK-{order}") }),
            )),
        }
    }

    /// The answer to one call; an error status is what a carrier that is
    /// down answers (UNAVAILABLE), which HTTP serves as a 503.
    pub(super) async fn answer(
        &self,
        request: pb::StepRequest,
    ) -> Result<Response<pb::StepResponse>, Status> {
        let forward = request.action == pb::Action::Forward as i32;
        if forward && let Some(ms) = payload(&request)["delay_ms"].as_u64() {
            tokio::time::sleep(Duration::from_millis(ms).min(DELAY_MAX)).await;
        }
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(previous) = applied.get(&request.idempotency_key) {
            return Ok(Response::new(previous.clone()));
        }
        let response = if forward {
            self.forward(&request)?
        } else {
            // Undo by the forward's key; an unknown key means the forward never
            // arrived, so there is nothing to undo and the answer is still OK.
            // The forward's key is then answered "no" for good, so a forward
            // that arrives late (a delayed retry) cannot apply after its undo.
            if let Some(forward_key) = request.idempotency_key.strip_suffix("/compensate") {
                applied
                    .entry(format!("{forward_key}/forward"))
                    .or_insert_with(|| pb::StepResponse {
                        outcome: pb::Outcome::Rejected as i32,
                        reason: "compensated before it arrived".into(),
                        ..Default::default()
                    });
            }
            pb::StepResponse::default()
        };
        applied.insert(request.idempotency_key, response.clone());
        Ok(Response::new(response))
    }
}

#[tonic::async_trait]
impl ParticipantService for DemoParticipant {
    async fn forward(
        &self,
        request: Request<pb::StepRequest>,
    ) -> Result<Response<pb::StepResponse>, Status> {
        self.answer(request.into_inner()).await
    }

    async fn compensate(
        &self,
        request: Request<pb::StepRequest>,
    ) -> Result<Response<pb::StepResponse>, Status> {
        self.answer(request.into_inner()).await
    }
}

/// Serves one demo participant on a free loopback port until `stop` is
/// cancelled; the server task is tracked by `tasks` so the demo can wait for it.
pub async fn serve(
    role: Role,
    stop: &CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .with_context(|| format!("binding the demo {} participant", role.name()))?;
    let addr = listener.local_addr()?;
    let service = DemoParticipant::new(role);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tasks.spawn(
        tonic::transport::Server::builder()
            .add_service(ParticipantServiceServer::new(service))
            .serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned()),
    );
    Ok(addr)
}
