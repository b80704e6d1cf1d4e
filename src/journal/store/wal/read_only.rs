//! The log opened to read only: what `sagad journal check` and `sagad export`
//! read a stopped server's directory through.
//!
//! ```text
//!  open  ──▶ scan(dir): every segment read and verified  (segment.rs)
//!        ──▶ the batches the store lacks put in an overlay, in memory
//!  reads ──▶ overlay ▸ store                             (overlay.rs)
//! ```
//!
//! [`WalStore::open`](super::WalStore::open) replays the log into the store,
//! checkpoints, starts a fresh segment and deletes the old ones: an open for
//! writing changes the directory. This one reads the segments exactly as that
//! open does, refuses what it refuses (damage, batches the store lost that the
//! log no longer holds), and keeps what it would replay in memory instead, so
//! reads see what a server starting on the directory would see.
//!
//! Guarantees:
//! - **The log's directory is only read**: every segment is opened read-only;
//!   nothing is created, written, renamed or deleted there, no spare is
//!   prepared and no thread started.
//! - **Nothing is written to the store under it** by the open: what the store
//!   lacks stays in memory.
//! - **A torn tail is reported, not cut**: [`ReadOnlyLog::torn_tail`] names the
//!   segment and the byte where the next open for writing would cut the log,
//!   and whether the store already holds the batch cut off with it.
//! - **Writes stay in memory.** The journal above may write at open (an
//!   upgrade of an older journal's indexes, `kv/upgrade.rs`): those writes go
//!   to the overlay, and `sync` makes nothing durable. What is written here
//!   is gone when the store is dropped: never append through it.

use std::path::{Path, PathBuf};

use super::{
    APPLIED_BATCH_KEY,
    checkpoint::{applied_batch, refuse_lost_batches},
    overlay::Overlay,
    scan,
};
use crate::journal::store::{Direction, KeyRange, KeyWrite, KvStore, Result, StoreError, Visit};

/// A store with the log of `dir` laid over it, in memory; see the module docs.
pub struct ReadOnlyLog<S: KvStore> {
    inner: S,
    /// The batches of the log the store lacks, and anything written since.
    overlay: Overlay,
    /// Where the log ends in a torn write.
    torn: Option<TornTail>,
    /// Batches of the log laid over the store.
    replayed: usize,
}

impl<S: KvStore> ReadOnlyLog<S> {
    /// Reads and verifies the log in `dir` and lays every batch `inner` does
    /// not hold over it. Refuses a damaged log, and a store that lost batches
    /// the log no longer holds, as an open for writing does.
    pub fn open(dir: &Path, inner: S) -> Result<Self> {
        let found = scan(dir)?;
        let applied = applied_batch(&inner)?;
        refuse_lost_batches(dir, applied, &found, inner.location())?;
        let torn = found.torn.clone().map(|(segment, at)| {
            // The torn record is the last segment's next batch.
            let batch = found.segments.last().map_or(1, |(_, _, last)| last + 1);
            TornTail {
                segment,
                at,
                batch,
                in_store: batch <= applied,
            }
        });
        let overlay = Overlay::default();
        let mut replayed = 0;
        for (_, record) in found.records {
            if record.batch > applied {
                // Each batch holds its own marker (`APPLIED_BATCH_KEY`), so
                // the overlay's answers the last batch laid over the store.
                overlay.put(record.writes);
                replayed += 1;
            }
        }
        Ok(Self {
            inner,
            overlay,
            torn,
            replayed,
        })
    }

    /// Where the log ends in a torn write, if it does.
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.torn.as_ref()
    }

    /// How many batches of the log the store lacked (and which reads take
    /// from memory).
    pub fn replayed(&self) -> usize {
        self.replayed
    }

    /// The number of the last batch the store and the log together hold.
    pub fn last_batch(&self) -> Result<u64> {
        applied_batch(self)
    }

    /// The store under the log.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

/// Where the log ends in a torn write: a record that does not verify with
/// nothing but zeros after it, at the end of the last segment. An open for
/// writing cuts the log there, and the batch the record held with it: a
/// write the server died in the middle of (never acknowledged), or a last
/// record damaged after it was written, which the log cannot tell apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment it is in.
    pub segment: PathBuf,
    /// The byte offset of the record in the segment.
    pub at: u64,
    /// The batch the record held (or was to hold).
    pub batch: u64,
    /// Whether the store already holds that batch (a checkpoint took it
    /// before the record was damaged): cutting it off then loses nothing.
    pub in_store: bool,
}

