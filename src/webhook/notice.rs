//! The body of one FAILED-saga notice, built from the saga's folded state.
//!
//! The JSON is the webhook's contract (README "On-failed webhook"): add fields
//! freely, never rename one. `delivery_id` is the same in every POST of one
//! failure, across retries and restarts, so a receiver dedupes on it; a saga
//! that is retried and fails again gets a new one.

use std::fmt;

use serde::Serialize;

use crate::{
    json::timestamp,
    saga::{SagaId, SagaState, SagaStatus},
};

/// Which failure a notice is about: the saga and the `seq` of its `SagaFailed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryKey {
    pub saga: SagaId,
    pub seq: u64,
}

impl fmt::Display for DeliveryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.saga, self.seq)
    }
}

/// One step as the notice shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepSummary {
    pub name: String,
    pub participant: String,
    /// As in the API: `SUCCEEDED`, `FAILED`, `COMPENSATED`, ...
    pub state: &'static str,
    pub forward_attempts: u32,
    pub compensate_attempts: u32,
    pub last_error: Option<String>,
}

/// The JSON posted for one FAILED saga.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Notice {
    /// Always `saga.failed`.
    pub event: &'static str,
    /// `<saga_id>/<seq of SagaFailed>`: stable across retries and restarts.
    pub delivery_id: String,
    pub saga_id: String,
    pub definition: String,
    /// Always `FAILED`: the state the saga was journaled in.
    pub state: &'static str,
    /// The step whose compensation gave up.
    pub failed_step: Option<String>,
    /// That step's last error (the participant's reason, or the call's error).
    pub last_error: Option<String>,
    /// Why the saga failed, as `GetSaga` shows it.
    pub reason: Option<String>,
    /// When the failure was journaled (RFC 3339, UTC: `crate::json`).
    pub failed_at: String,
    pub created_at: String,
    pub steps: Vec<StepSummary>,
    /// Which POST of this notice this is, from 1 (restarts count from 1 again).
    pub delivery_attempt: u32,
    #[serde(skip)]
    pub key: DeliveryKey,
}

impl Notice {
    /// The notice for a saga whose last event is `SagaFailed`; `None` when the
    /// saga is not FAILED.
    pub fn for_failed(state: &SagaState) -> Option<Notice> {
        if state.status != SagaStatus::Failed {
            return None;
        }
        let failed = state
            .progress
            .iter()
            .rposition(|p| p.compensate.gave_up)
            .or_else(|| state.progress.iter().rposition(|p| p.last_error.is_some()));
        let key = DeliveryKey {
            saga: state.id,
            seq: state.last_seq,
        };
        Some(Notice {
            event: "saga.failed",
            delivery_id: key.to_string(),
            saga_id: state.id.to_string(),
            definition: state.definition.clone(),
            state: "FAILED",
            failed_step: failed.map(|i| state.steps[i].name.clone()),
            last_error: failed.and_then(|i| state.progress[i].last_error.clone()),
            reason: state.error.clone(),
            failed_at: timestamp(state.finished_at.unwrap_or(state.updated_at)),
            created_at: timestamp(state.created_at),
            steps: state
                .steps
                .iter()
                .zip(&state.progress)
                .enumerate()
                .map(|(i, (spec, progress))| StepSummary {
                    name: spec.name.clone(),
                    participant: spec.participant.clone(),
                    state: state.step_status(i).as_str(),
                    forward_attempts: progress.forward.attempts,
                    compensate_attempts: progress.compensate.attempts,
                    last_error: progress.last_error.clone(),
                })
                .collect(),
            delivery_attempt: 1,
            key,
        })
    }
}
