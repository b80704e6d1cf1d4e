//! Ordered key-value stores: the bottom floor of the journal, knowing nothing
//! of sagas.
//!
//! A store maps byte-string keys to byte-string values, keeps them in key
//! order, and applies batches of writes. The saga schema above (`kv/`) decides
//! what the keys mean; nothing here reads a key's content, and nothing here
//! imports from `kv/`, the journal's contract or `crate::saga`.
//!
//! | store | what it is for |
//! |---|---|
//! | [`MemoryStore`] | a `BTreeMap`: tests, and the in-memory journal |
//! | [`SledStore`] | sled 0.34, made really durable at each sync |
//! | [`WalStore`] | a write-ahead log in front of any other store (`wal/`) |
//! | [`ReadOnlyLog`] | that log read only, laid over a store in memory: the offline tools; its writes stay in memory, a sync makes nothing durable (`wal/read_only.rs`) |
//! | [`FaultyStore`] | any store whose syncs fail on demand, as on a full disk |
//!
//! And `salvage.rs`: every entry a damaged store still reads, with the gaps
//! between them named (`sagad journal salvage`).
//!
//! The contract every store **must** keep (checked on each of them by the
//! suite in `conformance.rs`):
//! - **`write` is atomic**: a batch is applied whole or not at all, also after
//!   a crash, and once it returns every read sees it.
//! - **`write_ordered` keeps order**: it applies a batch's writes in order, not
//!   atomically; after a crash (before a `sync`) the store holds a *prefix* of
//!   every write made through it, in the order made. A write-ahead log that ends
//!   each batch with its own marker needs no more than this, and a store may do
//!   it much more cheaply than an atomic batch.
//! - **`sync` makes durable** every write that returned before it was called.
//! - **Reads see every write** that returned before they were called: `get`
//!   the newest value; `range` every such key inside the range exactly once, in
//!   the direction asked, with its newest value. A key written during a range
//!   read may or may not be seen (a range read is no snapshot).
//! - **An empty or inverted range is empty**: never a panic.
//! - **A visitor that answers `false` is not called again.**

use std::{ops::Bound, path::PathBuf, sync::RwLockReadGuard};

use serde::Serialize;

mod fault;
mod memory;
pub mod salvage;
mod sled;
pub mod wal;

#[cfg(test)]
pub mod conformance;

pub use fault::{DiskFault, FaultyStore};
pub use memory::MemoryStore;
pub use sled::{CopyReport, DirLock, SledFinding, SledStore};
pub use wal::{ReadOnlyLog, WalOptions, WalStore};

/// What can go wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An operating-system operation failed; `source` tells a full disk
    /// (ENOSPC) from a broken one (EIO).
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// What the store holds is damaged; `at` names where (a file and a byte,
    /// a place in sled).
    #[error("journal record {at} is damaged: {why}")]
    Corrupt { at: String, why: String },
    /// Another process owns the directory.
    #[error(
        "data directory {dir} is already in use by another sagad process ({holder}); stop it or choose another --data-dir"
    )]
    Locked { dir: PathBuf, holder: String },
    /// The store cannot be opened.
    #[error("cannot open the journal in {dir}: {why}")]
    Open { dir: PathBuf, why: String },
    /// The store behind a write-ahead log takes no checkpoint: it failed and
    /// is not open again yet, or took none for too long while writes piled
    /// up (`wal/`).
    #[error("{0}")]
    Stuck(String),
    /// The storage engine failed in a way of its own (sled's errors other
    /// than I/O).
    #[error("{0}")]
    Engine(String),
    /// A file of the store is damaged (sled's `journal/db`, say): named, with
    /// the byte where it is known, and what the log can do about it. Boxed:
    /// it is the largest variant, and errors travel by value.
    #[error("{0}")]
    Damaged(Box<Damaged>),
}

/// A damaged file of the store, and whether the write-ahead log can rebuild
/// what it held; its message is the one an operator reads first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damaged {
    /// The file (the path under the data directory).
    pub file: PathBuf,
    /// The byte where the damage is, when it is known.
    pub at: Option<u64>,
    /// What is wrong, in a sentence.
    pub why: String,
    /// The data directory, for the commands the message points to.
    pub data_dir: PathBuf,
    pub rebuild: Rebuild,
}

/// Whether the write-ahead log can rebuild a damaged store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rebuild {
    /// Not worked out where the damage was met (a read while serving).
    Unknown,
    /// The log still holds every batch since the journal began: replaying
    /// it gives the whole store back.
    FromLog { log: PathBuf },
    /// The log holds only batches `first..=last` (none when `last < first`):
    /// everything older is only in the store.
    No { log: PathBuf, first: u64, last: u64 },
}

