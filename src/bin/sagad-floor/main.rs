//! `sagad-floor`: the least a durable saga coordinator can do on sagad's stack, as
//! a reference for `sagad-bench run --floor`. **Not a coordinator**: it keeps no
//! state, reads nothing back, recovers nothing, and answers every method but
//! `RegisterParticipant` and `StartSaga` with `UNIMPLEMENTED`.
//!
//! What it does is what any coordinator must do for a saga of docs/workload.md,
//! and nothing else, with the same parts sagad uses:
//! - the same tonic server, tokio runtime and allocator as `sagad serve`;
//! - `StartSaga` (inline steps; always waits): one durable record before the
//!   first call, one after every call (the last one is the outcome), so a W1 saga
//!   makes 4 durable writes in sequence and a W2 saga 6, as in sagad;
//! - the participant calls through sagad's own client ([`GrpcParticipants`]);
//! - a W2 saga compensates the steps that succeeded, newest first (a failed
//!   call of any kind ends the forward path: the floor never retries);
//! - durability by group commit: one writer thread appends everything queued
//!   with one `pwrite` and one `fdatasync` into a zero-filled file, then answers
//!   every caller of that batch.
//!
//! So the gap between sagad and this floor, measured in the same run, is what
//! sagad's saga state, indexes, store, watchers and API cost; the floor itself is
//! what the RPC stack and the disk cost. The log file is reused from its start
//! when full: nothing ever reads it.

use std::{
    collections::HashMap,
    fs::{File, OpenOptions},
    net::SocketAddr,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::Mutex,
    thread,
    time::{Duration, SystemTime},
};

use anyhow::Context;
use clap::Parser;
use sagad::{
    participant::{CallRequest, GrpcParticipants, Participants},
    proto::v1::{
        self as pb,
        coordinator_server::{Coordinator, CoordinatorServer},
    },
    saga::{
        Action, CallOutcome, SagaId, TraceContext, definition::Endpoint, idempotency_key,
        trace::SpanId,
    },
};
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status, transport::server::TcpIncoming};

// The same allocator and tuning as `sagad`, so the two compare like for like.
sagad::use_jemalloc!();

/// What the bench waits for on stdout (the same words as `sagad serve`'s).
const ANNOUNCE: &str = "sagad-floor listening on ";
/// The log file's size; zero-filled at start, so a flush allocates no blocks.
const LOG_BYTES: u64 = 64 << 20;
/// Appends queued for the writer at most (as sagad's journal queue).
const QUEUE: usize = 4096;
/// Every participant call's deadline.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest participant answer accepted (sagad's default).
const MAX_MESSAGE_BYTES: usize = 4 << 20;

#[derive(Parser)]
#[command(
    name = "sagad-floor",
    version,
    about = "The least a durable saga coordinator can do here: a reference for `sagad-bench run --floor`"
)]
struct Args {
    /// Where the log file goes (created if absent).
    #[arg(long)]
    data_dir: PathBuf,
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let log = Log::create(&args.data_dir)?;
    let runtime = sagad::runtime::build(None).context("starting the async runtime")?;
    runtime.block_on(serve(args.listen, log))
}

async fn serve(listen: SocketAddr, log: Log) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding --listen {listen}"))?;
    println!("{ANNOUNCE}{}", listener.local_addr()?);
    let floor = Floor {
        log,
        participants: GrpcParticipants::new(MAX_MESSAGE_BYTES),
        registered: Mutex::new(HashMap::new()),
    };
    tonic::transport::Server::builder()
        .add_service(CoordinatorServer::new(floor))
        .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
        .await
        .context("serving")
}

/// One record to append, and who to tell once it is durable.
type Append = (Vec<u8>, oneshot::Sender<()>);

/// The group-commit log: appends go to the writer thread.
struct Log {
    queue: mpsc::Sender<Append>,
}

impl Log {
    fn create(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("floor.log");
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        let zeros = vec![0; 1 << 20];
        for at in (0..LOG_BYTES).step_by(zeros.len()) {
            file.write_all_at(&zeros, at)
                .with_context(|| format!("zero-filling {}", path.display()))?;
        }
        file.sync_all()?;
        let (queue, rx) = mpsc::channel(QUEUE);
        thread::Builder::new()
            .name("floor-log".into())
            .spawn(move || write_batches(&file, rx))?;
        Ok(Self { queue })
    }

    /// Returns once `record` is durable.
    async fn append(&self, record: Vec<u8>) -> Result<(), Status> {
        let (done, durable) = oneshot::channel();
        let lost = || Status::internal("the log writer stopped (see its panic)");
        self.queue.send((record, done)).await.map_err(|_| lost())?;
        durable.await.map_err(|_| lost())
    }
}

