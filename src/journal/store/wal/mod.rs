//! The write-ahead log: the journal's source of truth on disk, in front of a
//! key-value store that serves reads.
//!
//! ```text
//!  write(batch) ──▶ record appended to the segment (segment.rs) ──▶ overlay.put
//!  sync()       ──▶ fdatasync of the segment               (one per batch)
//!  reads        ──▶ overlay (active, frozen) ▸ store        (overlay.rs)
//!  every 2 s    ──▶ checkpoint: frozen layer ─▶ store, store.sync,
//!                   covered segments deleted                (checkpoint.rs)
//!  ahead        ──▶ the next segment zero-filled            (spare.rs)
//! ```
//!
//! Every batch of key writes is appended to the log as one checksummed record
//! and made durable with one `fdatasync` of the log file, then acknowledged.
//! The batch goes to an in-memory layer over the store (`overlay.rs`), which
//! serves reads; the store gets everything gathered there at the next
//! checkpoint, in one pass, and is made durable, after which the log segments
//! it covers are deleted. On open, the log is verified and every batch the
//! store does not hold yet is replayed. The checkpoint and spare threads run at
//! a lower priority (`priority.rs`). The offline tools read the log without
//! changing it (`read_only.rs`).
//!
//! Why not trust sled's own log: sled 0.34 recovers silently to the last good
//! message when its file is truncated or a byte is flipped, which would drop
//! acknowledged sagas without a word. Here the log can say what is damaged
//! (the file format and what a read of it detects: `segment.rs`).
//!
//! Invariants:
//! - Batches are numbered 1, 2, 3… without gaps across segments; every batch
//!   holds the `m wal_batch` marker with its number, so the store keeps the
//!   number of the last batch it applied, replay applies exactly the batches it
//!   lacks, and a store that lost batches the log no longer holds is reported,
//!   never papered over.
//! - The store holds a prefix of the batches: a checkpoint writes the marker
//!   last (`checkpoint.rs`), and a store's `write_ordered` keeps a prefix of
//!   its writes after a crash.
//! - The writer never waits for a checkpoint unless the overlay holds more
//!   than [`WalOptions::max_pending_keys`]: then it waits, at most
//!   [`WalOptions::store_patience`], and reports the store stuck.

use std::{
    fs,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, OnceLock, RwLockReadGuard,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use self::{
    overlay::{Compact, Overlay, PutOnlyOverAbsent},
    segment::{HEADER_BYTES, Segment, encode_record, io, new_segment, segment_path},
    spare::Spares,
};
use super::{
    Direction, DiskFault, KeyRange, KeyWrite, KvStore, Result, StoreError, StoreUpkeep, Visit,
};

mod checkpoint;
#[cfg(test)]
mod fuzz;
pub mod overlay;
mod priority;
mod read_only;
pub mod salvage;
mod segment;
mod space;
mod spare;

pub use read_only::{ReadOnlyLog, TornTail};
pub use segment::{Record, Scan, rebuild, scan};
pub use space::DEFAULT_DISK_RESERVE;
pub(crate) use space::{free_bytes, mib as space_mib};

/// Size of a new segment. Preallocated, so appends never grow the file, and
/// zero-filled ahead of need (`spare.rs`), so they need not allocate blocks.
pub const WAL_SEGMENT_BYTES: u64 = 32 * 1024 * 1024;
/// How often the store gets the batches gathered in memory, is made durable,
/// and covered segments are deleted.
pub const WAL_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(2);
/// Keys waiting in memory for a checkpoint beyond which one starts early
/// (about 10,000 W1 sagas' worth, ~25 MB).
const OVERLAY_KEYS_MAX: usize = 100_000;
/// Keys written since the last checkpoint beyond which the writer waits for
/// the checkpoint in progress: the store cannot keep up, and memory must not
/// grow without bound (both layers together stay under ~150 MB).
pub const OVERLAY_KEYS_HARD_MAX: usize = 250_000;
/// How long a writer waits for room before it reports the store as stuck.
pub const STORE_PATIENCE: Duration = Duration::from_secs(10);
/// The store key holding the number of the last batch applied to it.
pub const APPLIED_BATCH_KEY: &[u8] = b"mwal_batch";

/// How a [`WalStore`] checkpoints.
#[derive(Clone)]
pub struct WalOptions {
    /// How often the store gets what the log gathered.
    pub checkpoint_interval: Duration,
    /// What a checkpoint writes in place of the gathered writes
    /// (`overlay::Compact`); it leaves keys outside `e` and `o` as they are.
    pub compact: Compact,
    /// Keys written since the last checkpoint beyond which a writer waits for
    /// the checkpoint in progress ([`OVERLAY_KEYS_HARD_MAX`]).
    pub max_pending_keys: usize,
    /// How long it waits before it reports the store as stuck ([`STORE_PATIENCE`]).
    pub store_patience: Duration,
    /// Whether segments come from zero-filled spares prepared on a thread of
    /// their own (`spare.rs`); without, every segment is a sparse file.
    pub zero_filled_segments: bool,
    /// Keys the writer only puts where they are absent, whose removal may
    /// take back a put not yet checkpointed (`overlay::PutOnlyOverAbsent`).
    pub put_only_over_absent: PutOnlyOverAbsent,
    /// Makes the log's own `fdatasync` fail while set, as on a full disk: how
    /// tests reach the one sync per batch that production does (`fault.rs`).
    pub log_fault: Option<Arc<DiskFault>>,
    /// Free bytes the log leaves on its disk: no spare is prepared that
    /// would eat into them, and no open starts with less free (`space.rs`).
    pub disk_reserve: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self {
            checkpoint_interval: WAL_CHECKPOINT_INTERVAL,
            compact: overlay::keep_as_written,
            max_pending_keys: OVERLAY_KEYS_HARD_MAX,
            store_patience: STORE_PATIENCE,
            zero_filled_segments: true,
            put_only_over_absent: overlay::no_key,
            log_fault: None,
            disk_reserve: space::DEFAULT_DISK_RESERVE,
        }
    }
}

