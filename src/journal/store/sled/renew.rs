//! A fresh store: sled's live keys rewritten into a new directory, which then
//! takes the old one's place, while writes go on.
//!
//! Why: sled 0.34 writes its page-table snapshot only while it opens (its
//! `snapshot_after_ops` does nothing), so an open replays everything sled
//! logged since the previous open, removals included, and its page table
//! keeps an entry for every page it ever wrote, live or not. Neither shrinks
//! while sled is open: with 10M finished sagas moved out into the history
//! tier, an open still took 19 s the first time and 3.5 s after, and the
//! coordinator held 590 MB (issue 23). A sled written afresh with only the
//! live keys, and opened once, has neither.
//!
//! ```text
//!  due: log since the snapshot ≥ max(floor, 4 × live) ─▶ journal.fresh/ opened
//!  each upkeep slice  ─▶ the next keys after the cursor copied into it
//!  each write         ─▶ the old store; the fresh one too if key ≤ cursor
//!  cursor at the end  ─▶ fresh flushed, opened once (sled writes its
//!                        snapshot then), every file synced
//!                     ─▶ journal/ ⇄ journal.fresh/ exchanged, directory synced
//!                     ─▶ journal/ opened; the old store closed and removed
//! ```
//!
//! - **Same keys, whenever.** A key above the cursor is copied when the cursor
//!   gets there, with the value it has then; one at or below it was copied
//!   already, so its writes go to both stores. When the cursor reaches the end
//!   the two hold the same keys, the log's batch marker among them.
//! - **Crash-safe.** The exchange is one atomic rename (`renameat2` with
//!   `RENAME_EXCHANGE`). Before it, `journal/` is the old store and
//!   `journal.fresh/` an unfinished copy; after it, `journal/` is the fresh
//!   store, complete and synced, and `journal.fresh/` the old one. Either way
//!   `journal/` is a store with a batch marker, the log replays what it lacks,
//!   and an open removes `journal.fresh/` (`remove_leftover`).
//! - **Bounded cost.** A copy is due only once sled has logged four times its
//!   live bytes (as the last copy found them) since its snapshot, and at least
//!   [`RENEW_FLOOR`]: at most a quarter more writes, and an open after a crash
//!   replays little more than that. What it logged is read where the next
//!   open reads it, from the snapshot's LSN (its file's name) to the newest
//!   segment's (`damage::replay_debt`): sled logs whole tree nodes, many
//!   times the keys and values written (seeding 10M sagas logged 19 GB
//!   between two opens). A slice copies for
//!   [`SLICE`] after a checkpoint (the checkpoint thread is the store's only
//!   writer), so neither writes nor checkpoints wait long.
//! - **Never at the journal's expense.** Free space for a copy as large as
//!   sled's file, plus the log's `--disk-reserve`, is asked for first (and
//!   again before the exchange); a copy that meets a full disk or any
//!   failure of its own is given up and removed, the old store untouched, and
//!   tried again only after as many bytes again were written.