/// The writer thread: everything queued, one write, one sync, then the answers.
/// A failed write or sync panics the thread, and every later append fails.
fn write_batches(file: &File, mut rx: mpsc::Receiver<Append>) {
    let mut at = 0;
    let mut batch = Vec::with_capacity(1 << 16);
    let mut waiting = Vec::new();
    while let Some((record, done)) = rx.blocking_recv() {
        batch.clear();
        batch.extend_from_slice(&record);
        waiting.push(done);
        while let Ok((record, done)) = rx.try_recv() {
            batch.extend_from_slice(&record);
            waiting.push(done);
        }
        if at + batch.len() as u64 > LOG_BYTES {
            at = 0;
        }
        file.write_all_at(&batch, at)
            .expect("writing the floor log");
        file.sync_data().expect("syncing the floor log");
        at += batch.len() as u64;
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}

struct Floor {
    log: Log,
    participants: GrpcParticipants,
    /// Participant name → (forward, compensate) endpoints.
    registered: Mutex<HashMap<String, (Endpoint, Endpoint)>>,
}

/// One step of a running saga.
struct StepRun {
    name: String,
    forward: Endpoint,
    compensate: Endpoint,
    /// What StartSaga answers with.
    answer: pb::Step,
}

impl Floor {
    fn steps(&self, request: &pb::StartSagaRequest) -> Result<Vec<StepRun>, Status> {
        if request.steps.is_empty() {
            return Err(Status::invalid_argument(
                "sagad-floor runs inline steps only: give `steps`",
            ));
        }
        let registered = self.registered.lock().unwrap_or_else(|e| e.into_inner());
        request
            .steps
            .iter()
            .map(|step| {
                let (forward, compensate) = registered.get(&step.participant).ok_or_else(|| {
                    Status::not_found(format!(
                        "no participant {:?}: register it first",
                        step.participant
                    ))
                })?;
                Ok(StepRun {
                    name: step.name.clone(),
                    forward: forward.clone(),
                    compensate: compensate.clone(),
                    answer: pb::Step {
                        name: step.name.clone(),
                        participant: step.participant.clone(),
                        state: pb::StepState::Pending as i32,
                        ..Default::default()
                    },
                })
            })
            .collect()
    }

    /// One call of `step`, recorded as sagad's answer shows an attempt; durable
    /// before it returns.
    async fn call(
        &self,
        saga: &SagaRun,
        step: &mut StepRun,
        action: Action,
    ) -> Result<CallOutcome, Status> {
        let started_at = now();
        let outcome = self
            .participants
            .call(CallRequest {
                endpoint: match action {
                    Action::Forward => step.forward.clone(),
                    Action::Compensate => step.compensate.clone(),
                },
                participant: step.answer.participant.clone(),
                timeout: CALL_TIMEOUT,
                saga_id: saga.id,
                definition: String::new(),
                step: step.name.clone(),
                action,
                attempt: 1,
                idempotency_key: idempotency_key(saga.id, &step.name, action),
                payload: saga.payload.clone(),
                outputs: saga.outputs.clone(),
                traceparent: saga.trace.traceparent(SpanId::random()),
                tracestate: None,
                epoch: None,
            })
            .await;
        let (outcome_kind, error) = match &outcome {
            CallOutcome::Succeeded { .. } => (pb::AttemptOutcome::Succeeded, ""),
            CallOutcome::Rejected { reason } => (pb::AttemptOutcome::Rejected, reason.as_str()),
            CallOutcome::Transient { reason, .. } => {
                (pb::AttemptOutcome::Transient, reason.as_str())
            }
            CallOutcome::NotDelivered { reason } => {
                (pb::AttemptOutcome::NotDelivered, reason.as_str())
            }
        };
        let succeeded = outcome_kind == pb::AttemptOutcome::Succeeded;
        let (proto_action, state) = match (action, succeeded) {
            (Action::Forward, true) => (pb::Action::Forward, pb::StepState::Succeeded),
            (Action::Forward, false) => (pb::Action::Forward, pb::StepState::Failed),
            (Action::Compensate, true) => (pb::Action::Compensate, pb::StepState::Compensated),
            (Action::Compensate, false) => (pb::Action::Compensate, pb::StepState::Failed),
        };
        let answer = &mut step.answer;
        answer.state = state as i32;
        match action {
            Action::Forward => answer.forward_attempts += 1,
            Action::Compensate => answer.compensate_attempts += 1,
        }
        answer.last_error = error.to_string();
        answer.attempts.push(pb::Attempt {
            action: proto_action as i32,
            number: 1,
            outcome: outcome_kind as i32,
            started_at: Some(started_at),
            finished_at: Some(now()),
            error: error.to_string(),
            ..Default::default()
        });
        self.log.append(saga.record(&step.name, state)).await?;
        Ok(outcome)
    }
}

/// What every call of one saga shares.
struct SagaRun {
    id: SagaId,
    payload: Vec<u8>,
    outputs: Vec<(String, Vec<u8>)>,
    trace: TraceContext,
}

impl SagaRun {
    /// A record as small as sagad's: the saga, the step, what happened.
    fn record(&self, step: &str, state: pb::StepState) -> Vec<u8> {
        let mut record = Vec::with_capacity(16 + step.len() + 4);
        record.extend_from_slice(self.id.as_bytes());
        record.extend_from_slice(step.as_bytes());
        record.extend_from_slice(&(state as i32).to_le_bytes());
        record
    }
}

fn now() -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::now())
}

