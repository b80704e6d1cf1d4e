//! `sagad journal check`: verifies a stopped server's data directory, reading
//! only.
//!
//! The journal is opened read-only (`SledJournal::open_read_only`): no byte of
//! the data directory changes, so a check also works on a read-only copy.
//! Its write-ahead log is read and verified in place (a damaged or truncated
//! log is refused with the file and byte offset); sled is opened on a copy of
//! its files in a temporary directory (`TMPDIR`: a check needs as much free
//! space there as `DATA_DIR/journal` takes, and removes the copy at the end).
//! The check then verifies every record of the store, folds every saga and
//! compares every index with the events. A live server holds the directory's
//! lock: the check refuses, naming the directory and the server's pid.
//!
//! Damage in sled's files is a finding like any other: each damaged stretch
//! is named with its file and byte (`journal/db at byte N`), the copy steps
//! around it so that everything else is still checked, and where sled
//! cannot serve a part of the store at all the check reads what a salvage
//! would (`cli/salvage.rs`) and says what that would carry, what is lost,
//! and whether the log can rebuild the store.
//!
//! With `--journal URL` (or `SAGAD_JOURNAL`) it checks a PostgreSQL journal
//! instead, in one read-only snapshot (`cli/snapshot.rs`) taken beside the
//! running coordinators: nothing is written, no node joins, and
//! `--data-dir` is not read. Exit 0 intact, 1 damaged or not checked.
//!
//! | exit | meaning |
//! | --- | --- |
//! | 0 | the journal is intact |
//! | 6 | intact, but the log ends in a torn write that the next start cuts off (named with its file and byte offset) |
//! | 1 | damaged (every problem is listed, sled's files' too), or not checked (a server is running, the directory is unusable) |

use std::path::Path;

use anyhow::{Context, bail};
use clap::Subcommand;
use sagad::journal::{
    Journal, JournalError, ReadOnlyJournal, SledJournal, StoreError, check, store::wal::TornTail,
};

use crate::cli::{
    error::{CliError, EXIT_TORN_TAIL},
    salvage, snapshot,
};

#[derive(Subcommand)]
pub enum JournalCommand {
    /// Verify every record (checksums, per-saga sequence, folds, indexes) and
    /// print a summary; reads only: sled's files are copied to TMPDIR, which
    /// needs as much free space as DATA_DIR/journal. Exits 0 intact, 6 intact
    /// but with a torn tail the next start cuts off, 1 damaged or not checked.
    /// With --journal, a PostgreSQL journal, in one read-only snapshot.
    Check {
        /// The data directory of a stopped server.
        #[arg(long, env = "SAGAD_DATA_DIR", default_value = "./sagad-data")]
        data_dir: std::path::PathBuf,
        /// Check this PostgreSQL journal instead (a postgres:// URL or a
        /// connection string, as `serve --journal`), in one read-only
        /// snapshot, beside running coordinators; --data-dir is then not
        /// read.
        #[arg(
            long,
            env = "SAGAD_JOURNAL",
            value_name = "URL",
            hide_env_values = true
        )]
        journal: Option<String>,
    },
    /// Copy everything still readable of a stopped server's (damaged)
    /// journal to a new data directory, rebuilding its indexes, and report
    /// what could not be carried; DATA_DIR is only read. Exits 0 nothing
    /// lost, 7 written with losses (listed), 1 nothing written.
    Salvage {
        /// The data directory of a stopped server.
        #[arg(long, env = "SAGAD_DATA_DIR", default_value = "./sagad-data")]
        data_dir: std::path::PathBuf,
        /// The new data directory to write: must not exist, or be empty.
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

pub async fn run(command: JournalCommand) -> anyhow::Result<()> {
    match command {
        JournalCommand::Check {
            journal: Some(url), ..
        } => check_postgres(&url).await,
        JournalCommand::Check { data_dir, .. } => check(&data_dir).await,
        JournalCommand::Salvage { data_dir, out } => salvage::run(&data_dir, &out).await,
    }
}

async fn check(data_dir: &Path) -> anyhow::Result<()> {
    let journal = match open_read_only(data_dir, "journal check") {
        Ok(journal) => journal,
        Err(e) if is_damage(&e) => return check_by_salvage(data_dir, e).await,
        Err(e) => return Err(e),
    };
    let report = match journal.journal().history() {
        Some(history) => check::check_with_history(journal.store(), history),
        None => check::check(journal.store()),
    };
    let torn = journal.torn_tail().cloned();
    let copied = journal.copied_bytes();
    let findings = journal.sled_findings().to_vec();
    journal.close().await?;
    let mut report = match report {
        Err(e @ JournalError::Read(StoreError::Damaged(_))) => {
            return check_by_salvage(data_dir, e.into()).await;
        }
        report => report?,
    };
    // Damage sled can read past (a message no page needs any more) is damage
    // all the same: a start may refuse it, and the disk that did it may do
    // more.
    let whole = report.is_clean();
    report.problems.extend(
        findings
            .iter()
            .map(|f| format!("{f} (read past in a copy)")),
    );
    outln!(
        "read only: sled's files ({}) copied to a temporary directory and removed again; {} left as it was",
        crate::cli::output::size(copied),
        data_dir.display()
    );
    out!("{report}");
    if let Some(torn) = &torn {
        outln!("{}", describe_torn_tail(torn));
    }
    if whole && !findings.is_empty() {
        outln!(
            "every saga still reads: `sagad journal salvage --data-dir {} --out NEW_DIR` writes a journal without the damage, losing nothing",
            data_dir.display()
        );
    }
    if !report.is_clean() {
        bail!(
            "journal in {} is damaged ({} problems)",
            data_dir.display(),
            report.problems.len()
        );
    }
    if let Some(torn) = torn {
        return Err(CliError::Finding {
            message: format!(
                "journal in {} is intact, but its log ends in a torn write ({} at byte {}) that the next start cuts off",
                data_dir.display(),
                torn.segment.display(),
                torn.at
            ),
            exit: EXIT_TORN_TAIL,
        }
        .into());
    }
    Ok(())
}

/// The check of a PostgreSQL journal, in one snapshot: a torn tail, sled's
/// files, the copy: none of that is there; the report is the same.
async fn check_postgres(url: &str) -> anyhow::Result<()> {
    let snapshot = snapshot::open(url, "journal check").await?;
    let report = snapshot.check().await;
    // The snapshot wrote nothing: ending it cannot lose anything, and a
    // failure to end it is the connection's, which drops it anyway.
    let _ = snapshot.close().await;
    let report =
        report.with_context(|| format!("checking the journal at {}", snapshot.target()))?;
    outln!(
        "read one snapshot of {} (offsets up to {}) and wrote nothing",
        snapshot.target(),
        snapshot.feed_head().get()
    );
    out!("{report}");
    if !report.is_clean() {
        bail!(
            "journal at {} is damaged ({} problems)",
            snapshot.target(),
            report.problems.len()
        );
    }
    Ok(())
}

/// Whether a failure to open or read is damage to the store's files.
fn is_damage(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<JournalError>(),
            Some(
                JournalError::Open(StoreError::Damaged(_))
                    | JournalError::Read(StoreError::Damaged(_))
            )
        )
    })
}

