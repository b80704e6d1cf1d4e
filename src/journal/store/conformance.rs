//! The conformance suite every [`KvStore`] must pass: the contract in
//! `store/mod.rs`, checked the same way on each store. A store runs it with
//! `store_conformance!(make)`, where `make` builds a fresh, empty
//! `(store, guard)`; the guard (a temp dir, say) lives as long as the test.

use std::{
    ops::Bound,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use super::{Direction, KeyRange, KeyWrite, KvStore, lend};

/// Instantiates the suite as `#[test]`s.
#[macro_export]
macro_rules! store_conformance {
    ($make:expr) => {
        #[test]
        fn store_conformance_writes_are_read_back() {
            let (store, _guard) = $make;
            $crate::journal::store::conformance::writes_are_read_back(&store);
        }
        #[test]
        fn store_conformance_scans_keep_to_their_prefix_and_bounds() {
            let (store, _guard) = $make;
            $crate::journal::store::conformance::scans_keep_to_their_prefix_and_bounds(&store);
        }
        #[test]
        fn store_conformance_ranges_walk_both_ways_and_stop_when_told() {
            let (store, _guard) = $make;
            $crate::journal::store::conformance::ranges_walk_both_ways_and_stop_when_told(&store);
        }
        #[test]
        fn store_conformance_empty_and_inverted_ranges_are_empty() {
            let (store, _guard) = $make;
            $crate::journal::store::conformance::empty_and_inverted_ranges_are_empty(&store);
        }
        #[test]
        fn store_conformance_ordered_writes_end_with_the_newest_value() {
            let (store, _guard) = $make;
            $crate::journal::store::conformance::ordered_writes_end_with_the_newest_value(&store);
        }
        #[test]
        fn store_conformance_scans_during_writes_see_what_was_there() {
            let (store, _guard) = $make;
            $crate::journal::store::conformance::scans_during_writes_see_what_was_there(store);
        }
    };
}

fn put(key: &[u8], value: &[u8]) -> KeyWrite {
    (key.to_vec(), Some(value.to_vec()))
}

fn keys_of(entries: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<Vec<u8>> {
    entries.into_iter().map(|(k, _)| k).collect()
}

/// Keys visited by a range read, in the order visited.
fn visited<S: KvStore>(store: &S, range: KeyRange<'_>, direction: Direction) -> Vec<Vec<u8>> {
    let mut seen = Vec::new();
    store
        .range(range, direction, &mut |k, _| {
            seen.push(k.to_vec());
            true
        })
        .unwrap();
    seen
}

/// Six keys under `a`, one on each side of it, and two under 0xff (a prefix
/// no key sorts after). Stores may hold keys of their own (the log's batch
/// marker, `m…`), so no test reads the whole key space.
fn fill<S: KvStore>(store: &S) {
    store
        .write(vec![
            put(b"9", b"before"),
            put(b"a", b"0"),
            put(b"a\x00", b"1"),
            put(b"a1", b"2"),
            put(b"a2", b"3"),
            put(b"a\xff", b"4"),
            put(b"a\xff\xff", b"5"),
            put(b"b", b"after"),
            put(b"\xff", b"top"),
            put(b"\xff\x01", b"top of the top"),
        ])
        .unwrap();
    store.sync().unwrap();
}

pub fn writes_are_read_back<S: KvStore>(store: &S) {
    assert_eq!(store.get(b"k").unwrap(), None);
    store
        .write(vec![put(b"k", b"1"), put(b"k", b"2"), put(b"gone", b"x")])
        .unwrap();
    assert_eq!(store.get(b"k").unwrap(), Some(b"2".to_vec()), "last wins");
    store
        .write(vec![(b"gone".to_vec(), None), put(b"", b"empty key")])
        .unwrap();
    assert_eq!(store.get(b"gone").unwrap(), None, "a removal removes");
    assert_eq!(store.get(b"").unwrap(), Some(b"empty key".to_vec()));
    // A removal of a key that was never written is no error.
    store.write(vec![(b"never".to_vec(), None)]).unwrap();
    store.sync().unwrap();
    assert_eq!(store.get(b"k").unwrap(), Some(b"2".to_vec()));
}

pub fn scans_keep_to_their_prefix_and_bounds<S: KvStore>(store: &S) {
    fill(store);
    let under_a: Vec<Vec<u8>> = [&b"a"[..], b"a\x00", b"a1", b"a2", b"a\xff", b"a\xff\xff"]
        .iter()
        .map(|k| k.to_vec())
        .collect();
    assert_eq!(keys_of(store.scan(b"a").unwrap()), under_a);
    assert_eq!(
        keys_of(store.scan(b"a\xff").unwrap()),
        [b"a\xff".to_vec(), b"a\xff\xff".to_vec()]
    );
    assert_eq!(store.scan(b"c").unwrap(), Vec::new());
    let top = [b"\xff".to_vec(), b"\xff\x01".to_vec()];
    assert_eq!(
        keys_of(store.scan(b"\xff").unwrap()),
        top,
        "a prefix with no end"
    );

    let from = |prefix: &[u8], from: &[u8]| {
        let mut seen = Vec::new();
        store
            .scan_from(prefix, from, &mut |k, _| {
                seen.push(k.to_vec());
                true
            })
            .unwrap();
        seen
    };
    assert_eq!(from(b"a", b"a1"), under_a[2..]);
    assert_eq!(
        from(b"a", b"0"),
        under_a,
        "from below the prefix: all of it"
    );
    assert_eq!(
        from(b"a", b"z"),
        Vec::<Vec<u8>>::new(),
        "from past it: none"
    );

    let before = |prefix: &[u8], before: Option<&[u8]>| {
        let mut seen = Vec::new();
        store
            .scan_rev(prefix, before, &mut |k, _| {
                seen.push(k.to_vec());
                true
            })
            .unwrap();
        seen
    };
    let reversed: Vec<Vec<u8>> = under_a.iter().rev().cloned().collect();
    assert_eq!(before(b"a", None), reversed);
    assert_eq!(
        before(b"a", Some(b"a2")),
        reversed[3..],
        "before is excluded"
    );
    assert_eq!(before(b"a", Some(b"z")), reversed, "before past the prefix");
    assert_eq!(before(b"a", Some(b"a")), Vec::<Vec<u8>>::new());
    assert_eq!(before(b"a", Some(b"0")), Vec::<Vec<u8>>::new());
    assert_eq!(
        before(b"\xff", None),
        [b"\xff\x01".to_vec(), b"\xff".to_vec()],
        "a prefix with no end"
    );
}

pub fn ranges_walk_both_ways_and_stop_when_told<S: KvStore>(store: &S) {
    fill(store);
    let range = KeyRange::new(Bound::Excluded(b"a"), Bound::Included(b"a\xff")).unwrap();
    let up = visited(store, range, Direction::Ascending);
    assert_eq!(
        up,
        [
            b"a\x00".to_vec(),
            b"a1".to_vec(),
            b"a2".to_vec(),
            b"a\xff".to_vec()
        ]
    );
    let mut down = visited(store, range, Direction::Descending);
    down.reverse();
    assert_eq!(down, up);
    let below = KeyRange::new(Bound::Unbounded, Bound::Excluded(b"a")).unwrap();
    assert_eq!(
        visited(store, below, Direction::Descending),
        [b"9".to_vec()]
    );
    let above = KeyRange::new(Bound::Included(b"\xff"), Bound::Unbounded).unwrap();
    assert_eq!(visited(store, above, Direction::Ascending).len(), 2);
    let all = KeyRange::new(Bound::Unbounded, Bound::Unbounded).unwrap();
    for direction in [Direction::Ascending, Direction::Descending] {
        for wanted in 1..=3 {
            let mut calls = 0;
            store
                .range(all, direction, &mut |_, _| {
                    calls += 1;
                    calls < wanted
                })
                .unwrap();
            assert_eq!(calls, wanted, "{direction:?}: a visitor that said stop");
        }
    }
    let mut values = Vec::new();
    store
        .range(range, Direction::Ascending, &mut |_, v| {
            values.push(v.to_vec());
            true
        })
        .unwrap();
    assert_eq!(
        values,
        [b"1".to_vec(), b"2".to_vec(), b"3".to_vec(), b"4".to_vec()]
    );
}

pub fn empty_and_inverted_ranges_are_empty<S: KvStore>(store: &S) {
    fill(store);
    let none = |from: &[u8], before: &[u8]| {
        let mut seen = 0;
        store
            .scan_from(b"a", from, &mut |_, _| {
                seen += 1;
                true
            })
            .unwrap();
        store
            .scan_rev(b"a", Some(before), &mut |_, _| {
                seen += 1;
                true
            })
            .unwrap();
        seen
    };
    assert_eq!(none(b"b", b"a"), 0);
    assert_eq!(none(b"\xff\xff\xff", b"\x00"), 0);
    assert!(KeyRange::new(Bound::Included(b"b"), Bound::Excluded(b"a")).is_none());
}

pub fn ordered_writes_end_with_the_newest_value<S: KvStore>(store: &S) {
    let writes = vec![
        put(b"o1", b"first"),
        put(b"o2", b"x"),
        put(b"o1", b"second"),
        (b"o2".to_vec(), None),
        put(b"o3", b"y"),
    ];
    store.write_ordered(&mut lend(&writes)).unwrap();
    store.sync().unwrap();
    assert_eq!(store.get(b"o1").unwrap(), Some(b"second".to_vec()));
    assert_eq!(store.get(b"o2").unwrap(), None);
    assert_eq!(
        keys_of(store.scan(b"o").unwrap()),
        [b"o1".to_vec(), b"o3".to_vec()]
    );
}

/// A scan that runs while another thread writes sees every key that was
/// there when it began, once each, in order.
pub fn scans_during_writes_see_what_was_there<S: KvStore>(store: S) {
    const KEYS: usize = 2_000;
    let store = Arc::new(store);
    store
        .write(
            (0..KEYS)
                .map(|i| put(format!("s{:05}", i * 2).as_bytes(), b"there"))
                .collect(),
        )
        .unwrap();
    store.sync().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                // Between the keys that were there, and over them.
                let key = format!("s{:05}", (i % KEYS) * 2 + 1);
                let over = format!("s{:05}", (i % KEYS) * 2);
                store
                    .write(vec![
                        put(key.as_bytes(), b"new"),
                        put(over.as_bytes(), b"newer"),
                    ])
                    .unwrap();
                store.sync().unwrap();
                i += 1;
            }
        })
    };
    for direction in [Direction::Ascending, Direction::Descending] {
        for _ in 0..5 {
            let mut seen = Vec::new();
            let range = KeyRange::new(Bound::Included(b"s"), Bound::Excluded(b"t")).unwrap();
            store
                .range(range, direction, &mut |k, _| {
                    seen.push(k.to_vec());
                    true
                })
                .unwrap();
            let mut sorted = seen.clone();
            sorted.sort();
            if direction == Direction::Descending {
                sorted.reverse();
            }
            assert_eq!(seen, sorted, "{direction:?}: in order");
            sorted.dedup();
            assert_eq!(sorted.len(), seen.len(), "{direction:?}: each key once");
            let old = seen
                .iter()
                .filter(|k| k[1..].iter().all(u8::is_ascii_digit))
                .filter(|k| {
                    let n: usize = std::str::from_utf8(&k[1..]).unwrap().parse().unwrap();
                    n.is_multiple_of(2)
                })
                .count();
            assert_eq!(old, KEYS, "{direction:?}: every key that was there");
        }
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
}
