//! Disk faults on demand, for tests: a switch that makes syncs fail as on a
//! full disk, and a store wrapper that obeys it.
//!
//! The switch goes where production syncs: [`WalOptions::log_fault`] makes the
//! write-ahead log's own `fdatasync` (the one sync per batch a running journal
//! does) fail, and [`FaultyStore`] makes any store's syncs fail (the store
//! behind the log, whose syncs are the checkpoints). A failing sync reports
//! `ENOSPC`, so what the journal shows is what a full disk shows.
//!
//! [`WalOptions::log_fault`]: super::WalOptions::log_fault

use std::sync::{
    Arc, RwLockReadGuard,
    atomic::{AtomicBool, Ordering},
};

use super::{Direction, KeyRange, KeyWrite, KeyWriteRef, KvStore, Result, StoreError, Visit};

/// Whether syncs fail right now; shared between a test and the stores it
/// injects faults into.
#[derive(Debug, Default)]
pub struct DiskFault {
    failing: AtomicBool,
}

impl DiskFault {
    /// A switch, healthy to begin with.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// From now on, syncs fail.
    pub fn fail(&self) {
        self.failing.store(true, Ordering::SeqCst);
    }

    /// From now on, syncs work again.
    pub fn heal(&self) {
        self.failing.store(false, Ordering::SeqCst);
    }

    /// Whether syncs fail.
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::SeqCst)
    }

    /// The error a sync of `what` meets, while failing.
    pub fn check(&self, what: &str) -> Result<()> {
        if self.is_failing() {
            return Err(StoreError::io(
                format!("{what} (injected)"),
                std::io::Error::from_raw_os_error(libc::ENOSPC),
            ));
        }
        Ok(())
    }
}

/// A store whose syncs fail while its [`DiskFault`] says so; everything else
/// goes to the store inside.
pub struct FaultyStore<S> {
    inner: S,
    fault: Arc<DiskFault>,
}

impl<S: KvStore> FaultyStore<S> {
    /// `inner`, failing its syncs while `fault` is failing.
    pub fn new(inner: S, fault: Arc<DiskFault>) -> Self {
        Self { inner, fault }
    }

    /// The store inside.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

impl<S: KvStore> KvStore for FaultyStore<S> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(key)
    }

    fn range(&self, range: KeyRange<'_>, dir: Direction, visit: &mut Visit<'_>) -> Result<()> {
        self.inner.range(range, dir, visit)
    }

    fn write(&self, batch: Vec<KeyWrite>) -> Result<()> {
        self.inner.write(batch)
    }

    fn write_ordered(&self, batch: &mut dyn Iterator<Item = KeyWriteRef<'_>>) -> Result<()> {
        self.inner.write_ordered(batch)
    }

    fn sync(&self) -> Result<()> {
        self.fault.check("sync of the store")?;
        self.inner.sync()
    }

    fn recover(&self) -> Result<()> {
        self.inner.recover()
    }

    fn failure(&self) -> Option<String> {
        self.inner.failure()
    }

    fn close(&self) -> Result<()> {
        self.inner.close()
    }

    fn hold_rewrites(&self) -> Option<RwLockReadGuard<'_, ()>> {
        self.inner.hold_rewrites()
    }
}
