//! Checkpoints: the store behind the log gets what the log gathered, is made
//! durable, and the segments it then covers are deleted. And their mirror at
//! open, [`replay`]: the store gets every batch of the log it lacks.
//!
//! They run on a thread of their own ([`Shared::run_checkpoints`]), every
//! [`WalOptions::checkpoint_interval`](super::WalOptions) or when the writer
//! wakes it because segments or the overlay pile up: applying a few seconds of
//! batches and a sled flush take tens of milliseconds, and on the journal's
//! writer thread they would stall every append queued behind it.
//!
//! The store is written with `write_ordered` (in order, not atomically), the
//! batch marker (`m wal_batch`) last: a store that kept the marker kept
//! everything up to that batch, and one that lost part of a checkpoint still
//! has the older marker, so the next open replays every batch after it, in
//! order, and each key ends with its newest value.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::atomic::Ordering,
    thread,
    time::{Duration, Instant},
};

use backoff::{ExponentialBackoff, ExponentialBackoffBuilder, backoff::Backoff};

use super::{APPLIED_BATCH_KEY, Scan, Shared, priority, segment::io};
use crate::journal::store::{Damaged, KvStore, Result, StoreError, lend};

/// The longest wait between two tries of a failing checkpoint: how long a
/// store that works again may wait for its first checkpoint.
pub const CHECKPOINT_RETRY_MAX: Duration = Duration::from_secs(30);

/// The waits between the tries of a failing checkpoint: from one checkpoint
/// interval, doubling up to [`CHECKPOINT_RETRY_MAX`], with jitter, without end
/// (the log holds everything meanwhile).
fn retry_backoff(interval: Duration) -> ExponentialBackoff {
    ExponentialBackoffBuilder::new()
        .with_initial_interval(interval.min(CHECKPOINT_RETRY_MAX))
        .with_multiplier(2.0)
        .with_max_interval(CHECKPOINT_RETRY_MAX)
        .with_randomization_factor(0.2)
        .with_max_elapsed_time(None)
        .build()
}

/// Puts back into `inner` every batch of the log (`found`) it does not hold
/// yet, in order, and makes it durable; returns the number of the last batch
/// the store now holds. A store that lost batches the log no longer holds is
/// refused: nothing can restore them.
pub(super) fn replay<S: KvStore>(dir: &Path, inner: &S, found: &Scan) -> Result<u64> {
    let applied = applied_batch(inner)?;
    refuse_lost_batches(dir, applied, found, inner.location())?;
    if let Some((path, at)) = &found.torn {
        tracing::warn!(segment = %path.display(), at, "cutting off a torn, unacknowledged write at the end of the log");
    }
    let mut replayed = 0;
    for (_, record) in &found.records {
        if record.batch > applied {
            inner.write_ordered(&mut lend(&record.writes))?;
            replayed += 1;
        }
    }
    let last_batch = found
        .records
        .last()
        .map_or(applied, |(_, r)| r.batch.max(applied));
    if replayed > 0 {
        tracing::info!(replayed, "replayed log batches into the store");
    }
    inner.sync()?;
    Ok(last_batch)
}

/// Refuses a store that lost batches the log no longer holds: one that holds
/// batches up to `applied` beside a log that starts later lost the batches in
/// between, and nothing can restore them (an open for writing and a
/// read-only one refuse alike). `store` is the store's file, for the message.
pub(super) fn refuse_lost_batches(
    dir: &Path,
    applied: u64,
    found: &Scan,
    store: Option<PathBuf>,
) -> Result<()> {
    if found.segments.is_empty() || found.first_batch <= applied + 1 {
        return Ok(());
    }
    Err(StoreError::Damaged(Box::new(Damaged {
        file: store.unwrap_or_else(|| dir.to_path_buf()),
        at: None,
        why: format!(
            "it holds batches up to {applied} but the log starts at batch {}: batches {}..={} are lost (the store's files were damaged, cut short or replaced; sled then recovers silently to an earlier state)",
            found.first_batch,
            applied + 1,
            found.first_batch - 1
        ),
        data_dir: dir.parent().unwrap_or(dir).to_path_buf(),
        rebuild: found.rebuild(dir),
    })))
}

/// The number of the last batch `inner` holds (0: none).
pub(super) fn applied_batch<S: KvStore>(inner: &S) -> Result<u64> {
    match inner.get(APPLIED_BATCH_KEY)? {
        Some(bytes) => Ok(u64::from_be_bytes(bytes.as_slice().try_into().map_err(
            |_| StoreError::Corrupt {
                at: "the log's batch marker (wal_batch)".into(),
                why: format!("{} bytes where 8 were expected", bytes.len()),
            },
        )?)),
        None => Ok(0),
    }
}

