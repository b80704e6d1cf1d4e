//! The benchmark tool, end to end at smoke-test size:
//! - `sagad-bench run --quick --runs 1 --floor` starts a real coordinator, a
//!   participants process and `sagad-floor`, and prints well-formed LIMIT,
//!   RESULT, RATIO and SUMMARY lines, with every saga, on both servers, ending
//!   as its workload requires;
//! - `sagad-bench scale --quick` seeds journals, restarts a real coordinator on
//!   them and prints well-formed SCALE and TARGETS lines, with every seeded saga
//!   read back right and every waiting one resumed;
//! - `sagad-bench run --journal postgres --nodes 2` starts a throwaway
//!   PostgreSQL and two coordinators on one fresh database, and prints the
//!   PostgreSQL LIMIT line beside the usual one, RESULT lines that name the
//!   journal and the node count, and a NODE line per coordinator whose sagas
//!   add up to the RESULT's;
//! - a journal written by `sagad-bench seed` passes `sagad journal check`.
//!
//! No speed is asserted.

use std::{
    io::Read,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::common;

/// Generous: a debug build takes some 15 s on two busy cores.
const DEADLINE: Duration = Duration::from_secs(240);

const LIMIT_KEYS: [&str; 7] = [
    "echo_conc",
    "echo_calls_per_s",
    "rpc_bound",
    "echo_c1_p50_ms",
    "fdatasync_per_s",
    "fdatasync_p50_ms",
    "c1_floor_ms",
];
const RESULT_KEYS: [&str; 17] = [
    "peer",
    "workload",
    "conc",
    "run",
    "sagas",
    "errors",
    "wall_s",
    "tput_per_s",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "server_cpu_s",
    "worker_cpu_s",
    "client_cpu_s",
    "cpu_ms_per_saga",
    "server_rss_peak_mb",
];
const SUMMARY_KEYS: [&str; 3] = ["peer", "server_peak_rss_mb", "data_dir_mb"];

/// Runs the bench and returns its stdout; fails the test if it fails or hangs.
fn run_bench(args: &[&str]) -> String {
    run_to_end(env!("CARGO_BIN_EXE_sagad-bench"), args)
}

/// Runs `program` and returns its stdout; fails the test if it fails or hangs.
fn run_to_end(program: &str, args: &[&str]) -> String {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sagad-bench starts");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            // SIGKILL: the bench's children get SIGTERM through their parent-death signal.
            let _ = child.kill();
            let _ = child.wait();
            panic!("{program} {args:?} did not finish within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    assert!(
        status.success(),
        "{program} {args:?} failed ({status})\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}

/// The `key=value` fields of a line that starts with `prefix`, in order.
fn fields<'a>(line: &'a str, prefix: &str) -> Vec<(&'a str, &'a str)> {
    line.strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{line:?} does not start with {prefix:?}"))
        .split_whitespace()
        .map(|pair| {
            pair.split_once('=')
                .unwrap_or_else(|| panic!("{pair:?} in {line:?} is not key=value"))
        })
        .collect()
}

/// Asserts the keys, in order, and that every value but the named text ones is a
/// non-negative number; returns the fields.
fn well_formed<'a>(
    line: &'a str,
    prefix: &str,
    keys: &[&str],
    text: &[&str],
) -> Vec<(&'a str, &'a str)> {
    let got = fields(line, prefix);
    let names: Vec<&str> = got.iter().map(|(k, _)| *k).collect();
    assert_eq!(names, keys, "fields of {line:?}");
    for (key, value) in &got {
        if !text.contains(key) {
            let number: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("{key}={value} in {line:?} is not a number"));
            assert!(
                number >= 0.0 && number.is_finite(),
                "{key}={value} in {line:?}"
            );
        }
    }
    got
}

fn value<'a>(fields: &[(&'a str, &'a str)], key: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| *v)
        .unwrap()
}

