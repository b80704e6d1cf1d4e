//! The write-ahead log: the journal's source of truth on disk, in front of a
//! key-value store that serves reads.
//!
//! Every batch of key writes is appended to the log as one checksummed record and
//! made durable with one `fdatasync` of the log file, then acknowledged. The
//! batch goes to an in-memory layer over the store (`overlay.rs`), which serves
//! reads; the store gets everything gathered there at the next checkpoint, in
//! one pass, and is made durable, after which the log segments it covers are
//! deleted. On open, the log is verified and every batch the store does not hold
//! yet is replayed.
//!
//! Why not trust sled's own log: sled 0.34 recovers silently to the last good
//! message when its file is truncated or a byte is flipped, which would drop
//! acknowledged sagas without a word. Here the log can say what is damaged:
//!
//! ```text
//! DATA_DIR/wal/0000000000000007.wal   one segment, preallocated to its full size
//! ┌──────────────┬──────────────────────────────┬───────┬─────────────┐
//! │ header (32B) │ record │ record │ …            │ zeros │             │
//! └──────────────┴──────────────────────────────┴───────┴─────────────┘
//! header: "SAGADWAL" · version u32 · segment size u64 · index u64 ·
//!         first batch u64 · crc32 of the header so far
//! record: len u32 · crc32 u32 (of the rest) · batch u64 · postcard(key writes)
//! ```
//!
//! The store is written with `write_ordered` (in order, not atomically). Every
//! batch holds the `m/wal_batch` marker, and a checkpoint writes it last, after
//! the rest of what it applies: a store that kept the marker kept everything up
//! to that batch, and one that lost part of a checkpoint still has the older
//! marker, so replay writes every batch after it again, in order, and each key
//! ends with its newest value.
//!
//! Invariants and what is detected:
//! - Batches are numbered 1, 2, 3… without gaps across segments; the store keeps
//!   the number of the last batch it applied (`m/wal_batch`), so replay applies
//!   exactly the batches it lacks, and a store that lost batches the log no
//!   longer holds is reported, never papered over.
//! - A segment shorter than the size its header states was truncated: refused.
//! - A record that fails its checksum, or breaks the batch sequence, with data
//!   after it is damage: refused, naming the file and byte offset.
//! - A bad record with nothing but zeros after it, at the end of the last
//!   segment, is a torn write of a batch that was never acknowledged (the process
//!   died mid-write): it is cut off and zeroed, with a warning.

use std::{
    fs::{self, File, OpenOptions},
    io::{Read, Seek, SeekFrom, Write},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, MutexGuard, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use super::{
    JournalError, codec,
    kv::{Entry, KeyWrite, KvStore, Visit, lend},
    overlay::{self, Compact, Overlay, PutOnlyOverAbsent},
    spare::Spares,
};

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

const MAGIC: &[u8; 8] = b"SAGADWAL";
const VERSION: u32 = 1;
const HEADER_BYTES: u64 = 48;
/// len + crc + batch.
const RECORD_HEADER_BYTES: u64 = 16;

/// How a [`WalStore`] checkpoints.
#[derive(Clone, Copy)]
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
    checkpointer: Option<thread::JoinHandle<()>>,
    /// Whether dropping the store checkpoints (not for a simulated crash).
    checkpoint_on_drop: bool,
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
}

/// One segment file being appended to.
struct Segment {
    file: File,
    index: u64,
    size: u64,
    /// Where the next record goes.
    position: u64,
    /// Written with zeros before use (a spare), rather than a sparse file.
    zeroed: bool,
}

fn damaged(path: &Path, at: u64, why: impl Into<String>) -> JournalError {
    JournalError::Corrupt {
        key: format!("{} at byte {at}", path.display()),
        why: why.into(),
    }
}

fn io(what: impl std::fmt::Display, e: std::io::Error) -> JournalError {
    JournalError::Io(format!("{what}: {e}"))
}

fn segment_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("{index:016}.wal"))
}

