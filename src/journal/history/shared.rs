//! The tier as a journal shares it: [`SharedTier`], read by every reader and
//! by the writer thread's idempotency check, changed by the mover (a segment
//! added) and by retention (a segment retired).
//!
//! Readers hold the lock only to look up what to read; a change holds it
//! only to add or drop a segment already written or about to be unlinked,
//! never while a segment's file is written. An unlinked segment stays
//! readable through its open file, so a read that found it before the
//! retirement finishes as if it came first.

use std::{
    path::Path,
    sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard},
};

use super::{FinishedSaga, HistoryError, SegmentCheck, Tier, Written, write_segment};
use crate::{
    journal::{ListQuery, SagaSummary},
    saga::{Event, SagaId, Timestamp},
};

/// A [`Tier`] behind a lock, with one change at a time.
pub struct SharedTier {
    tier: RwLock<Tier>,
    /// Held through a change, from choosing the next segment's number to
    /// adding it, so two writers never pick the same one.
    changing: Mutex<()>,
}

impl SharedTier {
    pub fn new(tier: Tier) -> Self {
        Self {
            tier: RwLock::new(tier),
            changing: Mutex::new(()),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Tier> {
        self.tier.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Tier> {
        self.tier.write().unwrap_or_else(|p| p.into_inner())
    }

    fn change(&self) -> std::sync::MutexGuard<'_, ()> {
        self.changing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `sagas` as a new segment, durably, then adds it: from then on
    /// every read finds them.
    pub fn add(&self, sagas: Vec<FinishedSaga>) -> Result<Written, HistoryError> {
        let _change = self.change();
        let (number, path) = self.read().next();
        let written = write_segment(&path, sagas)?;
        self.write().insert(number, &path)?;
        Ok(written)
    }

    /// [`Tier::ended_before`].
    pub fn ended_before(&self, cutoff: Timestamp) -> Vec<(u64, u64)> {
        self.read().ended_before(cutoff)
    }

    /// The ids of the sagas in segment `number` ([`super::Segment::saga_ids`]);
    /// none if it is gone. The tier's lock is not held while it reads.
    pub fn saga_ids_of(&self, number: u64) -> Result<Vec<SagaId>, HistoryError> {
        let segment = self.read().segment(number);
        segment.map_or(Ok(Vec::new()), |s| s.saga_ids())
    }

    /// The highest offset in segment `number`, if it is there.
    pub fn highest_offset(&self, number: u64) -> Option<u64> {
        self.read().segment(number).map(|s| s.offsets().1)
    }

    /// [`Tier::retire`].
    pub fn retire(&self, number: u64) -> Result<(), HistoryError> {
        let _change = self.change();
        self.write().retire(number)
    }

    /// Sagas in every segment (a saga written twice counts twice).
    pub fn sagas(&self) -> u64 {
        self.read().sagas()
    }

    /// Segment files.
    pub fn segments(&self) -> usize {
        self.read().segments()
    }

    pub fn get(&self, id: SagaId) -> Result<Option<FinishedSaga>, HistoryError> {
        self.read().get(id)
    }

    pub fn saga_for_key(&self, key: &str) -> Result<Option<SagaId>, HistoryError> {
        self.read().saga_for_key(key)
    }

    pub fn list(&self, query: &ListQuery) -> Result<Vec<SagaSummary>, HistoryError> {
        self.read().list(query)
    }

    pub fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>, HistoryError> {
        self.read().events_after(after, limit)
    }

    pub fn check(&self, each: &mut dyn FnMut(&Path, Result<SegmentCheck, HistoryError>)) {
        self.read().check(each)
    }
}
