//! `sagad-bench`: the load generator of `docs/workload.md`.
//!
//! `sagad-bench run` starts a coordinator (`sagad serve` on a fresh data
//! directory) and a participants process (this binary again, `participants`),
//! measures the machine's physical limit (a no-op gRPC echo and an fdatasync
//! loop), then runs W1 c64, W2 c64 and W1 c1 in closed loop, `--runs` times, and
//! prints the `LIMIT`, `RESULT`, `RATIO` and `SUMMARY` lines on stdout. Progress
//! and diagnostics go to stderr. With `--floor` every measurement also runs
//! against `sagad-floor` (`src/bin/sagad-floor`), the least a durable coordinator
//! can do with the same RPC stack and disk, so sagad's own cost shows as a ratio
//! measured in the same minute.
//!
//! With `--journal postgres` the coordinator keeps its journal in a fresh
//! PostgreSQL database (a throwaway server started for the run, or a server
//! given by `--pg-url`), `--nodes` coordinators share it, and a second
//! `LIMIT` line gives PostgreSQL's own commit ceiling, measured in the same
//! run.
//!
//! `sagad-bench scale` measures size rather than speed: it seeds a journal with
//! a million finished sagas (and another with 100,000 waiting in backoff),
//! restarts `sagad serve` on it, and prints `SCALE` and `TARGETS` lines.
//! `sagad-bench seed` only seeds a data directory. `sagad-bench history`
//! measures the history tier's segments on their own.
//!
//! Modules, one job each:
//! - [`run`]: the `run` verb, start to finish (processes, setup, the measurement set).
//! - [`scale`]: the `scale` verb: restart and reads over a big journal, memory
//!   per waiting saga.
//! - [`seed`]: writing sagas straight into a journal, as the coordinator would have.
//! - [`history`]: the `history` verb: segments of finished sagas, written and read.
//! - [`child`]: child processes that announce their address and are stopped on drop.
//! - [`participants`]: the no-op participant services (the `participants` verb).
//! - [`limit`]: the physical limit (gRPC echo, fdatasync, PostgreSQL commits).
//! - [`pg`]: the PostgreSQL database of `run --journal postgres`.
//! - [`load`]: the closed-loop load of one measurement.
//! - [`check`]: whether a saga ended as its workload requires.
//! - [`procfs`]: CPU time and RSS of processes, from `/proc`.
//! - [`stats`]: nearest-rank percentiles.
//! - [`report`]: the output lines.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};

mod check;
mod child;
mod failover;
mod history;
mod limit;
mod load;
mod participants;
mod pg;
mod procfs;
mod report;
mod run;
mod scale;
mod seed;
mod stats;

// The load client and the no-op participants run on the same two cores as
// the coordinator: the less CPU they spend per call, the more the coordinator
// gets. Same allocator and tuning as `sagad` (`sagad::allocator`).
sagad::use_jemalloc!();

#[derive(Parser)]
#[command(
    name = "sagad-bench",
    version,
    about = "Benchmark of sagad (docs/workload.md)"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a coordinator and participants, measure the limit, run the workloads.
    Run(RunArgs),
    /// Serve the no-op participants (started by `run`; useful on its own too).
    Participants(ParticipantsArgs),
    /// Seed journals with finished and waiting sagas, restart sagad on them,
    /// measure start-up, reads and memory.
    Scale(ScaleArgs),
    /// Seed one data directory with finished and waiting W1 sagas, as the
    /// coordinator would have journaled them (for `scale`, or to look at).
    Seed(SeedArgs),
    /// Write finished W1 sagas into history segments and measure their reads
    /// (the history tier of issue 23, on its own).
    History(HistoryArgs),
}

/// Options of `sagad-bench run`.
#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    /// Sagas of each c64 measurement (W1 c1 runs a tenth of it).
    /// Default: 20000 (the W1 c1 measurement: 2000).
    #[arg(long)]
    pub sagas_per_measurement: Option<usize>,
    /// No measurement starts sagas for longer than this.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration_cap: Duration,
    /// How many times the whole measurement set runs (run1, run2, ...).
    #[arg(long, default_value_t = 2)]
    pub runs: usize,
    /// Use a coordinator that is already running (e.g. http://127.0.0.1:50051)
    /// instead of starting one; sagas are then started with inline steps.
    #[arg(long)]
    pub addr: Option<String>,
    /// PID of the coordinator given by --addr, for its CPU and RSS figures.
    #[arg(long, requires = "addr")]
    pub server_pid: Option<u32>,
    /// The coordinator's data directory: must be empty or absent when the bench
    /// starts the coordinator (kept afterwards). Default: a fresh temporary one.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A few hundred sagas per measurement and short limit probes: a smoke test.
    #[arg(long)]
    pub quick: bool,
    /// gRPC connections the load client spreads its lanes over.
    #[arg(long, default_value_t = 4)]
    pub channels: usize,
    /// Also run every measurement against `sagad-floor` (the least a durable
    /// coordinator can do on this machine and stack), right after sagad's, and
    /// print its RESULT lines (`peer=floor`) and sagad's ratio to it. Its log
    /// goes to the bench's scratch directory, under the system's temp dir.
    #[arg(long)]
    pub floor: bool,
    /// Where the coordinator keeps its journal: sled in the data directory, or
    /// a fresh PostgreSQL database (see --pg-url), which adds a LIMIT line for
    /// PostgreSQL's own commit ceiling.
    #[arg(long, value_enum, default_value_t = JournalKind::Sled, conflicts_with = "addr")]
    pub journal: JournalKind,
    /// With --journal postgres: a server to use instead of a throwaway one
    /// started for the run. The bench creates a fresh database on it (the
    /// role needs CREATEDB) and drops it at the end; the URL's own database
    /// is only connected to, for that.
    #[arg(long, value_name = "URL")]
    pub pg_url: Option<String>,
    /// With --journal postgres: how many coordinators share the database
    /// (distinct --node-id), the load's connections spread over them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=3))]
    pub nodes: u8,
    /// What the participants speak: gRPC, or the HTTP/JSON contract over
    /// HTTP/1.1 (the same no-op participants, on their HTTP ports).
    #[arg(long, value_enum, default_value_t = ProtocolKind::Grpc, conflicts_with = "floor")]
    pub protocol: ProtocolKind,
}

