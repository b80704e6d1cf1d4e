//! Re-reading certificate files while serving: on demand (the binary's
//! SIGHUP) and on a timer that rebuilds a configuration only when one of its
//! files changed (its modification time or its length: file times tick
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
    time::{Duration, SystemTime},
};

use tokio_util::sync::CancellationToken;

use super::TlsError;

/// How often the timer looks at the certificate files' modification times.
pub const TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(60);

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

/// A [`Reloadable`] of any configuration type, as the reloader holds them.
pub(crate) trait Reload: Send + Sync {
    fn what(&self) -> &str;
    fn files(&self) -> &[PathBuf];
    fn rebuild(&self) -> Result<(), TlsError>;
    fn changed(&self) -> bool;
}

impl<T: Send + Sync> Reload for Reloadable<T> {
    fn what(&self) -> &str {
        &self.what
    }

    fn files(&self) -> &[PathBuf] {
        &self.files
    }

    fn rebuild(&self) -> Result<(), TlsError> {
        Reloadable::rebuild(self)
    }

    fn changed(&self) -> bool {
        Reloadable::changed(self)
    }
}

/// What one reload did.
#[derive(Debug, Default)]
pub struct ReloadReport {
    /// What was rebuilt from its files, e.g. "the gRPC listener".
    pub reloaded: Vec<String>,
    /// What kept its previous configuration, and why (the error names the file).
    pub failed: Vec<(String, TlsError)>,
}

/// Every reloadable TLS configuration of one server; cheap to clone. Empty
/// when no TLS is configured.
#[derive(Clone, Default)]
pub struct TlsReloader {
    parts: Arc<Vec<Arc<dyn Reload>>>,
}

impl TlsReloader {
    pub(crate) fn new(parts: Vec<Arc<dyn Reload>>) -> Self {
        Self {
            parts: Arc::new(parts),
        }
    }

    /// True when there is nothing to reload (no TLS configured).
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Re-reads every certificate file now, and logs what happened, each line
    /// starting with `trigger` ("SIGHUP"). Blocking: it reads files.
    pub fn reload_all(&self, trigger: &str) -> ReloadReport {
        self.reload(trigger, |_| true)
    }

    /// Rebuilds the configurations whose files changed since they were last
    /// read, and logs what happened. Blocking: it reads files.
    pub fn reload_changed(&self, trigger: &str) -> ReloadReport {
        self.reload(trigger, |part| part.changed())
    }

    fn reload(&self, trigger: &str, pick: impl Fn(&dyn Reload) -> bool) -> ReloadReport {
        let mut report = ReloadReport::default();
        for part in self.parts.iter().filter(|p| pick(p.as_ref())) {
            let files = part
                .files()
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            match part.rebuild() {
                Ok(()) => {
                    tracing::info!(
                        files,
                        "{trigger}: reloaded the TLS certificates of {}",
                        part.what()
                    );
                    report.reloaded.push(part.what().to_string());
                }
                Err(error) => {
                    tracing::error!(
                        "{trigger}: kept the previous TLS certificates of {}: {error}",
                        part.what()
                    );
                    report.failed.push((part.what().to_string(), error));
                }
            }
        }
        report
    }

    /// Every `every`, rebuilds what changed, until `shutdown`.
    pub async fn watch(self, every: Duration, shutdown: CancellationToken) {
        if self.is_empty() {
            return;
        }
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let reloader = self.clone();
            let checked = tokio::task::spawn_blocking(move || {
                reloader.reload_changed("certificate files changed");
            })
            .await;
            if let Err(e) = checked {
                tracing::error!(error = %e, "the TLS reload task failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

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
        let reloader = TlsReloader::new(vec![part.clone()]);
        assert_eq!(builds.load(Ordering::SeqCst), 1);

        let report = reloader.reload_changed("timer");
        assert!(report.reloaded.is_empty() && report.failed.is_empty());
        assert_eq!(builds.load(Ordering::SeqCst), 1, "nothing changed");

        // Each write below has a new length, so it is seen as a change even
        // within one tick of the file clock.
        std::fs::write(&path, "two!").unwrap();
        let report = reloader.reload_changed("timer");
        assert_eq!(report.reloaded, vec!["the test listener".to_string()]);
        assert_eq!(*part.current(), "two!");

        std::fs::write(&path, "bad").unwrap();
        let report = reloader.reload_changed("timer");
        assert_eq!(report.failed.len(), 1);
        assert!(report.failed[0].1.to_string().contains("--tls-cert"));
        assert_eq!(*part.current(), "two!", "the old one stays");
        let builds_after_failure = builds.load(Ordering::SeqCst);
        reloader.reload_changed("timer");
        assert_eq!(
            builds.load(Ordering::SeqCst),
            builds_after_failure,
            "a bad file is not retried until it changes again"
        );
        let report = reloader.reload_all("SIGHUP");
        assert_eq!(report.failed.len(), 1, "SIGHUP always retries");

        std::fs::write(&path, "three").unwrap();
        reloader.reload_changed("timer");
        assert_eq!(*part.current(), "three");
    }
}
