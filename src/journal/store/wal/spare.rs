//! Zero-filled files for the log's next segment, prepared ahead of need on a
//! thread of their own.
//!
//! Why: an append into a hole of a sparse file (or into a range `fallocate`
//! reserved) allocates blocks, so its `fdatasync` must also commit the
//! filesystem's journal; into blocks that were written before, it only writes
//! the data. Measured on this project's ext4 VM disk (`BENCHMARKS.md`,
//! session 6), for 4.5 KiB appends (a W1 c64 group commit): p50 0.32–0.35 ms and 128–154 µs of
//! CPU per sync in a sparse file, 0.18–0.20 ms and 78–84 µs in a zero-filled one.
//! Writing the zeros costs a segment's worth of sequential writes, done here
//! where no append waits for it.
//!
//! Guarantees:
//! - A file named [`SPARE`] in the log's directory is always a whole spare: the
//!   size it was asked for, zeros except perhaps a segment header (a taker
//!   that died before renaming it). It is written as [`PREPARING`], synced,
//!   and only then renamed into place, so a crash leaves at worst a partial
//!   [`PREPARING`] file, which the next start deletes.
//! - Between [`Spares::take`] and [`Spares::used`] the preparer leaves the spare
//!   alone, so the taker can rename it into a segment without a race.
//! - A spare is written when one is wanted: at once when a start finds none
//!   (the log's first segment is then sparse), and after a spare was used only
//!   once the log asks again ([`Spares::want`], when its segment is half full).
//!   So a restart, which takes the spare for its fresh segment, does not write
//!   a segment of zeros while it begins to serve.
//! - Neither name ends in `.wal`: a scan of the log never reads them.
//! - A spare is written only while it fits beside the disk reserve
//!   (`space.rs`); a failed one is deleted, not left to hold the space it
//!   took; and a stop deletes a half-written one ([`Spares::stop`]).

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use super::space;

/// The spare ready to become the next segment.
pub const SPARE: &str = "spare";
/// A spare being written.
pub const PREPARING: &str = "spare.preparing";

/// Zeros written between syncs: small steps interleave with the log's own
/// syncs instead of holding the disk for a whole segment at once.
const STEP_BYTES: usize = 1 << 20;
/// How long the preparer waits before it tries again after a failure.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// The spare of one log directory and the thread that keeps one ready.
pub struct Spares {
    path: PathBuf,
    size: u64,
    state: Arc<State>,
    /// The preparer thread, joined by `stop` (a std mutex: only `stop` and
    /// `want` take it, never for long).
    preparer: std::sync::Mutex<Option<thread::JoinHandle<()>>>,
}

struct State {
    /// A whole spare is at `path` and nobody has taken it.
    ready: AtomicBool,
    /// The log wants a spare and none is ready: the preparer works on one.
    wanted: AtomicBool,
    stop: AtomicBool,
}

