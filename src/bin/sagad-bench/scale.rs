//! `sagad-bench scale`: how the coordinator copes with a big journal, rather
//! than how fast it runs sagas.
//!
//! ```text
//!  finished: seed N COMPLETED W1 sagas ─▶ start sagad serve ─▶ SERVING
//!            ─▶ GetSaga × G (random seeded ids, c1) ─▶ ListSagas(100) × L newest,
//!               × L from random keyset positions ─▶ RSS, heap ─▶ SIGTERM
//!            ─▶ start again ─▶ SERVING ─▶ SIGKILL ─▶ start again ─▶ SERVING
//!            ─▶ SIGTERM ─▶ SCALE finished=…
//!  waiting:  start sagad serve on an empty journal ─▶ SERVING ─▶ settled RSS (baseline)
//!            seed M W1 sagas waiting in backoff (due in 1 h) ─▶ start sagad serve
//!            ─▶ SERVING ─▶ metrics: resumed ─▶ read back (unread 0), active
//!            ─▶ GetSaga of a sample ─▶ settled RSS ─▶ SIGTERM ─▶ SCALE waiting=…
//!  TARGETS   each figure against the targets of issues 5 and 23
//! ```
//!
//! Seeding writes the journal directly (`seed.rs`); everything measured goes
//! through the real `sagad serve` process and its public interfaces (gRPC,
//! health, `/metrics`, `/proc`).
//!
//! What each figure means:
//! - `restart_serving_s`: from spawning `sagad serve` to the first
//!   `grpc.health.v1` answer `SERVING` (polled every [`HEALTH_POLL`]); that is
//!   after every unfinished saga was resumed. `listening_s` is the part until
//!   the coordinator printed its address (journal open, listener bound). The
//!   first start after seeding is a restart after the journal was written in
//!   one session; `restart_again_serving_s` is one more start right after,
//!   and `after_sigkill_serving_s` a start after that one was killed with
//!   SIGKILL once SERVING.
//!   SERVING comes once recovery has claimed every unfinished saga;
//!   `read_back_s` is from the spawn until it had also read every one back
//!   from the journal (`sagad_recovery_unread_sagas` 0, polled every 20 ms),
//!   which it does after SERVING.
//! - GetSaga and ListSagas latencies: one connection, one call at a time, on
//!   the monotonic clock around the call; nearest-rank percentiles.
//!   `health_p50_ms`/`health_p99_ms` are those of as many `grpc.health.v1`
//!   checks just before, on the same connection: the floor of any unary call
//!   on this machine at that moment (no journal read behind it). A deep
//!   ListSagas page passes a random seeded id as `page_token`: the keyset
//!   cursor the page before it would have returned.
//! - `rss_mb`: `VmRSS` once it stopped moving ([`settled_rss`]); `rss_peak_mb`:
//!   `VmHWM`. `heap_mb` and `heap_resident_mb`: the heap at that moment, as
//!   jemalloc counts it (live bytes; physical memory it holds), from
//!   `/metrics`; `store_at_open_mb`: the live heap once the journal was open
//!   and before recovery read anything, which is what the store keeps in
//!   memory for the history it opened (the rest of the heap is the
//!   coordinator's own, and sled's cache as reads filled it). `kb_per_waiting_saga` is (settled RSS with the waiting sagas −
//!   settled RSS of the same build on an empty journal) / waiting sagas: what
//!   resuming them costs, sled's page cache filled by recovery included.
//! - `data_dir_mb`: the data directory on disk after the coordinator stopped.
//!
//! Every answer is also checked (a finished saga is COMPLETED with three steps,
//! a page holds the sagas the keyset says, a waiting saga is RUNNING with one
//! failed attempt and a due time ahead); failures count in `errors`.
//!
//! Invariants: only loopback addresses; the coordinators are stopped however
//! the run ends ([`ChildGuard`]); the data directories are new (an empty or
//! absent `--data-dir`, kept afterwards, or a temporary one, removed).

