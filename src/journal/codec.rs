//! The on-disk layout of the key-value journals: keys that sort, and values that
//! carry a format version and a checksum.
//!
//! Keys (big-endian integers, so byte order is numeric order):
//! ```text
//! e <saga id:16> <first seq:8>  → run of events   a saga's history, in seq order (or a bundle of runs)
//! u <saga id:16>                → (empty)         sagas not yet terminal
//! s <saga id:16>                → summary         listing fields; id order = age
//! i <idempotency key>           → saga id:16
//! p <participant name>          → participant
//! o <first offset:8>            → run pointer     the offset index (`offsets.rs`; or a bundle)
//! d <snapshot id:8>             → step snapshot   shared by sagas (`snapshots.rs`)
//! m next_offset                 → u64 BE          the next global event offset
//! m archived_through            → u64 BE          highest offset of a removed event
//! ```
//!
//! Retention (`remove_sagas`) deletes every key of a saga at once; offsets of
//! removed events leave holes in the `o` index, all at or below
//! `archived_through` (see `offsets.rs`).
//! Values: `[version:1][crc32 of body:4 LE][postcard body]`. A record whose
//! version is unknown or whose checksum does not match is reported as damaged,
//! never decoded as something else.
//!
//! Versions (postcard is not self-describing, so a changed shape needs a new one):
//! - 1: the first format.
//! - 2: `SagaStarted` gained `trace`. Version-1 records are still read, through
//!   the old shapes in `codec/v1.rs` ([`Record::from_v1`]).
//! - 3: runs (below): `e` records hold runs and `o` entries point at runs. An
//!   `e` record of version 1 or 2 (one event) still reads, as a run of one; an
//!   offset index of an earlier version is rebuilt at open (`offsets.rs`).
//!   Other records are unchanged since version 2.
//! - 4: bundles (below), for `e` records and `o` entries only. Every other
//!   record, and every record the journal's writer makes, is still version 3.
//!
//! **Runs.** The events one append writes for one saga (a step's result and the
//! next step's start, say) share one record, a [`Run`]: one key, one checksum,
//! the saga id and the first seq and offset once, then each event's time and
//! kind. A W1 saga is 4 records instead of 8, and its offset index 4 entries
//! instead of 8: half the store writes on the journal's hot path.
//!
//! **Bundles.** A checkpoint (`compaction.rs`) stores the runs a saga appended
//! since the last one as one `e` record, keyed by the first run's key: the
//! runs' records as they were appended, each with its own checksum, inside one
//! more. Reading the record gives every event of every run, in seq order. A W1
//! saga that ends within a checkpoint interval is one store write instead of 4.
//! Likewise consecutive offset index entries become one `o` entry under the
//! first one's offset, a list of `(first offset, run pointer)`.
//!
//! **Step snapshots.** A `SagaStarted` holds the saga's steps as resolved at
//! start (names, endpoints, retry policies, timeouts): the same for every saga
//! of a definition, and most of a W1 saga's bytes. In a run it is stored once
//! per distinct snapshot, as a `d` record named by a hash of its encoding, and
//! the event refers to it ([`StoredKind::Started`]). Inline-step sagas keep
//! their steps in the event (their snapshots rarely repeat).

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::{JournalError, SagaSummary, kv::KeyWrite};
use crate::saga::{Event, EventKind, Participant, SagaId, StepSpec, Timestamp, TraceContext};

mod v1;

/// The newest format version this build reads, and writes for bundles.
pub const FORMAT_VERSION: u8 = 4;
/// The version this build writes for every record but bundles.
pub const RECORD_VERSION: u8 = 3;
/// The oldest format version this build reads.
pub const OLDEST_READABLE_VERSION: u8 = 1;
/// The first version with runs of events and run pointers in the offset index.
pub const RUNS_SINCE_VERSION: u8 = 3;

/// A type stored as a journal value, and how its older encodings are read.
pub trait Record: Serialize + DeserializeOwned {
    /// Decodes a body written in format version 1. The default is for types
    /// whose shape has not changed since.
    fn from_v1(body: &[u8]) -> postcard::Result<Self> {
        postcard::from_bytes(body)
    }
}

