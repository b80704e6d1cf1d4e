//! `sagad export`: the sagas that ended within a time window, as JSON lines in
//! the archive's shape (`record.rs`), from the archive files of one or more
//! archive directories and the journal.
//!
//! Several directories are for a cluster: the archiver duty moves between
//! nodes, and each holder archives into its own data directory, so a
//! cluster's archive is spread over its nodes' directories. Their files are
//! merged by day.
//!
//! Guarantees:
//! - **Each saga once.** A saga found in both places (a crash between the
//!   archive flush and the removal, see `archiver.rs`) or twice in the archive
//!   (twice in one directory, or in two nodes' directories) is written once.
//! - **None missed, when the journal is read first.** The caller gives a
//!   journal that does not change while it is read, taken *before* the
//!   archive files are read (a stopped server's directory; a PostgreSQL
//!   snapshot, `journal/postgres/snapshot.rs`). A saga that ended in the
//!   window is then either in that journal, and written from it, or was
//!   removed before it was taken; and retention removes a saga only after
//!   its archive line is durable (`archiver.rs`), so that line is in a file
//!   read afterwards. Either way it is written, and only once.
//! - **The window is on the end time**: a saga is exported when its terminal
//!   event is at or after `since` and before `until`. From the journal, every
//!   terminal saga counts (FAILED ones too, as they stand now); the archive
//!   holds only COMPLETED and COMPENSATED ones.
//! - **Order**: archived sagas first, by archive day (one day's files in the
//!   order their directories were given) and then in the order they were
//!   archived; then the journal's, by end time.
//! - A torn tail of an archive file (the server died while appending it) is
//!   skipped and reported: those sagas were never removed from the journal.

use std::{collections::HashSet, io::Write, path::PathBuf};

use super::{
    ArchiveError, file,
    record::{ArchivedSaga, RecordHead},
};
use crate::{
    journal::{Journal, ListQuery},
    json::parse_rfc3339,
    saga::{SagaId, SagaState, Timestamp},
};

/// Summaries read from the journal per page.
const LIST_PAGE: usize = 1024;
const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// Which end times to export: `since <= t < until`; `None` is unbounded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
}

impl Window {
    /// Whether a saga that ended at `t` is exported.
    pub fn contains(&self, t: Timestamp) -> bool {
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t < u)
    }

    /// Whether the archive file of `day` (`YYYY-MM-DD`) may hold such sagas.
    fn overlaps_day(&self, day: &str) -> bool {
        let Some(start) = parse_rfc3339(&format!("{day}T00:00:00Z")) else {
            return true; // unreadable name: read it rather than miss sagas
        };
        let end = Timestamp(start.0 + DAY_MS);
        self.since.is_none_or(|s| end > s) && self.until.is_none_or(|u| start < u)
    }
}

/// What an export wrote.
#[derive(Debug, Default, PartialEq)]
pub struct ExportReport {
    pub from_archive: usize,
    pub from_journal: usize,
    /// Lines not written again because their saga was already written.
    pub duplicates: usize,
    /// Archive files ending in a torn write, with the bytes skipped.
    pub torn: Vec<(PathBuf, u64)>,
}

impl ExportReport {
    /// Sagas written.
    pub fn total(&self) -> usize {
        self.from_archive + self.from_journal
    }
}

/// Writes every saga that ended within `window`, from the archive files of
/// `archive_dirs` and then `journal`, one JSON line each, to `out`. The
/// journal must not change while it is read, and must have been taken before
/// this reads the archive files (the module docs say why). File reads and
/// writes block.
pub async fn export(
    journal: &dyn Journal,
    archive_dirs: &[PathBuf],
    window: Window,
    out: &mut dyn Write,
) -> Result<ExportReport, ArchiveError> {
    let mut report = ExportReport::default();
    let from_journal = journal_candidates(journal, window).await?;
    let in_journal: HashSet<String> = from_journal.iter().map(|(_, id)| id.to_string()).collect();

    let mut seen: HashSet<String> = HashSet::new();
    for (day, path) in by_day(archive_dirs)? {
        if !window.overlaps_day(&day) {
            continue;
        }
        let end = file::read(&path, &mut |line| {
            let head: RecordHead =
                serde_json::from_slice(line).map_err(|e| ArchiveError::BadRecord {
                    path: path.clone(),
                    why: e.to_string(),
                })?;
            if in_journal.contains(&head.id) || seen.contains(&head.id) {
                report.duplicates += 1;
                return Ok(());
            }
            let ended = head.finished_at.as_deref().and_then(parse_rfc3339);
            if !ended.is_some_and(|t| window.contains(t)) {
                return Ok(());
            }
            out.write_all(line)
                .and_then(|()| out.write_all(b"\n"))
                .map_err(ArchiveError::Output)?;
            seen.insert(head.id);
            report.from_archive += 1;
            Ok(())
        })?;
        if end.torn_bytes > 0 {
            report.torn.push((path, end.torn_bytes));
        }
    }

    for (_, id) in from_journal {
        let events = journal.read_saga(id).await?;
        if events.is_empty() {
            continue;
        }
        let record = ArchivedSaga::from_events(&events).map_err(|e| ArchiveError::Fold {
            saga: id,
            why: e.to_string(),
        })?;
        out.write_all(&record.to_line())
            .map_err(ArchiveError::Output)?;
        report.from_journal += 1;
    }
    out.flush().map_err(ArchiveError::Output)?;
    Ok(report)
}

