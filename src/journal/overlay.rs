//! Writes that are durable in the write-ahead log but not yet in the store
//! behind it, kept in memory and read as if they were in the store.
//!
//! The log (`wal.rs`) makes each batch durable with one `fdatasync`; applying
//! the batch to the store as well, at once, cost the journal's writer thread
//! more than the log itself (sled copies a node on every insert). So the
//! writer only puts a batch here, and the checkpoint thread applies everything
//! gathered since the last checkpoint in one pass, in key order. A key written
//! several times in that window (a saga's listing entry, the log's own
//! batch marker, an unfinished-index entry put and removed again) reaches the
//! store once.
//!
//! Two layers over the store, newest first:
//! - `active`: what the writer has put since the last freeze;
//! - `frozen`: what a checkpoint is applying right now; readable until the
//!   store holds it durably, then dropped.
//!
//! Guarantees:
//! - **Reads see every write.** `get` and the scans return the newest value of
//!   each key across active, frozen and the store; a removal here hides the
//!   store's value. A read never sees an older value than one it could have
//!   seen before (layers are only ever handed downwards: active → frozen →
//!   store, and the frozen layer is dropped only after the store has it).
//! - **Short locks.** Scans copy this layer's entries in small chunks under a
//!   read lock and merge them with the store's scan outside it, so a long scan
//!   never holds up the writer. Like the store's own scans, a merged scan is no
//!   snapshot: a key written during it may or may not be seen.

use std::{
    collections::BTreeMap,
    ops::Bound,
    sync::{Arc, Condvar, Mutex, RwLock},
    time::Duration,
};

use super::{
    JournalError, codec,
    kv::{KeyWrite, KvStore, Visit},
};

/// A layer: the newest write of each key; `None` is a removal.
type Layer = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Entries copied out of the layers per lock, during a scan.
const SCAN_CHUNK: usize = 64;

/// The in-memory layers; see the module docs.
#[derive(Default)]
pub struct Overlay {
    layers: RwLock<Layers>,
    /// Signalled when a frozen layer is dropped (for `wait_for_room`).
    released: (Mutex<()>, Condvar),
}

#[derive(Default)]
struct Layers {
    active: Layer,
    frozen: Option<Arc<Layer>>,
}

