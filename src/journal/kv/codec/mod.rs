//! The saga schema's encoding: its keys (`keys.rs`, with the one table of
//! every key), its values (`record.rs`: version, checksum, postcard), runs of
//! events and bundles (`run.rs`), and the shapes of earlier formats (`v1.rs`,
//! `v4.rs` to `v10.rs`).
//!
//! Versions (postcard is not self-describing, so a changed shape needs a new one):
//! - 1: the first format.
//! - 2: `SagaStarted` gained `trace`. Version-1 records are still read, through
//!   the old shapes in `v1.rs` ([`Record::from_v1`]).
//! - 3: runs (`run.rs`): `e` records hold runs and `o` entries point at runs.
//!   An `e` record of version 1 or 2 (one event) still reads, as a run of one;
//!   an offset index of an earlier version is rebuilt at open (`upgrade.rs`).
//!   Other records are unchanged since version 2.
//! - 4: bundles (`run.rs`), for `e` records and `o` entries only. Every other
//!   record, and every record the journal's writer made, was still version 3.
//! - 5: retry policies gained `max_duration` (a forward budget by time), so
//!   participants, step snapshots and events changed shape; and `Failure`
//!   gained `NotDelivered`, `EventKind` `EndpointsRefreshed`, both appended
//!   last, so the old variants keep their indexes. Records of
//!   versions 2 to 4 (runs of version 3 too) are read through the old shapes
//!   in `v4.rs` ([`Record::from_v4`]), their policies without a time budget;
//!   version 1 goes through `v1.rs` and then those. The writer makes every
//!   record version 5 now, but bundles, still version 4 (their own framing did
//!   not change; the runs inside keep their versions).
//! - 6: principals (`crate::auth`): `SagaStarted` gained `started_by`,
//!   `CancelRequested` and `RetryRequested` a `by`, participants
//!   `registered_by`; in runs, a `SagaStarted` stored against a step snapshot
//!   carries `started_by` too. Version-5 records read through the old shapes
//!   in `v5.rs` ([`Record::from_v5`]), with no principal (`None`, shown as
//!   "not recorded"); versions 2 to 4 read through `v4.rs` straight into
//!   today's shapes, likewise without one. The writer makes every record
//!   version 6, bundles still version 4.
//! - 7: step kinds (`saga::StepKind`): `StepSpec` and `StepDef` gained `kind`,
//!   so step snapshots and `SagaStarted` changed; `EventKind` gained
//!   `ResumeRequested`, appended. Version-6 records read through `v6.rs`,
//!   every step compensatable.
//! - 8: a saga's times: `SagaStarted` gained `start_at` and `deadline` (in
//!   runs, a `Started` stored against a step snapshot too); `EventKind`
//!   gained `StartReached` and `SagaStatus` `Scheduled`, both appended.
//!   Version-7 records read through `v7.rs`, started at once with no
//!   deadline.
//! - 9: data flow (`saga::input`): `StepSpec` and `StepDef` gained `input`,
//!   so step snapshots and `SagaStarted` changed; `EventKind` gained
//!   `InputResolved` and `InputUnresolved`, appended. Version-8 records read
//!   through `v8.rs`, their steps without inputs (version 7's `SagaStarted`
//!   holds those steps too).
//! - 10: a participant, and a pivot or retriable step using it, may have no
//!   compensate endpoint: stored as one with an empty URL, which no
//!   endpoint has (`definition::opt_endpoint`). No shape changed; the
//!   version says an older build must not read the empty URL as damage.
//! - 11: participant limits (`saga::limits`): `Participant` gained
//!   `limits`. Participants of versions 9 and 10 read through `v10.rs`,
//!   without limits. The writer makes every record version 11, bundles
//!   still 4.

use crate::journal::JournalError;

#[cfg(test)]
mod fuzz;
mod keys;
mod kinds;
mod record;
mod run;
mod v1;
mod v10;
mod v4;
mod v5;
mod v6;
mod v7;
mod v8;

pub use keys::*;
pub use record::*;
pub use run::*;