impl<S: KvStore> KvStore for ReadOnlyLog<S> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.overlay.get(&self.inner, key)
    }

    fn range(&self, range: KeyRange<'_>, dir: Direction, visit: &mut Visit<'_>) -> Result<()> {
        self.overlay.range(&self.inner, range, dir, visit)
    }

    /// Into memory only (see the module docs), with the batch marker left as
    /// it is: nothing here is a batch of the log.
    fn write(&self, batch: Vec<KeyWrite>) -> Result<()> {
        if batch.iter().any(|(key, _)| key == APPLIED_BATCH_KEY) {
            return Err(StoreError::Engine(
                "a read-only log takes no write of its batch marker".into(),
            ));
        }
        self.overlay.put(batch);
        Ok(())
    }

    /// Nothing to make durable: writes here are never meant to last.
    fn sync(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::journal::store::{
        MemoryStore,
        wal::{WalOptions, WalStore, segment::HEADER_BYTES},
    };

    fn put(key: &str, value: &str) -> KeyWrite {
        (key.as_bytes().to_vec(), Some(value.as_bytes().to_vec()))
    }

    /// Every file under `dir` with its bytes.
    fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| {
                let bytes = std::fs::read(&p).unwrap();
                (p, bytes)
            })
            .collect()
    }

    /// The log opened for writing, with sparse segments only (no spare file
    /// appears beside them).
    fn open_for_writing(dir: &Path, store: MemoryStore) -> Result<WalStore<MemoryStore>> {
        let options = WalOptions {
            zero_filled_segments: false,
            ..WalOptions::default()
        };
        WalStore::open_with(dir, store, options)
    }

    /// A log of `batches` one-key batches, of which the store got the first
    /// `checkpointed`; returned with that store (as a crash leaves them).
    fn crashed_log(dir: &Path, batches: usize, checkpointed: usize) -> MemoryStore {
        let wal = open_for_writing(dir, MemoryStore::default()).unwrap();
        for i in 0..batches {
            wal.write(vec![put(&format!("k{i}"), "v")]).unwrap();
            wal.sync().unwrap();
        }
        wal.crash();
        // The store of a checkpoint that took the first batches.
        let store = MemoryStore::default();
        for (n, (_, record)) in scan(dir).unwrap().records.into_iter().enumerate() {
            if n < checkpointed {
                store.write(record.writes).unwrap();
            }
        }
        store
    }

    #[test]
    fn what_the_store_lacks_is_read_from_memory_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = crashed_log(dir.path(), 5, 2);
        let before = files(dir.path());
        let log = ReadOnlyLog::open(dir.path(), store).unwrap();
        assert_eq!(log.replayed(), 3);
        assert_eq!(log.last_batch().unwrap(), 5);
        for i in 0..5 {
            assert_eq!(
                log.get(format!("k{i}").as_bytes()).unwrap(),
                Some(b"v".to_vec())
            );
        }
        assert_eq!(
            log.inner().get(b"k4").unwrap(),
            None,
            "the store is left alone"
        );
        assert_eq!(log.inner().scan(b"k").unwrap().len(), 2);
        // Writes (an upgrade's, at the journal's open) stay in memory too.
        log.write(vec![put("k9", "new")]).unwrap();
        log.sync().unwrap();
        assert_eq!(log.get(b"k9").unwrap(), Some(b"new".to_vec()));
        assert_eq!(log.inner().get(b"k9").unwrap(), None);
        assert!(log.write(vec![(APPLIED_BATCH_KEY.to_vec(), None)]).is_err());
        drop(log);
        assert_eq!(files(dir.path()), before, "the log's files are untouched");
    }

    #[test]
    fn a_torn_tail_is_reported_where_an_open_for_writing_cuts_it() {
        let dir = tempfile::tempdir().unwrap();
        crashed_log(dir.path(), 3, 0);
        let (path, mut bytes) = files(dir.path()).into_iter().next().unwrap();
        let end = bytes.iter().rposition(|b| *b != 0).unwrap();
        bytes[end] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();

        let log = ReadOnlyLog::open(dir.path(), MemoryStore::default()).unwrap();
        let torn = log.torn_tail().expect("a torn tail").clone();
        assert_eq!(torn.segment, path);
        assert!(
            torn.at > HEADER_BYTES && (torn.at as usize) < end,
            "{torn:?}"
        );
        assert_eq!((torn.batch, torn.in_store), (3, false));
        assert_eq!(log.replayed(), 2, "the torn batch is not read");
        assert!(log.get(b"k2").unwrap().is_none());
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "nor cut off");

        // Damaged after a checkpoint took its batch: the store still has it.
        let store = MemoryStore::default();
        for (_, record) in scan(dir.path()).unwrap().records {
            store.write(record.writes).unwrap();
        }
        store
            .write(vec![
                put("k2", "v"),
                (
                    APPLIED_BATCH_KEY.to_vec(),
                    Some(3u64.to_be_bytes().to_vec()),
                ),
            ])
            .unwrap();
        let log = ReadOnlyLog::open(dir.path(), store).unwrap();
        assert!(log.torn_tail().unwrap().in_store);
        assert_eq!(log.get(b"k2").unwrap(), Some(b"v".to_vec()));
    }

    #[test]
    fn damage_and_lost_batches_are_refused_as_an_open_for_writing_refuses_them() {
        let dir = tempfile::tempdir().unwrap();
        crashed_log(dir.path(), 3, 0);
        let (path, mut bytes) = files(dir.path()).into_iter().next().unwrap();
        let intact = bytes.clone();
        bytes[HEADER_BYTES as usize + 20] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let err = ReadOnlyLog::open(dir.path(), MemoryStore::default())
            .err()
            .expect("refused");
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains(&format!("at byte {HEADER_BYTES}")), "{text}");

        // A log that starts after batches the store does not hold.
        std::fs::write(&path, &intact).unwrap();
        // Opened for writing: checkpointed, and the log now starts at batch 4.
        drop(open_for_writing(dir.path(), MemoryStore::default()).unwrap());
        let err = ReadOnlyLog::open(dir.path(), MemoryStore::default())
            .err()
            .expect("refused");
        assert!(err.to_string().contains("batches 1..=3 are lost"), "{err}");
    }

    crate::store_conformance!({
        let dir = tempfile::tempdir().unwrap();
        (
            ReadOnlyLog::open(dir.path(), MemoryStore::default()).unwrap(),
            dir,
        )
    });
}