use std::{
    fs::{self, File},
    io,
    ops::Bound,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::{SLED_SEGMENT_BYTES, SledStore, damage, open_sled};
use crate::journal::store::{Result, StoreUpkeep, wal};

/// Bytes sled logs after its snapshot before a fresh store is due, at
/// least: about what an open replays in a second or two here.
const RENEW_FLOOR: u64 = 1024 * 1024 * 1024;
/// How many times its live bytes sled takes before a fresh store is due.
const RENEW_RATIO: u64 = 4;
/// How long one upkeep call copies.
const SLICE: Duration = Duration::from_millis(200);
/// Keys read from the old store at a time.
const CHUNK_KEYS: usize = 1024;
/// The fresh store's directory, beside `journal/`.
pub const FRESH_DIR: &str = "journal.fresh";

/// When a fresh store is due, and the copy under way.
pub(super) struct Renewal {
    /// The live bytes the last copy found (0: no copy yet).
    live: u64,
    /// Bytes of log since the snapshot below which no copy is due.
    floor: u64,
    /// After a copy was given up: no other before the log reaches this.
    not_before: u64,
    /// Keys one slice copies at most (tests make copies take many slices).
    slice_keys: usize,
    copy: Option<Copy>,
    /// The filesystem cannot exchange two directories: never tried again.
    unsupported: bool,
    /// Fresh stores that took the old one's place since the open.
    done: u64,
    /// sled's log since its snapshot, as last read (not while copying).
    logged: Option<u64>,
    /// Free bytes a copy leaves on the disk: the log's (`--disk-reserve`).
    pub(super) reserve: u64,
}

/// A fresh store being filled.
struct Copy {
    fresh: sled::Db,
    /// The last key copied (`None`: none yet): a write at or below it goes
    /// to the fresh store too.
    cursor: Option<Vec<u8>>,
    keys: u64,
    bytes: u64,
    started: Instant,
    /// A write to the fresh store failed: the copy is given up at its next slice.
    failed: Option<String>,
}

impl Renewal {
    pub(super) fn new() -> Self {
        let floor = crate::failpoint::knob("sled::renew_floor")
            .and_then(|v| v.parse().ok())
            .unwrap_or(RENEW_FLOOR);
        Self {
            live: 0,
            floor,
            not_before: 0,
            slice_keys: usize::MAX,
            copy: None,
            unsupported: false,
            done: 0,
            logged: None,
            reserve: wal::DEFAULT_DISK_RESERVE,
        }
    }

    /// Due after `floor` bytes of log at least, copying `slice_keys` keys
    /// per slice at most (tests).
    pub(super) fn tuned(floor: u64, slice_keys: usize) -> Self {
        Self {
            floor,
            slice_keys: slice_keys.max(1),
            ..Self::new()
        }
    }

    /// Fresh stores put in place, and the log since the snapshot as last read.
    pub(super) fn stats(&self) -> StoreUpkeep {
        StoreUpkeep {
            renewals: self.done,
            log_since_snapshot: self.logged,
        }
    }

    /// A write sled has just taken: made in the fresh store too if the copy
    /// is past its key.
    pub(super) fn follow(&mut self, key: &[u8], value: Option<&[u8]>) {
        let Some(copy) = self.copy.as_mut() else {
            return;
        };
        if copy.failed.is_some() || copy.cursor.as_deref().is_none_or(|c| key > c) {
            return;
        }
        let made = match value {
            Some(v) => copy.fresh.insert(key, v).map(drop),
            None => copy.fresh.remove(key).map(drop),
        };
        if let Err(e) = made {
            copy.failed = Some(e.to_string());
        }
    }

    /// sled was opened again (after a failure): a copy of the store that
    /// failed is given up.
    pub(super) fn reopened(&mut self, fresh: &Path) {
        if self.copy.take().is_some() {
            remove_dir(fresh);
        }
    }

    /// Whether a copy is due with `logged` bytes of log since the snapshot.
    fn due(&self, logged: u64) -> bool {
        !self.unsupported
            && logged
                >= self
                    .floor
                    .max(RENEW_RATIO.saturating_mul(self.live))
                    .max(self.not_before)
    }

    /// Gives the copy up: removed, and the next one only once the log is
    /// twice as long (`logged` now).
    fn give_up(&mut self, fresh: &Path, logged: u64, why: &str) {
        self.copy = None;
        remove_dir(fresh);
        self.not_before = logged.saturating_mul(2).max(self.floor);
        tracing::warn!(path = %fresh.display(), why, "gave up rewriting sled into a fresh store; the store is as it was");
    }
}

/// Removes `dir` if it is there; a failure is logged (the next open tries again).
fn remove_dir(dir: &Path) {
    if let Err(e) = remove_if_there(dir) {
        tracing::warn!(path = %dir.display(), error = %e, "could not remove a fresh store's leftovers")
    }
}

/// Removes `dir` and everything in it, if it is there.
fn remove_if_there(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes what a renewal cut short left in `dir` (the data directory): an
/// unfinished copy, or the old store it replaced (see the module docs).
pub(super) fn remove_leftover(dir: &Path) -> io::Result<()> {
    remove_if_there(&dir.join(FRESH_DIR))
}

/// fsyncs every file under `dir` and every directory, `dir` included.
fn sync_tree(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            sync_tree(&entry.path())?;
        } else {
            File::open(entry.path())?.sync_all()?;
        }
    }
    File::open(dir)?.sync_all()
}

