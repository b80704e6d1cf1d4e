//! A `BTreeMap` as a store: for tests, and for the in-memory journal.
//! "Durable" means "in the map", so it keeps the contract within one process
//! and nothing across a restart.

use std::{collections::BTreeMap, sync::Mutex, time::Duration};

use super::{Direction, KeyRange, KeyWrite, KvStore, Result, Visit, walk};

/// A `BTreeMap` behind a std mutex: no operation awaits while holding it.
#[derive(Default)]
pub struct MemoryStore {
    map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
    /// How long a sync takes: zero, or a stand-in for a disk in tests of batching.
    sync_delay: Duration,
}

impl MemoryStore {
    /// A store whose every sync takes `delay`, like a disk flush would.
    pub fn with_sync_delay(delay: Duration) -> Self {
        Self {
            sync_delay: delay,
            ..Self::default()
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        // A panic while holding the lock leaves a consistent map: every operation
        // is a single insert/remove loop with no early exit.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl KvStore for MemoryStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.map().get(key).cloned())
    }

    fn range(&self, range: KeyRange<'_>, dir: Direction, visit: &mut Visit<'_>) -> Result<()> {
        let map = self.map();
        let entries = map.range::<[u8], _>(range.bounds()).map(Ok);
        walk(entries, dir, visit)
    }

    fn write(&self, batch: Vec<KeyWrite>) -> Result<()> {
        let mut map = self.map();
        for (key, value) in batch {
            match value {
                Some(v) => map.insert(key, v),
                None => map.remove(&key),
            };
        }
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        if !self.sync_delay.is_zero() {
            std::thread::sleep(self.sync_delay);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::store_conformance!((MemoryStore::default(), ()));
}
