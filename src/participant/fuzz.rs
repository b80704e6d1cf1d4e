//! Fuzzing the classification of participant answers (`classify.rs`): `OK`
//! answers with any outcome number, output, reason and `retry_after` (negative,
//! huge, nanoseconds out of range), and error statuses with any code and
//! message. Each is classified by the table in `classify.rs`, with a reason
//! whenever it is not a success; none panics.

use proptest::{collection::vec, option, prelude::*};
use tonic::{Code, Status};

use super::classify;
use crate::{proto::v1::StepResponse, saga::CallOutcome, testing};

fn answer() -> impl Strategy<Value = StepResponse> {
    (
        prop_oneof![0i32..5, any::<i32>()],
        vec(any::<u8>(), 0..32),
        prop_oneof![Just(String::new()), any::<String>()],
        option::of((any::<i64>(), any::<i32>())),
    )
        .prop_map(|(outcome, output, reason, retry_after)| StepResponse {
            outcome,
            output,
            reason,
            retry_after: retry_after
                .map(|(seconds, nanos)| prost_types::Duration { seconds, nanos }),
        })
}

#[test]
fn every_ok_answer_is_classified_by_the_table() {
    testing::fuzz("participant answers", answer(), |answer| {
        let (outcome, output) = (answer.outcome, answer.output.clone());
        match (outcome, classify::response(answer)) {
            (0 | 1, CallOutcome::Succeeded { output: kept }) => prop_assert_eq!(kept, output),
            (2, CallOutcome::Rejected { reason }) => prop_assert!(!reason.is_empty()),
            (o, CallOutcome::Transient { reason, .. }) if o == 3 || !(0..=3).contains(&o) => {
                prop_assert!(!reason.is_empty())
            }
            (o, other) => prop_assert!(false, "outcome {o} classified as {other:?}"),
        }
        Ok(())
    });
}

#[test]
fn every_error_status_is_classified_by_the_table() {
    testing::fuzz(
        "participant statuses",
        (any::<i32>(), any::<String>()),
        |(code, message)| {
            let code = Code::from_i32(code);
            match classify::status(&Status::new(code, message)) {
                CallOutcome::Rejected { reason } => {
                    prop_assert!(matches!(code, Code::Aborted | Code::FailedPrecondition));
                    prop_assert!(!reason.is_empty());
                }
                CallOutcome::Transient {
                    reason,
                    retry_after,
                } => {
                    prop_assert!(!matches!(code, Code::Aborted | Code::FailedPrecondition));
                    prop_assert!(!reason.is_empty() && retry_after.is_none());
                }
                other => prop_assert!(false, "{code:?} classified as {other:?}"),
            }
            Ok(())
        },
    );
}
