//! `sagad journal salvage --data-dir D --out NEW_DIR`: the way out of a
//! damaged journal.
//!
//! A flipped byte in sled's files makes sagad refuse to start, and after a
//! clean stop the log has been checkpointed into sled: sled's files are then
//! the only copy of the journal's history, and the damaged part of them
//! cannot be rebuilt. A salvage keeps everything else
//! (`sagad::journal::salvage`): it reads the stopped server's directory
//! without changing it, writes a new data directory holding every saga that
//! reads whole, with its offsets, plus everything the log still holds, checks
//! it, and says what it could not carry. A server then starts on the new
//! directory (`sagad serve --data-dir NEW_DIR`).
//!
//! Next to the new journal, `NEW_DIR/salvage/` keeps `report.txt` (what is
//! printed) and `incomplete.jsonl`: the sagas not carried, as far as their
//! history reads, as export records, for an operator to finish by hand.
//!
//! | exit | meaning |
//! | --- | --- |
//! | 0 | written, nothing lost: every saga and participant was carried |
//! | 7 | written, but something could not be carried (listed, and in `salvage/`) |
//! | 1 | nothing written: a server runs on the directory, it is no sagad data directory, `--out` is not empty, or the log is damaged too |

use std::{fmt::Write as _, io::Write as _, path::Path};

use anyhow::{Context, bail};
use sagad::{
    archive::record::ArchivedSaga,
    journal::{JournalError, Salvage, SledJournal, StoreError},
};

use crate::cli::error::{CliError, EXIT_SALVAGE_LOSSES};

/// Where the report and the sagas not carried go, in the new directory.
const SALVAGE_DIR: &str = "salvage";

pub async fn run(data_dir: &Path, out: &Path) -> anyhow::Result<()> {
    if !data_dir.join("journal").is_dir() {
        bail!("--data-dir {}: no sagad journal there", data_dir.display());
    }
    let occupied = std::fs::read_dir(out).is_ok_and(|mut entries| entries.next().is_some());
    if occupied || out.is_file() {
        bail!(
            "--out {}: it exists and is not empty; a salvage writes a new data directory (the damaged one is left as it is)",
            out.display()
        );
    }
    let salvage = read(data_dir, "journal salvage").await?;
    let mut text = describe(&salvage, data_dir);
    let check = salvage
        .write(out)
        .await
        .with_context(|| format!("--out {}: writing the salvaged journal", out.display()))?;
    writeln!(
        text,
        "written: {} ({} sagas, {} events; it checks clean); start sagad on it with `sagad serve --data-dir {}`",
        out.display(),
        check.sagas,
        check.events,
        out.display()
    )?;
    keep_report(out, &text, &salvage).with_context(|| format!("--out {}", out.display()))?;
    out!("{text}");
    if salvage.is_lossless() {
        return Ok(());
    }
    Err(CliError::Finding {
        message: format!(
            "salvaged {} into {}, but not everything could be carried (listed above, and in {})",
            data_dir.display(),
            out.display(),
            out.join(SALVAGE_DIR).display()
        ),
        exit: EXIT_SALVAGE_LOSSES,
    }
    .into())
}

/// Reads everything still readable of `data_dir` for `verb`, off the async
/// workers, refusing a directory a live server holds.
pub async fn read(data_dir: &Path, verb: &str) -> anyhow::Result<Salvage> {
    let dir = data_dir.to_path_buf();
    let read = tokio::task::spawn_blocking(move || SledJournal::salvage(&dir))
        .await
        .context("the salvage task failed")?;
    match read {
        Ok(salvage) => Ok(salvage),
        Err(JournalError::Open(StoreError::Locked { dir, holder })) => bail!(
            "data directory {} is already in use: a sagad server is running on it ({holder}); `sagad {verb}` reads only a stopped server's directory, so stop the server first",
            dir.display()
        ),
        Err(e) => {
            Err(e).with_context(|| format!("journal in {} cannot be salvaged", data_dir.display()))
        }
    }
}

/// What the salvage found and would carry, for people.
pub fn describe(salvage: &Salvage, data_dir: &Path) -> String {
    let mut text = String::new();
    let log = &salvage.log;
    let _ = writeln!(
        text,
        "read only: {} left as it was (sled's files, {}, were read from a copy)",
        data_dir.display(),
        crate::cli::output::size(salvage.copied_bytes)
    );
    for finding in &salvage.findings {
        let _ = writeln!(text, "damaged: {finding}");
    }
    for gap in &salvage.unreadable {
        let _ = writeln!(text, "unreadable: {gap}");
    }
    for segment in &salvage.history_lost {
        let _ = writeln!(text, "lost: history segment {segment}");
    }
    let holds = match log.last.checked_sub(log.first) {
        Some(_) => format!("batches {}..={}", log.first, log.last),
        None => "no batch".to_string(),
    };
    if log.whole {
        let _ = writeln!(
            text,
            "log: {} holds every batch since the journal began ({holds}): the store was rebuilt from it alone",
            log.dir.display()
        );
    } else {
        let _ = writeln!(
            text,
            "log: {} holds {holds}, not the whole history, so it cannot rebuild the store; {} of its batches were laid over what the store still holds",
            log.dir.display(),
            log.replayed
        );
    }
    if let Some((first, last)) = log.lost {
        let _ = writeln!(
            text,
            "lost: batches {first}..={last}, in neither the store (it holds batches up to {}) nor the log",
            first - 1
        );
    }
    if log.marker_unknown {
        let _ = writeln!(
            text,
            "note: the store's batch marker could not be read, so every batch of the log was laid over it"
        );
    }
    if let Some((segment, at)) = &log.torn {
        let _ = writeln!(
            text,
            "note: the log ends in a torn write ({} at byte {at}), cut off as a start would: a batch never acknowledged",
            segment.display()
        );
    }
    let _ = write!(text, "{}", salvage.report);
    text
}

/// Writes the report and the sagas not carried into `out/salvage/`, private
/// as every file of a data directory (`sagad::private`).
fn keep_report(out: &Path, text: &str, salvage: &Salvage) -> anyhow::Result<()> {
    let dir = out.join(SALVAGE_DIR);
    sagad::private::dir(&dir)?;
    let write = |name: &str, bytes: &[u8]| -> std::io::Result<()> {
        let mut file = sagad::private::file()
            .write(true)
            .create_new(true)
            .open(dir.join(name))?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    write("report.txt", text.as_bytes())?;
    let incomplete = &salvage.report.incomplete;
    if incomplete.is_empty() {
        return Ok(());
    }
    let mut lines = Vec::new();
    for saga in incomplete {
        // A history cut before it could be folded has no record to write;
        // the report names it.
        if let Ok(record) = ArchivedSaga::from_events(&saga.events) {
            lines.extend(record.to_line());
        }
    }
    write("incomplete.jsonl", &lines)?;
    Ok(())
}
