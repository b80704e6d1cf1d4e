//! The log's part in a salvage (`sagad journal salvage`): its batches laid
//! over what could still be read of a damaged store.
//!
//! An open replays the batches the store lacks, by the store's batch marker
//! (`checkpoint.rs`). A salvage does the same over the entries read out of
//! the damaged store (`store/salvage.rs`), with what an open refuses turned
//! into facts for the report:
//! - **The log holds every batch since the journal began**: it alone
//!   rebuilds the store, and the damaged store is not needed at all.
//! - **Batches are lost** (the store's marker is older than the log's first
//!   batch): the store's entries are as of that marker, the log's from its
//!   first batch on, and what happened in between is gone. The keys the log
//!   wrote are returned, so the schema above can tell what is current.
//! - **The marker cannot be read** (it lies in a gap): which batches the
//!   store lacks is unknown, so every batch of the log is laid over it, in
//!   order. A batch the store already held then writes again what a later
//!   one may have rewritten; the log's later batches write it again in turn,
//!   and the schema above drops what is duplicated.
//!
//! A log that does not verify is refused, as at an open: its damage is named
//! with file and byte, and a salvage cannot go on past it.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use super::{APPLIED_BATCH_KEY, scan};
use crate::journal::store::{Result, salvage::Readable};

/// What the log added to a salvage.
#[derive(Debug, Default)]
pub struct Replayed {
    /// The log's directory.
    pub dir: PathBuf,
    /// The batches the log holds: `first..=last` (none when `last < first`).
    pub first: u64,
    pub last: u64,
    /// Batches laid over the store.
    pub replayed: usize,
    /// The log alone rebuilt the store: it holds every batch since the
    /// journal began.
    pub whole: bool,
    /// Batches neither the store nor the log holds (inclusive), when the
    /// store's marker could be read.
    pub lost: Option<(u64, u64)>,
    /// The store's batch marker could not be read, so every batch of the
    /// log was laid over it.
    pub marker_unknown: bool,
    /// Every key a batch laid over the store wrote (put or removed): its
    /// value is the log's, known whatever gaps the store had there.
    pub written: BTreeSet<Vec<u8>>,
    /// A torn tail the log ends in (segment, byte): cut off, its batch
    /// never acknowledged.
    pub torn: Option<(PathBuf, u64)>,
}

/// Lays the log in `dir` over `readable` (see the module docs).
pub fn lay_over(dir: &Path, readable: &mut Readable) -> Result<Replayed> {
    let found = scan(dir)?;
    let (first, last) = found.batches();
    let whole = !found.segments.is_empty() && first == 1;
    let mut replayed = Replayed {
        dir: dir.to_path_buf(),
        first,
        last,
        whole,
        torn: found.torn.clone(),
        ..Replayed::default()
    };
    let applied = if whole {
        // Nothing of the damaged store is needed.
        readable.entries.clear();
        readable.gaps.clear();
        Some(0)
    } else {
        match readable.entries.get(APPLIED_BATCH_KEY) {
            Some(bytes) => {
                Some(<[u8; 8]>::try_from(bytes.as_slice()).map_or(0, u64::from_be_bytes))
            }
            None if readable.unknown(APPLIED_BATCH_KEY) => None,
            None => Some(0),
        }
    };
    match applied {
        Some(applied) if !found.segments.is_empty() && first > applied + 1 => {
            replayed.lost = Some((applied + 1, first - 1));
        }
        Some(_) => {}
        None => replayed.marker_unknown = true,
    }
    for (_, record) in found.records {
        if applied.is_some_and(|a| record.batch <= a) {
            continue;
        }
        for (key, value) in record.writes {
            match value {
                Some(value) => readable.entries.insert(key.clone(), value),
                None => readable.entries.remove(&key),
            };
            replayed.written.insert(key);
        }
        replayed.replayed += 1;
    }
    Ok(replayed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::store::{
        KvStore, MemoryStore,
        salvage::Gap,
        wal::{WalOptions, WalStore},
    };

    fn put(key: &str, value: &str) -> (Vec<u8>, Option<Vec<u8>>) {
        (key.as_bytes().to_vec(), Some(value.as_bytes().to_vec()))
    }

    /// A log of three one-key batches, never checkpointed (a crash after
    /// them), beside an open that found nothing before them.
    fn crashed_log(dir: &Path) {
        let options = WalOptions {
            zero_filled_segments: false,
            ..WalOptions::default()
        };
        let wal = WalStore::open_with(dir, MemoryStore::default(), options).unwrap();
        for i in 0..3 {
            wal.write(vec![put(&format!("k{i}"), "log")]).unwrap();
            wal.sync().unwrap();
        }
        wal.crash();
    }

    #[test]
    fn a_log_from_the_first_batch_rebuilds_alone() {
        let dir = tempfile::tempdir().unwrap();
        crashed_log(dir.path());
        let mut readable = Readable::default();
        readable
            .entries
            .insert(b"stale".to_vec(), b"store".to_vec());
        readable.gaps.push(Gap {
            after: None,
            before: None,
            error: "damaged".into(),
        });
        let replayed = lay_over(dir.path(), &mut readable).unwrap();
        assert!(replayed.whole);
        assert_eq!(
            (replayed.first, replayed.last, replayed.replayed),
            (1, 3, 3)
        );
        assert!(readable.gaps.is_empty() && !readable.entries.contains_key(b"stale".as_slice()));
        assert_eq!(
            readable.entries.get(b"k2".as_slice()),
            Some(&b"log".to_vec())
        );
    }

    #[test]
    fn batches_between_the_store_and_the_log_are_reported_lost() {
        let dir = tempfile::tempdir().unwrap();
        crashed_log(dir.path());
        // Opened again: checkpointed, the log starts at batch 4.
        let store = MemoryStore::default();
        let wal = WalStore::open(dir.path(), store).unwrap();
        wal.write(vec![put("k3", "log")]).unwrap();
        wal.sync().unwrap();
        wal.crash();
        let mut readable = Readable::default();
        readable
            .entries
            .insert(APPLIED_BATCH_KEY.to_vec(), 1u64.to_be_bytes().to_vec());
        let replayed = lay_over(dir.path(), &mut readable).unwrap();
        assert!(!replayed.whole && !replayed.marker_unknown);
        assert_eq!(replayed.lost, Some((2, 3)));
        assert_eq!(replayed.replayed, 1);
        assert!(replayed.written.contains(b"k3".as_slice()));

        // The marker unreadable: every batch laid over, the loss unknown.
        let mut readable = Readable::default();
        readable.gaps.push(Gap {
            after: Some(b"a".to_vec()),
            before: Some(b"z".to_vec()),
            error: "damaged".into(),
        });
        let replayed = lay_over(dir.path(), &mut readable).unwrap();
        assert!(replayed.marker_unknown && replayed.lost.is_none());
        assert_eq!(replayed.replayed, 1);
    }
}
