//! One lock per (saga, step): concurrent calls for one step (a duplicate
//! delivered twice, a compensation racing its forward) take turns, so the
//! barrier's read, the handler and the commit of one never interleave with
//! another's. Calls for different steps run in parallel.
//!
//! Invariants:
//! - The map holds an entry only while some call holds or waits for its lock
//!   (the last guard removes it), so it never grows with the history.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

/// The locks by key.
#[derive(Default)]
pub struct KeyLocks {
    /// A std mutex over the map: held only to find or drop an entry, never
    /// across an await. Each entry is a tokio mutex, held across the call.
    map: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// Holds one key's lock; dropping it lets the next call for the key go.
pub struct KeyGuard {
    key: String,
    map: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    lock: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl KeyLocks {
    /// Waits for `key`'s turn.
    pub async fn lock(&self, key: String) -> KeyGuard {
        let entry = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(key.clone()).or_default().clone()
        };
        let lock = entry.lock_owned().await;
        KeyGuard {
            key,
            map: self.map.clone(),
            lock: Some(lock),
        }
    }

    /// How many keys have an entry (for the tests).
    #[cfg(test)]
    pub fn entries(&self) -> usize {
        self.map.lock().unwrap().len()
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        // Release first, then drop the entry if no other call holds a
        // reference to it (the map's own is the last).
        self.lock.take();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = map.get(&self.key)
            && Arc::strong_count(entry) == 1
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_key_takes_turns_and_leaves_nothing_behind() {
        let locks = KeyLocks::default();
        let a = locks.lock("a".into()).await;
        let _b = locks.lock("b".into()).await;
        let second = locks.lock("a".into());
        tokio::pin!(second);
        assert!(
            futures_poll_once(second.as_mut()).await.is_none(),
            "a is held"
        );
        drop(a);
        let again = second.await;
        drop(again);
        assert_eq!(locks.entries(), 1, "only b is left");
    }

    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        tokio::time::timeout(std::time::Duration::ZERO, f)
            .await
            .ok()
    }
}
