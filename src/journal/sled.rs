//! The sled journal: the embedded, durable default.
//!
//! Guarantees beyond the [`Journal`](super::Journal) contract:
//! - **One owner.** `open` takes an exclusive lock on `DATA_DIR/LOCK` first; a
//!   second process gets [`JournalError::Locked`] naming the directory and the pid
//!   holding it, before sled is touched.
//! - **The log first.** The journal is a write-ahead log (`wal.rs`) in front of
//!   this store: each batch is durable in the log before it is applied here, and
//!   the store is made durable only at the log's checkpoints. The log detects
//!   damage that sled would silently recover from (a truncated or flipped file
//!   makes sled 0.34 open with its last good prefix), and replays what sled lacks.
//! - **Really durable at a checkpoint.** sled 0.34's `flush()` ends in
//!   `sync_file_range`, which does not flush the disk's write cache (sled#1452),
//!   and it writes large values to blob files it never syncs. So a sync here is
//!   `flush()`, then `fsync` of any new blob file and of the blob directory, then
//!   `fdatasync` of the `db` file. Segments are made large enough that values up
//!   to the payload limit stay inline.
//!
//! Only this file names sled: no sled type appears in any signature outside it.

use std::{
    collections::HashSet,
    fs::{self, File, OpenOptions, TryLockError},
    io::{Read, Seek, Write},
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant},
};

use super::{
    JournalError, codec, compaction,
    kv::{Entry, KeyWrite, KeyWriteRef, KvJournal, KvStore, Visit},
    wal::{WalOptions, WalStore},
};

/// The sled-backed journal: a write-ahead log in front of sled.
pub type SledJournal = KvJournal<WalStore<SledStore>>;

/// Bytes of sled's page cache; the rest of the journal lives on disk.
const SLED_CACHE_BYTES: u64 = 64 * 1024 * 1024;
/// sled segment size. Values over a quarter of a segment go to unsynced blob files,
/// so 8 MiB keeps any record up to 2 MiB (a 1 MiB payload and its snapshot) inline.
const SLED_SEGMENT_BYTES: usize = 8 * 1024 * 1024;
/// How long an open waits for sled's file lock once `DATA_DIR/LOCK` is ours.
const SLED_LOCK_PATIENCE: Duration = Duration::from_secs(10);

impl SledJournal {
    /// Opens (or creates) the journal in `dir`, taking ownership of the directory.
    pub fn open(dir: &Path) -> Result<Self, JournalError> {
        Self::open_with(dir, WalOptions::default())
    }

    /// `open` with other checkpoint options (`checkpoint_interval`); a
    /// checkpoint always bundles runs, and an unfinished-index entry put and
    /// removed between two checkpoints never reaches the store
    /// (`compaction.rs`).
    pub fn open_with(dir: &Path, options: WalOptions) -> Result<Self, JournalError> {
        let store = SledStore::open(dir)?;
        let options = WalOptions {
            compact: compaction::bundle_runs,
            put_only_over_absent: compaction::unfinished_entry,
            ..options
        };
        KvJournal::new(WalStore::open_with(&dir.join("wal"), store, options)?)
    }
}

/// sled plus the file handles needed to make its writes durable.
pub struct SledStore {
    db: sled::Db,
    /// sled's data file, fdatasync'ed after every flush.
    db_file: File,
    /// Where sled puts values too large for a segment.
    blob_dir: PathBuf,
    /// Blob files already synced.
    synced_blobs: Mutex<HashSet<std::ffi::OsString>>,
    /// Held for the life of the store: the exclusive lock on `DATA_DIR/LOCK`.
    _lock: File,
}

fn open_error(dir: &Path, why: impl std::fmt::Display) -> JournalError {
    JournalError::Open {
        dir: dir.to_path_buf(),
        why: why.to_string(),
    }
}

fn io_error(what: &str, e: impl std::fmt::Display) -> JournalError {
    JournalError::Io(format!("{what}: {e}"))
}

impl SledStore {
    /// Locks `dir` and opens sled in `dir/journal`.
    pub fn open(dir: &Path) -> Result<Self, JournalError> {
        fs::create_dir_all(dir).map_err(|e| open_error(dir, e))?;
        let lock = lock_dir(dir)?;
        let path = dir.join("journal");
        let config = sled::Config::new()
            .path(&path)
            .cache_capacity(SLED_CACHE_BYTES)
            .segment_size(SLED_SEGMENT_BYTES)
            .flush_every_ms(None);
        // With `DATA_DIR/LOCK` held, sled's own lock on its file can only be
        // held by this process's previous store of the same directory, whose
        // last handles sled's IO threads drop a moment after the store itself
        // (seen when a directory is closed and opened again at once).
        let released_by = Instant::now() + SLED_LOCK_PATIENCE;
        let db = loop {
            match config.open() {
                Err(sled::Error::Io(e))
                    // sled 0.34 says so only in the message (`config.rs`).
                    if e.to_string().starts_with("could not acquire lock")
                        && Instant::now() < released_by =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => break other.map_err(|e| open_error(dir, format!("sled: {e}")))?,
            }
        };
        let db_file = File::open(path.join("db")).map_err(|e| open_error(dir, e))?;
        let blob_dir = path.join("blobs");
        let synced_blobs = fs::read_dir(&blob_dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok().map(|e| e.file_name()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            db,
            db_file,
            blob_dir,
            synced_blobs: Mutex::new(synced_blobs),
            _lock: lock,
        })
    }

