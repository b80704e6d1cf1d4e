//! A participant's limits: at most `max_in_flight` calls at once, and at
//! most `rate` calls per period, whatever the number of sagas calling it.
//! Part of its registration (journaled, so they survive restarts); the
//! engine enforces them (`participant/limits.rs`).

use std::{fmt, str::FromStr, time::Duration};

use serde::{Deserialize, Serialize};

/// Most calls a limit may allow at once, or per period: beyond this a limit
/// limits nothing a coordinator could send.
pub const LIMIT_MAX: u32 = 1_000_000;

/// What a participant allows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Calls in flight at once.
    pub max_in_flight: Option<u32>,
    /// Calls sent per period, spaced evenly (`"50/s"`: one every 20 ms).
    pub rate: Option<Rate>,
}

impl Limits {
    /// No limit at all.
    pub fn is_none(&self) -> bool {
        self.max_in_flight.is_none() && self.rate.is_none()
    }
}

/// `calls` per `per`, written `"50/s"`, `"600/m"`, `"5/250ms"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    pub calls: u32,
    pub per: Duration,
}

impl Rate {
    /// The gap between two calls.
    pub fn interval(&self) -> Duration {
        self.per / self.calls
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("rate '{text}' {why}; write it like \"50/s\", \"600/m\" or \"5/250ms\"")
        };
        let (calls, per) = text.split_once('/').ok_or_else(|| bad("has no '/'"))?;
        let calls: u32 = calls
            .trim()
            .parse()
            .map_err(|_| bad("does not start with a number of calls"))?;
        if calls == 0 || calls > LIMIT_MAX {
            return Err(bad(&format!("must allow 1 to {LIMIT_MAX} calls")));
        }
        let per = match per.trim() {
            "s" => Duration::from_secs(1),
            "m" | "min" => Duration::from_secs(60),
            "h" => Duration::from_secs(3_600),
            other => {
                humantime::parse_duration(other).map_err(|_| bad("has no period after '/'"))?
            }
        };
        if per < Duration::from_millis(1) || per > Duration::from_secs(86_400) {
            return Err(bad("needs a period from 1ms to 24h"));
        }
        Ok(Rate { calls, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.per.as_secs() {
            1 if self.per.subsec_nanos() == 0 => write!(f, "{}/s", self.calls),
            60 if self.per.subsec_nanos() == 0 => write!(f, "{}/m", self.calls),
            3_600 if self.per.subsec_nanos() == 0 => write!(f, "{}/h", self.calls),
            _ => write!(f, "{}/{}", self.calls, humantime::format_duration(self.per)),
        }
    }
}

/// Checks a `max_in_flight`.
pub fn check_max_in_flight(n: u32) -> Result<u32, String> {
    match n {
        1..=LIMIT_MAX => Ok(n),
        _ => Err(format!(
            "max_in_flight must be 1 to {LIMIT_MAX} (leave it out for no limit), not {n}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_print_and_space_their_calls() {
        for (text, calls, per, shown) in [
            ("50/s", 50, Duration::from_secs(1), "50/s"),
            ("600/m", 600, Duration::from_secs(60), "600/m"),
            (" 2 / h ", 2, Duration::from_secs(3_600), "2/h"),
            ("5/250ms", 5, Duration::from_millis(250), "5/250ms"),
        ] {
            let rate: Rate = text.parse().unwrap();
            assert_eq!((rate.calls, rate.per), (calls, per), "{text}");
            assert_eq!(rate.to_string(), shown);
            assert_eq!(rate.to_string().parse::<Rate>().unwrap(), rate);
        }
        assert_eq!(
            "50/s".parse::<Rate>().unwrap().interval(),
            Duration::from_millis(20)
        );
        for (text, why) in [
            ("50", "has no '/'"),
            ("x/s", "number of calls"),
            ("0/s", "1 to"),
            ("5/fortnight", "no period"),
            ("5/0s", "1ms to 24h"),
        ] {
            let err = text.parse::<Rate>().unwrap_err();
            assert!(
                err.contains(why) && err.contains("\"50/s\""),
                "{text}: {err}"
            );
        }
        assert!(check_max_in_flight(0).is_err());
        assert_eq!(check_max_in_flight(2), Ok(2));
    }
}
