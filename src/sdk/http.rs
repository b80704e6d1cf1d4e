//! The handlers as an axum [`Router`] speaking the HTTP contract of
//! docs/participant.md ([`Participant::router`]: `POST /forward` and
//! `POST /compensate`), reading the body sagad sends
//! ([`StepCallBody`](crate::participant::http::wire::StepCallBody)) and
//! answering as sagad's HTTP caller reads it:
//!
//! | answer | HTTP |
//! | --- | --- |
//! | succeeded | `200` `{"output": …, "reason": …}` (fields present when set) |
//! | rejected | `409` `{"outcome": "rejected", "reason": …}` |
//! | retry | `503`, `Retry-After` in whole seconds (rounded up: HTTP's unit) when there is a hint, `{"outcome": "retry", "reason": …, "retry_after": seconds}` |
//! | a stale epoch, a store that failed | `503` `{"outcome": "retry", "reason": …}` (no hint) |
//! | a body that is not a call, or the other endpoint's action | `400` (sagad logs a configuration error) |

use std::time::Duration;

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header::RETRY_AFTER},
    response::{IntoResponse, Response},
    routing::post,
};
use tokio::time::Instant;

use super::{
    Barrier, Handler, Participant,
    call::{Action, Answer, Request, Verdict},
};
use crate::participant::{
    grpc::EPOCH_HEADER,
    http::{
        TIMEOUT_HEADER,
        wire::{AnswerBody, RetryAfter, StepCallBody},
    },
};

impl<B: Barrier, H: Handler<B>> Participant<B, H> {
    /// The participant as a router: `POST /forward` and `POST /compensate`
    /// (nest it under a prefix to serve several participants on one port).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/forward", post(forward::<B, H>))
            .route("/compensate", post(compensate::<B, H>))
            .with_state(self.clone())
    }

    /// Answers one HTTP call of `action`, from any route of any router.
    pub async fn answer_http(&self, headers: &HeaderMap, body: &[u8], action: Action) -> Response {
        match request_of(headers, body, action) {
            Ok(request) => response_of(self.call(&request).await),
            Err(why) => (StatusCode::BAD_REQUEST, why).into_response(),
        }
    }
}

async fn forward<B: Barrier, H: Handler<B>>(
    State(participant): State<Participant<B, H>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    participant
        .answer_http(&headers, &body, Action::Forward)
        .await
}

async fn compensate<B: Barrier, H: Handler<B>>(
    State(participant): State<Participant<B, H>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    participant
        .answer_http(&headers, &body, Action::Compensate)
        .await
}

/// The SDK's request for an HTTP call of `action`; the error says why the
/// body or headers are not a call.
pub fn request_of(headers: &HeaderMap, body: &[u8], action: Action) -> Result<Request, String> {
    let arrived = Instant::now();
    let call: StepCallBody =
        serde_json::from_slice(body).map_err(|e| format!("not a step call: {e}"))?;
    if call.action != action.as_str() {
        return Err(format!(
            "this is the {action} endpoint, called for {}: the participant's registration swapped its endpoints",
            call.action
        ));
    }
    let epoch = match headers.get(EPOCH_HEADER) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| format!("{EPOCH_HEADER} is not a number"))?,
        ),
    };
    let deadline = headers
        .get(TIMEOUT_HEADER)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .map(|ms| arrived + Duration::from_millis(ms));
    let payload = call.payload_bytes()?;
    let outputs = call.output_bytes()?;
    Ok(Request {
        saga_id: call.saga_id,
        definition: call.definition,
        step: call.step,
        action,
        attempt: call.attempt,
        idempotency_key: call.idempotency_key,
        epoch,
        payload,
        outputs: outputs.into_iter().collect(),
        deadline,
    })
}

/// The HTTP answer for `answer`.
pub fn response_of(answer: Answer) -> Response {
    let nonempty = |reason: String| (!reason.is_empty()).then_some(reason);
    match answer {
        Answer::Final(answer) if answer.verdict == Verdict::Succeeded => {
            let mut body = if answer.output.is_empty() {
                AnswerBody::default()
            } else {
                AnswerBody::with_output(&answer.output)
            };
            body.reason = nonempty(answer.reason);
            Json(body).into_response()
        }
        Answer::Final(answer) => {
            let body = AnswerBody {
                outcome: Some("rejected".into()),
                reason: Some(answer.reason),
                ..AnswerBody::default()
            };
            (StatusCode::CONFLICT, Json(body)).into_response()
        }
        Answer::Retry { reason, after } => {
            let body = AnswerBody {
                outcome: Some("retry".into()),
                reason: nonempty(reason),
                retry_after: after.map(|d| RetryAfter::Seconds(d.as_secs_f64())),
                ..AnswerBody::default()
            };
            let mut response = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
            if let Some(after) = after {
                let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(seconds));
            }
            response
        }
        Answer::Stale { epoch, seen } => {
            let body = AnswerBody {
                outcome: Some("retry".into()),
                reason: Some(Answer::stale_reason(epoch, seen)),
                ..AnswerBody::default()
            };
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{participant::http::wire::call_body, sdk::Final};

    #[test]
    fn a_call_is_read_with_its_epoch_and_deadline() {
        let body = call_body(
            "s",
            "d",
            "charge",
            Action::Forward,
            2,
            "s/charge/forward",
            b"{}",
            &[],
        );
        let mut headers = HeaderMap::new();
        headers.insert(EPOCH_HEADER, HeaderValue::from(7));
        headers.insert(TIMEOUT_HEADER, HeaderValue::from(1500));
        let before = Instant::now();
        let request = request_of(&headers, &body, Action::Forward).unwrap();
        assert_eq!((request.epoch, request.attempt), (Some(7), 2));
        let deadline = request.deadline.unwrap();
        assert!(deadline >= before + Duration::from_millis(1500));
        assert!(deadline <= Instant::now() + Duration::from_millis(1500));
        // The other endpoint's call, and a bad epoch, are refused.
        assert!(
            request_of(&headers, &body, Action::Compensate)
                .unwrap_err()
                .contains("swapped")
        );
        headers.insert(EPOCH_HEADER, HeaderValue::from_static("x"));
        assert!(request_of(&headers, &body, Action::Forward).is_err());
    }

    #[test]
    fn answers_are_written_as_sagad_reads_them() {
        let ok = response_of(Answer::Final(Final::succeeded(b"{\"a\":1}".to_vec())));
        assert_eq!(ok.status(), StatusCode::OK);
        let no = response_of(Answer::Final(Final::rejected("declined")));
        assert_eq!(no.status(), StatusCode::CONFLICT);
        let later = response_of(Answer::Retry {
            reason: "busy".into(),
            after: Some(Duration::from_millis(1200)),
        });
        assert_eq!(later.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            later.headers()[RETRY_AFTER],
            "2",
            "rounded up to whole seconds"
        );
        let stale = response_of(Answer::Stale { epoch: 7, seen: 8 });
        assert_eq!(stale.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!stale.headers().contains_key(RETRY_AFTER));
    }
}
