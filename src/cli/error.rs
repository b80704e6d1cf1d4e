//! The failures of client verbs that scripts tell apart by exit code.
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | success |
//! | 1 | the server answered an error (status and message on stderr), `journal check` found damage, or anything else failed |
//! | 2 | bad flags or input: clap's usage errors, a payload that is not JSON, a config or definition file that cannot be used |
//! | 3 | the server cannot be reached, or the TLS handshake with it failed |
//! | 4 | `start --wait`: the saga ended COMPENSATED |
//! | 5 | `start --wait`: the saga ended FAILED (needs an operator: `sagad retry`) |
//! | 6 | `journal check`: intact, but the log ends in a torn write the next start cuts off |
//! | 7 | `journal salvage`: the new data directory is written, but not everything could be carried into it |
//!
//! Every failure is printed as one line on stderr, `sagad: ...`: the error and
//! its causes ([`one_line`]), or clap's usage error folded into one
//! ([`usage_line`]).

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
    /// The TLS handshake failed: the server's certificate is not trusted, or
    /// the server refused ours.
    /// `addr` is known when the connection failed, not when a call did (a
    /// connection that failed later, under a call).
    #[error(
        "TLS with the coordinator{} failed ({why}); check --ca, --cert and --key",
        at(addr)
    )]
    Handshake { addr: Option<String>, why: String },
    /// Something answers at an `http://` address, but not with plaintext
    /// HTTP/2: most often a coordinator that serves TLS.
    #[error(
        "the coordinator did not answer in plaintext HTTP/2 ({why}); if it serves TLS, use an https:// --addr (and --ca for a private CA)"
    )]
    NotPlaintext { why: String },
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
            CliError::Unreachable { .. }
            | CliError::Handshake { .. }
            | CliError::NotPlaintext { .. } => EXIT_UNREACHABLE,
            CliError::Server { .. } => EXIT_FAILURE,
            CliError::Ended { exit, .. } | CliError::Finding { exit, .. } => *exit,
        }
    }
}

impl From<Status> for CliError {
    fn from(status: Status) -> Self {
        if let Some(why) = tls_failure(&status) {
            return CliError::Handshake { addr: None, why };
        }
        // Printed on a terminal: its control characters escaped (`scrub.rs`).
        let mut message = status.message().to_string();
        crate::cli::scrub::Scrub::scrub(&mut message);
        CliError::Server {
            code: status.code(),
            message,
        }
    }
}

fn at(addr: &Option<String>) -> String {
    addr.as_ref()
        .map(|a| format!(" at {a}"))
        .unwrap_or_default()
}

/// The TLS error behind a failed connection, if that is what failed: rustls
/// reports through an `io::Error` whose own `source` skips it, so each
/// `io::Error` of the chain is opened.
pub fn tls_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(error);
    while let Some(e) = current {
        let inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<tokio_rustls::rustls::Error>());
        if let Some(tls) = inner {
            return Some(tls.to_string());
        }
        current = e.source();
    }
    None
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

/// `error` and its causes on one line, each cause once: many errors here name
/// their source in their own text (`journal write failed: {source}`) and keep
/// it as their `source()` too, so a cause already said is not said again.
pub fn one_line(error: &anyhow::Error) -> String {
    let mut line = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    flatten(&line)
}

/// clap's usage error (a block: the error, tips, the usage, a pointer to
/// `--help`) as one line: the error and its tips, and the `--help` of
/// `command` (the verb the arguments named, `sagad start` say) to read.
pub fn usage_line(error: &clap::Error, command: &str) -> String {
    let text = error.render().to_string();
    let said: Vec<String> = text
        .split("\n\n")
        .map(str::trim)
        .filter(|p| {
            !p.is_empty() && !p.starts_with("Usage:") && !p.starts_with("For more information")
        })
        .map(|p| flatten(p.trim_start_matches("error: ")))
        .collect();
    format!("{}; see '{command} --help'", said.join("; "))
}

/// The verb `args` (the whole command line) names: the program's name, then
/// each word that names a subcommand of the one before.
pub fn command_path(root: &clap::Command, args: &[std::ffi::OsString]) -> String {
    let mut path = vec![root.get_name().to_string()];
    let mut command = root;
    for arg in args.iter().skip(1) {
        let Some(sub) = arg.to_str().and_then(|a| command.find_subcommand(a)) else {
            break;
        };
        path.push(sub.get_name().to_string());
        command = sub;
    }
    path.join(" ")
}

/// Text on one line: its lines trimmed and joined by a space.
fn flatten(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("journal write failed: {0}")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("fdatasync of the log: No space left on device")]
    struct Inner;

    #[test]
    fn a_cause_is_said_once() {
        let e = anyhow::Error::new(Outer(Inner));
        assert_eq!(
            one_line(&e),
            "journal write failed: fdatasync of the log: No space left on device"
        );
        // A context that does not say its cause gets it appended.
        let e = anyhow::Error::new(Inner).context("stopping");
        assert_eq!(
            one_line(&e),
            "stopping: fdatasync of the log: No space left on device"
        );
    }

    #[test]
    fn a_usage_error_is_one_line_naming_the_help_to_read() {
        let command = clap::Command::new("sagad").subcommand(
            clap::Command::new("start").arg(
                clap::Arg::new("definition")
                    .value_name("DEFINITION")
                    .required(true),
            ),
        );
        let args = ["sagad", "start"].map(std::ffi::OsString::from);
        let e = command.clone().try_get_matches_from(&args).unwrap_err();
        let line = usage_line(&e, &command_path(&command, &args));
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("<DEFINITION>"), "{line}");
        assert!(line.ends_with("see 'sagad start --help'"), "{line}");
        let args = ["sagad", "start", "d", "--bogus"].map(std::ffi::OsString::from);
        let e = command.clone().try_get_matches_from(&args).unwrap_err();
        let line = usage_line(&e, &command_path(&command, &args));
        assert!(
            line.starts_with("unexpected argument '--bogus' found"),
            "{line}"
        );
        assert!(!line.contains("error:"), "{line}");
        assert!(line.ends_with("see 'sagad start --help'"), "{line}");
    }
}
