//! Every key of the saga schema, in one table, and how keys are made and read.
//!
//! Keys begin with a one-byte tag; integers are big-endian, so byte order is
//! numeric order, and a saga's keys sort by its id, which sorts by creation
//! time (UUIDv7).
//!
//! ```text
//! e <saga id:16> <first seq:8>  → run of events   a saga's history, in seq order (or a bundle of runs)
//! u <saga id:16>                → (empty)         sagas not yet terminal (recovery, lists by SCHEDULED/RUNNING/COMPENSATING)
//! f <saga id:16>                → (empty)         FAILED sagas (lists by FAILED, `by_status.rs`)
//! s <saga id:16>                → summary         listing fields; id order = age
//! i <idempotency key>           → saga id:16
//! p <participant name>          → participant
//! o <first offset:8>            → run pointer     the offset index (`offsets.rs`; or a bundle)
//! d <snapshot id:8>             → step snapshot   shared by sagas (`snapshots.rs`)
//! m next_offset                 → u64 BE          the next global event offset
//! m archived_through            → u64 BE          highest offset of a removed event (`retention.rs`)
//! m moved_through               → u64 BE          highest offset of an event moved to the history tier
//! m failed_index                → (empty)         present once the `f` index covers every saga
//! m wal_batch                   → u64 BE          the last log batch the store holds: written
//!                                                 by the write-ahead log, not by this schema
//!                                                 (`store/wal/`), in the same key space
//! ```
//!
//! Retention (`remove_sagas`) deletes every key of a saga at once; offsets of
//! removed events leave holes in the `o` index, all at or below
//! `archived_through` (see `offsets.rs`). A move to the history tier
//! (`move_to_history`) deletes them the same way, and its holes are at or
//! below `moved_through`: the tier holds those events.

use super::corrupt;
use crate::{journal::JournalError, saga::SagaId};

pub const EVENT: u8 = b'e';
pub const UNFINISHED: u8 = b'u';
/// The failed index (`by_status.rs`).
pub const FAILED: u8 = b'f';
pub const SUMMARY: u8 = b's';
pub const IDEMPOTENCY: u8 = b'i';
pub const PARTICIPANT: u8 = b'p';
pub const OFFSET: u8 = b'o';
pub const SNAPSHOT: u8 = b'd';
/// `m next_offset`.
pub const NEXT_OFFSET_KEY: &[u8] = b"mnext_offset";
/// `m archived_through`.
pub const ARCHIVED_THROUGH_KEY: &[u8] = b"marchived_through";
/// `m moved_through`.
pub const MOVED_THROUGH_KEY: &[u8] = b"mmoved_through";
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

/// The key of a step snapshot.
pub fn snapshot_key(id: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(SNAPSHOT);
    key.extend_from_slice(&id.to_be_bytes());
    key
}
