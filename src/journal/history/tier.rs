//! The segments of one history directory, read as one: `DATA_DIR/history/`.
//!
//! Segments are named by a sequence number (`00000001.segment`, …), given in
//! the order they were written. A saga may be in two segments (a mover that
//! died after its segment was synced and before the sagas left the store
//! writes them again), so reads take the newest segment's copy and merge
//! listings and feeds without repeating an id or an offset. A `.tmp` file is a
//! segment whose write never finished: it is removed at open.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use super::{FinishedSaga, HistoryError, Segment, SegmentCheck, Written, write_segment};
use crate::{
    journal::{ListQuery, SagaSummary},
    saga::{Event, SagaId},
};

/// The file name suffix of a segment.
const SUFFIX: &str = ".segment";

/// Every segment of a history directory, by sequence number.
pub struct Tier {
    dir: PathBuf,
    segments: BTreeMap<u64, Segment>,
}

impl Tier {
    /// Opens every segment in `dir` (reading their footers only), creating
    /// the directory if it is absent and removing unfinished writes.
    pub fn open(dir: &Path) -> Result<Self, HistoryError> {
        fs::create_dir_all(dir).map_err(|e| HistoryError::io("creating", dir, e))?;
        let entries = fs::read_dir(dir).map_err(|e| HistoryError::io("listing", dir, e))?;
        let mut segments = BTreeMap::new();
        for entry in entries {
            let path = entry
                .map_err(|e| HistoryError::io("listing", dir, e))?
                .path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".tmp") {
                fs::remove_file(&path)
                    .map_err(|e| HistoryError::io("removing the unfinished write", &path, e))?;
                continue;
            }
            let Some(number) = name.strip_suffix(SUFFIX).and_then(|n| n.parse().ok()) else {
                continue;
            };
            segments.insert(number, Segment::open(&path)?);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            segments,
        })
    }

    /// Writes `sagas` as the next segment and adds it.
    pub fn add(&mut self, sagas: Vec<FinishedSaga>) -> Result<Written, HistoryError> {
        let number = self.segments.last_key_value().map_or(1, |(n, _)| n + 1);
        let path = self.dir.join(format!("{number:08}{SUFFIX}"));
        let written = write_segment(&path, sagas)?;
        self.segments.insert(number, Segment::open(&path)?);
        Ok(written)
    }

    /// Sagas in every segment (a saga written twice counts twice).
    pub fn sagas(&self) -> u64 {
        self.segments.values().map(Segment::sagas).sum()
    }

    /// The saga `id`, newest copy first.
    pub fn get(&self, id: SagaId) -> Result<Option<FinishedSaga>, HistoryError> {
        for segment in self.segments.values().rev() {
            if let Some(saga) = segment.get(id)? {
                return Ok(Some(saga));
            }
        }
        Ok(None)
    }

    /// The saga started with idempotency key `key`.
    pub fn saga_for_key(&self, key: &str) -> Result<Option<SagaId>, HistoryError> {
        for segment in self.segments.values().rev() {
            if let Some(id) = segment.saga_for_key(key)? {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// The page `query` asks for, each saga once.
    pub fn list(&self, query: &ListQuery) -> Result<Vec<SagaSummary>, HistoryError> {
        // Each segment's first `limit` are enough: a page is the newest
        // `limit` of their union.
        let mut all: BTreeMap<SagaId, SagaSummary> = BTreeMap::new();
        for segment in self.segments.values() {
            for summary in segment.list(query)? {
                all.insert(summary.id, summary);
            }
        }
        Ok(all.into_values().rev().take(query.limit).collect())
    }

    /// Up to `limit` events with an offset above `after`, in offset order,
    /// each offset once.
    pub fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>, HistoryError> {
        // Lowest offsets first: once `limit` are found, a segment whose
        // lowest offset is above all of them has none to add.
        let mut segments: Vec<&Segment> = self
            .segments
            .values()
            .filter(|s| s.offsets().1 > after)
            .collect();
        segments.sort_by_key(|s| s.offsets().0);
        let mut all: BTreeMap<u64, Event> = BTreeMap::new();
        for segment in segments {
            // Trimmed to `limit` below, so the last is the limit-th lowest.
            let full = all.len() >= limit;
            if full
                && all
                    .last_key_value()
                    .is_some_and(|(&l, _)| segment.offsets().0 > l)
            {
                break;
            }
            for event in segment.events_after(after, limit)? {
                all.insert(event.offset.get(), event);
            }
            while all.len() > limit {
                all.pop_last();
            }
        }
        Ok(all.into_values().collect())
    }

    /// [`Segment::check`] of every segment, with its path.
    pub fn check(&self) -> Result<Vec<(PathBuf, SegmentCheck)>, HistoryError> {
        self.segments
            .values()
            .map(|s| Ok((s.path().to_path_buf(), s.check()?)))
            .collect()
    }
}
