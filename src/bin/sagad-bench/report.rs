//! The output lines, fields in the order of docs/workload.md, "Output".
//!
//! ```text
//! LIMIT echo_conc=64 echo_calls_per_s=… rpc_bound=… echo_c1_p50_ms=… fdatasync_per_s=… fdatasync_p50_ms=… c1_floor_ms=…
//! RESULT peer=sagad workload=W1 conc=64 run=run1 sagas=… errors=… wall_s=… tput_per_s=… p50_ms=… …
//! RATIO run=run1 w1_c64_tput_over_rpc_bound=…
//! RATIO run=run1 w1_c1_p50_over_c1_floor=…
//! RESULT peer=floor workload=W1 conc=64 run=run1 …   (with --floor, after each sagad one)
//! RATIO run=run1 w1_c64_tput_over_floor=…            (with --floor, for each measurement)
//! SUMMARY peer=sagad server_peak_rss_mb=… data_dir_mb=…
//! ```
//!
//! With `--journal postgres` (sled's lines above are unchanged, byte for byte):
//!
//! ```text
//! LIMIT echo_conc=64 …                              (as above, first)
//! LIMIT pg_conc=64 pg_commits_per_s=… pg_bound=… pg_c1_commits_per_s=… pg_c1_p50_ms=… pg_c1_floor_ms=…
//! RESULT peer=sagad journal=postgres nodes=2 workload=W1 conc=64 run=run1 …  (then as above)
//! NODE run=run1 workload=W1 conc=64 node=node-1 sagas=… cpu_s=… cpu_ms_per_saga=… rss_peak_mb=…
//! RATIO run=run1 w1_c64_tput_over_rpc_bound=…
//! RATIO run=run1 w1_c64_tput_over_pg_bound=…
//! RATIO run=run1 w1_c1_p50_over_c1_floor=…
//! RATIO run=run1 w1_c1_p50_over_pg_c1_floor=…
//! SUMMARY peer=sagad journal=postgres nodes=2 server_peak_rss_mb=… data_dir_mb=… database_mb=…
//! ```
//!
//! A RESULT line of several nodes sums their CPU (`server_cpu_s`, so
//! `cpu_ms_per_saga` is the cluster's) and gives the highest node's RSS; the
//! `NODE` lines, one per coordinator after each RESULT, give each node's CPU
//! over the sagas it ran (the node a saga was started on runs it to its end).
//!
//! and those of `scale` (see `scale.rs` for what each figure means):
//!
//! ```text
//! SCALE finished=… seed_s=… restart_serving_s=… listening_s=… get_p50_ms=… get_p99_ms=… list100_p50_ms=… …
//! SCALE waiting=… seed_s=… restart_serving_s=… listening_s=… resumed=… rss_mb=… kb_per_waiting_saga=… …
//! TARGETS finished_restart_serving=met get_p99=met … (each target of issue 5: met or missed)
//! ```
//!
//! A figure the bench cannot know (the CPU of a coordinator it did not start and
//! whose pid it was not given) is printed `na`.

use std::{fmt, time::Duration};

use crate::stats::ms;

/// How many round trips, and durable writes in sequence, a W1 saga needs at least.
pub const W1_ROUND_TRIPS: f64 = 4.0;

const MIB: f64 = 1024.0 * 1024.0;

/// The physical limit.
pub struct LimitLine {
    pub echo_conc: usize,
    pub echo_calls_per_s: f64,
    pub echo_c1_p50: Duration,
    pub fdatasync_per_s: f64,
    pub fdatasync_p50: Duration,
}

impl LimitLine {
    /// W1 sagas per second if round trips were all there is.
    pub fn rpc_bound(&self) -> f64 {
        self.echo_calls_per_s / W1_ROUND_TRIPS
    }

    /// The least p50 of a W1 saga at concurrency 1, in ms.
    pub fn c1_floor_ms(&self) -> f64 {
        W1_ROUND_TRIPS * ms(self.echo_c1_p50) + W1_ROUND_TRIPS * ms(self.fdatasync_p50)
    }
}

