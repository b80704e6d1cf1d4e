//! Retry policies as data, and the pure delay computation.
//!
//! A policy is journaled with every saga (inside its step snapshot), and the delay
//! before attempt `n` is a pure function of `(policy, n, jitter sample)`. Nothing
//! here holds a clock or an iterator, so a restart can neither forget nor reset a
//! backoff: the engine journals the due time computed from this.
//!
//! The `backoff` crate's `ExponentialBackoff` computes the same curve but keeps its
//! state (current interval, start instant, RNG) inside a mutable iterator, which is
//! exactly what must not be the source of truth here; the formula is short enough
//! to own.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::id::Timestamp;

/// A fully resolved retry policy: every field set.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Delay before the second attempt.
    pub initial_interval: Duration,
    /// Each later delay is the previous one times this.
    pub multiplier: f64,
    /// Cap on any one delay.
    pub max_interval: Duration,
    /// Forward attempts before the step counts as failed.
    pub max_attempts: u32,
    /// Compensate attempts before the saga is FAILED.
    pub max_compensate_attempts: u32,
    /// Spread of each delay: `0.2` draws it uniformly from ±20% of the nominal delay.
    pub jitter: f64,
    /// The forward budget by time: no forward attempt starts later than this
    /// after the step's first one. `None` only in sagas journaled before the
    /// field existed (attempts only, as they ran then).
    pub max_duration: Option<Duration>,
}

impl Default for RetryPolicy {
    /// The server defaults of `docs/design.md`. Forward attempts are bounded by
    /// time: a participant that is down for a redeploy (a few minutes) is
    /// waited for, with delays capped at 10 s, and a step gives up 5 minutes
    /// after its first attempt. `max_attempts` is only a backstop against a
    /// tight loop: with a cap of 300 ms or more the time runs out first.
    fn default() -> Self {
        Self {
            initial_interval: Duration::from_millis(100),
            multiplier: 2.0,
            max_interval: Duration::from_secs(10),
            max_attempts: 1000,
            max_compensate_attempts: 20,
            jitter: 0.2,
            max_duration: Some(Duration::from_secs(300)),
        }
    }
}

/// A partial policy: unset fields are inherited from the next level
/// (step → participant → server defaults).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryOverrides {
    #[serde(default, with = "crate::saga::definition::opt_duration")]
    pub initial_interval: Option<Duration>,
    #[serde(default)]
    pub multiplier: Option<f64>,
    #[serde(default, with = "crate::saga::definition::opt_duration")]
    pub max_interval: Option<Duration>,
    #[serde(default)]
    pub max_attempts: Option<u32>,
    #[serde(default)]
    pub max_compensate_attempts: Option<u32>,
    #[serde(default)]
    pub jitter: Option<f64>,
    #[serde(default, with = "crate::saga::definition::opt_duration")]
    pub max_duration: Option<Duration>,
}

