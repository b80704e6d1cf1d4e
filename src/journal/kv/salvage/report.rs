//! What a salvage carried into the new journal, and what it could not.

use std::{collections::BTreeMap, fmt};

use crate::{
    journal::{SagaSummary, kv::check::report::by_state},
    saga::{Event, SagaId, SagaState},
};

/// Sagas listed in full before the rest are only counted.
const SAGAS_SHOWN: usize = 50;

/// What a salvage did.
#[derive(Debug, Default)]
pub struct SalvageReport {
    /// Sagas carried, whole.
    pub sagas: usize,
    pub events: usize,
    /// Carried sagas by state name.
    pub by_state: BTreeMap<&'static str, usize>,
    pub participants: usize,
    /// Sagas whose history could not be read whole: not carried.
    pub incomplete: Vec<Incomplete>,
    /// Sagas an index names whose events are all gone.
    pub lost: Vec<LostSaga>,
    /// Records that are no saga's and did not decode, and other doubts.
    pub problems: Vec<String>,
    /// Offsets above the old archive horizon the new journal has no event
    /// for (inclusive ranges).
    pub lost_offsets: Vec<(u64, u64)>,
    /// The archive horizon before and after: raised over the lost offsets.
    pub archived_through: (u64, u64),
    /// The new journal's offset counter.
    pub next_offset: u64,
}

/// A saga not carried because its history could not be read whole.
#[derive(Debug)]
pub struct Incomplete {
    pub id: SagaId,
    pub why: String,
    /// What its listing entry says, when it could be read.
    pub summary: Option<SagaSummary>,
    /// Its events from seq 1 as far as they read without a hole (maybe none).
    pub events: Vec<Event>,
}

/// A saga named by an index whose events are all gone.
#[derive(Debug)]
pub struct LostSaga {
    pub id: SagaId,
    /// The indexes that name it.
    pub named_by: Vec<&'static str>,
    pub summary: Option<SagaSummary>,
}

impl SalvageReport {
    /// Every saga not carried: incomplete or lost.
    pub fn not_carried(&self) -> impl Iterator<Item = SagaId> + '_ {
        self.incomplete
            .iter()
            .map(|s| s.id)
            .chain(self.lost.iter().map(|s| s.id))
    }

    /// True when everything read was carried and nothing is missing.
    pub fn is_lossless(&self) -> bool {
        self.incomplete.is_empty()
            && self.lost.is_empty()
            && self.problems.is_empty()
            && self.lost_offsets.is_empty()
    }

    pub(super) fn carry(&mut self, state: &SagaState, events: usize) {
        self.sagas += 1;
        self.events += events;
        *self.by_state.entry(state.status.as_str()).or_default() += 1;
    }

    pub(super) fn note_incomplete(
        &mut self,
        id: SagaId,
        why: String,
        events: Vec<Event>,
        summary: Option<&SagaSummary>,
    ) {
        self.incomplete.push(Incomplete {
            id,
            why,
            summary: summary.cloned(),
            events,
        });
    }
}

/// "listed as RUNNING (shop, created …)", or nothing when no listing was read.
fn listed(summary: Option<&SagaSummary>) -> String {
    summary.map_or_else(String::new, |s| {
        format!(
            " (listed as {}, {}, created {})",
            s.status.as_str(),
            s.definition,
            humantime::format_rfc3339_millis(s.created_at.to_system_time())
        )
    })
}

/// Writes `heading` and a line for each of `items`, the first
/// [`SAGAS_SHOWN`] of them, then how many more; nothing when there are none.
fn list<T>(
    f: &mut fmt::Formatter<'_>,
    heading: String,
    items: &[T],
    line: impl Fn(&T) -> String,
) -> fmt::Result {
    if items.is_empty() {
        return Ok(());
    }
    writeln!(f, "{heading}")?;
    for item in items.iter().take(SAGAS_SHOWN) {
        writeln!(f, "  {}", line(item))?;
    }
    if items.len() > SAGAS_SHOWN {
        writeln!(f, "  … and {} more", items.len() - SAGAS_SHOWN)?;
    }
    Ok(())
}

impl fmt::Display for SalvageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "carried: {} sagas ({}), {} events, {} participants",
            self.sagas,
            by_state(&self.by_state),
            self.events,
            self.participants
        )?;
        list(
            f,
            format!(
                "lost: {} sagas whose events could not be read at all:",
                self.lost.len()
            ),
            &self.lost,
            |lost| {
                format!(
                    "saga {}{}, named by the {}",
                    lost.id,
                    listed(lost.summary.as_ref()),
                    lost.named_by.join(", ")
                )
            },
        )?;
        list(
            f,
            format!(
                "not carried: {} sagas whose history could not be read whole (resuming them from an earlier state could repeat or undo what they did):",
                self.incomplete.len()
            ),
            &self.incomplete,
            |saga| {
                format!(
                    "saga {}{}: {}; {} events readable",
                    saga.id,
                    listed(saga.summary.as_ref()),
                    saga.why,
                    saga.events.len()
                )
            },
        )?;
        let (before, after) = self.archived_through;
        if !self.lost_offsets.is_empty() {
            let ranges: Vec<String> = self
                .lost_offsets
                .iter()
                .map(|(a, b)| match a == b {
                    true => a.to_string(),
                    false => format!("{a}..={b}"),
                })
                .collect();
            writeln!(
                f,
                "offsets not in the new journal: {}; its archive horizon is raised from {before} to {after}, so a feed resuming below it is told where to resume",
                ranges.join(", ")
            )?;
        } else if after > before {
            writeln!(
                f,
                "history segments not carried: the archive horizon is raised from {before} to {after}, so a feed resuming below it is told where to resume"
            )?;
        }
        for problem in &self.problems {
            writeln!(f, "problem: {problem}")?;
        }
        Ok(())
    }
}
