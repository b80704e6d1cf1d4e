//! The failures of client verbs that scripts tell apart by exit code.
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | success |
//! | 1 | the server answered an error (status and message on stderr), `journal check` found damage, or anything else failed |
//! | 2 | bad flags or input (clap's usage errors use 2 as well) |
//! | 3 | the server cannot be reached |
//! | 4 | `start --wait`: the saga ended COMPENSATED |
//! | 5 | `start --wait`: the saga ended FAILED (needs an operator: `sagad retry`) |
//! | 6 | `journal check`: intact, but the log ends in a torn write the next start cuts off |
//! | 7 | `journal salvage`: the new data directory is written, but not everything could be carried into it |
//!
//! Every failure is printed as one line on stderr, `sagad: ...`.

use tonic::{Code, Status};

/// Exit code of a failure the other variants do not cover.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of bad flags or input.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the server cannot be reached.
pub const EXIT_UNREACHABLE: u8 = 3;
/// Exit code of `--wait` when the saga ended COMPENSATED.
pub const EXIT_COMPENSATED: u8 = 4;
/// Exit code of `--wait` when the saga ended FAILED.
pub const EXIT_FAILED: u8 = 5;
/// Exit code of `journal check` when the journal is intact but its log ends
/// in a torn write.
pub const EXIT_TORN_TAIL: u8 = 6;
/// Exit code of `journal salvage` when it wrote the new data directory but
/// could not carry everything into it.
pub const EXIT_SALVAGE_LOSSES: u8 = 7;

/// A client verb's failure, classified for its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The input is wrong before anything is sent (bad JSON payload, bad address).
    #[error("{0}")]
    Usage(String),
    /// Nothing answers at the address.
    #[error("cannot reach the coordinator at {addr} ({why}); is `sagad serve` running at {addr}?")]
    Unreachable { addr: String, why: String },
    /// The server answered with an error status.
    #[error("server error {}: {message}", code_name(*code))]
    Server { code: Code, message: String },
    /// `--wait` saw the saga end in a state other than COMPLETED.
    #[error("saga {id} ended {state}{}", why_suffix(why))]
    Ended {
        id: String,
        state: String,
        why: String,
        exit: u8,
    },
    /// An offline tool's finding that is not a failure to run it, with the
    /// exit code that tells it apart (`journal check`'s torn tail).
    #[error("{message}")]
    Finding { message: String, exit: u8 },
}

impl CliError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Unreachable { .. } => EXIT_UNREACHABLE,
            CliError::Server { .. } => EXIT_FAILURE,
            CliError::Ended { exit, .. } | CliError::Finding { exit, .. } => *exit,
        }
    }
}

impl From<Status> for CliError {
    fn from(status: Status) -> Self {
        CliError::Server {
            code: status.code(),
            message: status.message().to_string(),
        }
    }
}

fn why_suffix(why: &str) -> String {
    if why.is_empty() {
        String::new()
    } else {
        format!(": {why}")
    }
}

/// The canonical name of a gRPC status code, as in the gRPC spec and grpcurl.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
