//! `sagad demo`: a coordinator on a free loopback port with a fresh temporary
//! journal, the three order-fulfillment participants as real gRPC servers, and
//! three orders: one that completes, one whose card is declined, and one whose
//! shipping carrier stays down until retries run out.

use std::{collections::HashMap, net::SocketAddr, path::Path, sync::Mutex};

use anyhow::Context;
use sagad::{
    engine::EngineConfig,
    proto::v1::{
        self as pb,
        coordinator_client::CoordinatorClient,
        participant_service_server::{ParticipantService, ParticipantServiceServer},
    },
    saga::definition,
    server::{self, ServerConfig},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, transport::server::TcpIncoming};

const ORDER_FULFILLMENT: &str = include_str!("../../sagas/order-fulfillment.toml");

/// What a demo service does on its forward call.
#[derive(Clone, Copy)]
enum Role {
    Orders,
    Payments,
    Shipping,
}

/// A participant that applies each idempotency key once and answers repeats with
/// the first answer, as real participants must.
struct DemoParticipant {
    role: Role,
    /// Answers by idempotency key. A std mutex: never held across an await.
    applied: Mutex<HashMap<String, pb::StepResponse>>,
}

fn payload_field(request: &pb::StepRequest, field: &str) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(&request.payload).ok()?;
    json.get(field)?.as_str().map(str::to_string)
}

