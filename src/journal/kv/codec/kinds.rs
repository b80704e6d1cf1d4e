//! The event kinds of format versions 6 to 8, read only to convert them.
//!
//! From version 6 to version 8, `EventKind` changed only in its
//! `SagaStarted` (the steps it holds gained a kind in 7, the saga a start
//! time and a deadline in 8, the steps an input in 9) and by variants
//! appended at its end. So one frozen enum reads those three versions, its
//! `SagaStarted` the version's own shape `S` (`v6.rs`, `v7.rs`, `v8.rs`):
//! postcard writes a newtype variant as its index and then its value, and a
//! struct as its fields in order, the very bytes of the struct variant it
//! stands for. A variant appended after a version never occurs in that
//! version's records. Frozen: never written, never changed.

use serde::Deserialize;

use crate::saga::{self, Action, EndpointChange, Failure, Offset, Principal, SagaId, Timestamp};

/// [`saga::Event`] as versions 6 to 8 wrote it (only its `kind` differs).
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct Event<S> {
    pub(super) saga: SagaId,
    pub(super) seq: u64,
    pub(super) offset: Offset,
    pub(super) at: Timestamp,
    pub(super) kind: EventKind<S>,
}

/// [`saga::EventKind`] as versions 6 to 8 wrote it, `S` its `SagaStarted`.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) enum EventKind<S> {
    SagaStarted(S),
    AttemptStarted {
        step: u32,
        action: Action,
        attempt: u32,
    },
    AttemptSucceeded {
        step: u32,
        action: Action,
        attempt: u32,
        output: Vec<u8>,
    },
    AttemptFailed {
        step: u32,
        action: Action,
        attempt: u32,
        failure: Failure,
        error: String,
        retry_at: Option<Timestamp>,
    },
    CancelRequested {
        reason: String,
        by: Option<Principal>,
    },
    CompensationStarted {
        reason: String,
    },
    SagaCompleted,
    SagaCompensated,
    SagaFailed {
        reason: String,
    },
    RetryRequested {
        by: Option<Principal>,
    },
    EndpointsRefreshed {
        changes: Vec<EndpointChange>,
    },
    /// Appended in version 7.
    ResumeRequested {
        by: Option<Principal>,
    },
    /// Appended in version 8.
    StartReached,
}

impl<S: Into<saga::EventKind>> From<Event<S>> for saga::Event {
    fn from(e: Event<S>) -> Self {
        Self {
            saga: e.saga,
            seq: e.seq,
            offset: e.offset,
            at: e.at,
            kind: e.kind.into(),
        }
    }
}

impl<S: Into<saga::EventKind>> From<EventKind<S>> for saga::EventKind {
    fn from(kind: EventKind<S>) -> Self {
        use saga::EventKind as Current;
        match kind {
            EventKind::SagaStarted(started) => started.into(),
            EventKind::AttemptStarted {
                step,
                action,
                attempt,
            } => Current::AttemptStarted {
                step,
                action,
                attempt,
            },
            EventKind::AttemptSucceeded {
                step,
                action,
                attempt,
                output,
            } => Current::AttemptSucceeded {
                step,
                action,
                attempt,
                output,
            },
            EventKind::AttemptFailed {
                step,
                action,
                attempt,
                failure,
                error,
                retry_at,
            } => Current::AttemptFailed {
                step,
                action,
                attempt,
                failure,
                error,
                retry_at,
            },
            EventKind::CancelRequested { reason, by } => Current::CancelRequested { reason, by },
            EventKind::CompensationStarted { reason } => Current::CompensationStarted { reason },
            EventKind::SagaCompleted => Current::SagaCompleted,
            EventKind::SagaCompensated => Current::SagaCompensated,
            EventKind::SagaFailed { reason } => Current::SagaFailed { reason },
            EventKind::RetryRequested { by } => Current::RetryRequested { by },
            EventKind::EndpointsRefreshed { changes } => Current::EndpointsRefreshed { changes },
            EventKind::ResumeRequested { by } => Current::ResumeRequested { by },
            EventKind::StartReached => Current::StartReached,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    use super::*;
    use crate::journal::kv::codec::v8;

    /// A newtype variant holding a struct is the struct variant's bytes:
    /// what lets one enum stand for three versions' `SagaStarted`.
    #[test]
    fn a_newtype_variant_of_a_struct_writes_the_struct_variants_bytes() {
        #[derive(Serialize)]
        enum Written {
            _First,
            Started { name: String, n: u64 },
        }
        #[derive(Serialize)]
        struct Fields {
            name: String,
            n: u64,
        }
        #[derive(Serialize)]
        enum Read {
            _First,
            Started(Fields),
        }
        let written = Written::Started {
            name: "shop".into(),
            n: 300,
        };
        let read = Read::Started(Fields {
            name: "shop".into(),
            n: 300,
        });
        assert_eq!(
            postcard::to_allocvec(&written).unwrap(),
            postcard::to_allocvec(&read).unwrap()
        );
    }

    /// Every kind but `SagaStarted` kept its shape and index since version
    /// 6: today's encoding of each reads back through the frozen enum.
    #[test]
    fn the_kinds_besides_saga_started_read_as_today_writes_them() {
        let by = Some(Principal {
            identity: saga::Identity::Token("ops".into()),
            peer: None,
        });
        let kinds = [
            saga::EventKind::AttemptStarted {
                step: 1,
                action: Action::Compensate,
                attempt: 3,
            },
            saga::EventKind::AttemptSucceeded {
                step: 2,
                action: Action::Forward,
                attempt: 1,
                output: b"{}".to_vec(),
            },
            saga::EventKind::AttemptFailed {
                step: 0,
                action: Action::Forward,
                attempt: 7,
                failure: Failure::NotDelivered,
                error: "refused".into(),
                retry_at: Some(Timestamp(9)),
            },
            saga::EventKind::CancelRequested {
                reason: "r".into(),
                by: by.clone(),
            },
            saga::EventKind::CompensationStarted { reason: "x".into() },
            saga::EventKind::SagaCompleted,
            saga::EventKind::SagaCompensated,
            saga::EventKind::SagaFailed { reason: "y".into() },
            saga::EventKind::RetryRequested { by: by.clone() },
            saga::EventKind::EndpointsRefreshed { changes: vec![] },
            saga::EventKind::ResumeRequested { by },
            saga::EventKind::StartReached,
        ];
        for kind in kinds {
            let bytes = postcard::to_allocvec(&kind).unwrap();
            let frozen: EventKind<v8::Started> = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(saga::EventKind::from(frozen), kind);
        }
    }
}
