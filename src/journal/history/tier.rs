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
    fs::{self, File},
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{FinishedSaga, HistoryError, Segment, SegmentCheck, Written, write_segment};
use crate::{
    journal::{ListQuery, SagaSummary},
    saga::{Event, SagaId, Timestamp},
};

/// The file name suffix of a segment.
const SUFFIX: &str = ".segment";

/// Every segment of a history directory, by sequence number.
pub struct Tier {
    dir: PathBuf,
    /// Shared so that a long read of one (retention archiving it) holds
    /// no lock of the tier's.
    segments: BTreeMap<u64, Arc<Segment>>,
}

impl Tier {
    /// Opens every segment in `dir` (reading their footers only), creating
    /// the directory if it is absent and removing unfinished writes.
    pub fn open(dir: &Path) -> Result<Self, HistoryError> {
        crate::private::dir(dir).map_err(|e| HistoryError::io("creating", dir, e))?;
        Self::open_segments(dir, true)
    }

    /// Opens the segments of a stopped server's `dir` changing nothing (an
    /// unfinished write is left for the server's next start to remove); a
    /// directory that does not exist is an empty tier.
    pub fn open_read_only(dir: &Path) -> Result<Self, HistoryError> {
        if !dir.exists() {
            return Ok(Self {
                dir: dir.to_path_buf(),
                segments: BTreeMap::new(),
            });
        }
        Self::open_segments(dir, false)
    }

    fn open_segments(dir: &Path, remove_unfinished: bool) -> Result<Self, HistoryError> {
        let entries = fs::read_dir(dir).map_err(|e| HistoryError::io("listing", dir, e))?;
        let mut segments = BTreeMap::new();
        for entry in entries {
            let path = entry
                .map_err(|e| HistoryError::io("listing", dir, e))?
                .path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".tmp") {
                if remove_unfinished {
                    fs::remove_file(&path)
                        .map_err(|e| HistoryError::io("removing the unfinished write", &path, e))?;
                }
                continue;
            }
            let Some(number) = name.strip_suffix(SUFFIX).and_then(|n| n.parse().ok()) else {
                continue;
            };
            segments.insert(number, Arc::new(Segment::open(&path)?));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            segments,
        })
    }

    /// The number and the path the next segment is written under.
    pub fn next(&self) -> (u64, PathBuf) {
        let number = self.segments.last_key_value().map_or(1, |(n, _)| n + 1);
        (number, self.dir.join(format!("{number:08}{SUFFIX}")))
    }

    /// Opens the segment written as `number` (at [`Tier::next`]'s path) and
    /// adds it.
    pub fn insert(&mut self, number: u64, path: &Path) -> Result<(), HistoryError> {
        self.segments.insert(number, Arc::new(Segment::open(path)?));
        Ok(())
    }

    /// Writes `sagas` as the next segment and adds it.
    pub fn add(&mut self, sagas: Vec<FinishedSaga>) -> Result<Written, HistoryError> {
        let (number, path) = self.next();
        let written = write_segment(&path, sagas)?;
        self.insert(number, &path)?;
        Ok(written)
    }

    /// The segments whose every saga ended before `cutoff`, oldest first:
    /// each its number and its highest offset.
    pub fn ended_before(&self, cutoff: Timestamp) -> Vec<(u64, u64)> {
        self.segments
            .iter()
            .filter(|(_, s)| s.last_end() < cutoff)
            .map(|(&n, s)| (n, s.offsets().1))
            .collect()
    }

    /// The segment `number`.
    pub fn segment(&self, number: u64) -> Option<Arc<Segment>> {
        self.segments.get(&number).cloned()
    }

    /// Removes segment `number`, its file and its name (the directory is
    /// synced): its sagas are gone from every later read.
    pub fn retire(&mut self, number: u64) -> Result<(), HistoryError> {
        let Some(segment) = self.segments.remove(&number) else {
            return Ok(());
        };
        let path = segment.path().to_path_buf();
        fs::remove_file(&path).map_err(|e| HistoryError::io("removing", &path, e))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| HistoryError::io("syncing the directory", &self.dir, e))
    }

    /// Sagas in every segment (a saga written twice counts twice).
    pub fn sagas(&self) -> u64 {
        self.segments.values().map(|s| s.sagas()).sum()
    }

    /// Segment files.
    pub fn segments(&self) -> usize {
        self.segments.len()
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
        // Newest segments (by their highest id) first. Each segment's first
        // `limit` are enough: a page is the newest `limit` of their union;
        // and once the page is full, a segment whose every id is below the
        // page's oldest adds nothing. Segments hold the sagas of one run of
        // the mover, so their id ranges barely overlap and a page reads one
        // or two of them.
        let mut segments: Vec<&Segment> = self
            .segments
            .values()
            .map(|s| &**s)
            .filter(|s| s.sagas() > 0)
            .collect();
        segments.sort_by_key(|s| std::cmp::Reverse(s.ids().1));
        let mut all: BTreeMap<SagaId, SagaSummary> = BTreeMap::new();
        for segment in segments {
            let full = all.len() >= query.limit;
            if full
                && all
                    .first_key_value()
                    .is_some_and(|(&oldest, _)| segment.ids().1 < oldest)
            {
                break;
            }
            for summary in segment.list(query)? {
                all.insert(summary.id, summary);
            }
            while all.len() > query.limit {
                all.pop_first();
            }
        }
        Ok(all.into_values().rev().collect())
    }

    /// Up to `limit` events with an offset above `after`, in offset order,
    /// each offset once.
    pub fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>, HistoryError> {
        // Lowest offsets first: once `limit` are found, a segment whose
        // lowest offset is above all of them has none to add.
        let mut segments: Vec<&Segment> = self
            .segments
            .values()
            .map(|s| &**s)
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

    /// [`Segment::check`] of every segment, oldest first, handed to `each`
    /// with its path as it is done (a segment's offsets are a few MB; a
    /// tier's, gigabytes): each segment's result on its own, so one damaged
    /// segment hides none of the others.
    pub fn check(&self, each: &mut dyn FnMut(&Path, Result<SegmentCheck, HistoryError>)) {
        for segment in self.segments.values() {
            each(segment.path(), segment.check());
        }
    }
}
