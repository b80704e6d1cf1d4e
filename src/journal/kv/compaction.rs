//! What a checkpoint writes to the store in place of the writes it gathered.
//!
//! The write-ahead log keeps every batch as appended; the store behind it only
//! needs the result. A saga appends a run of events per transition that must
//! be durable before it acts (a W1 saga: 4), and the store pays per key
//! written, not per byte (sled copies a node and logs an update for each). So a
//! checkpoint bundles the runs one saga appended since the last checkpoint
//! into one `e` record under the first run's key (`codec::encode_bundle`), and
//! consecutive offset index entries (one per run) into one `o` entry of up to
//! [`POINTERS_PER_BUNDLE`] pointers (`codec::encode_pointer_bundle`).
//!
//! Guarantees:
//! - Only keys the gathered writes put are touched: a bundle holds runs that
//!   were all written since the last checkpoint, keyed by the first of them, and
//!   every other run key of the group is left out (it was never in the store).
//! - Readers find every event where they looked before: a saga's history is
//!   still its `e` records in key order, and an offset index entry's run is
//!   inside the record at or before its key (`offsets.rs`).
//! - Removals pass through untouched and in place: a removed run key between
//!   two put ones ends a group. So do records that already are bundles, and
//!   anything that does not decode.
//! - Single index entries consecutive among the gathered writes are
//!   consecutive in the store too, so a bundle never reaches over an entry it
//!   does not hold: the writer adds entries only above every existing one, and
//!   retention writes each entry it edits (an older one) as a bundle
//!   (`offsets::unindex`), which ends a group.

use super::codec::{self, EVENT, OFFSET, RunPointer, UNFINISHED};
use crate::journal::store::{KeyWrite, KeyWriteRef, own};

/// Most pointers in one offset index bundle: a feed reading from an offset
/// decodes the whole bundle holding it.
pub const POINTERS_PER_BUNDLE: usize = 128;

/// An index entry gathered for a bundle: its key, its bytes, its pointer.
type Gathered<'a> = (&'a [u8], &'a [u8], (u64, RunPointer));

/// `writes` (in key order, each key once) with each saga's consecutive run
/// records bundled into one, and consecutive offset index entries too. The
/// writes are borrowed (from the frozen layer readers still see): only what
/// passes through is copied, bundles are built from the borrowed bytes.
pub fn bundle_runs(writes: &mut dyn Iterator<Item = KeyWriteRef<'_>>) -> Vec<KeyWrite> {
    let mut out = Vec::new();
    // The groups being gathered: consecutive puts of run records of one saga,
    // and consecutive index entries. Keys are sorted, so at most one is open.
    let mut runs: Vec<(&[u8], &[u8])> = Vec::new();
    let mut pointers: Vec<Gathered<'_>> = Vec::new();
    for (key, value) in writes {
        match value {
            Some(value) if is_run_key(key) && !codec::is_bundle(value) => {
                if runs
                    .first()
                    .is_some_and(|(first, _)| !same_saga(first, key))
                {
                    flush_runs(&mut runs, &mut out);
                }
                runs.push((key, value));
            }
            Some(value) if key.first() == Some(&OFFSET) => match single_pointer(key, value) {
                Some(pointer) => {
                    if pointers.len() == POINTERS_PER_BUNDLE {
                        flush_pointers(&mut pointers, &mut out);
                    }
                    pointers.push((key, value, pointer));
                }
                None => {
                    flush_pointers(&mut pointers, &mut out);
                    out.push((key.to_vec(), Some(value.to_vec())));
                }
            },
            value => {
                flush_runs(&mut runs, &mut out);
                flush_pointers(&mut pointers, &mut out);
                out.push(own((key, value)));
            }
        }
    }
    flush_runs(&mut runs, &mut out);
    flush_pointers(&mut pointers, &mut out);
    out
}

/// The one pointer of an index entry as the writer makes it; `None` for a
/// bundle already, or anything else (left as it is).
fn single_pointer(key: &[u8], value: &[u8]) -> Option<(u64, RunPointer)> {
    if codec::is_bundle(value) {
        return None;
    }
    match codec::decode_pointers(key, value) {
        Ok(Some(pointers)) if pointers.len() == 1 => pointers.into_iter().next(),
        _ => None,
    }
}

/// Writes the gathered index entries out: one as it is, several as a bundle.
fn flush_pointers(group: &mut Vec<Gathered<'_>>, out: &mut Vec<KeyWrite>) {
    match group.as_slice() {
        [] => {}
        [(key, value, _)] => out.push((key.to_vec(), Some(value.to_vec()))),
        [(key, _, _), ..] => {
            let pointers: Vec<(u64, RunPointer)> = group.iter().map(|(_, _, p)| *p).collect();
            out.push((key.to_vec(), Some(codec::encode_pointer_bundle(&pointers))));
        }
    }
    group.clear();
}

/// Whether `key` is a saga's unfinished-index entry. The writer puts one
/// only when its saga enters the index (`kv.rs`, `index_writes`: from a final
/// status, or at start), so wherever it is put it was absent: the
/// [`overlay::PutOnlyOverAbsent`](crate::journal::store::wal::overlay::PutOnlyOverAbsent) of the
/// sled journal.
pub fn unfinished_entry(key: &[u8]) -> bool {
    key.first() == Some(&UNFINISHED) && key.len() == 17
}

fn is_run_key(key: &[u8]) -> bool {
    key.first() == Some(&EVENT) && key.len() == 25
}

fn same_saga(a: &[u8], b: &[u8]) -> bool {
    a[..17] == b[..17]
}

