//! Calls any gRPC method URL with `StepRequest` → `StepResponse`.
//!
//! Guarantees:
//! - One HTTP/2 channel per participant origin (`http://host:port`), created on
//!   first use and reused by every later call, with Nagle off.
//! - Every call carries the step timeout as its gRPC deadline and is also cut off
//!   locally at that timeout, so a participant that never answers cannot hold a
//!   saga longer than its timeout.
//! - Every call carries the request's W3C `traceparent` (and `tracestate`)
//!   metadata, so the participant's traces join the saga's.

use std::{collections::HashMap, str::FromStr, sync::Mutex, time::Duration};

use async_trait::async_trait;
use tonic::{
    codegen::http::uri::PathAndQuery,
    metadata::{MetadataMap, MetadataValue},
    transport::{Channel, Endpoint as TonicEndpoint},
};

use super::{CallRequest, Participants, classify};
use crate::{
    proto::v1::{Action as ProtoAction, StepRequest, StepResponse},
    saga::{Action, CallOutcome},
    trace,
};

/// How long connecting to a participant may take before the attempt counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Calls participants over gRPC.
pub struct GrpcParticipants {
    /// One channel per origin. A std mutex: held only to look up or insert.
    channels: Mutex<HashMap<String, Channel>>,
    /// Largest answer accepted; a larger one is a transient error.
    max_message_bytes: usize,
}

impl GrpcParticipants {
    /// A caller that accepts answers up to `max_message_bytes`.
    pub fn new(max_message_bytes: usize) -> Self {
        Self {
            channels: Mutex::new(HashMap::new()),
            max_message_bytes,
        }
    }

    fn channel(&self, origin: &str) -> Result<Channel, tonic::transport::Error> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(origin) {
            return Ok(channel.clone());
        }
        let channel = TonicEndpoint::from_shared(origin.to_string())?
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_TIMEOUT)
            .connect_lazy();
        channels.insert(origin.to_string(), channel.clone());
        Ok(channel)
    }
}

/// Adds the W3C trace context headers. The runner builds the `traceparent`
/// from hex digits, and a `tracestate` is only kept if it arrived as valid
/// metadata, so neither can fail to convert; if one ever did, the call goes
/// without it rather than not at all.
fn set_trace_metadata(metadata: &mut MetadataMap, traceparent: &str, tracestate: Option<&str>) {
    if let Ok(value) = MetadataValue::try_from(traceparent) {
        metadata.insert(trace::TRACEPARENT, value);
    }
    if let Some(Ok(value)) = tracestate.map(MetadataValue::try_from) {
        metadata.insert(trace::TRACESTATE, value);
    }
}

#[async_trait]
impl Participants for GrpcParticipants {
    async fn call(&self, request: CallRequest) -> CallOutcome {
        let origin = request.endpoint.origin().to_string();
        let channel = match self.channel(&origin) {
            Ok(c) => c,
            Err(e) => return classify::unreachable(&origin, e),
        };
        // Endpoint::parse checked the path, so this cannot fail for a stored endpoint.
        let Ok(path) = PathAndQuery::from_str(request.endpoint.path()) else {
            return classify::unreachable(&origin, "malformed method path");
        };
        let timeout = request.timeout;
        let mut message = tonic::Request::new(StepRequest {
            saga_id: request.saga_id.to_string(),
            definition: request.definition,
            step: request.step,
            action: match request.action {
                Action::Forward => ProtoAction::Forward,
                Action::Compensate => ProtoAction::Compensate,
            } as i32,
            attempt: request.attempt,
            idempotency_key: request.idempotency_key,
            payload: request.payload,
            outputs: request.outputs.into_iter().collect(),
        });
        message.set_timeout(timeout);
        set_trace_metadata(
            message.metadata_mut(),
            &request.traceparent,
            request.tracestate.as_deref(),
        );
        let mut grpc =
            tonic::client::Grpc::new(channel).max_decoding_message_size(self.max_message_bytes);
        let call = async {
            grpc.ready()
                .await
                .map_err(|e| classify::unreachable(&origin, e))?;
            let codec = tonic_prost::ProstCodec::<StepRequest, StepResponse>::default();
            grpc.unary(message, path, codec)
                .await
                .map(|r| classify::response(r.into_inner()))
                .map_err(|s| match s.code() {
                    // tonic enforces the deadline it sends, and may fire first:
                    // the same timeout as ours, said the same way.
                    tonic::Code::Cancelled if s.message() == "Timeout expired" => {
                        classify::timeout(timeout)
                    }
                    _ => classify::status(&s),
                })
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(outcome) | Err(outcome)) => outcome,
            Err(_) => classify::timeout(timeout),
        }
    }
}
