//! Runs and bundles: how events and offset index entries are stored.
//!
//! **Runs.** The events one append writes for one saga (a step's result and the
//! next step's start, say) share one record, a run: one key, one checksum,
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
//! the event refers to it (`StoredKind::Started`). Inline-step sagas keep
//! their steps in the event (their snapshots rarely repeat).

use serde::{Deserialize, Serialize};

use super::{
    corrupt,
    keys::{event_key, offset_of_key},
    record::{
        BUNDLE_VERSION, INPUTS_SINCE_VERSION, PRINCIPALS_SINCE_VERSION, RUNS_SINCE_VERSION,
        STEP_KINDS_SINCE_VERSION, TIME_BUDGET_SINCE_VERSION, TIMES_SINCE_VERSION, body_as, encode,
        encode_as_bundle, open,
    },
    v4, v5, v6, v7, v8,
};
use crate::{
    journal::{JournalError, store::Bytes},
    saga::{Event, EventKind, Offset, Principal, SagaId, StepSpec, Timestamp, TraceContext},
};

/// stored once.
#[derive(Serialize)]
struct Run<'a> {
    saga: SagaId,
    first_seq: u64,
    first_offset: u64,
    events: Vec<(Timestamp, StoredKind<'a>)>,
}

/// [`Run`], read back; `K` is the event kind's shape in the run's version
/// (today's, or that of versions 3 and 4, `v4.rs`, 5, `v5.rs`, 6, `v6.rs`,
/// 7, `v7.rs`, or 8, `v8.rs`), and `B` what a snapshot `Started` stores after its trace
/// ([`StartedTail`]).
#[derive(Deserialize)]
struct OwnedRun<K, B> {
    saga: SagaId,
    first_seq: u64,
    first_offset: u64,
    events: Vec<(Timestamp, OwnedStoredKind<K, B>)>,
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
        trace: &'a Option<Box<TraceContext>>,
        started_by: &'a Option<Box<Principal>>,
        start_at: &'a Option<Timestamp>,
        deadline: &'a Option<Timestamp>,
    },
}

/// [`StoredKind`], read back (see [`OwnedRun`] for `K` and `B`).
#[derive(Deserialize)]
enum OwnedStoredKind<K, B> {
    Event(K),
    Started {
        definition: String,
        snapshot: u64,
        payload: Vec<u8>,
        idempotency_key: Option<String>,
        trace: Option<Box<TraceContext>>,
        tail: B,
    },
}

/// What a snapshot `Started` stores after its trace since version 8 (postcard
/// writes a struct as its fields in order, as [`StoredKind`] writes them).
#[derive(Deserialize)]
struct Tail {
    started_by: Option<Box<Principal>>,
    start_at: Option<Timestamp>,
    deadline: Option<Timestamp>,
}

/// What a snapshot `Started` of a run's version stores after its trace, in
/// today's shape.
trait StartedTail {
    fn upgrade(self) -> Tail;
}

/// Before version 6: nothing (postcard writes no bytes for `()`).
impl StartedTail for () {
    fn upgrade(self) -> Tail {
        Tail {
            started_by: None,
            start_at: None,
            deadline: None,
        }
    }
}

/// Versions 6 and 7: who started the saga.
impl StartedTail for Option<Box<Principal>> {
    fn upgrade(self) -> Tail {
        Tail {
            started_by: self,
            ..().upgrade()
        }
    }
}

impl StartedTail for Tail {
    fn upgrade(self) -> Tail {
        self
    }
}

impl<K: Into<EventKind>, B: StartedTail> OwnedRun<K, B> {
    /// A run of an earlier version (`v4.rs` to `v8.rs`), in today's shapes.
    fn upgrade(self) -> OwnedRun<EventKind, Tail> {
        OwnedRun {
            saga: self.saga,
            first_seq: self.first_seq,
            first_offset: self.first_offset,
            events: self
                .events
                .into_iter()
                .map(|(at, stored)| (at, stored.upgrade()))
                .collect(),
        }
    }
}

impl<K: Into<EventKind>, B: StartedTail> OwnedStoredKind<K, B> {
    fn upgrade(self) -> OwnedStoredKind<EventKind, Tail> {
        match self {
            OwnedStoredKind::Event(kind) => OwnedStoredKind::Event(kind.into()),
            OwnedStoredKind::Started {
                definition,
                snapshot,
                payload,
                idempotency_key,
                trace,
                tail,
            } => OwnedStoredKind::Started {
                definition,
                snapshot,
                payload,
                idempotency_key,
                trace,
                tail: tail.upgrade(),
            },
        }
    }
}