fn unimplemented<T>(method: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!(
        "sagad-floor is a benchmark reference: it serves only RegisterParticipant and \
         StartSaga, not {method}"
    )))
}

#[tonic::async_trait]
impl Coordinator for Floor {
    async fn register_participant(
        &self,
        request: Request<pb::RegisterParticipantRequest>,
    ) -> Result<Response<pb::Participant>, Status> {
        let request = request.into_inner();
        let parse = |what, url: &str| {
            Endpoint::parse(what, url).map_err(|e| Status::invalid_argument(e.to_string()))
        };
        let forward = parse("forward_endpoint", &request.forward_endpoint)?;
        let compensate = parse("compensate_endpoint", &request.compensate_endpoint)?;
        self.registered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(request.name.clone(), (forward, compensate));
        Ok(Response::new(pb::Participant {
            name: request.name,
            forward_endpoint: request.forward_endpoint,
            compensate_endpoint: request.compensate_endpoint,
            registered_at: Some(now()),
            ..Default::default()
        }))
    }

    async fn start_saga(
        &self,
        request: Request<pb::StartSagaRequest>,
    ) -> Result<Response<pb::StartSagaResponse>, Status> {
        let request = request.into_inner();
        let mut steps = self.steps(&request)?;
        let id = SagaId::generate();
        let mut saga = SagaRun {
            id,
            payload: request.payload,
            outputs: Vec::new(),
            trace: TraceContext::for_saga(id),
        };
        let created_at = now();
        self.log
            .append(saga.record("", pb::StepState::Pending))
            .await?;
        let mut failed = None;
        for (i, step) in steps.iter_mut().enumerate() {
            match self.call(&saga, step, Action::Forward).await? {
                CallOutcome::Succeeded { output } => saga.outputs.push((step.name.clone(), output)),
                CallOutcome::Rejected { reason }
                | CallOutcome::Transient { reason, .. }
                | CallOutcome::NotDelivered { reason } => {
                    failed = Some((i, reason));
                    break;
                }
            }
        }
        let (state, error) = match failed {
            None => (pb::SagaState::Completed, String::new()),
            Some((at, reason)) => {
                for step in steps[..at].iter_mut().rev() {
                    self.call(&saga, step, Action::Compensate).await?;
                }
                (pb::SagaState::Compensated, reason)
            }
        };
        let finished_at = now();
        Ok(Response::new(pb::StartSagaResponse {
            saga: Some(pb::Saga {
                id: id.to_string(),
                state: state as i32,
                payload: saga.payload,
                steps: steps.into_iter().map(|s| s.answer).collect(),
                error,
                created_at: Some(created_at),
                updated_at: Some(finished_at),
                finished_at: Some(finished_at),
                ..Default::default()
            }),
            created: true,
        }))
    }

    async fn list_participants(
        &self,
        _: Request<pb::ListParticipantsRequest>,
    ) -> Result<Response<pb::ListParticipantsResponse>, Status> {
        unimplemented("ListParticipants")
    }

    async fn get_saga(&self, _: Request<pb::GetSagaRequest>) -> Result<Response<pb::Saga>, Status> {
        unimplemented("GetSaga")
    }

    async fn list_sagas(
        &self,
        _: Request<pb::ListSagasRequest>,
    ) -> Result<Response<pb::ListSagasResponse>, Status> {
        unimplemented("ListSagas")
    }

    type WatchSagaStream = tokio_stream::Empty<Result<pb::SagaEvent, Status>>;

    async fn watch_saga(
        &self,
        _: Request<pb::WatchSagaRequest>,
    ) -> Result<Response<Self::WatchSagaStream>, Status> {
        unimplemented("WatchSaga")
    }

    async fn cancel_saga(
        &self,
        _: Request<pb::CancelSagaRequest>,
    ) -> Result<Response<pb::Saga>, Status> {
        unimplemented("CancelSaga")
    }

    async fn retry_saga(
        &self,
        _: Request<pb::RetrySagaRequest>,
    ) -> Result<Response<pb::Saga>, Status> {
        unimplemented("RetrySaga")
    }

    async fn list_definitions(
        &self,
        _: Request<pb::ListDefinitionsRequest>,
    ) -> Result<Response<pb::ListDefinitionsResponse>, Status> {
        unimplemented("ListDefinitions")
    }

    type SubscribeStream = tokio_stream::Empty<Result<pb::FeedEvent, Status>>;

    async fn subscribe(
        &self,
        _: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        unimplemented("Subscribe")
    }

    async fn list_nodes(
        &self,
        _: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        unimplemented("ListNodes")
    }
}