impl fmt::Display for LimitLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "LIMIT echo_conc={} echo_calls_per_s={:.0} rpc_bound={:.0} echo_c1_p50_ms={:.3} \
             fdatasync_per_s={:.0} fdatasync_p50_ms={:.3} c1_floor_ms={:.3}",
            self.echo_conc,
            self.echo_calls_per_s,
            self.rpc_bound(),
            ms(self.echo_c1_p50),
            self.fdatasync_per_s,
            ms(self.fdatasync_p50),
            self.c1_floor_ms()
        )
    }
}

/// PostgreSQL's own commit ceiling (`--journal postgres`).
pub struct PgLimitLine {
    /// Connections of the throughput probe.
    pub conc: usize,
    pub commits_per_s: f64,
    pub c1_commits_per_s: f64,
    pub c1_p50: Duration,
}

impl PgLimitLine {
    /// W1 sagas per second if each of a saga's durable writes were a commit
    /// of its own, `conc` of them in flight.
    pub fn pg_bound(&self) -> f64 {
        self.commits_per_s / W1_ROUND_TRIPS
    }

    /// The least p50 of a W1 saga at concurrency 1 with a commit for each
    /// durable write, in ms (the round trips from the echo probe of `limit`).
    pub fn c1_floor_ms(&self, limit: &LimitLine) -> f64 {
        W1_ROUND_TRIPS * ms(limit.echo_c1_p50) + W1_ROUND_TRIPS * ms(self.c1_p50)
    }

    /// The line, which needs the echo probe's latency for its floor.
    pub fn line(&self, limit: &LimitLine) -> String {
        format!(
            "LIMIT pg_conc={} pg_commits_per_s={:.0} pg_bound={:.0} pg_c1_commits_per_s={:.0} \
             pg_c1_p50_ms={:.3} pg_c1_floor_ms={:.3}",
            self.conc,
            self.commits_per_s,
            self.pg_bound(),
            self.c1_commits_per_s,
            ms(self.c1_p50),
            self.c1_floor_ms(limit)
        )
    }
}

/// Which journal, and how many coordinators, when it is not one on sled.
#[derive(Clone, Copy, Debug)]
pub struct Cluster {
    pub journal: &'static str,
    pub nodes: usize,
}

impl fmt::Display for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "journal={} nodes={}", self.journal, self.nodes)
    }
}

/// One measurement.
pub struct ResultLine {
    /// `sagad`, or `floor` for `sagad-floor` (`run --floor`).
    pub peer: &'static str,
    /// `None` for sagad on sled (the line as it always was) and for the floor.
    pub cluster: Option<Cluster>,
    pub workload: &'static str,
    pub conc: usize,
    /// 1-based.
    pub run: usize,
    /// Sagas started in the measurement (warm-up excluded).
    pub sagas: usize,
    /// Of those, how many did not end as the workload requires.
    pub errors: usize,
    pub wall: Duration,
    pub p50: Duration,
    pub p95: Duration,
    pub p99: Duration,
    pub max: Duration,
    /// CPU seconds of the coordinator, if known.
    pub server_cpu_s: Option<f64>,
    /// CPU seconds of the participants process.
    pub worker_cpu_s: f64,
    /// CPU seconds of this process.
    pub client_cpu_s: f64,
    /// Highest RSS of the coordinator seen during the measurement, if known.
    pub server_rss_peak_bytes: Option<u64>,
}

impl ResultLine {
    /// Successful sagas per second of wall time.
    pub fn tput_per_s(&self) -> f64 {
        let ok = self.sagas - self.errors;
        if self.wall.is_zero() {
            return 0.0;
        }
        ok as f64 / self.wall.as_secs_f64()
    }

    fn cpu_ms_per_saga(&self) -> Option<f64> {
        let server = self.server_cpu_s?;
        (self.sagas > 0)
            .then(|| (server + self.worker_cpu_s + self.client_cpu_s) * 1000.0 / self.sagas as f64)
    }
}

