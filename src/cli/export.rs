//! `sagad export`: the sagas that ended in a time window, as JSON lines, from a
//! stopped server's data directory: its archive files and its journal, each
//! saga once (`sagad::archive::export`).
//!
//! Like `journal check`, it reads only (`SledJournal::open_read_only`): no byte
//! of the data directory changes, and sled is read from a copy of its files in
//! a temporary directory (`TMPDIR`: as much free space as `DATA_DIR/journal`
//! takes, removed at the end). A live server holds the directory's lock: export
//! refuses, naming the directory and the server's pid.
//!
//! With `--journal URL` (or `SAGAD_JOURNAL`), the journal is a PostgreSQL
//! one, read in one read-only snapshot beside the running coordinators
//! (`cli/snapshot.rs`), and `--data-dir` may repeat: in a cluster the
//! archiver duty moves between nodes, so the archive files are spread over
//! the data directories of the nodes that held it; give every one. The
//! snapshot is taken *before* any archive file is read, and retention
//! removes a saga only after its archive line is durable: a saga that ended
//! in the window is in the snapshot or in a file read after it, and is
//! written once either way (`sagad::archive::export` says more).
//!
//! Times are UTC: RFC 3339 (`2024-05-01T12:00:00Z`) or a date (`2024-05-01`,
//! its midnight). `--since` is inclusive, `--until` exclusive.

use std::{
    io::{BufWriter, Write},
    path::{Path, PathBuf},
};

use anyhow::Context;
use sagad::{
    archive::{
        self,
        export::{ExportReport, Window},
    },
    journal::Journal,
    saga::Timestamp,
};

use crate::cli::{error::CliError, journal::open_read_only, snapshot};

/// The data directory without `--data-dir` (and `SAGAD_DATA_DIR`).
const DEFAULT_DATA_DIR: &str = "./sagad-data";

/// `sagad export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// The data directory of a stopped server [default: ./sagad-data]. With
    /// --journal: a data directory whose archive to read, repeated for each
    /// node that may have held the archiver duty (none: only the journal).
    #[arg(long, env = "SAGAD_DATA_DIR", value_name = "DIR")]
    pub data_dir: Vec<PathBuf>,
    /// Read this PostgreSQL journal (a postgres:// URL or a connection
    /// string, as `serve --journal`) in one read-only snapshot, beside
    /// running coordinators, instead of a stopped server's sled journal.
    #[arg(
        long,
        env = "SAGAD_JOURNAL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub journal: Option<String>,
    /// Only sagas that ended at or after this time (UTC: 2024-05-01T12:00:00Z,
    /// or a date, 2024-05-01).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub since: Option<Timestamp>,
    /// Only sagas that ended before this time (same forms as --since).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub until: Option<Timestamp>,
    /// Write to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// A time on the command line: RFC 3339 in UTC, or a date meaning its midnight UTC.
pub fn parse_time(text: &str) -> Result<Timestamp, String> {
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_string()
    };
    humantime::parse_rfc3339_weak(&full)
        .map(Timestamp::from)
        .map_err(|e| {
            format!(
                "'{text}' is not a time ({e}); use RFC 3339 in UTC (2024-05-01T12:00:00Z) or a date (2024-05-01)"
            )
        })
}

pub async fn run(args: ExportArgs) -> anyhow::Result<()> {
    if let (Some(since), Some(until)) = (args.since, args.until)
        && since >= until
    {
        return Err(CliError::Usage("--since must be earlier than --until".into()).into());
    }
    let window = Window {
        since: args.since,
        until: args.until,
    };
    let report = match &args.journal {
        Some(url) => from_postgres(&args, url, window).await?,
        None => from_sled(&args, window).await?,
    };
    for (path, bytes) in &report.torn {
        eprintln!(
            "sagad: note: {} ends in a torn write ({bytes} bytes skipped: the server died while appending; those sagas are still in the journal)",
            path.display()
        );
    }
    eprintln!(
        "exported {} sagas ({} from the archive, {} from the journal){}",
        report.total(),
        report.from_archive,
        report.from_journal,
        args.out
            .as_ref()
            .map(|p| format!(" to {}", p.display()))
            .unwrap_or_default()
    );
    Ok(())
}

