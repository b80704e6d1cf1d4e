//! `sagad journal salvage`, assembled: a new data directory holding every
//! saga of a damaged journal that can still be read whole, and a report of
//! everything that cannot.
//!
//! ```text
//!  DATA_DIR (only read)                                NEW_DIR (written)
//!  journal/ ─copy─▶ damage stepped around (store/sled/damage.rs)
//!           ─read every readable entry, gaps named (store/salvage.rs)
//!  wal/     ─its batches laid over them (store/wal/salvage.rs)
//!           ─sagas read whole, indexes rebuilt (kv/salvage/) ─▶ journal/ (sled), wal/ (empty)
//! ```
//!
//! Why a salvage and not a repair in place: after a clean stop the log has
//! been checkpointed into sled and holds little or nothing, so sled's files
//! are the only copy of the journal's history, and a damaged page of them
//! cannot be rebuilt from anywhere. What can be done is to keep everything
//! else: the salvage reads what sled still serves, past what it does not,
//! adds what the log still holds, and writes a journal that is whole again,
//! leaving the damaged directory as it was (an operator may want it, and a
//! later sagad may read more of it). The new directory is one a server
//! starts on; the report names every saga that could not be carried.
//!
//! Everything read is held in memory while the new store is written: a
//! salvage needs about as much memory as `DATA_DIR/journal` takes on disk,
//! and as much free space under `TMPDIR` for the copy of sled's files.

use std::{path::Path, sync::Arc};

use super::{
    Journal, JournalError, SledJournal,
    check::{self, CheckReport},
    history::{HISTORY_DIR, Segment},
    kv::{
        codec,
        salvage::{self as kv_salvage, Provenance, SalvageReport, Salvaged},
    },
    sled::scratch_dir,
    store::{
        KeyWrite, KvStore, MemoryStore, SledFinding, SledStore, StoreError, WalOptions, lend,
        salvage::{self as store_salvage, Gap, Readable},
        wal::salvage::{self as wal_salvage, Replayed},
    },
};

/// What a salvage read of a damaged journal, and the journal rebuilt from it.
pub struct Salvage {
    /// Bytes of sled's files copied to read them.
    pub copied_bytes: u64,
    /// What was found damaged in sled's files.
    pub findings: Vec<SledFinding>,
    /// Keys that could not be read, as "after X, before Y: why".
    pub unreadable: Vec<String>,
    /// What the log added.
    pub log: Replayed,
    /// What the rebuilt journal lacks.
    pub report: SalvageReport,
    /// The rebuilt journal's entries, in key order (shared with the thread
    /// that writes them).
    writes: Arc<Vec<KeyWrite>>,
    /// The segments of the damaged directory's history tier that verify
    /// whole: the new directory gets a copy of each (they never change).
    history: Vec<std::path::PathBuf>,
    /// The segments that do not, each "PATH: why": their sagas are lost.
    pub history_lost: Vec<String>,
}

