//! `sagad-bench run`, start to finish:
//!
//! ```text
//!  participants process ──▶ LIMIT (echo c64, echo c1, fdatasync)
//!        │
//!  --journal postgres: a fresh database (pg.rs) ──▶ LIMIT (commits c64, c1)
//!        │
//!  coordinator (sagad serve, empty data dir, the bench definition);
//!  on PostgreSQL, --nodes of them on the one database, node-1 first
//!        │  register the three participants with each
//!        ▼
//!  run1: W1 c64 · W2 c64 · W1 c1   (each: warm-up, measurement, RESULT,
//!  run2: …                           NODE lines on PostgreSQL; with --floor,
//!        ▼                           then the same on sagad-floor)
//!  stop the coordinators (SIGTERM), the database's size and drop, SUMMARY,
//!  stop the participants
//! ```
//!
//! Invariants:
//! - The measurements of every run go to the same coordinators, started on an
//!   empty data directory or an empty database (unless `--addr` names one
//!   that is already running).
//! - With several coordinators, the load's connections are interleaved over
//!   them (`connect_nodes`), so its lanes spread round-robin; a saga is run
//!   to its end by the node it was started on, which is how the NODE lines
//!   count each node's sagas.
//! - Every child process is stopped however the run ends ([`ChildGuard`], and
//!   the throwaway PostgreSQL server's own guard); a SIGINT or SIGTERM to the
//!   bench ends the run the same way.
//! - Only loopback addresses are used (unless `--pg-url` names another host).

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use sagad::proto::v1::{
    self as pb, coordinator_client::CoordinatorClient,
    participant_service_client::ParticipantServiceClient,
};
use tokio::signal::unix::{SignalKind, signal};
use tonic::{
    Code,
    transport::{Channel, Endpoint},
};

use crate::{
    JournalKind, RunArgs, check,
    check::Workload,
    child::ChildGuard,
    failover,
    limit::{self, Plan},
    load::{self, Load, LoadResult, SagaSource},
    participants, pg,
    procfs::{self, RssSampler},
    report::{self, Cluster, LimitLine, NodeLine, PgLimitLine, ResultLine},
    stats::Latencies,
};

/// Sagas of a full c64 measurement.
const C64_SAGAS: usize = 20_000;
/// Sagas of a full c1 measurement.
const C1_SAGAS: usize = 2_000;
/// Sagas of a `--quick` c64 measurement.
const QUICK_C64_SAGAS: usize = 300;
/// Sagas of a `--quick` c1 measurement.
const QUICK_C1_SAGAS: usize = 100;
/// Warm-up sagas before each measurement, at most (docs/workload.md: min(200, N)).
const WARMUP_SAGAS: usize = 200;
/// Concurrency of the c64 measurements and of the echo throughput probe.
const HIGH_CONCURRENCY: usize = 64;
/// W2 sagas per measurement whose compensation order is also checked in the journal.
const ORDER_CHECK_SAMPLE: usize = 100;
/// How long a child may take to announce its address, and the coordinator to
/// become ready.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often registration is retried while the coordinator is still recovering.
const READY_POLL: Duration = Duration::from_millis(50);
/// The definition the bench writes and starts.
pub(crate) const DEFINITION: &str = "sagad-bench-order";
/// The saga's steps and their participants (the announced service, and the
/// registered name, prefixed so a shared coordinator's own participants are kept).
pub(crate) const STEPS: [(&str, &str); 3] = [
    ("reserve-inventory", "inventory"),
    ("charge-payment", "payments"),
    ("ship-order", "shipping"),
];
/// How many failure reasons of a measurement are shown on stderr.
const ERRORS_SHOWN: usize = 5;

/// One line of the measurement table.
struct Measurement {
    workload: Workload,
    concurrency: usize,
    sagas: usize,
}

/// The measurement set, in the order of docs/workload.md.
fn measurements(args: &RunArgs) -> [Measurement; 3] {
    let (c64, c1) = match (args.sagas_per_measurement, args.quick) {
        (Some(n), _) => (n, (n / 10).max(1)),
        (None, true) => (QUICK_C64_SAGAS, QUICK_C1_SAGAS),
        (None, false) => (C64_SAGAS, C1_SAGAS),
    };
    let m = |workload, concurrency, sagas| Measurement {
        workload,
        concurrency,
        sagas,
    };
    [
        m(Workload::W1, HIGH_CONCURRENCY, c64),
        m(Workload::W2, HIGH_CONCURRENCY, c64),
        m(Workload::W1, 1, c1),
    ]
}