impl fmt::Display for ResultLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RESULT peer={} ", self.peer)?;
        if let Some(cluster) = self.cluster {
            write!(f, "{cluster} ")?;
        }
        write!(
            f,
            "workload={} conc={} run=run{} sagas={} errors={} wall_s={:.3} \
             tput_per_s={:.1} p50_ms={:.3} p95_ms={:.3} p99_ms={:.3} max_ms={:.3} \
             server_cpu_s={} worker_cpu_s={:.2} client_cpu_s={:.2} cpu_ms_per_saga={} \
             server_rss_peak_mb={}",
            self.workload,
            self.conc,
            self.run,
            self.sagas,
            self.errors,
            self.wall.as_secs_f64(),
            self.tput_per_s(),
            ms(self.p50),
            ms(self.p95),
            ms(self.p99),
            ms(self.max),
            Na(self.server_cpu_s.map(|s| format!("{s:.2}"))),
            self.worker_cpu_s,
            self.client_cpu_s,
            Na(self.cpu_ms_per_saga().map(|c| format!("{c:.3}"))),
            Na(self.server_rss_peak_bytes.map(mib)),
        )
    }
}

/// One coordinator's share of a measurement (`--journal postgres`).
pub struct NodeLine {
    pub run: usize,
    pub workload: &'static str,
    pub conc: usize,
    /// Its `--node-id`.
    pub node: String,
    /// Sagas started on it that ended as their workload requires.
    pub sagas: usize,
    /// Its CPU seconds over the measurement.
    pub cpu_s: f64,
    /// Its highest RSS seen during the measurement.
    pub rss_peak_bytes: u64,
}

impl fmt::Display for NodeLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "NODE run=run{} workload={} conc={} node={} sagas={} cpu_s={:.2} cpu_ms_per_saga={} \
             rss_peak_mb={}",
            self.run,
            self.workload,
            self.conc,
            self.node,
            self.sagas,
            self.cpu_s,
            Na((self.sagas > 0).then(|| format!("{:.3}", self.cpu_s * 1000.0 / self.sagas as f64))),
            mib(self.rss_peak_bytes),
        )
    }
}

/// `tput / rpc_bound` of W1 c64.
pub fn ratio_tput(run: usize, tput: f64, limit: &LimitLine) -> String {
    format!(
        "RATIO run=run{run} w1_c64_tput_over_rpc_bound={:.3}",
        tput / limit.rpc_bound()
    )
}

/// `p50 / c1_floor_ms` of W1 c1.
pub fn ratio_c1(run: usize, p50: Duration, limit: &LimitLine) -> String {
    format!(
        "RATIO run=run{run} w1_c1_p50_over_c1_floor={:.3}",
        ms(p50) / limit.c1_floor_ms()
    )
}

/// `tput / pg_bound` of W1 c64 (`--journal postgres`).
pub fn ratio_pg_tput(run: usize, tput: f64, pg: &PgLimitLine) -> String {
    format!(
        "RATIO run=run{run} w1_c64_tput_over_pg_bound={:.3}",
        tput / pg.pg_bound()
    )
}

/// `p50 / pg_c1_floor_ms` of W1 c1 (`--journal postgres`).
pub fn ratio_pg_c1(run: usize, p50: Duration, limit: &LimitLine, pg: &PgLimitLine) -> String {
    format!(
        "RATIO run=run{run} w1_c1_p50_over_pg_c1_floor={:.3}",
        ms(p50) / pg.c1_floor_ms(limit)
    )
}

/// sagad's throughput over `sagad-floor`'s in the same run (`run --floor`).
pub fn ratio_floor(sagad: &ResultLine, floor: &ResultLine) -> String {
    format!(
        "RATIO run=run{} {}_c{}_tput_over_floor={:.3}",
        sagad.run,
        sagad.workload.to_lowercase(),
        sagad.conc,
        sagad.tput_per_s() / floor.tput_per_s()
    )
}

/// The last line. With a cluster (`--journal postgres`): the highest node's
/// peak RSS, the nodes' data directories together (the webhook's ledger and
/// the archive only) and the database's size before it was dropped.
pub fn summary(
    server_peak_rss_bytes: Option<u64>,
    data_dir_bytes: Option<u64>,
    cluster: Option<(Cluster, u64)>,
) -> String {
    let mut line = String::from("SUMMARY peer=sagad ");
    if let Some((cluster, _)) = cluster {
        line.push_str(&format!("{cluster} "));
    }
    line.push_str(&format!(
        "server_peak_rss_mb={} data_dir_mb={}",
        Na(server_peak_rss_bytes.map(mib)),
        Na(data_dir_bytes.map(mib)),
    ));
    if let Some((_, database_bytes)) = cluster {
        line.push_str(&format!(" database_mb={}", mib(database_bytes)));
    }
    line
}

