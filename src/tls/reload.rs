//! Re-reading certificate files while serving: each configuration is a
//! [`crate::reload::Reload`] part, so the binary's SIGHUP rebuilds it and the
//! server's timer rebuilds it when one of its files changed (its modification time or its length: file times tick
//! coarsely, a few milliseconds, so two writes within one tick differ only
//! in what they wrote).
//!
//! Invariants:
//! - A [`Reloadable`] always holds a configuration that was built whole from
//!   its files; a rebuild that fails leaves the previous one in place.
//! - Readers never wait for a rebuild: files are read and parsed before the
//!   write lock is taken, which is held only to swap one `Arc`.
//! - The timer retries a failed rebuild only after the files change again,
//!   so a broken file is reported once, not every interval; SIGHUP always
//!   rebuilds.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, RwLock},
    time::SystemTime,
};

use super::TlsError;
use crate::reload::ReloadError;

type Build<T> = Box<dyn Fn() -> Result<T, TlsError> + Send + Sync>;

/// A configuration built from files, and the means to build it again.
pub struct Reloadable<T> {
    /// What it configures, for logs: "the gRPC listener".
    what: String,
    files: Vec<PathBuf>,
    build: Build<T>,
    /// A std lock: held only to clone or swap the `Arc`, never across an await.
    current: RwLock<Arc<T>>,
    /// The files' stamps at the last build attempt (std mutex, held only to
    /// compare or store).
    seen: Mutex<Vec<Stamp>>,
}

impl<T> Reloadable<T> {
    /// Builds the first configuration; its error is a start-up error.
    pub fn load(
        what: impl Into<String>,
        files: Vec<PathBuf>,
        build: impl Fn() -> Result<T, TlsError> + Send + Sync + 'static,
    ) -> Result<Self, TlsError> {
        let seen = modified(&files);
        let first = build()?;
        Ok(Self {
            what: what.into(),
            files,
            build: Box::new(build),
            current: RwLock::new(Arc::new(first)),
            seen: Mutex::new(seen),
        })
    }

    /// The configuration to use for the next connection.
    pub fn current(&self) -> Arc<T> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn rebuild(&self) -> Result<(), TlsError> {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = modified(&self.files);
        let next = Arc::new((self.build)()?);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(())
    }

    fn changed(&self) -> bool {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) != modified(&self.files)
    }
}

/// What says a file changed: its modification time and length; `None` for a
/// file that cannot be read.
type Stamp = Option<(SystemTime, u64)>;

fn modified(files: &[PathBuf]) -> Vec<Stamp> {
    let stamp = |f: &PathBuf| {
        let meta = std::fs::metadata(f).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    };
    files.iter().map(stamp).collect()
}

impl<T: Send + Sync> crate::reload::Reload for Reloadable<T> {
    fn what(&self) -> String {
        let files = self
            .files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        format!("the TLS certificates of {} ({files})", self.what)
    }

    fn reload(&self) -> Result<String, ReloadError> {
        self.rebuild()?;
        Ok("new connections use them".into())
    }

    fn changed(&self) -> bool {
        Reloadable::changed(self)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::reload::ReloadHooks;

    /// A reloadable over one file whose "configuration" is the file's text;
    /// a file saying "bad" fails to build.
    fn over(path: &std::path::Path, builds: Arc<AtomicU32>) -> Arc<Reloadable<String>> {
        let file = path.to_path_buf();
        let reloadable = Reloadable::load("the test listener", vec![file.clone()], move || {
            builds.fetch_add(1, Ordering::SeqCst);
            let text = std::fs::read_to_string(&file).unwrap();
            if text == "bad" {
                return Err(TlsError::Missing {
                    path: file.clone(),
                    setting: "--tls-cert".into(),
                    what: "certificate",
                });
            }
            Ok(text)
        });
        Arc::new(reloadable.unwrap())
    }

    #[test]
    fn the_timer_rebuilds_only_what_changed_and_a_failure_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cert.pem");
        std::fs::write(&path, "one").unwrap();
        let builds = Arc::new(AtomicU32::new(0));
        let part = over(&path, builds.clone());
        let reloader = ReloadHooks::default();
        reloader.register(part.clone());
        assert_eq!(builds.load(Ordering::SeqCst), 1);

        assert!(reloader.reload_changed("timer").is_empty());
        assert_eq!(builds.load(Ordering::SeqCst), 1, "nothing changed");

        // Each write below has a new length, so it is seen as a change even
        // within one tick of the file clock.
        std::fs::write(&path, "two!").unwrap();
        let report = reloader.reload_changed("timer");
        assert_eq!(report.len(), 1);
        assert!(report[0].what.contains("the test listener"), "{report:?}");
        assert!(report[0].outcome.is_ok(), "{report:?}");
        assert_eq!(*part.current(), "two!");

        std::fs::write(&path, "bad").unwrap();
        let report = reloader.reload_changed("timer");
        assert!(
            report[0]
                .outcome
                .as_ref()
                .unwrap_err()
                .contains("--tls-cert")
        );
        assert_eq!(*part.current(), "two!", "the old one stays");
        let builds_after_failure = builds.load(Ordering::SeqCst);
        reloader.reload_changed("timer");
        assert_eq!(
            builds.load(Ordering::SeqCst),
            builds_after_failure,
            "a bad file is not retried until it changes again"
        );
        let report = reloader.reload_all("SIGHUP");
        assert!(report[0].outcome.is_err(), "SIGHUP always retries");

        std::fs::write(&path, "three").unwrap();
        reloader.reload_changed("timer");
        assert_eq!(*part.current(), "three");
    }
}
