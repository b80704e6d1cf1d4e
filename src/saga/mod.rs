//! The domain: ids, definitions, events, the pure fold and the pure decisions,
//! the repair of a FAILED saga's endpoints, and the W3C trace context a saga is
//! journaled with.
//!
//! Nothing in here does I/O, reads a clock on its own or names tokio, sled or
//! tonic: every function takes the time and any randomness it needs as arguments,
//! so the state machine can be tested with plain tables and replayed anywhere.
//!
//! The reads it leaves out happen at the edge: `Timestamp::now` and
//! `SagaId::generate` are defined in `crate::clock` (whose test checks this
//! folder's source for clock, file and runtime calls), and definition files are
//! found and read by `sagad serve`, which hands their text to
//! [`definition::parse_definition`].

pub mod decide;
pub mod definition;
pub mod event;
#[cfg(test)]
mod fuzz;
pub mod id;
pub mod input;
pub mod limits;
pub mod principal;
pub mod protocol;
pub mod refresh;
pub mod retry;
pub mod state;
pub mod text;
pub mod trace;

pub use decide::{CallOutcome, Decision, attempt_finished, decide, recover};
pub use definition::{
    Definition, DefinitionError, Endpoint, Participant, StepDef, StepDefaults, StepKind, StepSpec,
};
pub use event::{EndpointChange, Event, EventKind, Failure};
pub use id::{Action, Offset, SagaId, Timestamp, idempotency_key};
pub use principal::{Identity, Principal};
pub use protocol::Protocol;
pub use retry::{RetryOverrides, RetryPolicy};
pub use state::{
    AttemptRecord, AttemptResult, AuditAction, AuditEntry, EndpointRecord, FoldError, SagaState,
    SagaStatus, StepStatus, TurnBack,
};
pub use trace::TraceContext;