impl Record for Event {
    fn from_v1(body: &[u8]) -> postcard::Result<Self> {
        postcard::from_bytes::<v1::Event>(body).map(Event::from)
    }
}
impl Record for SagaSummary {}
impl Record for Participant {}
impl Record for SagaId {}
/// A step snapshot (new in version 3).
impl Record for Vec<StepSpec> {}
/// An offset index entry: which event of which saga.
impl Record for (SagaId, u64) {}

pub const EVENT: u8 = b'e';
pub const UNFINISHED: u8 = b'u';
/// The failed index (`by_status.rs`).
pub const FAILED: u8 = b'f';
pub const SUMMARY: u8 = b's';
pub const IDEMPOTENCY: u8 = b'i';
pub const PARTICIPANT: u8 = b'p';
pub const OFFSET: u8 = b'o';
pub const SNAPSHOT: u8 = b'd';
pub const NEXT_OFFSET_KEY: &[u8] = b"mnext_offset";
pub const ARCHIVED_THROUGH_KEY: &[u8] = b"marchived_through";
/// Present once the failed index covers every saga (`by_status.rs`).
pub const FAILED_INDEX_KEY: &[u8] = b"mfailed_index";

/// A `u64` stored big-endian under a meta key.
pub fn decode_u64(key: &[u8], bytes: &[u8]) -> Result<u64, JournalError> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| corrupt(key, format!("{} bytes where 8 were expected", bytes.len())))
}

/// `prefix` followed by the saga id.
pub fn saga_key(prefix: u8, id: SagaId) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + 16 + 8);
    key.push(prefix);
    key.extend_from_slice(id.as_bytes());
    key
}

/// The key of the run of events of saga `id` that starts at `seq`.
pub fn event_key(id: SagaId, seq: u64) -> Vec<u8> {
    let mut key = saga_key(EVENT, id);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The offset index key of a global offset.
pub fn offset_key(offset: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + 8);
    key.push(OFFSET);
    key.extend_from_slice(&offset.to_be_bytes());
    key
}

/// The offset in a key made by `offset_key`.
pub fn offset_of_key(key: &[u8]) -> Result<u64, JournalError> {
    key.get(1..9)
        .filter(|_| key.len() == 9)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| corrupt(key, "an offset index key is 9 bytes"))
}

/// `prefix` followed by a name.
pub fn name_key(prefix: u8, name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + name.len());
    key.push(prefix);
    key.extend_from_slice(name.as_bytes());
    key
}

/// The first key after every key that starts with `prefix` (prefixes here never
/// end in 0xff, as they are ASCII tags followed by fixed-length ids).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![u8::MAX; prefix.len() + 1]
}

/// The saga id in a key made by `saga_key` or `event_key`.
pub fn saga_of_key(key: &[u8]) -> Result<SagaId, JournalError> {
    key.get(1..17)
        .and_then(|b| <[u8; 16]>::try_from(b).ok())
        .map(SagaId::from_bytes)
        .ok_or_else(|| corrupt(key, "the key is too short to hold a saga id"))
}

/// A printable form of a key, for error messages.
pub fn describe_key(key: &[u8]) -> String {
    match key.first() {
        Some(&EVENT) if key.len() == 25 => {
            let seq = u64::from_be_bytes(key[17..25].try_into().unwrap_or_default());
            match saga_of_key(key) {
                Ok(id) => format!("of saga {id} from event {seq}"),
                Err(_) => format!("{key:?}"),
            }
        }
        Some(&(UNFINISHED | SUMMARY | FAILED)) if key.len() == 17 => match saga_of_key(key) {
            Ok(id) => format!("index entry of saga {id}"),
            Err(_) => format!("{key:?}"),
        },
        Some(&OFFSET) if key.len() == 9 => match offset_of_key(key) {
            Ok(offset) => format!("offset index entry {offset}"),
            Err(_) => format!("{key:?}"),
        },
        Some(&SNAPSHOT) if key.len() == 9 => {
            let id = u64::from_be_bytes(key[1..9].try_into().unwrap_or_default());
            format!("step snapshot {id:016x}")
        }
        Some(&(IDEMPOTENCY | PARTICIPANT)) => {
            format!("'{}'", String::from_utf8_lossy(&key[1..]))
        }
        _ => String::from_utf8_lossy(key).into_owned(),
    }
}

fn corrupt(key: &[u8], why: impl Into<String>) -> JournalError {
    JournalError::Corrupt {
        key: describe_key(key),
        why: why.into(),
    }
}