/// Why a retry policy is unusable.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum PolicyError {
    #[error("retry.multiplier must be a number >= 1 (got {0})")]
    Multiplier(f64),
    #[error("retry.jitter must be in [0, 1) (got {0})")]
    Jitter(f64),
    #[error("retry.max_attempts must be at least 1")]
    MaxAttempts,
    #[error("retry.max_compensate_attempts must be at least 1")]
    MaxCompensateAttempts,
    #[error(
        "retry.max_interval ({max:?}) must not be shorter than retry.initial_interval ({initial:?})"
    )]
    Intervals { initial: Duration, max: Duration },
    #[error("retry.{field} must be at most {:?} (got {got:?})", INTERVAL_MAX)]
    IntervalTooLong { field: &'static str, got: Duration },
    #[error("retry.max_duration must be greater than zero")]
    MaxDuration,
    #[error("retry.{field} must be at least {:?} (got {got:?})", INTERVAL_MIN)]
    IntervalTooShort { field: &'static str, got: Duration },
    #[error("retry.{field} must be at most {ATTEMPTS_MAX} (got {got})")]
    TooManyAttempts { field: &'static str, got: u32 },
}

/// Longest retry interval accepted: a day. Anything longer is a typo, and would
/// park a saga past any useful horizon.
pub const INTERVAL_MAX: Duration = Duration::from_secs(24 * 3600);

/// Shortest retry interval accepted, and the shortest delay between two
/// attempts. With no floor, `initial_interval = 0` retried a failing step
/// about 2,600 times a second, each attempt two journaled events (0.6 MB/s of
/// journal for one saga); at 10 ms a step makes at most 100 attempts a second,
/// and the tests' quick policies (20 ms) stay valid.
pub const INTERVAL_MIN: Duration = Duration::from_millis(10);

/// Most attempts of one action a policy may allow, per budget. The forward
/// default (1,000) is a backstop behind the time budget; compensations have no
/// time budget, so this bounds them: 10,000 attempts at the default 10 s cap
/// is more than a day of retrying before an operator is asked. It also bounds
/// what one step's history holds (`GetSaga` shows its last attempts in full).
pub const ATTEMPTS_MAX: u32 = 10_000;

impl RetryOverrides {
    /// True when no field is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Checks the fields that are set, on their own.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if let Some(m) = self.multiplier
            && !(m >= 1.0 && m.is_finite())
        {
            return Err(PolicyError::Multiplier(m));
        }
        if let Some(j) = self.jitter
            && !(0.0..1.0).contains(&j)
        {
            return Err(PolicyError::Jitter(j));
        }
        if self.max_attempts == Some(0) {
            return Err(PolicyError::MaxAttempts);
        }
        if self.max_compensate_attempts == Some(0) {
            return Err(PolicyError::MaxCompensateAttempts);
        }
        for (field, value) in [
            ("max_attempts", self.max_attempts),
            ("max_compensate_attempts", self.max_compensate_attempts),
        ] {
            if let Some(got) = value.filter(|n| *n > ATTEMPTS_MAX) {
                return Err(PolicyError::TooManyAttempts { field, got });
            }
        }
        if self.max_duration.is_some_and(|d| d.is_zero()) {
            return Err(PolicyError::MaxDuration);
        }
        for (field, value) in [
            ("initial_interval", self.initial_interval),
            ("max_interval", self.max_interval),
            ("max_duration", self.max_duration),
        ] {
            if let Some(got) = value.filter(|v| *v > INTERVAL_MAX) {
                return Err(PolicyError::IntervalTooLong { field, got });
            }
        }
        for (field, value) in [
            ("initial_interval", self.initial_interval),
            ("max_interval", self.max_interval),
        ] {
            if let Some(got) = value.filter(|v| *v < INTERVAL_MIN) {
                return Err(PolicyError::IntervalTooShort { field, got });
            }
        }
        Ok(())
    }

    /// `self` where set, else `base`.
    pub fn or(self, base: RetryOverrides) -> RetryOverrides {
        RetryOverrides {
            initial_interval: self.initial_interval.or(base.initial_interval),
            multiplier: self.multiplier.or(base.multiplier),
            max_interval: self.max_interval.or(base.max_interval),
            max_attempts: self.max_attempts.or(base.max_attempts),
            max_compensate_attempts: self
                .max_compensate_attempts
                .or(base.max_compensate_attempts),
            jitter: self.jitter.or(base.jitter),
            max_duration: self.max_duration.or(base.max_duration),
        }
    }

    /// The full policy: `self` where set, else `defaults`; checked as a whole.
    pub fn resolve(self, defaults: &RetryPolicy) -> Result<RetryPolicy, PolicyError> {
        self.validate()?;
        let policy = RetryPolicy {
            initial_interval: self.initial_interval.unwrap_or(defaults.initial_interval),
            multiplier: self.multiplier.unwrap_or(defaults.multiplier),
            max_interval: self.max_interval.unwrap_or(defaults.max_interval),
            max_attempts: self.max_attempts.unwrap_or(defaults.max_attempts),
            max_compensate_attempts: self
                .max_compensate_attempts
                .unwrap_or(defaults.max_compensate_attempts),
            jitter: self.jitter.unwrap_or(defaults.jitter),
            max_duration: self.max_duration.or(defaults.max_duration),
        };
        if policy.max_interval < policy.initial_interval {
            return Err(PolicyError::Intervals {
                initial: policy.initial_interval,
                max: policy.max_interval,
            });
        }
        Ok(policy)
    }
}

impl From<RetryPolicy> for RetryOverrides {
    fn from(p: RetryPolicy) -> Self {
        Self {
            initial_interval: Some(p.initial_interval),
            multiplier: Some(p.multiplier),
            max_interval: Some(p.max_interval),
            max_attempts: Some(p.max_attempts),
            max_compensate_attempts: Some(p.max_compensate_attempts),
            jitter: Some(p.jitter),
            max_duration: p.max_duration,
        }
    }
}

impl RetryPolicy {
    /// The attempt budget of one action.
    pub fn max_attempts_for(&self, action: crate::saga::Action) -> u32 {
        match action {
            crate::saga::Action::Forward => self.max_attempts,
            crate::saga::Action::Compensate => self.max_compensate_attempts,
        }
    }

    /// When the budget by time of `action` ends, for a budget whose first
    /// attempt started at `first`: no attempt may start later. `None` when
    /// the action has none (compensations, and sagas journaled before there
    /// was one).
    pub fn budget_ends(&self, action: crate::saga::Action, first: Timestamp) -> Option<Timestamp> {
        match action {
            crate::saga::Action::Forward => self.max_duration.map(|d| first.plus(d)),
            crate::saga::Action::Compensate => None,
        }
    }

    /// The delay after failed attempt `attempt` (1-based) before the next one.
    ///
    /// `sample` is a uniform draw from `[0, 1)`; passing it in keeps this pure.
    /// The nominal delay is `initial × multiplier^(attempt-1)`, capped at
    /// `max_interval`, then spread by ±`jitter` and capped again. It is never
    /// shorter than [`INTERVAL_MIN`]: jitter could otherwise take a 10 ms delay
    /// to almost nothing, and a saga journaled before the floor existed (with
    /// intervals of zero) would go on retrying in a hot loop.
    pub fn delay_after(&self, attempt: u32, sample: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(1_000) as i32;
        let nominal = self.initial_interval.as_secs_f64() * self.multiplier.powi(exponent);
        let capped = nominal.min(self.max_interval.as_secs_f64());
        let spread = 1.0 + self.jitter * (2.0 * sample.clamp(0.0, 1.0) - 1.0);
        let secs = (capped * spread)
            .min(self.max_interval.as_secs_f64())
            .max(INTERVAL_MIN.as_secs_f64());
        Duration::from_secs_f64(secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: f64) -> RetryPolicy {
        RetryPolicy {
            initial_interval: Duration::from_millis(100),
            multiplier: 2.0,
            max_interval: Duration::from_secs(1),
            max_attempts: 5,
            max_compensate_attempts: 20,
            jitter,
            max_duration: None,
        }
    }

    #[test]
    fn delay_grows_exponentially_then_caps() {
        let p = policy(0.0);
        let delays: Vec<_> = (1..=6).map(|n| p.delay_after(n, 0.5).as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_stays_within_its_band_and_under_the_cap() {
        let p = policy(0.2);
        assert_eq!(p.delay_after(1, 0.0).as_millis(), 80);
        assert_eq!(p.delay_after(1, 0.5).as_millis(), 100);
        assert!(p.delay_after(1, 0.999_999).as_millis() <= 120);
        // At the cap, jitter must not push the delay above max_interval.
        assert_eq!(p.delay_after(10, 0.999), Duration::from_secs(1));
    }

    #[test]
    fn overrides_inherit_field_by_field() {
        let step = RetryOverrides {
            max_attempts: Some(2),
            ..Default::default()
        };
        let participant = RetryOverrides {
            max_attempts: Some(9),
            initial_interval: Some(Duration::from_millis(10)),
            ..Default::default()
        };
        let p = step
            .or(participant)
            .resolve(&RetryPolicy::default())
            .unwrap();
        assert_eq!(p.max_attempts, 2);
        assert_eq!(p.initial_interval, Duration::from_millis(10));
        assert_eq!(p.max_compensate_attempts, 20);
    }

    #[test]
    fn bad_policies_are_refused() {
        let bad = |o: RetryOverrides| o.resolve(&RetryPolicy::default()).unwrap_err();
        assert_eq!(
            bad(RetryOverrides {
                multiplier: Some(0.5),
                ..Default::default()
            }),
            PolicyError::Multiplier(0.5)
        );
        assert_eq!(
            bad(RetryOverrides {
                max_attempts: Some(0),
                ..Default::default()
            }),
            PolicyError::MaxAttempts
        );
        assert_eq!(
            bad(RetryOverrides {
                jitter: Some(1.0),
                ..Default::default()
            }),
            PolicyError::Jitter(1.0)
        );
        assert!(matches!(
            bad(RetryOverrides {
                initial_interval: Some(Duration::from_secs(2 * 86_400)),
                ..Default::default()
            }),
            PolicyError::IntervalTooLong { .. }
        ));
        assert!(matches!(
            bad(RetryOverrides {
                max_interval: Some(Duration::from_millis(50)),
                ..Default::default()
            }),
            PolicyError::Intervals { .. }
        ));
        assert_eq!(
            bad(RetryOverrides {
                max_duration: Some(Duration::ZERO),
                ..Default::default()
            }),
            PolicyError::MaxDuration
        );
        assert_eq!(
            bad(RetryOverrides {
                max_duration: Some(Duration::from_secs(2 * 86_400)),
                ..Default::default()
            }),
            PolicyError::IntervalTooLong {
                field: "max_duration",
                got: Duration::from_secs(2 * 86_400)
            }
        );
    }

    #[test]
    fn the_floors_and_the_attempt_cap_name_their_field_and_bound() {
        let bad = |o: RetryOverrides| o.resolve(&RetryPolicy::default()).unwrap_err();
        let refused = bad(RetryOverrides {
            initial_interval: Some(Duration::ZERO),
            max_interval: Some(Duration::ZERO),
            ..Default::default()
        });
        assert_eq!(
            refused.to_string(),
            "retry.initial_interval must be at least 10ms (got 0ns)"
        );
        assert_eq!(
            bad(RetryOverrides {
                initial_interval: Some(INTERVAL_MIN),
                max_interval: Some(INTERVAL_MIN - Duration::from_nanos(1)),
                ..Default::default()
            }),
            PolicyError::IntervalTooShort {
                field: "max_interval",
                got: Duration::from_nanos(9_999_999)
            }
        );
        for (overrides, field) in [
            (
                RetryOverrides {
                    max_attempts: Some(u32::MAX),
                    ..Default::default()
                },
                "max_attempts",
            ),
            (
                RetryOverrides {
                    max_compensate_attempts: Some(ATTEMPTS_MAX + 1),
                    ..Default::default()
                },
                "max_compensate_attempts",
            ),
        ] {
            let got = overrides.max_attempts.or(overrides.max_compensate_attempts);
            assert_eq!(
                bad(overrides),
                PolicyError::TooManyAttempts {
                    field,
                    got: got.unwrap()
                }
            );
        }
        // At the bounds exactly: accepted.
        let edge = RetryOverrides {
            initial_interval: Some(INTERVAL_MIN),
            max_interval: Some(INTERVAL_MIN),
            max_attempts: Some(ATTEMPTS_MAX),
            max_compensate_attempts: Some(ATTEMPTS_MAX),
            ..Default::default()
        };
        assert!(edge.resolve(&RetryPolicy::default()).is_ok());
    }

    #[test]
    fn no_delay_is_shorter_than_the_floor() {
        // Full jitter at the floor would draw a delay of almost nothing.
        let p = RetryPolicy {
            initial_interval: INTERVAL_MIN,
            max_interval: INTERVAL_MIN,
            jitter: 0.99,
            ..policy(0.0)
        };
        assert_eq!(p.delay_after(1, 0.0), INTERVAL_MIN);
        // A policy journaled before the floors existed retries no faster.
        let old = RetryPolicy {
            initial_interval: Duration::ZERO,
            max_interval: Duration::ZERO,
            ..policy(0.0)
        };
        assert_eq!(old.delay_after(7, 0.5), INTERVAL_MIN);
    }

    #[test]
    fn a_time_budget_is_written_like_the_intervals() {
        let parsed: RetryOverrides = toml::from_str("max_duration = \"90s\"").unwrap();
        assert_eq!(parsed.max_duration, Some(Duration::from_secs(90)));
        let p = parsed.resolve(&RetryPolicy::default()).unwrap();
        assert_eq!(p.max_duration, Some(Duration::from_secs(90)));
    }
}