/// A stopped server's data directory: its sled journal, read only, and its
/// archive.
async fn from_sled(args: &ExportArgs, window: Window) -> anyhow::Result<ExportReport> {
    let dir = match args.data_dir.as_slice() {
        [] => Path::new(DEFAULT_DATA_DIR),
        [dir] => dir.as_path(),
        _ => {
            return Err(CliError::Usage(
                "--data-dir: give one data directory (several are read only with --journal, for the archives of a cluster's nodes)".into(),
            )
            .into());
        }
    };
    let read_only = open_read_only(dir, "export")?;
    // What the copy read past: an export of what reads is still whole, but
    // the directory is damaged, and an operator should know.
    for finding in read_only.sled_findings() {
        eprintln!("sagad: note: {finding} (read past in a copy; `sagad journal check` says more)");
    }
    let archive_dirs = [archive::archive_dir(dir)];
    let result = write(
        read_only.journal(),
        &archive_dirs,
        window,
        args.out.as_deref(),
    )
    .await;
    let torn = read_only.torn_tail().cloned();
    read_only.close().await?;
    let report = result?;
    if let Some(torn) = torn.filter(|t| !t.in_store) {
        eprintln!(
            "sagad: note: the journal's log ends in a torn write ({} at byte {}): its batch {} is left out, as the next start cuts it off (`sagad journal check` says more)",
            torn.segment.display(),
            torn.at,
            torn.batch
        );
    }
    Ok(report)
}

/// A PostgreSQL journal, in one snapshot, and the archives of the data
/// directories given.
async fn from_postgres(
    args: &ExportArgs,
    url: &str,
    window: Window,
) -> anyhow::Result<ExportReport> {
    for dir in &args.data_dir {
        if !dir.is_dir() {
            return Err(
                CliError::Usage(format!("--data-dir {}: not a directory", dir.display())).into(),
            );
        }
    }
    if args.data_dir.is_empty() {
        eprintln!(
            "sagad: note: no --data-dir: only the sagas still in the journal are exported (archived ones are in the data directories of the nodes that held the archiver duty)"
        );
    }
    let archive_dirs: Vec<PathBuf> = args
        .data_dir
        .iter()
        .map(|d| archive::archive_dir(d))
        .collect();
    // The snapshot is taken (at its open) before `write` reads any archive
    // file: that order is what makes each saga come out exactly once.
    let journal = snapshot::open(url, "export").await?;
    let result = write(&journal, &archive_dirs, window, args.out.as_deref()).await;
    // It wrote nothing: ending it loses nothing, and the connection ends
    // with it anyway.
    let _ = journal.close().await;
    result
}

/// Exports to `out` (stdout without it); a partial `--out` file is removed.
async fn write(
    journal: &dyn Journal,
    archive_dirs: &[PathBuf],
    window: Window,
    out: Option<&Path>,
) -> anyhow::Result<ExportReport> {
    match out {
        Some(path) => {
            let file = sagad::private::create(path)
                .with_context(|| format!("--out {}: cannot create it", path.display()))?;
            let mut out = BufWriter::new(file);
            let result = archive::export::export(journal, archive_dirs, window, &mut out).await;
            let result = result.map_err(anyhow::Error::from).and_then(|report| {
                let file = out.into_inner().map_err(|e| e.into_error())?;
                file.sync_all()?;
                Ok(report)
            });
            if result.is_err() {
                // A partial export must not pass for a whole one.
                let _ = std::fs::remove_file(path);
            }
            result.with_context(|| format!("--out {}", path.display()))
        }
        None => {
            let stdout = std::io::stdout();
            let mut out = BufWriter::new(stdout.lock());
            let result = archive::export::export(journal, archive_dirs, window, &mut out).await;
            let _ = out.flush();
            result.map_err(anyhow::Error::from)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc_or_dates() {
        let day = parse_time("2024-05-01").unwrap();
        assert_eq!(parse_time("2024-05-01T00:00:00Z").unwrap(), day);
        assert_eq!(
            parse_time("2024-05-01T00:00:01.5Z").unwrap(),
            Timestamp(day.0 + 1_500)
        );
        assert!(parse_time("yesterday").unwrap_err().contains("'yesterday'"));
    }
}