/// Encodes a value with version and checksum.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    checked(RECORD_VERSION, value)
}

/// `version`, a checksum, then the value.
fn checked<T: Serialize + ?Sized>(version: u8, value: &T) -> Vec<u8> {
    // Serializing our own plain data types into a Vec cannot fail.
    let mut out =
        encode_after(&[version, 0, 0, 0, 0], value).expect("postcard encoding of a journal record");
    let crc = crc32fast::hash(&out[5..]);
    out[1..5].copy_from_slice(&crc.to_le_bytes());
    out
}

/// `header`, then the postcard encoding of `value`, in a Vec allocated once at
/// its final size. Grown as postcard writes, a record's Vec was reallocated and
/// copied about six times: 2.5% of the coordinator's instructions (session 8).
pub fn encode_after<T: Serialize + ?Sized>(header: &[u8], value: &T) -> postcard::Result<Vec<u8>> {
    let size = postcard::serialize_with_flavor::<T, postcard::ser_flavors::Size, usize>(
        value,
        postcard::ser_flavors::Size::default(),
    )?;
    let mut out = Vec::with_capacity(header.len() + size);
    out.extend_from_slice(header);
    postcard::to_extend(value, out)
}

/// A byte string serialized as one: postcard writes its length and then the
/// bytes at once. serde serializes a `[u8]` or `Vec<u8>` as a sequence, which
/// postcard writes as the same length and bytes, one call per byte (in the
/// sizing pass and again in the writing one). Decoders read either as a
/// `Vec<u8>` or `&[u8]`.
pub struct Bytes<'a>(pub &'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// Key writes serialized as `[KeyWrite]` is, with their byte strings as
/// [`Bytes`].
pub struct KeyWrites<'a>(pub &'a [KeyWrite]);

impl Serialize for KeyWrites<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(
            self.0
                .iter()
                .map(|(key, value)| (Bytes(key), value.as_deref().map(Bytes))),
        )
    }
}

/// Encodes as an earlier build did, for tests of reading older journals.
#[cfg(test)]
pub fn encode_as_version<T: Serialize>(version: u8, value: &T) -> Vec<u8> {
    let mut out = encode(value);
    out[0] = version;
    out
}

/// Decodes a value written by `encode`, checking version and checksum.
pub fn decode<T: Record>(key: &[u8], bytes: &[u8]) -> Result<T, JournalError> {
    let (version, body) = open(key, bytes)?;
    body_as(key, version, body)
}

/// The version and the checked body of a record.
fn open<'a>(key: &[u8], bytes: &'a [u8]) -> Result<(u8, &'a [u8]), JournalError> {
    let (&version, rest) = bytes
        .split_first()
        .ok_or_else(|| corrupt(key, "empty value"))?;
    if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(corrupt(
            key,
            format!(
                "format version {version}; this build reads versions {OLDEST_READABLE_VERSION} to {FORMAT_VERSION}"
            ),
        ));
    }
    if rest.len() < 4 {
        return Err(corrupt(key, "value shorter than its checksum"));
    }
    let (crc, body) = rest.split_at(4);
    let expected = u32::from_le_bytes(crc.try_into().unwrap_or_default());
    if crc32fast::hash(body) != expected {
        return Err(corrupt(key, "checksum mismatch"));
    }
    Ok((version, body))
}

fn body_as<T: Record>(key: &[u8], version: u8, body: &[u8]) -> Result<T, JournalError> {
    let value = match version {
        1 => T::from_v1(body),
        _ => postcard::from_bytes(body),
    };
    value.map_err(|e| corrupt(key, format!("undecodable body: {e}")))
}

/// Consecutive events of one saga, as one record: what is common to them is
/// stored once.
#[derive(Serialize)]
struct Run<'a> {
    saga: SagaId,
    first_seq: u64,
    first_offset: u64,
    events: Vec<(Timestamp, StoredKind<'a>)>,
}

/// [`Run`], read back.
#[derive(Deserialize)]
struct OwnedRun {
    saga: SagaId,
    first_seq: u64,
    first_offset: u64,
    events: Vec<(Timestamp, OwnedStoredKind)>,
}

/// An event's kind as a run stores it: as it is, or a `SagaStarted` whose steps
/// are the step snapshot `snapshot` (a `d` record).
#[derive(Serialize)]
enum StoredKind<'a> {
    Event(&'a EventKind),
    Started {
        definition: &'a str,
        snapshot: u64,
        payload: &'a [u8],
        idempotency_key: &'a Option<String>,
        trace: &'a Option<TraceContext>,
    },
}