impl std::fmt::Display for Damaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the journal's store is corrupt: {}", self.file.display())?;
        if let Some(at) = self.at {
            write!(f, " at byte {at}")?;
        }
        let dir = self.data_dir.display();
        let salvage = format!("`sagad journal salvage --data-dir {dir} --out NEW_DIR`");
        write!(f, ": {}; ", self.why)?;
        match &self.rebuild {
            Rebuild::Unknown => write!(
                f,
                "stop sagad and run `sagad journal check --data-dir {dir}` to see what is damaged and whether the log can rebuild it; {salvage} copies everything still readable to a new data directory"
            ),
            Rebuild::FromLog { log } => write!(
                f,
                "the log ({}) still holds every batch since the journal began, so it can rebuild the store: {salvage} writes a new data directory from it, losing nothing",
                log.display()
            ),
            Rebuild::No { log, first, last } => {
                let holds = match last.checked_sub(*first) {
                    Some(_) => format!("holds only batches {first}..={last}"),
                    None => "holds no batch".to_string(),
                };
                write!(
                    f,
                    "the log ({}) {holds}, the rest of the journal is only in the store, so the log cannot rebuild it: {salvage} copies everything still readable to a new data directory and reports what is lost",
                    log.display()
                )
            }
        }
    }
}

impl StoreError {
    /// This error, with what the log can rebuild set when it says the
    /// store is damaged and the place that met it could not tell.
    pub fn with_rebuild(self, rebuild: impl FnOnce() -> Rebuild) -> Self {
        match self {
            StoreError::Damaged(mut d) if d.rebuild == Rebuild::Unknown => {
                d.rebuild = rebuild();
                StoreError::Damaged(d)
            }
            other => other,
        }
    }

    /// An I/O error, with what was being done.
    pub fn io(what: impl std::fmt::Display, source: std::io::Error) -> Self {
        StoreError::Io {
            what: what.to_string(),
            source,
        }
    }
}

/// Results of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One key write: `Some` puts the value, `None` removes the key.
pub type KeyWrite = (Vec<u8>, Option<Vec<u8>>);

/// A [`KeyWrite`] by reference.
pub type KeyWriteRef<'a> = (&'a [u8], Option<&'a [u8]>);

/// `writes` lent, as [`KvStore::write_ordered`] and compaction take them.
pub fn lend(writes: &[KeyWrite]) -> impl Iterator<Item = KeyWriteRef<'_>> {
    writes.iter().map(|(k, v)| (k.as_slice(), v.as_deref()))
}

/// A lent write copied into one of its own.
pub fn own((key, value): KeyWriteRef<'_>) -> KeyWrite {
    (key.to_vec(), value.map(<[u8]>::to_vec))
}

/// A key/value entry read back.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Called with each entry of a range read; answers whether to go on.
pub type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> bool + 'a;

/// Which way a range read walks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Ascending,
    Descending,
}

/// A range of keys that is not empty: `lo` is below `hi`. Made only by
/// [`KeyRange::new`], so a store can hand its bounds to a `BTreeMap` or sled
/// (both panic on an inverted range) without checking them again.
#[derive(Clone, Copy, Debug)]
pub struct KeyRange<'a> {
    lo: Bound<&'a [u8]>,
    hi: Bound<&'a [u8]>,
}

impl<'a> KeyRange<'a> {
    /// The keys between `lo` and `hi`; `None` when no key can be between.
    pub fn new(lo: Bound<&'a [u8]>, hi: Bound<&'a [u8]>) -> Option<Self> {
        let empty = match (lo, hi) {
            (Bound::Unbounded, _) | (_, Bound::Unbounded) => false,
            (Bound::Included(l), Bound::Included(h)) => l > h,
            (Bound::Included(l) | Bound::Excluded(l), Bound::Excluded(h))
            | (Bound::Excluded(l), Bound::Included(h)) => l >= h,
        };
        (!empty).then_some(Self { lo, hi })
    }

    /// The keys that start with `prefix`.
    pub fn prefix(prefix: &'a [u8], end: &'a Option<Vec<u8>>) -> Option<Self> {
        Self::new(Bound::Included(prefix), upper(end))
    }

    /// The bounds, for `BTreeMap::range` and sled's `range`.
    pub fn bounds(&self) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
        (self.lo, self.hi)
    }

    /// Whether `key` is in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        let above = match self.lo {
            Bound::Included(lo) => key >= lo,
            Bound::Excluded(lo) => key > lo,
            Bound::Unbounded => true,
        };
        let below = match self.hi {
            Bound::Included(hi) => key <= hi,
            Bound::Excluded(hi) => key < hi,
            Bound::Unbounded => true,
        };
        above && below
    }
}