fn plan(quick: bool) -> Plan {
    if quick {
        Plan {
            warmup: Duration::from_millis(200),
            echo_window: Duration::from_secs(1),
            echo_c1_window: Duration::from_millis(500),
            fsync_window: Duration::from_millis(500),
            commit_window: Duration::from_secs(1),
            commit_c1_window: Duration::from_millis(500),
        }
    } else {
        Plan {
            warmup: Duration::from_millis(500),
            echo_window: Duration::from_secs(3),
            echo_c1_window: Duration::from_secs(2),
            fsync_window: Duration::from_secs(2),
            commit_window: Duration::from_secs(3),
            commit_c1_window: Duration::from_secs(2),
        }
    }
}

pub(crate) fn registered_name(service: &str) -> String {
    format!("bench-{service}")
}

/// Runs the benchmark; a SIGINT or SIGTERM stops it (and its children).
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        result = run_to_end(args) => result,
        _ = interrupt.recv() => bail!("interrupted (SIGINT): stopping the child processes"),
        _ = terminate.recv() => bail!("terminated (SIGTERM): stopping the child processes"),
    }
}

async fn run_to_end(args: RunArgs) -> anyhow::Result<()> {
    if args.runs == 0 || args.channels == 0 {
        bail!("--runs and --channels must be at least 1");
    }
    if args.journal == JournalKind::Sled && (args.pg_url.is_some() || args.nodes > 1) {
        bail!("--pg-url and --nodes are for --journal postgres");
    }
    let plan = plan(args.quick);
    // With PostgreSQL, what the RESULT and SUMMARY lines add; sled's lines are
    // those of before.
    let cluster = (args.journal == JournalKind::Postgres).then_some(Cluster {
        journal: args.journal.as_str(),
        nodes: usize::from(args.nodes),
    });
    // Definitions, logs and (by default) the data directory; removed at the end.
    // Declared first so that it is dropped last, after the children are stopped.
    let scratch = tempfile::Builder::new()
        .prefix("sagad-bench-")
        .tempdir()
        .context("creating a scratch directory")?;
    let own_coordinator = args.addr.is_none();
    let data_dir = match &args.data_dir {
        Some(dir) => Some(dir.clone()),
        None if own_coordinator => Some(scratch.path().join("data")),
        None => None,
    };
    if own_coordinator && let Some(dir) = &data_dir {
        prepare_empty_dir(dir)?;
    }
    let me = std::env::current_exe().context("finding the sagad-bench executable")?;

    // The participants, and the physical limit (before the coordinator runs).
    let mut participants = ChildGuard::spawn(
        "participants process",
        &me,
        &[
            "participants".as_ref(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
        ],
        &scratch.path().join("participants.log"),
    )?;
    let announce = participants.line_starting_with(participants::ANNOUNCE, STARTUP_TIMEOUT)?;
    let services = parse_announce(&announce)?;
    eprintln!("sagad-bench: {announce}");
    let probe_dir = match (&data_dir, own_coordinator) {
        (Some(dir), true) => dir.clone(),
        (Some(dir), false) => dir.parent().unwrap_or(Path::new(".")).to_path_buf(),
        (None, _) => std::env::temp_dir(),
    };
    let limit = measure_limit(&services, args.channels, &probe_dir, plan).await?;
    println!("{limit}");

    // The database, and PostgreSQL's own limit in it (before the
    // coordinators run). Declared before them: dropped after they stopped.
    let database = match args.journal {
        JournalKind::Postgres => Some(pg::Database::create(args.pg_url.as_deref()).await?),
        JournalKind::Sled => None,
    };
    let pg_limit = match &database {
        Some(db) => {
            let pg = measure_pg_limit(db, plan).await?;
            println!("{}", pg.line(&limit));
            Some(pg)
        }
        None => None,
    };

    // The coordinators, and the load's connections to them.
    let (mut nodes, urls, source) = match &args.addr {
        Some(addr) => (Vec::new(), vec![addr.clone()], inline_source()),
        None => {
            let dir = data_dir
                .as_deref()
                .context("own coordinator has a data dir")?;
            let journal = database.as_ref().map(|db| db.url.as_str());
            let lease = failover_lease(args.quick);
            let nodes = start_coordinators(&me, dir, scratch.path(), journal, args.nodes, lease)?;
            let urls = nodes.iter().map(|n| format!("http://{}", n.addr)).collect();
            (nodes, urls, SagaSource::Definition(DEFINITION.into()))
        }
    };
    let server_pids: Vec<u32> = match &args.addr {
        Some(_) => args.server_pid.into_iter().collect(),
        None => nodes.iter().map(|n| n.child.pid()).collect(),
    };
    let (clients, client_node) = connect_nodes(&urls, args.channels).await?;
    // Each node keeps its own registry of participants (read from the
    // journal at its start): every one is told.
    for first in &clients[..urls.len()] {
        register_participants(first, &services, args.protocol).await?;
    }

    // The floor, if asked for: the same measurements right after each of sagad's.
    let mut floor = match args.floor {
        true => Some(Floor::start(&me, scratch.path(), args.channels, &services).await?),
        false => None,
    };

    let mut peak_rss = None;
    for run in 1..=args.runs {
        for m in measurements(&args) {
            for node in &mut nodes {
                node.child.ensure_running()?;
            }
            participants.ensure_running()?;
            let pids = Pids {
                servers: &server_pids,
                worker: participants.pid(),
            };
            let target = Target {
                peer: "sagad",
                cluster,
                clients: &clients,
                client_node: &client_node,
                source: &source,
                journal_order: true,
            };
            let measured = measure(target, &m, run, args.duration_cap, pids).await?;
            let line = &measured.line;
            peak_rss = peak_rss.max(line.server_rss_peak_bytes);
            println!("{line}");
            if cluster.is_some() {
                for (node, share) in nodes.iter().zip(&measured.nodes) {
                    println!(
                        "{}",
                        NodeLine {
                            run,
                            workload: m.workload.as_str(),
                            conc: m.concurrency,
                            node: node.id.clone(),
                            sagas: share.sagas,
                            cpu_s: share.cpu_s,
                            rss_peak_bytes: share.rss_peak_bytes,
                        }
                    );
                }
            }
            match (m.workload, m.concurrency) {
                (Workload::W1, HIGH_CONCURRENCY) => {
                    println!("{}", report::ratio_tput(run, line.tput_per_s(), &limit));
                    if let Some(pg) = &pg_limit {
                        println!("{}", report::ratio_pg_tput(run, line.tput_per_s(), pg));
                    }
                }
                (Workload::W1, 1) => {
                    println!("{}", report::ratio_c1(run, line.p50, &limit));
                    if let Some(pg) = &pg_limit {
                        println!("{}", report::ratio_pg_c1(run, line.p50, &limit, pg));
                    }
                }
                _ => {}
            }
            if let Some(floor) = &mut floor {
                // What sagad does after a measurement (its last checkpoint)
                // would otherwise be taken from the floor's.
                for &pid in &server_pids {
                    settle(pid).await?;
                }
                floor.child.ensure_running()?;
                let floor_pid = [floor.child.pid()];
                let pids = Pids {
                    servers: &floor_pid,
                    worker: participants.pid(),
                };
                let floor_line = measure(floor.target(), &m, run, args.duration_cap, pids)
                    .await?
                    .line;
                println!("{floor_line}");
                println!("{}", report::ratio_floor(line, &floor_line));
            }
        }
    }
    if let Some(mut floor) = floor {
        drop(floor.clients);
        floor.child.stop()?;
    }

    // The failover, with two nodes or more: the last one dies.
    let mut killed = None;
    if let Some(db) = &database
        && nodes.len() >= 2
    {
        let victim = nodes.len() - 1;
        let victim_id = nodes[victim].id.clone();
        let (victim_clients, survivors): (Vec<_>, Vec<_>) = clients
            .iter()
            .zip(&client_node)
            .partition(|(_, node)| **node == victim);
        let survivors: Vec<_> = survivors.into_iter().map(|(c, _)| c.clone()).collect();
        let victim_node = &mut nodes[victim];
        let roles = failover::Roles {
            victim_id: &victim_id,
            victim: victim_clients[0].0,
            survivors: &survivors,
            kill: Box::new(move || victim_node.child.kill()),
        };
        let sagas = if args.quick { 200 } else { FAILOVER_SAGAS };
        let line =
            failover::measure(&db.url, roles, &source, sagas, failover_lease(args.quick)).await?;
        println!("{line}");
        killed = Some(victim);
    }

    // The end: the coordinators' lifetime peak, a clean stop, the journal's size.
    for &pid in &server_pids {
        if let Ok(hwm) = procfs::status_bytes(pid, "VmHWM") {
            peak_rss = peak_rss.max(Some(hwm));
        }
    }
    drop(clients);
    for (i, node) in nodes.iter_mut().enumerate() {
        let status = node.child.stop()?;
        if !status.success() && killed != Some(i) {
            eprintln!(
                "sagad-bench: the coordinator {} exited {status} at SIGTERM; its log ends:\n{}",
                node.id,
                node.child.log_tail()
            );
        }
    }
    let data_dir_bytes = data_dir.as_deref().map(dir_bytes).transpose()?;
    let database_bytes = match database {
        Some(db) => Some(db.finish().await?),
        None => None,
    };
    participants.stop()?;
    println!(
        "{}",
        report::summary(peak_rss, data_dir_bytes, cluster.zip(database_bytes))
    );
    if let Some(dir) = &args.data_dir {
        eprintln!("sagad-bench: the journal is kept in {}", dir.display());
    }
    Ok(())
}

/// Waiting sagas the failover measurement moves (`--quick`: 200).
const FAILOVER_SAGAS: usize = 5_000;

/// The nodes' lease: sagad's default, or 2 s for `--quick` (a quick run
/// tests the measurement, it does not report it).
fn failover_lease(quick: bool) -> Duration {
    if quick {
        Duration::from_secs(2)
    } else {
        sagad::journal::postgres::LEASE_TTL
    }
}

/// A coordinator the bench started.
struct Node {
    /// Its `--node-id` (`node-1`, …; on sled, not passed).
    id: String,
    child: ChildGuard,
    addr: SocketAddr,
}

/// Starts the coordinator on sled in `data_dir` (`journal` None), or `nodes`
/// coordinators on the PostgreSQL database `journal`, each with a data
/// directory of its own under `data_dir` (for the webhook's ledger and the
/// archive). One at a time: the first creates the tables.
fn start_coordinators(
    me: &Path,
    data_dir: &Path,
    scratch: &Path,
    journal: Option<&str>,
    nodes: u8,
    lease: Duration,
) -> anyhow::Result<Vec<Node>> {
    let Some(url) = journal else {
        let (child, addr) = start_coordinator(me, data_dir, scratch)?;
        return Ok(vec![Node {
            id: "sagad".into(),
            child,
            addr,
        }]);
    };
    let mut started = Vec::with_capacity(nodes.into());
    for n in 1..=nodes {
        let id = format!("node-{n}");
        let dir = data_dir.join(&id);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let lease = format!("{}ms", lease.as_millis());
        let extra: [&std::ffi::OsStr; 6] = [
            "--journal".as_ref(),
            url.as_ref(),
            "--node-id".as_ref(),
            id.as_ref(),
            "--lease-ttl".as_ref(),
            lease.as_ref(),
        ];
        let log = scratch.join(format!("sagad-{id}.log"));
        let mut child = spawn_coordinator(me, &dir, scratch, &log, &extra)?;
        let addr = listening_addr(&mut child, STARTUP_TIMEOUT)?;
        eprintln!(
            "sagad-bench: coordinator {id} (pid {}) on {addr}, journal in PostgreSQL",
            child.pid()
        );
        started.push(Node { id, child, addr });
    }
    Ok(started)
}

/// Connections to each of `urls` (`channels` in all, rounded up to a
/// multiple of their number), interleaved: client `i` goes to url `i % n`.
/// The load's lanes take clients round-robin, so they spread evenly over
/// the coordinators. Returns the clients and, for each, its url's index.
async fn connect_nodes(
    urls: &[String],
    channels: usize,
) -> anyhow::Result<(Vec<CoordinatorClient<Channel>>, Vec<usize>)> {
    let per_node = channels.div_ceil(urls.len());
    let mut by_node = Vec::with_capacity(urls.len());
    for url in urls {
        by_node.push(connect(url, per_node).await?);
    }
    let mut clients = Vec::with_capacity(per_node * urls.len());
    let mut client_node = Vec::with_capacity(per_node * urls.len());
    for i in 0..per_node {
        for (node, channels) in by_node.iter().enumerate() {
            clients.push(CoordinatorClient::new(channels[i].clone()));
            client_node.push(node);
        }
    }
    Ok((clients, client_node))
}

/// How often [`settle`] looks, how long a process must have been quiet, and
/// for how long it waits at most.
const SETTLE_POLL: Duration = Duration::from_millis(100);
const SETTLE_QUIET: Duration = Duration::from_millis(500);
const SETTLE_MAX: Duration = Duration::from_secs(10);

/// Waits until process `pid` has used no more than a clock tick of CPU for
/// [`SETTLE_QUIET`], or [`SETTLE_MAX`] passed (then says so on stderr).
async fn settle(pid: u32) -> anyhow::Result<()> {
    let start = tokio::time::Instant::now();
    let mut quiet_since = start;
    let mut last = procfs::cpu_seconds(Some(pid))?;
    while start.elapsed() < SETTLE_MAX {
        tokio::time::sleep(SETTLE_POLL).await;
        let now = procfs::cpu_seconds(Some(pid))?;
        if now - last > 0.01 {
            quiet_since = tokio::time::Instant::now();
        } else if quiet_since.elapsed() >= SETTLE_QUIET {
            return Ok(());
        }
        last = now;
    }
    eprintln!("sagad-bench: the coordinator was still busy {SETTLE_MAX:?} after a measurement");
    Ok(())
}

/// Where a measurement's sagas go.
struct Target<'a> {
    /// The RESULT line's `peer`.
    peer: &'static str,
    /// The RESULT line's journal and node count, when not sled's single node.
    cluster: Option<Cluster>,
    clients: &'a [CoordinatorClient<Channel>],
    /// For each client, the index of the coordinator it is connected to
    /// (in `Pids::servers`).
    client_node: &'a [usize],
    source: &'a SagaSource,
    /// Whether W2's compensation order is also checked in the journal
    /// (`WatchSaga`; `sagad-floor` has no journal to read).
    journal_order: bool,
}