/// A store behind a write-ahead log; see the module docs.
///
/// Checkpoints run on a thread of their own: applying a few seconds of batches
/// and a sled flush take tens of milliseconds, and on the journal's writer
/// thread they would stall every append queued behind it.
pub struct WalStore<S: KvStore> {
    shared: Arc<Shared<S>>,
    /// The checkpoint thread, joined by `close` or the drop (a std mutex: only
    /// they take it).
    checkpointer: Mutex<Option<thread::JoinHandle<()>>>,
    /// Whether a last checkpoint is still to be taken, by `close` or the drop
    /// (not for a simulated crash, nor twice).
    last_checkpoint: AtomicBool,
}

/// What the writer thread and the checkpoint thread share.
struct Shared<S: KvStore> {
    inner: S,
    dir: PathBuf,
    /// The log's write side. A std mutex: never held across a sled flush.
    log: Mutex<Log>,
    /// Batches durable in the log and not yet in the durable store.
    overlay: Overlay,
    options: WalOptions,
    /// The checkpoint thread, to wake it early when segments pile up.
    checkpointer: OnceLock<thread::Thread>,
    /// Zero-filled files for the next segment, if the options want them.
    spares: Option<Spares>,
    stop: AtomicBool,
}

/// The open tail of the log.
struct Log {
    segment: Segment,
    /// Number of the next batch.
    next_batch: u64,
    /// Every segment on disk, oldest first, with the last batch each holds.
    segments: Vec<(u64, PathBuf, u64)>,
    /// Last batch made durable in the store.
    checkpointed: u64,
    /// The bytes a write needed that the disk had no room for (its rollover
    /// to the next segment failed, or a sparse segment could not take it):
    /// `recover` makes that room before the journal takes writes again.
    wanted_room: Option<u64>,
}

/// Refuses to open a log on a disk with less than `reserve` free: it would
/// soon be full, and a full disk should be noticed before it is.
fn check_free_space(dir: &Path, reserve: u64) -> Result<()> {
    let free = space::free_bytes(dir)
        .map_err(|e| io(format!("reading the free space of {}", dir.display()), e))?;
    if free < reserve {
        return Err(StoreError::Open {
            dir: dir.to_path_buf(),
            why: format!(
                "its disk has {} free, less than the {} sagad keeps in reserve (--disk-reserve): free some space, or lower the reserve",
                space::mib(free),
                space::mib(reserve)
            ),
        });
    }
    Ok(())
}

impl<S: KvStore> WalStore<S> {
    /// Opens the log in `dir` in front of `inner`: verifies it, replays what
    /// `inner` lacks, checkpoints, and readies the tail for appends.
    pub fn open(dir: &Path, inner: S) -> Result<Self> {
        Self::open_with(dir, inner, WalOptions::default())
    }

