//! The archiver: a background task that moves sagas which ended longer ago than
//! the retention period from the journal to the archive files.
//!
//! Each pass, every [`interval`] (a tenth of the retention, between 10 ms and a
//! minute), walks the journal's final sagas oldest first
//! ([`Journal::finished_before`]) in batches of [`ARCHIVE_BATCH_SAGAS`]:
//!
//! ```text
//!  hold the archiver duty? ─▶ read each saga's history ─▶ append to
//!    archive/<day>.jsonl.gz ─▶ fdatasync files + fsync dir
//!    ─▶ [crash point archive::after_flush] ─▶ remove_sagas
//! ```
//!
//! then the same for each segment of the history tier (`mover.rs`) whose
//! every saga ended before the cutoff, a whole segment at a time, ending in
//! [`Journal::retire_history`] instead of `remove_sagas`.
//!
//! Invariants:
//! - **One archiver per journal.** The archiver asks for the cluster-wide
//!   archiver duty ([`Journal::hold_duty`], [`Duty::ARCHIVER`]) every pass,
//!   work or not, and again before every batch; it archives only while it
//!   holds it. With sled the duty is always this process's. With several
//!   nodes on one PostgreSQL journal, every node given `--retention` asks,
//!   one holds it, and when the holder dies (or stops) another takes it
//!   within a lease and a pass and archives whatever is left. The archive
//!   files go to the data directory of the node that held the duty then.
//! - **Nothing is lost.** A saga leaves the journal only after its record is
//!   durable in an archive file; the journal removes only final sagas (COMPLETED
//!   or COMPENSATED), so a running or FAILED saga is never touched.
//! - **Archived twice at worst.** A crash between the archive flush and the
//!   removal leaves the saga in both places; the next pass archives it again
//!   (in a cluster, the next holder's, into its own data directory, so the
//!   two copies are then in two nodes' archives; so too if a holder stalled
//!   past its lease finishes a batch the next holder also took). Both lines
//!   are identical (a final saga's history never changes), and readers keep
//!   one line per saga id (`sagad export` does).
//! - **Sagas never wait for it.** It reads through the journal like any reader,
//!   and its removals are ordinary requests in the writer's queue, in chunks of
//!   [`REMOVE_CHUNK`] sagas; the search for old sagas and the file work run on
//!   blocking threads.
//! - **Cost of a pass.** The search reads the listing entries of the sagas
//!   created before the cutoff that are still in the journal (the ones kept on
//!   purpose: FAILED, still running, ended recently) plus one last event per
//!   final candidate, never the whole journal; see `journal/retention.rs`.
//! - **Retention is a lower bound.** A saga is archived no sooner than the
//!   retention period after its terminal event, and usually within one interval
//!   after that.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{ArchiveError, file::ArchiveWriter, record::ArchivedSaga};
use crate::{
    journal::{Duty, Journal},
    saga::{SagaId, Timestamp},
};

/// Sagas read and archived per batch.
pub const ARCHIVE_BATCH_SAGAS: usize = 256;
/// Sagas per removal request: the writer does a modest amount in one batch.
pub const REMOVE_CHUNK: usize = 64;
/// Shortest and longest pause between passes.
const INTERVAL_MIN: Duration = Duration::from_millis(10);
const INTERVAL_MAX: Duration = Duration::from_secs(60);

/// The pause between passes for a retention period.
pub fn interval(retention: Duration) -> Duration {
    (retention / 10).clamp(INTERVAL_MIN, INTERVAL_MAX)
}

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Sagas written to the archive and removed from the journal.
    pub archived: usize,
    /// Final sagas that could not be archived (an unreadable history); they
    /// stay in the journal and are tried again next pass.
    pub skipped: usize,
}

/// Moves old final sagas from a journal to an archive directory.
pub struct Archiver {
    journal: Arc<dyn Journal>,
    retention: Duration,
    /// The pause between passes, and so how soon the archiver asks again
    /// for its duty ([`Journal::hold_duty`]).
    every: Duration,
    /// `None` only while a blocking append holds it.
    writer: Option<ArchiveWriter>,
    /// Whether this node held the archiver duty at its last ask (`None`
    /// before the first), to log when it changes hands.
    held: Option<bool>,
}

impl Archiver {
    /// An archiver writing to `archive_dir` (`DATA_DIR/archive`).
    pub fn new(journal: Arc<dyn Journal>, archive_dir: PathBuf, retention: Duration) -> Self {
        Self {
            journal,
            retention,
            every: interval(retention),
            writer: Some(ArchiveWriter::new(archive_dir)),
            held: None,
        }
    }