#[test]
fn quick_run_prints_every_line_and_every_saga_ends_right() {
    let _heavy = common::heavy_blocking();
    let stdout = run_bench(&["run", "--quick", "--runs", "1", "--floor"]);
    let lines: Vec<&str> = stdout.lines().collect();
    let starting = |prefix: &str| -> Vec<&str> {
        lines
            .iter()
            .copied()
            .filter(|l| l.starts_with(prefix))
            .collect()
    };

    let limit = starting("LIMIT ");
    assert_eq!(limit.len(), 1, "one LIMIT line in:\n{stdout}");
    let limit = well_formed(limit[0], "LIMIT ", &LIMIT_KEYS, &[]);
    assert_eq!(value(&limit, "echo_conc"), "64");

    // Each of sagad's measurements, then the same on sagad-floor.
    let results = starting("RESULT ");
    let expected = [("W1", "64"), ("W2", "64"), ("W1", "1")]
        .into_iter()
        .flat_map(|(w, c)| [("sagad", w, c), ("floor", w, c)]);
    assert_eq!(results.len(), 6, "RESULT lines in:\n{stdout}");
    for (line, (peer, workload, conc)) in results.iter().zip(expected) {
        let f = well_formed(line, "RESULT ", &RESULT_KEYS, &["peer", "workload", "run"]);
        assert_eq!(
            (
                value(&f, "peer"),
                value(&f, "workload"),
                value(&f, "conc"),
                value(&f, "run")
            ),
            (peer, workload, conc, "run1"),
            "{line}"
        );
        assert!(value(&f, "sagas").parse::<u64>().unwrap() > 0, "{line}");
        assert_eq!(value(&f, "errors"), "0", "{line}");
    }

    let ratios = starting("RATIO ");
    let names: Vec<&str> = ratios.iter().map(|l| fields(l, "RATIO ")[1].0).collect();
    assert_eq!(
        names,
        [
            "w1_c64_tput_over_rpc_bound",
            "w1_c64_tput_over_floor",
            "w2_c64_tput_over_floor",
            "w1_c1_p50_over_c1_floor",
            "w1_c1_tput_over_floor",
        ],
        "RATIO lines in:\n{stdout}"
    );
    for line in ratios {
        let f = fields(line, "RATIO ");
        assert_eq!(f.len(), 2, "{line}");
        assert_eq!(f[0], ("run", "run1"));
        assert!(f[1].1.parse::<f64>().is_ok_and(|r| r > 0.0), "{line}");
    }

    let summary = starting("SUMMARY ");
    assert_eq!(summary.len(), 1, "one SUMMARY line in:\n{stdout}");
    well_formed(summary[0], "SUMMARY ", &SUMMARY_KEYS, &["peer"]);
    assert_eq!(lines.last(), Some(&summary[0]), "SUMMARY comes last");
}

const PG_LIMIT_KEYS: [&str; 6] = [
    "pg_conc",
    "pg_commits_per_s",
    "pg_bound",
    "pg_c1_commits_per_s",
    "pg_c1_p50_ms",
    "pg_c1_floor_ms",
];
const NODE_KEYS: [&str; 8] = [
    "run",
    "workload",
    "conc",
    "node",
    "sagas",
    "cpu_s",
    "cpu_ms_per_saga",
    "rss_peak_mb",
];

