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
//! - **Scans miss nothing that was here when they started**, whatever the
//!   checkpoints do meanwhile: a scan copies the active layer's entries of its
//!   range and holds the frozen layer (it never changes) under one short read
//!   lock, then merges them with the store's scan outside any lock, so a long
//!   scan never holds up the writer or a checkpoint. Like the store's own
//!   scans, a merged scan is no snapshot: a key written during it may or may
//!   not be seen.
//! - **Edits never meet a rewrite half-way.** A frozen layer is compacted as
//!   it is frozen (`compaction.rs`: several keys' writes bundled under one
//!   key), and readers see its compacted form from then on. A writer that
//!   reads keys to work out edits of them (retention taking pointers out of
//!   the offset index) holds [`Overlay::hold_rewrites`] from its first read
//!   until its edit is put here, so it works from one form or the other: an
//!   edit of entries read before they were bundled would, put over the
//!   bundle, drop everything else the bundle holds.

use std::{
    collections::BTreeMap,
    ops::Bound,
    sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard},
    time::Duration,
};

use crate::journal::store::{
    Direction, KeyRange, KeyWrite, KeyWriteRef, KvStore, StoreError, Visit, own,
};

/// A layer: the newest write of each key; `None` is a removal.
type Layer = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// What a frozen layer's writes (lent in key order, each key once) are
/// rewritten to: the same keys' final values, or fewer keys that read back
/// the same (`compaction.rs`).
pub type Compact = fn(&mut dyn Iterator<Item = KeyWriteRef<'_>>) -> Vec<KeyWrite>;

/// Which keys the writer only ever puts where they are absent, by a rule of
/// its own (a saga's unfinished-index entry is put when the saga enters the
/// index: `compaction::unfinished_entry`). A removal of such a key that
/// finds its put still in the active layer takes the put back out of the
/// layer instead of covering it: below the active layer the key was absent
/// when it was put and still is, so the store need not be told anything. A
/// W1 saga that starts and ends between two checkpoints thus costs the store
/// no removal of a key it never had.
pub type PutOnlyOverAbsent = fn(&[u8]) -> bool;

/// The [`PutOnlyOverAbsent`] that names no key.
pub fn no_key(_: &[u8]) -> bool {
    false
}

/// The [`Compact`] that rewrites nothing.
pub fn keep_as_written(writes: &mut dyn Iterator<Item = KeyWriteRef<'_>>) -> Vec<KeyWrite> {
    writes.map(own).collect()
}

/// The in-memory layers; see the module docs.
pub struct Overlay {
    layers: RwLock<Layers>,
    /// Keys whose removal can take their put back (see [`PutOnlyOverAbsent`]).
    put_only_over_absent: PutOnlyOverAbsent,
    /// Held for writing while a layer is frozen and compacted, and for
    /// reading by whoever must not meet a rewrite half-way (writers editing
    /// what they read, readers scanning the index twice): they share it.
    rewrites: RwLock<()>,
    /// Signalled when a frozen layer is dropped (for `wait_for_room`).
    released: (Mutex<()>, Condvar),
}

#[derive(Default)]
struct Layers {
    active: Layer,
    frozen: Option<Arc<Layer>>,
}

impl Default for Overlay {
    fn default() -> Self {
        Self::new(no_key)
    }
}

impl Overlay {
    /// Empty layers; removals of `put_only_over_absent` keys take back their
    /// puts while those are in the active layer.
    pub fn new(put_only_over_absent: PutOnlyOverAbsent) -> Self {
        Self {
            layers: RwLock::default(),
            put_only_over_absent,
            rewrites: RwLock::default(),
            released: Default::default(),
        }
    }

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
            if value.is_none()
                && (self.put_only_over_absent)(&key)
                && matches!(layers.active.get(&key), Some(Some(_)))
            {
                layers.active.remove(&key);
                continue;
            }
            layers.active.insert(key, value);
        }
    }

    /// The frozen layer to apply to the store: the one a failed checkpoint
    /// left, or else everything written since the last freeze, as `compact`
    /// rewrites it. `None` when there is nothing to apply.
    pub fn freeze(&self, compact: Compact) -> Option<Arc<Layer>> {
        if let Some(frozen) = self.read().frozen.clone() {
            return Some(frozen);
        }
        // Only the checkpoint thread freezes, so nothing else can have frozen
        // a layer since the check above.
        let _rewrites = self.rewrites.write().unwrap_or_else(|p| p.into_inner());
        let taken = {
            let mut layers = self.write();
            if layers.active.is_empty() {
                return None;
            }
            let taken = Arc::new(std::mem::take(&mut layers.active));
            layers.frozen = Some(taken.clone());
            taken
        };
        // Outside the lock: readers and the writer go on meanwhile, reading
        // the layer as it was written.
        let mut writes = taken.iter().map(|(k, v)| (k.as_slice(), v.as_deref()));
        let compacted = Arc::new(compact(&mut writes).into_iter().collect::<Layer>());
        self.write().frozen = Some(compacted.clone());
        Some(compacted)
    }

    /// Keeps a frozen layer from being compacted until the guard drops; see
    /// the module docs.
    pub fn hold_rewrites(&self) -> RwLockReadGuard<'_, ()> {
        self.rewrites.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops the frozen layer: the store holds it durably now.
    pub fn release_frozen(&self) {
        self.write().frozen = None;
        let _guard = self.released.0.lock().unwrap_or_else(|p| p.into_inner());
        self.released.1.notify_all();
    }

    /// Whether a writer would find room now (see [`Overlay::wait_for_room`]).
    pub fn has_room(&self, max_keys: usize) -> bool {
        let layers = self.read();
        layers.active.len() <= max_keys || layers.frozen.is_none()
    }

    /// Waits while the active layer holds more than `max_keys` and a frozen
    /// layer is still being applied: writes then come faster than the store
    /// takes them, and without a limit memory would grow until they stop.
    /// Once the frozen layer is gone, the active one can be frozen at once.
    /// False if that did not happen within `patience` (the store is stuck).
    pub fn wait_for_room(&self, max_keys: usize, patience: Duration) -> bool {
        let deadline = std::time::Instant::now() + patience;
        loop {
            if self.has_room(max_keys) {
                return true;
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
    pub fn waiting_keys(&self) -> usize {
        let layers = self.read();
        layers.active.len() + layers.frozen.as_ref().map_or(0, |f| f.len())
    }

    /// The newest value of `key` in the store seen through the layers.
    pub fn get<S: KvStore>(&self, store: &S, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
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

    /// The entries of `range` in `direction`, merged with `store`'s: the
    /// newest value of each key, none for a key removed here.
    pub fn range<S: KvStore>(
        &self,
        store: &S,
        range: KeyRange<'_>,
        direction: Direction,
        visit: &mut Visit<'_>,
    ) -> Result<(), StoreError> {
        let mut mine = Cursor::new(self, direction, range);
        let mut stopped = false;
        store.range(range, direction, &mut |key, value| {
            let go_on = mine.merge(key, value, visit);
            stopped = !go_on;
            go_on
        })?;
        if !stopped {
            mine.drain(visit);
        }
        Ok(())
    }
}

type Entry = (Vec<u8>, Option<Vec<u8>>);

/// This layer's entries of a range in scan order, as they were when the
/// scan started: the active layer's copied (it keeps changing), the frozen
/// one held (it never changes, and is kept alive here even if a checkpoint
/// drops it meanwhile). So every key here at the start is seen, whatever the
/// checkpoints do during the scan.
struct Cursor {
    direction: Direction,
    active: std::iter::Peekable<std::vec::IntoIter<Entry>>,
    frozen: Option<Arc<Layer>>,
    /// The frozen layer's next entry, and the range still to walk in it.
    frozen_next: Option<Entry>,
    lo: Bound<Vec<u8>>,
    hi: Bound<Vec<u8>>,
    current: Option<Entry>,
}

impl Cursor {
    /// Walks `range` in `direction`.
    fn new(overlay: &Overlay, direction: Direction, range: KeyRange<'_>) -> Self {
        let (active, frozen) = {
            let layers = overlay.read();
            let entries = layers.active.range::<[u8], _>(range.bounds());
            let active: Vec<Entry> = match direction {
                Direction::Ascending => entries.map(|(k, v)| (k.clone(), v.clone())).collect(),
                Direction::Descending => {
                    entries.rev().map(|(k, v)| (k.clone(), v.clone())).collect()
                }
            };
            (active, layers.frozen.clone())
        };
        let (lo, hi) = range.bounds();
        let mut cursor = Self {
            direction,
            active: active.into_iter().peekable(),
            frozen,
            frozen_next: None,
            lo: lo.map(<[u8]>::to_vec),
            hi: hi.map(<[u8]>::to_vec),
            current: None,
        };
        cursor.step_frozen();
        cursor.advance();
        cursor
    }

    /// Takes the frozen layer's next entry and moves its range past it.
    fn step_frozen(&mut self) {
        let Some(frozen) = &self.frozen else {
            return;
        };
        fn as_slice(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
            bound.as_ref().map(Vec::as_slice)
        }
        let Some(left) = KeyRange::new(as_slice(&self.lo), as_slice(&self.hi)) else {
            self.frozen_next = None;
            return;
        };
        let mut range = frozen.range::<[u8], _>(left.bounds());
        let next = match self.direction {
            Direction::Ascending => range.next(),
            Direction::Descending => range.next_back(),
        };
        self.frozen_next = next.map(|(k, v)| (k.clone(), v.clone()));
        if let Some((key, _)) = &self.frozen_next {
            match self.direction {
                Direction::Ascending => self.lo = Bound::Excluded(key.clone()),
                Direction::Descending => self.hi = Bound::Excluded(key.clone()),
            }
        }
    }

    fn peek(&self) -> Option<(&Vec<u8>, &Option<Vec<u8>>)> {
        self.current.as_ref().map(|(k, v)| (k, v))
    }

    /// Moves to the next key of either layer; the active one wins a tie.
    fn advance(&mut self) {
        let first = |a: &[u8], b: &[u8]| match self.direction {
            Direction::Ascending => a.cmp(b),
            Direction::Descending => b.cmp(a),
        };
        let order = match (self.active.peek(), &self.frozen_next) {
            (None, None) => {
                self.current = None;
                return;
            }
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some((a, _)), Some((f, _))) => first(a, f),
        };
        self.current = match order {
            std::cmp::Ordering::Less => self.active.next(),
            std::cmp::Ordering::Greater => {
                let entry = self.frozen_next.take();
                self.step_frozen();
                entry
            }
            std::cmp::Ordering::Equal => {
                self.step_frozen(); // the older value of the same key
                self.active.next()
            }
        };
    }

    /// Takes the store's next entry: visits ours that come before it, then
    /// the newest value of its key (none if removed here). Answers whether to
    /// go on.
    fn merge(&mut self, key: &[u8], value: &[u8], visit: &mut Visit<'_>) -> bool {
        let ascending = matches!(self.direction, Direction::Ascending);
        while let Some((k, v)) = self
            .peek()
            .filter(|(k, _)| (k.as_slice() < key) == ascending && k.as_slice() != key)
        {
            if let Some(v) = v
                && !visit(k, v)
            {
                return false;
            }
            self.advance();
        }
        let go_on = match self.peek().filter(|(k, _)| k.as_slice() == key) {
            Some((_, Some(newer))) => visit(key, newer),
            Some((_, None)) => true, // removed here
            None => visit(key, value),
        };
        if self.peek().is_some_and(|(k, _)| k.as_slice() == key) {
            self.advance();
        }
        go_on
    }

    /// Visits what is left of ours after the store's range ended.
    fn drain(mut self, visit: &mut Visit<'_>) {
        while let Some((k, v)) = self.current.take() {
            if let Some(v) = v
                && !visit(&k, &v)
            {
                break;
            }
            self.advance();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::store::MemoryStore;

    fn put(key: &str, value: &str) -> KeyWrite {
        (key.as_bytes().to_vec(), Some(value.as_bytes().to_vec()))
    }

    fn remove(key: &str) -> KeyWrite {
        (key.as_bytes().to_vec(), None)
    }

    /// Every key that starts with `k`.
    fn every_k() -> KeyRange<'static> {
        KeyRange::new(Bound::Included(b"k"), Bound::Excluded(b"l")).unwrap()
    }

    fn ascending(overlay: &Overlay, store: &MemoryStore, from: &str) -> Vec<(String, String)> {
        let mut seen = Vec::new();
        let range = KeyRange::new(Bound::Included(from.as_bytes()), Bound::Excluded(b"l")).unwrap();
        overlay
            .range(store, range, Direction::Ascending, &mut |k, v| {
                seen.push((
                    String::from_utf8(k.to_vec()).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap(),
                ));
                true
            })
            .unwrap();
        seen
    }

    fn descending(overlay: &Overlay, store: &MemoryStore, before: Option<&str>) -> Vec<String> {
        let mut seen = Vec::new();
        let hi = before.map_or(b"l".as_slice(), str::as_bytes);
        let range = KeyRange::new(Bound::Included(b"k"), Bound::Excluded(hi)).unwrap();
        overlay
            .range(store, range, Direction::Descending, &mut |k, v| {
                seen.push(format!(
                    "{}={}",
                    String::from_utf8_lossy(k),
                    String::from_utf8_lossy(v)
                ));
                true
            })
            .unwrap();
        seen
    }

    #[test]
    fn a_removal_takes_back_a_put_over_absent_while_it_is_active() {
        let store = MemoryStore::default();
        store.write(vec![put("u-old", "")]).unwrap();
        let overlay = Overlay::new(|key| key.starts_with(b"u-"));
        // Put and removed in one active layer: nothing is left to hand down.
        overlay.put(vec![put("u-a", ""), put("k", "v")]);
        overlay.put(vec![remove("u-a")]);
        assert_eq!(overlay.get(&store, b"u-a").unwrap(), None);
        // A put that was frozen meanwhile is covered by the removal, as
        // the store gets it at the next checkpoint.
        overlay.put(vec![put("u-b", "")]);
        let frozen = overlay.freeze(keep_as_written).unwrap();
        overlay.put(vec![remove("u-b"), remove("u-old"), remove("k")]);
        assert_eq!(overlay.get(&store, b"u-b").unwrap(), None);
        assert_eq!(overlay.get(&store, b"u-old").unwrap(), None);
        overlay.release_frozen();
        let next = overlay.freeze(keep_as_written).unwrap();
        assert!(!frozen.contains_key(b"u-a".as_slice()));
        assert_eq!(
            next.keys()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect::<Vec<_>>(),
            ["k", "u-b", "u-old"],
            "removals of keys not put in the same layer reach the store"
        );
        // Other keys keep their removal even over a put in the same layer.
        overlay.release_frozen();
        overlay.put(vec![put("k", "v")]);
        overlay.put(vec![remove("k")]);
        assert_eq!(
            overlay
                .freeze(keep_as_written)
                .unwrap()
                .get(b"k".as_slice()),
            Some(&None)
        );
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
        overlay.freeze(keep_as_written).unwrap();
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
            for direction in [Direction::Ascending, Direction::Descending] {
                let mut seen = 0;
                overlay
                    .range(&store, every_k(), direction, &mut |_, _| {
                        seen += 1;
                        seen < wanted
                    })
                    .unwrap();
                assert_eq!(seen, wanted, "{direction:?}");
            }
        }
    }

    #[test]
    fn long_scans_see_every_key_once_in_order() {
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
        overlay.freeze(keep_as_written).unwrap();
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
        overlay.freeze(keep_as_written).unwrap();
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
    fn a_scan_sees_every_key_that_was_here_when_it_started() {
        let store = MemoryStore::default();
        store.write(vec![put("k0000", "store")]).unwrap();
        for direction in [Direction::Ascending, Direction::Descending] {
            let overlay = Overlay::default();
            overlay.put(
                (1..300)
                    .map(|i| put(&format!("k{i:04}"), "frozen"))
                    .collect(),
            );
            overlay.freeze(keep_as_written).unwrap();
            overlay.put(
                (300..600)
                    .map(|i| put(&format!("k{i:04}"), "active"))
                    .collect(),
            );
            let mut seen = 0;
            let mut visit = |_: &[u8], _: &[u8]| {
                if seen == 0 {
                    // Two checkpoints go by after the first key: every layer
                    // the scan started with is gone from the overlay (and, as
                    // far as this store's own scan can tell, not in it yet).
                    overlay.release_frozen();
                    overlay.freeze(keep_as_written).unwrap();
                    overlay.release_frozen();
                    assert_eq!(overlay.waiting_keys(), 0);
                }
                seen += 1;
                true
            };
            overlay
                .range(&store, every_k(), direction, &mut visit)
                .unwrap();
            assert_eq!(seen, 600);
        }
    }

    #[test]
    fn the_frozen_layer_stays_until_released_and_a_failed_checkpoint_gets_it_again() {
        let store = MemoryStore::default();
        let overlay = Overlay::default();
        assert!(
            overlay.freeze(keep_as_written).is_none(),
            "nothing to apply"
        );
        overlay.put(vec![put("k1", "a")]);
        let first = overlay.freeze(keep_as_written).unwrap();
        overlay.put(vec![put("k2", "b")]);
        // Not released (the checkpoint failed): the same layer comes back.
        let again = overlay.freeze(keep_as_written).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(overlay.waiting_keys(), 2);
        store.write(vec![put("k1", "a")]).unwrap();
        overlay.release_frozen();
        assert_eq!(overlay.get(&store, b"k1").unwrap(), Some(b"a".to_vec()));
        let second = overlay.freeze(keep_as_written).unwrap();
        assert_eq!(second.keys().collect::<Vec<_>>(), [&b"k2".to_vec()]);
    }

    #[test]
    fn an_edit_under_the_rewrite_hold_is_compacted_with_what_it_read() {
        let store = MemoryStore::default();
        let overlay = Arc::new(Overlay::default());
        overlay.put(vec![put("k1", "a"), put("k2", "b")]);
        // A writer reads k1 to edit it...
        let held = overlay.hold_rewrites();
        assert_eq!(overlay.get(&store, b"k1").unwrap(), Some(b"a".to_vec()));
        // ...a checkpoint starts meanwhile...
        let checkpoint = {
            let overlay = overlay.clone();
            std::thread::spawn(move || overlay.freeze(keep_as_written).unwrap())
        };
        // ...and the edit goes in before the layer is frozen and compacted.
        overlay.put(vec![put("k1", "a, edited")]);
        drop(held);
        let frozen = checkpoint.join().unwrap();
        assert_eq!(
            frozen.get(b"k1".as_slice()),
            Some(&Some(b"a, edited".to_vec())),
            "the compaction saw the edit, not what it was worked out from"
        );
        assert_eq!(overlay.waiting_keys(), 2);
    }
}
