//! The history tier: finished sagas in immutable, indexed segment files that
//! a journal's open does not read (docs/design.md, "History off the open
//! path"; issue 23).
//!
//! sled 0.34 holds an in-memory page entry for every tree node it ever wrote
//! and replays, at each open, everything it logged since the open before, so
//! a journal that keeps every finished saga in sled opens slower and holds
//! more memory with every saga that ever ended. A saga that can no longer
//! change (COMPLETED or COMPENSATED) needs neither: it is written once into a
//! segment, and read back with a few `pread`s when asked for.
//!
//! ```text
//!  write_segment(path, sagas)          Segment::open(path)
//!    sort by id, cut into blocks ──▶    footer only: ranges, sets, Bloom filter
//!    blocks │ block index │ keys │       │
//!    offsets │ footer ──▶ sync, rename   ├─ get(id)            block index ─▶ one block
//!                                        ├─ saga_for_key(key)  Bloom ─▶ key table ─▶ get
//!                                        ├─ list(before, …)    blocks, newest first
//!                                        ├─ events_after(off)  offset table ─▶ blocks
//!                                        └─ check()            every byte, every fold
//! ```
//!
//! - `layout.rs`: the file's sections, their fixed-size entries, the footer,
//!   and the one hash both the key table and the Bloom filter use;
//! - `bloom.rs`: the Bloom filter of a segment's idempotency keys;
//! - `write.rs`: [`write_segment`], durable on `Ok`;
//! - `segment.rs`: [`Segment`], the reads;
//! - `tier.rs`: [`Tier`], the segments of a directory read as one;
//! - `shared.rs`: [`SharedTier`], the tier as a journal shares it between
//!   its readers, its writer thread, the mover and retention.
//!
//! Invariants of a segment:
//! - Written once: to `NAME.tmp`, synced, renamed, its directory synced; an
//!   open never sees a half-written segment under its name, and nothing is
//!   ever rewritten in place.
//! - Every section is checksummed (each block on its own, the indexes and the
//!   footer), and an open reads only the footer: memory per segment is its
//!   footer and its Bloom filter (about 1.2 bytes a saga), never a per-saga
//!   index.
//! - Sagas are stored whole (summary, idempotency key, every event with its
//!   offset), each event in the journal's own versioned, checksummed record
//!   format (`kv/codec/record.rs`), so a later build reads old segments the
//!   way it reads old records.

use std::path::PathBuf;

use crate::{
    journal::SagaSummary,
    saga::{Event, SagaId},
};

mod bloom;
mod layout;
mod segment;
mod shared;
#[cfg(test)]
mod tests;
mod tier;
mod write;

pub use segment::{Segment, SegmentCheck};
pub use shared::SharedTier;
pub use tier::Tier;
pub use write::{Written, write_segment};

/// Where a data directory keeps its history tier.
pub const HISTORY_DIR: &str = "history";

/// What one move of final sagas into the history tier did
/// ([`crate::journal::Journal::move_to_history`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Moved {
    /// Sagas written to the new segment, and removed from the store.
    pub sagas: usize,
    /// Bytes of the new segment.
    pub bytes: u64,
}

/// One finished saga as the history tier keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct FinishedSaga {
    pub summary: SagaSummary,
    pub idempotency_key: Option<String>,
    /// Every event of the saga, in `seq` order, with their offsets.
    pub events: Vec<Event>,
}

impl FinishedSaga {
    pub fn id(&self) -> SagaId {
        self.summary.id
    }
}

/// What can go wrong writing or reading a segment.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("history segment {} is damaged at byte {at}: {why}", path.display())]
    Damaged { path: PathBuf, at: u64, why: String },
    #[error("saga {saga} cannot go into a history segment: {why}")]
    NotFinished { saga: SagaId, why: String },
}

impl HistoryError {
    fn io(what: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        HistoryError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}