impl Spares {
    /// Deletes a half-written spare left by a crash, keeps a whole one, and
    /// starts the thread that prepares a spare of `size` bytes when one is
    /// wanted, beginning now if none is ready, and while the spare fits
    /// beside `reserve` free bytes.
    pub fn start(dir: &Path, size: u64, reserve: u64) -> io::Result<Self> {
        match fs::remove_file(dir.join(PREPARING)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let path = dir.join(SPARE);
        let ready = is_whole(&path, size);
        let state = Arc::new(State {
            ready: AtomicBool::new(ready),
            wanted: AtomicBool::new(!ready),
            stop: AtomicBool::new(false),
        });
        let preparer = {
            let (dir, path, state) = (dir.to_path_buf(), path.clone(), state.clone());
            thread::Builder::new()
                .name("sagad-wal-spare".into())
                .spawn(move || keep_one_ready(&dir, &path, size, reserve, &state))?
        };
        Ok(Self {
            path,
            size,
            state,
            preparer: std::sync::Mutex::new(Some(preparer)),
        })
    }

    /// Whether a spare is ready to be taken.
    pub fn ready(&self) -> bool {
        self.state.ready.load(Ordering::Acquire)
    }

    /// The ready spare of `size` bytes, opened for writing, and its path. The
    /// caller renames it into a segment and then calls [`Spares::used`], whether
    /// that worked or not.
    pub fn take(&self, size: u64) -> Option<(File, &Path)> {
        if size != self.size || !self.ready() {
            return None;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .ok()?;
        Some((file, &self.path))
    }

    /// The taken spare is gone (or is left as it was); the next one is
    /// prepared when [`Spares::want`] asks.
    pub fn used(&self) {
        self.state.ready.store(false, Ordering::Release);
        // A `want` that met the preparer finishing may have left this set
        // with the spare ready; cleared, so the next `want` wakes the preparer.
        self.state.wanted.store(false, Ordering::Release);
    }

    /// Asks for the next spare, if none is ready or being prepared. Cheap
    /// enough to call on every append. Calls of `take`, `used` and `want`
    /// must not overlap (the log makes them under its lock).
    pub fn want(&self) {
        if self.state.ready.load(Ordering::Acquire)
            || self.state.wanted.swap(true, Ordering::AcqRel)
        {
            return;
        }
        if let Some(preparer) = self.lock_preparer().as_ref() {
            preparer.thread().unpark();
        }
    }

    /// Stops the preparer; a spare it was writing is deleted. Later calls
    /// do nothing.
    pub fn stop(&self) {
        self.state.stop.store(true, Ordering::Release);
        let preparer = self.lock_preparer().take();
        if let Some(preparer) = preparer {
            preparer.thread().unpark();
            let _ = preparer.join();
        }
    }

    fn lock_preparer(&self) -> std::sync::MutexGuard<'_, Option<thread::JoinHandle<()>>> {
        self.preparer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Spares {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether `path` is a spare of `size` bytes (only whole ones get that name).
fn is_whole(path: &Path, size: u64) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == size)
}

/// The preparer thread: makes a spare whenever one is wanted and none is
/// ready, until stopped.
fn keep_one_ready(dir: &Path, path: &Path, size: u64, reserve: u64, state: &State) {
    super::priority::lower();
    let done = || {
        state.ready.store(true, Ordering::Release);
        state.wanted.store(false, Ordering::Release);
    };
    while !state.stop.load(Ordering::Acquire) {
        if state.ready.load(Ordering::Acquire) || !state.wanted.load(Ordering::Acquire) {
            thread::park();
            continue;
        }
        // A taker whose rename failed left the spare where it was.
        if is_whole(path, size) {
            done();
            continue;
        }
        match space::free_bytes(dir) {
            Ok(free) if free < size + reserve => {
                // The log goes on in sparse segments: they take space only as
                // they fill.
                tracing::warn!(
                    free = %space::mib(free),
                    reserve = %space::mib(reserve),
                    dir = %dir.display(),
                    "not preparing a zero-filled log segment: it would not leave the disk reserve free; trying again later"
                );
                thread::park_timeout(RETRY_AFTER);
                continue;
            }
            _ => {}
        }
        match prepare(dir, path, size, &state.stop) {
            Ok(true) => done(),
            Ok(false) => {}
            Err(e) => {
                // Not fatal: the log falls back to sparse segments meanwhile.
                tracing::warn!(error = %e, dir = %dir.display(), "cannot prepare a zero-filled log segment; trying again later");
                thread::park_timeout(RETRY_AFTER);
            }
        }
    }
}

/// Writes a zero-filled file of `size` bytes as [`PREPARING`], syncs it and
/// renames it to `path`. `Ok(false)`: stopped before it was done.
fn prepare(dir: &Path, path: &Path, size: u64, stop: &AtomicBool) -> io::Result<bool> {
    let preparing = dir.join(PREPARING);
    let written = write_zeros(&preparing, size, stop);
    if !matches!(written, Ok(true)) {
        // Stopped, or failed (a full disk): the partial file would only hold
        // on to the space it took.
        let _ = fs::remove_file(&preparing);
        return written;
    }
    fs::rename(&preparing, path)?;
    File::open(dir)?.sync_all()?;
    Ok(true)
}

/// Writes `size` zeros to a new file at `path`, synced; `Ok(false)`: stopped first.
fn write_zeros(path: &Path, size: u64, stop: &AtomicBool) -> io::Result<bool> {
    let mut file = crate::private::create(path)?;
    let zeros = vec![0u8; STEP_BYTES];
    let mut written = 0;
    while written < size {
        if stop.load(Ordering::Acquire) {
            return Ok(false);
        }
        let step = (size - written).min(STEP_BYTES as u64) as usize;
        file.write_all(&zeros[..step])?;
        file.sync_data()?;
        written += step as u64;
    }
    file.sync_all()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::{os::unix::fs::MetadataExt, time::Instant};

    use super::*;

    fn wait_ready(spares: &Spares) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !spares.ready() {
            assert!(Instant::now() < deadline, "no spare became ready");
            thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn a_spare_is_whole_zeros_and_a_new_one_is_made_when_wanted() {
        let dir = tempfile::tempdir().unwrap();
        let size = 3 * STEP_BYTES as u64 + 100;
        let spares = Spares::start(dir.path(), size, 0).unwrap();
        wait_ready(&spares);
        assert!(spares.take(size + 1).is_none(), "only spares of its size");
        let (_, path) = spares.take(size).expect("a ready spare");
        let meta = fs::metadata(path).unwrap();
        assert_eq!(meta.len(), size);
        // Written, not a hole: every block is allocated.
        assert!(meta.blocks() * 512 >= size, "{} blocks", meta.blocks());
        assert!(fs::read(path).unwrap().iter().all(|b| *b == 0));
        let taken = dir.path().join("0000000000000002.wal");
        fs::rename(path, &taken).unwrap();
        spares.used();
        assert!(!spares.ready());
        spares.want();
        wait_ready(&spares);
        assert_eq!(fs::metadata(dir.path().join(SPARE)).unwrap().len(), size);
        assert_eq!(
            fs::metadata(&taken).unwrap().len(),
            size,
            "the taken one stays"
        );
        assert!(!dir.path().join(PREPARING).exists());
    }

    #[test]
    fn a_start_keeps_a_whole_spare_and_deletes_a_partial_one() {
        let dir = tempfile::tempdir().unwrap();
        let size = STEP_BYTES as u64;
        fs::write(dir.path().join(SPARE), vec![0u8; size as usize]).unwrap();
        fs::write(dir.path().join(PREPARING), b"cut short").unwrap();
        let spares = Spares::start(dir.path(), size, 0).unwrap();
        assert!(spares.ready(), "the whole spare is ready at once");
        assert!(!dir.path().join(PREPARING).exists());
        drop(spares);

        // A spare of another size (the segment size changed) is replaced.
        let spares = Spares::start(dir.path(), 2 * size, 0).unwrap();
        wait_ready(&spares);
        assert_eq!(
            fs::metadata(dir.path().join(SPARE)).unwrap().len(),
            2 * size
        );
    }
}