/// `sagad-floor` (`run --floor`): the least a durable coordinator can do here.
struct Floor {
    child: ChildGuard,
    clients: Vec<CoordinatorClient<Channel>>,
    /// All zeros: one server.
    client_node: Vec<usize>,
    source: SagaSource,
}

impl Floor {
    /// Starts `sagad-floor` (next to this executable) with its log in
    /// `scratch/floor`, connects, and registers the participants with it.
    async fn start(
        me: &Path,
        scratch: &Path,
        channels: usize,
        services: &HashMap<String, SocketAddr>,
    ) -> anyhow::Result<Self> {
        let program = sibling(me, "sagad-floor")?;
        let dir = scratch.join("floor");
        let mut child = ChildGuard::spawn(
            "sagad-floor",
            &program,
            &[
                "--data-dir".as_ref(),
                dir.as_os_str(),
                "--listen".as_ref(),
                "127.0.0.1:0".as_ref(),
            ],
            &scratch.join("floor.log"),
        )?;
        let addr = announced_addr(&mut child, "sagad-floor listening on ", STARTUP_TIMEOUT)?;
        eprintln!("sagad-bench: sagad-floor (pid {}) on {addr}", child.pid());
        let clients: Vec<_> = connect(&format!("http://{addr}"), channels)
            .await?
            .into_iter()
            .map(CoordinatorClient::new)
            .collect();
        register_participants(&clients[0], services, crate::ProtocolKind::Grpc).await?;
        Ok(Self {
            child,
            client_node: vec![0; clients.len()],
            clients,
            source: inline_source(),
        })
    }