use std::{
    collections::VecDeque,
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use sagad::{
    proto::v1::{self as pb, coordinator_client::CoordinatorClient},
    saga::SagaId,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    signal::unix::{SignalKind, signal},
};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    ScaleArgs,
    child::ChildGuard,
    procfs,
    report::{ScaleFinishedLine, ScaleWaitingLine, Targets},
    run::{connect, dir_bytes, listening_addr, prepare_empty_dir, spawn_coordinator},
    seed::{self, Script},
    stats::Latencies,
};

/// Finished sagas of a `--quick` run.
const QUICK_FINISHED: usize = 2_000;
/// Waiting sagas of a `--quick` run.
const QUICK_WAITING: usize = 500;
/// GetSaga calls of a full run / a `--quick` one.
const GETS: usize = 10_000;
const QUICK_GETS: usize = 300;
/// ListSagas calls of each kind (newest, deep) of a full run / a `--quick` one.
const LISTS: usize = 1_000;
const QUICK_LISTS: usize = 50;
/// The page size measured.
const PAGE_SIZE: usize = 100;
/// Waiting sagas checked one by one with GetSaga after the restart.
const WAITING_SAMPLE: usize = 100;
/// How often health is polled during a start.
pub const HEALTH_POLL: Duration = Duration::from_millis(2);
/// Longest start accepted (journal open plus recovery) before the run fails.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(300);
/// RSS is read this often while waiting for it to settle ...
const SETTLE_POLL: Duration = Duration::from_millis(250);
/// ... and is settled when this many readings in a row differ by at most 1% ...
const SETTLE_READINGS: usize = 5;
/// ... or when this much time has passed.
const SETTLE_MAX: Duration = Duration::from_secs(20);

/// Runs the scale measurements; a SIGINT or SIGTERM stops them (and the coordinator).
pub async fn scale(args: ScaleArgs) -> anyhow::Result<()> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        result = scale_to_end(args) => result,
        _ = interrupt.recv() => bail!("interrupted (SIGINT): stopping the coordinator"),
        _ = terminate.recv() => bail!("terminated (SIGTERM): stopping the coordinator"),
    }
}

async fn scale_to_end(args: ScaleArgs) -> anyhow::Result<()> {
    let pick =
        |given: Option<usize>, quick, full| given.unwrap_or(if args.quick { quick } else { full });
    let finished = pick(args.finished, QUICK_FINISHED, 1_000_000);
    let waiting = pick(args.waiting, QUICK_WAITING, 100_000);
    let gets = pick(args.gets, QUICK_GETS, GETS);
    let lists = pick(args.lists, QUICK_LISTS, LISTS);
    if finished + waiting == 0 {
        bail!("--finished and --waiting are both 0: nothing to measure");
    }
    // Definitions, logs and (by default) the data directories; removed at the end.
    let scratch = tempfile::Builder::new()
        .prefix("sagad-bench-scale-")
        .tempdir()
        .context("creating a scratch directory")?;
    let root = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => scratch.path().join("data"),
    };
    if args.reuse {
        if args.data_dir.is_none() {
            bail!("--reuse needs the --data-dir of an earlier run");
        }
    } else {
        prepare_empty_dir(&root)?;
    }
    let me = std::env::current_exe().context("finding the sagad-bench executable")?;
    let scale = Scale {
        reuse: args.reuse,
        keep_in_store: args.keep_in_store,
        me: &me,
        scratch: scratch.path(),
    };

    let mut targets = Targets::default();
    if finished > 0 {
        let line = scale
            .finished(&root.join("finished"), finished, gets, lists)
            .await?;
        println!("{line}");
        targets.finished(&line);
    }
    if waiting > 0 {
        let line = scale.waiting(&root, waiting).await?;
        println!("{line}");
        targets.waiting(&line);
    }
    println!("{targets}");
    if let Some(dir) = &args.data_dir {
        eprintln!(
            "sagad-bench: the seeded journals are kept in {}",
            dir.display()
        );
    }
    Ok(())
}

