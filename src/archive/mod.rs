//! Retention and archival: sagas that ended longer ago than `--retention`
//! leave the journal for append-only archive files, and `sagad export` reads
//! both back as JSON lines.
//!
//! ```text
//!  journal (hot)                         DATA_DIR/archive/
//!  ┌──────────────────────┐  archiver   ┌───────────────────────────────┐
//!  │ running, FAILED,     │ ──────────▶ │ 2024-05-01.jsonl.gz  (members │
//!  │ recently ended sagas │ final sagas │ 2024-05-02.jsonl.gz   of JSON │
//!  └──────────────────────┘ older than  │ …                      lines) │
//!            ▲              retention   └───────────────────────────────┘
//!            └──────────── sagad export (both, deduped) ──────────┘
//! ```
//!
//! - [`record`]: the JSON of one archived saga (its whole history).
//! - [`file`]: the day files: durable appends, torn tails, reading.
//! - [`archiver`]: the background task and its guarantees.
//! - [`export`]: the sagas of a time window, from the archive and the journal.
//! - [`mover`]: the other background task, which takes finished sagas out of
//!   the sled journal's store into its history tier (`DATA_DIR/history/`)
//!   long before retention: they stay in every read, and the archiver
//!   later archives the tier's segments whole.
//!
//! What retention means for users:
//! - Only COMPLETED and COMPENSATED sagas are archived. A FAILED saga stays in
//!   the journal however old, because an operator must still act on it
//!   (`RetrySaga`); a running saga is never touched.
//! - An archived saga is gone from `GetSaga`, `ListSagas` and `WatchSaga`
//!   (NOT_FOUND), and its **idempotency key is free again**: a `StartSaga` with
//!   that key starts a new saga. Retention bounds the idempotency window, as it
//!   does in Temporal (workflow id reuse after retention) and Restate.
//! - The `Subscribe` feed skips archived offsets; resuming below the archive
//!   horizon is refused (see `engine/feed.rs`).
//! - With several nodes on one PostgreSQL journal, one node archives at a
//!   time (the archiver duty, `archiver.rs`), into its own data directory:
//!   over the cluster's life the archive is spread over the data
//!   directories of the nodes that held the duty, and a saga a dying holder
//!   archived but did not remove is archived again by the next one. Readers
//!   of several directories keep one line per saga id, as export does
//!   (`sagad export --journal URL --data-dir A --data-dir B`, `export.rs`).

use std::path::{Path, PathBuf};

use crate::{journal::JournalError, saga::SagaId};

pub mod archiver;
pub mod export;
pub mod file;
pub mod mover;
pub mod record;

pub use archiver::Archiver;
pub use mover::Mover;

/// The archive directory inside a data directory.
pub const ARCHIVE_DIR: &str = "archive";

/// Where a data directory's archive files live.
pub fn archive_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(ARCHIVE_DIR)
}

/// What can go wrong archiving or exporting.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "archive file {} is damaged at byte {offset} ({why}) and valid data follows, so it is not a torn write; move the file aside (sagas of that day stay in the journal until then)",
        path.display()
    )]
    Damaged {
        path: PathBuf,
        offset: u64,
        why: String,
    },
    #[error("archive file {}: a line is not an archived saga: {why}", path.display())]
    BadRecord { path: PathBuf, why: String },
    #[error("saga {saga}: its history does not fold: {why}")]
    Fold { saga: SagaId, why: String },
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("cannot write the export: {0}")]
    Output(#[source] std::io::Error),
    #[error("the archiver stopped")]
    Stopped,
}

impl ArchiveError {
    fn io(what: &'static str, path: &Path, source: std::io::Error) -> Self {
        ArchiveError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}
