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
//!
//! With the PostgreSQL journal, also PostgreSQL's own commit ceiling, in the
//! run's database ([`pg_commits`]): one-row INSERTs, each its own transaction
//! (autocommit) with `synchronous_commit` on, so each answer is one durable
//! COMMIT. In closed loop over 64 connections (commits/s: PostgreSQL's group
//! commit of the WAL at work) and over one (commits/s and p50). A journal
//! write is a transaction, so `pg_bound = pg_commits_per_s / 4` and
//! `pg_c1_floor = 4 × echo p50 + 4 × commit p50` play the roles of
//! `rpc_bound` and `c1_floor` (`report::PgLimitLine`).

use std::{
    fs::OpenOptions,
    io::Write,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use sagad::proto::v1::{self as pb, participant_service_client::ParticipantServiceClient};
use tokio_postgres::Client;
use tonic::transport::Channel;

use crate::{participants::ECHO_STEP, pg::Database, stats::Latencies};

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
    /// The PostgreSQL commit throughput window (many connections).
    pub commit_window: Duration,
    /// The PostgreSQL commit latency window (one connection).
    pub commit_c1_window: Duration,
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

/// The commit probe's table, in a schema of its own (dropped afterwards, so
/// the database's size at the end is the journal's).
const COMMIT_PROBE_SETUP: &str = "CREATE SCHEMA sagad_bench; \
     CREATE TABLE sagad_bench.commit_probe (lane int NOT NULL, n bigint NOT NULL, \
     PRIMARY KEY (lane, n))";
const COMMIT_PROBE_INSERT: &str = "INSERT INTO sagad_bench.commit_probe (lane, n) VALUES ($1, $2)";
const COMMIT_PROBE_TEARDOWN: &str = "DROP SCHEMA sagad_bench CASCADE";

/// PostgreSQL's commit ceiling in the run's database.
pub struct PgCommits {
    /// Commits per second over `concurrency` connections.
    pub per_s: f64,
    /// Commits per second over one connection.
    pub c1_per_s: f64,
    /// Each commit's latency over one connection.
    pub c1: Latencies,
}

/// One-row autocommit INSERTs in closed loop over `concurrency` connections,
/// then over one; see the module docs.
pub async fn pg_commits(
    db: &Database,
    concurrency: usize,
    plan: Plan,
) -> anyhow::Result<PgCommits> {
    let setup = db.connect().await?;
    setup
        .batch_execute(COMMIT_PROBE_SETUP)
        .await
        .context("creating the commit probe's table")?;
    let mut clients = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let client = db.connect().await?;
        // The server's default may be off; the journal's writer raises it
        // for its own session the same way (journal/postgres/writer.rs).
        client
            .batch_execute("SET synchronous_commit = on")
            .await
            .context("turning synchronous_commit on")?;
        clients.push(client);
    }

    let window_start = Instant::now() + plan.warmup;
    let window_end = window_start + plan.commit_window;
    let mut lanes = Vec::with_capacity(concurrency);
    for (lane, client) in clients.into_iter().enumerate() {
        lanes.push(tokio::spawn(async move {
            let insert = client.prepare(COMMIT_PROBE_INSERT).await?;
            let mut counted = 0u64;
            for n in 0i64.. {
                let start = Instant::now();
                if start >= window_end {
                    break;
                }
                client.execute(&insert, &[&(lane as i32), &n]).await?;
                if start >= window_start && Instant::now() <= window_end {
                    counted += 1;
                }
            }
            Ok::<_, tokio_postgres::Error>((counted, client))
        }));
    }
    let mut commits = 0;
    let mut one = None;
    for lane in lanes {
        let (counted, client) = lane.await?.context("a commit probe INSERT failed")?;
        commits += counted;
        // Every other connection closes here.
        one.get_or_insert(client);
    }
    let per_s = commits as f64 / plan.commit_window.as_secs_f64();

    let one = one.context("the commit probe had no connection")?;
    let (c1_per_s, c1) = commit_latency(&one, plan)
        .await
        .context("a commit probe INSERT failed")?;
    setup
        .batch_execute(COMMIT_PROBE_TEARDOWN)
        .await
        .context("dropping the commit probe's table")?;
    Ok(PgCommits {
        per_s,
        c1_per_s,
        c1,
    })
}

/// Commits per second and each commit's latency, one at a time on `client`
/// (lane numbers past the concurrent lanes', so no key is taken twice).
async fn commit_latency(
    client: &Client,
    plan: Plan,
) -> Result<(f64, Latencies), tokio_postgres::Error> {
    let insert = client.prepare(COMMIT_PROBE_INSERT).await?;
    let window_start = Instant::now() + plan.warmup;
    let window_end = window_start + plan.commit_c1_window;
    let mut samples = Vec::new();
    for n in 0i64.. {
        let start = Instant::now();
        if start >= window_end {
            break;
        }
        client.execute(&insert, &[&-1i32, &n]).await?;
        if start >= window_start {
            samples.push(start.elapsed());
        }
    }
    let per_s = samples.len() as f64 / plan.commit_c1_window.as_secs_f64();
    Ok((per_s, Latencies::new(samples)))
}