    fn target(&self) -> Target<'_> {
        Target {
            peer: "floor",
            cluster: None,
            clients: &self.clients,
            client_node: &self.client_node,
            source: &self.source,
            journal_order: false,
        }
    }
}

/// A measurement's line, and each coordinator's share of it.
struct Measured {
    line: ResultLine,
    /// In the order of `Pids::servers`.
    nodes: Vec<NodeShare>,
}

/// One coordinator's share of a measurement.
struct NodeShare {
    /// Sagas started on it that ended right.
    sagas: usize,
    cpu_s: f64,
    rss_peak_bytes: u64,
}

/// Warm-up, then the measurement with its CPU and RSS figures.
async fn measure(
    target: Target<'_>,
    m: &Measurement,
    run: usize,
    cap: Duration,
    pids: Pids<'_>,
) -> anyhow::Result<Measured> {
    let Target {
        peer,
        cluster,
        clients,
        client_node,
        source,
        journal_order,
    } = target;
    // sagad's names are those of the runs without a floor.
    let prefix = if peer == "sagad" { "" } else { "floor " };
    let name = format!(
        "{prefix}run{run} {} c{}",
        m.workload.as_str(),
        m.concurrency
    );
    let tag = format!(
        "{}run{run}-{}-c{}",
        prefix.replace(' ', "-"),
        m.workload.as_str(),
        m.concurrency
    );
    let warmup = Load {
        workload: m.workload,
        concurrency: m.concurrency,
        sagas: WARMUP_SAGAS.min(m.sagas),
        cap,
        tag: format!("{tag}-warmup"),
    };
    eprintln!(
        "sagad-bench: {name}: warm-up of {} sagas, then {} sagas",
        warmup.sagas, m.sagas
    );
    let warmed = load::drive(clients, source, &warmup).await?;
    if !warmed.errors.is_empty() {
        eprintln!(
            "sagad-bench: {name}: {} of {} warm-up sagas failed (not counted), e.g. {}",
            warmed.errors.len(),
            warmed.started,
            warmed.errors[0]
        );
    }

    let load = Load {
        workload: m.workload,
        concurrency: m.concurrency,
        sagas: m.sagas,
        cap,
        tag,
    };
    let cpu_before = cpu_now(pids)?;
    let machine_before = procfs::MachineTicks::now()?;
    let samplers: Vec<RssSampler> = pids
        .servers
        .iter()
        .copied()
        .map(RssSampler::start)
        .collect();
    let mut result = load::drive(clients, source, &load).await?;
    let rss_peaks: Vec<u64> = samplers.into_iter().map(RssSampler::finish).collect();
    let cpu_after = cpu_now(pids)?;
    let (busy, idle, steal) = machine_before.shares_until(&procfs::MachineTicks::now()?);
    eprintln!(
        "sagad-bench: {name}: the machine's CPUs were {busy:.0}% busy, {idle:.0}% idle, \
         {steal:.0}% stolen by the host (a run with steal is a disturbed run)"
    );

    if m.workload == Workload::W2 && journal_order {
        check_journal_order(&clients[0], &mut result).await;
    }
    for why in result.errors.iter().take(ERRORS_SHOWN) {
        eprintln!("sagad-bench: {name}: error: {why}");
    }
    if result.started < m.sagas {
        eprintln!(
            "sagad-bench: {name}: the duration cap stopped the starts at {} of {} sagas",
            result.started, m.sagas
        );
    }
    let mut nodes: Vec<NodeShare> = cpu_after
        .servers
        .iter()
        .zip(&cpu_before.servers)
        .zip(&rss_peaks)
        .map(|((after, before), &rss_peak_bytes)| NodeShare {
            sagas: 0,
            cpu_s: after - before,
            rss_peak_bytes,
        })
        .collect();
    for &client in &result.ok_clients {
        if let Some(node) = nodes.get_mut(client_node[client]) {
            node.sagas += 1;
        }
    }
    let latencies = Latencies::new(result.latencies);
    debug_assert_eq!(latencies.len(), result.started - result.errors.len());
    let line = ResultLine {
        peer,
        cluster,
        workload: m.workload.as_str(),
        conc: m.concurrency,
        run,
        sagas: result.started,
        errors: result.errors.len(),
        wall: result.wall,
        p50: latencies.percentile(50.0),
        p95: latencies.percentile(95.0),
        p99: latencies.percentile(99.0),
        max: latencies.max(),
        // The cluster's CPU: every coordinator's, summed.
        server_cpu_s: (!nodes.is_empty()).then(|| nodes.iter().map(|n| n.cpu_s).sum()),
        worker_cpu_s: cpu_after.worker - cpu_before.worker,
        client_cpu_s: cpu_after.client - cpu_before.client,
        server_rss_peak_bytes: rss_peaks.iter().max().copied(),
    };
    Ok(Measured { line, nodes })
}