/// A record or key at `key` is damaged.
fn corrupt(key: &[u8], why: impl Into<String>) -> JournalError {
    JournalError::Corrupt {
        key: describe_key(key),
        why: why.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saga::Offset;

    use crate::{
        journal::store::{Bytes, KeyWrite, KeyWrites},
        saga::{EventKind, SagaId, StepSpec},
    };

    #[test]
    fn byte_strings_encode_as_their_sequences_do() {
        let writes: Vec<KeyWrite> = vec![
            (b"k1".to_vec(), Some(vec![0, 1, 2, 255])),
            (b"k2".to_vec(), None),
            (Vec::new(), Some(vec![7; 300])),
        ];
        assert_eq!(
            postcard::to_stdvec(&KeyWrites(&writes)).unwrap(),
            postcard::to_stdvec(&writes).unwrap()
        );
        let records: Vec<&[u8]> = vec![b"run one", &[0; 200], b""];
        let as_bytes: Vec<Bytes<'_>> = records.iter().map(|r| Bytes(r)).collect();
        assert_eq!(
            postcard::to_stdvec(&as_bytes).unwrap(),
            postcard::to_stdvec(&records).unwrap()
        );
    }

    impl Record for (String, u64) {}

    #[test]
    fn round_trip_and_damage_detection() {
        let key = name_key(PARTICIPANT, "pay");
        let bytes = encode(&("hello".to_string(), 42u64));
        let back: (String, u64) = decode(&key, &bytes).unwrap();
        assert_eq!(back, ("hello".to_string(), 42));

        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x40;
            let err = decode::<(String, u64)>(&key, &flipped).unwrap_err();
            assert!(
                matches!(err, JournalError::Corrupt { .. }),
                "byte {i}: {err}"
            );
        }
        for len in 0..bytes.len() {
            assert!(
                decode::<(String, u64)>(&key, &bytes[..len]).is_err(),
                "truncated to {len}"
            );
        }
    }

    #[test]
    fn runs_round_trip_and_single_events_of_version_1_read_as_runs() {
        use crate::testing::{next, started};
        let mut first = started("shop", None);
        first.offset = Offset(7);
        let id = first.saga;
        let mut second = next(id, 2, EventKind::SagaCompleted);
        second.offset = Offset(8);
        let run = vec![first.clone(), second];
        let key = event_key(id, 1);
        let no_snapshots = |_: u64| -> Result<Vec<StepSpec>, JournalError> {
            panic!("the run refers to no snapshot")
        };
        let whole = encode_run(&run, None);
        assert_eq!(decode_run(&key, &whole, &no_snapshots).unwrap(), run);
        // With a snapshot, the steps are stored once elsewhere and read back.
        let EventKind::SagaStarted { steps, .. } = &first.kind else {
            unreachable!()
        };
        let shared = encode_run(&run, Some(42));
        assert!(shared.len() < whole.len());
        let from_snapshot = |snapshot: u64| {
            assert_eq!(snapshot, 42);
            Ok(steps.clone())
        };
        assert_eq!(decode_run(&key, &shared, &from_snapshot).unwrap(), run);
        let single = encode_as_version(2, &first);
        assert_eq!(
            decode_run(&key, &single, &no_snapshots).unwrap(),
            vec![first.clone()]
        );
        // A run under another saga's or another seq's key is damage.
        let err = decode_run(&event_key(id, 2), &whole, &no_snapshots).unwrap_err();
        assert!(err.to_string().contains("it holds event 1"), "{err}");
        let pointer = RunPointer {
            saga: id,
            first_seq: 1,
            count: 2,
        };
        let index_key = offset_key(7);
        let bytes = encode_pointer(&pointer);
        assert_eq!(
            decode_pointers(&index_key, &bytes).unwrap(),
            Some(vec![(7, pointer)])
        );
        let old = encode_as_version(2, &(id, 1u64));
        assert_eq!(decode_pointers(&index_key, &old).unwrap(), None);
        // A bundle of entries reads back whole, and only under its first offset.
        let later = RunPointer {
            first_seq: 3,
            count: 1,
            ..pointer
        };
        let bundle = encode_pointer_bundle(&[(7, pointer), (12, later)]);
        assert!(is_bundle(&bundle) && !is_bundle(&bytes));
        assert_eq!(
            decode_pointers(&index_key, &bundle).unwrap(),
            Some(vec![(7, pointer), (12, later)])
        );
        let err = decode_pointers(&offset_key(8), &bundle).unwrap_err();
        assert!(err.to_string().contains("starts at offset 7"), "{err}");
    }

    #[test]
    fn event_keys_sort_by_saga_then_seq() {
        let a = SagaId::generate();
        let b = SagaId::generate();
        assert!(event_key(a, 2) < event_key(a, 10));
        assert!(event_key(a, u64::MAX) < event_key(b, 1));
        assert_eq!(saga_of_key(&event_key(b, 3)).unwrap(), b);
        assert!(offset_key(255) < offset_key(256));
        assert_eq!(offset_of_key(&offset_key(1 << 40)).unwrap(), 1 << 40);
        assert_eq!(describe_key(&offset_key(7)), "offset index entry 7");
        assert_eq!(
            describe_key(&event_key(b, 3)),
            format!("of saga {b} from event 3")
        );
    }
}
