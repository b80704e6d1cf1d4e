//! The crate's error: what the engine answers its callers, classified so the API
//! layer can map it to one gRPC status (the mapping lives in `api/`, only there).
//!
//! A journal error keeps its whole chain of sources (down to the `io::Error`
//! that tells a full disk from a broken one), and is classified here, once,
//! into a [`JournalFault`]: what the failure means to a caller. Callers match
//! on the fault, never on the journal's own variants.

use crate::{
    auth::{AuthError, CredentialsError},
    journal::{JournalError, PgError, StoreError, history::HistoryError},
    saga::{DefinitionError, FoldError},
};

/// An error from the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Something named does not exist (saga, definition).
    #[error("{0}")]
    NotFound(String),
    /// The request itself is wrong; it changed nothing.
    #[error("{0}")]
    InvalidArgument(String),
    /// The idempotency key belongs to a saga started with a different request.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is valid but not in the saga's current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The request names a position past the end (a feed offset no event
    /// has yet).
    #[error("{0}")]
    OutOfRange(String),
    /// The coordinator cannot serve this now (recovering, shutting down, disk failed).
    #[error("{0}")]
    Unavailable(String),
    /// A participant or definition is malformed or unknown.
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The caller is not known, or its role does not allow the call.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The tokens file cannot be used (a start-up error).
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// A certificate, key or CA file cannot be used (at start).
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// An operating-system operation failed (binding the listener, say).
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// True when the same request may succeed later without change (the caller
    /// should back off and retry); false when it must be fixed first.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unavailable(_) => true,
            Error::Journal(e) => JournalFault::of(e).is_retryable(),
            _ => false,
        }
    }

    /// What a journal failure means to the caller; `None` for other errors.
    pub fn journal_fault(&self) -> Option<JournalFault> {
        match self {
            Error::Journal(e) => Some(JournalFault::of(e)),
            _ => None,
        }
    }
}

/// What a journal failure means to a caller: the one classification of
/// [`JournalError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JournalFault {
    /// A write or sync failed part-way: what it wrote may still become durable
    /// once the disk works again, so the change may yet take effect.
    WriteUncertain,
    /// Refused before anything was written: an earlier write failed and the
    /// disk has not worked since.
    Refused,
    /// Refused before anything was written: the journal is closed (sagad is
    /// stopping).
    Closed,
    /// A read failed; nothing was asked to change.
    ReadFailed,
    /// What the journal holds is damaged.
    Damaged,
    /// The idempotency key belongs to another saga.
    KeyTaken,
    /// The journal cannot be opened or started (another process owns the
    /// directory, the directory is unusable, no thread).
    CannotOpen,
    /// Refused before anything was written: in a journal several
    /// coordinators share, the saga is another node's now (taken over while
    /// this one was cut off). This node must let it go.
    Moved,
}

impl JournalFault {
    /// The fault of `e`.
    pub fn of(e: &JournalError) -> Self {
        match e {
            JournalError::Write(_) => JournalFault::WriteUncertain,
            JournalError::Failed(_) => JournalFault::Refused,
            JournalError::Closed | JournalError::Close(_) => JournalFault::Closed,
            JournalError::Corrupt { .. }
            | JournalError::Open(StoreError::Corrupt { .. } | StoreError::Damaged(_))
            | JournalError::Read(StoreError::Corrupt { .. } | StoreError::Damaged(_)) => {
                JournalFault::Damaged
            }
            JournalError::IdempotencyConflict { .. } => JournalFault::KeyTaken,
            JournalError::Open(_) | JournalError::Start(_) => JournalFault::CannotOpen,
            JournalError::Read(_) => JournalFault::ReadFailed,
            JournalError::Postgres(e) => Self::of_postgres(e),
            JournalError::History(HistoryError::Damaged { .. }) => JournalFault::Damaged,
            JournalError::History(_) => JournalFault::ReadFailed,
        }
    }

    /// The fault of a PostgreSQL journal failure.
    fn of_postgres(e: &PgError) -> Self {
        match e {
            PgError::Connect { .. }
            | PgError::NewerSchema { .. }
            | PgError::Schema { .. }
            | PgError::NoJournal { .. }
            | PgError::Setup { .. } => JournalFault::CannotOpen,
            PgError::Read { .. } | PgError::Pool(_) | PgError::Statement { .. } => {
                JournalFault::ReadFailed
            }
            PgError::Uncertain(_) => JournalFault::WriteUncertain,
            PgError::NotOwner { .. } => JournalFault::Moved,
            // Nothing was written: refused by a guard, after an earlier
            // failure, by a fence or a lapsed lease, or rolled back.
            PgError::NotWritten(_)
            | PgError::Refused(_)
            | PgError::Fenced { .. }
            | PgError::LeaseLapsed { .. }
            | PgError::OutOfOrder { .. }
            | PgError::ReadOnly { .. }
            | PgError::Conflict { .. } => JournalFault::Refused,
        }
    }

    /// True when the same request may succeed later: the disk may come back;
    /// damage and a taken key do not go away by themselves.
    pub fn is_retryable(self) -> bool {
        !matches!(self, JournalFault::Damaged | JournalFault::KeyTaken)
    }

    /// True when a saga that met the fault should wait and go on by itself
    /// once the journal works again: a write refused or failed, or a read
    /// failed (a store reopening after a full disk); not damage, not a stop.
    pub fn pauses_sagas(self) -> bool {
        matches!(
            self,
            JournalFault::WriteUncertain | JournalFault::Refused | JournalFault::ReadFailed
        )
    }
}

/// A saga's events that do not fold are a damaged journal: the events were
/// valid when they were written, so the store, not the request, is at fault.
impl From<FoldError> for Error {
    fn from(e: FoldError) -> Self {
        Error::Journal(JournalError::Corrupt {
            key: "saga history".into(),
            why: e.to_string(),
        })
    }
}

/// Results of engine operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