/// The processes whose CPU is counted (the client is this process).
#[derive(Clone, Copy)]
struct Pids<'a> {
    /// The coordinators whose pids are known (none for `--addr` without
    /// `--server-pid`).
    servers: &'a [u32],
    /// The participants process.
    worker: u32,
}

/// CPU seconds so far of the processes.
struct Cpu {
    /// In the order of `Pids::servers`.
    servers: Vec<f64>,
    worker: f64,
    client: f64,
}

fn cpu_now(pids: Pids) -> anyhow::Result<Cpu> {
    Ok(Cpu {
        servers: pids
            .servers
            .iter()
            .map(|&p| procfs::cpu_seconds(Some(p)))
            .collect::<Result<_, _>>()?,
        worker: procfs::cpu_seconds(Some(pids.worker))?,
        client: procfs::cpu_seconds(None)?,
    })
}

/// Checks the journal's compensation order for a sample of a W2 measurement's
/// sagas; a saga that fails it moves from the successes to the errors.
async fn check_journal_order(client: &CoordinatorClient<Channel>, result: &mut LoadResult) {
    let n = result.ok_ids.len();
    if n == 0 {
        return;
    }
    let step = n.div_ceil(ORDER_CHECK_SAMPLE);
    let mut client = client.clone();
    let mut bad = Vec::new();
    for i in (0..n).step_by(step) {
        if let Err(why) = check::journal_order(&mut client, &result.ok_ids[i]).await {
            bad.push((i, why));
        }
    }
    for (i, why) in bad.into_iter().rev() {
        result.ok_ids.swap_remove(i);
        result.ok_clients.swap_remove(i);
        result.latencies.swap_remove(i);
        result.errors.push(why);
    }
}

