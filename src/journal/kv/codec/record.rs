//! A value of the saga schema: a format version, a checksum, a postcard body.
//!
//! ```text
//! [version:1][crc32 of body:4 LE][postcard body]
//! ```
//!
//! A record whose version is unknown or whose checksum does not match is
//! reported as damaged, never decoded as something else. Older versions are
//! read through [`Record::from_v1`] (the shapes of `v1.rs`),
//! [`Record::from_v4`] (versions 2 to 4, the shapes of `v4.rs`),
//! [`Record::from_v5`] (the shapes of `v5.rs`), [`Record::from_v6`] (the
//! shapes of `v6.rs`), [`Record::from_v7`] (the shapes of `v7.rs`),
//! [`Record::from_v8`] (the shapes of `v8.rs`) and [`Record::from_v10`]
//! (versions 9 and 10, the shapes of `v10.rs`).

use serde::{Serialize, de::DeserializeOwned};

use super::{corrupt, v1, v4, v5, v6, v7, v8, v10};
use crate::{
    journal::{JournalError, SagaSummary, store::encode_after},
    saga::{Event, Participant, SagaId, StepSpec},
};

/// The newest format version this build reads.
pub const FORMAT_VERSION: u8 = 11;
/// The version this build writes for every record but bundles.
pub const RECORD_VERSION: u8 = 11;
/// The oldest format version this build reads.
pub const OLDEST_READABLE_VERSION: u8 = 1;
/// The first version with runs of events and run pointers in the offset index.
pub const RUNS_SINCE_VERSION: u8 = 3;
/// The first version whose retry policies have a time budget (`v4.rs`).
pub const TIME_BUDGET_SINCE_VERSION: u8 = 5;
/// The first version that journals who asked for a write (`v5.rs`).
pub const PRINCIPALS_SINCE_VERSION: u8 = 6;
/// The first version whose steps have a kind (`v6.rs`).
pub const STEP_KINDS_SINCE_VERSION: u8 = 7;
/// The first version whose sagas have a start time and a deadline (`v7.rs`).
pub const TIMES_SINCE_VERSION: u8 = 8;
/// The first version whose steps may have an input mapping (`v8.rs`).
pub const INPUTS_SINCE_VERSION: u8 = 9;
/// The first version whose participants have limits (`v10.rs`).
pub const LIMITS_SINCE_VERSION: u8 = 11;

/// A type stored as a journal value, and how its older encodings are read.
pub trait Record: Serialize + DeserializeOwned {
    /// Decodes a body written in format version 1. The default is for types
    /// whose shape did not change in version 2: read as versions 2 to 4 are.
    fn from_v1(body: &[u8]) -> postcard::Result<Self> {
        Self::from_v4(body)
    }

    /// Decodes a body written in format versions 2 to 4. The default is for
    /// types whose shape did not change in version 5: read as version 5 is.
    fn from_v4(body: &[u8]) -> postcard::Result<Self> {
        Self::from_v5(body)
    }

    /// Decodes a body written in format version 5. The default is for types
    /// whose shape did not change in version 6: read as version 6 is.
    fn from_v5(body: &[u8]) -> postcard::Result<Self> {
        Self::from_v6(body)
    }

    /// Decodes a body written in format version 6. The default is for types
    /// whose shape did not change in version 7: read as version 7 is.
    fn from_v6(body: &[u8]) -> postcard::Result<Self> {
        Self::from_v7(body)
    }

    /// Decodes a body written in format version 7. The default is for types
    /// whose shape did not change in version 8: read as version 8 is.
    fn from_v7(body: &[u8]) -> postcard::Result<Self> {
        Self::from_v8(body)
    }

    /// Decodes a body written in format version 8. The default is for types
    /// whose shape did not change in version 9: read as versions 9 and 10
    /// are.
    fn from_v8(body: &[u8]) -> postcard::Result<Self> {
        Self::from_v10(body)
    }

    /// Decodes a body written in format version 9 or 10 (the same shapes).
    /// The default is for types whose shape has not changed since.
    fn from_v10(body: &[u8]) -> postcard::Result<Self> {
        postcard::from_bytes(body)
    }
}

impl Record for Event {
    fn from_v1(body: &[u8]) -> postcard::Result<Self> {
        postcard::from_bytes::<v1::Event>(body).map(|e| Event::from(v4::Event::from(e)))
    }

    fn from_v4(body: &[u8]) -> postcard::Result<Self> {
        postcard::from_bytes::<v4::Event>(body).map(Event::from)
    }

    fn from_v5(body: &[u8]) -> postcard::Result<Self> {
        postcard::from_bytes::<v5::Event>(body).map(Event::from)
    }

    fn from_v6(body: &[u8]) -> postcard::Result<Self> {
        postcard::from_bytes::<v6::Event>(body).map(Event::from)
    }