impl<S: KvStore> Shared<S> {
    /// Checkpoints every interval (or when woken) until stopped; after a
    /// failure, tries again only after a backoff ([`retry_backoff`]), and
    /// lets the store recover first (sled is opened afresh): a store that
    /// fails (a full disk) is neither hammered nor grown by retries, and
    /// checkpoints come back by themselves once it works.
    pub(super) fn run_checkpoints(&self) {
        priority::lower();
        let mut failing: Option<ExponentialBackoff> = None;
        loop {
            let wait = match failing.as_mut() {
                None => self.options.checkpoint_interval,
                Some(backoff) => backoff.next_backoff().unwrap_or(CHECKPOINT_RETRY_MAX),
            };
            // While failing, a wake-up from the writer (segments piling up)
            // does not cut the backoff short: only the stop does.
            let due = Instant::now() + wait;
            loop {
                thread::park_timeout(due.saturating_duration_since(Instant::now()));
                if self.stop.load(Ordering::Acquire) || failing.is_none() || Instant::now() >= due {
                    break;
                }
            }
            // Woken to stop: the last checkpoint is the owner's call (`close`;
            // a simulated crash takes none).
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            let result = match failing {
                Some(_) => self.inner.recover().and_then(|()| self.checkpoint()),
                None => self.checkpoint(),
            };
            match result {
                Ok(()) => {
                    if failing.take().is_some() {
                        tracing::warn!("store checkpoints work again");
                    }
                    // Here, between checkpoints, nothing writes the store.
                    if let Err(e) = self.inner.upkeep() {
                        tracing::warn!(error = %e, "store upkeep failed");
                    }
                }
                Err(e) => {
                    let interval = self.options.checkpoint_interval;
                    let backoff = failing.get_or_insert_with(|| retry_backoff(interval));
                    // The log still holds everything: nothing is lost, the
                    // segments just stay until a checkpoint works.
                    tracing::warn!(
                        error = %e,
                        retry_in_ms = backoff.current_interval.as_millis() as u64,
                        "store checkpoint failed; keeping the log segments"
                    );
                }
            }
        }
    }

    /// Applies what the overlay gathered to the store and makes it durable,
    /// then deletes the segments that only hold batches up to there.
    pub(super) fn checkpoint(&self) -> Result<()> {
        let Some(frozen) = self.overlay.freeze(self.options.compact) else {
            return Ok(());
        };
        // Not under the log lock: appends go on while the store is written.
        // Every batch carries the marker, so a frozen layer always holds one.
        let Some(Some(marker)) = frozen.get(APPLIED_BATCH_KEY) else {
            return Err(StoreError::Corrupt {
                at: "the log's batch marker (wal_batch)".into(),
                why: "a checkpoint found batches without their marker".into(),
            });
        };
        let upto = <[u8; 8]>::try_from(marker.as_slice())
            .map(u64::from_be_bytes)
            .unwrap_or_default();
        let writes = || {
            frozen
                .iter()
                .filter(|(key, _)| key.as_slice() != APPLIED_BATCH_KEY)
                .map(|(key, value)| (key.as_slice(), value.as_deref()))
        };
        let half = (frozen.len() - 1) / 2;
        self.inner.write_ordered(&mut writes().take(half))?;
        // Half of the checkpoint durable in the store, its marker not: the worst
        // a crash in the middle can leave (a disk may write any part of what
        // was not synced); replay at the next open completes it.
        #[cfg(all(feature = "failpoints", debug_assertions))]
        if ::fail::eval("journal::mid_checkpoint", |_| ()).is_some() {
            let _ = self.inner.sync();
            crate::failpoint::die("journal::mid_checkpoint");
        }
        // The marker last: a store that kept it kept the rest.
        let marker = (APPLIED_BATCH_KEY, Some(marker.as_slice()));
        self.inner
            .write_ordered(&mut writes().skip(half).chain(std::iter::once(marker)))?;
        drop(frozen);
        self.inner.sync()?;
        self.overlay.release_frozen();
        let mut log = self.lock();
        log.checkpointed = upto;
        let current = log.segment.index;
        let mut kept = Vec::new();
        for (index, path, last) in std::mem::take(&mut log.segments) {
            if index != current && last <= upto {
                fs::remove_file(&path)
                    .map_err(|e| io(format!("removing {}", path.display()), e))?;
            } else {
                kept.push((index, path, last));
            }
        }
        log.segments = kept;
        Ok(())
    }
}