/// `scale`, finished sagas.
pub struct ScaleFinishedLine {
    pub finished: usize,
    /// `None` when an earlier seed was reused.
    pub seed: Option<Duration>,
    pub restart_serving: Duration,
    pub listening: Duration,
    /// The start after that one (sled's snapshot is fresh: written by it).
    pub restart_again_serving: Duration,
    /// A start after that one was killed with SIGKILL once SERVING.
    pub after_sigkill_serving: Duration,
    /// Health checks: the floor of a unary call.
    pub health_p50: Duration,
    pub health_p99: Duration,
    pub get_p50: Duration,
    pub get_p99: Duration,
    /// The newest page.
    pub list_p50: Duration,
    pub list_p99: Duration,
    /// Pages from random keyset positions.
    pub list_deep_p50: Duration,
    pub list_deep_p99: Duration,
    pub errors: usize,
    pub rss: u64,
    pub rss_peak: u64,
    /// The heap (jemalloc's counts) when RSS had settled: live bytes, and
    /// the physical memory it holds; `None` if `/metrics` had no figures.
    pub heap: Option<(u64, u64)>,
    /// Live heap bytes once the journal was open, before recovery: what the
    /// store holds for the history it opened (sled's page table, mostly).
    pub heap_at_start: Option<u64>,
    pub data_dir_bytes: u64,
}

impl fmt::Display for ScaleFinishedLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SCALE finished={} seed_s={} restart_serving_s={:.3} listening_s={:.3} \
             restart_again_serving_s={:.3} after_sigkill_serving_s={:.3} health_p50_ms={:.3} health_p99_ms={:.3} get_p50_ms={:.3} get_p99_ms={:.3} list100_p50_ms={:.3} list100_p99_ms={:.3} \
             list100_deep_p50_ms={:.3} list100_deep_p99_ms={:.3} errors={} rss_mb={} \
             rss_peak_mb={} heap_mb={} heap_resident_mb={} store_at_open_mb={} data_dir_mb={} data_dir_kb_per_saga={:.2}",
            self.finished,
            Na(self.seed.map(|s| format!("{:.1}", s.as_secs_f64()))),
            self.restart_serving.as_secs_f64(),
            self.listening.as_secs_f64(),
            self.restart_again_serving.as_secs_f64(),
            self.after_sigkill_serving.as_secs_f64(),
            ms(self.health_p50),
            ms(self.health_p99),
            ms(self.get_p50),
            ms(self.get_p99),
            ms(self.list_p50),
            ms(self.list_p99),
            ms(self.list_deep_p50),
            ms(self.list_deep_p99),
            self.errors,
            mib(self.rss),
            mib(self.rss_peak),
            Na(self.heap.map(|(allocated, _)| mib(allocated))),
            Na(self.heap.map(|(_, resident)| mib(resident))),
            Na(self.heap_at_start.map(mib)),
            mib(self.data_dir_bytes),
            kib_per(self.data_dir_bytes, self.finished),
        )
    }
}

/// `scale`, sagas waiting in backoff.
pub struct ScaleWaitingLine {
    pub waiting: usize,
    /// `None` when an earlier seed was reused.
    pub seed: Option<Duration>,
    pub restart_serving: Duration,
    pub listening: Duration,
    /// `sagad_recovery_resumed_sagas` after SERVING.
    pub resumed: usize,
    /// From spawn until `sagad_recovery_unread_sagas` was 0: every resumed
    /// saga read back from the journal (and parked).
    pub read_back: Duration,
    /// `sagad_sagas_active{state="running"}` once read back.
    pub active_running: usize,
    /// Waiting sagas read back one by one.
    pub checked: usize,
    pub errors: usize,
    pub rss: u64,
    pub rss_peak: u64,
    /// Settled RSS of the coordinator on an empty journal.
    pub baseline_rss: u64,
    /// From SIGTERM to exit.
    pub stop: Duration,
    pub data_dir_bytes: u64,
}

impl ScaleWaitingLine {
    /// What each resumed waiting saga costs in RSS, in KiB.
    pub fn kb_per_waiting_saga(&self) -> f64 {
        kib_per(self.rss.saturating_sub(self.baseline_rss), self.waiting)
    }
}

