//! The one place where engine errors become gRPC statuses.

use tonic::Status;

use crate::{Error, journal::JournalError, saga::DefinitionError};

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::NotFound(_) => Status::not_found(message),
            Error::InvalidArgument(_) => Status::invalid_argument(message),
            Error::AlreadyExists(_) => Status::already_exists(message),
            Error::FailedPrecondition(_) => Status::failed_precondition(message),
            Error::Unavailable(_) => Status::unavailable(message),
            Error::Definition(DefinitionError::UnknownParticipant { .. }) => {
                Status::not_found(message)
            }
            Error::Definition(DefinitionError::Io { .. } | DefinitionError::File { .. }) => {
                Status::internal(message)
            }
            Error::Definition(_) => Status::invalid_argument(message),
            Error::Journal(JournalError::IdempotencyConflict { .. }) => {
                Status::already_exists(message)
            }
            Error::Journal(JournalError::Corrupt { .. }) => Status::data_loss(message),
            Error::Journal(
                JournalError::Io(_) | JournalError::Failed(_) | JournalError::Closed,
            ) => Status::unavailable(format!("{message}; nothing was changed")),
            Error::Journal(JournalError::Locked { .. } | JournalError::Open { .. }) => {
                Status::internal(message)
            }
            Error::Io { .. } => Status::internal(message),
        }
    }
}