/// Echo c64, echo c1 and fdatasync.
async fn measure_limit(
    services: &HashMap<String, SocketAddr>,
    channels: usize,
    probe_dir: &Path,
    plan: Plan,
) -> anyhow::Result<LimitLine> {
    let echo_addr = services
        .get(participants::NAMES[0])
        .context("no echo service announced")?;
    let clients: Vec<_> = connect(&format!("http://{echo_addr}"), channels)
        .await?
        .into_iter()
        .map(ParticipantServiceClient::new)
        .collect();
    eprintln!("sagad-bench: LIMIT: echo at concurrency {HIGH_CONCURRENCY}, echo at 1, fdatasync");
    let echo_calls_per_s = limit::echo_throughput(&clients, HIGH_CONCURRENCY, plan).await?;
    let echo_c1 = limit::echo_latency(&mut clients[0].clone(), plan).await?;
    let dir = probe_dir.to_path_buf();
    let (fdatasync_per_s, fsync) =
        tokio::task::spawn_blocking(move || limit::fdatasync(&dir, plan)).await??;
    Ok(LimitLine {
        echo_conc: HIGH_CONCURRENCY,
        echo_calls_per_s,
        echo_c1_p50: echo_c1.percentile(50.0),
        fdatasync_per_s,
        fdatasync_p50: fsync.percentile(50.0),
    })
}