impl fmt::Display for ScaleWaitingLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SCALE waiting={} seed_s={} restart_serving_s={:.3} listening_s={:.3} resumed={} \
             read_back_s={:.3} active_running={} checked={} errors={} rss_mb={} rss_peak_mb={} baseline_rss_mb={} \
             kb_per_waiting_saga={:.2} stop_s={:.3} data_dir_mb={} data_dir_kb_per_saga={:.2}",
            self.waiting,
            Na(self.seed.map(|s| format!("{:.1}", s.as_secs_f64()))),
            self.restart_serving.as_secs_f64(),
            self.listening.as_secs_f64(),
            self.resumed,
            self.read_back.as_secs_f64(),
            self.active_running,
            self.checked,
            self.errors,
            mib(self.rss),
            mib(self.rss_peak),
            mib(self.baseline_rss),
            self.kb_per_waiting_saga(),
            self.stop.as_secs_f64(),
            mib(self.data_dir_bytes),
            kib_per(self.data_dir_bytes, self.waiting),
        )
    }
}

/// The targets of issue 5 ("scale, not just speed"), tightened for waiting
/// sagas by issue 23 ("history must not cost the living").
pub mod target {
    use std::time::Duration;

    /// Restart to SERVING over 1,000,000 finished sagas.
    pub const FINISHED_RESTART: Duration = Duration::from_secs(3);
    /// GetSaga p99.
    pub const GET_P99: Duration = Duration::from_millis(1);
    /// ListSagas page of 100, p99.
    pub const LIST100_P99: Duration = Duration::from_millis(20);
    /// Restart to SERVING with 1,000,000 sagas waiting in backoff.
    pub const WAITING_RESTART: Duration = Duration::from_secs(3);
    /// Memory per waiting saga, KiB.
    pub const KB_PER_WAITING_SAGA: f64 = 0.5;
}

/// Each target, met or missed, for the scenarios that ran.
#[derive(Default)]
pub struct Targets(Vec<(&'static str, bool)>);

impl Targets {
    pub fn finished(&mut self, line: &ScaleFinishedLine) {
        self.0.extend([
            (
                "finished_restart_serving",
                line.restart_serving <= target::FINISHED_RESTART,
            ),
            ("get_p99", line.get_p99 <= target::GET_P99),
            (
                "list100_p99",
                line.list_p99.max(line.list_deep_p99) <= target::LIST100_P99,
            ),
            ("finished_reads_right", line.errors == 0),
        ]);
    }

    pub fn waiting(&mut self, line: &ScaleWaitingLine) {
        self.0.extend([
            (
                "waiting_restart_serving",
                line.restart_serving <= target::WAITING_RESTART,
            ),
            (
                "all_resumed",
                line.resumed == line.waiting && line.errors == 0,
            ),
            (
                "kb_per_waiting_saga",
                line.kb_per_waiting_saga() <= target::KB_PER_WAITING_SAGA,
            ),
        ]);
    }
}

impl fmt::Display for Targets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TARGETS")?;
        for (name, met) in &self.0 {
            write!(f, " {name}={}", if *met { "met" } else { "missed" })?;
        }
        Ok(())
    }
}

/// `bytes / count` in KiB (0 for no count).
fn kib_per(bytes: u64, count: usize) -> f64 {
    if count == 0 {
        return 0.0;
    }
    bytes as f64 / 1024.0 / count as f64
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / MIB)
}

/// A formatted figure, or `na`.
struct Na(Option<String>);