    /// `open`, with other [`WalOptions`].
    pub fn open_with(dir: &Path, inner: S, options: WalOptions) -> Result<Self> {
        crate::private::dir(dir).map_err(|e| io(format!("creating {}", dir.display()), e))?;
        check_free_space(dir, options.disk_reserve)?;
        let found = scan(dir)?;
        let last_batch = checkpoint::replay(dir, &inner, &found)?;
        let spares = match options.zero_filled_segments {
            true => Some(
                Spares::start(dir, WAL_SEGMENT_BYTES, options.disk_reserve)
                    .map_err(|e| io(format!("preparing spare segments in {}", dir.display()), e))?,
            ),
            false => None,
        };
        // What a failed rollover left goes first: the fresh segment may take
        // its name.
        if let Some(path) = &found.unused {
            fs::remove_file(path).map_err(|e| io(format!("removing {}", path.display()), e))?;
        }
        // Everything is in the durable store now: start a fresh segment and drop
        // the old ones (their batches are checkpointed).
        let next_index = found.segments.last().map_or(1, |(i, _, _)| i + 1);
        let segment = new_segment(
            dir,
            next_index,
            WAL_SEGMENT_BYTES,
            last_batch + 1,
            spares.as_ref(),
        )?;
        for (_, path, _) in &found.segments {
            fs::remove_file(path).map_err(|e| io(format!("removing {}", path.display()), e))?;
        }
        let shared = Arc::new(Shared {
            inner,
            dir: dir.to_path_buf(),
            log: Mutex::new(Log {
                segments: vec![(segment.index, segment_path(dir, segment.index), last_batch)],
                segment,
                next_batch: last_batch + 1,
                checkpointed: last_batch,
                wanted_room: None,
            }),
            overlay: Overlay::new(options.put_only_over_absent),
            options,
            checkpointer: OnceLock::new(),
            spares,
            stop: AtomicBool::new(false),
        });
        let checkpointer = {
            let shared = shared.clone();
            thread::Builder::new()
                .name("sagad-checkpoint".into())
                .spawn(move || shared.run_checkpoints())
                .map_err(|e| io("starting the checkpoint thread", e))?
        };
        let _ = shared.checkpointer.set(checkpointer.thread().clone());
        Ok(Self {
            shared,
            checkpointer: Mutex::new(Some(checkpointer)),
            last_checkpoint: AtomicBool::new(true),
        })
    }

    /// Stops like a killed process would: no last checkpoint, so the store
    /// keeps only what earlier checkpoints gave it.
    #[cfg(test)]
    fn crash(self) {
        self.last_checkpoint.store(false, Ordering::Release);
    }

    /// Stops the checkpoint and spare threads (a half-written spare is
    /// deleted); then takes the last checkpoint, if it is still to be taken.
    fn finish(&self) -> Result<()> {
        self.shared.stop.store(true, Ordering::Release);
        let checkpointer = self
            .checkpointer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(checkpointer) = checkpointer {
            checkpointer.thread().unpark();
            let _ = checkpointer.join();
        }
        if let Some(spares) = &self.shared.spares {
            spares.stop();
        }
        match self.last_checkpoint.swap(false, Ordering::AcqRel) {
            true => self.shared.checkpoint(),
            false => Ok(()),
        }
    }

    /// The store behind the log.
    pub fn inner(&self) -> &S {
        &self.shared.inner
    }

    /// Rolls over to the next segment when the current one cannot take
    /// `needed` more bytes (or is sparse while a zero-filled spare is ready);
    /// a record larger than a segment gets a segment of its own size.
    fn make_room(&self, log: &mut Log, needed: u64) -> Result<()> {
        let full = log.segment.position + needed > log.segment.size;
        // A sparse segment (the first after a start without a spare) is left
        // as soon as a zero-filled one is ready: appends into it cost more.
        let sparse = !log.segment.zeroed && self.shared.spares.as_ref().is_some_and(Spares::ready);
        if !(full || sparse) {
            return Ok(());
        }
        let size = WAL_SEGMENT_BYTES.max(HEADER_BYTES + needed);
        let index = log.segment.index + 1;
        // The old segment's batches must be durable before its file stops
        // being the one we sync.
        log.segment
            .file
            .sync_data()
            .map_err(|e| io("fdatasync of the log", e))?;
        log.segment = new_segment(
            &self.shared.dir,
            index,
            size,
            log.next_batch,
            self.shared.spares.as_ref(),
        )?;
        log.segments.push((
            index,
            segment_path(&self.shared.dir, index),
            log.next_batch - 1,
        ));
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.shared.lock()
    }
}

impl<S: KvStore> Shared<S> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<S: KvStore> Drop for WalStore<S> {
    /// A store dropped without `close` (a test, an error path) still takes
    /// its last checkpoint; a failure is only logged: the log holds everything.
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            tracing::warn!(error = %e, "final store checkpoint failed; the next start replays the log");
        }
    }
}