/// The first key after every key that starts with `prefix`; `None` when there
/// is none (a prefix of nothing but 0xff bytes: every longer key starts with it).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The exclusive upper bound a [`prefix_end`] stands for.
fn upper(end: &Option<Vec<u8>>) -> Bound<&[u8]> {
    match end {
        Some(end) => Bound::Excluded(end),
        None => Bound::Unbounded,
    }
}

/// Walks `entries` (a store's range, in ascending order) in `direction`,
/// visiting each until `visit` answers false: the loop every store's
/// [`KvStore::range`] ends in.
pub fn walk<K, V, E>(
    entries: impl DoubleEndedIterator<Item = Result<(K, V), E>>,
    direction: Direction,
    visit: &mut Visit<'_>,
) -> Result<(), E>
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let mut go = |entry: Result<(K, V), E>| -> Result<bool, E> {
        let (k, v) = entry?;
        Ok(visit(k.as_ref(), v.as_ref()))
    };
    match direction {
        Direction::Ascending => {
            for entry in entries {
                if !go(entry)? {
                    break;
                }
            }
        }
        Direction::Descending => {
            for entry in entries.rev() {
                if !go(entry)? {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// What a store's own upkeep ([`KvStore::upkeep`]) has done since the store
/// was opened, and what it last found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreUpkeep {
    /// Fresh stores put in place of the old one (sled).
    pub renewals: u64,
    /// Bytes the store logged since its snapshot, which its next open
    /// replays, as last read (sled: before each copy it might start).
    pub log_since_snapshot: Option<u64>,
}

/// An ordered key-value store; the contract is in the module docs.
///
/// Stores implement one range primitive, [`KvStore::range`]; the scans the
/// journal uses are provided on top of it, so their bounds logic is written
/// once.
pub trait KvStore: Send + Sync + 'static {
    /// One key's value.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Visits the entries in `range`, walking in direction `dir`, as long as
    /// `visit` answers true.
    fn range(&self, range: KeyRange<'_>, dir: Direction, visit: &mut Visit<'_>) -> Result<()>;

    /// Applies a batch atomically; not yet durable.
    fn write(&self, batch: Vec<KeyWrite>) -> Result<()>;

    /// Applies a batch's writes in order, not atomically (see the module docs:
    /// after a crash the store **must** hold a prefix of the writes). The
    /// writes are lent, not given: a checkpoint writes from the layer readers
    /// still see, and the store copies what it keeps anyway.
    fn write_ordered(&self, batch: &mut dyn Iterator<Item = KeyWriteRef<'_>>) -> Result<()> {
        self.write(batch.map(own).collect())
    }

    /// Makes every write so far durable.
    fn sync(&self) -> Result<()>;

    /// The file that holds the store's data (sled's `db`), for messages
    /// about it; `None` for a store in memory.
    fn location(&self) -> Option<PathBuf> {
        None
    }

    /// Readies the store to be dropped, and says whether what it had to do
    /// for that worked (the log's last checkpoint). Reads may still be made;
    /// writes must not. The default has nothing to do.
    fn close(&self) -> Result<()> {
        Ok(())
    }

    /// After a failed write or sync, makes the store able to take writes
    /// again if it can (by opening it afresh, say, or making the room the
    /// failed write needed); it is called before a write is tried again, and
    /// must fail while the write that failed would fail again. The default
    /// has nothing to do: the next write either works or fails again.
    fn recover(&self) -> Result<()> {
        Ok(())
    }

    /// A slice of the store's own upkeep, short (sled: its live keys copied
    /// into a fresh store, `sled/renew.rs`): called by the log's checkpoint
    /// thread after each checkpoint that worked, where no write waits on it.
    /// A failure is the store's (a read that failed), and leaves what the
    /// store holds as it was. The default has nothing to do.
    fn upkeep(&self) -> Result<()> {
        Ok(())
    }

    /// What the store's upkeep has done and found, for the metrics. The
    /// default did nothing.
    fn upkeep_stats(&self) -> StoreUpkeep {
        StoreUpkeep::default()
    }

    /// Why the store fails every operation right now, while it does (sled
    /// after a failed operation, until `recover` opens it again). The default
    /// never knows of such a state.
    fn failure(&self) -> Option<String> {
        None
    }

    /// Keeps the store from rewriting what was written before (a
    /// checkpoint's bundling, `wal/overlay.rs`) until the guard drops. A writer
    /// that reads keys to work out edits of them holds it from its first read
    /// until its `write` returns; a reader whose answer takes two scans holds
    /// it across both. Holders share it; only a rewrite waits for them all.
    /// `None`: this store never rewrites.
    fn hold_rewrites(&self) -> Option<RwLockReadGuard<'_, ()>> {
        None
    }

    /// Entries whose keys start with `prefix`, in ascending key order.
    fn scan(&self, prefix: &[u8]) -> Result<Vec<Entry>> {
        let mut entries = Vec::new();
        self.scan_from(prefix, prefix, &mut |k, v| {
            entries.push((k.to_vec(), v.to_vec()));
            true
        })?;
        Ok(entries)
    }

    /// Entries whose keys start with `prefix` and sort at or after `from`, in
    /// ascending key order, as long as `visit` says so.
    fn scan_from(&self, prefix: &[u8], from: &[u8], visit: &mut Visit<'_>) -> Result<()> {
        let end = prefix_end(prefix);
        match KeyRange::new(Bound::Included(from.max(prefix)), upper(&end)) {
            Some(range) => self.range(range, Direction::Ascending, visit),
            None => Ok(()),
        }
    }

    /// Entries whose keys start with `prefix` and sort before `before` (if
    /// given), in descending key order, as long as `visit` says so.
    fn scan_rev(&self, prefix: &[u8], before: Option<&[u8]>, visit: &mut Visit<'_>) -> Result<()> {
        let end = prefix_end(prefix);
        let hi = match (before, upper(&end)) {
            (Some(before), Bound::Excluded(end)) => Bound::Excluded(before.min(end)),
            (Some(before), _) => Bound::Excluded(before),
            (None, end) => end,
        };
        match KeyRange::new(Bound::Included(prefix), hi) {
            Some(range) => self.range(range, Direction::Descending, visit),
            None => Ok(()),
        }
    }
}

/// The length of `bytes` without its trailing zeros (0: all zeros). The
/// logs' files are mostly zeros past their data (preallocated segments), so
/// it compares whole blocks with a block of zeros, which is one `memcmp`
/// each: byte by byte, a 32 MiB segment took a debug build's open a fifth
/// of a second.
pub fn end_of_data(bytes: &[u8]) -> usize {
    const BLOCK: usize = 4096;
    static ZEROS: [u8; BLOCK] = [0; BLOCK];
    let mut end = bytes.len();
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let block = &bytes[start..end];
        if block != &ZEROS[..block.len()] {
            return start + block.iter().rposition(|b| *b != 0).map_or(0, |at| at + 1);
        }
        end = start;
    }
    0
}

