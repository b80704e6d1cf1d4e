//! Reloading files while serving: one list of hooks that SIGHUP and a timer
//! both drive, so every part that reads a file at start (the auth tokens
//! file, TLS certificates) can be changed without a restart the same way.
//!
//! A part plugs in by implementing [`Reload`] and registering itself with the
//! server's [`ReloadHooks`]. The binary's SIGHUP calls
//! [`ReloadHooks::reload_all`]; the server's timer calls
//! [`ReloadHooks::reload_changed`], which re-reads only the parts whose files
//! changed.
//!
//! Invariants:
//! - A failed reload changes nothing: the part keeps what it had, and the
//!   error (naming the file) is logged at ERROR. Bad input never half-applies.
//! - The hooks log each outcome, so parts need not, and every line starts
//!   with what triggered it ("SIGHUP", "file changed").
//! - Reloading reads files: the hooks' methods block, and the async callers
//!   run them on the blocking pool.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use tokio_util::sync::CancellationToken;

/// Why a reload kept the previous configuration (the message names the file).
pub type ReloadError = Box<dyn std::error::Error + Send + Sync>;

/// A configuration read from files that can be read again.
///
/// Implementations **must** swap in a new configuration only when it was
/// built whole, and **must** keep the previous one on error.
pub trait Reload: Send + Sync {
    /// What it is, for log lines: "the auth tokens file /etc/sagad/tokens".
    fn what(&self) -> String;
    /// Re-reads its files now, and says what it now holds ("3 entries").
    fn reload(&self) -> Result<String, ReloadError>;
    /// Whether its files changed since they were last read (a cheap check of
    /// modification times, not of contents).
    fn changed(&self) -> bool;
}

/// What one reload of one part did.
#[derive(Debug)]
pub struct Reloaded {
    /// [`Reload::what`].
    pub what: String,
    /// What it now holds, or why it kept what it had.
    pub outcome: Result<String, String>,
}

/// Every reloadable part of one server; cheap to clone, shared by the
/// signal handler and the timer.
#[derive(Clone, Default)]
pub struct ReloadHooks {
    /// A std lock: held only to push or to clone the list, never across a
    /// reload or an await.
    hooks: Arc<RwLock<Vec<Arc<dyn Reload>>>>,
}

impl ReloadHooks {
    /// Adds a part; SIGHUP and the timer reload it from now on.
    pub fn register(&self, hook: Arc<dyn Reload>) {
        self.hooks
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(hook);
    }

    /// True when nothing is reloadable (no file-backed configuration).
    pub fn is_empty(&self) -> bool {
        self.hooks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    fn parts(&self) -> Vec<Arc<dyn Reload>> {
        self.hooks.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-reads every part now, logging each outcome. Blocking.
    pub fn reload_all(&self, trigger: &str) -> Vec<Reloaded> {
        self.reload(trigger, |_| true)
    }

    /// Re-reads the parts whose files changed, logging each outcome. Blocking.
    pub fn reload_changed(&self, trigger: &str) -> Vec<Reloaded> {
        self.reload(trigger, |part| part.changed())
    }

    fn reload(&self, trigger: &str, pick: impl Fn(&dyn Reload) -> bool) -> Vec<Reloaded> {
        self.parts()
            .iter()
            .filter(|part| pick(part.as_ref()))
            .map(|part| {
                let what = part.what();
                let outcome = match part.reload() {
                    Ok(holds) => {
                        tracing::info!("{trigger}: reloaded {what}: {holds}");
                        Ok(holds)
                    }
                    Err(error) => {
                        tracing::error!("{trigger}: could not reload {what}, the previous one stays in force: {error}");
                        Err(error.to_string())
                    }
                };
                Reloaded { what, outcome }
            })
            .collect()
    }

    /// Every `every`, reloads what changed, until `shutdown`.
    pub async fn watch(self, every: Duration, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let hooks = self.clone();
            let checked =
                tokio::task::spawn_blocking(move || hooks.reload_changed("file changed")).await;
            if let Err(e) = checked {
                tracing::error!(error = %e, "the reload task failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use super::*;

    /// A part that counts its reloads and fails while `broken` is set.
    #[derive(Default)]
    struct Counting {
        reloads: AtomicU32,
        dirty: AtomicBool,
        broken: AtomicBool,
    }

    impl Reload for Counting {
        fn what(&self) -> String {
            "the counter".into()
        }

        fn reload(&self) -> Result<String, ReloadError> {
            if self.broken.load(Ordering::SeqCst) {
                return Err("counter file: line 1: bad".into());
            }
            let n = self.reloads.fetch_add(1, Ordering::SeqCst) + 1;
            self.dirty.store(false, Ordering::SeqCst);
            Ok(format!("{n} reloads"))
        }

        fn changed(&self) -> bool {
            self.dirty.load(Ordering::SeqCst)
        }
    }

    #[test]
    fn all_reloads_every_part_and_changed_only_the_changed_ones() {
        let hooks = ReloadHooks::default();
        assert!(hooks.is_empty());
        let part = Arc::new(Counting::default());
        hooks.register(part.clone());
        assert!(!hooks.is_empty());

        assert!(hooks.reload_changed("timer").is_empty());
        let all = hooks.reload_all("SIGHUP");
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].outcome.as_deref(), Ok("1 reloads"));

        part.dirty.store(true, Ordering::SeqCst);
        part.broken.store(true, Ordering::SeqCst);
        let failed = hooks.reload_changed("timer");
        assert!(failed[0].outcome.as_ref().unwrap_err().contains("line 1"));
        assert_eq!(part.reloads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_timer_reloads_changed_parts_until_shutdown() {
        let hooks = ReloadHooks::default();
        let part = Arc::new(Counting::default());
        hooks.register(part.clone());
        let shutdown = CancellationToken::new();
        let watching = tokio::spawn(hooks.watch(Duration::from_millis(10), shutdown.clone()));
        part.dirty.store(true, Ordering::SeqCst);
        // Polled, with a deadline far beyond any tick: the timer's pace is not asserted.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while part.reloads.load(Ordering::SeqCst) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the timer never reloaded"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!part.changed());
        shutdown.cancel();
        watching.await.unwrap();
    }
}
