//! The sled journal, the embedded durable default: the saga schema over a
//! write-ahead log in front of sled (`KvJournal<WalStore<SledStore>>`).
//!
//! Guarantees beyond the [`Journal`] contract:
//! - **One owner.** The store locks `DATA_DIR/LOCK` before anything else; a
//!   second process is refused, naming the directory and the pid holding it.
//! - **The log first.** Each batch is durable in the log before it is applied
//!   to sled, and sled is made durable only at the log's checkpoints
//!   (`store/wal/`). The log detects damage that sled would silently recover
//!   from (a truncated or flipped file makes sled 0.34 open with its last good
//!   prefix), and replays what sled lacks.
//! - **Checkpoints compact.** A checkpoint bundles each saga's runs, and an
//!   unfinished-index entry put and removed between two checkpoints never
//!   reaches sled (`kv/compaction.rs`).
//! - **Read-only beside it.** [`SledJournal::open_read_only`] reads a stopped
//!   server's directory without changing a byte of it (`sagad journal check`,
//!   `sagad export`); see [`ReadOnlyJournal`].

use std::{path::Path, sync::Arc};

use super::{
    Journal, JournalError,
    history::{HISTORY_DIR, SharedTier, Tier},
    kv::{KvJournal, compaction},
    store::{
        CopyReport, SledFinding, SledStore, StoreError, WalOptions, WalStore,
        wal::{self, ReadOnlyLog, TornTail},
    },
};

/// The sled-backed journal: a write-ahead log in front of sled.
pub type SledJournal = KvJournal<WalStore<SledStore>>;

impl SledJournal {
    /// Opens (or creates) the journal in `dir`, taking ownership of the directory.
    pub fn open(dir: &Path) -> Result<Self, JournalError> {
        Self::open_with(dir, WalOptions::default())
    }

    /// `open` with other checkpoint options (`checkpoint_interval`); a
    /// checkpoint always bundles runs, and an unfinished-index entry put and
    /// removed between two checkpoints never reaches the store
    /// (`compaction.rs`).
    ///
    /// A damaged store is refused with [`StoreError::Damaged`], which names
    /// the file and says whether the log can rebuild it.
    pub fn open_with(dir: &Path, options: WalOptions) -> Result<Self, JournalError> {
        let store = SledStore::open(dir).map_err(|e| {
            // Worked out only when the store is damaged: it reads the whole log.
            JournalError::Open(e.with_rebuild(|| wal::rebuild(&dir.join("wal"))))
        })?;
        Self::over(dir, store, options)
    }

    /// The journal of `dir` over its sled store, already open (and so its
    /// directory locked): what [`SledJournal::open_with`] does once sled is
    /// open, for a caller that wrote to the store first (a salvage).
    pub fn over(dir: &Path, store: SledStore, options: WalOptions) -> Result<Self, JournalError> {
        let log = dir.join("wal");
        let rebuild = |e: StoreError| e.with_rebuild(|| wal::rebuild(&log));
        let options = WalOptions {
            compact: compaction::bundle_runs,
            put_only_over_absent: compaction::unfinished_entry,
            ..options
        };
        let store = WalStore::open_with(&log, store.reserving(options.disk_reserve), options)
            .map_err(|e| JournalError::Open(rebuild(e)))?;
        let tier = Tier::open(&dir.join(HISTORY_DIR))?;
        KvJournal::with_history(store, Some(Arc::new(SharedTier::new(tier)))).map_err(|e| match e {
            JournalError::Open(e) => JournalError::Open(rebuild(e)),
            JournalError::Read(e) => JournalError::Read(rebuild(e)),
            other => other,
        })
    }

    /// Opens the journal of a stopped server's directory `dir` to read it,
    /// changing nothing there: refused while a server holds the directory
    /// ([`StoreError::Locked`]); sled's files are copied to a temporary
    /// directory (under `TMPDIR`: it needs as much free space as
    /// `dir/journal` takes) and sled is opened on the copy; the log is read and
    /// verified in place, and what sled lacks is laid over it in memory. The
    /// directory's lock is held, shared, until the log is read, so a server
    /// starting meanwhile is refused rather than change the files half-way.
    ///
    /// Damage found in sled's files is stepped around in the copy, so that
    /// what is still readable reads, and reported
    /// ([`ReadOnlyJournal::sled_findings`]); a read that reaches what cannot
    /// be read fails with [`StoreError::Damaged`].
    pub fn open_read_only(dir: &Path) -> Result<ReadOnlyJournal, JournalError> {
        let lock = SledStore::read_lock(dir)?;
        let scratch = scratch_dir("sagad-read-only-")?;
        let (sled, copied) = SledStore::open_copy(dir, scratch.path())?;
        let log = ReadOnlyLog::open(&dir.join("wal"), sled)?;
        let tier = Tier::open_read_only(&dir.join(HISTORY_DIR))?;
        drop(lock);
        Ok(ReadOnlyJournal {
            journal: KvJournal::with_history(log, Some(Arc::new(SharedTier::new(tier))))?,
            copied,
            scratch,
        })
    }
}

