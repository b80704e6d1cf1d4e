//! Latency percentiles, exact: every sample is kept and sorted (a measurement
//! holds at most a few tens of thousands), and percentiles use the nearest-rank
//! method: the p-th percentile of n sorted samples is the one at rank ⌈p/100·n⌉.

use std::time::Duration;

/// Sorted latency samples.
pub struct Latencies {
    sorted: Vec<Duration>,
}

impl Latencies {
    pub fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        Self { sorted: samples }
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// The nearest-rank `p`-th percentile (0 < p ≤ 100); zero when there are no samples.
    pub fn percentile(&self, p: f64) -> Duration {
        let n = self.sorted.len();
        if n == 0 {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        self.sorted[rank.clamp(1, n) - 1]
    }

    /// The largest sample; zero when there are none.
    pub fn max(&self) -> Duration {
        self.sorted.last().copied().unwrap_or_default()
    }
}

/// Milliseconds, for the report.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(ms: &[u64]) -> Latencies {
        Latencies::new(ms.iter().map(|&m| Duration::from_millis(m)).collect())
    }

    #[test]
    fn nearest_rank() {
        let l = of(&[5, 1, 4, 2, 3, 6, 7, 8, 9, 10]);
        assert_eq!(l.percentile(50.0), Duration::from_millis(5));
        assert_eq!(l.percentile(95.0), Duration::from_millis(10));
        assert_eq!(l.percentile(10.0), Duration::from_millis(1));
        assert_eq!(l.percentile(11.0), Duration::from_millis(2));
        assert_eq!(l.max(), Duration::from_millis(10));
        assert_eq!(of(&[7]).percentile(99.0), Duration::from_millis(7));
        assert_eq!(of(&[]).percentile(50.0), Duration::ZERO);
    }
}
