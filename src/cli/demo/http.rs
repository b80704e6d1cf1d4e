//! The demo's participants over HTTP/JSON (`sagad demo --http`): the same
//! [`DemoParticipant`]s as the gRPC demo, behind an axum router that speaks
//! the HTTP contract of docs/participant.md, so the three orders end exactly
//! as they do over gRPC.
//!
//! | the participant answers | over HTTP |
//! | --- | --- |
//! | succeeded, with an output | `200` `{"output": …}` |
//! | rejected (a declined card) | `409` `{"reason": …}` |
//! | UNAVAILABLE (the carrier is down) | `503`, the reason as text |
//!
//! Each participant serves `POST /forward` and `POST /compensate`; the body's
//! `action` must match the path, so a registration that swapped them is
//! answered `400` (which sagad reports as a configuration error).

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
};
use sagad::{
    participant::http::wire::{AnswerBody, StepCallBody},
    proto::v1 as pb,
};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::shop::{DemoParticipant, Role};

/// Serves one demo participant over HTTP/1.1 on a free loopback port until
/// `stop` is cancelled (tracked by `tasks`); returns its address.
pub async fn serve(
    role: Role,
    stop: &CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .with_context(|| format!("binding the demo {} participant", role.name()))?;
    let addr = listener.local_addr()?;
    let participant = Arc::new(DemoParticipant::new(role));
    let router = Router::new()
        .route("/forward", post(forward))
        .route("/compensate", post(compensate))
        .with_state(participant);
    let stopped = stop.clone().cancelled_owned();
    tasks.spawn(async move {
        // A demo participant that stops serving ends the demo's orders with
        // transient errors, which the demo reports; nothing more to do here.
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(stopped)
            .await;
    });
    Ok(addr)
}

async fn forward(State(p): State<Arc<DemoParticipant>>, body: Bytes) -> Response {
    step(&p, pb::Action::Forward, &body).await
}

async fn compensate(State(p): State<Arc<DemoParticipant>>, body: Bytes) -> Response {
    step(&p, pb::Action::Compensate, &body).await
}

/// One call: the JSON body read into the request the gRPC demo gets, and its
/// answer written back per the HTTP contract.
async fn step(participant: &DemoParticipant, action: pb::Action, body: &[u8]) -> Response {
    let call: StepCallBody = match serde_json::from_slice(body) {
        Ok(call) => call,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("not a step call: {e}")).into_response();
        }
    };
    let expected = match action {
        pb::Action::Compensate => "compensate",
        _ => "forward",
    };
    if call.action != expected {
        let why = format!(
            "this is the {expected} endpoint, called for {}",
            call.action
        );
        return (StatusCode::BAD_REQUEST, why).into_response();
    }
    let (payload, outputs) = match (call.payload_bytes(), call.output_bytes()) {
        (Ok(payload), Ok(outputs)) => (payload, outputs),
        (Err(e), _) | (_, Err(e)) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let request = pb::StepRequest {
        saga_id: call.saga_id,
        definition: call.definition,
        step: call.step,
        action: action as i32,
        attempt: call.attempt,
        idempotency_key: call.idempotency_key,
        payload,
        outputs: outputs.into_iter().collect(),
    };
    match participant.answer(request).await {
        Ok(answer) => {
            let answer = answer.into_inner();
            if answer.outcome == pb::Outcome::Rejected as i32 {
                let body = AnswerBody {
                    reason: Some(answer.reason),
                    ..AnswerBody::default()
                };
                (StatusCode::CONFLICT, Json(body)).into_response()
            } else if answer.output.is_empty() {
                Json(AnswerBody::default()).into_response()
            } else {
                Json(AnswerBody::with_output(&answer.output)).into_response()
            }
        }
        Err(status) => (
            StatusCode::SERVICE_UNAVAILABLE,
            status.message().to_string(),
        )
            .into_response(),
    }
}