/// The archive files of every directory, by day; one day's files in the
/// order of their directories (a stable sort keeps it).
fn by_day(archive_dirs: &[PathBuf]) -> Result<Vec<(String, PathBuf)>, ArchiveError> {
    let mut files = Vec::new();
    for dir in archive_dirs {
        files.extend(file::list(dir)?);
    }
    files.sort_by(|(a, _), (b, _)| a.cmp(b));
    Ok(files)
}

/// The journal's terminal sagas that ended within `window`, by end time.
async fn journal_candidates(
    journal: &dyn Journal,
    window: Window,
) -> Result<Vec<(Timestamp, SagaId)>, ArchiveError> {
    let mut found = Vec::new();
    let mut before = None;
    loop {
        let page = journal
            .list(&ListQuery {
                before,
                limit: LIST_PAGE,
                ..ListQuery::default()
            })
            .await?;
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        for summary in &page {
            // Still running, or started after the window: it did not end in it.
            if !summary.status.is_terminal()
                || window.until.is_some_and(|u| summary.created_at >= u)
            {
                continue;
            }
            let events = journal.read_saga(summary.id).await?;
            let state = SagaState::fold(&events).map_err(|e| ArchiveError::Fold {
                saga: summary.id,
                why: e.to_string(),
            })?;
            if let Some(ended) = state.finished_at.filter(|t| window.contains(*t)) {
                found.push((ended, summary.id));
            }
        }
        if page.len() < LIST_PAGE {
            break;
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_half_open_and_picks_day_files() {
        let day = parse_rfc3339("2024-05-02T00:00:00Z").unwrap();
        let window = Window {
            since: Some(day),
            until: Some(Timestamp(day.0 + DAY_MS)),
        };
        assert!(window.contains(day));
        assert!(!window.contains(Timestamp(day.0 - 1)));
        assert!(!window.contains(Timestamp(day.0 + DAY_MS)));
        assert!(!window.overlaps_day("2024-05-01"));
        assert!(window.overlaps_day("2024-05-02"));
        assert!(!window.overlaps_day("2024-05-03"));
        assert!(Window::default().overlaps_day("1999-01-01"));
    }

    /// A cluster's archive: two nodes' directories, one saga archived by
    /// both (a holder died between its flush and the removal), merged by day.
    #[tokio::test]
    async fn several_archive_directories_are_merged_by_day_and_each_saga_written_once() {
        use std::collections::BTreeMap;

        use crate::{journal::MemoryJournal, testing::completing};

        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let day_ms = 20_000 * DAY_MS; // 2024-10-03
        let record = |at| ArchivedSaga::from_events(&completing(None, at)).unwrap();
        let (early, late, twice) = (record(day_ms), record(day_ms + DAY_MS), record(day_ms));
        let write = |dir: &std::path::Path, records: &[&ArchivedSaga]| {
            let mut days: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
            for r in records {
                let day = r.finished_day().unwrap().to_string();
                days.entry(day).or_default().push(r.to_line());
            }
            file::ArchiveWriter::new(dir.to_path_buf())
                .append(&days)
                .unwrap();
        };
        write(a.path(), &[&late, &twice]);
        write(b.path(), &[&twice, &early]);

        let journal = MemoryJournal::in_memory();
        let mut out = Vec::new();
        let dirs = [a.path().to_path_buf(), b.path().to_path_buf()];
        let report = export(&journal, &dirs, Window::default(), &mut out)
            .await
            .unwrap();
        assert_eq!((report.from_archive, report.duplicates), (3, 1));
        let ids: Vec<String> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<RecordHead>(l).unwrap().id)
            .collect();
        // The first day from both directories (a's first), then the next day.
        assert_eq!(
            ids,
            vec![twice.id.clone(), early.id.clone(), late.id.clone()]
        );
    }
}