impl DemoParticipant {
    fn forward(&self, request: &pb::StepRequest) -> Result<pb::StepResponse, Status> {
        let order = payload_field(request, "order_id").unwrap_or_else(|| "?".into());
        let ok = |output: String| pb::StepResponse {
            output: output.into_bytes(),
            ..Default::default()
        };
        match self.role {
            Role::Orders => Ok(ok(format!(r#"{{"order":"{order}","valid":true}}"#))),
            Role::Payments if payload_field(request, "card").as_deref() == Some("declined") => {
                Ok(pb::StepResponse {
                    outcome: pb::Outcome::Rejected as i32,
                    reason: "card declined by the issuer".into(),
                    ..Default::default()
                })
            }
            Role::Payments => Ok(ok(format!(r#"{{"charge":"ch_{order}"}}"#))),
            Role::Shipping if payload_field(request, "carrier").as_deref() == Some("down") => {
                Err(Status::unavailable("carrier API is down"))
            }
            Role::Shipping => Ok(ok(format!(r#"{{"tracking":"TRK-{order}"}}"#))),
        }
    }

    fn answer(&self, request: pb::StepRequest) -> Result<Response<pb::StepResponse>, Status> {
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(previous) = applied.get(&request.idempotency_key) {
            return Ok(Response::new(previous.clone()));
        }
        let response = if request.action == pb::Action::Compensate as i32 {
            // An unknown key means the forward never arrived: nothing to undo.
            pb::StepResponse::default()
        } else {
            self.forward(&request)?
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
        self.answer(request.into_inner())
    }

    async fn compensate(
        &self,
        request: Request<pb::StepRequest>,
    ) -> Result<Response<pb::StepResponse>, Status> {
        self.answer(request.into_inner())
    }
}

/// Serves one demo participant on a free loopback port until `stop`.
async fn serve_participant(role: Role, stop: CancellationToken) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding a demo participant")?;
    let addr = listener.local_addr()?;
    let service = DemoParticipant {
        role,
        applied: Mutex::new(HashMap::new()),
    };
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ParticipantServiceServer::new(service))
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned()),
    );
    Ok(addr)
}

fn state_name(value: i32, prefix: &str) -> String {
    let name = pb::SagaState::try_from(value)
        .map(|s| s.as_str_name().to_string())
        .or_else(|_| pb::StepState::try_from(value).map(|s| s.as_str_name().to_string()))
        .unwrap_or_else(|_| value.to_string());
    name.trim_start_matches(prefix).to_string()
}

fn print_saga(title: &str, saga: &pb::Saga) {
    println!("\n{title}");
    println!(
        "  saga {}  {}",
        saga.id,
        state_name(saga.state, "SAGA_STATE_")
    );
    if !saga.error.is_empty() {
        println!("  why: {}", saga.error);
    }
    for step in &saga.steps {
        let state = pb::StepState::try_from(step.state)
            .map(|s| {
                s.as_str_name()
                    .trim_start_matches("STEP_STATE_")
                    .to_string()
            })
            .unwrap_or_default();
        let mut line = format!(
            "    {:<16} {:<12} forward attempts: {}",
            step.name, state, step.forward_attempts
        );
        if step.compensate_attempts > 0 {
            line.push_str(&format!(
                ", compensate attempts: {}",
                step.compensate_attempts
            ));
        }
        if !step.last_error.is_empty() {
            line.push_str(&format!("  (last error: {})", step.last_error));
        }
        println!("{line}");
    }
}

pub async fn run() -> anyhow::Result<()> {
    let data_dir = tempfile::tempdir().context("creating a temporary data directory")?;
    let definition =
        definition::parse_definition(Path::new("sagas/order-fulfillment.toml"), ORDER_FULFILLMENT)?;
    let server = server::start(
        ServerConfig {
            listen: "127.0.0.1:0".parse()?,
            data_dir: data_dir.path().to_path_buf(),
            engine: EngineConfig::default(),
        },
        vec![definition],
    )
    .await?;
    let addr = server.local_addr();
    println!(
        "sagad demo: coordinator on {addr}, journal in {}",
        data_dir.path().display()
    );
    server.ready().await;

    let stop = CancellationToken::new();
    let mut client = CoordinatorClient::connect(format!("http://{addr}")).await?;
    let fast_retries = |max_attempts| pb::RetryPolicy {
        initial_interval: Some(prost_types::Duration {
            seconds: 0,
            nanos: 100_000_000,
        }),
        max_attempts: Some(max_attempts),
        ..Default::default()
    };
    for (name, role) in [
        ("orders", Role::Orders),
        ("payments", Role::Payments),
        ("shipping", Role::Shipping),
    ] {
        let participant = serve_participant(role, stop.clone()).await?;
        // Any method with StepRequest/StepResponse works; these serve the reference service.
        let base = format!("http://{participant}/sagad.v1.ParticipantService");
        client
            .register_participant(pb::RegisterParticipantRequest {
                name: name.into(),
                forward_endpoint: format!("{base}/Forward"),
                compensate_endpoint: format!("{base}/Compensate"),
                retry: Some(fast_retries(4)),
                timeout: Some(prost_types::Duration {
                    seconds: 2,
                    nanos: 0,
                }),
            })
            .await?;
        println!("registered participant {name:<9} at {participant}");
    }

    let orders = [
        (
            "1. an order that completes",
            r#"{"order_id":"A-100","card":"ok"}"#,
        ),
        (
            "2. a declined card: compensates at charge-payment",
            r#"{"order_id":"A-101","card":"declined"}"#,
        ),
        (
            "3. shipping stays down: retries run out, then compensates",
            r#"{"order_id":"A-102","carrier":"down"}"#,
        ),
    ];
    let mut states = Vec::new();
    for (title, payload) in orders {
        let response = client
            .start_saga(pb::StartSagaRequest {
                definition: "order-fulfillment".into(),
                payload: payload.as_bytes().to_vec(),
                idempotency_key: format!("demo-{title}"),
                wait: true,
                ..Default::default()
            })
            .await?
            .into_inner();
        let saga = response.saga.context("StartSaga answered without a saga")?;
        print_saga(title, &saga);
        states.push(saga.state);
    }
    println!(
        "\nEvery step's attempts are journaled; `GetSaga` shows each one with its timing and error."
    );

    drop(client);
    server.stop().await?;
    stop.cancel();
    let expected = [
        pb::SagaState::Completed,
        pb::SagaState::Compensated,
        pb::SagaState::Compensated,
    ];
    anyhow::ensure!(
        states == expected.map(|s| s as i32),
        "the demo sagas did not end as expected: {states:?}"
    );
    Ok(())
}