/// A verified record read back.
pub struct Record {
    pub batch: u64,
    pub writes: Vec<KeyWrite>,
}

/// What a scan of the whole log found.
pub struct Scan {
    /// The batch the oldest segment starts at (its header says so even when it
    /// holds no record yet); 1 for an empty log.
    pub first_batch: u64,
    /// (index, path, size) of every segment, oldest first.
    pub segments: Vec<(u64, PathBuf, u64)>,
    /// Every good record, in order, with the segment index it is in.
    pub records: Vec<(u64, Record)>,
    /// A torn tail found at the end: (segment path, byte offset).
    pub torn: Option<(PathBuf, u64)>,
}

/// (segment size, index, first batch) from a segment's header.
fn read_header(path: &Path, file: &mut File) -> Result<(u64, u64, u64), JournalError> {
    let mut header = [0u8; HEADER_BYTES as usize];
    file.read_exact(&mut header).map_err(|_| {
        damaged(
            path,
            0,
            "the segment header is missing (the file was truncated)",
        )
    })?;
    if &header[..8] != MAGIC {
        return Err(damaged(path, 0, "not a sagad log segment (bad magic)"));
    }
    let crc = u32::from_le_bytes(header[36..40].try_into().unwrap_or_default());
    if crc32fast::hash(&header[..36]) != crc {
        return Err(damaged(path, 0, "segment header checksum mismatch"));
    }
    let version = u32::from_le_bytes(header[8..12].try_into().unwrap_or_default());
    if version != VERSION {
        return Err(damaged(
            path,
            8,
            format!("log format version {version}; this build reads {VERSION}"),
        ));
    }
    let size = u64::from_le_bytes(header[12..20].try_into().unwrap_or_default());
    let index = u64::from_le_bytes(header[20..28].try_into().unwrap_or_default());
    let first_batch = u64::from_le_bytes(header[28..36].try_into().unwrap_or_default());
    Ok((size, index, first_batch))
}

/// Reads and verifies every segment of the log in `dir`.
pub fn scan(dir: &Path) -> Result<Scan, JournalError> {
    let mut paths: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wal"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(format!("listing {}", dir.display()), e)),
    };
    paths.sort();
    let mut result = Scan {
        first_batch: 1,
        segments: Vec::new(),
        records: Vec::new(),
        torn: None,
    };
    let count = paths.len();
    let mut expected_batch = None;
    for (n, path) in paths.into_iter().enumerate() {
        let last_segment = n + 1 == count;
        let mut file =
            File::open(&path).map_err(|e| io(format!("opening {}", path.display()), e))?;
        let (size, index, first_batch) = read_header(&path, &mut file)?;
        match expected_batch {
            None => result.first_batch = first_batch,
            Some(expected) if expected != first_batch => {
                return Err(damaged(
                    &path,
                    28,
                    format!(
                        "the segment starts at batch {first_batch} where {expected} was expected: batches are missing"
                    ),
                ));
            }
            Some(_) => {}
        }
        let mut next_batch = first_batch;
        let actual = file
            .metadata()
            .map_err(|e| io(format!("reading {}", path.display()), e))?
            .len();
        if actual != size {
            return Err(damaged(
                &path,
                actual,
                format!(
                    "the segment is {actual} bytes but was created with {size}: it was truncated or extended"
                ),
            ));
        }
        let expected_name = segment_path(dir, index);
        if expected_name.file_name() != path.file_name() {
            return Err(damaged(
                &path,
                20,
                format!("the header says segment {index}"),
            ));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.read_to_end(&mut bytes))
            .map_err(|e| io(format!("reading {}", path.display()), e))?;
        let mut position = HEADER_BYTES;
        loop {
            let at = position as usize;
            if position + RECORD_HEADER_BYTES > size {
                break;
            }
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default()) as u64;
            if len == 0 {
                // Zeros: the end of this segment's records, unless something follows.
                if bytes[at..].iter().any(|b| *b != 0) {
                    return Err(damaged(
                        &path,
                        position,
                        "data after the end of the records (a zeroed length)",
                    ));
                }
                break;
            }
            let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap_or_default());
            let end = position + 8 + len;
            let problem = if len < 8 || end > size {
                Some(format!(
                    "a record length of {len} bytes does not fit the segment"
                ))
            } else if crc32fast::hash(&bytes[at + 8..end as usize]) != crc {
                Some("record checksum mismatch".to_string())
            } else {
                None
            };
            if let Some(why) = problem {
                // A torn write leaves garbage only where the last record was being
                // written; anything non-zero beyond it means real damage.
                let beyond = if len >= 8 && end <= size {
                    end as usize
                } else {
                    at + 8
                };
                let tail_clean = bytes[beyond..].iter().all(|b| *b == 0);
                if last_segment && tail_clean {
                    result.torn = Some((path.clone(), position));
                    break;
                }
                return Err(damaged(&path, position, why));
            }
            let batch = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().unwrap_or_default());
            let writes: Vec<KeyWrite> = postcard::from_bytes(&bytes[at + 16..end as usize])
                .map_err(|e| damaged(&path, position, format!("undecodable record: {e}")))?;
            if batch != next_batch {
                return Err(damaged(
                    &path,
                    position,
                    format!(
                        "batch {batch} where batch {next_batch} was expected: batches are missing"
                    ),
                ));
            }
            next_batch += 1;
            result.records.push((index, Record { batch, writes }));
            position = end;
        }
        expected_batch = Some(next_batch);
        result.segments.push((index, path, next_batch - 1));
    }
    Ok(result)
}