#[test]
fn quick_postgres_run_with_two_nodes_prints_every_line_and_every_saga_ends_right() {
    let _heavy = common::heavy_blocking();
    let stdout = run_bench(&[
        "run",
        "--journal",
        "postgres",
        "--nodes",
        "2",
        "--quick",
        "--runs",
        "1",
        "--sagas-per-measurement",
        "40",
    ]);
    let lines: Vec<&str> = stdout.lines().collect();
    let starting = |prefix: &str| -> Vec<&str> {
        lines
            .iter()
            .copied()
            .filter(|l| l.starts_with(prefix))
            .collect()
    };

    // The machine's limit, then PostgreSQL's.
    let limits = starting("LIMIT ");
    assert_eq!(limits.len(), 2, "two LIMIT lines in:\n{stdout}");
    well_formed(limits[0], "LIMIT ", &LIMIT_KEYS, &[]);
    let pg = well_formed(limits[1], "LIMIT ", &PG_LIMIT_KEYS, &[]);
    assert_eq!(value(&pg, "pg_conc"), "64");
    assert!(
        value(&pg, "pg_commits_per_s").parse::<f64>().unwrap() > 0.0,
        "{}",
        limits[1]
    );

    // RESULT keys: sled's, with the journal and the node count after `peer`.
    let mut result_keys = RESULT_KEYS.to_vec();
    result_keys.splice(1..1, ["journal", "nodes"]);
    let results = starting("RESULT ");
    assert_eq!(results.len(), 3, "RESULT lines in:\n{stdout}");
    let nodes = starting("NODE ");
    assert_eq!(nodes.len(), 6, "two NODE lines per RESULT in:\n{stdout}");
    let expected = [("W1", "64"), ("W2", "64"), ("W1", "1")];
    for (i, (line, (workload, conc))) in results.iter().zip(expected).enumerate() {
        let f = well_formed(
            line,
            "RESULT ",
            &result_keys,
            &["peer", "journal", "workload", "run"],
        );
        assert_eq!(
            (
                value(&f, "peer"),
                value(&f, "journal"),
                value(&f, "nodes"),
                value(&f, "workload"),
                value(&f, "conc"),
                value(&f, "run")
            ),
            ("sagad", "postgres", "2", workload, conc, "run1"),
            "{line}"
        );
        let sagas: u64 = value(&f, "sagas").parse().unwrap();
        assert!(sagas > 0, "{line}");
        assert_eq!(value(&f, "errors"), "0", "{line}");
        assert_ne!(value(&f, "server_cpu_s"), "na", "{line}");

        // Each node's share, the sagas it ran adding up to the measurement's.
        let mut ran = 0;
        for (node, name) in nodes[2 * i..2 * i + 2].iter().zip(["node-1", "node-2"]) {
            // cpu_ms_per_saga is `na` for a node that ran none (W1 c1 has one lane).
            let n = well_formed(
                node,
                "NODE ",
                &NODE_KEYS,
                &["run", "workload", "node", "cpu_ms_per_saga"],
            );
            assert_eq!(
                (
                    value(&n, "run"),
                    value(&n, "workload"),
                    value(&n, "conc"),
                    value(&n, "node")
                ),
                ("run1", workload, conc, name),
                "{node}"
            );
            ran += value(&n, "sagas").parse::<u64>().unwrap();
        }
        assert_eq!(ran, sagas, "the NODE lines after {line}");
    }

    let ratios = starting("RATIO ");
    let names: Vec<&str> = ratios.iter().map(|l| fields(l, "RATIO ")[1].0).collect();
    assert_eq!(
        names,
        [
            "w1_c64_tput_over_rpc_bound",
            "w1_c64_tput_over_pg_bound",
            "w1_c1_p50_over_c1_floor",
            "w1_c1_p50_over_pg_c1_floor",
        ],
        "RATIO lines in:\n{stdout}"
    );

    // The failover: the last node killed, every one of its waiting sagas
    // moved to the other and going on (times are printed, not judged).
    let failover = starting("FAILOVER ");
    assert_eq!(failover.len(), 1, "one FAILOVER line in:\n{stdout}");
    let f = fields(failover[0], "FAILOVER ");
    let get = |name: &str| {
        f.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("{name} in {}", failover[0]))
    };
    assert_eq!(get("victim"), "node-2");
    assert_eq!(get("sagas"), "200");
    for timed in ["claimed_s", "progressed_s", "takeover_per_s"] {
        let value: f64 = get(timed).parse().unwrap();
        assert!(value > 0.0, "{timed} in {}", failover[0]);
    }

    let summary = starting("SUMMARY ");
    assert_eq!(summary.len(), 1, "one SUMMARY line in:\n{stdout}");
    let f = well_formed(
        summary[0],
        "SUMMARY ",
        &[
            "peer",
            "journal",
            "nodes",
            "server_peak_rss_mb",
            "data_dir_mb",
            "database_mb",
        ],
        &["peer", "journal"],
    );
    assert_eq!(value(&f, "nodes"), "2");
    assert_eq!(lines.last(), Some(&summary[0]), "SUMMARY comes last");
}

const SCALE_FINISHED_KEYS: [&str; 22] = [
    "finished",
    "seed_s",
    "restart_serving_s",
    "listening_s",
    "restart_again_serving_s",
    "after_sigkill_serving_s",
    "health_p50_ms",
    "health_p99_ms",
    "get_p50_ms",
    "get_p99_ms",
    "list100_p50_ms",
    "list100_p99_ms",
    "list100_deep_p50_ms",
    "list100_deep_p99_ms",
    "errors",
    "rss_mb",
    "rss_peak_mb",
    "heap_mb",
    "heap_resident_mb",
    "store_at_open_mb",
    "data_dir_mb",
    "data_dir_kb_per_saga",
];
const SCALE_WAITING_KEYS: [&str; 16] = [
    "waiting",
    "seed_s",
    "restart_serving_s",
    "listening_s",
    "resumed",
    "read_back_s",
    "active_running",
    "checked",
    "errors",
    "rss_mb",
    "rss_peak_mb",
    "baseline_rss_mb",
    "kb_per_waiting_saga",
    "stop_s",
    "data_dir_mb",
    "data_dir_kb_per_saga",
];
const TARGET_KEYS: [&str; 7] = [
    "finished_restart_serving",
    "get_p99",
    "list100_p99",
    "finished_reads_right",
    "waiting_restart_serving",
    "all_resumed",
    "kb_per_waiting_saga",
];