/// The participant protocols `run --protocol` can measure.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolKind {
    Grpc,
    Http,
}

/// The journals `run --journal` can measure.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum JournalKind {
    /// sled in the coordinator's data directory (`sagad serve` without --journal).
    Sled,
    /// A PostgreSQL database (`sagad serve --journal postgres://…`).
    Postgres,
}

impl JournalKind {
    /// As the RESULT and SUMMARY lines name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sled => "sled",
            Self::Postgres => "postgres",
        }
    }
}

/// Options of `sagad-bench scale`.
#[derive(clap::Args, Clone, Debug)]
pub struct ScaleArgs {
    /// Finished (COMPLETED) W1 sagas seeded; 0 skips that scenario. Default: 1000000.
    #[arg(long)]
    pub finished: Option<usize>,
    /// W1 sagas seeded waiting in backoff; 0 skips that scenario. Default: 100000.
    #[arg(long)]
    pub waiting: Option<usize>,
    /// GetSaga calls measured. Default: 10000.
    #[arg(long)]
    pub gets: Option<usize>,
    /// ListSagas calls measured of each kind (newest page, deeper pages). Default: 1000.
    #[arg(long)]
    pub lists: Option<usize>,
    /// Where the journals are seeded (`finished/`, `empty/`, `waiting/` in it):
    /// must be empty or absent; kept afterwards. Default: a temporary directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// 2000 finished and 500 waiting sagas, fewer calls: a smoke test.
    #[arg(long)]
    pub quick: bool,
    /// Measure the journals an earlier run seeded in --data-dir (with the same
    /// counts) instead of seeding again; their ids are kept beside them
    /// (`finished.ids`, `waiting.ids`). Waiting sagas are due an hour after
    /// they were seeded: reuse them within the hour.
    #[arg(long, requires = "data_dir")]
    pub reuse: bool,
    /// Keep the finished sagas in sled, as a coordinator with
    /// `--history-after never` does (and the coordinator measured runs so).
    /// Without it they are moved into the history tier as seeding goes, as
    /// the default coordinator's mover does.
    #[arg(long)]
    pub keep_in_store: bool,
}

/// Options of `sagad-bench seed`.
#[derive(clap::Args, Clone, Debug)]
pub struct SeedArgs {
    /// The data directory: must be empty or absent.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Finished (COMPLETED) W1 sagas.
    #[arg(long, default_value_t = 0)]
    pub finished: usize,
    /// W1 sagas waiting in backoff (due in an hour).
    #[arg(long, default_value_t = 0)]
    pub waiting: usize,
    /// Keep the finished sagas in sled instead of moving them into the
    /// history tier as seeding goes (see `scale --keep-in-store`).
    #[arg(long)]
    pub keep_in_store: bool,
}

/// Options of `sagad-bench history`.
#[derive(clap::Args, Clone, Debug)]
pub struct HistoryArgs {
    /// Finished W1 sagas written.
    #[arg(long, default_value_t = 1_000_000)]
    pub sagas: usize,
    /// Sagas per segment.
    #[arg(long, default_value_t = 250_000)]
    pub segment_sagas: usize,
    /// GetSaga calls, and as many key lookups of each kind, measured.
    #[arg(long, default_value_t = 10_000)]
    pub gets: usize,
    /// List pages of each kind, and feed reads, measured.
    #[arg(long, default_value_t = 1_000)]
    pub lists: usize,
    /// Where the segments go: must be empty or absent; kept. Default: a
    /// temporary directory, removed.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Options of `sagad-bench participants`.
#[derive(clap::Args, Clone, Debug)]
pub struct ParticipantsArgs {
    /// Address of the first service; the others take the next ports (port 0: any free ports).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
}

fn main() -> ExitCode {
    sagad::allocator::mark_global();
    let args = Args::parse();
    // One worker: the load client and the no-op participants are light, and
    // on the 2-core machine the bench is for, worker threads of three
    // processes mostly wake and steal from one another (BENCHMARKS.md,
    // session 4). The coordinator keeps one worker per core.
    let runtime = match sagad::runtime::build(Some(1)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sagad-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // `run` spawns its child processes from this thread (the future given to
    // block_on is polled here): see `child` on why that matters.
    let result = runtime.block_on(async {
        match args.command {
            Command::Run(args) => run::run(args).await,
            Command::Participants(args) => participants::serve(args).await,
            Command::Scale(args) => scale::scale(args).await,
            Command::Seed(args) => seed::run(args).await,
            Command::History(args) => history::history(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sagad-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