/// Exchanges two directories in one atomic rename.
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).map_err(io::Error::from)
}

/// What a slice ended with.
enum Slice {
    /// More keys to copy.
    More,
    /// Every key copied: the fresh store is ready to take the old one's place.
    Copied,
}

impl SledStore {
    fn fresh_dir(&self) -> PathBuf {
        self.dir.join(FRESH_DIR)
    }

    /// One slice of the store's upkeep: starts a fresh store when one is
    /// due, copies for a slice, and puts it in place once complete.
    pub(super) fn renew(&self) -> Result<()> {
        let mut renewal = self.lock_renewal();
        let fresh_dir = self.fresh_dir();
        let logged = match renewal.copy {
            Some(_) => 0,
            None => damage::replay_debt(&self.path, SLED_SEGMENT_BYTES).map_err(|e| {
                super::open_error(&self.dir, format!("reading sled's segment headers: {e}"))
            })?,
        };
        if renewal.copy.is_none() {
            renewal.logged = Some(logged);
            if !renewal.due(logged) {
                return Ok(());
            }
            if let Err(why) = self.room_for_a_copy(renewal.reserve) {
                renewal.give_up(&fresh_dir, logged, &why);
                return Ok(());
            }
            remove_dir(&fresh_dir);
            match open_sled(&fresh_dir) {
                Ok(fresh) => {
                    renewal.copy = Some(Copy {
                        fresh,
                        cursor: None,
                        keys: 0,
                        bytes: 0,
                        started: Instant::now(),
                        failed: None,
                    })
                }
                Err(e) => {
                    renewal.give_up(
                        &fresh_dir,
                        logged,
                        &format!("opening it: {}", self.error(e)),
                    );
                    return Ok(());
                }
            }
        }
        let slice_keys = renewal.slice_keys;
        let copied = match self.copy_slice(renewal.copy.as_mut().expect("started"), slice_keys) {
            Ok(copied) => copied,
            Err(e) => {
                // The old store failed (it is marked failed, and the
                // checkpoint thread opens it again); the copy goes with it.
                renewal.give_up(&fresh_dir, logged, &format!("reading the store: {e}"));
                return Err(e);
            }
        };
        if let Some(why) = renewal.copy.as_ref().and_then(|c| c.failed.clone()) {
            renewal.give_up(&fresh_dir, logged, &why);
            return Ok(());
        }
        if let Slice::More = copied {
            return Ok(());
        }
        if let Err(why) = self.room_for_a_copy(renewal.reserve) {
            renewal.give_up(&fresh_dir, logged, &why);
            return Ok(());
        }
        let copy = renewal.copy.take().expect("started");
        self.put_in_place(&mut renewal, copy)
    }

    /// Whether the disk has room for a copy as large as sled's file, the
    /// log's `reserve` kept.
    fn room_for_a_copy(&self, reserve: u64) -> std::result::Result<(), String> {
        let size = self
            .with_db(|db| db.size_on_disk())
            .map_err(|e| e.to_string())?;
        let free =
            wal::free_bytes(&self.dir).map_err(|e| format!("reading the free space: {e}"))?;
        let needed = size.saturating_add(reserve);
        match free >= needed {
            true => Ok(()),
            false => Err(format!(
                "the disk has {} free, and a copy may need {}",
                wal::space_mib(free),
                wal::space_mib(needed)
            )),
        }
    }