impl Overlay {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Layers> {
        self.layers.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Layers> {
        self.layers.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts a batch's writes on top, in order (a later write of a key wins).
    pub fn put(&self, batch: Vec<KeyWrite>) {
        let mut layers = self.write();
        for (key, value) in batch {
            layers.active.insert(key, value);
        }
    }

    /// The frozen layer to apply to the store: the one a failed checkpoint
    /// left, or else everything written since the last freeze. `None` when
    /// there is nothing to apply.
    pub fn freeze(&self) -> Option<Arc<Layer>> {
        let mut layers = self.write();
        if layers.frozen.is_none() && !layers.active.is_empty() {
            layers.frozen = Some(Arc::new(std::mem::take(&mut layers.active)));
        }
        layers.frozen.clone()
    }

    /// Drops the frozen layer: the store holds it durably now.
    pub fn release_frozen(&self) {
        self.write().frozen = None;
        let _guard = self.released.0.lock().unwrap_or_else(|p| p.into_inner());
        self.released.1.notify_all();
    }

    /// Waits while the active layer holds more than `max_keys` and a frozen
    /// layer is still being applied: writes then come faster than the store
    /// takes them, and without a limit memory would grow until they stop.
    /// Once the frozen layer is gone, the active one can be frozen at once.
    /// False if that did not happen within `patience` (the store is stuck).
    pub fn wait_for_room(&self, max_keys: usize, patience: Duration) -> bool {
        let deadline = std::time::Instant::now() + patience;
        loop {
            {
                let layers = self.read();
                if layers.active.len() <= max_keys || layers.frozen.is_none() {
                    return true;
                }
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            let guard = self.released.0.lock().unwrap_or_else(|p| p.into_inner());
            // Timed: a release between the check above and this wait is not missed for long.
            let _ = self
                .released
                .1
                .wait_timeout(guard, Duration::from_millis(50));
        }
    }

    /// How many keys wait for a checkpoint (both layers).
    pub fn len(&self) -> usize {
        let layers = self.read();
        layers.active.len() + layers.frozen.as_ref().map_or(0, |f| f.len())
    }

    /// The newest value of `key` in the store seen through the layers.
    pub fn get<S: KvStore>(&self, store: &S, key: &[u8]) -> Result<Option<Vec<u8>>, JournalError> {
        {
            let layers = self.read();
            let found = layers
                .active
                .get(key)
                .or_else(|| layers.frozen.as_ref().and_then(|f| f.get(key)));
            if let Some(value) = found {
                return Ok(value.clone());
            }
        }
        // Not here: the store has the newest value. Should a checkpoint hand
        // a newer one down meanwhile, the store read sees that one or ours.
        store.get(key)
    }

    /// Entries of `prefix` at or after `from`, ascending, merged with `store`'s.
    pub fn scan_from<S: KvStore>(
        &self,
        store: &S,
        prefix: &[u8],
        from: &[u8],
        visit: &mut Visit<'_>,
    ) -> Result<(), JournalError> {
        let end = codec::prefix_end(prefix);
        let start = from.max(prefix);
        if start >= end.as_slice() {
            return Ok(());
        }
        let mut mine = Cursor::new(self, Direction::Ascending, start, &end);
        let mut stopped = false;
        store.scan_from(prefix, from, &mut |key, value| {
            // Ours first while they sort before the store's key.
            while let Some((k, v)) = mine.peek().filter(|(k, _)| k.as_slice() < key) {
                if let Some(v) = v
                    && !visit(k, v)?
                {
                    stopped = true;
                    return Ok(false);
                }
                mine.advance();
            }
            let go_on = match mine.peek().filter(|(k, _)| k.as_slice() == key) {
                Some((_, Some(newer))) => visit(key, newer)?,
                Some((_, None)) => true, // removed here
                None => visit(key, value)?,
            };
            if mine.peek().is_some_and(|(k, _)| k.as_slice() == key) {
                mine.advance();
            }
            stopped = !go_on;
            Ok(go_on)
        })?;
        mine.drain(stopped, visit)
    }

    /// Entries of `prefix` sorting before `before` (if given), descending,
    /// merged with `store`'s.
    pub fn scan_rev<S: KvStore>(
        &self,
        store: &S,
        prefix: &[u8],
        before: Option<&[u8]>,
        visit: &mut Visit<'_>,
    ) -> Result<(), JournalError> {
        let end = codec::prefix_end(prefix);
        let upper = before.map_or(end.as_slice(), |b| b.min(end.as_slice()));
        if upper <= prefix {
            return Ok(());
        }
        let mut mine = Cursor::new(self, Direction::Descending, prefix, upper);
        let mut stopped = false;
        store.scan_rev(prefix, before, &mut |key, value| {
            while let Some((k, v)) = mine.peek().filter(|(k, _)| k.as_slice() > key) {
                if let Some(v) = v
                    && !visit(k, v)?
                {
                    stopped = true;
                    return Ok(false);
                }
                mine.advance();
            }
            let go_on = match mine.peek().filter(|(k, _)| k.as_slice() == key) {
                Some((_, Some(newer))) => visit(key, newer)?,
                Some((_, None)) => true,
                None => visit(key, value)?,
            };
            if mine.peek().is_some_and(|(k, _)| k.as_slice() == key) {
                mine.advance();
            }
            stopped = !go_on;
            Ok(go_on)
        })?;
        mine.drain(stopped, visit)
    }

    /// Up to `SCAN_CHUNK` keys of `lo..hi` in `direction`, newest value of each.
    fn chunk(
        &self,
        direction: Direction,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
    ) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let layers = self.read();
        let range = (lo, hi);
        let active = layers.active.range::<[u8], _>(range);
        let frozen = layers
            .frozen
            .as_ref()
            .into_iter()
            .flat_map(|f| f.range::<[u8], _>(range));
        let mut out = Vec::new();
        match direction {
            Direction::Ascending => merge(active, frozen, &mut out, |a, b| a.cmp(b)),
            Direction::Descending => merge(active.rev(), frozen.rev(), &mut out, |a, b| b.cmp(a)),
        }
        out
    }
}

/// Merges two sorted runs of entries (`newer` wins on equal keys) into `out`,
/// up to `SCAN_CHUNK` keys; `order` says which key comes first.
fn merge<'a>(
    newer: impl Iterator<Item = (&'a Vec<u8>, &'a Option<Vec<u8>>)>,
    older: impl Iterator<Item = (&'a Vec<u8>, &'a Option<Vec<u8>>)>,
    out: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>,
    order: impl Fn(&[u8], &[u8]) -> std::cmp::Ordering,
) {
    use std::cmp::Ordering::*;
    let (mut newer, mut older) = (newer.peekable(), older.peekable());
    while out.len() < SCAN_CHUNK {
        let next = match (newer.peek(), older.peek()) {
            (None, None) => break,
            (Some(_), None) => newer.next(),
            (None, Some(_)) => older.next(),
            (Some((a, _)), Some((b, _))) => match order(a, b) {
                Less => newer.next(),
                Greater => older.next(),
                Equal => {
                    older.next();
                    newer.next()
                }
            },
        };
        if let Some((k, v)) = next {
            out.push((k.clone(), v.clone()));
        }
    }
}

#[derive(Clone, Copy)]
enum Direction {
    Ascending,
    Descending,
}

/// Walks the layers' entries of a range in chunks, taking the lock per chunk.
struct Cursor<'a> {
    overlay: &'a Overlay,
    direction: Direction,
    /// The range still to walk: the bound on the side we walk from moves.
    lo: Vec<u8>,
    lo_inclusive: bool,
    hi: Vec<u8>,
    hi_inclusive: bool,
    chunk: std::vec::IntoIter<(Vec<u8>, Option<Vec<u8>>)>,
    current: Option<(Vec<u8>, Option<Vec<u8>>)>,
    exhausted: bool,
}