/// The sagas a scenario runs on.
struct Seeded {
    ids: Vec<SagaId>,
    /// How long seeding took; `None` when an earlier seed is reused.
    took: Option<Duration>,
}

/// What every scenario needs.
struct Scale<'a> {
    /// Measure the journals an earlier run seeded (`--reuse`).
    reuse: bool,
    /// Finished sagas stay in sled, and the coordinator keeps them there
    /// (`--keep-in-store`).
    keep_in_store: bool,
    /// This executable (`sagad` is next to it).
    me: &'a Path,
    /// Definitions and logs.
    scratch: &'a Path,
}

/// A coordinator that reached SERVING.
struct Serving {
    child: ChildGuard,
    client: CoordinatorClient<Channel>,
    /// The client's connection.
    channel: Channel,
    metrics: SocketAddr,
    /// From spawn to the listening line.
    listening: Duration,
    /// From spawn to health SERVING.
    serving: Duration,
    /// When it was spawned.
    spawned: Instant,
}

impl Scale<'_> {
    /// Starts `sagad serve` on `dir` and waits for health SERVING, timing both.
    async fn start(&self, dir: &Path, name: &str) -> anyhow::Result<Serving> {
        let log = self.scratch.join(format!("sagad-{name}.log"));
        let keep: &[&std::ffi::OsStr] = if self.keep_in_store {
            &["--history-after".as_ref(), "never".as_ref()]
        } else {
            &[]
        };
        let flags: Vec<&std::ffi::OsStr> = ["--metrics-listen".as_ref(), "127.0.0.1:0".as_ref()]
            .into_iter()
            .chain(keep.iter().copied())
            .collect();
        let metrics_flag = flags.as_slice();
        let spawned = Instant::now();
        let mut child = spawn_coordinator(self.me, dir, self.scratch, &log, metrics_flag)?;
        let addr = listening_addr(&mut child, STARTUP_TIMEOUT)?;
        let listening = spawned.elapsed();
        let url = format!("http://{addr}");
        let channel = connect(&url, 1).await?.remove(0);
        let mut health = HealthClient::new(channel.clone());
        loop {
            let answer = health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await;
            if answer.is_ok_and(|a| a.into_inner().status == ServingStatus::Serving as i32) {
                break;
            }
            child.ensure_running()?;
            if spawned.elapsed() > STARTUP_TIMEOUT {
                bail!(
                    "the coordinator on {} was not SERVING after {STARTUP_TIMEOUT:?}; its log ends:\n{}",
                    dir.display(),
                    child.log_tail()
                );
            }
            tokio::time::sleep(HEALTH_POLL).await;
        }
        let serving = spawned.elapsed();
        const METRICS_PREFIX: &str = "sagad metrics on http://";
        let line = child.line_starting_with(METRICS_PREFIX, STARTUP_TIMEOUT)?;
        let metrics = line[METRICS_PREFIX.len()..]
            .trim()
            .trim_end_matches("/metrics")
            .parse()
            .with_context(|| format!("bad metrics line {line:?}"))?;
        eprintln!(
            "sagad-bench: coordinator (pid {}) on {addr}: listening after {:.3} s, SERVING after {:.3} s",
            child.pid(),
            listening.as_secs_f64(),
            serving.as_secs_f64()
        );
        Ok(Serving {
            child,
            client: CoordinatorClient::new(channel.clone()),
            channel,
            metrics,
            listening,
            serving,
            spawned,
        })
    }

    /// Seeds `n` sagas following `script` into `dir` and keeps their ids in
    /// `dir.ids`; with `--reuse`, takes those of an earlier seed instead.
    async fn seeded(&self, dir: &Path, script: Script, n: usize) -> anyhow::Result<Seeded> {
        let ids_file = dir.with_extension("ids");
        if self.reuse {
            let bytes = std::fs::read(&ids_file).with_context(|| {
                format!(
                    "--reuse: reading the ids of the earlier seed, {}",
                    ids_file.display()
                )
            })?;
            let ids: Vec<SagaId> = bytes
                .chunks_exact(16)
                .map(|c| SagaId::from_bytes(c.try_into().expect("chunks of 16")))
                .collect();
            if ids.len() != n {
                bail!(
                    "--reuse: {} holds {} sagas, not the {n} asked for",
                    dir.display(),
                    ids.len()
                );
            }
            eprintln!(
                "sagad-bench: reusing the {n} sagas seeded in {}",
                dir.display()
            );
            return Ok(Seeded { ids, took: None });
        }
        eprintln!(
            "sagad-bench: seeding {n} sagas ({script:?}) into {}",
            dir.display()
        );
        let seeded = seed::seed(dir, script, n, !self.keep_in_store).await?;
        eprintln!(
            "sagad-bench: seeded in {:.1} s; starting the coordinator on them",
            seeded.took.as_secs_f64()
        );
        let bytes: Vec<u8> = seeded.ids.iter().flat_map(|id| *id.as_bytes()).collect();
        std::fs::write(&ids_file, bytes)
            .with_context(|| format!("writing {}", ids_file.display()))?;
        Ok(Seeded {
            ids: seeded.ids,
            took: Some(seeded.took),
        })
    }

    /// Seeds `n` finished sagas in `dir`, restarts on them, measures reads.
    async fn finished(
        &self,
        dir: &Path,
        n: usize,
        gets: usize,
        lists: usize,
    ) -> anyhow::Result<ScaleFinishedLine> {
        let seeded = self.seeded(dir, Script::Complete, n).await?;
        let mut ids = seeded.ids;
        ids.sort_unstable();
        let mut coordinator = self.start(dir, "finished").await?;
        let pid = coordinator.child.pid();
        let mut errors = Vec::new();

        // The floor: the same number of health checks (no journal behind
        // them) on the same connection, so the GetSaga tail can be read
        // against what any unary call costs on this machine right now.
        eprintln!(
            "sagad-bench: {gets} health checks, then {gets} GetSaga calls on random seeded ids"
        );
        let mut health = HealthClient::new(coordinator.channel.clone());
        let mut health_times = Vec::with_capacity(gets);
        for _ in 0..gets {
            let called = Instant::now();
            let answer = health.check(HealthCheckRequest::default()).await;
            health_times.push(called.elapsed());
            if let Err(s) = answer {
                errors.push(format!("health check: {:?} {}", s.code(), s.message()));
            }
        }
        let mut get_times = Vec::with_capacity(gets);
        for _ in 0..gets {
            let id = ids[fastrand::usize(..ids.len())];
            let called = Instant::now();
            let answer = coordinator
                .client
                .get_saga(pb::GetSagaRequest {
                    id: id.to_string(),
                    ..Default::default()
                })
                .await;
            get_times.push(called.elapsed());
            if let Err(why) = check_finished(id, answer) {
                errors.push(why);
            }
        }

        eprintln!(
            "sagad-bench: {lists} ListSagas pages of {PAGE_SIZE} from the newest, {lists} deeper in"
        );
        let mut newest = Vec::with_capacity(lists);
        let mut deep = Vec::with_capacity(lists);
        for i in 0..2 * lists {
            // Alternate, so both kinds see the same conditions.
            let (token, times) = if i % 2 == 0 {
                (None, &mut newest)
            } else {
                (Some(fastrand::usize(..ids.len())), &mut deep)
            };
            let called = Instant::now();
            let answer = coordinator
                .client
                .list_sagas(pb::ListSagasRequest {
                    page_size: PAGE_SIZE as u32,
                    page_token: token.map(|at| ids[at].to_string()).unwrap_or_default(),
                    ..Default::default()
                })
                .await;
            times.push(called.elapsed());
            if let Err(why) = check_page(&ids, token, answer) {
                errors.push(why);
            }
        }
        let rss = settled_rss(pid).await?;
        let rss_peak = procfs::status_bytes(pid, "VmHWM")?;
        let metrics = scrape(coordinator.metrics).await?;
        let heap = metric_sum(&metrics, "sagad_heap_allocated_bytes", None)
            .zip(metric_sum(&metrics, "sagad_heap_resident_bytes", None))
            .map(|(allocated, resident)| (allocated as u64, resident as u64));
        let heap_at_start =
            metric_sum(&metrics, "sagad_heap_allocated_at_start_bytes", None).map(|b| b as u64);
        stop(&mut coordinator.child)?;
        // Again, now that the store was opened since it was written (sled
        // replays its whole log since the previous open: see BENCHMARKS.md).
        let mut again = self.start(dir, "finished-again").await?;
        // And once more after a crash of that one.
        again.child.kill()?;
        let mut after_kill = self.start(dir, "finished-after-sigkill").await?;
        stop(&mut after_kill.child)?;
        report_errors("finished", &errors);
        let (health, get, newest, deep) = (
            Latencies::new(health_times),
            Latencies::new(get_times),
            Latencies::new(newest),
            Latencies::new(deep),
        );
        Ok(ScaleFinishedLine {
            finished: n,
            seed: seeded.took,
            restart_serving: coordinator.serving,
            listening: coordinator.listening,
            restart_again_serving: again.serving,
            after_sigkill_serving: after_kill.serving,
            health_p50: health.percentile(50.0),
            health_p99: health.percentile(99.0),
            get_p50: get.percentile(50.0),
            get_p99: get.percentile(99.0),
            list_p50: newest.percentile(50.0),
            list_p99: newest.percentile(99.0),
            list_deep_p50: deep.percentile(50.0),
            list_deep_p99: deep.percentile(99.0),
            errors: errors.len(),
            rss,
            rss_peak,
            heap,
            heap_at_start,
            data_dir_bytes: dir_bytes(dir)?,
        })
    }

    /// The baseline on an empty journal, then `n` waiting sagas seeded into
    /// `root/waiting`, a restart on them, and what resuming them cost.
    async fn waiting(&self, root: &Path, n: usize) -> anyhow::Result<ScaleWaitingLine> {
        eprintln!("sagad-bench: baseline: the coordinator on an empty journal");
        let empty = root.join("empty");
        let mut baseline = self.start(&empty, "empty").await?;
        let baseline_rss = settled_rss(baseline.child.pid()).await?;
        stop(&mut baseline.child)?;

        let dir = root.join("waiting");
        let seeded = self.seeded(&dir, Script::WaitInBackoff, n).await?;
        let mut coordinator = self.start(&dir, "waiting").await?;
        let pid = coordinator.child.pid();
        let metrics = scrape(coordinator.metrics).await?;
        let resumed = metric_sum(&metrics, "sagad_recovery_resumed_sagas", None)
            .context("no sagad_recovery_resumed_sagas in /metrics")?;
        let metrics = read_back(&coordinator).await?;
        let read_back = coordinator.spawned.elapsed();
        eprintln!(
            "sagad-bench: every saga read back {:.3} s after the spawn",
            read_back.as_secs_f64()
        );
        let active =
            metric_sum(&metrics, "sagad_sagas_active", Some("state=\"running\"")).unwrap_or(0.0);
        let mut errors = Vec::new();
        if resumed as usize != n || active as usize != n {
            errors.push(format!(
                "{n} waiting sagas seeded, but /metrics says {resumed} resumed and {active} running"
            ));
        }
        for _ in 0..WAITING_SAMPLE.min(n) {
            let id = seeded.ids[fastrand::usize(..n)];
            let answer = coordinator
                .client
                .get_saga(pb::GetSagaRequest {
                    id: id.to_string(),
                    ..Default::default()
                })
                .await;
            if let Err(why) = check_waiting(id, answer) {
                errors.push(why);
            }
        }
        let rss = settled_rss(pid).await?;
        let rss_peak = procfs::status_bytes(pid, "VmHWM")?;
        let stopping = Instant::now();
        stop(&mut coordinator.child)?;
        let stop_took = stopping.elapsed();
        report_errors("waiting", &errors);
        Ok(ScaleWaitingLine {
            waiting: n,
            seed: seeded.took,
            restart_serving: coordinator.serving,
            listening: coordinator.listening,
            resumed: resumed as usize,
            read_back,
            active_running: active as usize,
            checked: WAITING_SAMPLE.min(n),
            errors: errors.len(),
            rss,
            rss_peak,
            baseline_rss,
            stop: stop_took,
            data_dir_bytes: dir_bytes(&dir)?,
        })
    }
}