/// `header`, then the postcard encoding of `value`, in a Vec allocated once at
/// its final size. Grown as postcard writes, a record's Vec was reallocated and
/// copied about six times: 2.5% of the coordinator's instructions (session 8).
pub fn encode_after<T: Serialize + ?Sized>(header: &[u8], value: &T) -> postcard::Result<Vec<u8>> {
    let size = postcard::serialize_with_flavor::<T, postcard::ser_flavors::Size, usize>(
        value,
        postcard::ser_flavors::Size::default(),
    )?;
    let mut out = Vec::with_capacity(header.len() + size);
    out.extend_from_slice(header);
    postcard::to_extend(value, out)
}

/// A byte string serialized as one: postcard writes its length and then the
/// bytes at once. serde serializes a `[u8]` or `Vec<u8>` as a sequence, which
/// postcard writes as the same length and bytes, one call per byte (in the
/// sizing pass and again in the writing one). Decoders read either as a
/// `Vec<u8>` or `&[u8]`.
pub struct Bytes<'a>(pub &'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// Key writes serialized as `[KeyWrite]` is, with their byte strings as
/// [`Bytes`].
pub struct KeyWrites<'a>(pub &'a [KeyWrite]);

impl Serialize for KeyWrites<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(
            self.0
                .iter()
                .map(|(key, value)| (Bytes(key), value.as_deref().map(Bytes))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_data_is_past_the_last_byte_that_is_not_zero() {
        assert_eq!(end_of_data(&[]), 0);
        assert_eq!(end_of_data(&[0; 20]), 0);
        for at in [0, 7, 8, 15, 16, 19] {
            let mut bytes = [0u8; 20];
            bytes[at] = 1;
            assert_eq!(end_of_data(&bytes), at + 1, "{at}");
        }
    }

    #[test]
    fn prefix_ends_sort_after_every_key_of_the_prefix() {
        assert_eq!(prefix_end(b"e"), Some(b"f".to_vec()));
        assert_eq!(prefix_end(&[b'e', 0xff]), Some(b"f".to_vec()));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn empty_and_inverted_ranges_are_none() {
        let (a, b) = (b"a".as_slice(), b"b".as_slice());
        assert!(KeyRange::new(Bound::Included(a), Bound::Excluded(a)).is_none());
        assert!(KeyRange::new(Bound::Excluded(a), Bound::Included(a)).is_none());
        assert!(KeyRange::new(Bound::Included(b), Bound::Excluded(a)).is_none());
        assert!(KeyRange::new(Bound::Included(a), Bound::Included(a)).is_some());
        let range = KeyRange::new(Bound::Excluded(a), Bound::Unbounded).unwrap();
        assert!(!range.contains(a) && range.contains(b));
    }
}