fn bound(key: &[u8], inclusive: bool) -> Bound<&[u8]> {
    if inclusive {
        Bound::Included(key)
    } else {
        Bound::Excluded(key)
    }
}

impl<'a> Cursor<'a> {
    /// Walks `[lo, hi)`.
    fn new(overlay: &'a Overlay, direction: Direction, lo: &[u8], hi: &[u8]) -> Self {
        let mut cursor = Self {
            overlay,
            direction,
            lo: lo.to_vec(),
            lo_inclusive: true,
            hi: hi.to_vec(),
            hi_inclusive: false,
            chunk: Vec::new().into_iter(),
            current: None,
            exhausted: false,
        };
        cursor.advance();
        cursor
    }

    fn peek(&self) -> Option<(&Vec<u8>, &Option<Vec<u8>>)> {
        self.current.as_ref().map(|(k, v)| (k, v))
    }

    fn advance(&mut self) {
        self.current = self.chunk.next();
        if self.current.is_some() || self.exhausted {
            return;
        }
        let chunk = self.overlay.chunk(
            self.direction,
            bound(&self.lo, self.lo_inclusive),
            bound(&self.hi, self.hi_inclusive),
        );
        self.exhausted = chunk.len() < SCAN_CHUNK;
        if let Some((last, _)) = chunk.last() {
            match self.direction {
                Direction::Ascending => (self.lo, self.lo_inclusive) = (last.clone(), false),
                Direction::Descending => (self.hi, self.hi_inclusive) = (last.clone(), false),
            }
        }
        self.chunk = chunk.into_iter();
        self.current = self.chunk.next();
    }

    /// Visits what is left of ours after the store's scan ended (unless the
    /// visitor stopped it).
    fn drain(mut self, stopped: bool, visit: &mut Visit<'_>) -> Result<(), JournalError> {
        if stopped {
            return Ok(());
        }
        while let Some((k, v)) = self.current.take() {
            if let Some(v) = v
                && !visit(&k, &v)?
            {
                break;
            }
            self.advance();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::memory::MemoryStore;

    fn put(key: &str, value: &str) -> KeyWrite {
        (key.as_bytes().to_vec(), Some(value.as_bytes().to_vec()))
    }

    fn remove(key: &str) -> KeyWrite {
        (key.as_bytes().to_vec(), None)
    }

    fn ascending(overlay: &Overlay, store: &MemoryStore, from: &str) -> Vec<(String, String)> {
        let mut seen = Vec::new();
        overlay
            .scan_from(store, b"k", from.as_bytes(), &mut |k, v| {
                seen.push((
                    String::from_utf8(k.to_vec()).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap(),
                ));
                Ok(true)
            })
            .unwrap();
        seen
    }

    fn descending(overlay: &Overlay, store: &MemoryStore, before: Option<&str>) -> Vec<String> {
        let mut seen = Vec::new();
        overlay
            .scan_rev(store, b"k", before.map(str::as_bytes), &mut |k, v| {
                seen.push(format!(
                    "{}={}",
                    String::from_utf8_lossy(k),
                    String::from_utf8_lossy(v)
                ));
                Ok(true)
            })
            .unwrap();
        seen
    }

    /// A store holding k0..k9 = "old", an overlay frozen and active on top.
    fn layered() -> (Overlay, MemoryStore) {
        let store = MemoryStore::default();
        store
            .write((0..10).map(|i| put(&format!("k{i}"), "old")).collect())
            .unwrap();
        let overlay = Overlay::default();
        overlay.put(vec![
            put("k1", "frozen"),
            remove("k2"),
            put("k45", "frozen"),
        ]);
        overlay.freeze().unwrap();
        overlay.put(vec![
            put("k1", "active"),
            put("k2", "active"),
            remove("k3"),
            put("k99", "active"),
            put("l0", "other prefix"),
        ]);
        (overlay, store)
    }

    #[test]
    fn reads_take_the_newest_layer_and_removals_hide_the_store() {
        let (overlay, store) = layered();
        assert_eq!(
            overlay.get(&store, b"k1").unwrap(),
            Some(b"active".to_vec())
        );
        assert_eq!(
            overlay.get(&store, b"k2").unwrap(),
            Some(b"active".to_vec())
        );
        assert_eq!(overlay.get(&store, b"k3").unwrap(), None);
        assert_eq!(
            overlay.get(&store, b"k45").unwrap(),
            Some(b"frozen".to_vec())
        );
        assert_eq!(overlay.get(&store, b"k5").unwrap(), Some(b"old".to_vec()));
        let all = ascending(&overlay, &store, "k");
        let keys: Vec<&str> = all.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "k0", "k1", "k2", "k4", "k45", "k5", "k6", "k7", "k8", "k9", "k99"
            ]
        );
        assert_eq!(all[1].1, "active");
        assert_eq!(ascending(&overlay, &store, "k44").len(), 7);
        assert_eq!(
            descending(&overlay, &store, Some("k5")),
            ["k45=frozen", "k4=old", "k2=active", "k1=active", "k0=old"]
        );
        assert_eq!(descending(&overlay, &store, None)[0], "k99=active");
    }