/// A seeded finished saga must read back COMPLETED, with its three steps.
fn check_finished(
    id: SagaId,
    answer: Result<tonic::Response<pb::Saga>, tonic::Status>,
) -> Result<(), String> {
    let saga = answer
        .map_err(|s| format!("GetSaga {id}: {:?} {}", s.code(), s.message()))?
        .into_inner();
    let done = saga
        .steps
        .iter()
        .all(|s| s.state == pb::StepState::Succeeded as i32);
    if saga.id != id.to_string()
        || saga.state != pb::SagaState::Completed as i32
        || saga.steps.len() != 3
        || !done
    {
        return Err(format!(
            "GetSaga {id}: expected COMPLETED with 3 succeeded steps, got state {} with {} steps",
            saga.state,
            saga.steps.len()
        ));
    }
    Ok(())
}

/// A page must hold exactly the sagas the keyset says: the `PAGE_SIZE` ids
/// before `ids[at]` (before the end without a token), newest first.
fn check_page(
    ids: &[SagaId],
    at: Option<usize>,
    answer: Result<tonic::Response<pb::ListSagasResponse>, tonic::Status>,
) -> Result<(), String> {
    let page = answer
        .map_err(|s| format!("ListSagas: {:?} {}", s.code(), s.message()))?
        .into_inner();
    let end = at.unwrap_or(ids.len());
    let expected: Vec<String> = ids[end.saturating_sub(PAGE_SIZE)..end]
        .iter()
        .rev()
        .map(SagaId::to_string)
        .collect();
    let got: Vec<&String> = page.summaries.iter().map(|s| &s.id).collect();
    if got != expected.iter().collect::<Vec<_>>() {
        return Err(format!(
            "ListSagas before {}: {} sagas, not the {} expected (first {:?}, expected {:?})",
            at.map_or("the end".into(), |at| ids[at].to_string()),
            got.len(),
            expected.len(),
            got.first(),
            expected.first()
        ));
    }
    Ok(())
}