    fn from_v7(body: &[u8]) -> postcard::Result<Self> {
        postcard::from_bytes::<v7::Event>(body).map(Event::from)
    }

    fn from_v8(body: &[u8]) -> postcard::Result<Self> {
        postcard::from_bytes::<v8::Event>(body).map(Event::from)
    }
}
impl Record for SagaSummary {}
impl Record for Participant {
    fn from_v4(body: &[u8]) -> postcard::Result<Self> {
        postcard::from_bytes::<v4::Participant>(body).map(Participant::from)
    }

    fn from_v5(body: &[u8]) -> postcard::Result<Self> {
        postcard::from_bytes::<v5::Participant>(body).map(Participant::from)
    }

    fn from_v10(body: &[u8]) -> postcard::Result<Self> {
        postcard::from_bytes::<v10::Participant>(body).map(Participant::from)
    }
}
impl Record for SagaId {}
/// A step snapshot (new in version 3).
impl Record for Vec<StepSpec> {
    fn from_v4(body: &[u8]) -> postcard::Result<Self> {
        postcard::from_bytes::<Vec<v4::StepSpec>>(body)
            .map(|steps| steps.into_iter().map(StepSpec::from).collect())
    }

    fn from_v6(body: &[u8]) -> postcard::Result<Self> {
        postcard::from_bytes::<Vec<v6::StepSpec>>(body).map(v6::upgraded)
    }

    fn from_v8(body: &[u8]) -> postcard::Result<Self> {
        postcard::from_bytes::<Vec<v8::StepSpec>>(body).map(v8::upgraded)
    }
}
/// An offset index entry: which event of which saga.
impl Record for (SagaId, u64) {}

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

/// The version of bundles of runs.
pub const BUNDLE_VERSION: u8 = 4;

pub fn encode_as_bundle<T: Serialize>(value: &T) -> Vec<u8> {
    checked(BUNDLE_VERSION, value)
}

/// Encodes as an earlier build did, in the shape of `version`, for tests of
/// reading older journals.
#[cfg(test)]
pub fn encode_as_version<T: WrittenBefore>(version: u8, value: &T) -> Vec<u8> {
    let mut out = value.encode_as_of(version);
    out[0] = version;
    out
}

/// A value as a build of an earlier format version encoded it (tests only).
#[cfg(test)]
pub trait WrittenBefore: Serialize + Sized {
    /// The record (version byte aside) of `self` in the shape of `version`.
    /// The default is for types whose shape never changed.
    fn encode_as_of(&self, _version: u8) -> Vec<u8> {
        encode(self)
    }
}

#[cfg(test)]
impl WrittenBefore for Event {
    fn encode_as_of(&self, version: u8) -> Vec<u8> {
        match version {
            1 => panic!("write version-1 events with the shapes of v1.rs's tests"),
            2..TIME_BUDGET_SINCE_VERSION => encode(&v4::Event::from(self)),
            TIME_BUDGET_SINCE_VERSION..LIMITS_SINCE_VERSION => {
                panic!("write version-{version} records with the shapes of v{version}.rs's tests")
            }
            _ => encode(self),
        }
    }
}

#[cfg(test)]
impl WrittenBefore for (SagaId, u64) {}

/// Decodes a value written by `encode`, checking version and checksum.
pub fn decode<T: Record>(key: &[u8], bytes: &[u8]) -> Result<T, JournalError> {
    let (version, body) = open(key, bytes)?;
    body_as(key, version, body)
}

/// The version and the checked body of a record.
pub fn open<'a>(key: &[u8], bytes: &'a [u8]) -> Result<(u8, &'a [u8]), JournalError> {
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

pub fn body_as<T: Record>(key: &[u8], version: u8, body: &[u8]) -> Result<T, JournalError> {
    let value = match version {
        1 => T::from_v1(body),
        2..TIME_BUDGET_SINCE_VERSION => T::from_v4(body),
        TIME_BUDGET_SINCE_VERSION..PRINCIPALS_SINCE_VERSION => T::from_v5(body),
        PRINCIPALS_SINCE_VERSION..STEP_KINDS_SINCE_VERSION => T::from_v6(body),
        STEP_KINDS_SINCE_VERSION..TIMES_SINCE_VERSION => T::from_v7(body),
        TIMES_SINCE_VERSION..INPUTS_SINCE_VERSION => T::from_v8(body),
        INPUTS_SINCE_VERSION..LIMITS_SINCE_VERSION => T::from_v10(body),
        _ => postcard::from_bytes(body),
    };
    value.map_err(|e| corrupt(key, format!("undecodable body: {e}")))
}

/// Whether `bytes` is a bundle (of runs or of index entries).
pub fn is_bundle(bytes: &[u8]) -> bool {
    bytes.first() == Some(&BUNDLE_VERSION)
}