/// Encodes consecutive events of one saga (seqs and offsets each without gaps).
/// With `snapshot`, a `SagaStarted` among them that has no inline steps is
/// stored with a reference to that step snapshot instead of its steps.
pub fn encode_run(events: &[Event], snapshot: Option<u64>) -> Vec<u8> {
    let first = &events[0];
    debug_assert!(events.iter().enumerate().all(|(i, e)| e.saga == first.saga
        && e.seq == first.seq + i as u64
        && e.offset.get() == first.offset.get() + i as u64));
    encode(&Run {
        saga: first.saga,
        first_seq: first.seq,
        first_offset: first.offset.get(),
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
                    started_by,
                    start_at,
                    deadline,
                },
                Some(snapshot),
            ) => StoredKind::Started {
                definition,
                snapshot,
                payload,
                idempotency_key,
                trace,
                started_by,
                start_at,
                deadline,
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
    if version != BUNDLE_VERSION {
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
        // Only a damaged bundle has a run after one that ends at the last seq.
        next_key = event_key(last.saga, last.seq.saturating_add(1));
        runs.push(run);
    }
    if runs.is_empty() {
        return Err(corrupt(key, "a bundle without runs"));
    }
    Ok(runs)
}

/// One `e` record holding `records` (runs as the writer encoded them, of one
/// saga, in seq order), stored under the first one's key.
pub fn encode_bundle(records: &[&[u8]]) -> Vec<u8> {
    let records: Vec<Bytes<'_>> = records.iter().map(|r| Bytes(r)).collect();
    encode_as_bundle(&records)
}

/// Decodes one run (or a single event of a version before runs) at `key`.
fn decode_one_run(
    key: &[u8],
    bytes: &[u8],
    steps_of: &StepsOf<'_>,
) -> Result<Vec<Event>, JournalError> {
    let events = match open(key, bytes)? {
        (BUNDLE_VERSION, _) => {
            return Err(corrupt(key, "a bundle inside a bundle"));
        }
        (version, body) if version < RUNS_SINCE_VERSION => {
            vec![body_as::<Event>(key, version, body)?]
        }
        (version, body) => {
            let run = if version < TIME_BUDGET_SINCE_VERSION {
                postcard::from_bytes::<OwnedRun<v4::EventKind, ()>>(body).map(OwnedRun::upgrade)
            } else if version < PRINCIPALS_SINCE_VERSION {
                postcard::from_bytes::<OwnedRun<v5::EventKind, ()>>(body).map(OwnedRun::upgrade)
            } else if version < STEP_KINDS_SINCE_VERSION {
                postcard::from_bytes::<OwnedRun<v6::EventKind, Option<Box<Principal>>>>(body)
                    .map(OwnedRun::upgrade)
            } else if version < TIMES_SINCE_VERSION {
                postcard::from_bytes::<OwnedRun<v7::EventKind, Option<Box<Principal>>>>(body)
                    .map(OwnedRun::upgrade)
            } else if version < INPUTS_SINCE_VERSION {
                postcard::from_bytes::<OwnedRun<v8::EventKind, Tail>>(body).map(OwnedRun::upgrade)
            } else {
                postcard::from_bytes::<OwnedRun<EventKind, Tail>>(body)
            }
            .map_err(|e| corrupt(key, format!("undecodable body: {e}")))?;
            let count = run.events.len() as u64;
            let last = count.saturating_sub(1);
            if run.first_seq.checked_add(last).is_none()
                || run.first_offset.checked_add(last).is_none()
            {
                return Err(corrupt(
                    key,
                    format!(
                        "a run of {count} events from seq {} and offset {} runs past the last one there is",
                        run.first_seq, run.first_offset
                    ),
                ));
            }
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
                        tail,
                    } => EventKind::SagaStarted {
                        definition,
                        inline_steps: None,
                        steps: steps_of(snapshot)?,
                        payload,
                        idempotency_key,
                        trace,
                        started_by: tail.started_by,
                        start_at: tail.start_at,
                        deadline: tail.deadline,
                    },
                };
                events.push(Event {
                    saga: run.saga,
                    seq: run.first_seq + i as u64,
                    offset: Offset(run.first_offset + i as u64),
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
