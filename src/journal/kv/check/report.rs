//! What a check finds, and what it holds the indexes against: the types that
//! the checkers of each index (beside the code that keeps it) fill in.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
};

use crate::saga::{Event, SagaId, SagaState};

/// Problems listed in full before the rest are only counted.
const PROBLEMS_SHOWN: usize = 50;

/// What a check found.
#[derive(Debug, Default)]
pub struct CheckReport {
    pub sagas: usize,
    pub events: usize,
    pub participants: usize,
    /// The archive horizon: offsets at or below it may belong to removed sagas.
    pub archived_through: u64,
    /// Sagas by state name.
    pub by_state: BTreeMap<&'static str, usize>,
    /// Sagas and segments in the history tier, each verified whole.
    pub history_sagas: u64,
    pub history_segments: usize,
    /// Every problem, as "where: what".
    pub problems: Vec<String>,
}

impl CheckReport {
    /// True when nothing is damaged.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// "3 RUNNING, 1 FAILED", or "none": sagas by state, for people.
pub(in crate::journal::kv) fn by_state(by_state: &BTreeMap<&'static str, usize>) -> String {
    let states: Vec<String> = by_state.iter().map(|(s, n)| format!("{n} {s}")).collect();
    match states.is_empty() {
        true => "none".to_string(),
        false => states.join(", "),
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "sagas: {} ({}); events: {}; participants: {}",
            self.sagas,
            by_state(&self.by_state),
            self.events,
            self.participants
        )?;
        if self.archived_through > 0 {
            writeln!(
                f,
                "retention: sagas archived from the journal, offsets up to {} may be missing",
                self.archived_through
            )?;
        }
        if self.history_segments > 0 {
            writeln!(
                f,
                "history: {} finished sagas in {} segment(s) of the history tier",
                self.history_sagas, self.history_segments
            )?;
        }
        if self.is_clean() {
            return writeln!(
                f,
                "journal OK: every record verified, every saga folds, indexes agree"
            );
        }
        writeln!(f, "journal DAMAGED: {} problem(s)", self.problems.len())?;
        for problem in self.problems.iter().take(PROBLEMS_SHOWN) {
            writeln!(f, "  {problem}")?;
        }
        if self.problems.len() > PROBLEMS_SHOWN {
            writeln!(f, "  … and {} more", self.problems.len() - PROBLEMS_SHOWN)?;
        }
        Ok(())
    }
}

/// Every event of the journal, as the indexes are checked against them.
pub(in crate::journal::kv) struct Histories {
    /// Each saga's events, in seq order.
    pub(in crate::journal::kv) events: BTreeMap<SagaId, Vec<Event>>,
    /// Each saga's state, for the sagas whose events fold.
    pub(in crate::journal::kv) states: HashMap<SagaId, SagaState>,
    /// Offset → (saga, seq), for every event.
    pub(in crate::journal::kv) offsets: HashMap<u64, (SagaId, u64)>,
    /// The highest offset of any event (0: none).
    pub(in crate::journal::kv) max_offset: u64,
}
