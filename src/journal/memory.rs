//! An in-memory journal for tests: the same layout, indexes and group commit as
//! the sled journal, over a `BTreeMap`. "Durable" means "in the map", so it keeps
//! the contract within one process and nothing across a restart.

use std::{collections::BTreeMap, ops::Bound, sync::Mutex, time::Duration};

use super::{
    JournalError, codec,
    kv::{Entry, KeyWrite, KvJournal, KvStore, Visit},
};

/// The in-memory journal.
pub type MemoryJournal = KvJournal<MemoryStore>;

impl MemoryJournal {
    /// An empty in-memory journal.
    pub fn in_memory() -> Self {
        KvJournal::new(MemoryStore::default()).expect("an empty memory store always opens")
    }
}

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
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, JournalError> {
        Ok(self.map().get(key).cloned())
    }

    fn scan(&self, prefix: &[u8]) -> Result<Vec<Entry>, JournalError> {
        Ok(self
            .map()
            .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn scan_rev(
        &self,
        prefix: &[u8],
        before: Option<&[u8]>,
        visit: &mut Visit<'_>,
    ) -> Result<(), JournalError> {
        let map = self.map();
        let end = codec::prefix_end(prefix);
        let upper = before.unwrap_or(&end);
        let range = (Bound::Included(prefix), Bound::Excluded(upper));
        for (k, v) in map.range::<[u8], _>(range).rev() {
            if !visit(k, v)? {
                break;
            }
        }
        Ok(())
    }

    fn scan_from(
        &self,
        prefix: &[u8],
        from: &[u8],
        visit: &mut Visit<'_>,
    ) -> Result<(), JournalError> {
        let map = self.map();
        let end = codec::prefix_end(prefix);
        if from >= end.as_slice() {
            return Ok(()); // past the prefix: nothing (and an empty range, not a panic)
        }
        let range = (
            Bound::Included(from.max(prefix)),
            Bound::Excluded(end.as_slice()),
        );
        for (k, v) in map.range::<[u8], _>(range) {
            if !visit(k, v)? {
                break;
            }
        }
        Ok(())
    }

    fn write(&self, batch: Vec<KeyWrite>) -> Result<(), JournalError> {
        let mut map = self.map();
        for (key, value) in batch {
            match value {
                Some(v) => map.insert(key, v),
                None => map.remove(&key),
            };
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), JournalError> {
        if !self.sync_delay.is_zero() {
            std::thread::sleep(self.sync_delay);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;

    crate::journal_conformance!((
        Arc::new(KvJournal::new(MemoryStore::with_sync_delay(Duration::from_millis(1))).unwrap())
            as Arc<dyn crate::journal::Journal>,
        ()
    ));
}