impl<S: KvStore> KvStore for WalStore<S> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.shared.overlay.get(&self.shared.inner, key)
    }

    fn range(&self, range: KeyRange<'_>, dir: Direction, visit: &mut Visit<'_>) -> Result<()> {
        self.shared
            .overlay
            .range(&self.shared.inner, range, dir, visit)
    }

    fn hold_rewrites(&self) -> Option<RwLockReadGuard<'_, ()>> {
        Some(self.shared.overlay.hold_rewrites())
    }

    /// Appends the batch to the log (not yet synced) and puts it in the overlay.
    fn write(&self, mut batch: Vec<KeyWrite>) -> Result<()> {
        let mut log = self.lock();
        let number = log.next_batch;
        batch.push((
            APPLIED_BATCH_KEY.to_vec(),
            Some(number.to_be_bytes().to_vec()),
        ));
        let record = encode_record(number, &batch)?;
        let needed = record.len() as u64;
        let appended = self.make_room(&mut log, needed).and_then(|()| {
            log.segment
                .file
                .write_all_at(&record, log.segment.position)
                .map_err(|e| io("writing the log", e))
        });
        if let Err(e) = appended {
            log.wanted_room = Some(needed);
            return Err(e);
        }
        log.segment.position += needed;
        log.wanted_room = None;
        if log.segment.position > log.segment.size / 2
            && let Some(spares) = &self.shared.spares
        {
            // Half full: time to zero the next segment (not at once after a
            // rollover or a start, when other work competes for the disk).
            spares.want();
        }
        log.next_batch = number + 1;
        if let Some(last) = log.segments.last_mut() {
            last.2 = number;
        }
        // Into the overlay under the log lock: the overlay then holds batches in
        // the log's order, whoever writes.
        self.shared.overlay.put(batch);
        drop(log);
        let options = &self.shared.options;
        if !self
            .shared
            .overlay
            .wait_for_room(options.max_pending_keys, options.store_patience)
        {
            // The batch is in the log and may become durable; the journal
            // refuses writes until a sync works, like after any failed write.
            return Err(StoreError::Stuck(format!(
                "the store behind the log took no checkpoint for {:?} while writes piled up",
                options.store_patience
            )));
        }
        Ok(())
    }

    fn failure(&self) -> Option<String> {
        self.shared.inner.failure()
    }

    fn upkeep_stats(&self) -> StoreUpkeep {
        self.shared.inner.upkeep_stats()
    }

    /// After a write failed for want of room in the log, makes that room: the
    /// rollover to the next segment, and in a sparse segment the blocks the
    /// record will take (zeros, which the log reads as "nothing yet"). Fails
    /// while the disk still has no room, so the journal keeps refusing writes
    /// instead of taking one that would fail again.
    fn recover(&self) -> Result<()> {
        let mut log = self.lock();
        let Some(needed) = log.wanted_room else {
            return Ok(());
        };
        self.make_room(&mut log, needed)?;
        if !log.segment.zeroed {
            log.segment
                .file
                .write_all_at(&vec![0; needed as usize], log.segment.position)
                .map_err(|e| io("making room in the log", e))?;
        }
        log.wanted_room = None;
        Ok(())
    }

    /// The last checkpoint, so the next open has nothing to replay; its
    /// failure is the caller's to report (the log still holds everything).
    fn close(&self) -> Result<()> {
        self.finish()
    }

    /// fdatasync of the log (checkpoints of the store run on their own thread).
    /// A sync also fails while the store is stuck (writes wait for room that
    /// a failing checkpoint does not make) or has failed (sled, after a full
    /// disk, fails every read until the checkpoint thread opens it again):
    /// the journal then keeps refusing writes, instead of taking one that
    /// would only wait and fail, and health says so.
    fn sync(&self) -> Result<()> {
        let options = &self.shared.options;
        if let Some(why) = self.shared.inner.failure() {
            // Reads of what the overlay does not hold fail as well: the
            // journal stops until a checkpoint opens the store again.
            return Err(StoreError::Stuck(format!(
                "the store behind the log fails everything until it is opened again ({why})"
            )));
        }
        if !self.shared.overlay.has_room(options.max_pending_keys) {
            return Err(StoreError::Stuck(format!(
                "the store behind the log takes no checkpoint, and {} writes wait for it",
                self.shared.overlay.waiting_keys()
            )));
        }
        let log = self.lock();
        if let Some(fault) = &options.log_fault {
            fault.check("fdatasync of the log")?;
        }
        log.segment
            .file
            .sync_data()
            .map_err(|e| io("fdatasync of the log", e))?;
        let piling_up =
            log.segments.len() > 2 || self.shared.overlay.waiting_keys() > OVERLAY_KEYS_MAX;
        if piling_up && let Some(checkpointer) = self.shared.checkpointer.get() {
            // Writes come faster than the interval clears them: the log's
            // segments and the overlay's memory would grow.
            checkpointer.unpark();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{checkpoint::applied_batch, segment::MAGIC, *};
    use crate::journal::store::{FaultyStore, MemoryStore};

    fn put(key: &str, value: &str) -> KeyWrite {
        (key.as_bytes().to_vec(), Some(value.as_bytes().to_vec()))
    }

    fn segment(dir: &Path) -> PathBuf {
        scan(dir).unwrap().segments.last().unwrap().1.clone()
    }

    /// Opens with sparse segments only: a test that reads segment files must
    /// not have a spare's arrival move its batches to a new segment.
    fn open(dir: &Path, store: MemoryStore) -> Result<WalStore<MemoryStore>> {
        let options = WalOptions {
            zero_filled_segments: false,
            ..WalOptions::default()
        };
        WalStore::open_with(dir, store, options)
    }

    #[test]
    fn replays_what_the_store_lacks_and_refuses_what_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        {
            let wal = open(dir.path(), MemoryStore::default()).unwrap();
            for i in 0..5 {
                wal.write(vec![put(&format!("k{i}"), "v")]).unwrap();
                wal.sync().unwrap();
            }
        }
        // A store that lost everything (memory): the log puts every batch back.
        let wal = open(dir.path(), MemoryStore::default()).unwrap();
        assert_eq!(wal.get(b"k4").unwrap(), Some(b"v".to_vec()));
        assert_eq!(applied_batch(wal.inner()).unwrap(), 5);
        drop(wal);
        // That open checkpointed and started a fresh log at batch 6: a store that
        // now comes back empty has lost batches nothing can restore.
        let err = open(dir.path(), MemoryStore::default())
            .err()
            .expect("refused");
        assert!(err.to_string().contains("batches 1..=5 are lost"), "{err}");
    }

    #[test]
    fn a_checkpoint_cut_short_is_completed_by_replay() {
        let dir = tempfile::tempdir().unwrap();
        let wal = open(dir.path(), MemoryStore::default()).unwrap();
        wal.write(vec![put("k1", "a"), put("u1", "")]).unwrap();
        wal.write(vec![put("k1", "b"), put("k2", "x")]).unwrap();
        wal.write(vec![(b"u1".to_vec(), None), put("k3", "y")])
            .unwrap();
        wal.sync().unwrap();
        // Before any checkpoint the store has nothing; reads come from memory.
        assert_eq!(wal.inner().get(b"k1").unwrap(), None);
        assert_eq!(wal.get(b"k1").unwrap(), Some(b"b".to_vec()));
        assert_eq!(wal.get(b"u1").unwrap(), None);
        wal.crash();
        // A store that a checkpoint had started to write (keys in order, the
        // batch marker last) when the process died: its first key, no marker.
        let store = MemoryStore::default();
        store.write(vec![put("k1", "b")]).unwrap();
        let wal = open(dir.path(), store).unwrap();
        for (key, value) in [
            ("k1", Some("b")),
            ("k2", Some("x")),
            ("k3", Some("y")),
            ("u1", None),
        ] {
            assert_eq!(
                wal.inner().get(key.as_bytes()).unwrap(),
                value.map(|v| v.as_bytes().to_vec()),
                "{key}"
            );
        }
        assert_eq!(applied_batch(wal.inner()).unwrap(), 3);
    }

    #[test]
    fn a_store_that_cannot_checkpoint_stops_writes_after_a_while_and_catches_up_after() {
        let dir = tempfile::tempdir().unwrap();
        let options = WalOptions {
            checkpoint_interval: Duration::from_millis(5),
            max_pending_keys: 50,
            store_patience: Duration::from_millis(200),
            ..WalOptions::default()
        };
        let fault = DiskFault::new();
        let store = FaultyStore::new(MemoryStore::default(), fault.clone());
        let wal = WalStore::open_with(dir.path(), store, options).unwrap();
        fault.fail();
        // The log takes writes while checkpoints fail, until too many wait.
        let mut refused = None;
        for i in 0..1_000 {
            match wal.write(vec![put(&format!("k{i:04}"), "v")]) {
                Ok(()) => wal.sync().unwrap(),
                Err(e) => {
                    refused = Some((i, e));
                    break;
                }
            }
        }
        let (written, err) = refused.expect("writes stop while the store is stuck");
        // The first failed checkpoint froze at least one write; 50 more fit
        // beside it (each write is one key, plus the shared batch marker).
        assert!(written >= 50, "{written} writes before the limit");
        assert!(err.to_string().contains("took no checkpoint"), "{err}");
        // Everything written (the refused batch too: it is in the log) reads back.
        assert_eq!(wal.get(b"k0000").unwrap(), Some(b"v".to_vec()));
        // The disk works again: the checkpoint goes through (at its next try,
        // after a backoff) and writes resume.
        fault.heal();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while let Err(e) = wal.write(vec![put("after", "v")]) {
            assert!(
                std::time::Instant::now() < deadline,
                "writes never resumed: {e}"
            );
        }
        while wal.inner().inner().get(b"k0000").unwrap().is_none() {
            assert!(std::time::Instant::now() < deadline, "no checkpoint");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(wal.get(b"after").unwrap(), Some(b"v".to_vec()));
    }

    #[test]
    fn a_torn_last_record_is_cut_off_but_damage_before_the_end_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let wal = open(dir.path(), MemoryStore::default()).unwrap();
            for i in 0..3 {
                wal.write(vec![put(&format!("k{i}"), "value")]).unwrap();
            }
            wal.sync().unwrap();
        }
        let path = segment(dir.path());
        let bytes = std::fs::read(&path).unwrap();
        let end = bytes.iter().rposition(|b| *b != 0).unwrap();

        // The last record half-written: a torn write, cut off.
        let copy = tempfile::tempdir().unwrap();
        let torn = copy.path().join(path.file_name().unwrap());
        let mut damaged = bytes.clone();
        damaged[end] ^= 0xff;
        std::fs::write(&torn, &damaged).unwrap();
        let wal = open(copy.path(), MemoryStore::default()).unwrap();
        assert!(wal.get(b"k1").unwrap().is_some());
        assert!(
            wal.get(b"k2").unwrap().is_none(),
            "the torn batch is not replayed"
        );
        drop(wal);

        // The first record damaged while later ones are intact: refused, with where.
        let copy = tempfile::tempdir().unwrap();
        let broken = copy.path().join(path.file_name().unwrap());
        let mut damaged = bytes.clone();
        damaged[HEADER_BYTES as usize + 20] ^= 0xff;
        std::fs::write(&broken, &damaged).unwrap();
        let err = open(copy.path(), MemoryStore::default())
            .err()
            .expect("refused");
        let text = err.to_string();
        assert!(text.contains(&broken.display().to_string()), "{text}");
        assert!(text.contains(&format!("at byte {HEADER_BYTES}")), "{text}");
        assert!(text.contains("checksum mismatch"), "{text}");
    }

    #[test]
    fn a_fresh_log_moves_to_a_zero_filled_segment_once_one_is_ready() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        // No checkpoint meanwhile: it would delete the first segment.
        let options = WalOptions {
            checkpoint_interval: Duration::from_secs(3600),
            ..WalOptions::default()
        };
        {
            let wal = WalStore::open_with(dir.path(), MemoryStore::default(), options).unwrap();
            wal.write(vec![put("before", "v")]).unwrap();
            wal.sync().unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            while !wal.shared.spares.as_ref().unwrap().ready() {
                assert!(std::time::Instant::now() < deadline, "no spare");
                std::thread::sleep(Duration::from_millis(5));
            }
            wal.write(vec![put("after", "v")]).unwrap();
            wal.sync().unwrap();
            let log = wal.lock();
            assert!(log.segment.zeroed, "the next write moved to the spare");
            assert_eq!(log.segments.len(), 2, "{:?}", log.segments);
            let meta = log.segment.file.metadata().unwrap();
            assert_eq!(meta.len(), WAL_SEGMENT_BYTES);
            assert!(
                meta.blocks() * 512 >= WAL_SEGMENT_BYTES,
                "allocated, not sparse"
            );
            drop(log);
            wal.crash();
        }
        // Both batches come back from the two segments, in order.
        let found = scan(dir.path()).unwrap();
        let batches: Vec<u64> = found.records.iter().map(|(_, r)| r.batch).collect();
        assert_eq!(batches, [1, 2]);
        let wal = WalStore::open(dir.path(), MemoryStore::default()).unwrap();
        assert_eq!(wal.get(b"before").unwrap(), Some(b"v".to_vec()));
        assert_eq!(wal.get(b"after").unwrap(), Some(b"v".to_vec()));
    }

    /// Sparse segments, and no checkpoint meanwhile (it would delete the
    /// first segment): a test sees every segment it made.
    fn segments_kept() -> WalOptions {
        WalOptions {
            checkpoint_interval: Duration::from_secs(3600),
            zero_filled_segments: false,
            ..WalOptions::default()
        }
    }

    #[test]
    fn a_rollover_replaces_what_a_failed_one_left() {
        let dir = tempfile::tempdir().unwrap();
        {
            let wal =
                WalStore::open_with(dir.path(), MemoryStore::default(), segments_kept()).unwrap();
            wal.write(vec![put("first", "v")]).unwrap();
            wal.sync().unwrap();
            // A rollover that failed after creating the next segment's file
            // (a full disk while its header was written) left it behind.
            let next = segment_path(dir.path(), wal.lock().segment.index + 1);
            std::fs::write(&next, b"sagad").unwrap();
            // A record larger than what is left of the segment rolls over.
            let big = "x".repeat(WAL_SEGMENT_BYTES as usize);
            wal.write(vec![put("big", &big), put("second", "v")])
                .expect("the rollover replaces the leftover");
            wal.sync().unwrap();
            assert_eq!(wal.lock().segment.index, 2);
            wal.crash();
        }
        let wal = open(dir.path(), MemoryStore::default()).unwrap();
        assert_eq!(wal.get(b"first").unwrap(), Some(b"v".to_vec()));
        assert_eq!(wal.get(b"second").unwrap(), Some(b"v".to_vec()));
    }

    /// A write whose rollover failed (no room for the next segment) is
    /// not taken back by a sync that works: `recover` fails until the
    /// rollover can be made, so the journal's probe does not declare writes
    /// working while the next one would fail again.
    #[test]
    fn recover_fails_until_the_failed_rollover_can_be_made() {
        let dir = tempfile::tempdir().unwrap();
        let wal = WalStore::open_with(dir.path(), MemoryStore::default(), segments_kept()).unwrap();
        wal.write(vec![put("first", "v")]).unwrap();
        wal.sync().unwrap();
        // What stands in for a full disk: the next segment cannot be created.
        let next = segment_path(dir.path(), wal.lock().segment.index + 1);
        std::fs::create_dir(&next).unwrap();
        let big = "x".repeat(WAL_SEGMENT_BYTES as usize);
        wal.write(vec![put("big", &big)])
            .expect_err("no room for the rollover");
        wal.sync().expect("what was written is durable");
        wal.recover()
            .expect_err("the rollover still cannot be made");
        assert!(wal.lock().wanted_room.is_some());
        std::fs::remove_dir(&next).unwrap();
        wal.recover().expect("room again");
        assert_eq!(wal.lock().segment.index, 2, "rolled over by recover");
        wal.write(vec![put("big", &big)]).unwrap();
        wal.sync().unwrap();
        assert_eq!(
            wal.lock().segment.index,
            2,
            "the record fit where recover made room"
        );
        assert_eq!(wal.get(b"big").unwrap().map(|v| v.len()), Some(big.len()));
    }

    /// A rollover that failed before it wrote the next segment's header (a
    /// full disk) left an empty file: the next open takes it for what it is,
    /// never for damage, and the log goes on. Any other header-less file is a
    /// segment cut short: damage, as before.
    #[test]
    fn a_trailing_segment_without_a_header_is_left_over_not_damage() {
        let dir = tempfile::tempdir().unwrap();
        {
            let wal = open(dir.path(), MemoryStore::default()).unwrap();
            wal.write(vec![put("k", "v")]).unwrap();
            wal.sync().unwrap();
            let next = segment_path(dir.path(), wal.lock().segment.index + 1);
            std::fs::write(&next, b"").unwrap();
            wal.crash();
        }
        let store = MemoryStore::default();
        let wal = open(dir.path(), store).unwrap();
        assert_eq!(wal.get(b"k").unwrap(), Some(b"v".to_vec()));
        wal.write(vec![put("after", "v")]).unwrap();
        wal.sync().unwrap();
        drop(wal);
        // A header-less segment with data after it is damage, as before.
        let dir = tempfile::tempdir().unwrap();
        {
            let wal = open(dir.path(), MemoryStore::default()).unwrap();
            wal.write(vec![put("k", "v")]).unwrap();
            wal.sync().unwrap();
            let next = segment_path(dir.path(), wal.lock().segment.index + 1);
            std::fs::write(&next, &MAGIC[..5]).unwrap();
            wal.crash();
        }
        let err = open(dir.path(), MemoryStore::default())
            .err()
            .expect("refused");
        assert!(err.to_string().contains("0000000000000002.wal"), "{err}");
        assert!(err.to_string().contains("is damaged"), "{err}");
    }

    #[test]
    fn a_segment_that_cannot_be_prepared_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        // No filesystem takes a file this large: preparing it fails part-way.
        let Err(err) = new_segment(dir.path(), 7, u64::MAX / 2, 1, None) else {
            panic!("a segment no filesystem takes was prepared");
        };
        assert!(err.to_string().contains("preparing"), "{err}");
        assert!(!segment_path(dir.path(), 7).exists(), "nothing left behind");
    }

    #[test]
    fn a_disk_without_the_reserve_free_is_refused_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let options = WalOptions {
            disk_reserve: u64::MAX,
            ..WalOptions::default()
        };
        let err = WalStore::open_with(dir.path(), MemoryStore::default(), options)
            .err()
            .expect("refused");
        let text = err.to_string();
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        assert!(
            text.contains("free") && text.contains("--disk-reserve"),
            "{text}"
        );
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "nothing written"
        );
    }

    #[test]
    fn no_spare_is_prepared_that_would_eat_into_the_reserve() {
        let dir = tempfile::tempdir().unwrap();
        let free = space::free_bytes(dir.path()).unwrap();
        // Room to start, not for a spare beside the reserve.
        let options = WalOptions {
            disk_reserve: free.saturating_sub(WAL_SEGMENT_BYTES / 2),
            ..WalOptions::default()
        };
        let wal = WalStore::open_with(dir.path(), MemoryStore::default(), options).unwrap();
        for i in 0..100 {
            wal.write(vec![put(&format!("k{i}"), "v")]).unwrap();
            wal.sync().unwrap();
        }
        assert!(!wal.shared.spares.as_ref().unwrap().ready());
        assert!(!dir.path().join(spare::SPARE).exists());
        assert!(!dir.path().join(spare::PREPARING).exists());
    }

    /// A close says when its last checkpoint failed (the log holds it all),
    /// and a drop after it does not try again.
    #[test]
    fn a_close_reports_a_failed_last_checkpoint_once() {
        let dir = tempfile::tempdir().unwrap();
        let fault = DiskFault::new();
        let store = FaultyStore::new(MemoryStore::default(), fault.clone());
        let options = WalOptions {
            checkpoint_interval: Duration::from_secs(3600),
            ..WalOptions::default()
        };
        let wal = WalStore::open_with(dir.path(), store, options).unwrap();
        wal.write(vec![put("k", "v")]).unwrap();
        wal.sync().unwrap();
        fault.fail();
        let err = wal.close().expect_err("the last checkpoint failed");
        assert!(err.to_string().contains("No space left"), "{err}");
        assert!(wal.close().is_ok(), "taken once");
        drop(wal);
        // The log still holds the batch.
        let wal = open(dir.path(), MemoryStore::default()).unwrap();
        assert_eq!(wal.get(b"k").unwrap(), Some(b"v".to_vec()));
    }

    /// The store contract, through the log, with checkpoints moving batches
    /// from the overlay to the store all the time.
    fn churning() -> WalOptions {
        WalOptions {
            checkpoint_interval: Duration::from_millis(1),
            ..WalOptions::default()
        }
    }

    mod over_memory {
        use super::*;

        crate::store_conformance!({
            let dir = tempfile::tempdir().unwrap();
            let wal = WalStore::open_with(dir.path(), MemoryStore::default(), churning()).unwrap();
            (wal, dir)
        });
    }

    mod over_sled {
        use super::*;
        use crate::journal::store::SledStore;

        crate::store_conformance!({
            let dir = tempfile::tempdir().unwrap();
            let sled = SledStore::open(dir.path()).unwrap();
            let wal = WalStore::open_with(&dir.path().join("wal"), sled, churning()).unwrap();
            (wal, dir)
        });
    }

    /// sled rewritten into a fresh store over and over, a few keys per
    /// slice, while the suite writes (`sled/renew.rs`).
    mod over_renewing_sled {
        use std::collections::BTreeMap;

        use super::*;
        use crate::journal::store::SledStore;

        crate::store_conformance!({
            let dir = tempfile::tempdir().unwrap();
            let sled = SledStore::open(dir.path()).unwrap().renewing(1, 7);
            let wal = WalStore::open_with(&dir.path().join("wal"), sled, churning()).unwrap();
            (wal, dir)
        });

        /// Killed after fresh stores took the old one's place (and with one
        /// maybe half copied): the open finds the store in place, and the
        /// log gives it every batch it lacks.
        #[test]
        fn a_crash_after_renewals_loses_nothing() {
            let dir = tempfile::tempdir().unwrap();
            let sled = SledStore::open(dir.path()).unwrap().renewing(1, 50);
            let wal = WalStore::open_with(&dir.path().join("wal"), sled, churning()).unwrap();
            let mut model = BTreeMap::new();
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            let mut i = 0usize;
            while wal.inner().upkeep_stats().renewals < 3 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no renewals: {}",
                    wal.inner().upkeep_stats().renewals
                );
                let batch = vec![
                    put(&format!("k{:04}", i % 700), &format!("v{i}")),
                    (format!("k{:04}", (i * 7) % 700).into_bytes(), None),
                ];
                for (k, v) in &batch {
                    match v {
                        Some(v) => model.insert(k.clone(), v.clone()),
                        None => model.remove(k),
                    };
                }
                wal.write(batch).unwrap();
                wal.sync().unwrap();
                i += 1;
            }
            wal.crash();
            let sled = SledStore::open(dir.path()).unwrap();
            let wal = WalStore::open_with(&dir.path().join("wal"), sled, churning()).unwrap();
            let found: BTreeMap<Vec<u8>, Vec<u8>> = wal.scan(b"k").unwrap().into_iter().collect();
            assert_eq!(found, model);
        }
    }
}