fn segment_header(size: u64, index: u64, first_batch: u64) -> [u8; HEADER_BYTES as usize] {
    let mut header = [0u8; HEADER_BYTES as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[12..20].copy_from_slice(&size.to_le_bytes());
    header[20..28].copy_from_slice(&index.to_le_bytes());
    header[28..36].copy_from_slice(&first_batch.to_le_bytes());
    let crc = crc32fast::hash(&header[..36]);
    header[36..40].copy_from_slice(&crc.to_le_bytes());
    header
}

/// A new segment: the ready spare, if there is one of that size, else a sparse file.
fn new_segment(
    dir: &Path,
    index: u64,
    size: u64,
    first_batch: u64,
    spares: Option<&Spares>,
) -> Result<Segment, JournalError> {
    let path = segment_path(dir, index);
    if let Some(spares) = spares
        && let Some((file, spare)) = spares.take(size)
    {
        // The header durable before the name: a segment file never lacks one.
        let taken = file
            .write_all_at(&segment_header(size, index, first_batch), 0)
            .and_then(|_| file.sync_data())
            .and_then(|_| fs::rename(spare, &path));
        spares.used();
        match taken {
            Ok(()) => {
                sync_dir(dir)?;
                return Ok(Segment {
                    file,
                    index,
                    size,
                    position: HEADER_BYTES,
                    zeroed: true,
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, segment = %path.display(), "cannot use the zero-filled spare; creating a sparse segment");
            }
        }
    }
    // A file already at this index can only be what a failed rollover to it
    // left (the log never writes past its current segment, and an open starts
    // past every segment it found): replace it, or every later rollover fails.
    match fs::remove_file(&path) {
        Ok(()) => {
            tracing::warn!(segment = %path.display(), "replacing what a failed rollover left")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(format!("removing {}", path.display()), e)),
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| io(format!("creating {}", path.display()), e))?;
    file.write_all(&segment_header(size, index, first_batch))
        .and_then(|_| file.set_len(size))
        .and_then(|_| file.sync_all())
        .map_err(|e| io(format!("preparing {}", path.display()), e))?;
    sync_dir(dir)?;
    Ok(Segment {
        file,
        index,
        size,
        position: HEADER_BYTES,
        zeroed: false,
    })
}

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(format!("syncing {}", dir.display()), e))
}