/// PostgreSQL's commit ceiling in the run's database.
async fn measure_pg_limit(db: &pg::Database, plan: Plan) -> anyhow::Result<PgLimitLine> {
    eprintln!(
        "sagad-bench: LIMIT: PostgreSQL commits over {HIGH_CONCURRENCY} connections, then over 1"
    );
    let commits = limit::pg_commits(db, HIGH_CONCURRENCY, plan).await?;
    Ok(PgLimitLine {
        conc: HIGH_CONCURRENCY,
        commits_per_s: commits.per_s,
        c1_commits_per_s: commits.c1_per_s,
        c1_p50: commits.c1.percentile(50.0),
    })
}

/// `count` HTTP/2 connections to `url`, Nagle off.
pub(crate) async fn connect(url: &str, count: usize) -> anyhow::Result<Vec<Channel>> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .with_context(|| format!("{url} is not a URL"))?
        .tcp_nodelay(true)
        .connect_timeout(STARTUP_TIMEOUT);
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count {
        channels.push(
            endpoint
                .connect()
                .await
                .with_context(|| format!("connecting to {url}"))?,
        );
    }
    Ok(channels)
}

/// `name=host:port` pairs of the participants' announce line.
fn parse_announce(line: &str) -> anyhow::Result<HashMap<String, SocketAddr>> {
    let mut services = HashMap::new();
    for pair in line
        .trim_start_matches(participants::ANNOUNCE)
        .split_whitespace()
    {
        let (name, addr) = pair
            .split_once('=')
            .with_context(|| format!("bad announce line {line:?}"))?;
        services.insert(name.to_string(), addr.parse()?);
    }
    for name in participants::NAMES.iter().map(|n| n.to_string()).chain(
        participants::NAMES
            .iter()
            .map(|n| participants::http_name(n)),
    ) {
        if !services.contains_key(&name) {
            bail!("the participants process did not announce {name}: {line:?}");
        }
    }
    Ok(services)
}

/// The data directory must be new: the measurements start on an empty journal.
pub(crate) fn prepare_empty_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!(
            "--data-dir {} is not empty: the benchmark starts on an empty journal",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// Writes the bench definition and starts `sagad serve` (next to this executable).
fn start_coordinator(
    me: &Path,
    data_dir: &Path,
    scratch: &Path,
) -> anyhow::Result<(ChildGuard, SocketAddr)> {
    let mut child = spawn_coordinator(me, data_dir, scratch, &scratch.join("sagad.log"), &[])?;
    let addr = listening_addr(&mut child, STARTUP_TIMEOUT)?;
    eprintln!(
        "sagad-bench: coordinator (pid {}) on {addr}, journal in {}",
        child.pid(),
        data_dir.display()
    );
    Ok((child, addr))
}

/// Writes the bench definition to `scratch/sagas` and spawns `sagad serve` (next
/// to this executable) on `data_dir`, listening on any free loopback port, with
/// `extra` flags; its stderr goes to `log`. Returns as soon as it is spawned.
pub(crate) fn spawn_coordinator(
    me: &Path,
    data_dir: &Path,
    scratch: &Path,
    log: &Path,
    extra: &[&std::ffi::OsStr],
) -> anyhow::Result<ChildGuard> {
    let sagad = sibling(me, "sagad")?;
    let sagas_dir = scratch.join("sagas");
    std::fs::create_dir_all(&sagas_dir)?;
    std::fs::write(
        sagas_dir.join(format!("{DEFINITION}.toml")),
        definition_toml(),
    )?;
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "serve".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--data-dir".as_ref(),
        data_dir.as_os_str(),
        "--sagas".as_ref(),
        sagas_dir.as_os_str(),
    ];
    args.extend_from_slice(extra);
    ChildGuard::spawn("coordinator", &sagad, &args, log)
}