    /// fsyncs blob files that appeared since the last sync, and their directory.
    fn sync_new_blobs(&self) -> Result<(), JournalError> {
        let Ok(entries) = fs::read_dir(&self.blob_dir) else {
            return Ok(()); // no blob directory yet: no blobs
        };
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|p| p.into_inner());
        let mut any = false;
        for entry in entries {
            let entry = entry.map_err(|e| io_error("listing sled blobs", e))?;
            if synced.insert(entry.file_name()) {
                File::open(entry.path())
                    .and_then(|f| f.sync_all())
                    .map_err(|e| io_error("syncing a sled blob", e))?;
                any = true;
            }
        }
        if any {
            File::open(&self.blob_dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error("syncing the sled blob directory", e))?;
        }
        Ok(())
    }
}

/// Takes the exclusive lock on `dir/LOCK`, recording our pid in it.
fn lock_dir(dir: &Path) -> Result<File, JournalError> {
    let path = dir.join("LOCK");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| open_error(dir, format!("{}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "pid unknown".to_string(),
                pid => format!("pid {pid}"),
            };
            return Err(JournalError::Locked {
                dir: dir.to_path_buf(),
                holder,
            });
        }
        Err(TryLockError::Error(e)) => {
            return Err(open_error(dir, format!("locking {}: {e}", path.display())));
        }
    }
    let record_pid = |f: &mut File| -> std::io::Result<()> {
        f.set_len(0)?;
        f.rewind()?;
        writeln!(f, "{}", std::process::id())
    };
    record_pid(&mut file).map_err(|e| open_error(dir, format!("{}: {e}", path.display())))?;
    Ok(file)
}

fn sled_error(e: sled::Error) -> JournalError {
    match e {
        sled::Error::Corruption { at, .. } => JournalError::Corrupt {
            key: format!("sled storage at {at:?}"),
            why: "sled reports corruption".into(),
        },
        other => JournalError::Io(format!("sled: {other}")),
    }
}

fn entry(kv: sled::Result<(sled::IVec, sled::IVec)>) -> Result<Entry, JournalError> {
    kv.map(|(k, v)| (k.to_vec(), v.to_vec()))
        .map_err(sled_error)
}

impl KvStore for SledStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, JournalError> {
        self.db
            .get(key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(sled_error)
    }

    fn scan(&self, prefix: &[u8]) -> Result<Vec<Entry>, JournalError> {
        self.db.scan_prefix(prefix).map(entry).collect()
    }

    fn scan_rev(
        &self,
        prefix: &[u8],
        before: Option<&[u8]>,
        visit: &mut Visit<'_>,
    ) -> Result<(), JournalError> {
        let end = codec::prefix_end(prefix);
        let upper = before.unwrap_or(&end);
        for kv in self.db.range(prefix..upper).rev() {
            let (k, v) = entry(kv)?;
            if !visit(&k, &v)? {
                break;
            }
        }
        Ok(())
    }

    fn scan_from(
        &self,
        prefix: &[u8],
        from: &[u8],
        visit: &mut Visit<'_>,
    ) -> Result<(), JournalError> {
        let end = codec::prefix_end(prefix);
        if from >= end.as_slice() {
            return Ok(()); // past the prefix: nothing (and an empty range, not a panic)
        }
        for kv in self.db.range(from.max(prefix)..end.as_slice()) {
            let (k, v) = entry(kv)?;
            if !visit(&k, &v)? {
                break;
            }
        }
        Ok(())
    }

    fn write(&self, batch: Vec<KeyWrite>) -> Result<(), JournalError> {
        let mut sled_batch = sled::Batch::default();
        for (key, value) in batch {
            match value {
                Some(v) => sled_batch.insert(key, v),
                None => sled_batch.remove(key),
            }
        }
        self.db.apply_batch(sled_batch).map_err(sled_error)
    }