fn applied_batch<S: KvStore>(inner: &S) -> Result<u64, JournalError> {
    match inner.get(APPLIED_BATCH_KEY)? {
        Some(bytes) => Ok(u64::from_be_bytes(bytes.as_slice().try_into().map_err(
            |_| JournalError::Corrupt {
                key: "wal_batch".into(),
                why: format!("{} bytes where 8 were expected", bytes.len()),
            },
        )?)),
        None => Ok(0),
    }
}

impl<S: KvStore> WalStore<S> {
    /// Opens the log in `dir` in front of `inner`: verifies it, replays what
    /// `inner` lacks, checkpoints, and readies the tail for appends.
    pub fn open(dir: &Path, inner: S) -> Result<Self, JournalError> {
        Self::open_with(dir, inner, WalOptions::default())
    }

    /// `open`, with other [`WalOptions`].
    pub fn open_with(dir: &Path, inner: S, options: WalOptions) -> Result<Self, JournalError> {
        fs::create_dir_all(dir).map_err(|e| io(format!("creating {}", dir.display()), e))?;
        let found = scan(dir)?;
        let applied = applied_batch(&inner)?;
        if !found.segments.is_empty() && found.first_batch > applied + 1 {
            return Err(JournalError::Corrupt {
                key: format!("the store beside {}", dir.display()),
                why: format!(
                    "it holds batches up to {applied} but the log starts at batch {}: batches {}..={} are lost (the store's files were damaged or replaced)",
                    found.first_batch,
                    applied + 1,
                    found.first_batch - 1
                ),
            });
        }
        if let Some((path, at)) = &found.torn {
            tracing::warn!(segment = %path.display(), at, "cutting off a torn, unacknowledged write at the end of the log");
        }
        let mut replayed = 0;
        for (_, record) in &found.records {
            if record.batch > applied {
                inner.write_ordered(&mut lend(&record.writes))?;
                replayed += 1;
            }
        }
        let last_batch = found
            .records
            .last()
            .map_or(applied, |(_, r)| r.batch.max(applied));
        if replayed > 0 {
            tracing::info!(replayed, "replayed log batches into the store");
        }
        inner.sync()?;
        let spares = if options.zero_filled_segments {
            Some(
                Spares::start(dir, WAL_SEGMENT_BYTES)
                    .map_err(|e| io(format!("preparing spare segments in {}", dir.display()), e))?,
            )
        } else {
            None
        };
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
            checkpointer: Some(checkpointer),
            checkpoint_on_drop: true,
        })
    }

    /// Stops like a killed process would: no last checkpoint, so the store
    /// keeps only what earlier checkpoints gave it.
    #[cfg(test)]
    fn crash(mut self) {
        self.checkpoint_on_drop = false;
    }

    /// The store behind the log.
    pub fn inner(&self) -> &S {
        &self.shared.inner
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.shared.lock()
    }
}