/// A temporary directory for a copy of sled's files, under `TMPDIR`.
pub(super) fn scratch_dir(prefix: &str) -> Result<tempfile::TempDir, StoreError> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| {
            StoreError::io(
                format!(
                    "creating a temporary directory in {}",
                    std::env::temp_dir().display()
                ),
                e,
            )
        })
}

/// A stopped server's journal opened by [`SledJournal::open_read_only`]: it
/// reads as the server would find it at its next start, and its directory is
/// left exactly as it was (every file there is opened read-only).
///
/// - A torn tail of the log, which that start would cut off, is kept and
///   reported ([`ReadOnlyJournal::torn_tail`]).
/// - Writes through it (an upgrade of an older journal's indexes at open)
///   land in memory, never on a disk: only read through it.
/// - [`ReadOnlyJournal::close`] removes the copy of sled's files once sled
///   has let go of them (dropping it removes them too).
pub struct ReadOnlyJournal {
    // Declared before `scratch`: sled closes before its files are removed.
    journal: KvJournal<ReadOnlyLog<SledStore>>,
    /// What was copied to `scratch`, and found damaged.
    copied: CopyReport,
    /// The temporary directory holding the copy of sled's files.
    scratch: tempfile::TempDir,
}

impl ReadOnlyJournal {
    /// The journal, for reads.
    pub fn journal(&self) -> &KvJournal<ReadOnlyLog<SledStore>> {
        &self.journal
    }

    /// The store under the journal (for `journal check`).
    pub fn store(&self) -> &ReadOnlyLog<SledStore> {
        self.journal.store()
    }