impl SledJournal {
    /// Reads everything still readable of the journal in the stopped
    /// server's `dir`, changing nothing there (its lock is held shared
    /// meanwhile, so a server cannot start), and rebuilds a consistent
    /// journal from it, in memory: see the module docs.
    pub fn salvage(dir: &Path) -> Result<Salvage, JournalError> {
        let lock = SledStore::read_lock(dir)?;
        let scratch = scratch_dir("sagad-salvage-")?;
        let (mut readable, findings, copied_bytes, earlier_state) =
            match SledStore::open_copy(dir, scratch.path()) {
                Ok((sled, copy)) => {
                    let readable = store_salvage::read_all(&sled);
                    (readable, copy.findings, copy.bytes, copy.earlier_state)
                }
                // Not even a copy opens: nothing of sled's can be read, and
                // the log is all there is.
                Err(StoreError::Damaged(damaged)) => {
                    let readable = Readable {
                        gaps: vec![Gap {
                            after: None,
                            before: None,
                            error: damaged.why.clone(),
                        }],
                        ..Readable::default()
                    };
                    let finding = SledFinding {
                        file: damaged.file.clone(),
                        at: damaged.at,
                        what: damaged.why.clone(),
                    };
                    (readable, vec![finding], 0, true)
                }
                Err(e) => return Err(JournalError::Open(e)),
            };
        let log =
            wal_salvage::lay_over(&dir.join("wal"), &mut readable).map_err(JournalError::Open)?;
        let Verified {
            good: history,
            lost: history_lost,
            lost_through,
        } = verified_segments(&dir.join(HISTORY_DIR));
        drop(lock);
        let unreadable = readable.gaps.iter().map(describe_gap).collect();
        let lost_batches = match log.lost {
            Some((first, last)) => Some(format!("batches {first}..={last}")),
            None if log.marker_unknown && earlier_state => Some(
                "the store's batch marker could not be read, and sled dropped the end of its log"
                    .to_string(),
            ),
            None => None,
        };
        let store = MemoryStore::default();
        store
            .write(
                std::mem::take(&mut readable.entries)
                    .into_iter()
                    .map(|(k, v)| (k, Some(v)))
                    .collect(),
            )
            .map_err(JournalError::Read)?;
        let unknown = |key: &[u8]| readable.unknown(key) && !log.written.contains(key);
        let provenance = Provenance {
            unknown: &unknown,
            lost_batches: lost_batches.map(|why| (why, &log.written)),
            history_lost_through: lost_through,
        };
        let Salvaged { writes, report } = kv_salvage::salvage(&store, &provenance)?;
        Ok(Salvage {
            copied_bytes,
            findings,
            unreadable,
            log,
            report,
            writes: Arc::new(writes),
            history,
            history_lost,
        })
    }
}

impl Salvage {
    /// Whether the new journal holds everything the damaged one did.
    pub fn is_lossless(&self) -> bool {
        self.report.is_lossless() && self.log.lost.is_none() && self.history_lost.is_empty()
    }

    /// Writes the rebuilt journal as the new data directory `out` (which
    /// must not exist, or be empty), opens it as a server would and checks
    /// it: a salvage that does not check clean is a bug, and is refused.
    pub async fn write(&self, out: &Path) -> Result<CheckReport, JournalError> {
        let occupied = std::fs::read_dir(out).is_ok_and(|mut entries| entries.next().is_some());
        if occupied {
            return Err(JournalError::Open(StoreError::Open {
                dir: out.to_path_buf(),
                why: "it is not empty: a salvage writes a new data directory".into(),
            }));
        }
        // One open for the writes and the journal over them: the directory
        // stays locked from the first write to the check.
        let out = out.to_path_buf();
        let writes = self.writes.clone();
        let segments = self.history.clone();
        let opened = tokio::task::spawn_blocking(move || {
            let store = SledStore::open(&out).map_err(JournalError::Open)?;
            copy_history(&segments, &out.join(HISTORY_DIR))?;
            store
                .write_ordered(&mut lend(&writes))
                .and_then(|()| store.sync())
                .map_err(|e| JournalError::Write(std::sync::Arc::new(e)))?;
            // No spare segment: the server that starts on it prepares its own.
            let options = WalOptions {
                zero_filled_segments: false,
                ..WalOptions::default()
            };
            SledJournal::over(&out, store, options)
        });
        let journal = opened
            .await
            .map_err(|e| JournalError::Start(std::io::Error::other(e)))??;
        let report = match journal.history() {
            Some(history) => check::check_with_history(journal.store(), history),
            None => check::check(journal.store()),
        };
        journal.close().await?;
        let report = report?;
        if !report.is_clean() {
            return Err(JournalError::Corrupt {
                key: "the salvaged journal".into(),
                why: format!("it does not check clean, which is a bug of the salvage: {report}"),
            });
        }
        Ok(report)
    }
}

/// The segments of the history tier in `dir` that verify whole, and the
/// others as "PATH: why" (none without a tier).
fn verified_segments(dir: &Path) -> Verified {
    let mut verified = Verified::default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return verified;
    };
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "segment"))
        .collect();
    paths.sort();
    for path in paths {
        let opened = Segment::open(&path);
        // A footer that reads says how far the lost sagas' offsets reach.
        let reach = opened.as_ref().map_or(u64::MAX, |s| s.offsets().1);
        match opened.and_then(|s| s.check()) {
            Ok(_) => verified.good.push(path),
            Err(e) => {
                verified.lost.push(format!(
                    "{}: {e}; its sagas are not carried",
                    path.display()
                ));
                verified.lost_through = verified.lost_through.max(reach);
            }
        }
    }
    verified
}