/// The check of a store sled cannot serve whole: what a salvage reads of
/// it, as findings. Always a failure: the journal is damaged.
async fn check_by_salvage(data_dir: &Path, damage: anyhow::Error) -> anyhow::Result<()> {
    let salvage = match salvage::read(data_dir, "journal check").await {
        Ok(salvage) => salvage,
        // What stopped the check says more than why the salvage failed too.
        Err(_) => return Err(damage),
    };
    // The failure itself is one of the findings below.
    drop(damage);
    outln!("journal DAMAGED: sled cannot serve the whole store; what a salvage reads of it:");
    out!("{}", salvage::describe(&salvage, data_dir));
    let outcome = match salvage.is_lossless() {
        true => "would carry everything",
        false => "would not carry everything (listed above)",
    };
    bail!(
        "journal in {} is damaged; `sagad journal salvage --data-dir {} --out NEW_DIR` {outcome}",
        data_dir.display(),
        data_dir.display()
    )
}

/// Opens the journal of the stopped server's `data_dir` read-only for `verb`
/// (`journal check`, `export`), refusing a directory a live server holds.
pub fn open_read_only(data_dir: &Path, verb: &str) -> anyhow::Result<ReadOnlyJournal> {
    if !data_dir.join("journal").is_dir() {
        bail!("--data-dir {}: no sagad journal there", data_dir.display());
    }
    match SledJournal::open_read_only(data_dir) {
        Ok(journal) => Ok(journal),
        Err(JournalError::Open(StoreError::Locked { dir, holder })) => bail!(
            "data directory {} is already in use: a sagad server is running on it ({holder}); `sagad {verb}` reads only a stopped server's directory, so stop the server first",
            dir.display()
        ),
        Err(e) => Err(e).with_context(|| format!("journal in {} is unusable", data_dir.display())),
    }
}

/// The finding line of a torn tail: where, and what cutting it off costs.
fn describe_torn_tail(torn: &TornTail) -> String {
    let cost = if torn.in_store {
        format!(
            "which loses nothing (its batch {} is already in the store)",
            torn.batch
        )
    } else {
        format!(
            "and batch {} with it: a write the server died in the middle of (never acknowledged: nothing is lost), or a record damaged after it was written (its sagas then lose their last transitions)",
            torn.batch
        )
    };
    format!(
        "torn tail: {} at byte {}: the log's last record does not verify and only zeros follow; the next start cuts it off, {cost}",
        torn.segment.display(),
        torn.at
    )
}