    /// Runs passes every [`interval`] until `shutdown`; returns once the pass in
    /// progress (if any) finished its removals, so the journal can then close.
    pub fn spawn(self, shutdown: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(self.run(shutdown))
    }

    async fn run(mut self, shutdown: CancellationToken) {
        let every = self.every;
        tracing::info!(retention = ?self.retention, every = ?every, "archiver started");
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.cancelled() => return,
            }
            if self.journal.write_failure().is_some() {
                continue; // the journal refuses writes: nothing could be removed
            }
            // Asked every pass, with or without work, so the holder keeps
            // the duty and the others find it taken.
            match self.hold_duty().await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot ask for the archiver duty; trying again next pass");
                    continue;
                }
            }
            let cutoff = Timestamp::now().minus(self.retention);
            match self.pass(cutoff, &shutdown).await {
                Ok(report) if report.archived > 0 || report.skipped > 0 => {
                    tracing::info!(
                        archived = report.archived,
                        skipped = report.skipped,
                        "archived sagas that ended before the retention period"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "archiving failed; retrying next pass"),
            }
        }
    }

    /// Archives every final saga whose terminal event is older than `cutoff`,
    /// batch by batch, until none is left or `stop` is cancelled (between
    /// batches only: a batch written is always removed).
    pub async fn pass(
        &mut self,
        cutoff: Timestamp,
        stop: &CancellationToken,
    ) -> Result<PassReport, ArchiveError> {
        let mut report = PassReport::default();
        let mut after = None;
        while !stop.is_cancelled() {
            // Before each batch: a holder whose duty moved on stops here.
            if !self.hold_duty().await? {
                break;
            }
            let ids = self.finished_before(cutoff, after).await?;
            let Some(last) = ids.last() else { break };
            after = Some(*last);
            let (days, archived) = self.records(&ids, &mut report).await?;
            self.append(days).await?;
            crate::crash_point!("archive::after_flush");
            for chunk in archived.chunks(REMOVE_CHUNK) {
                report.archived += self.journal.remove_sagas(chunk.to_vec()).await?.len();
            }
            if ids.len() < ARCHIVE_BATCH_SAGAS {
                break;
            }
        }
        self.pass_history(cutoff, stop, &mut report).await?;
        Ok(report)
    }

    /// Archives the history segments whose every saga ended before
    /// `cutoff`, a whole segment at a time, and retires each once its
    /// sagas are durable in the archive files.
    async fn pass_history(
        &mut self,
        cutoff: Timestamp,
        stop: &CancellationToken,
        report: &mut PassReport,
    ) -> Result<(), ArchiveError> {
        for number in self.journal.history_ended_before(cutoff) {
            if stop.is_cancelled() || !self.hold_duty().await? {
                break;
            }
            let ids = self.journal.history_sagas(number).await?;
            let mut unarchived = 0;
            for batch in ids.chunks(ARCHIVE_BATCH_SAGAS) {
                let (days, archived) = self.records(batch, report).await?;
                unarchived += batch.len() - archived.len();
                self.append(days).await?;
            }
            crate::crash_point!("archive::after_flush");
            if unarchived > 0 {
                // Kept: retiring the segment would lose what did not fold.
                tracing::error!(
                    segment = number,
                    unarchived,
                    "a history segment keeps sagas that could not be archived; it stays until they can"
                );
                continue;
            }
            report.archived += self.journal.retire_history(number).await?;
        }
        Ok(())
    }

    /// Takes or renews the archiver duty, saying so when it changes hands.
    async fn hold_duty(&mut self) -> Result<bool, ArchiveError> {
        let held = self.journal.hold_duty(Duty::ARCHIVER, self.every).await?;
        match (self.held, held) {
            (None, false) => tracing::info!(
                "another node holds the archiver duty: this one archives once the duty falls to it"
            ),
            (Some(false), true) => {
                tracing::info!("took the archiver duty: this node archives from now on")
            }
            (Some(true), false) => {
                tracing::info!("another node took the archiver duty: this one stops archiving")
            }
            _ => {}
        }
        self.held = Some(held);
        Ok(held)
    }

    /// The next batch to archive. Looked up on a blocking thread: the scan
    /// passes over the old sagas the journal keeps (FAILED, running), which
    /// can be many, and the key-value journals read synchronously.
    async fn finished_before(
        &self,
        cutoff: Timestamp,
        after: Option<SagaId>,
    ) -> Result<Vec<SagaId>, ArchiveError> {
        let journal = self.journal.clone();
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            runtime.block_on(journal.finished_before(cutoff, after, ARCHIVE_BATCH_SAGAS))
        })
        .await
        .map_err(|_| ArchiveError::Stopped)?
        .map_err(ArchiveError::from)
    }

    /// The lines of these sagas by archive day, and the ids they cover.
    async fn records(
        &self,
        ids: &[SagaId],
        report: &mut PassReport,
    ) -> Result<(BTreeMap<String, Vec<Vec<u8>>>, Vec<SagaId>), ArchiveError> {
        let mut days: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
        let mut archived = Vec::with_capacity(ids.len());
        for &id in ids {
            let events = self.journal.read_saga(id).await?;
            let record = match ArchivedSaga::from_events(&events) {
                Ok(record) if record.is_final() => record,
                Ok(record) => {
                    tracing::error!(saga = %id, state = record.state, "not archived: not final");
                    report.skipped += 1;
                    continue;
                }
                Err(e) => {
                    tracing::error!(saga = %id, error = %e, "not archived: its history does not fold");
                    report.skipped += 1;
                    continue;
                }
            };
            let Some(day) = record.finished_day() else {
                report.skipped += 1;
                continue;
            };
            days.entry(day.to_string())
                .or_default()
                .push(record.to_line());
            archived.push(id);
        }
        Ok((days, archived))
    }

    /// Appends on a blocking thread: compression and fsyncs stay off the workers.
    async fn append(&mut self, days: BTreeMap<String, Vec<Vec<u8>>>) -> Result<(), ArchiveError> {
        let Some(mut writer) = self.writer.take() else {
            return Err(ArchiveError::Stopped);
        };
        let (writer, result) = tokio::task::spawn_blocking(move || {
            let result = writer.append(&days);
            (writer, result)
        })
        .await
        .map_err(|_| ArchiveError::Stopped)?;
        self.writer = Some(writer);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        archive::{export, file},
        journal::MemoryJournal,
        saga::EventKind,
        testing::{completing, started, turning_back},
    };

    fn lines(dir: &std::path::Path) -> Vec<ArchivedSaga> {
        let mut records = Vec::new();
        for (_, path) in file::list(dir).unwrap() {
            file::read(&path, &mut |line| {
                records.push(serde_json::from_slice(line).unwrap());
                Ok(())
            })
            .unwrap();
        }
        records
    }

    /// Sagas the mover took to the history tier are archived by retention a
    /// whole segment at a time: their records land in the archive, the
    /// segment goes, the archive horizon covers their offsets, and a newer
    /// segment (its sagas ended after the cutoff) stays.
    #[tokio::test]
    async fn a_pass_archives_history_segments_whole_once_they_are_past_retention() {
        let dir = tempfile::tempdir().unwrap();
        let journal: Arc<dyn Journal> =
            Arc::new(crate::journal::SledJournal::open(&dir.path().join("data")).unwrap());
        let old = [
            completing(Some("k"), 1_000),
            turning_back(EventKind::SagaCompensated, 2_000),
        ];
        let mut written = Vec::new();
        for events in &old {
            written.extend(journal.append(events.clone()).await.unwrap());
        }
        let far = Timestamp(u64::MAX);
        assert_eq!(journal.move_to_history(far, 1, 100).await.unwrap().sagas, 2);
        let newer = completing(None, 50_000);
        journal.append(newer.clone()).await.unwrap();
        assert_eq!(journal.move_to_history(far, 1, 100).await.unwrap().sagas, 1);
        assert_eq!(journal.history_ended_before(far).len(), 2);

        let archive = dir.path().join("archive");
        let mut archiver = Archiver::new(journal.clone(), archive.clone(), Duration::from_secs(1));
        let stop = CancellationToken::new();
        let report = archiver.pass(Timestamp(10_000), &stop).await.unwrap();
        assert_eq!(
            report,
            PassReport {
                archived: 2,
                skipped: 0
            }
        );
        let ids: Vec<String> = lines(&archive).iter().map(|r| r.id.clone()).collect();
        assert_eq!(
            ids,
            [old[0][0].saga.to_string(), old[1][0].saga.to_string()]
        );
        for events in &old {
            assert!(journal.read_saga(events[0].saga).await.unwrap().is_empty());
        }
        assert_eq!(
            journal.saga_for_key("k").await.unwrap(),
            None,
            "the key is free again"
        );
        let highest = written.iter().map(|e| e.offset).max().unwrap();
        assert!(journal.archived_through().await.unwrap() >= highest);
        assert_eq!(
            journal.read_saga(newer[0].saga).await.unwrap().len(),
            newer.len()
        );
        assert_eq!(
            journal.history_ended_before(far).len(),
            1,
            "the newer segment stays"
        );
        journal.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_pass_archives_final_sagas_only_and_a_repeat_is_deduped_by_export() {
        let journal: Arc<dyn Journal> = Arc::new(MemoryJournal::in_memory());
        let completed = completing(Some("k"), 1_000);
        let compensated = turning_back(EventKind::SagaCompensated, 2_000);
        let failed = turning_back(EventKind::SagaFailed { reason: "r".into() }, 3_000);
        let running = started("shop", None);
        for events in [&completed, &compensated, &failed, &vec![running.clone()]] {
            journal.append(events.clone()).await.unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("archive");
        let mut archiver = Archiver::new(journal.clone(), archive.clone(), Duration::from_secs(1));
        let later = Timestamp::now().plus(Duration::from_secs(60));
        let stop = CancellationToken::new();

        let report = archiver.pass(later, &stop).await.unwrap();
        assert_eq!(
            report,
            PassReport {
                archived: 2,
                skipped: 0
            }
        );
        let records = lines(&archive);
        let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
        assert_eq!(
            ids,
            [
                completed[0].saga.to_string(),
                compensated[0].saga.to_string()
            ]
        );
        assert_eq!(
            records[0].events.len(),
            completed.len(),
            "the whole history"
        );
        assert_eq!(records[1].state, "COMPENSATED");
        assert!(
            journal
                .read_saga(completed[0].saga)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            journal
                .read_saga(compensated[0].saga)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(journal.read_saga(failed[0].saga).await.unwrap().len(), 4);
        assert_eq!(journal.read_saga(running.saga).await.unwrap().len(), 1);
        assert_eq!(
            archiver.pass(later, &stop).await.unwrap(),
            PassReport::default(),
            "nothing left to archive"
        );

        // A crash after the flush, before the removal: the saga is archived
        // again by the next pass; export writes it once.
        let again = completing(None, 4_000);
        journal.append(again.clone()).await.unwrap();
        let record =
            ArchivedSaga::from_events(&journal.read_saga(again[0].saga).await.unwrap()).unwrap();
        let mut writer = file::ArchiveWriter::new(archive.clone());
        writer
            .append(&BTreeMap::from([(
                record.finished_day().unwrap().to_string(),
                vec![record.to_line()],
            )]))
            .unwrap();
        // Exported before the next pass: from the journal, not twice.
        let mut out = Vec::new();
        let exported = export::export(
            &*journal,
            std::slice::from_ref(&archive),
            export::Window::default(),
            &mut out,
        )
        .await
        .unwrap();
        assert_eq!((exported.from_archive, exported.from_journal), (2, 2));
        assert_eq!(exported.duplicates, 1);
        // The restarted process's archiver (the one writer of the directory).
        let mut archiver = Archiver::new(journal.clone(), archive.clone(), Duration::from_secs(1));
        assert_eq!(archiver.pass(later, &stop).await.unwrap().archived, 1);
        assert_eq!(lines(&archive).len(), 4, "archived twice");
        let mut out = Vec::new();
        let exported = export::export(
            &*journal,
            std::slice::from_ref(&archive),
            export::Window::default(),
            &mut out,
        )
        .await
        .unwrap();
        assert_eq!((exported.from_archive, exported.from_journal), (3, 1));
        assert_eq!(exported.duplicates, 1);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 4, "each saga once: {text}");
        assert_eq!(
            text.lines()
                .filter(|l| l.contains(&again[0].saga.to_string()))
                .count(),
            1
        );
    }

    #[test]
    fn the_interval_is_a_tenth_of_the_retention_within_bounds() {
        assert_eq!(interval(Duration::from_secs(1)), Duration::from_millis(100));
        assert_eq!(interval(Duration::from_millis(5)), INTERVAL_MIN);
        assert_eq!(interval(Duration::from_secs(7 * 86_400)), INTERVAL_MAX);
    }
}
