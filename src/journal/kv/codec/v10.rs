//! The shapes of format versions 9 and 10 that changed in version 11, read
//! only to convert them.
//!
//! Version 11 gives a participant limits (`saga::limits`): `Participant`
//! gained `limits` after `registered_by`. postcard encodes fields by
//! position, so this type keeps version 10's exact field order; it is frozen
//! and never written. What it reads has no limits. Version 9 wrote the same
//! shape (10 only allowed an empty compensate endpoint).

use std::time::Duration;

use serde::Deserialize;

use crate::saga::{self, Endpoint, Principal, RetryOverrides, Timestamp, definition::opt_endpoint};

/// [`saga::Participant`] without `limits`.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct Participant {
    name: String,
    forward: Endpoint,
    #[serde(with = "opt_endpoint")]
    compensate: Option<Endpoint>,
    retry: RetryOverrides,
    timeout: Option<Duration>,
    registered_at: Timestamp,
    registered_by: Option<Principal>,
}

impl From<Participant> for saga::Participant {
    fn from(p: Participant) -> Self {
        Self {
            name: p.name,
            forward: p.forward,
            compensate: p.compensate,
            retry: p.retry,
            timeout: p.timeout,
            registered_at: p.registered_at,
            registered_by: p.registered_by,
            limits: saga::limits::Limits::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        journal::kv::codec::*,
        saga::limits::{Limits, Rate},
    };

    /// A participant of version 10 reads with no limits; today's keeps them.
    #[test]
    fn version_10_participants_have_no_limits_and_today_s_keep_theirs() {
        let old = Participant {
            name: "carrier".into(),
            forward: Endpoint::parse("e", "http://127.0.0.1:1/p.P/Ship").unwrap(),
            compensate: None,
            retry: RetryOverrides::default(),
            timeout: None,
            registered_at: Timestamp(7),
            registered_by: None,
        };
        let mut bytes = encode(&old);
        bytes[0] = LIMITS_SINCE_VERSION - 1;
        let key = name_key(PARTICIPANT, "carrier");
        let read: saga::Participant = decode(&key, &bytes).unwrap();
        assert_eq!(
            (read.name.as_str(), read.compensate.as_ref()),
            ("carrier", None)
        );
        assert_eq!(read.limits, Limits::default());

        let limited = read.limited(Limits {
            max_in_flight: Some(2),
            rate: Some("50/s".parse::<Rate>().unwrap()),
        });
        let bytes = encode(&limited);
        assert_eq!(bytes[0], RECORD_VERSION);
        assert_eq!(decode::<saga::Participant>(&key, &bytes).unwrap(), limited);
    }
}
