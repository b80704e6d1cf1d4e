//! The one place where engine errors become gRPC statuses, and where tonic's
//! own refusal of a request too large to decode gets the wording of ours.

use tonic::{Code, Status};

use super::REQUEST_OVERHEAD_BYTES;
use crate::{Error, auth::AuthError, error::JournalFault, saga::DefinitionError};

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::NotFound(_) => Status::not_found(message),
            Error::InvalidArgument(_) => Status::invalid_argument(message),
            Error::AlreadyExists(_) => Status::already_exists(message),
            Error::FailedPrecondition(_) => Status::failed_precondition(message),
            Error::OutOfRange(_) => Status::out_of_range(message),
            Error::Unavailable(_) => Status::unavailable(message),
            Error::Definition(DefinitionError::UnknownParticipant { .. }) => {
                Status::not_found(message)
            }
            Error::Definition(DefinitionError::CannotUndo { .. }) => {
                Status::failed_precondition(message)
            }
            Error::Definition(DefinitionError::File { .. }) => Status::internal(message),
            Error::Definition(_) => Status::invalid_argument(message),
            Error::Journal(e) => match JournalFault::of(&e) {
                JournalFault::KeyTaken => Status::already_exists(message),
                JournalFault::Damaged => Status::data_loss(message),
                // The batch's write or sync failed part-way: what it wrote may
                // still become durable with the next sync that works, so the
                // change may yet take effect.
                JournalFault::WriteUncertain => Status::unavailable(format!(
                    "{message}; the change may still take effect once the disk works again \
                     (a StartSaga retried with the same idempotency key starts no second saga)"
                )),
                // Refused before anything was written.
                JournalFault::Refused | JournalFault::Closed => {
                    Status::unavailable(format!("{message}; nothing was changed"))
                }
                // A read failed: nothing was asked to change.
                JournalFault::ReadFailed => Status::unavailable(message),
                JournalFault::CannotOpen => Status::internal(message),
                // Another node runs the saga now: the call belongs there.
                JournalFault::Moved => Status::unavailable(format!(
                    "{message}; another coordinator runs this saga now: send the call there"
                )),
            },
            Error::Auth(AuthError::Unauthenticated(_)) => Status::unauthenticated(message),
            Error::Auth(
                AuthError::Denied { .. }
                | AuthError::NotItsSaga { .. }
                | AuthError::UnknownMethod(_),
            ) => Status::permission_denied(message),
            Error::Credentials(_) | Error::Io { .. } | Error::Tls(_) => Status::internal(message),
        }
    }
}

/// What tonic says of a request over the decoding limit, before any handler
/// runs (`OUT_OF_RANGE`, in its own words).
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large";

/// A response of the server, with tonic's refusal of a request too large to
/// decode rewritten as the refusal of a payload over `--max-payload-bytes`
/// (`INVALID_ARGUMENT`, naming the flag): the same mistake gets the same
/// answer whether the request is a little or a lot too large. (A plain
/// function, so the layered router has a type to name: the payload limit is
/// read back from tonic's limit, which is it plus [`REQUEST_OVERHEAD_BYTES`].)
pub fn oversized_as_payload<B>(mut response: http::Response<B>) -> http::Response<B> {
    let Some(status) = Status::from_header_map(response.headers()) else {
        return response;
    };
    let message = status.message();
    if status.code() != Code::OutOfRange || !message.starts_with(TONIC_TOO_LARGE) {
        return response;
    }
    let number_after = |label: &str| -> Option<usize> {
        let rest = message.split(label).nth(1)?;
        rest.trim_start().split(' ').next()?.parse().ok()
    };
    let found = number_after("found ");
    let max_payload =
        number_after("the limit is:").map(|l| l.saturating_sub(REQUEST_OVERHEAD_BYTES));
    let refusal = Status::invalid_argument(match (found, max_payload) {
        (Some(found), Some(max)) => format!(
            "the request is {found} bytes: too large for a payload within the limit of {max} bytes (--max-payload-bytes)"
        ),
        _ => "the request is too large for a payload within the limit (--max-payload-bytes)"
            .to_string(),
    });
    let headers = response.headers_mut();
    headers.remove("grpc-status");
    headers.remove("grpc-message");
    let _ = refusal.add_header(headers);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{JournalError, StoreError};

    #[test]
    fn each_journal_fault_says_what_it_means_for_the_request() {
        let eio = || {
            std::sync::Arc::new(StoreError::io(
                "fdatasync of the log",
                std::io::Error::from_raw_os_error(libc::EIO),
            ))
        };
        let failed_write = Status::from(Error::Journal(JournalError::Write(eio())));
        assert_eq!(failed_write.code(), tonic::Code::Unavailable);
        assert!(
            failed_write.message().contains("may still take effect")
                && !failed_write.message().contains("nothing was changed"),
            "{}",
            failed_write.message()
        );
        // A read's message is about reading: no advice meant for a change.
        let read = Status::from(Error::Journal(JournalError::Read(StoreError::io(
            "reading sled",
            std::io::Error::from_raw_os_error(libc::ENOSPC),
        ))));
        assert_eq!(read.code(), tonic::Code::Unavailable);
        assert!(
            read.message().starts_with("journal read failed")
                && !read.message().contains("take effect")
                && !read.message().contains("nothing was changed"),
            "{}",
            read.message()
        );
        let refused = Status::from(Error::Journal(JournalError::Failed(eio())));
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        assert!(
            refused.message().contains("nothing was changed"),
            "{}",
            refused.message()
        );
    }
}
