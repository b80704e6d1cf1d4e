//! CPU time and memory of processes, read from `/proc` (Linux only).
//!
//! - CPU: `utime + stime` of `/proc/PID/stat` (every thread of the process), in
//!   clock ticks, converted with `CLK_TCK` (read once from `getconf`).
//! - Memory: `VmRSS` (now) and `VmHWM` (the peak so far) of `/proc/PID/status`.
//!   [`RssSampler`] polls `VmRSS` on a thread, for the peak of one measurement.

use std::{
    process::Command,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context, bail};

/// How often [`RssSampler`] reads `VmRSS`.
const RSS_SAMPLE_INTERVAL: Duration = Duration::from_millis(50);
/// Linux's usual `CLK_TCK`, if `getconf` cannot say.
const DEFAULT_CLK_TCK: u64 = 100;

/// Clock ticks per second of `/proc/PID/stat`.
fn clk_tck() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(DEFAULT_CLK_TCK)
    })
}

/// User + system CPU seconds a process has used so far; `pid` None is this process.
pub fn cpu_seconds(pid: Option<u32>) -> anyhow::Result<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) is in parentheses and may hold spaces: the
    // fixed fields start after the last ')'. There, field 3 (state) is index 0,
    // so utime (field 14) is index 11 and stime (field 15) index 12.
    let rest = text
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("{path}: no ')'"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let (Some(utime), Some(stime)) = (fields.get(11), fields.get(12)) else {
        bail!("{path}: too few fields");
    };
    let ticks: u64 = utime.parse::<u64>()? + stime.parse::<u64>()?;
    Ok(ticks as f64 / clk_tck() as f64)
}

/// A `kB` field of `/proc/PID/status`, in bytes.
pub fn status_bytes(pid: u32, field: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .with_context(|| format!("{path}: no {field}"))?;
    let kib: u64 = line
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("{path}: {field} is not a number of kB"))?;
    Ok(kib * 1024)
}

/// Polls a process's `VmRSS` on a thread and keeps the highest value.
pub struct RssSampler {
    pid: u32,
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl RssSampler {
    /// Starts sampling `pid`.
    pub fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(status_bytes(pid, "VmRSS").unwrap_or(0)));
        let thread = {
            let (stop, peak) = (stop.clone(), peak.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(rss) = status_bytes(pid, "VmRSS") {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    std::thread::sleep(RSS_SAMPLE_INTERVAL);
                }
            })
        };
        Self {
            pid,
            stop,
            peak,
            thread: Some(thread),
        }
    }

    /// Stops sampling (one last sample included) and returns the peak, in bytes.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Ok(rss) = status_bytes(self.pid, "VmRSS") {
            self.peak.fetch_max(rss, Ordering::Relaxed);
        }
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
