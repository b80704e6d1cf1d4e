//! Fuzzing the log's reader. Logs are built from random batches in one or two
//! segments, then damaged at random: bytes flipped anywhere (headers, lengths,
//! checksums, bodies), the file cut or grown, or a record's body changed with
//! its checksum made to match. [`scan`] must read every such log or refuse it
//! as damaged, never panic; and what it reads of a log whose checksums were
//! not forged is exactly a prefix of what was written.

use std::path::Path;

use proptest::{collection::vec, option, prelude::*};

use super::segment::{HEADER_BYTES, encode_record, scan, segment_header, segment_path};
use crate::{
    journal::store::{KeyWrite, StoreError},
    testing,
};

fn key_write() -> impl Strategy<Value = KeyWrite> {
    (vec(any::<u8>(), 0..12), option::of(vec(any::<u8>(), 0..48)))
}

/// A record's body changed and its checksum recomputed, as no torn write
/// or flipped bit makes: only the decoder stands between it and the store.
#[derive(Debug, Clone)]
struct Forged {
    record: usize,
    at: usize,
    xor: u8,
}

#[derive(Debug, Clone)]
struct Case {
    batches: Vec<Vec<KeyWrite>>,
    /// How many batches go to the first segment (the rest to a second).
    split: usize,
    /// Zero bytes after the last record of each segment.
    slack: usize,
    /// Which segment is damaged, and how.
    damaged: usize,
    flips: Vec<(usize, u8)>,
    cut: Option<usize>,
    tail: Vec<u8>,
    forged: Option<Forged>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        vec(vec(key_write(), 0..4), 1..6),
        any::<usize>(),
        0usize..64,
        any::<usize>(),
        vec((any::<usize>(), 1u8..=255), 0..3),
        option::weighted(0.2, any::<usize>()),
        prop_oneof![4 => Just(vec![]), 1 => vec(any::<u8>(), 1..8)],
        option::weighted(0.2, (any::<usize>(), any::<usize>(), 1u8..=255)),
    )
        .prop_map(
            |(batches, split, slack, damaged, flips, cut, tail, forged)| Case {
                split: split % (batches.len() + 1),
                batches,
                slack,
                damaged,
                flips,
                cut,
                tail,
                forged: forged.map(|(record, at, xor)| Forged { record, at, xor }),
            },
        )
}

/// The segment holding batches `first..` (numbered from 1), with the byte
/// ranges of its records.
fn segment(
    index: u64,
    first: u64,
    batches: &[Vec<KeyWrite>],
    slack: usize,
) -> (Vec<u8>, Vec<(usize, usize)>) {
    let records: Vec<Vec<u8>> = batches
        .iter()
        .enumerate()
        .map(|(n, b)| encode_record(first + n as u64, b).unwrap())
        .collect();
    let size = HEADER_BYTES as usize + records.iter().map(Vec::len).sum::<usize>() + slack;
    let mut bytes = segment_header(size as u64, index, first).to_vec();
    let mut ranges = Vec::new();
    for record in records {
        ranges.push((bytes.len(), bytes.len() + record.len()));
        bytes.extend(record);
    }
    bytes.resize(size, 0);
    (bytes, ranges)
}

/// Changes a record's body and makes its checksum match (the framing is
/// length, checksum, then the checked bytes).
fn forge(bytes: &mut [u8], (start, end): (usize, usize), at: usize, xor: u8) {
    let body = start + 8..end;
    let at = body.start + at % body.len();
    bytes[at] ^= xor;
    let crc = crc32fast::hash(&bytes[body]);
    bytes[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn write_log(dir: &Path, case: &Case) -> bool {
    let parts = [&case.batches[..case.split], &case.batches[case.split..]];
    let mut first = 1;
    let mut forged = false;
    for (index, (n, part)) in (1..).zip(parts.iter().enumerate()) {
        if part.is_empty() && n == 1 {
            break;
        }
        let (mut bytes, ranges) = segment(index, first, part, case.slack);
        if n == case.damaged % 2 {
            if let Some(f) = &case.forged
                && !ranges.is_empty()
            {
                forge(&mut bytes, ranges[f.record % ranges.len()], f.at, f.xor);
                forged = true;
            }
            bytes = testing::damaged(&bytes, &case.flips, case.cut, &case.tail);
        }
        std::fs::write(segment_path(dir, index), bytes).unwrap();
        first += part.len() as u64;
    }
    forged
}

#[test]
fn the_log_reader_reads_or_refuses_any_damage_and_invents_nothing() {
    testing::fuzz("wal segments", case(), |case| {
        let dir = tempfile::tempdir().unwrap();
        let forged = write_log(dir.path(), &case);
        match scan(dir.path()) {
            Ok(found) => {
                prop_assert!(found.records.len() <= case.batches.len());
                for (n, (_, record)) in found.records.iter().enumerate() {
                    prop_assert_eq!(record.batch, n as u64 + 1);
                    if !forged {
                        prop_assert_eq!(&record.writes, &case.batches[n]);
                    }
                }
                // Damage that is read past is only ever a torn tail or an
                // unused last segment: the log was undamaged up to there.
                let untouched =
                    case.flips.is_empty() && case.cut.is_none() && case.tail.is_empty() && !forged;
                if untouched {
                    prop_assert_eq!(found.records.len(), case.batches.len());
                }
            }
            Err(StoreError::Corrupt { at, why }) => {
                prop_assert!(at.contains(".wal"), "names the segment: {at}: {why}");
            }
            Err(other) => prop_assert!(false, "not a finding of damage: {other}"),
        }
        Ok(())
    });
}