    /// Plain inserts: sled's `apply_batch` rolls its IO buffer before and after
    /// every batch (sled 0.34 `pin_log`), which put a buffer write on sled's IO
    /// threads for every journal batch. sled's log keeps the order of writes and
    /// recovers a prefix of them, which is all `write_ordered` promises.
    fn write_ordered(
        &self,
        batch: &mut dyn Iterator<Item = KeyWriteRef<'_>>,
    ) -> Result<(), JournalError> {
        for (key, value) in batch {
            match value {
                Some(v) => self.db.insert(key, v).map(drop),
                None => self.db.remove(key).map(drop),
            }
            .map_err(sled_error)?;
        }
        release_retired_buffers();
        Ok(())
    }

    fn sync(&self) -> Result<(), JournalError> {
        self.db.flush().map_err(sled_error)?;
        release_retired_buffers();
        self.sync_new_blobs()?;
        self.db_file
            .sync_data()
            .map_err(|e| io_error("fdatasync of the sled db file", e))
    }
}

/// Frees what sled retired on this thread.
///
/// sled 0.34 drops a written IO buffer (a whole segment, 8 MiB here) through
/// crossbeam-epoch's deferred destruction, which keeps up to 64 deferred items
/// in a thread-local bag before it even hands them to the collector. On a
/// thread that retires a buffer every few thousand events, that bag held
/// dozens of segments: the coordinator's memory grew with every saga journaled
/// (measured: 480 MB after 85,000 sagas, of which 370 MB retired buffers).
/// Flushing the bag after each write hands them over at once (a no-op when the
/// bag is empty).
fn release_retired_buffers() {
    crossbeam_epoch::pin().flush();
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::journal::{Journal, conformance};

    fn temp_journal() -> (Arc<dyn Journal>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let journal = SledJournal::open(dir.path()).unwrap();
        (Arc::new(journal), dir)
    }

    crate::journal_conformance!(temp_journal());

    /// The same contract with checkpoints running all the time: reads merge the
    /// log's in-memory layer with sled while batches move from one to the other.
    mod checkpointing {
        use std::{sync::Arc, time::Duration};

        use crate::journal::{Journal, SledJournal, wal::WalOptions};

        fn temp_journal() -> (Arc<dyn Journal>, tempfile::TempDir) {
            let dir = tempfile::tempdir().unwrap();
            let options = WalOptions {
                checkpoint_interval: Duration::from_millis(1),
                ..WalOptions::default()
            };
            let journal = SledJournal::open_with(dir.path(), options).unwrap();
            (Arc::new(journal), dir)
        }

        crate::journal_conformance!(temp_journal());

        /// A removal reads the index entries it edits; a checkpoint bundles
        /// entries of several sagas into one. An edit worked out from entries
        /// the checkpoint bundled meanwhile would drop the other sagas' pointers
        /// with the bundle (seen once: a whole journal's index gone).
        #[tokio::test]
        async fn removals_racing_checkpoints_leave_other_sagas_indexed() {
            use crate::journal::conformance::{attempt, completing, next, started};

            let (journal, _dir) = temp_journal();
            let mut kept = Vec::new();
            for round in 0..100 {
                // Interleaved offsets, so bundles mix the two sagas.
                let gone = completing(None, 1_000);
                let stay = started("shop", None);
                let id = stay.saga;
                journal.append(vec![gone[0].clone()]).await.unwrap();
                kept.extend(journal.append(vec![stay]).await.unwrap());
                journal.append(gone[1..].to_vec()).await.unwrap();
                kept.extend(journal.append(vec![next(id, 2, attempt(1))]).await.unwrap());
                journal.remove_sagas(vec![gone[0].saga]).await.unwrap();
                let read = journal.read_after(0, 10_000).await;
                assert_eq!(read.as_ref().ok(), Some(&kept), "round {round}: {read:?}");
            }
        }
    }

    #[tokio::test]
    async fn acknowledged_appends_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let first = conformance::started("shop", Some("k1"));
        let id = first.saga;
        {
            let journal = SledJournal::open(dir.path()).unwrap();
            journal.append(vec![first.clone()]).await.unwrap();
            journal.close().await.unwrap();
        }
        let journal = SledJournal::open(dir.path()).unwrap();
        let events = journal.read_saga(id).await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, first.kind);
        assert_eq!(journal.unfinished().await.unwrap(), vec![id]);
        assert_eq!(journal.saga_for_key("k1").await.unwrap(), Some(id));
        // Offsets continue after a reopen instead of starting over.
        let more = journal
            .append(vec![conformance::started("shop", None)])
            .await
            .unwrap();
        assert_eq!(more[0].offset, events[0].offset + 1);
    }

    /// Sagas appended a run at a time, interleaved, all within one checkpoint:
    /// the checkpoint bundles each saga's runs, and every read finds them.
    #[tokio::test]
    async fn bundled_runs_read_back_by_saga_by_offset_and_after_removal() {
        let dir = tempfile::tempdir().unwrap();
        let sagas: Vec<Vec<crate::saga::Event>> = (0..5)
            .map(|i| conformance::completing(None, i * 100))
            .collect();
        let mut appended = Vec::new();
        {
            let journal = SledJournal::open(dir.path()).unwrap();
            // One event per append, sagas interleaved: 4 runs per saga.
            for seq in 0..4 {
                for saga in &sagas {
                    appended.extend(journal.append(vec![saga[seq].clone()]).await.unwrap());
                }
            }
            journal.close().await.unwrap();
        } // dropped: the last checkpoint bundles
        let journal = SledJournal::open(dir.path()).unwrap();
        let sled = journal.store().inner();
        assert_eq!(
            sled.scan(&[codec::EVENT]).unwrap().len(),
            5,
            "one record per saga"
        );
        assert_eq!(
            sled.scan(&[codec::OFFSET]).unwrap().len(),
            1,
            "one index entry"
        );

        for saga in &sagas {
            let read = journal.read_saga(saga[0].saga).await.unwrap();
            let kinds: Vec<_> = read.iter().map(|e| &e.kind).collect();
            assert_eq!(kinds, saga.iter().map(|e| &e.kind).collect::<Vec<_>>());
        }
        for after in [0, 1, 7, 19] {
            let read = journal.read_after(after, 100).await.unwrap();
            let offsets: Vec<u64> = read.iter().map(|e| e.offset).collect();
            assert_eq!(
                offsets,
                ((after + 1)..=20).collect::<Vec<_>>(),
                "after {after}"
            );
            assert_eq!(read[0], appended[after as usize]);
        }
        let report = crate::journal::check::check(journal.store()).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!((report.sagas, report.events), (5, 20));

        // Retention removes bundled sagas whole, their pointers taken out of
        // the index bundle (the first one too: the bundle keeps its key).
        let gone = [sagas[0][0].saga, sagas[3][0].saga];
        for id in gone {
            assert_eq!(journal.remove_sagas(vec![id]).await.unwrap(), vec![id]);
            assert!(journal.read_saga(id).await.unwrap().is_empty());
        }
        async fn verify(journal: &SledJournal, gone: &[crate::saga::SagaId]) {
            let read = journal.read_after(0, 100).await.unwrap();
            assert_eq!(read.len(), 12);
            assert!(read.iter().all(|e| !gone.contains(&e.saga)));
            for after in [0, 1, 2, 5, 9] {
                let from = journal.read_after(after, 100).await.unwrap();
                assert!(from.iter().all(|e| e.offset > after));
                assert_eq!(from.len(), read.iter().filter(|e| e.offset > after).count());
            }
            let report = crate::journal::check::check(journal.store()).unwrap();
            assert!(report.problems.is_empty(), "{:?}", report.problems);
        }
        verify(&journal, &gone).await;
        journal.close().await.unwrap();
        drop(journal); // the rewritten bundle reaches sled
        let journal = SledJournal::open(dir.path()).unwrap();
        let entries = journal.store().inner().scan(&[codec::OFFSET]).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].0, codec::offset_key(1), "under its old key");
        verify(&journal, &gone).await;
    }

    #[tokio::test]
    async fn a_directory_closed_and_opened_again_at_once_opens() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..20 {
            let journal =
                SledJournal::open(dir.path()).unwrap_or_else(|e| panic!("round {round}: {e}"));
            let first = conformance::started("shop", None);
            journal.append(vec![first]).await.unwrap();
            journal.close().await.unwrap();
        }
        let journal = SledJournal::open(dir.path()).unwrap();
        assert_eq!(journal.unfinished().await.unwrap().len(), 20);
    }

    #[tokio::test]
    async fn a_second_owner_is_refused_with_the_directory_named() {
        let dir = tempfile::tempdir().unwrap();
        let _first = SledJournal::open(dir.path()).unwrap();
        let err = SledJournal::open(dir.path())
            .err()
            .expect("second open must fail");
        let message = err.to_string();
        assert!(matches!(err, JournalError::Locked { .. }), "{message}");
        assert!(
            message.contains(&dir.path().display().to_string()),
            "{message}"
        );
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
    }

    #[tokio::test]
    async fn large_values_are_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = conformance::started("shop", None);
        if let crate::saga::EventKind::SagaStarted { payload, .. } = &mut first.kind {
            *payload = vec![7u8; 1024 * 1024];
        }
        let id = first.saga;
        {
            let journal = SledJournal::open(dir.path()).unwrap();
            journal.append(vec![first.clone()]).await.unwrap();
            journal.close().await.unwrap();
        }
        let journal = SledJournal::open(dir.path()).unwrap();
        assert_eq!(journal.read_saga(id).await.unwrap()[0].kind, first.kind);
    }
}
