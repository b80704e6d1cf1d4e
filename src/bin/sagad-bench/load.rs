//! The closed-loop load of one measurement (docs/workload.md, "Load model").
//!
//! `C` lanes share a counter of sagas to start. Each lane takes the next number,
//! calls StartSaga with `wait = true` and, once the answer (the saga in its
//! terminal state) is in, takes the next, until `N` sagas have been started or the
//! duration cap has passed since the first start; sagas already started then run
//! to their end. Lanes are spread over the client's gRPC channels round-robin.
//!
//! Latency is taken on the monotonic clock from just before the call to the
//! moment its answer is in; the answer is checked (`check`) after that.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use sagad::proto::v1::{self as pb, coordinator_client::CoordinatorClient};
use tonic::transport::Channel;

use crate::check::{self, Workload};

/// How long one StartSaga(wait) may take before it counts as an error.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How sagas are started: the parts of StartSagaRequest every saga shares.
#[derive(Clone, Debug)]
pub enum SagaSource {
    /// A definition the coordinator loaded.
    Definition(String),
    /// Inline steps (a coordinator the bench did not start).
    Inline(Vec<pb::StepDefinition>),
}

/// One measurement's (or warm-up's) load.
pub struct Load {
    pub workload: Workload,
    /// Lanes.
    pub concurrency: usize,
    /// Sagas to start, at most.
    pub sagas: usize,
    /// No saga starts later than this after the first.
    pub cap: Duration,
    /// Makes every `order_id` of this load unique within the run.
    pub tag: String,
}

/// What one load did.
pub struct LoadResult {
    /// Sagas started.
    pub started: usize,
    /// Why each failed saga failed (a failed call or a wrong outcome).
    pub errors: Vec<String>,
    /// Latencies of the sagas that ended right.
    pub latencies: Vec<Duration>,
    /// Ids of the sagas that ended right.
    pub ok_ids: Vec<String>,
    /// The client (its index in `clients`) each of them was started on, in
    /// the same order: with several coordinators, which one ran it.
    pub ok_clients: Vec<usize>,
    /// First start to last answer.
    pub wall: Duration,
}

/// One saga, as a lane saw it.
struct Sample {
    /// The index of the client it was started on.
    client: usize,
    start: Instant,
    end: Instant,
    /// The saga's id if it ended right, else why not.
    result: Result<String, String>,
}

/// Runs `load` over `clients` (one lane per concurrency slot, round-robin).
pub async fn drive(
    clients: &[CoordinatorClient<Channel>],
    source: &SagaSource,
    load: &Load,
) -> anyhow::Result<LoadResult> {
    let next = Arc::new(AtomicUsize::new(0));
    let first_start = Instant::now();
    let stop_starting_at = first_start + load.cap;
    let mut lanes = Vec::with_capacity(load.concurrency);
    for lane in 0..load.concurrency {
        let client_index = lane % clients.len();
        let mut client = clients[client_index].clone();
        let next = next.clone();
        let source = source.clone();
        let (workload, total, tag) = (load.workload, load.sagas, load.tag.clone());
        lanes.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total || Instant::now() >= stop_starting_at {
                    break;
                }
                let request = start_request(&source, workload, &tag, i);
                let start = Instant::now();
                let answer = tokio::time::timeout(CALL_TIMEOUT, client.start_saga(request)).await;
                let end = Instant::now();
                let result = match answer {
                    Ok(Ok(response)) => {
                        let saga = response.into_inner().saga;
                        check::saga(workload, saga.as_ref())
                            .map(|()| saga.map(|s| s.id).unwrap_or_default())
                    }
                    Ok(Err(status)) => Err(format!(
                        "StartSaga failed: {:?} {}",
                        status.code(),
                        status.message()
                    )),
                    Err(_) => Err(format!("StartSaga took longer than {CALL_TIMEOUT:?}")),
                };
                samples.push(Sample {
                    client: client_index,
                    start,
                    end,
                    result,
                });
            }
            samples
        }));
    }
    let mut samples = Vec::with_capacity(load.sagas);
    for lane in lanes {
        samples.extend(lane.await?);
    }

    let mut result = LoadResult {
        started: samples.len(),
        errors: Vec::new(),
        latencies: Vec::with_capacity(samples.len()),
        ok_ids: Vec::with_capacity(samples.len()),
        ok_clients: Vec::with_capacity(samples.len()),
        wall: Duration::ZERO,
    };
    if let (Some(first), Some(last)) = (
        samples.iter().map(|s| s.start).min(),
        samples.iter().map(|s| s.end).max(),
    ) {
        result.wall = last - first;
    }
    for sample in samples {
        match sample.result {
            Ok(id) => {
                result.latencies.push(sample.end - sample.start);
                result.ok_ids.push(id);
                result.ok_clients.push(sample.client);
            }
            Err(why) => result.errors.push(why),
        }
    }
    Ok(result)
}

/// The request that starts saga number `i` of a load.
fn start_request(
    source: &SagaSource,
    workload: Workload,
    tag: &str,
    i: usize,
) -> pb::StartSagaRequest {
    let payload = format!(
        r#"{{"order_id":"{tag}-{i:06}","workload":"{}"}}"#,
        workload.as_str()
    );
    let mut request = pb::StartSagaRequest {
        payload: payload.into_bytes(),
        wait: true,
        ..Default::default()
    };
    match source {
        SagaSource::Definition(name) => request.definition = name.clone(),
        SagaSource::Inline(steps) => request.steps = steps.clone(),
    }
    request
}