/// Writes the gathered runs out: one record as it is, several as a bundle.
fn flush_runs(group: &mut Vec<(&[u8], &[u8])>, out: &mut Vec<KeyWrite>) {
    match group.as_slice() {
        [] => {}
        [(key, value)] => out.push((key.to_vec(), Some(value.to_vec()))),
        [(key, _), ..] => {
            let records: Vec<&[u8]> = group.iter().map(|(_, v)| *v).collect();
            out.push((key.to_vec(), Some(codec::encode_bundle(&records))));
        }
    }
    group.clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::store::lend;
    use crate::saga::Offset;
    use crate::{
        journal::kv::codec::encode_run,
        saga::{Event, EventKind},
        testing,
    };
    use codec::RunPointer;

    /// Runs of `saga`: events `seqs` grouped as given, with offsets from `offset`.
    fn runs(first: &Event, groups: &[&[u64]], offset: &mut u64) -> Vec<(Vec<u8>, Vec<u8>)> {
        groups
            .iter()
            .map(|seqs| {
                let events: Vec<Event> = seqs
                    .iter()
                    .map(|&seq| {
                        *offset += 1;
                        Event {
                            seq,
                            offset: Offset(*offset),
                            kind: if seq == 1 {
                                first.kind.clone()
                            } else {
                                EventKind::CancelRequested {
                                    reason: format!("event {seq}"),
                                    by: None,
                                }
                            },
                            ..first.clone()
                        }
                    })
                    .collect();
                (
                    codec::event_key(first.saga, seqs[0]),
                    encode_run(&events, None),
                )
            })
            .collect()
    }

    fn no_snapshots(_: u64) -> Result<Vec<crate::saga::StepSpec>, crate::journal::JournalError> {
        unreachable!("these runs keep their steps inline")
    }

    #[test]
    fn a_sagas_runs_become_one_record_that_reads_back_as_the_same_runs() {
        let a = testing::started("shop", None);
        let b = testing::started("shop", None);
        let mut offset = 0;
        let a_runs = runs(&a, &[&[1, 2], &[3], &[4, 5, 6]], &mut offset);
        let b_runs = runs(&b, &[&[1]], &mut offset);
        let mut writes: Vec<KeyWrite> = a_runs
            .iter()
            .chain(&b_runs)
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect();
        writes.push((b"s-other".to_vec(), None));
        writes.sort_by(|x, y| x.0.cmp(&y.0));
        let out = bundle_runs(&mut lend(&writes));
        assert_eq!(
            out.len(),
            3,
            "a's three runs in one record, b's alone, the removal"
        );
        let (key, value) = out
            .iter()
            .find(|(k, _)| k == &a_runs[0].0)
            .expect("a's record under its first run's key");
        let runs = codec::decode_runs(key, value.as_ref().unwrap(), &no_snapshots).unwrap();
        let shapes: Vec<Vec<u64>> = runs
            .iter()
            .map(|run| run.iter().map(|e| e.seq).collect())
            .collect();
        assert_eq!(shapes, [vec![1, 2], vec![3], vec![4, 5, 6]]);
        assert_eq!(runs[2][0].offset, Offset(4), "offsets as appended");
        assert!(
            out.iter()
                .any(|(k, v)| k == &b_runs[0].0 && v.as_ref() == Some(&b_runs[0].1))
        );
    }

    #[test]
    fn consecutive_index_entries_become_bundles_of_at_most_the_limit() {
        let saga = testing::started("shop", None).saga;
        let entry = |offset: u64| {
            let pointer = RunPointer {
                saga,
                first_seq: offset,
                count: 1,
            };
            (
                codec::offset_key(offset),
                Some(codec::encode_pointer(&pointer)),
            )
        };
        let mut writes: Vec<KeyWrite> = (1..=300).map(entry).collect();
        // A removal in the middle ends a bundle.
        writes[199].1 = None;
        let out = bundle_runs(&mut lend(&writes));
        let sizes: Vec<Option<usize>> = out
            .iter()
            .map(|(k, v)| {
                v.as_ref()
                    .map(|v| codec::decode_pointers(k, v).unwrap().unwrap().len())
            })
            .collect();
        assert_eq!(sizes, [Some(128), Some(71), None, Some(100)]);
        let (key, value) = &out[1];
        assert_eq!(key, &codec::offset_key(129));
        let pointers = codec::decode_pointers(key, value.as_ref().unwrap())
            .unwrap()
            .unwrap();
        assert!(pointers.iter().map(|(o, _)| *o).eq(129..200));
        assert!(pointers.iter().all(|(o, p)| p.first_seq == *o));
        // A bundle already made (by retention) stays as it is.
        let again = bundle_runs(&mut lend(&out));
        assert_eq!(again, out);
    }

    #[test]
    fn a_damaged_or_misordered_bundle_is_reported() {
        let a = testing::started("shop", None);
        let mut offset = 0;
        let a_runs = runs(&a, &[&[1], &[2, 3]], &mut offset);
        let records: Vec<&[u8]> = a_runs.iter().map(|(_, v)| v.as_slice()).collect();
        let bundle = codec::encode_bundle(&records);
        let key = &a_runs[0].0;
        for i in 0..bundle.len() {
            let mut flipped = bundle.clone();
            flipped[i] ^= 0x20;
            assert!(
                codec::decode_runs(key, &flipped, &no_snapshots).is_err(),
                "byte {i}"
            );
        }
        // Runs out of order: the second does not start where the first ended.
        let swapped = codec::encode_bundle(&[records[1], records[0]]);
        assert!(codec::decode_runs(key, &swapped, &no_snapshots).is_err());
    }
}