/// A seeded waiting saga must read back RUNNING, its first step's single
/// forward attempt failed and the next one due later (recovery added nothing).
fn check_waiting(
    id: SagaId,
    answer: Result<tonic::Response<pb::Saga>, tonic::Status>,
) -> Result<(), String> {
    let saga = answer
        .map_err(|s| format!("GetSaga {id}: {:?} {}", s.code(), s.message()))?
        .into_inner();
    let now = std::time::SystemTime::now();
    let step = saga.steps.first();
    let due_later = step
        .and_then(|s| s.next_attempt_at)
        .and_then(|t| std::time::SystemTime::try_from(t).ok())
        .is_some_and(|due| due > now);
    let one_attempt = step.is_some_and(|s| s.forward_attempts == 1 && s.attempts.len() == 1);
    if saga.state != pb::SagaState::Running as i32 || !one_attempt || !due_later {
        return Err(format!(
            "GetSaga {id}: expected RUNNING with one failed attempt and a due time ahead, got {saga:?}"
        ));
    }
    Ok(())
}

fn report_errors(scenario: &str, errors: &[String]) {
    for why in errors.iter().take(5) {
        eprintln!("sagad-bench: {scenario}: error: {why}");
    }
}

/// SIGTERM, and a word if the coordinator did not exit cleanly.
fn stop(child: &mut ChildGuard) -> anyhow::Result<()> {
    let status = child.stop()?;
    if !status.success() {
        eprintln!(
            "sagad-bench: the coordinator exited {status} at SIGTERM; its log ends:\n{}",
            child.log_tail()
        );
    }
    Ok(())
}