impl<S: KvStore> Shared<S> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checkpoints every interval (or when woken) until stopped.
    fn run_checkpoints(&self) {
        super::background::lower_priority();
        loop {
            thread::park_timeout(self.options.checkpoint_interval);
            // Woken to stop: the last checkpoint is the dropping owner's call
            // (a simulated crash takes none).
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            if let Err(e) = self.checkpoint() {
                // The log still holds everything: nothing is lost, the segments
                // just stay until a checkpoint works.
                tracing::warn!(error = %e, "store checkpoint failed; keeping the log segments");
            }
        }
    }

    /// Applies what the overlay gathered to the store and makes it durable,
    /// then deletes the segments that only hold batches up to there.
    fn checkpoint(&self) -> Result<(), JournalError> {
        let Some(frozen) = self.overlay.freeze(self.options.compact) else {
            return Ok(());
        };
        // Not under the log lock: appends go on while the store is written.
        // Every batch carries the marker, so a frozen layer always holds one.
        let Some(Some(marker)) = frozen.get(APPLIED_BATCH_KEY) else {
            return Err(JournalError::Corrupt {
                key: "wal_batch".into(),
                why: "a checkpoint found batches without their marker".into(),
            });
        };
        let upto = <[u8; 8]>::try_from(marker.as_slice())
            .map(u64::from_be_bytes)
            .unwrap_or_default();
        let writes = || {
            frozen
                .iter()
                .filter(|(key, _)| key.as_slice() != APPLIED_BATCH_KEY)
                .map(|(key, value)| (key.as_slice(), value.as_deref()))
        };
        let half = (frozen.len() - 1) / 2;
        self.inner.write_ordered(&mut writes().take(half))?;
        // Half of the checkpoint durable in the store, its marker not: the worst
        // a crash in the middle can leave (a disk may write any part of what
        // was not synced); replay at the next open completes it.
        #[cfg(all(feature = "failpoints", debug_assertions))]
        if ::fail::eval("journal::mid_checkpoint", |_| ()).is_some() {
            let _ = self.inner.sync();
            crate::failpoint::die("journal::mid_checkpoint");
        }
        // The marker last: a store that kept it kept the rest.
        let marker = (APPLIED_BATCH_KEY, Some(marker.as_slice()));
        self.inner
            .write_ordered(&mut writes().skip(half).chain(std::iter::once(marker)))?;
        drop(frozen);
        self.inner.sync()?;
        self.overlay.release_frozen();
        let mut log = self.lock();
        log.checkpointed = upto;
        let current = log.segment.index;
        let mut kept = Vec::new();
        for (index, path, last) in std::mem::take(&mut log.segments) {
            if index != current && last <= upto {
                fs::remove_file(&path)
                    .map_err(|e| io(format!("removing {}", path.display()), e))?;
            } else {
                kept.push((index, path, last));
            }
        }
        log.segments = kept;
        Ok(())
    }
}

impl<S: KvStore> Drop for WalStore<S> {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(checkpointer) = self.checkpointer.take() {
            checkpointer.thread().unpark();
            let _ = checkpointer.join();
        }
        // A last checkpoint, so the next open has nothing to replay. If it
        // fails, the log still holds everything.
        if self.checkpoint_on_drop
            && let Err(e) = self.shared.checkpoint()
        {
            tracing::warn!(error = %e, "final store checkpoint failed; the next start replays the log");
        }
    }
}