    #[test]
    fn a_visitor_that_stops_is_not_called_again() {
        let (overlay, store) = layered();
        for wanted in 1..=11 {
            let mut seen = 0;
            overlay
                .scan_from(&store, b"k", b"k", &mut |_, _| {
                    seen += 1;
                    Ok(seen < wanted)
                })
                .unwrap();
            assert_eq!(seen, wanted);
            let mut seen = 0;
            overlay
                .scan_rev(&store, b"k", None, &mut |_, _| {
                    seen += 1;
                    Ok(seen < wanted)
                })
                .unwrap();
            assert_eq!(seen, wanted);
        }
    }

    #[test]
    fn scans_longer_than_a_chunk_see_every_key_once_in_order() {
        let store = MemoryStore::default();
        // Even keys in the store, odd ones here, some of each removed here.
        store
            .write(
                (0..500)
                    .step_by(2)
                    .map(|i| put(&format!("k{i:04}"), "store"))
                    .collect(),
            )
            .unwrap();
        let overlay = Overlay::default();
        overlay.put(
            (1..500)
                .step_by(2)
                .map(|i| put(&format!("k{i:04}"), "mine"))
                .collect(),
        );
        overlay.freeze().unwrap();
        overlay.put(
            (0..500)
                .step_by(7)
                .map(|i| remove(&format!("k{i:04}")))
                .collect(),
        );
        let expected: Vec<String> = (0..500)
            .filter(|i| i % 7 != 0)
            .map(|i| format!("k{i:04}"))
            .collect();
        let up: Vec<String> = ascending(&overlay, &store, "k")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(up, expected);
        let mut down: Vec<String> = descending(&overlay, &store, None)
            .into_iter()
            .map(|e| e.split('=').next().unwrap().to_string())
            .collect();
        down.reverse();
        assert_eq!(down, expected);
    }

    #[test]
    fn a_writer_past_the_limit_waits_for_the_checkpoint_in_progress() {
        let overlay = Arc::new(Overlay::default());
        overlay.put(vec![put("k1", "a")]);
        overlay.freeze().unwrap();
        overlay.put(vec![put("k2", "b"), put("k3", "c")]);
        assert!(overlay.wait_for_room(2, Duration::ZERO), "within the limit");
        assert!(
            !overlay.wait_for_room(1, Duration::from_millis(10)),
            "past it, with the checkpoint stuck"
        );
        let releaser = {
            let overlay = overlay.clone();
            std::thread::spawn(move || overlay.release_frozen())
        };
        assert!(overlay.wait_for_room(1, Duration::from_secs(60)));
        releaser.join().unwrap();
    }

    #[test]
    fn the_frozen_layer_stays_until_released_and_a_failed_checkpoint_gets_it_again() {
        let store = MemoryStore::default();
        let overlay = Overlay::default();
        assert!(overlay.freeze().is_none(), "nothing to apply");
        overlay.put(vec![put("k1", "a")]);
        let first = overlay.freeze().unwrap();
        overlay.put(vec![put("k2", "b")]);
        // Not released (the checkpoint failed): the same layer comes back.
        let again = overlay.freeze().unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(overlay.len(), 2);
        store.write(vec![put("k1", "a")]).unwrap();
        overlay.release_frozen();
        assert_eq!(overlay.get(&store, b"k1").unwrap(), Some(b"a".to_vec()));
        let second = overlay.freeze().unwrap();
        assert_eq!(second.keys().collect::<Vec<_>>(), [&b"k2".to_vec()]);
    }
}
