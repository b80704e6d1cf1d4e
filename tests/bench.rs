//! The benchmark tool, end to end at smoke-test size: `sagad-bench run --quick
//! --runs 1` starts a real coordinator and participants process, and prints
//! well-formed LIMIT, RESULT, RATIO and SUMMARY lines with every saga ending as
//! its workload requires. No speed is asserted.

use std::{
    io::Read,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

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
    let mut child = Command::new(env!("CARGO_BIN_EXE_sagad-bench"))
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
            panic!("sagad-bench did not finish within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    assert!(
        status.success(),
        "sagad-bench failed ({status})\nstdout:\n{stdout}\nstderr:\n{stderr}"
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
    let stdout = run_bench(&["run", "--quick", "--runs", "1"]);
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

    let results = starting("RESULT ");
    let expected = [("W1", "64"), ("W2", "64"), ("W1", "1")];
    assert_eq!(results.len(), expected.len(), "RESULT lines in:\n{stdout}");
    for (line, (workload, conc)) in results.iter().zip(expected) {
        let f = well_formed(line, "RESULT ", &RESULT_KEYS, &["peer", "workload", "run"]);
        assert_eq!(
            (
                value(&f, "peer"),
                value(&f, "workload"),
                value(&f, "conc"),
                value(&f, "run")
            ),
            ("sagad", workload, conc, "run1"),
            "{line}"
        );
        assert!(value(&f, "sagas").parse::<u64>().unwrap() > 0, "{line}");
        assert_eq!(value(&f, "errors"), "0", "{line}");
    }

    let ratios = starting("RATIO ");
    assert_eq!(ratios.len(), 2, "RATIO lines in:\n{stdout}");
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
