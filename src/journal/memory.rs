//! The in-memory journal, for tests: the same schema, indexes and group commit
//! as the sled journal (`KvJournal<MemoryStore>`), with nothing kept across a
//! restart.

use super::{kv::KvJournal, store::MemoryStore};

/// The in-memory journal.
pub type MemoryJournal = KvJournal<MemoryStore>;

impl MemoryJournal {
    /// An empty in-memory journal.
    pub fn in_memory() -> Self {
        KvJournal::new(MemoryStore::default()).expect("an empty memory store always opens")
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