impl<S: KvStore> KvStore for WalStore<S> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, JournalError> {
        self.shared.overlay.get(&self.shared.inner, key)
    }

    fn scan(&self, prefix: &[u8]) -> Result<Vec<Entry>, JournalError> {
        let mut entries = Vec::new();
        self.scan_from(prefix, prefix, &mut |k, v| {
            entries.push((k.to_vec(), v.to_vec()));
            Ok(true)
        })?;
        Ok(entries)
    }

    fn scan_rev(
        &self,
        prefix: &[u8],
        before: Option<&[u8]>,
        visit: &mut Visit<'_>,
    ) -> Result<(), JournalError> {
        self.shared
            .overlay
            .scan_rev(&self.shared.inner, prefix, before, visit)
    }

    fn scan_from(
        &self,
        prefix: &[u8],
        from: &[u8],
        visit: &mut Visit<'_>,
    ) -> Result<(), JournalError> {
        self.shared
            .overlay
            .scan_from(&self.shared.inner, prefix, from, visit)
    }

    fn hold_rewrites(&self) -> Option<MutexGuard<'_, ()>> {
        Some(self.shared.overlay.hold_rewrites())
    }

    /// Appends the batch to the log (not yet synced) and puts it in the overlay.
    fn write(&self, mut batch: Vec<KeyWrite>) -> Result<(), JournalError> {
        let mut log = self.lock();
        let number = log.next_batch;
        batch.push((
            APPLIED_BATCH_KEY.to_vec(),
            Some(number.to_be_bytes().to_vec()),
        ));
        let mut header = [0u8; RECORD_HEADER_BYTES as usize];
        header[8..16].copy_from_slice(&number.to_le_bytes());
        let mut record = codec::encode_after(&header, &codec::KeyWrites(&batch))
            .map_err(|e| JournalError::Io(format!("encoding a log record: {e}")))?;
        let len = (record.len() - 8) as u32;
        record[..4].copy_from_slice(&len.to_le_bytes());
        let crc = crc32fast::hash(&record[8..]);
        record[4..8].copy_from_slice(&crc.to_le_bytes());
        let needed = record.len() as u64;
        let full = log.segment.position + needed > log.segment.size;
        // A sparse segment (the first after a start without a spare) is left
        // as soon as a zero-filled one is ready: appends into it cost more.
        let sparse = !log.segment.zeroed && self.shared.spares.as_ref().is_some_and(Spares::ready);
        if full || sparse {
            // Roll over; a record larger than a segment gets a segment of its own size.
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
                number,
                self.shared.spares.as_ref(),
            )?;
            log.segments
                .push((index, segment_path(&self.shared.dir, index), number - 1));
        }
        log.segment
            .file
            .write_all_at(&record, log.segment.position)
            .map_err(|e| io("writing the log", e))?;
        log.segment.position += needed;
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
            return Err(JournalError::Io(format!(
                "the store behind the log took no checkpoint for {:?} while writes piled up",
                options.store_patience
            )));
        }
        Ok(())
    }

    /// fdatasync of the log (checkpoints of the store run on their own thread).
    fn sync(&self) -> Result<(), JournalError> {
        let log = self.lock();
        log.segment
            .file
            .sync_data()
            .map_err(|e| io("fdatasync of the log", e))?;
        let piling_up = log.segments.len() > 2 || self.shared.overlay.len() > OVERLAY_KEYS_MAX;
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
    use super::*;
    use crate::journal::memory::MemoryStore;

    fn put(key: &str, value: &str) -> KeyWrite {
        (key.as_bytes().to_vec(), Some(value.as_bytes().to_vec()))
    }

    fn segment(dir: &Path) -> PathBuf {
        scan(dir).unwrap().segments.last().unwrap().1.clone()
    }

    /// Opens with sparse segments only: a test that reads segment files must
    /// not have a spare's arrival move its batches to a new segment.
    fn open(dir: &Path, store: MemoryStore) -> Result<WalStore<MemoryStore>, JournalError> {
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

    /// A store whose syncs fail while `failing` is set, as on a full disk.
    #[derive(Default)]
    struct Flaky {
        inner: MemoryStore,
        failing: AtomicBool,
    }

    impl KvStore for Flaky {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, JournalError> {
            self.inner.get(key)
        }
        fn scan(&self, prefix: &[u8]) -> Result<Vec<Entry>, JournalError> {
            self.inner.scan(prefix)
        }
        fn scan_rev(
            &self,
            prefix: &[u8],
            before: Option<&[u8]>,
            visit: &mut Visit<'_>,
        ) -> Result<(), JournalError> {
            self.inner.scan_rev(prefix, before, visit)
        }
        fn write(&self, batch: Vec<KeyWrite>) -> Result<(), JournalError> {
            self.inner.write(batch)
        }
        fn sync(&self) -> Result<(), JournalError> {
            if self.failing.load(Ordering::SeqCst) {
                return Err(JournalError::Io("injected: no space left".into()));
            }
            self.inner.sync()
        }
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
        let wal = WalStore::open_with(dir.path(), Flaky::default(), options).unwrap();
        wal.inner().failing.store(true, Ordering::SeqCst);
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
        // The disk works again: the checkpoint goes through and writes resume.
        wal.inner().failing.store(false, Ordering::SeqCst);
        wal.write(vec![put("after", "v")]).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while wal.inner().inner.get(b"k0000").unwrap().is_none() {
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

    #[test]
    fn a_rollover_replaces_what_a_failed_one_left() {
        let dir = tempfile::tempdir().unwrap();
        // No checkpoint meanwhile: it would delete the first segment.
        let options = WalOptions {
            checkpoint_interval: Duration::from_secs(3600),
            zero_filled_segments: false,
            ..WalOptions::default()
        };
        {
            let wal = WalStore::open_with(dir.path(), MemoryStore::default(), options).unwrap();
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
}