#[test]
fn quick_scale_reads_back_every_seeded_saga_and_resumes_every_waiting_one() {
    let _heavy = common::heavy_blocking();
    let stdout = run_bench(&["scale", "--quick"]);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "two SCALE lines and TARGETS in:\n{stdout}");

    let finished = well_formed(lines[0], "SCALE ", &SCALE_FINISHED_KEYS, &[]);
    assert_eq!(value(&finished, "finished"), "2000", "{}", lines[0]);
    assert_eq!(value(&finished, "errors"), "0", "{}", lines[0]);
    assert!(
        value(&finished, "restart_serving_s")
            .parse::<f64>()
            .unwrap()
            >= value(&finished, "listening_s").parse::<f64>().unwrap(),
        "{}",
        lines[0]
    );

    let waiting = well_formed(lines[1], "SCALE ", &SCALE_WAITING_KEYS, &[]);
    for (key, expected) in [
        ("waiting", "500"),
        ("resumed", "500"),
        ("active_running", "500"),
        ("checked", "100"),
        ("errors", "0"),
    ] {
        assert_eq!(value(&waiting, key), expected, "{key} in {}", lines[1]);
    }

    let targets = fields(lines[2], "TARGETS ");
    let names: Vec<&str> = targets.iter().map(|(k, _)| *k).collect();
    assert_eq!(names, TARGET_KEYS, "{}", lines[2]);
    for (name, verdict) in &targets {
        assert!(matches!(*verdict, "met" | "missed"), "{name}={verdict}");
    }
    // Correctness, unlike speed, does not depend on the machine.
    assert_eq!(value(&targets, "finished_reads_right"), "met");
    assert_eq!(value(&targets, "all_resumed"), "met");
}

#[test]
fn a_seeded_journal_passes_journal_check() {
    let dir = tempfile::tempdir().unwrap();
    let seeded = |name: &str, extra: &[&str]| {
        let data = dir.path().join(name);
        let data = data.to_str().unwrap().to_string();
        let args = [
            &[
                "seed",
                "--data-dir",
                &data,
                "--finished",
                "300",
                "--waiting",
                "100",
            ],
            extra,
        ]
        .concat();
        run_bench(&args);
        run_to_end(
            env!("CARGO_BIN_EXE_sagad"),
            &["journal", "check", "--data-dir", &data],
        )
    };
    // All in sled: 8 events per finished W1 saga, 3 per waiting one.
    let report = seeded("in-store", &["--keep-in-store"]);
    assert!(
        report.contains("sagas: 400 (300 COMPLETED, 100 RUNNING); events: 2700; participants: 3"),
        "{report}"
    );
    assert!(report.contains("journal OK"), "{report}");
    // As the mover leaves it: the finished ones in the history tier.
    let report = seeded("moved", &[]);
    assert!(
        report.contains("sagas: 100 (100 RUNNING); events: 300; participants: 3"),
        "{report}"
    );
    assert!(
        report.contains("history: 300 finished sagas in 1 segment(s)"),
        "{report}"
    );
    assert!(report.contains("journal OK"), "{report}");
}

/// `run --protocol http`: the same workloads with the participants speaking
/// the HTTP/JSON contract, every saga ending right.
#[test]
fn quick_run_over_http_participants_ends_every_saga_right() {
    let _heavy = common::heavy_blocking();
    let stdout = run_bench(&[
        "run",
        "--protocol",
        "http",
        "--quick",
        "--runs",
        "1",
        "--sagas-per-measurement",
        "40",
    ]);
    let results: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("RESULT "))
        .collect();
    assert_eq!(results.len(), 3, "RESULT lines in:\n{stdout}");
    for line in results {
        let f = well_formed(line, "RESULT ", &RESULT_KEYS, &["peer", "workload", "run"]);
        assert_eq!(value(&f, "errors"), "0", "{line}");
        assert!(value(&f, "sagas").parse::<u64>().unwrap() > 0, "{line}");
    }
}

const HISTORY_KEYS: [&str; 17] = [
    "sagas",
    "segments",
    "write_s",
    "bytes_per_saga",
    "open_ms",
    "open_heap_mb",
    "get_p50_ms",
    "get_p99_ms",
    "key_p50_ms",
    "key_p99_ms",
    "key_miss_p99_ms",
    "list100_p50_ms",
    "list100_p99_ms",
    "list100_deep_p99_ms",
    "feed1000_p50_ms",
    "feed1000_p99_ms",
    "errors",
];

#[test]
fn a_small_history_run_reads_back_every_answer_right() {
    let _heavy = common::heavy_blocking();
    let stdout = run_bench(&[
        "history",
        "--sagas",
        "2000",
        "--segment-sagas",
        "700",
        "--gets",
        "50",
        "--lists",
        "10",
    ]);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one HISTORY line in:\n{stdout}");
    let f = well_formed(lines[0], "HISTORY ", &HISTORY_KEYS, &[]);
    assert_eq!(value(&f, "sagas"), "2000");
    assert_eq!(value(&f, "segments"), "3", "2,000 sagas in segments of 700");
    // Every answer checked: the saga asked for, held keys found, others not,
    // pages older than their cursor, feeds from the next offset.
    assert_eq!(value(&f, "errors"), "0", "{}", lines[0]);
}
