//! The gRPC `Coordinator` service: a thin front over the engine.
//!
//! Each method checks its request, converts it to the domain (`convert.rs`),
//! calls the engine, and maps errors through the one `From<Error> for Status`
//! (`status.rs`). Bad input is refused here or in the engine before anything is
//! written, with a message that says what to fix. Answers are bounded
//! whatever a saga's history holds (`summary.rs`): lists carry summaries, and
//! a saga its steps' last attempts unless `GetSaga` asks for every one.
//!
//! Until recovery has finished, every method answers `UNAVAILABLE`: a saga that
//! is not resumed yet must not look abandoned.
//!
//! Who may call which method was decided before a call gets here
//! (`crate::auth`); each method reads the [`Caller`] that layer admitted, to
//! journal its principal with a write and to keep a `starter` to the sagas
//! it started.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, metadata::MetadataMap};

use crate::{
    api::summary::Attempts,
    auth::{Caller, layer::caller_of},
    engine::{Engine, FeedQuery, ListQuery, SagaSource, StartRequest},
    proto::v1::{self as pb, coordinator_server::Coordinator},
    saga::{EventKind, Offset, Participant, SagaId, Timestamp, TraceContext},
    trace,
};

pub mod convert;
pub use status::oversized_as_payload;
#[cfg(test)]
mod fuzz;
mod status;
pub mod summary;
mod wire;

/// Room for the rest of a StartSaga request around a payload of the maximum
/// size: the server decodes requests of up to that much more.
pub const REQUEST_OVERHEAD_BYTES: usize = 256 * 1024;

/// Default and largest ListSagas page.
pub const PAGE_SIZE_DEFAULT: u32 = 50;
pub const PAGE_SIZE_MAX: u32 = 1000;

/// The Coordinator service.
pub struct CoordinatorApi {
    engine: Engine,
    /// Set once recovery has resumed every unfinished saga.
    ready: Arc<AtomicBool>,
}

impl CoordinatorApi {
    /// A service over `engine` that answers once `ready` is set.
    pub fn new(engine: Engine, ready: Arc<AtomicBool>) -> Self {
        Self { engine, ready }
    }

    /// Refuses a caller that may read only its own sagas a saga it did not
    /// start; reads the saga only for such a caller.
    async fn check_reads(&self, caller: &Caller, id: SagaId) -> Result<(), Status> {
        if !caller.reads_all_sagas() {
            let saga = self.engine.get(id).await?;
            caller.may_read(&saga).map_err(crate::Error::from)?;
        }
        Ok(())
    }

    fn check_ready(&self) -> Result<(), Status> {
        if self.ready.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(Status::unavailable(
                "the coordinator is still recovering its sagas; retry shortly (health reports SERVING when ready)",
            ))
        }
    }
}

