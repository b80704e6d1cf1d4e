//! The participant answer table of docs/participant.md, in one place.
//!
//! | answer | outcome |
//! | --- | --- |
//! | `OK`, outcome unspecified or `SUCCEEDED` | `Succeeded` |
//! | `OK` + `REJECTED`; status `ABORTED` / `FAILED_PRECONDITION` | `Rejected` |
//! | `OK` + `RETRY`; any other status; a timeout; a connection lost after the request was handed to it | `Transient` |
//! | no connection (refused, unreachable, failed handshake, none within the timeout); the request handed back unsent | `NotDelivered` |
//!
//! `NotDelivered` is only ever said of a request that certainly never left:
//! `grpc.rs` says which failures those are. Anything else that goes wrong is
//! `Transient`, effect unknown.

use std::time::Duration;

use tonic::{Code, Status};

use crate::{
    proto::v1::{Outcome, StepResponse},
    saga::CallOutcome,
};

/// Classifies an `OK` answer.
pub fn response(response: StepResponse) -> CallOutcome {
    match Outcome::try_from(response.outcome) {
        Ok(Outcome::Unspecified | Outcome::Succeeded) => CallOutcome::Succeeded {
            output: response.output,
        },
        Ok(Outcome::Rejected) => CallOutcome::Rejected {
            reason: non_empty(response.reason, "rejected by the participant"),
        },
        Ok(Outcome::Retry) => CallOutcome::Transient {
            reason: non_empty(response.reason, "the participant asked to retry"),
            retry_after: response
                .retry_after
                .and_then(|d| Duration::try_from(d).ok()),
        },
        Err(_) => CallOutcome::Transient {
            reason: format!(
                "the participant answered an unknown outcome {} (expected 0-3)",
                response.outcome
            ),
            retry_after: None,
        },
    }
}

/// Classifies an error status.
pub fn status(status: &Status) -> CallOutcome {
    let message = if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        format!("{:?}: {}", status.code(), status.message())
    };
    match status.code() {
        Code::Aborted | Code::FailedPrecondition => CallOutcome::Rejected { reason: message },
        _ => CallOutcome::Transient {
            reason: message,
            retry_after: None,
        },
    }
}

/// The outcome of a call that got no answer within its deadline.
pub fn timeout(after: Duration) -> CallOutcome {
    CallOutcome::Transient {
        reason: format!("no answer within the step timeout of {after:?}"),
        retry_after: None,
    }
}

/// The outcome of a call whose request certainly never left: no connection
/// could be made, or the request was handed back unsent.
pub fn not_delivered(origin: &str, error: impl std::fmt::Display) -> CallOutcome {
    CallOutcome::NotDelivered {
        reason: format!("cannot reach {origin}: {error} (the request was not sent)"),
    }
}

fn non_empty(text: String, default: &str) -> String {
    if text.is_empty() {
        default.to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(outcome: i32, reason: &str) -> StepResponse {
        StepResponse {
            outcome,
            output: b"o".to_vec(),
            reason: reason.into(),
            retry_after: None,
        }
    }

    #[test]
    fn the_answer_table() {
        let done = CallOutcome::Succeeded {
            output: b"o".to_vec(),
        };
        assert_eq!(response(answer(Outcome::Unspecified as i32, "")), done);
        assert_eq!(response(answer(Outcome::Succeeded as i32, "")), done);
        assert_eq!(
            response(answer(Outcome::Rejected as i32, "card declined")),
            CallOutcome::Rejected {
                reason: "card declined".into()
            }
        );
        let mut retry = answer(Outcome::Retry as i32, "busy");
        retry.retry_after = Some(prost_types::Duration {
            seconds: 2,
            nanos: 0,
        });
        assert_eq!(
            response(retry),
            CallOutcome::Transient {
                reason: "busy".into(),
                retry_after: Some(Duration::from_secs(2))
            }
        );
        assert!(matches!(
            response(answer(42, "")),
            CallOutcome::Transient { .. }
        ));

        for code in [Code::Aborted, Code::FailedPrecondition] {
            assert!(
                matches!(
                    status(&Status::new(code, "no")),
                    CallOutcome::Rejected { .. }
                ),
                "{code:?}"
            );
        }
        for code in [
            Code::Unavailable,
            Code::Internal,
            Code::DeadlineExceeded,
            Code::Unimplemented,
            Code::Unknown,
        ] {
            assert!(
                matches!(
                    status(&Status::new(code, "x")),
                    CallOutcome::Transient { .. }
                ),
                "{code:?}"
            );
        }
        assert!(matches!(
            timeout(Duration::from_secs(1)),
            CallOutcome::Transient { .. }
        ));
        assert_eq!(
            not_delivered("http://127.0.0.1:9", "Connection refused (os error 111)"),
            CallOutcome::NotDelivered {
                reason: "cannot reach http://127.0.0.1:9: Connection refused (os error 111) (the request was not sent)".into()
            }
        );
    }
}