/// `VmRSS` once [`SETTLE_READINGS`] readings in a row are within 1% (or after
/// [`SETTLE_MAX`]): what the process holds when nothing is going on.
async fn settled_rss(pid: u32) -> anyhow::Result<u64> {
    let began = Instant::now();
    let mut readings = VecDeque::with_capacity(SETTLE_READINGS);
    loop {
        let rss = procfs::status_bytes(pid, "VmRSS")?;
        if readings.len() == SETTLE_READINGS {
            readings.pop_front();
        }
        readings.push_back(rss);
        let (low, high) = readings
            .iter()
            .fold((u64::MAX, 0), |(l, h), &r| (l.min(r), h.max(r)));
        if (readings.len() == SETTLE_READINGS && high - low <= high / 100)
            || began.elapsed() > SETTLE_MAX
        {
            return Ok(rss);
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
}

/// Polls `/metrics` until the coordinator's start-up recovery has read back
/// every saga it resumed (`sagad_recovery_unread_sagas` is 0); that scrape.
async fn read_back(coordinator: &Serving) -> anyhow::Result<String> {
    loop {
        let metrics = scrape(coordinator.metrics).await?;
        if metric_sum(&metrics, "sagad_recovery_unread_sagas", None) == Some(0.0) {
            return Ok(metrics);
        }
        if coordinator.spawned.elapsed() > STARTUP_TIMEOUT {
            bail!("the coordinator had not read back every resumed saga after {STARTUP_TIMEOUT:?}");
        }
        tokio::time::sleep(HEALTH_POLL * 10).await;
    }
}

/// The text of `GET /metrics`.
async fn scrape(addr: SocketAddr) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to the metrics endpoint {addr}"))?;
    stream
        .write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8(response).context("the metrics are not UTF-8")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("no end of headers in the metrics response")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!(
            "GET /metrics answered {}",
            head.lines().next().unwrap_or_default()
        );
    }
    Ok(body.to_string())
}

/// The sum of a metric's samples (those whose labels contain `label`, if
/// given); `None` when there are none.
fn metric_sum(text: &str, name: &str, label: Option<&str>) -> Option<f64> {
    let mut sum = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, labels) = series.split_once('{').unwrap_or((series, ""));
        if metric == name
            && label.is_none_or(|l| labels.contains(l))
            && let Ok(v) = value.parse::<f64>()
        {
            *sum.get_or_insert(0.0) += v;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sums_pick_the_series_asked_for() {
        let text = "# HELP sagad_sagas_active x\n\
                    sagad_sagas_active{definition=\"a\",state=\"running\"} 3\n\
                    sagad_sagas_active{definition=\"b\",state=\"running\"} 4\n\
                    sagad_sagas_active{definition=\"a\",state=\"compensating\"} 5\n\
                    sagad_sagas_active_other 9\n\
                    sagad_recovery_resumed_sagas 7\n";
        assert_eq!(
            metric_sum(text, "sagad_sagas_active", Some("state=\"running\"")),
            Some(7.0)
        );
        assert_eq!(
            metric_sum(text, "sagad_recovery_resumed_sagas", None),
            Some(7.0)
        );
        assert_eq!(metric_sum(text, "sagad_missing", None), None);
    }
}