/// The history tier's segments, sorted by what a check of each found.
#[derive(Default)]
struct Verified {
    good: Vec<std::path::PathBuf>,
    /// "PATH: why" of each segment that does not verify whole.
    lost: Vec<String>,
    /// The highest offset the lost segments hold (see
    /// [`Provenance::history_lost_through`]).
    lost_through: u64,
}

/// Copies `segments` into the history tier `to`, each synced, then `to`.
fn copy_history(segments: &[std::path::PathBuf], to: &Path) -> Result<(), JournalError> {
    let io = |what: &str, path: &Path, e: std::io::Error| {
        JournalError::Open(StoreError::io(format!("{what} {}", path.display()), e))
    };
    if segments.is_empty() {
        return Ok(());
    }
    crate::private::dir(to).map_err(|e| io("creating", to, e))?;
    for path in segments {
        let copy = to.join(path.file_name().expect("a listed file has a name"));
        std::fs::copy(path, &copy).map_err(|e| io("copying", path, e))?;
        std::fs::File::open(&copy)
            .and_then(|f| f.sync_all())
            .map_err(|e| io("syncing", &copy, e))?;
    }
    std::fs::File::open(to)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("syncing", to, e))
}

/// "keys after X and before Y could not be read: why", the keys named as
/// the schema names them.
fn describe_gap(gap: &Gap) -> String {
    let record = |key: &[u8]| format!("the journal record {}", codec::describe_key(key));
    let keys = match (gap.after.as_deref(), gap.before.as_deref()) {
        (None, None) => "every key".to_string(),
        (Some(after), None) => format!("keys after {}", record(after)),
        (None, Some(before)) => format!("keys before {}", record(before)),
        (Some(after), Some(before)) => {
            format!("keys after {} and before {}", record(after), record(before))
        }
    };
    format!("{keys} could not be read: {}", gap.error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        saga::{EventKind, Timestamp},
        testing::{completing, turning_back},
    };

    /// A salvage carries the history segments that verify whole into the new
    /// directory, and names the damaged ones as lost instead of refusing.
    #[tokio::test]
    async fn a_salvage_copies_the_history_tier_and_names_a_damaged_segment() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let journal = SledJournal::open(&data).unwrap();
        let kept = completing(Some("k"), 1_000);
        let damaged = turning_back(EventKind::SagaCompensated, 2_000);
        for events in [&kept, &damaged] {
            journal.append(events.clone()).await.unwrap();
            assert_eq!(
                journal
                    .move_to_history(Timestamp(u64::MAX), 1, 1)
                    .await
                    .unwrap()
                    .sagas,
                1
            );
        }
        journal.close().await.unwrap();
        drop(journal);
        // A flipped byte in the second segment's first block.
        let second = data.join(HISTORY_DIR).join("00000002.segment");
        let mut bytes = std::fs::read(&second).unwrap();
        bytes[12] ^= 0xff;
        std::fs::write(&second, bytes).unwrap();

        let salvage = SledJournal::salvage(&data).unwrap();
        assert_eq!(salvage.history_lost.len(), 1, "{:?}", salvage.history_lost);
        assert!(salvage.history_lost[0].contains("00000002.segment"));
        assert!(!salvage.is_lossless());
        // Its offsets are skipped from now on, as an archived saga's: a feed
        // resuming among them is told where to resume.
        let lost_through = (kept.len() + damaged.len()) as u64; // appended second
        assert_eq!(salvage.report.archived_through, (0, lost_through));
        assert!(
            salvage.report.to_string().contains(&format!(
                "history segments not carried: the archive horizon is raised from 0 to {lost_through}"
            )),
            "{}",
            salvage.report
        );
        let out = dir.path().join("out");
        let report = salvage.write(&out).await.unwrap();
        assert!(report.is_clean(), "{report}");
        assert_eq!(report.history_sagas, 1);
        let journal = SledJournal::open(&out).unwrap();
        assert_eq!(
            journal.read_saga(kept[0].saga).await.unwrap().len(),
            kept.len()
        );
        assert!(journal.read_saga(damaged[0].saga).await.unwrap().is_empty());
        journal.close().await.unwrap();
    }
}
