//! The machine's physical limit, measured in the same run as the workloads
//! (docs/workload.md, "The physical limit"):
//!
//! - a no-op unary gRPC call between two processes (this one and the
//!   participants process: a `Forward` of step [`ECHO_STEP`], answered at once),
//!   in closed loop at concurrency 64 over the load client's channels (calls/s
//!   over a window after a warm-up) and at concurrency 1 (p50 latency);
//! - a loop of 4 KiB appends, each followed by `fdatasync`, in a file next to
//!   the data directory (same disk): syncs/s and p50.
//!
//! A W1 saga needs 4 round trips and at least 4 durable writes in sequence, hence
//! `rpc_bound = echo_calls_per_s / 4` and `c1_floor = 4 × echo p50 + 4 × fdatasync p50`.

use std::{
    fs::OpenOptions,
    io::Write,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use sagad::proto::v1::{self as pb, participant_service_client::ParticipantServiceClient};
use tonic::transport::Channel;

use crate::{participants::ECHO_STEP, stats::Latencies};

/// Bytes appended before each fdatasync.
const FSYNC_WRITE_BYTES: usize = 4096;
/// Syncs done before the fdatasync window opens (file creation, first extents).
const FSYNC_WARMUP_SYNCS: usize = 20;

/// How long each probe runs.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Calls before a window opens (connections, allocations, CPU frequency).
    pub warmup: Duration,
    /// The echo throughput window.
    pub echo_window: Duration,
    /// The echo latency (c=1) window.
    pub echo_c1_window: Duration,
    /// The fdatasync window.
    pub fsync_window: Duration,
}

/// Calls per second of the no-op echo at `concurrency`, spread over `clients`.
pub async fn echo_throughput(
    clients: &[ParticipantServiceClient<Channel>],
    concurrency: usize,
    plan: Plan,
) -> anyhow::Result<f64> {
    let window_start = Instant::now() + plan.warmup;
    let window_end = window_start + plan.echo_window;
    let mut lanes = Vec::with_capacity(concurrency);
    for lane in 0..concurrency {
        let mut client = clients[lane % clients.len()].clone();
        lanes.push(tokio::spawn(async move {
            let mut counted = 0u64;
            loop {
                let start = Instant::now();
                if start >= window_end {
                    return Ok::<_, tonic::Status>(counted);
                }
                client.forward(echo_request()).await?;
                let end = Instant::now();
                if start >= window_start && end <= window_end {
                    counted += 1;
                }
            }
        }));
    }
    let mut calls = 0;
    for lane in lanes {
        calls += lane.await?.context("echo call failed")?;
    }
    Ok(calls as f64 / plan.echo_window.as_secs_f64())
}

/// Latencies of the no-op echo, one call at a time.
pub async fn echo_latency(
    client: &mut ParticipantServiceClient<Channel>,
    plan: Plan,
) -> anyhow::Result<Latencies> {
    let window_start = Instant::now() + plan.warmup;
    let window_end = window_start + plan.echo_c1_window;
    let mut samples = Vec::new();
    loop {
        let start = Instant::now();
        if start >= window_end {
            break;
        }
        client
            .forward(echo_request())
            .await
            .context("echo call failed")?;
        if start >= window_start {
            samples.push(start.elapsed());
        }
    }
    Ok(Latencies::new(samples))
}

fn echo_request() -> pb::StepRequest {
    pb::StepRequest {
        step: ECHO_STEP.into(),
        action: pb::Action::Forward as i32,
        ..Default::default()
    }
}

/// Appends 4 KiB and fdatasyncs, in a temporary file in `dir`, for the window.
/// Returns syncs per second and each sync's latency (write + fdatasync).
pub fn fdatasync(dir: &Path, plan: Plan) -> anyhow::Result<(f64, Latencies)> {
    let probe = tempfile::Builder::new()
        .prefix(".sagad-bench-fdatasync")
        .tempfile_in(dir)
        .with_context(|| format!("creating an fdatasync probe file in {}", dir.display()))?;
    let mut file = OpenOptions::new().append(true).open(probe.path())?;
    let block = [0x5au8; FSYNC_WRITE_BYTES];
    let mut sync = || -> anyhow::Result<Duration> {
        let start = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        Ok(start.elapsed())
    };
    for _ in 0..FSYNC_WARMUP_SYNCS {
        sync()?;
    }
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < plan.fsync_window {
        samples.push(sync()?);
    }
    let elapsed = start.elapsed();
    if samples.is_empty() {
        bail!("no fdatasync completed in {:?}", plan.fsync_window);
    }
    Ok((
        samples.len() as f64 / elapsed.as_secs_f64(),
        Latencies::new(samples),
    ))
}