impl fmt::Display for Na {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_deref().unwrap_or("na"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_line() {
        let limit = LimitLine {
            echo_conc: 64,
            echo_calls_per_s: 40000.0,
            echo_c1_p50: Duration::from_micros(150),
            fdatasync_per_s: 5000.0,
            fdatasync_p50: Duration::from_micros(200),
        };
        assert_eq!(
            limit.to_string(),
            "LIMIT echo_conc=64 echo_calls_per_s=40000 rpc_bound=10000 echo_c1_p50_ms=0.150 \
             fdatasync_per_s=5000 fdatasync_p50_ms=0.200 c1_floor_ms=1.400"
        );
        assert_eq!(
            ratio_c1(1, Duration::from_micros(2800), &limit),
            "RATIO run=run1 w1_c1_p50_over_c1_floor=2.000"
        );
    }

    /// A W2 c64 line whose coordinator figures are unknown.
    fn w2_line(peer: &'static str, run: usize, sagas: usize, wall_s: u64) -> ResultLine {
        ResultLine {
            peer,
            cluster: None,
            workload: "W2",
            conc: 64,
            run,
            sagas,
            errors: 0,
            wall: Duration::from_secs(wall_s),
            p50: Duration::from_millis(1),
            p95: Duration::from_millis(2),
            p99: Duration::from_millis(3),
            max: Duration::from_millis(4),
            server_cpu_s: None,
            worker_cpu_s: 0.5,
            client_cpu_s: 0.25,
            server_rss_peak_bytes: None,
        }
    }

    #[test]
    fn unknown_server_figures() {
        let line = w2_line("sagad", 2, 10, 2);
        assert_eq!(
            line.to_string(),
            "RESULT peer=sagad workload=W2 conc=64 run=run2 sagas=10 errors=0 wall_s=2.000 \
             tput_per_s=5.0 p50_ms=1.000 p95_ms=2.000 p99_ms=3.000 max_ms=4.000 \
             server_cpu_s=na worker_cpu_s=0.50 client_cpu_s=0.25 cpu_ms_per_saga=na \
             server_rss_peak_mb=na"
        );
    }

    #[test]
    fn floor_ratio_names_the_measurement() {
        let (sagad, floor) = (w2_line("sagad", 1, 100, 4), w2_line("floor", 1, 100, 2));
        assert!(
            floor
                .to_string()
                .starts_with("RESULT peer=floor workload=W2 ")
        );
        assert_eq!(
            ratio_floor(&sagad, &floor),
            "RATIO run=run1 w2_c64_tput_over_floor=0.500"
        );
    }

    #[test]
    fn postgres_lines_name_the_journal_and_the_nodes() {
        let mut line = w2_line("sagad", 1, 10, 2);
        line.cluster = Some(Cluster {
            journal: "postgres",
            nodes: 2,
        });
        assert!(
            line.to_string()
                .starts_with("RESULT peer=sagad journal=postgres nodes=2 workload=W2 conc=64 "),
            "{line}"
        );
        let node = NodeLine {
            run: 1,
            workload: "W1",
            conc: 64,
            node: "node-2".into(),
            sagas: 500,
            cpu_s: 0.25,
            rss_peak_bytes: 3 * 1024 * 1024,
        };
        assert_eq!(
            node.to_string(),
            "NODE run=run1 workload=W1 conc=64 node=node-2 sagas=500 cpu_s=0.25 \
             cpu_ms_per_saga=0.500 rss_peak_mb=3.0"
        );
        assert_eq!(
            summary(
                Some(MIB as u64),
                Some(0),
                Some((
                    Cluster {
                        journal: "postgres",
                        nodes: 3
                    },
                    2 * MIB as u64
                ))
            ),
            "SUMMARY peer=sagad journal=postgres nodes=3 server_peak_rss_mb=1.0 data_dir_mb=0.0 \
             database_mb=2.0"
        );
        assert_eq!(
            summary(None, None, None),
            "SUMMARY peer=sagad server_peak_rss_mb=na data_dir_mb=na"
        );
    }

    #[test]
    fn pg_limit_line_and_its_ratios() {
        let limit = LimitLine {
            echo_conc: 64,
            echo_calls_per_s: 40000.0,
            echo_c1_p50: Duration::from_micros(150),
            fdatasync_per_s: 5000.0,
            fdatasync_p50: Duration::from_micros(200),
        };
        let pg = PgLimitLine {
            conc: 64,
            commits_per_s: 8000.0,
            c1_commits_per_s: 1000.0,
            c1_p50: Duration::from_micros(850),
        };
        assert_eq!(
            pg.line(&limit),
            "LIMIT pg_conc=64 pg_commits_per_s=8000 pg_bound=2000 pg_c1_commits_per_s=1000 \
             pg_c1_p50_ms=0.850 pg_c1_floor_ms=4.000"
        );
        assert_eq!(
            ratio_pg_tput(2, 1000.0, &pg),
            "RATIO run=run2 w1_c64_tput_over_pg_bound=0.500"
        );
        assert_eq!(
            ratio_pg_c1(1, Duration::from_millis(8), &limit, &pg),
            "RATIO run=run1 w1_c1_p50_over_pg_c1_floor=2.000"
        );
    }
}
