//! Which FAILED-saga notices the webhook acknowledged: a small append-only file,
//! `DATA_DIR/webhook-acked`, one `<saga id> <seq>` line per acknowledged notice.
//!
//! It lives beside the journal rather than in it so the saga event format stays
//! as it is; the data directory's lock (one process per directory) covers it too.
//! It serves a journal only this process writes (sled): with a PostgreSQL
//! journal several nodes share, the acknowledgements live in the database
//! instead (`journal/postgres/notice.rs`), and no ledger file is opened.
//!
//! Guarantees:
//! - A line is written and `fdatasync`'ed after the webhook answered 2xx, so a
//!   key in the file was delivered. The converse does not hold: a crash between
//!   the answer and the sync loses the line and the notice is posted again at
//!   the next start. That is the at-least-once promise, never at-most-once.
//! - A torn or unreadable line (a crash mid-append) is skipped, which again only
//!   means a repeat POST.
//! - [`Ledger::compact`] rewrites the file atomically (temp file, sync, rename,
//!   directory sync) keeping only the keys still worth remembering, so the file
//!   stays as small as the set of FAILED sagas.

use std::{
    collections::HashSet,
    fs::{self, File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
};

use super::notice::DeliveryKey;
use crate::saga::SagaId;

/// The ledger's file name inside the data directory.
pub const LEDGER_FILE: &str = "webhook-acked";

/// The acknowledged keys and the open file they are appended to.
pub struct Ledger {
    path: PathBuf,
    file: File,
    acked: HashSet<DeliveryKey>,
    /// Keys acknowledged since this process opened the ledger: kept by a compaction
    /// whatever the scan it is based on saw.
    acked_here: HashSet<DeliveryKey>,
}

impl Ledger {
    /// Opens (or creates) the ledger in `dir` and reads every key in it.
    pub fn open(dir: &Path) -> std::io::Result<Ledger> {
        crate::private::dir(dir)?;
        let path = dir.join(LEDGER_FILE);
        let text = match fs::read(&path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let acked = text.lines().filter_map(parse_line).collect();
        let mut file = crate::private::file()
            .create(true)
            .append(true)
            .open(&path)?;
        if !text.is_empty() && !text.ends_with('\n') {
            // A torn last line: end it, so the next key starts on a line of its own.
            file.write_all(b"\n")?;
        }
        Ok(Ledger {
            path,
            file,
            acked,
            acked_here: HashSet::new(),
        })
    }

    /// True when the webhook acknowledged `key`.
    pub fn contains(&self, key: &DeliveryKey) -> bool {
        self.acked.contains(key)
    }

    /// Records `key` as acknowledged, durably.
    pub fn record(&mut self, key: DeliveryKey) -> std::io::Result<()> {
        self.file
            .write_all(format!("{} {}\n", key.saga, key.seq).as_bytes())?;
        self.file.sync_data()?;
        self.acked.insert(key);
        self.acked_here.insert(key);
        Ok(())
    }

    /// Rewrites the file with the keys of sagas in `still_failed`, plus every key
    /// acknowledged by this process (a saga may have failed after the scan that
    /// produced `still_failed`).
    pub fn compact(&mut self, still_failed: &HashSet<SagaId>) -> std::io::Result<()> {
        let keep: HashSet<DeliveryKey> = self
            .acked
            .iter()
            .filter(|k| still_failed.contains(&k.saga) || self.acked_here.contains(k))
            .copied()
            .collect();
        let mut sorted: Vec<_> = keep.iter().collect();
        sorted.sort();
        let text: String = sorted
            .iter()
            .map(|k| format!("{} {}\n", k.saga, k.seq))
            .collect();
        let tmp = self.path.with_extension("tmp");
        {
            let mut file = crate::private::create(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.acked = keep;
        Ok(())
    }
}

fn parse_line(line: &str) -> Option<DeliveryKey> {
    let (saga, seq) = line.trim().split_once(' ')?;
    Some(DeliveryKey {
        saga: saga.parse().ok()?,
        seq: seq.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seq: u64) -> DeliveryKey {
        DeliveryKey {
            saga: SagaId::generate(),
            seq,
        }
    }

    #[test]
    fn keys_survive_reopen_and_torn_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (key(7), key(9));
        {
            let mut ledger = Ledger::open(dir.path()).unwrap();
            ledger.record(a).unwrap();
            ledger.record(b).unwrap();
        }
        // A crash mid-append leaves half a line behind.
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join(LEDGER_FILE))
            .unwrap();
        file.write_all(b"0192f3c4-5d6e").unwrap();
        let mut ledger = Ledger::open(dir.path()).unwrap();
        assert!(ledger.contains(&a) && ledger.contains(&b));
        let c = key(3);
        ledger.record(c).unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        assert!(ledger.contains(&c), "a key after a torn line is read back");
        assert_eq!(ledger.acked.len(), 3);
    }

    #[test]
    fn compaction_keeps_only_sagas_still_failed_and_keys_acked_here() {
        let dir = tempfile::tempdir().unwrap();
        let (gone, kept) = (key(5), key(6));
        {
            let mut ledger = Ledger::open(dir.path()).unwrap();
            ledger.record(gone).unwrap();
            ledger.record(kept).unwrap();
        }
        let mut ledger = Ledger::open(dir.path()).unwrap();
        let fresh = key(8);
        ledger.record(fresh).unwrap();
        ledger.compact(&HashSet::from([kept.saga])).unwrap();
        ledger.record(key(4)).unwrap();
        let reread = Ledger::open(dir.path()).unwrap();
        assert!(!reread.contains(&gone));
        assert!(reread.contains(&kept));
        assert!(reread.contains(&fresh), "acknowledged since open: kept");
        assert_eq!(reread.acked.len(), 3);
    }
}
