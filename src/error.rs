//! The crate's error: what the engine answers its callers, classified so the API
//! layer can map it to one gRPC status (the mapping lives in `api/`, only there).

use crate::{
    journal::JournalError,
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
    /// The coordinator cannot serve this now (recovering, shutting down, disk failed).
    #[error("{0}")]
    Unavailable(String),
    /// A participant or definition is malformed or unknown.
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
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
            Error::Journal(e) => !matches!(
                e,
                JournalError::Corrupt { .. } | JournalError::IdempotencyConflict { .. }
            ),
            _ => false,
        }
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
