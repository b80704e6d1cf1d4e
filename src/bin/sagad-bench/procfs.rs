//! CPU time and memory of processes, read from `/proc` (Linux only).
//!
//! - CPU: `utime + stime` of `/proc/PID/stat` (every thread of the process), in
//!   clock ticks, converted with `CLK_TCK` (read once from `getconf`).
//! - Memory: `VmRSS` (now) and `VmHWM` (the peak so far) of `/proc/PID/status`.
//!   [`RssSampler`] polls `VmRSS` on a thread, for the peak of one measurement.
//! - The whole machine: busy, idle and steal ticks of `/proc/stat` ([`MachineTicks`]),
//!   so a run the host slowed down (steal) can be told from one we did.

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

/// The machine's CPU ticks so far, summed over its CPUs (the `cpu` line of
/// `/proc/stat`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MachineTicks {
    /// user, nice, system, irq, softirq.
    pub busy: u64,
    /// idle and iowait.
    pub idle: u64,
    /// Time the hypervisor ran something else while this machine had work.
    pub steal: u64,
}

impl MachineTicks {
    pub fn now() -> anyhow::Result<Self> {
        let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        Self::parse(&text)
    }

    fn parse(text: &str) -> anyhow::Result<Self> {
        let line = text
            .lines()
            .find(|l| l.starts_with("cpu "))
            .context("/proc/stat: no cpu line")?;
        let ticks: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .context("/proc/stat: a cpu field is not a number")?;
        // user nice system idle iowait irq softirq steal [guest guest_nice]:
        // guest time is already counted in user.
        let [user, nice, system, idle, iowait, irq, softirq, steal, ..] = ticks[..] else {
            bail!(
                "/proc/stat: the cpu line has {} fields, expected 8 or more",
                ticks.len()
            );
        };
        Ok(Self {
            busy: user + nice + system + irq + softirq,
            idle: idle + iowait,
            steal,
        })
    }

    /// Shares of busy, idle and steal time between `self` (earlier) and `later`, in %.
    pub fn shares_until(&self, later: &Self) -> (f64, f64, f64) {
        let busy = later.busy.saturating_sub(self.busy) as f64;
        let idle = later.idle.saturating_sub(self.idle) as f64;
        let steal = later.steal.saturating_sub(self.steal) as f64;
        let total = (busy + idle + steal).max(1.0);
        (
            100.0 * busy / total,
            100.0 * idle / total,
            100.0 * steal / total,
        )
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_ticks_split_busy_idle_and_steal() {
        let before = MachineTicks::parse("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3\n").unwrap();
        let after = MachineTicks::parse("cpu  160 0 70 880 60 5 5 20 0 0\n").unwrap();
        let (busy, idle, steal) = before.shares_until(&after);
        // 90 busy, 90 idle, 20 steal ticks.
        assert!((busy - 45.0).abs() < 1e-9, "{busy}");
        assert!((idle - 45.0).abs() < 1e-9, "{idle}");
        assert!((steal - 10.0).abs() < 1e-9, "{steal}");
        assert!(MachineTicks::parse("cpu  1 2 3\n").is_err());
    }
}