    /// Copies the keys after the cursor for a [`SLICE`] (or `slice_keys`).
    fn copy_slice(&self, copy: &mut Copy, slice_keys: usize) -> Result<Slice> {
        let until = Instant::now() + SLICE;
        let mut left = slice_keys;
        while Instant::now() < until && left > 0 {
            let take = left.min(CHUNK_KEYS);
            let chunk = self.with_db(|db| {
                let from = match copy.cursor.as_deref() {
                    Some(cursor) => Bound::Excluded(cursor),
                    None => Bound::Unbounded,
                };
                db.range::<&[u8], _>((from, Bound::Unbounded))
                    .take(take)
                    .collect::<sled::Result<Vec<_>>>()
            })?;
            let Some((last, _)) = chunk.last() else {
                return Ok(Slice::Copied);
            };
            let last = last.to_vec();
            for (key, value) in &chunk {
                if let Err(e) = copy.fresh.insert(key, value) {
                    copy.failed = Some(e.to_string());
                    return Ok(Slice::More);
                }
                copy.keys += 1;
                copy.bytes += (key.len() + value.len()) as u64;
            }
            copy.cursor = Some(last);
            left -= chunk.len();
        }
        Ok(Slice::More)
    }

    /// Makes the complete copy durable and exchanges it with the old store.
    fn put_in_place(&self, renewal: &mut Renewal, copy: Copy) -> Result<()> {
        let fresh_dir = self.fresh_dir();
        let Copy {
            fresh,
            keys,
            bytes,
            started,
            ..
        } = copy;
        // Opened once before it takes the old one's place: sled writes its
        // snapshot only while opening, and the open below, where reads
        // wait, then has nothing to replay.
        let ready = fresh
            .flush()
            .map_err(|e| e.to_string())
            .and_then(|_| {
                drop(fresh);
                open_sled(&fresh_dir)
                    .map(drop)
                    .map_err(|e| self.error(e).to_string())
            })
            .and_then(|()| sync_tree(&fresh_dir).map_err(|e| format!("syncing it: {e}")));
        if let Err(why) = ready {
            renewal.give_up(&fresh_dir, 0, &why);
            return Ok(());
        }
        crate::crash_point!("sled::renew_before_exchange");
        let mut db = self.db.write().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = exchange(&self.path, &fresh_dir) {
            if matches!(
                e.raw_os_error(),
                Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
            ) {
                renewal.unsupported = true;
            }
            drop(db);
            renewal.give_up(
                &fresh_dir,
                0,
                &format!("exchanging it with the old store: {e}"),
            );
            return Ok(());
        }
        // Either directory is a whole store: the sync only decides which one
        // a crash right now leaves in place.
        crate::crash_point!("sled::renew_after_exchange");
        if let Err(e) = File::open(&self.dir).and_then(|d| d.sync_all()) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "syncing the data directory after the exchange");
        }
        // The old store's files are now in `journal.fresh/`: its handle still
        // reads and writes them, and lets go of them when dropped.
        let old = db.take();
        let opened = open_sled(&self.path)
            .map_err(|e| self.error(e))
            .and_then(|new| {
                let db_file = File::open(self.path.join("db"))
                    .map_err(|e| super::open_error(&self.dir, e))?;
                Ok((new, db_file))
            });
        let outcome = match opened {
            Ok((new, db_file)) => {
                *db = Some(new);
                *self.lock_db_file() = db_file;
                *self.lock_synced_blobs() = super::blobs_in(&self.blob_dir);
                Ok(())
            }
            // The fresh store is the one in place: `recover` opens it.
            Err(e) => {
                self.lock_failed().get_or_insert_with(|| e.to_string());
                Err(e)
            }
        };
        drop(db);
        drop(old);
        remove_dir(&fresh_dir);
        renewal.live = bytes;
        renewal.not_before = 0;
        renewal.done += 1;
        if outcome.is_ok() {
            tracing::info!(
                keys,
                live_mib = bytes / (1024 * 1024),
                took_ms = started.elapsed().as_millis() as u64,
                "sled rewritten into a fresh store"
            );
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::journal::store::{KeyWrite, KvStore, lend};

    fn key(i: usize) -> Vec<u8> {
        format!("k{i:05}").into_bytes()
    }

    /// Every entry of `store`, in key order, without the ones only a test wrote.
    fn entries(store: &SledStore) -> BTreeMap<Vec<u8>, Vec<u8>> {
        store.scan(b"").unwrap().into_iter().collect()
    }

    /// Writes `batch` to the store and the model, atomically or in order.
    fn write(
        store: &SledStore,
        model: &mut BTreeMap<Vec<u8>, Vec<u8>>,
        batch: Vec<KeyWrite>,
        ordered: bool,
    ) {
        for (k, v) in &batch {
            match v {
                Some(v) => model.insert(k.clone(), v.clone()),
                None => model.remove(k),
            };
        }
        match ordered {
            true => store.write_ordered(&mut lend(&batch)).unwrap(),
            false => store.write(batch).unwrap(),
        }
    }

    /// A disk without the room for a copy and the log's reserve
    /// (`--disk-reserve`, here more than any disk has) gets no copy: nothing
    /// is written beside the store, and it stays as it was.
    #[test]
    fn no_copy_starts_without_room_for_it_and_the_reserve() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path())
            .unwrap()
            .renewing(1, usize::MAX)
            .reserving(u64::MAX);
        let batch = (0..100).map(|i| (key(i), Some(vec![1; 100]))).collect();
        store.write(batch).unwrap();
        store.sync().unwrap();
        for _ in 0..3 {
            store.upkeep().unwrap();
            assert!(!dir.path().join(FRESH_DIR).exists());
        }
        assert_eq!(store.upkeep_stats().renewals, 0);
        assert_eq!(store.get(&key(99)).unwrap(), Some(vec![1; 100]));
        // With the default reserve, which this disk has, the same store renews.
        *store.lock_renewal() = Renewal::tuned(1, usize::MAX);
        while store.upkeep_stats().renewals == 0 {
            store.upkeep().unwrap();
        }
        assert_eq!(store.get(&key(99)).unwrap(), Some(vec![1; 100]));
    }

    /// A copy taken slice by slice, with puts and removals below the cursor
    /// (already copied), above it (still to copy) and of new keys between
    /// slices, ends with exactly the keys the old store had; the fresh store
    /// is the one in place (its leftovers gone), and reads the same reopened.
    #[test]
    fn a_fresh_store_holds_every_write_made_while_it_was_copied() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap().renewing(1, 64);
        let mut model = BTreeMap::new();
        for chunk in (0..3_000).collect::<Vec<_>>().chunks(100) {
            let batch = chunk
                .iter()
                .map(|&i| (key(i), Some(vec![(i % 251) as u8; 300])))
                .collect();
            write(&store, &mut model, batch, true);
        }
        // Most of it removed again: the old store is mostly dead pages.
        for chunk in (0..3_000)
            .filter(|i| i % 3 != 0)
            .collect::<Vec<_>>()
            .chunks(100)
        {
            write(
                &store,
                &mut model,
                chunk.iter().map(|&i| (key(i), None)).collect(),
                false,
            );
        }
        store.sync().unwrap();
        let mut slices = 0;
        while store.upkeep_stats().renewals == 0 {
            store.upkeep().unwrap();
            assert!(dir.path().join(FRESH_DIR).exists() || store.upkeep_stats().renewals == 1);
            slices += 1;
            assert!(slices < 1_000, "the copy never ended");
            let batch = vec![
                (
                    key(slices * 7 % 3_000),
                    Some(format!("v{slices}").into_bytes()),
                ),
                (key(slices * 13 % 3_000), None),
                (format!("n{slices:04}").into_bytes(), Some(b"new".to_vec())),
                (key(2_999 - slices % 3_000), Some(b"late".to_vec())),
            ];
            write(&store, &mut model, batch, slices % 2 == 0);
        }
        assert!(slices > 5, "{slices} slices: the copy must span writes");
        assert_eq!(entries(&store), model);
        assert!(!dir.path().join(FRESH_DIR).exists());
        // Writes after the exchange go to the fresh store, which syncs.
        write(
            &store,
            &mut model,
            vec![(b"after".to_vec(), Some(b"x".to_vec()))],
            true,
        );
        store.sync().unwrap();
        drop(store);
        let reopened = SledStore::open(dir.path()).unwrap();
        assert_eq!(entries(&reopened), model);
    }

    /// A crash while a copy was under way leaves `journal.fresh/` beside the
    /// store, and one right after the exchange leaves the old store there:
    /// either way `journal/` is the store, and the open removes the other.
    #[test]
    fn an_open_removes_what_a_renewal_cut_short_left() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store
            .write(vec![(b"k".to_vec(), Some(b"v".to_vec()))])
            .unwrap();
        store.sync().unwrap();
        drop(store);
        let other = open_sled(&dir.path().join(FRESH_DIR)).ok().unwrap();
        other.insert(b"stale", b"x").unwrap();
        other.flush().unwrap();
        drop(other);

        let store = SledStore::open(dir.path()).unwrap();
        assert!(!dir.path().join(FRESH_DIR).exists());
        assert_eq!(store.get(b"k").unwrap(), Some(b"v".to_vec()));
        assert_eq!(store.get(b"stale").unwrap(), None);
    }

    /// A copy is due only after `floor` bytes of log, then only after four
    /// times the live bytes the last one found, and after one was given up
    /// only once the log is twice as long.
    #[test]
    fn a_copy_is_due_after_the_floor_and_then_four_times_the_live_bytes() {
        let mut renewal = Renewal::tuned(1_000, 10);
        assert!(!renewal.due(999));
        assert!(renewal.due(1_000));
        renewal.live = 10_000;
        assert!(!renewal.due(39_999));
        assert!(renewal.due(40_000));
        let dir = tempfile::tempdir().unwrap();
        renewal.give_up(dir.path(), 50_000, "a test");
        assert!(!dir.path().exists());
        assert!(!renewal.due(99_999));
        assert!(renewal.due(100_000));
    }

    /// The log since the snapshot, as the next open reads it: grows with
    /// writes, and is back to a segment or so after a fresh store.
    #[test]
    fn the_replay_debt_grows_with_writes_and_a_fresh_store_clears_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path())
            .unwrap()
            .renewing(u64::MAX, usize::MAX);
        let journal = dir.path().join("journal");
        let debt = || damage::replay_debt(&journal, SLED_SEGMENT_BYTES).unwrap();
        let before = debt();
        for round in 0..40u8 {
            let batch = (0..100)
                .map(|i| (key(i), Some(vec![round; 8 * 1024])))
                .collect();
            store.write(batch).unwrap();
        }
        store.sync().unwrap();
        let grown = debt();
        assert!(
            grown >= before + 3 * SLED_SEGMENT_BYTES as u64,
            "{before} then {grown}"
        );
        assert_eq!(
            store.upkeep_stats().log_since_snapshot,
            None,
            "no upkeep yet"
        );
        *store.lock_renewal() = Renewal::tuned(1, usize::MAX);
        store.upkeep().unwrap();
        assert_eq!(
            store.upkeep_stats().log_since_snapshot,
            Some(grown),
            "what the metrics show"
        );
        while store.upkeep_stats().renewals == 0 {
            store.upkeep().unwrap();
        }
        assert!(debt() <= 2 * SLED_SEGMENT_BYTES as u64, "{} after", debt());
        store.upkeep().unwrap();
        assert_eq!(store.upkeep_stats().log_since_snapshot, Some(debt()));
    }
}
