//! Fuzzing the saga schema's decoders: every value and key the journal reads
//! back, fed bytes at random, the framing of a valid record around random
//! bodies (so the decoder, not the checksum, meets them), and real runs and
//! bundles of events at any seq and offset, damaged with their checksums made
//! to match. Each decoder either returns a value or says the record is
//! damaged; none panics. An undamaged run reads back as it was written.

use proptest::{collection::vec, prelude::*};

use super::*;
use crate::{
    journal::{JournalError, SagaSummary},
    saga::{Event, EventKind, Offset, Participant, SagaId, StepSpec},
    testing,
};

/// A record as `encode` frames one: version, checksum, body.
fn framed(version: u8, body: &[u8]) -> Vec<u8> {
    let mut bytes = vec![version];
    bytes.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    bytes.extend_from_slice(body);
    bytes
}

/// The record with its body changed at `at` and its checksum made to match.
fn forged(record: &[u8], at: usize, xor: u8) -> Vec<u8> {
    let mut body = record[5..].to_vec();
    if !body.is_empty() {
        let at = at % body.len();
        body[at] ^= xor;
    }
    framed(record[0], &body)
}

fn no_snapshot(id: u64) -> Result<Vec<StepSpec>, JournalError> {
    if id.is_multiple_of(2) {
        Ok(vec![testing::spec("only")])
    } else {
        Err(JournalError::Corrupt {
            key: format!("step snapshot {id}"),
            why: "not there".into(),
        })
    }
}

/// Whether `result` is a value or a finding of damage.
fn decoded_or_damaged<T>(what: &str, result: Result<T, JournalError>) -> Result<(), TestCaseError> {
    match result {
        Ok(_) | Err(JournalError::Corrupt { .. }) => Ok(()),
        Err(other) => Err(TestCaseError::fail(format!(
            "{what}: not a finding of damage: {other}"
        ))),
    }
}

/// Runs every decoder of the schema on `bytes`, under keys it could be at.
fn decode_all(bytes: &[u8], saga: SagaId, seq: u64, offset: u64) -> Result<(), TestCaseError> {
    let event = event_key(saga, seq);
    decoded_or_damaged("event", decode::<Event>(&event, bytes))?;
    decoded_or_damaged("run", decode_runs(&event, bytes, &no_snapshot))?;
    decoded_or_damaged("pointers", decode_pointers(&offset_key(offset), bytes))?;
    let summary = saga_key(SUMMARY, saga);
    decoded_or_damaged("summary", decode::<SagaSummary>(&summary, bytes))?;
    decoded_or_damaged("participant", decode::<Participant>(b"pname", bytes))?;
    decoded_or_damaged("steps", decode::<Vec<StepSpec>>(&snapshot_key(seq), bytes))?;
    decoded_or_damaged("saga id", decode::<SagaId>(b"iname", bytes))?;
    decoded_or_damaged("u64", decode_u64(NEXT_OFFSET_KEY, bytes))?;
    // Keys are read back too (scans hand them over).
    decoded_or_damaged("offset key", offset_of_key(bytes))?;
    decoded_or_damaged("saga key", saga_of_key(bytes))?;
    let _ = describe_key(bytes);
    Ok(())
}

fn saga_id() -> impl Strategy<Value = SagaId> {
    any::<[u8; 16]>().prop_map(SagaId::from_bytes)
}

#[test]
fn every_decoder_reads_or_refuses_random_bytes() {
    let bytes = prop_oneof![
        vec(any::<u8>(), 0..64),
        // Past the checksum, into the body decoders.
        (
            OLDEST_READABLE_VERSION..=FORMAT_VERSION,
            vec(any::<u8>(), 0..96)
        )
            .prop_map(|(v, body)| framed(v, &body)),
        vec(any::<u8>(), 0..96).prop_map(|body| framed(BUNDLE_VERSION, &body)),
    ];
    testing::fuzz(
        "journal codec, random bytes",
        (bytes, saga_id(), any::<u64>(), any::<u64>()),
        |(bytes, saga, seq, offset)| decode_all(&bytes, saga, seq, offset),
    );
}

/// A saga's history renumbered to start at `seq` and `offset`.
fn history(seq: u64, offset: u64) -> Vec<Event> {
    let mut events = testing::cancelled("shop", Some("key"), EventKind::SagaCompensated);
    let saga = SagaId::from_bytes([7; 16]);
    for (i, e) in events.iter_mut().enumerate() {
        e.saga = saga;
        e.seq = seq.wrapping_add(i as u64);
        e.offset = Offset(offset.wrapping_add(i as u64));
    }
    events
}

#[test]
fn runs_and_bundles_at_any_position_read_back_or_are_refused() {
    let near_the_end = prop_oneof![1u64..1000, (u64::MAX - 8)..=u64::MAX];
    let case = (
        near_the_end.clone(),
        near_the_end,
        1usize..4,
        any::<bool>(),
        proptest::option::weighted(0.7, (any::<usize>(), 1u8..=255)),
    );
    testing::fuzz(
        "journal codec, runs and bundles",
        case,
        |(seq, offset, split, snapshot, damage)| {
            let events = history(seq, offset);
            // Positions that would wrap past u64::MAX cannot be written.
            if events
                .windows(2)
                .any(|w| w[1].seq < w[0].seq || w[1].offset < w[0].offset)
            {
                return Ok(());
            }
            let split = split.min(events.len() - 1);
            let runs = [
                encode_run(&events[..split], snapshot.then_some(2)),
                encode_run(&events[split..], None),
            ];
            let bundle = encode_bundle(&[&runs[0], &runs[1]]);
            let key = event_key(events[0].saga, events[0].seq);
            let pointer = encode_pointer(&RunPointer {
                saga: events[0].saga,
                first_seq: events[0].seq,
                count: events.len() as u64,
            });
            match damage {
                None => {
                    let read = decode_run(&key, &bundle, &no_snapshot);
                    prop_assert!(read.is_ok(), "{read:?}");
                    let read = read.unwrap();
                    prop_assert_eq!(read.len(), events.len());
                    for (got, want) in read.iter().zip(&events) {
                        prop_assert_eq!((got.seq, got.offset), (want.seq, want.offset));
                    }
                    let pointers = decode_pointers(&offset_key(offset), &pointer);
                    prop_assert!(pointers.is_ok(), "{pointers:?}");
                }
                Some((at, xor)) => {
                    for record in [&runs[0], &runs[1], &bundle, &pointer] {
                        let forged = forged(record, at, xor);
                        decode_all(&forged, events[0].saga, events[0].seq, offset)?;
                    }
                }
            }
            Ok(())
        },
    );
}