    /// Where the log ends in a torn write, if it does: the server's next
    /// start cuts it off there.
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.store().torn_tail()
    }

    /// How many bytes of sled's files were copied to the temporary directory.
    pub fn copied_bytes(&self) -> u64 {
        self.copied.bytes
    }

    /// What was found damaged in sled's files (and stepped around in the
    /// copy): each a finding of `journal check`.
    pub fn sled_findings(&self) -> &[SledFinding] {
        &self.copied.findings
    }

    /// Stops the journal and removes the copy of sled's files.
    pub async fn close(self) -> Result<(), JournalError> {
        let Self {
            journal, scratch, ..
        } = self;
        let closed = journal.close().await;
        drop(journal);
        let path = scratch.path().to_path_buf();
        scratch.close().map_err(|e| {
            StoreError::io(
                format!("removing the copy of sled's files in {}", path.display()),
                e,
            )
        })?;
        closed
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::journal::{Journal, StoreError, kv::codec, store::KvStore};
    use crate::saga::Offset;
    use crate::testing;

    fn temp_journal() -> (Arc<dyn Journal>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let journal = SledJournal::open(dir.path()).unwrap();
        (Arc::new(journal), dir)
    }

    crate::journal_conformance!(temp_journal());

    /// The suite over a store that sled rewrites into a fresh one over and
    /// over, a few keys per checkpoint (`store/sled/renew.rs`).
    mod renewing {
        use std::{sync::Arc, time::Duration};

        use super::super::*;
        use crate::journal::Journal;

        fn temp_journal() -> (Arc<dyn Journal>, tempfile::TempDir) {
            let dir = tempfile::tempdir().unwrap();
            let store = SledStore::open(dir.path()).unwrap().renewing(1, 40);
            let options = WalOptions {
                checkpoint_interval: Duration::from_millis(1),
                ..WalOptions::default()
            };
            let journal = SledJournal::over(dir.path(), store, options).unwrap();
            (Arc::new(journal), dir)
        }

        crate::journal_conformance!(temp_journal());
    }

    /// Final sagas moved to the history tier read as before: whole, in
    /// listings, in the feed (offsets keep their meaning, the archive
    /// horizon does not move), by idempotency key, after a reopen too.
    mod history {
        use std::sync::Arc;

        use crate::{
            journal::{
                Journal, JournalError, ListQuery, SledJournal, check,
                history::{FinishedSaga, HISTORY_DIR},
                kv::codec,
                store::KvStore,
            },
            saga::{EventKind, Offset, SagaId, SagaStatus, Timestamp},
            testing::{attempt, completing, next, started, turning_back},
        };

        /// Far enough ahead that every final saga ended before it.
        const LATER: Timestamp = Timestamp(u64::MAX);

        /// Two final sagas (one with a key) and a running one, their events
        /// interleaved in the feed.
        async fn three(journal: &SledJournal) -> (Vec<SagaId>, SagaId) {
            let done = completing(Some("order-1"), 1_000);
            let undone = turning_back(EventKind::SagaCompensated, 2_000);
            let running = started("shop", Some("order-2"));
            journal.append(vec![done[0].clone()]).await.unwrap();
            journal.append(vec![running.clone()]).await.unwrap();
            journal.append(done[1..].to_vec()).await.unwrap();
            journal.append(undone.clone()).await.unwrap();
            journal
                .append(vec![next(running.saga, 2, attempt(1))])
                .await
                .unwrap();
            (vec![done[0].saga, undone[0].saga], running.saga)
        }

        /// Everything a reader can ask about `ids`, to compare before and after.
        async fn seen(
            journal: &dyn Journal,
            ids: &[SagaId],
        ) -> impl PartialEq + std::fmt::Debug + use<> {
            let mut sagas = Vec::new();
            for &id in ids {
                sagas.push(journal.read_saga(id).await.unwrap());
            }
            let page = |status| ListQuery {
                status,
                definition: None,
                before: None,
                limit: 10,
            };
            (
                sagas,
                journal.list(&page(None)).await.unwrap(),
                journal
                    .list(&page(Some(SagaStatus::Completed)))
                    .await
                    .unwrap(),
                journal
                    .list(&page(Some(SagaStatus::Running)))
                    .await
                    .unwrap(),
                journal.read_after(Offset(0), 100).await.unwrap(),
                journal.read_after(Offset(2), 3).await.unwrap(),
                journal.saga_for_key("order-1").await.unwrap(),
                journal.saga_for_key("order-2").await.unwrap(),
                journal.archived_through().await.unwrap(),
            )
        }

        fn in_store(journal: &SledJournal, id: SagaId) -> bool {
            journal
                .store()
                .get(&codec::saga_key(codec::SUMMARY, id))
                .unwrap()
                .is_some()
        }

        #[tokio::test]
        async fn moved_sagas_read_as_before_and_leave_the_store() {
            let dir = tempfile::tempdir().unwrap();
            let journal = SledJournal::open(dir.path()).unwrap();
            let (finals, running) = three(&journal).await;
            let all = [finals.clone(), vec![running]].concat();
            let before = seen(&journal, &all).await;

            let moved = journal.move_to_history(LATER, 1, 100).await.unwrap();
            assert_eq!(moved.sagas, 2, "the two final sagas, not the running one");
            assert!(moved.bytes > 0);
            assert!(finals.iter().all(|&id| !in_store(&journal, id)));
            assert!(in_store(&journal, running));
            assert_eq!(seen(&journal, &all).await, before);
            assert_eq!(journal.archived_through().await.unwrap(), Offset::ZERO);
            // Nothing is left to move.
            assert_eq!(
                journal.move_to_history(LATER, 1, 100).await.unwrap().sagas,
                0
            );

            journal.close().await.unwrap();
            drop(journal);
            let journal = SledJournal::open(dir.path()).unwrap();
            assert_eq!(seen(&journal, &all).await, before, "after a reopen");
            // Offsets go on after the last one handed out.
            let more = journal.append(vec![started("shop", None)]).await.unwrap();
            assert_eq!(more[0].offset, Offset(11));
            journal.close().await.unwrap();
        }

        /// The store's index and the tier's segments together hold every
        /// offset: a segment lost (deleted by hand, say) is a check's
        /// problem, which neither the store nor the remaining tier shows.
        #[tokio::test]
        async fn a_check_holds_the_index_and_the_segments_together() {
            let dir = tempfile::tempdir().unwrap();
            let journal = SledJournal::open(dir.path()).unwrap();
            three(&journal).await;
            journal.move_to_history(LATER, 1, 100).await.unwrap();
            let whole = |journal: &SledJournal| {
                check::check_with_history(journal.store(), journal.history().unwrap()).unwrap()
            };
            let report = whole(&journal);
            assert!(report.is_clean(), "{report}");
            assert_eq!((report.history_sagas, report.history_segments), (2, 1));
            journal.close().await.unwrap();
            drop(journal);

            for entry in std::fs::read_dir(dir.path().join(HISTORY_DIR)).unwrap() {
                std::fs::remove_file(entry.unwrap().path()).unwrap();
            }
            let journal = SledJournal::open(dir.path()).unwrap();
            assert!(check::check(journal.store()).unwrap().is_clean());
            let report = whole(&journal);
            assert!(
                report.problems.iter().any(|p| p.contains("offsets 1..=")
                    && p.contains("neither in the offset index nor in a segment")),
                "{report}"
            );
            journal.close().await.unwrap();
        }

        #[tokio::test]
        async fn a_moved_sagas_idempotency_key_stays_taken() {
            let dir = tempfile::tempdir().unwrap();
            let journal = SledJournal::open(dir.path()).unwrap();
            let (finals, _) = three(&journal).await;
            journal.move_to_history(LATER, 1, 100).await.unwrap();
            let again = started("shop", Some("order-1"));
            let refused = journal.append(vec![again.clone()]).await.unwrap_err();
            assert!(
                matches!(
                    &refused,
                    JournalError::IdempotencyConflict { key, existing }
                        if key == "order-1" && *existing == finals[0]
                ),
                "{refused}"
            );
            assert!(journal.read_saga(again.saga).await.unwrap().is_empty());
            journal.close().await.unwrap();
        }

        /// Only sagas that ended before the cutoff move, at most `limit` a
        /// move, oldest first.
        #[tokio::test]
        async fn a_move_takes_what_ended_before_its_cutoff_up_to_its_limit() {
            let dir = tempfile::tempdir().unwrap();
            let journal = SledJournal::open(dir.path()).unwrap();
            let (finals, _) = three(&journal).await;
            // `completing` ended at 1 003, `turning_back` at 2 003.
            assert_eq!(
                journal
                    .move_to_history(Timestamp(1_000), 1, 100)
                    .await
                    .unwrap()
                    .sagas,
                0
            );
            // Two are due: fewer than a move asks for.
            assert_eq!(
                journal.move_to_history(LATER, 3, 100).await.unwrap().sagas,
                0
            );
            assert!(in_store(&journal, finals[0]));
            let tier = |journal: &SledJournal| {
                let local = journal.stats().local.expect("sled has a tier");
                (local.history_sagas, local.history_segments)
            };
            assert_eq!(tier(&journal), (0, 0));
            assert_eq!(journal.move_to_history(LATER, 1, 1).await.unwrap().sagas, 1);
            assert!(!in_store(&journal, finals[0]));
            assert!(in_store(&journal, finals[1]));
            assert_eq!(journal.move_to_history(LATER, 1, 1).await.unwrap().sagas, 1);
            assert!(!in_store(&journal, finals[1]));
            assert_eq!(tier(&journal), (2, 2), "what the metrics show");
            journal.close().await.unwrap();
        }

        /// A move cut short after its segment was written leaves the sagas in
        /// the store and in the tier: reads take each saga, each offset, once,
        /// and the next move removes them from the store.
        #[tokio::test]
        async fn a_move_cut_short_leaves_two_copies_that_read_as_one() {
            let dir = tempfile::tempdir().unwrap();
            let journal = SledJournal::open(dir.path()).unwrap();
            let (finals, running) = three(&journal).await;
            let all = [finals.clone(), vec![running]].concat();
            let before = seen(&journal, &all).await;
            let mut copies = Vec::new();
            for &id in &finals {
                let events = journal.read_saga(id).await.unwrap();
                let EventKind::SagaStarted {
                    idempotency_key, ..
                } = &events[0].kind
                else {
                    unreachable!("a saga begins with SagaStarted")
                };
                let summary = journal
                    .list(&ListQuery {
                        limit: 10,
                        ..ListQuery::default()
                    })
                    .await
                    .unwrap()
                    .into_iter()
                    .find(|s| s.id == id)
                    .unwrap();
                copies.push(FinishedSaga {
                    summary,
                    idempotency_key: idempotency_key.clone(),
                    events,
                });
            }
            journal.history().unwrap().add(copies).unwrap();
            assert!(finals.iter().all(|&id| in_store(&journal, id)));
            assert_eq!(seen(&journal, &all).await, before, "two copies read as one");

            assert_eq!(
                journal.move_to_history(LATER, 1, 100).await.unwrap().sagas,
                2
            );
            assert!(finals.iter().all(|&id| !in_store(&journal, id)));
            assert_eq!(seen(&journal, &all).await, before);
            journal.close().await.unwrap();
        }

        /// A data directory written before the tier existed (no `history/`,
        /// no `m moved_through`) opens as it is, and its finished sagas
        /// move at the first move like any.
        #[tokio::test]
        async fn a_journal_from_before_the_tier_opens_and_its_finished_sagas_move() {
            let dir = tempfile::tempdir().unwrap();
            let journal = SledJournal::open(dir.path()).unwrap();
            let (finals, running) = three(&journal).await;
            let all = [finals.clone(), vec![running]].concat();
            let before = seen(&journal, &all).await;
            journal.close().await.unwrap();
            drop(journal);
            // What an earlier build leaves: the same files, no tier.
            std::fs::remove_dir(dir.path().join("history")).unwrap();
            let journal = SledJournal::open(dir.path()).unwrap();
            assert_eq!(seen(&journal, &all).await, before);
            assert_eq!(
                journal.move_to_history(LATER, 1, 100).await.unwrap().sagas,
                2
            );
            assert_eq!(seen(&journal, &all).await, before);
            journal.close().await.unwrap();
        }

        /// Readers running while sagas move never see a saga vanish, a
        /// history cut short, or a hole in the feed.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn reads_during_moves_find_every_saga_whole() {
            let dir = tempfile::tempdir().unwrap();
            let journal = Arc::new(SledJournal::open(dir.path()).unwrap());
            let mut sagas = Vec::new();
            for i in 0..200u64 {
                let events = completing(Some(&format!("k{i}")), 1_000 + i * 10);
                sagas.push(journal.append(events).await.unwrap());
            }
            let offsets = sagas.iter().flatten().count();
            let reading = tokio::spawn({
                let journal = journal.clone();
                let sagas = sagas.clone();
                async move {
                    let mut rounds = 0;
                    loop {
                        for (i, saga) in sagas.iter().enumerate() {
                            let id = saga[0].saga;
                            assert_eq!(&journal.read_saga(id).await.unwrap(), saga);
                            let key = format!("k{i}");
                            assert_eq!(journal.saga_for_key(&key).await.unwrap(), Some(id));
                        }
                        let feed = journal.read_after(Offset(0), usize::MAX).await.unwrap();
                        assert_eq!(feed.len(), offsets, "every offset, once");
                        assert!(
                            feed.windows(2)
                                .all(|w| w[1].offset.get() == w[0].offset.get() + 1)
                        );
                        rounds += 1;
                        let stored = journal
                            .store()
                            .get(&codec::saga_key(codec::SUMMARY, sagas[199][0].saga))
                            .unwrap();
                        if stored.is_none() && rounds > 1 {
                            return rounds;
                        }
                    }
                }
            });
            // Twenty moves of ten sagas each.
            let mut moved = 0;
            while moved < sagas.len() {
                moved += journal.move_to_history(LATER, 1, 10).await.unwrap().sagas;
            }
            assert!(reading.await.unwrap() > 1);
            assert_eq!(journal.history().unwrap().sagas(), 200);
            journal.close().await.unwrap();
        }
    }

    /// The same contract with checkpoints running all the time: reads merge the
    /// log's in-memory layer with sled while batches move from one to the other.
    mod checkpointing {
        use std::{sync::Arc, time::Duration};

        use crate::{
            journal::{Journal, SledJournal, store::WalOptions},
            saga::Offset,
        };

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
            use crate::testing::{attempt, completing, next, started};

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
                let read = journal.read_after(Offset(0), 10_000).await;
                assert_eq!(read.as_ref().ok(), Some(&kept), "round {round}: {read:?}");
            }
        }
    }

    #[tokio::test]
    async fn acknowledged_appends_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let first = testing::started("shop", Some("k1"));
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
            .append(vec![testing::started("shop", None)])
            .await
            .unwrap();
        assert_eq!(more[0].offset, events[0].offset + 1);
    }

    /// Sagas appended a run at a time, interleaved, all within one checkpoint:
    /// the checkpoint bundles each saga's runs, and every read finds them.
    #[tokio::test]
    async fn bundled_runs_read_back_by_saga_by_offset_and_after_removal() {
        let dir = tempfile::tempdir().unwrap();
        let sagas: Vec<Vec<crate::saga::Event>> =
            (0..5).map(|i| testing::completing(None, i * 100)).collect();
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
            let read = journal.read_after(Offset(after), 100).await.unwrap();
            let offsets: Vec<u64> = read.iter().map(|e| e.offset.get()).collect();
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
            let read = journal.read_after(Offset(0), 100).await.unwrap();
            assert_eq!(read.len(), 12);
            assert!(read.iter().all(|e| !gone.contains(&e.saga)));
            for after in [0, 1, 2, 5, 9] {
                let from = journal.read_after(Offset(after), 100).await.unwrap();
                assert!(from.iter().all(|e| e.offset > Offset(after)));
                let later = read.iter().filter(|e| e.offset > Offset(after));
                assert_eq!(from.len(), later.count());
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
            let first = testing::started("shop", None);
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
        assert!(
            matches!(err, JournalError::Open(StoreError::Locked { .. })),
            "{message}"
        );
        assert!(
            message.contains(&dir.path().display().to_string()),
            "{message}"
        );
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
    }

    /// Every file and directory under `dir`: its path, mode and bytes.
    fn tree(dir: &Path) -> Vec<(std::path::PathBuf, u32, Vec<u8>)> {
        use std::os::unix::fs::PermissionsExt;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            if path.is_dir() {
                found.push((path.clone(), mode, Vec::new()));
                found.extend(tree(&path));
            } else {
                let bytes = std::fs::read(&path).unwrap();
                found.push((path, mode, bytes));
            }
        }
        found.sort();
        found
    }

    /// A read-only open of what a killed server left (its last batches in
    /// the log only) reads what the next start would, and changes nothing.
    #[tokio::test]
    async fn a_read_only_open_reads_a_crashed_directory_as_a_start_would() {
        let dir = tempfile::tempdir().unwrap();
        let crashed = tempfile::tempdir().unwrap();
        let options = WalOptions {
            checkpoint_interval: std::time::Duration::from_secs(3600),
            zero_filled_segments: false,
            ..WalOptions::default()
        };
        let journal = SledJournal::open_with(dir.path(), options).unwrap();
        let mut appended = Vec::new();
        for i in 0..5 {
            for event in testing::completing(None, i * 100) {
                appended.extend(journal.append(vec![event]).await.unwrap());
            }
        }
        // No checkpoint since the open: sled's files are as the open left
        // them, and the copy is what a kill at this moment leaves.
        let copied = std::process::Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", dir.path().display()))
            .arg(crashed.path())
            .status()
            .unwrap();
        assert!(copied.success());
        journal.close().await.unwrap();
        drop(journal);

        let before = tree(crashed.path());
        let read = SledJournal::open_read_only(crashed.path()).unwrap();
        // One batch per append (and the open's own, marking the failed index built).
        assert!(
            read.store().replayed() >= appended.len(),
            "read from the log"
        );
        assert!(read.torn_tail().is_none());
        assert!(read.copied_bytes() > 0);
        let events = read.journal().read_after(Offset(0), 1_000).await.unwrap();
        assert_eq!(events, appended);
        let report = crate::journal::check::check(read.store()).unwrap();
        assert!(report.is_clean(), "{report}");
        assert_eq!((report.sagas, report.events), (5, 20));
        read.close().await.unwrap();
        assert_eq!(tree(crashed.path()), before, "nothing changed");

        // The start that follows finds the same.
        let journal = SledJournal::open(crashed.path()).unwrap();
        let events = journal.read_after(Offset(0), 1_000).await.unwrap();
        assert_eq!(events, appended);
    }

    #[tokio::test]
    async fn a_read_only_open_is_refused_while_the_directory_is_owned() {
        let dir = tempfile::tempdir().unwrap();
        let owner = SledJournal::open(dir.path()).unwrap();
        let err = SledJournal::open_read_only(dir.path())
            .err()
            .expect("refused beside an owner");
        assert!(
            matches!(err, JournalError::Open(StoreError::Locked { .. })),
            "{err}"
        );
        owner.close().await.unwrap();
        drop(owner);
        let read = SledJournal::open_read_only(dir.path()).unwrap();
        assert!(read.journal().unfinished().await.unwrap().is_empty());
        read.close().await.unwrap();
    }

    #[tokio::test]
    async fn large_values_are_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = testing::started("shop", None);
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
