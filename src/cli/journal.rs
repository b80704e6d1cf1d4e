//! `sagad journal check`: verifies a data directory offline.
//!
//! Opening the journal verifies its write-ahead log (a damaged or truncated log
//! is refused with the file and byte offset); the check then verifies every
//! record of the store, folds every saga and compares every index with the
//! events. It takes the directory's lock, so it refuses to run beside a server.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use sagad::journal::{SledJournal, check};

#[derive(Subcommand)]
pub enum JournalCommand {
    /// Verify every record (checksums, per-saga sequence, folds, indexes) and
    /// print a summary; exits non-zero on damage.
    Check {
        /// The data directory of a stopped server.
        #[arg(long, env = "SAGAD_DATA_DIR", default_value = "./sagad-data")]
        data_dir: PathBuf,
    },
}

pub fn run(command: JournalCommand) -> anyhow::Result<()> {
    match command {
        JournalCommand::Check { data_dir } => {
            if !data_dir.join("journal").is_dir() {
                bail!("--data-dir {}: no sagad journal there", data_dir.display());
            }
            let journal = SledJournal::open(&data_dir)
                .with_context(|| format!("journal in {} is unusable", data_dir.display()))?;
            let report = check::check(journal.store())?;
            print!("{report}");
            if !report.is_clean() {
                bail!(
                    "journal in {} is damaged ({} problems)",
                    data_dir.display(),
                    report.problems.len()
                );
            }
            Ok(())
        }
    }
}
