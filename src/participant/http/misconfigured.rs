//! Answers that say a participant's registration is wrong (a `4xx` other than
//! the ones the contract gives a meaning, a `3xx`): each is retried like any
//! transient failure, but retrying will not fix a wrong path or a missing
//! token, so an operator must hear of it. Without care they would hear of it
//! once per attempt, thousands of times; here they hear of it **once per
//! participant** (an error in the log with the status and the first bytes of
//! the body), and every such answer is counted, by participant and status,
//! for `sagad_participant_config_errors_total`.
//!
//! Invariants:
//! - The log line is written at most once per participant name for the life
//!   of the process, whatever the status.
//! - Counts only grow.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

use super::answer::quote;
use crate::participant::ConfigErrorCount;

/// The counts, and who was logged.
#[derive(Default)]
pub struct Misconfigured {
    /// A std mutex: held only to count, never across an await.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    counts: HashMap<(String, u16), u64>,
    logged: HashSet<String>,
}

impl Misconfigured {
    /// Counts one such answer of `participant`, logging it if it is its first.
    /// Returns whether it was logged.
    pub fn record(&self, participant: &str, url: &str, status: u16, body: &[u8]) -> bool {
        let first = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            *state
                .counts
                .entry((participant.to_string(), status))
                .or_default() += 1;
            state.logged.insert(participant.to_string())
        };
        if first {
            tracing::error!(
                participant,
                endpoint = url,
                status,
                body = %quote(body),
                "participant answered HTTP {status}: its registration (URL, method, credentials) or the participant is misconfigured; sagad retries, but this will not change by itself (logged once per participant; sagad_participant_config_errors_total counts them)"
            );
        }
        first
    }

    /// Every count so far.
    pub fn counts(&self) -> Vec<ConfigErrorCount> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut counts: Vec<ConfigErrorCount> = state
            .counts
            .iter()
            .map(|((participant, status), count)| ConfigErrorCount {
                participant: participant.clone(),
                status: *status,
                count: *count,
            })
            .collect();
        counts.sort_by(|a, b| (&a.participant, a.status).cmp(&(&b.participant, b.status)));
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_once_per_participant_and_counted_every_time() {
        let m = Misconfigured::default();
        assert!(m.record("pay", "http://h/p", 400, b"bad"));
        assert!(!m.record("pay", "http://h/p", 400, b"bad"));
        assert!(!m.record("pay", "http://h/p", 404, b""));
        assert!(m.record("ship", "http://h/s", 401, b""));
        let counts: Vec<_> = m
            .counts()
            .into_iter()
            .map(|c| (c.participant, c.status, c.count))
            .collect();
        assert_eq!(
            counts,
            [
                ("pay".to_string(), 400, 2),
                ("pay".to_string(), 404, 1),
                ("ship".to_string(), 401, 1)
            ]
        );
    }
}