/// [`StoredKind`], read back.
#[derive(Deserialize)]
enum OwnedStoredKind {
    Event(EventKind),
    Started {
        definition: String,
        snapshot: u64,
        payload: Vec<u8>,
        idempotency_key: Option<String>,
        trace: Option<TraceContext>,
    },
}

/// Encodes consecutive events of one saga (seqs and offsets each without gaps).
/// With `snapshot`, a `SagaStarted` among them that has no inline steps is
/// stored with a reference to that step snapshot instead of its steps.
pub fn encode_run(events: &[Event], snapshot: Option<u64>) -> Vec<u8> {
    let first = &events[0];
    debug_assert!(events.iter().enumerate().all(|(i, e)| e.saga == first.saga
        && e.seq == first.seq + i as u64
        && e.offset == first.offset + i as u64));
    encode(&Run {
        saga: first.saga,
        first_seq: first.seq,
        first_offset: first.offset,
        events: events
            .iter()
            .map(|e| (e.at, StoredKind::of(&e.kind, snapshot)))
            .collect(),
    })
}

impl StoredKind<'_> {
    fn of(kind: &EventKind, snapshot: Option<u64>) -> StoredKind<'_> {
        match (kind, snapshot) {
            (
                EventKind::SagaStarted {
                    definition,
                    inline_steps: None,
                    steps: _,
                    payload,
                    idempotency_key,
                    trace,
                },
                Some(snapshot),
            ) => StoredKind::Started {
                definition,
                snapshot,
                payload,
                idempotency_key,
                trace,
            },
            _ => StoredKind::Event(kind),
        }
    }
}

/// Where a run's step snapshots come from when it is decoded.
pub type StepsOf<'a> = dyn Fn(u64) -> Result<Vec<StepSpec>, JournalError> + 'a;

/// Decodes the `e` record at `key`: a run, or one event as versions 1 and 2
/// wrote it. The events must be the saga's and start at the seq the key names.
pub fn decode_run(
    key: &[u8],
    bytes: &[u8],
    steps_of: &StepsOf<'_>,
) -> Result<Vec<Event>, JournalError> {
    Ok(decode_runs(key, bytes, steps_of)?
        .into_iter()
        .flatten()
        .collect())
}

/// The runs of an `e` record (one, or a bundle's), each as appended.
pub fn decode_runs(
    key: &[u8],
    bytes: &[u8],
    steps_of: &StepsOf<'_>,
) -> Result<Vec<Vec<Event>>, JournalError> {
    let (version, body) = open(key, bytes)?;
    if version < BUNDLE_VERSION {
        return Ok(vec![decode_one_run(key, bytes, steps_of)?]);
    }
    let records: Vec<&[u8]> =
        postcard::from_bytes(body).map_err(|e| corrupt(key, format!("undecodable bundle: {e}")))?;
    let mut runs = Vec::with_capacity(records.len());
    let mut next_key = key.to_vec();
    for record in records {
        // Each run must start where the one before it ended.
        let run = decode_one_run(&next_key, record, steps_of)?;
        let last = run.last().expect("decode_one_run returns events");
        next_key = event_key(last.saga, last.seq + 1);
        runs.push(run);
    }
    if runs.is_empty() {
        return Err(corrupt(key, "a bundle without runs"));
    }
    Ok(runs)
}

/// The version of bundles of runs.
const BUNDLE_VERSION: u8 = 4;

/// One `e` record holding `records` (runs as the writer encoded them, of one
/// saga, in seq order), stored under the first one's key.
pub fn encode_bundle(records: &[&[u8]]) -> Vec<u8> {
    let records: Vec<Bytes<'_>> = records.iter().map(|r| Bytes(r)).collect();
    encode_as_bundle(&records)
}

fn encode_as_bundle<T: Serialize>(value: &T) -> Vec<u8> {
    checked(BUNDLE_VERSION, value)
}

