//! What a handler is given and what it answers: [`Request`] (one call of a
//! step, whichever protocol carried it), [`Output`] and [`Reject`] (the
//! handler's verdict), and [`Answer`] (what the participant says back, and,
//! when it is [`Final`], what the barrier keeps for repeats).
//!
//! Invariants:
//! - Only a [`Final`] answer is ever recorded: a [`Reject::Retry`] leaves no
//!   trace but the epoch it was called under, so the next attempt runs afresh.
//! - A recorded answer is given back byte for byte (output and reason).

use std::{collections::HashMap, time::Duration};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::time::Instant;

pub use crate::saga::Action;

/// One call of a step's forward or compensate endpoint.
#[derive(Clone, Debug)]
pub struct Request {
    /// The saga this call belongs to.
    pub saga_id: String,
    /// The saga's definition name (`inline` for inline steps).
    pub definition: String,
    /// The step's name within the definition: with `saga_id`, what the
    /// barrier records (and what a compensation undoes).
    pub step: String,
    /// Which endpoint was called (taken from the endpoint, not the body).
    pub action: Action,
    /// 1 for the first call of this action; never reset.
    pub attempt: u32,
    /// Stable for one (saga, step, action): `<saga_id>/<step>/<action>`.
    pub idempotency_key: String,
    /// In cluster mode, the calling coordinator's fencing epoch
    /// (`x-sagad-epoch`); `None` from a single node.
    pub epoch: Option<u64>,
    /// The saga's input, as given to `StartSaga`.
    pub payload: Vec<u8>,
    /// The output of every step that succeeded so far, by step name.
    pub outputs: HashMap<String, Vec<u8>>,
    /// When sagad stops waiting for the answer (the step's timeout from the
    /// moment the call arrived); `None` when the call said none.
    pub deadline: Option<Instant>,
}

impl Request {
    /// The payload read as JSON into `T`.
    pub fn payload_json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.payload)
    }

    /// The output of an earlier step read as JSON into `T`; `None` when that
    /// step has no output here.
    pub fn output_json<T: DeserializeOwned>(
        &self,
        step: &str,
    ) -> Option<Result<T, serde_json::Error>> {
        self.outputs.get(step).map(|b| serde_json::from_slice(b))
    }
}

/// What a forward handler produced: bytes that sagad journals and passes to
/// later steps in `outputs` (JSON by convention).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output(pub Vec<u8>);

impl Output {
    /// No output.
    pub fn empty() -> Self {
        Self::default()
    }

    /// `value` written as JSON.
    pub fn json(value: &impl Serialize) -> Self {
        // Serialising a value to a Vec fails only for maps with non-string
        // keys, a bug of the caller's type rather than a runtime condition.
        Self(serde_json::to_vec(value).expect("an output serialises to JSON"))
    }
}

/// Why a handler did not succeed.
#[derive(Clone, Debug, PartialEq)]
pub enum Reject {
    /// A business "no" (a declined card): final, recorded, never retried by
    /// sagad. A rejected forward must have done nothing: its effect writes are
    /// rolled back, and only the answer is recorded.
    Rejected(String),
    /// Try again later: nothing is recorded and every effect write is rolled
    /// back, so the next attempt runs the handler afresh.
    Retry {
        reason: String,
        /// The least wait sagad should make before the next attempt.
        after: Option<Duration>,
    },
}

impl Reject {
    /// A business "no".
    pub fn rejected(reason: impl Into<String>) -> Self {
        Self::Rejected(reason.into())
    }

    /// "Try again later", with no hint of when.
    pub fn retry(reason: impl Into<String>) -> Self {
        Self::Retry {
            reason: reason.into(),
            after: None,
        }
    }

    /// "Try again later, not before `after`".
    pub fn retry_after(reason: impl Into<String>, after: Duration) -> Self {
        Self::Retry {
            reason: reason.into(),
            after: Some(after),
        }
    }
}

/// A failed store write inside a handler (`tx.execute(..)?`) is transient:
/// the transaction is rolled back and the next attempt tries again.
impl From<tokio_postgres::Error> for Reject {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::retry(format!("the participant's database: {e}"))
    }
}

/// As for PostgreSQL: a failed read of the embedded store is transient.
impl From<sled::Error> for Reject {
    fn from(e: sled::Error) -> Self {
        Self::retry(format!("the participant's store: {e}"))
    }
}

/// The verdict of a final answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    Succeeded,
    Rejected,
}

impl Verdict {
    /// Its name in the PostgreSQL barrier table.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Succeeded => "succeeded",
            Verdict::Rejected => "rejected",
        }
    }

    /// The verdict named `name` (see [`Verdict::name`]).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "succeeded" => Some(Verdict::Succeeded),
            "rejected" => Some(Verdict::Rejected),
            _ => None,
        }
    }
}

/// An answer the barrier records and gives back to every repeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Final {
    pub verdict: Verdict,
    /// The output (empty for a rejection and for a compensation).
    pub output: Vec<u8>,
    /// Why (a rejection's reason, "nothing to undo"); may be empty.
    pub reason: String,
}

impl Final {
    /// A success with `output`.
    pub fn succeeded(output: Vec<u8>) -> Self {
        Self {
            verdict: Verdict::Succeeded,
            output,
            reason: String::new(),
        }
    }

    /// A rejection.
    pub fn rejected(reason: impl Into<String>) -> Self {
        Self {
            verdict: Verdict::Rejected,
            output: Vec::new(),
            reason: reason.into(),
        }
    }
}

/// What the participant answers one call.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// Final: the first answer to this (saga, step, action), recorded.
    Final(Final),
    /// Transient: try again (the handler asked for it, or it failed).
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// Refused without a look: the call's epoch is older than one already
    /// seen for its step, so its caller was deposed. Nothing is recorded and
    /// nothing runs; it travels as a transient error (gRPC `UNAVAILABLE`,
    /// HTTP `503`), which a deposed coordinator cannot journal anyway.
    Stale { epoch: u64, seen: u64 },
}

impl Answer {
    /// The reason a stale call is refused, for its error message.
    pub fn stale_reason(epoch: u64, seen: u64) -> String {
        format!(
            "x-sagad-epoch {epoch} is older than epoch {seen} already seen for this step: \
             the calling coordinator was deposed, so the call was refused and did nothing"
        )
    }
}
