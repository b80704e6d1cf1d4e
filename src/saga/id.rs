//! Identifiers and small value types shared by every layer: saga ids, wall-clock
//! timestamps, and which action of a step is meant.
//!
//! The values are defined here; making fresh ones reads the clock, so that is
//! done at the edge: `SagaId::generate` and `Timestamp::now` are defined in
//! `crate::clock`, and nothing in `saga` calls them.
//!
//! Invariants:
//! - A `SagaId` is a UUIDv7: ids created later by one process sort after earlier
//!   ones, so "newest first" is a reverse scan of the ids.
//! - A `Timestamp` is wall-clock milliseconds since the Unix epoch, because retry
//!   due times must survive a restart (a monotonic `Instant` would not).

use std::{
    fmt,
    str::FromStr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The id of one saga run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SagaId(Uuid);

impl SagaId {
    /// The 16 bytes of the id, big-endian, so byte order is creation order.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// The id from its 16 bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(Uuid::from_bytes(bytes))
    }
}

impl fmt::Display for SagaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// Why a string is not a saga id.
#[derive(Debug, thiserror::Error)]
#[error("'{0}' is not a saga id (expected a UUID such as 0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b)")]
pub struct InvalidSagaId(pub String);

impl FromStr for SagaId {
    type Err = InvalidSagaId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| InvalidSagaId(super::text::quoted(s)))
    }
}

/// Wall-clock milliseconds since the Unix epoch.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// Milliseconds since the epoch.
    pub fn millis(self) -> u64 {
        self.0
    }

    /// This time plus `d` (saturating).
    pub fn plus(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_add(d.as_millis().min(u64::MAX as u128) as u64),
        )
    }

    /// This time minus `d` (saturating at the epoch).
    pub fn minus(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_sub(d.as_millis().min(u64::MAX as u128) as u64),
        )
    }

    /// How long from `earlier` to `self`; zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// As a `SystemTime`.
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0)
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        // A clock before 1970 is a broken clock; treat it as the epoch rather than panic.
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        Self(d.as_millis().min(u64::MAX as u128) as u64)
    }
}

/// An event's place in the journal of all sagas: assigned when the event is
/// journaled, increasing in the order events became durable, gap-free above
/// the archive horizon. `Offset(0)` is the place before the first event (a
/// feed that has read nothing yet); every journaled event's offset is above it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Offset(pub u64);

impl Offset {
    /// Before the first event.
    pub const ZERO: Offset = Offset(0);

    /// The number, for keys, wire formats and arithmetic.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The next place.
    pub fn next(self) -> Offset {
        Offset(self.0 + 1)
    }
}

/// The place `n` events later.
impl std::ops::Add<u64> for Offset {
    type Output = Offset;

    fn add(self, n: u64) -> Offset {
        Offset(self.0 + n)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Which endpoint of a step a call or an attempt is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    /// Do the step's work.
    Forward,
    /// Undo it.
    Compensate,
}

impl Action {
    /// Lower-case name, as used in idempotency keys and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Forward => "forward",
            Action::Compensate => "compensate",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The key a participant dedupes on: stable for one saga, step and action, across
/// retries and restarts, so it is derived from exactly those three.
pub fn idempotency_key(saga: SagaId, step: &str, action: Action) -> String {
    // Built by hand: one per participant call, and `format!` showed in profiles.
    let mut id = Uuid::encode_buffer();
    let id = saga.0.hyphenated().encode_lower(&mut id);
    let action = action.as_str();
    let mut key = String::with_capacity(id.len() + step.len() + action.len() + 2);
    key.push_str(id);
    key.push('/');
    key.push_str(step);
    key.push('/');
    key.push_str(action);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saga_id_round_trips_and_sorts_by_its_bytes() {
        let a: SagaId = "0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b".parse().unwrap();
        let b: SagaId = "0192f3c4-5d6f-7000-8000-000000000000".parse().unwrap();
        assert!(a < b && a.as_bytes() < b.as_bytes());
        assert_eq!(a.to_string().parse::<SagaId>().unwrap(), a);
        assert_eq!(SagaId::from_bytes(*a.as_bytes()), a);
        assert!("not-a-uuid".parse::<SagaId>().is_err());
    }

    #[test]
    fn timestamp_arithmetic_saturates() {
        let t = Timestamp(1_000);
        assert_eq!(t.plus(Duration::from_millis(250)), Timestamp(1_250));
        assert_eq!(Timestamp(1_250).since(t), Duration::from_millis(250));
        assert_eq!(t.since(Timestamp(2_000)), Duration::ZERO);
        assert_eq!(t.minus(Duration::from_millis(250)), Timestamp(750));
        assert_eq!(t.minus(Duration::from_secs(5)), Timestamp(0));
        assert_eq!(
            Timestamp(u64::MAX).plus(Duration::from_secs(1)),
            Timestamp(u64::MAX)
        );
    }

    #[test]
    fn idempotency_key_names_saga_step_and_action() {
        let id: SagaId = "0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b".parse().unwrap();
        assert_eq!(
            idempotency_key(id, "charge-payment", Action::Compensate),
            "0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b/charge-payment/compensate"
        );
    }
}