fn saga_id(field: &str, text: &str) -> Result<SagaId, Status> {
    if text.is_empty() {
        return Err(Status::invalid_argument(format!("{field} is required")));
    }
    text.parse()
        .map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

/// The W3C trace context a request carries, if its `traceparent` is valid. W3C
/// says an invalid one (or several) is ignored, not refused: the saga then runs
/// in a trace of its own, and a debug line says why.
fn caller_trace(metadata: &MetadataMap) -> Option<TraceContext> {
    let mut headers = metadata.get_all(trace::TRACEPARENT).iter();
    let header = headers.next()?;
    if headers.next().is_some() {
        tracing::debug!("ignoring the request's traceparent: it was sent more than once");
        return None;
    }
    let Ok(traceparent) = header.to_str() else {
        tracing::debug!("ignoring the request's traceparent: not ASCII");
        return None;
    };
    // Several tracestate headers are one list, in order (W3C).
    let mut states = metadata
        .get_all(trace::TRACESTATE)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let tracestate = match (states.next(), states.next()) {
        (Some(first), None) => Some(first.to_string()),
        (Some(first), Some(second)) => Some(
            [first, second]
                .into_iter()
                .chain(states)
                .collect::<Vec<_>>()
                .join(","),
        ),
        (None, _) => None,
    };
    TraceContext::parse(traceparent, tracestate.as_deref())
        .inspect_err(|e| tracing::debug!(error = %e, "ignoring the request's traceparent"))
        .ok()
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::SagaEvent, Status>> + Send>>;
type FeedStream = Pin<Box<dyn Stream<Item = Result<pb::FeedEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Coordinator for CoordinatorApi {
    async fn register_participant(
        &self,
        request: Request<pb::RegisterParticipantRequest>,
    ) -> Result<Response<pb::Participant>, Status> {
        self.check_ready()?;
        let caller = caller_of(&request);
        let r = request.into_inner();
        let retry = convert::retry_overrides("retry", r.retry)?;
        let timeout = convert::duration_from("timeout", r.timeout)?;
        let protocol = convert::protocol_from(r.protocol)?;
        let limits = convert::limits_from(r.max_in_flight, &r.rate)?;
        let participant = Participant::speaking(
            &r.name,
            protocol,
            &r.forward_endpoint,
            &r.compensate_endpoint,
            retry,
            timeout,
            Timestamp::now(),
        )
        .map_err(crate::Error::from)?
        .limited(limits)
        .registered_by(caller.principal);
        let participant = self.engine.register_participant(participant).await?;
        Ok(Response::new(convert::participant(&participant)))
    }

    async fn list_participants(
        &self,
        _request: Request<pb::ListParticipantsRequest>,
    ) -> Result<Response<pb::ListParticipantsResponse>, Status> {
        self.check_ready()?;
        let participants = self
            .engine
            .participants()
            .iter()
            .map(convert::participant)
            .collect();
        Ok(Response::new(pb::ListParticipantsResponse { participants }))
    }

    async fn start_saga(
        &self,
        request: Request<pb::StartSagaRequest>,
    ) -> Result<Response<pb::StartSagaResponse>, Status> {
        self.check_ready()?;
        let trace = caller_trace(request.metadata());
        let caller = caller_of(&request);
        let r = request.into_inner();
        let source = match (r.definition.is_empty(), r.steps.is_empty()) {
            (false, true) => SagaSource::Definition(r.definition),
            (true, false) => SagaSource::Inline(
                r.steps
                    .into_iter()
                    .enumerate()
                    .map(|(i, s)| convert::step_def(i, s))
                    .collect::<Result<_, _>>()?,
            ),
            (false, false) => {
                return Err(Status::invalid_argument(
                    "give either definition (a name) or inline steps, not both",
                ));
            }
            (true, true) => {
                return Err(Status::invalid_argument(
                    "give a definition name or inline steps (see ListDefinitions)",
                ));
            }
        };
        let start = convert::when_from(("start_at", r.start_at), ("start_delay", r.start_delay))?;
        let deadline =
            convert::when_from(("deadline_at", r.deadline_at), ("deadline", r.deadline))?;
        let started = self
            .engine
            .start_saga(StartRequest {
                source,
                payload: r.payload,
                idempotency_key: (!r.idempotency_key.is_empty()).then_some(r.idempotency_key),
                wait: r.wait,
                trace,
                own_keys_only: !caller.reads_all_sagas(),
                principal: caller.principal,
                start,
                deadline,
            })
            .await?;
        Ok(Response::new(pb::StartSagaResponse {
            saga: Some(convert::saga(&started.saga, Attempts::DEFAULT)),
            created: started.created,
        }))
    }

    async fn get_saga(
        &self,
        request: Request<pb::GetSagaRequest>,
    ) -> Result<Response<pb::Saga>, Status> {
        self.check_ready()?;
        let caller = caller_of(&request);
        let r = request.into_inner();
        let id = saga_id("id", &r.id)?;
        // Two reads, on two connections at once: the owner is a column of
        // the saga's row, not one of its events.
        let (saga, owner) = tokio::join!(self.engine.get(id), self.engine.owner(id));
        let saga = saga?;
        caller.may_read(&saga).map_err(crate::Error::from)?;
        let shown = if r.all_attempts {
            Attempts::All
        } else {
            Attempts::DEFAULT
        };
        let mut answer = convert::saga(&saga, shown);
        answer.owner = owner?.map(|node| node.to_string()).unwrap_or_default();
        Ok(Response::new(answer))
    }

    async fn list_sagas(
        &self,
        request: Request<pb::ListSagasRequest>,
    ) -> Result<Response<pb::ListSagasResponse>, Status> {
        self.check_ready()?;
        let caller = caller_of(&request);
        let r = request.into_inner();
        if r.page_size > PAGE_SIZE_MAX {
            return Err(Status::invalid_argument(format!(
                "page_size must be at most {PAGE_SIZE_MAX} (got {})",
                r.page_size
            )));
        }
        let limit = if r.page_size == 0 {
            PAGE_SIZE_DEFAULT
        } else {
            r.page_size
        };
        let before = if r.page_token.is_empty() {
            None
        } else {
            Some(r.page_token.parse::<SagaId>().map_err(|_| {
                Status::invalid_argument(
                    "page_token is not a token this server issued; pass next_page_token from the previous page",
                )
            })?)
        };
        let query = ListQuery {
            status: convert::saga_status_from(r.state)?,
            definition: (!r.definition.is_empty()).then_some(r.definition),
            before,
            limit: limit as usize,
        };
        let (sagas, next) = if caller.reads_all_sagas() {
            self.engine.list(query).await?
        } else {
            self.engine.list_kept(query, |s| caller.owns(s)).await?
        };
        Ok(Response::new(pb::ListSagasResponse {
            summaries: sagas.iter().map(summary::saga_summary).collect(),
            next_page_token: next.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    type WatchSagaStream = EventStream;

    async fn watch_saga(
        &self,
        request: Request<pb::WatchSagaRequest>,
    ) -> Result<Response<Self::WatchSagaStream>, Status> {
        self.check_ready()?;
        let id = saga_id("id", &request.get_ref().id)?;
        self.check_reads(&caller_of(&request), id).await?;
        let items = self.engine.watch(id).await?;
        // The stream starts at SagaStarted, which names the steps later events refer to.
        let mut steps: Vec<String> = Vec::new();
        let stream = ReceiverStream::new(items).map(move |item| {
            let item = item.map_err(Status::from)?;
            if let EventKind::SagaStarted { steps: specs, .. } = &item.event.kind {
                steps = specs.iter().map(|s| s.name.clone()).collect();
            }
            Ok(convert::event(&item.event, item.status, &steps))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn cancel_saga(
        &self,
        request: Request<pb::CancelSagaRequest>,
    ) -> Result<Response<pb::Saga>, Status> {
        self.check_ready()?;
        let caller = caller_of(&request);
        let r = request.into_inner();
        let id = saga_id("id", &r.id)?;
        let reason = if r.reason.is_empty() {
            "cancelled by an operator".to_string()
        } else {
            r.reason
        };
        let saga = self.engine.cancel(id, reason, caller.principal).await?;
        Ok(Response::new(convert::saga(&saga, Attempts::DEFAULT)))
    }

    async fn retry_saga(
        &self,
        request: Request<pb::RetrySagaRequest>,
    ) -> Result<Response<pb::Saga>, Status> {
        self.check_ready()?;
        let caller = caller_of(&request);
        let r = request.into_inner();
        let id = saga_id("id", &r.id)?;
        let saga = self
            .engine
            .retry(id, r.refresh_endpoints, caller.principal)
            .await?;
        Ok(Response::new(convert::saga(&saga, Attempts::DEFAULT)))
    }

    type SubscribeStream = FeedStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        self.check_ready()?;
        let r = request.into_inner();
        let items = self
            .engine
            .subscribe(FeedQuery {
                after: Offset(r.after_offset),
                definition: (!r.definition.is_empty()).then_some(r.definition),
                state_changes_only: r.state_changes_only,
            })
            .await?;
        let stream = ReceiverStream::new(items)
            .map(|item| Ok(convert::feed_event(&item.map_err(Status::from)?)));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_definitions(
        &self,
        _request: Request<pb::ListDefinitionsRequest>,
    ) -> Result<Response<pb::ListDefinitionsResponse>, Status> {
        self.check_ready()?;
        let definitions = self
            .engine
            .definitions()
            .iter()
            .map(convert::definition)
            .collect();
        Ok(Response::new(pb::ListDefinitionsResponse { definitions }))
    }

    async fn list_nodes(
        &self,
        _request: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        self.check_ready()?;
        let nodes = self.engine.nodes().await?;
        Ok(Response::new(pb::ListNodesResponse {
            nodes: nodes.iter().map(convert::node).collect(),
        }))
    }
}
