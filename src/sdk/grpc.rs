//! The handlers as a tonic `sagad.v1.ParticipantService` ([`Participant::grpc`]),
//! or behind any method of the author's own service
//! ([`Participant::answer_grpc`], for a service such as `shop.Payments`).
//!
//! | answer | gRPC |
//! | --- | --- |
//! | succeeded | `OK`, `OUTCOME_SUCCEEDED`, the output (and a reason, if any) |
//! | rejected | `OK`, `OUTCOME_REJECTED`, the reason |
//! | retry | `OK`, `OUTCOME_RETRY`, the reason and `retry_after` |
//! | a stale epoch, a store that failed | status `UNAVAILABLE` with the reason (transient) |
//! | a call whose `action` is not this method's | status `INVALID_ARGUMENT` (transient: a wrong registration) |

use std::time::Duration;

use tokio::time::Instant;
use tonic::{Response, Status, metadata::MetadataMap};

use super::{
    Barrier, Handler, Participant,
    call::{Action, Answer, Request, Verdict},
};
use crate::{
    participant::grpc::EPOCH_HEADER,
    proto::v1::{
        self as pb,
        participant_service_server::{ParticipantService, ParticipantServiceServer},
    },
};

impl<B: Barrier, H: Handler<B>> Participant<B, H> {
    /// The participant as a `sagad.v1.ParticipantService`, registered as
    /// `http://HOST:PORT/sagad.v1.ParticipantService/Forward` and `/Compensate`.
    pub fn grpc(&self) -> ParticipantServiceServer<Self> {
        ParticipantServiceServer::new(self.clone())
    }

    /// Answers one gRPC call of `action`, from any method of any service.
    pub async fn answer_grpc(
        &self,
        call: tonic::Request<pb::StepRequest>,
        action: Action,
    ) -> Result<Response<pb::StepResponse>, Status> {
        let request = request_of(call, action)?;
        response_of(self.call(&request).await).map(Response::new)
    }
}

#[tonic::async_trait]
impl<B: Barrier, H: Handler<B>> ParticipantService for Participant<B, H> {
    async fn forward(
        &self,
        request: tonic::Request<pb::StepRequest>,
    ) -> Result<Response<pb::StepResponse>, Status> {
        self.answer_grpc(request, Action::Forward).await
    }

    async fn compensate(
        &self,
        request: tonic::Request<pb::StepRequest>,
    ) -> Result<Response<pb::StepResponse>, Status> {
        self.answer_grpc(request, Action::Compensate).await
    }
}

/// The SDK's request for a gRPC call of `action`.
pub fn request_of(
    call: tonic::Request<pb::StepRequest>,
    action: Action,
) -> Result<Request, Status> {
    let arrived = Instant::now();
    let epoch = epoch_of(call.metadata())?;
    let deadline = timeout_of(call.metadata()).map(|t| arrived + t);
    let step = call.into_inner();
    let said = match pb::Action::try_from(step.action) {
        Ok(pb::Action::Forward) => Some(Action::Forward),
        Ok(pb::Action::Compensate) => Some(Action::Compensate),
        _ => None,
    };
    if let Some(said) = said
        && said != action
    {
        return Err(Status::invalid_argument(format!(
            "this is the {action} endpoint, called with action {said}: \
             the participant's registration swapped its endpoints"
        )));
    }
    Ok(Request {
        saga_id: step.saga_id,
        definition: step.definition,
        step: step.step,
        action,
        attempt: step.attempt,
        idempotency_key: step.idempotency_key,
        epoch,
        payload: step.payload,
        outputs: step.outputs.into_iter().collect(),
        deadline,
    })
}

fn epoch_of(metadata: &MetadataMap) -> Result<Option<u64>, Status> {
    let Some(value) = metadata.get(EPOCH_HEADER) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|text| text.parse().ok())
        .map(Some)
        .ok_or_else(|| Status::invalid_argument(format!("{EPOCH_HEADER} is not a number")))
}

/// The call's `grpc-timeout` (digits, then a unit: `H M S m u n`); none when
/// absent or unreadable (the deadline is advice to the handler).
fn timeout_of(metadata: &MetadataMap) -> Option<Duration> {
    let text = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The gRPC answer for `answer`.
pub fn response_of(answer: Answer) -> Result<pb::StepResponse, Status> {
    Ok(match answer {
        Answer::Final(answer) => pb::StepResponse {
            outcome: match answer.verdict {
                Verdict::Succeeded => pb::Outcome::Succeeded,
                Verdict::Rejected => pb::Outcome::Rejected,
            } as i32,
            output: answer.output,
            reason: answer.reason,
            retry_after: None,
        },
        Answer::Retry { reason, after } => pb::StepResponse {
            outcome: pb::Outcome::Retry as i32,
            reason,
            retry_after: after.and_then(|d| prost_types::Duration::try_from(d).ok()),
            ..Default::default()
        },
        Answer::Stale { epoch, seen } => {
            return Err(Status::unavailable(Answer::stale_reason(epoch, seen)));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_are_read_in_every_unit() {
        for (text, want) in [
            ("10S", Some(Duration::from_secs(10))),
            ("2500m", Some(Duration::from_millis(2500))),
            ("1H", Some(Duration::from_secs(3600))),
            ("7u", Some(Duration::from_micros(7))),
            ("x", None),
            ("10", None),
        ] {
            let mut metadata = MetadataMap::new();
            metadata.insert("grpc-timeout", text.parse().unwrap());
            assert_eq!(timeout_of(&metadata), want, "{text}");
        }
    }
}