/// The executable `name` next to this one (cargo builds them side by side).
fn sibling(me: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let path = me.with_file_name(name);
    if !path.is_file() {
        bail!(
            "no {name} executable next to {} (build them all: cargo build --release)",
            me.display()
        );
    }
    Ok(path)
}

/// The address a coordinator announces on stdout once its journal is open and
/// its listener bound.
pub(crate) fn listening_addr(
    child: &mut ChildGuard,
    timeout: Duration,
) -> anyhow::Result<SocketAddr> {
    announced_addr(child, "sagad listening on ", timeout)
}

/// The address on the line of `child`'s stdout that starts with `prefix`.
fn announced_addr(
    child: &mut ChildGuard,
    prefix: &str,
    timeout: Duration,
) -> anyhow::Result<SocketAddr> {
    let line = child.line_starting_with(prefix, timeout)?;
    line[prefix.len()..]
        .trim()
        .parse()
        .with_context(|| format!("bad listening line {line:?}"))
}

/// The bench definition, as a user would write it.
pub(crate) fn definition_toml() -> String {
    let mut text = format!(
        "# Written by sagad-bench: the saga of docs/workload.md.\n\
         name = \"{DEFINITION}\"\n\
         description = \"Reserve inventory, charge payment, ship order (no-op participants)\"\n"
    );
    for (step, service) in STEPS {
        text.push_str(&format!(
            "\n[[steps]]\nname = \"{step}\"\nparticipant = \"{}\"\n",
            registered_name(service)
        ));
    }
    text
}

/// The same steps, inline, for a coordinator the bench did not start.
fn inline_source() -> SagaSource {
    SagaSource::Inline(
        STEPS
            .iter()
            .map(|&(step, service)| pb::StepDefinition {
                name: step.into(),
                participant: registered_name(service),
                ..Default::default()
            })
            .collect(),
    )
}

/// Registers the three participants, retrying while the coordinator recovers.
async fn register_participants(
    client: &CoordinatorClient<Channel>,
    services: &HashMap<String, SocketAddr>,
    protocol: crate::ProtocolKind,
) -> anyhow::Result<()> {
    let mut client = client.clone();
    let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
    for (_, service) in STEPS {
        let request = match protocol {
            crate::ProtocolKind::Grpc => {
                let base = format!("http://{}/sagad.v1.ParticipantService", services[service]);
                pb::RegisterParticipantRequest {
                    name: registered_name(service),
                    forward_endpoint: format!("{base}/Forward"),
                    compensate_endpoint: format!("{base}/Compensate"),
                    ..Default::default()
                }
            }
            crate::ProtocolKind::Http => {
                let addr = services[&participants::http_name(service)];
                pb::RegisterParticipantRequest {
                    name: registered_name(service),
                    forward_endpoint: format!("http://{addr}/forward"),
                    compensate_endpoint: format!("http://{addr}/compensate"),
                    protocol: pb::Protocol::Http as i32,
                    ..Default::default()
                }
            }
        };
        loop {
            match client.register_participant(request.clone()).await {
                Ok(_) => break,
                Err(s)
                    if s.code() == Code::Unavailable && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(READY_POLL).await;
                }
                Err(s) => bail!(
                    "registering {}: {:?} {}",
                    request.name,
                    s.code(),
                    s.message()
                ),
            }
        }
    }
    Ok(())
}

/// Bytes the files under `dir` occupy on disk (as `du` counts them).
pub(crate) fn dir_bytes(dir: &Path) -> anyhow::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut pending: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        for entry in
            std::fs::read_dir(&path).with_context(|| format!("reading {}", path.display()))?
        {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                total += meta.blocks() * 512;
            }
        }
    }
    Ok(total)
}