/// Decodes one run (or a single event of a version before runs) at `key`.
fn decode_one_run(
    key: &[u8],
    bytes: &[u8],
    steps_of: &StepsOf<'_>,
) -> Result<Vec<Event>, JournalError> {
    let events = match open(key, bytes)? {
        (version, _) if version >= BUNDLE_VERSION => {
            return Err(corrupt(key, "a bundle inside a bundle"));
        }
        (version, body) if version < RUNS_SINCE_VERSION => {
            vec![body_as::<Event>(key, version, body)?]
        }
        (_, body) => {
            let run: OwnedRun = postcard::from_bytes(body)
                .map_err(|e| corrupt(key, format!("undecodable body: {e}")))?;
            let mut events = Vec::with_capacity(run.events.len());
            for (i, (at, stored)) in run.events.into_iter().enumerate() {
                let kind = match stored {
                    OwnedStoredKind::Event(kind) => kind,
                    OwnedStoredKind::Started {
                        definition,
                        snapshot,
                        payload,
                        idempotency_key,
                        trace,
                    } => EventKind::SagaStarted {
                        definition,
                        inline_steps: None,
                        steps: steps_of(snapshot)?,
                        payload,
                        idempotency_key,
                        trace,
                    },
                };
                events.push(Event {
                    saga: run.saga,
                    seq: run.first_seq + i as u64,
                    offset: run.first_offset + i as u64,
                    at,
                    kind,
                });
            }
            events
        }
    };
    match events.first() {
        Some(first) if event_key(first.saga, first.seq) == key => Ok(events),
        Some(first) => Err(corrupt(
            key,
            format!("it holds event {} of saga {}", first.seq, first.saga),
        )),
        None => Err(corrupt(key, "a run without events")),
    }
}

/// The key of a step snapshot.
pub fn snapshot_key(id: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(SNAPSHOT);
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// A step snapshot's id: the FNV-1a hash of its encoding (stable across builds
/// and platforms, unlike `std`'s hasher). Collisions are caught when writing:
/// see `snapshots.rs`.
pub fn snapshot_id(record: &[u8]) -> u64 {
    // The body only: the version byte and checksum are not the content.
    record[5..]
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// Where the offset index says a run of events is: the saga, the seq of its
/// first event, and how many events it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunPointer {
    pub saga: SagaId,
    pub first_seq: u64,
    pub count: u64,
}

/// Encodes an offset index entry.
pub fn encode_pointer(pointer: &RunPointer) -> Vec<u8> {
    encode(pointer)
}

/// Decodes an offset index entry into `(first offset, pointer)` pairs, in
/// offset order: one for an entry as the writer made it, several for a
/// bundle (`compaction.rs`); `None` for an entry of an earlier layout (one
/// event per entry), which the index is rebuilt from.
pub fn decode_pointers(
    key: &[u8],
    bytes: &[u8],
) -> Result<Option<Vec<(u64, RunPointer)>>, JournalError> {
    let undecodable = |e: postcard::Error| corrupt(key, format!("undecodable body: {e}"));
    match open(key, bytes)? {
        (version, _) if version < RUNS_SINCE_VERSION => Ok(None),
        (BUNDLE_VERSION, body) => {
            let pointers: Vec<(u64, RunPointer)> =
                postcard::from_bytes(body).map_err(undecodable)?;
            // Retention may take the first pointer out: a bundle stays under
            // its key, which is then below its first offset.
            let at = offset_of_key(key)?;
            match pointers.first() {
                Some((first, _)) if *first >= at => Ok(Some(pointers)),
                Some((first, _)) => Err(corrupt(key, format!("it starts at offset {first}"))),
                None => Err(corrupt(key, "an index bundle without entries")),
            }
        }
        (_, body) => {
            let pointer = postcard::from_bytes(body).map_err(undecodable)?;
            Ok(Some(vec![(offset_of_key(key)?, pointer)]))
        }
    }
}

/// One offset index entry holding `pointers` (in offset order), stored under
/// the first one's offset (or below it, once retention took that one out).
pub fn encode_pointer_bundle(pointers: &[(u64, RunPointer)]) -> Vec<u8> {
    encode_as_bundle(&pointers)
}

/// Whether `bytes` is a bundle (of runs or of index entries).
pub fn is_bundle(bytes: &[u8]) -> bool {
    bytes.first() == Some(&BUNDLE_VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        use crate::journal::conformance::{next, started};
        let mut first = started("shop", None);
        first.offset = 7;
        let id = first.saga;
        let mut second = next(id, 2, EventKind::SagaCompleted);
        second.offset = 8;
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
