//! The on-disk layout of the key-value journals: keys that sort, and values that
//! carry a format version and a checksum.
//!
//! Keys (big-endian integers, so byte order is numeric order):
//! ```text
//! e <saga id:16> <seq:8>   → event            a saga's history, in seq order
//! u <saga id:16>           → (empty)          sagas not yet terminal
//! s <saga id:16>           → summary          listing fields; id order = age
//! i <idempotency key>      → saga id:16
//! p <participant name>     → participant
//! o <offset:8>             → (saga id, seq)   the offset index (`offsets.rs`)
//! m next_offset            → u64 BE           the next global event offset
//! m archived_through       → u64 BE           highest offset of a removed event
//! ```
//!
//! Retention (`remove_sagas`) deletes every key of a saga at once; offsets of
//! removed events leave holes in the `o` index, all at or below
//! `archived_through` (see `offsets.rs`).
//! Values: `[version:1][crc32 of body:4 LE][postcard body]`. A record whose
//! version is unknown or whose checksum does not match is reported as damaged,
//! never decoded as something else.

use serde::{Serialize, de::DeserializeOwned};

use super::JournalError;
use crate::saga::SagaId;

/// The format version written by this build.
pub const FORMAT_VERSION: u8 = 1;

pub const EVENT: u8 = b'e';
pub const UNFINISHED: u8 = b'u';
pub const SUMMARY: u8 = b's';
pub const IDEMPOTENCY: u8 = b'i';
pub const PARTICIPANT: u8 = b'p';
pub const OFFSET: u8 = b'o';
pub const NEXT_OFFSET_KEY: &[u8] = b"mnext_offset";
pub const ARCHIVED_THROUGH_KEY: &[u8] = b"marchived_through";

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

/// The key of one event.
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
                Ok(id) => format!("event {seq} of saga {id}"),
                Err(_) => format!("{key:?}"),
            }
        }
        Some(&(UNFINISHED | SUMMARY)) if key.len() == 17 => match saga_of_key(key) {
            Ok(id) => format!("index entry of saga {id}"),
            Err(_) => format!("{key:?}"),
        },
        Some(&OFFSET) if key.len() == 9 => match offset_of_key(key) {
            Ok(offset) => format!("offset index entry {offset}"),
            Err(_) => format!("{key:?}"),
        },
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
    // Serializing our own plain data types into a Vec cannot fail.
    let mut out = postcard::to_extend(value, vec![FORMAT_VERSION, 0, 0, 0, 0])
        .expect("postcard encoding of a journal record");
    let crc = crc32fast::hash(&out[5..]);
    out[1..5].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a value written by `encode`, checking version and checksum.
pub fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, JournalError> {
    let (&version, rest) = bytes
        .split_first()
        .ok_or_else(|| corrupt(key, "empty value"))?;
    if version != FORMAT_VERSION {
        return Err(corrupt(
            key,
            format!("format version {version}; this build reads version {FORMAT_VERSION}"),
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
    postcard::from_bytes(body).map_err(|e| corrupt(key, format!("undecodable body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

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
            format!("event 3 of saga {b}")
        );
    }
}
