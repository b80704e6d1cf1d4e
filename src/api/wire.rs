//! The wire forms of the domain's times, states and principals: the leaf
//! both the conversions (`convert.rs`) and the summaries (`summary.rs`)
//! build from.

use crate::{
    proto::v1 as pb,
    saga::{Identity, Principal, SagaStatus, StepStatus, Timestamp},
};

pub fn principal(p: &Principal) -> pb::Principal {
    let kind = match p.identity {
        Identity::Anonymous => pb::PrincipalKind::Anonymous,
        Identity::Token(_) => pb::PrincipalKind::Token,
        Identity::Certificate(_) => pb::PrincipalKind::Certificate,
    };
    pb::Principal {
        kind: kind as i32,
        name: p.identity.name().to_string(),
        peer: p.peer.map(|a| a.to_string()).unwrap_or_default(),
    }
}

pub fn timestamp(t: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: (t.millis() / 1000) as i64,
        nanos: ((t.millis() % 1000) * 1_000_000) as i32,
    }
}

pub fn saga_state(s: SagaStatus) -> pb::SagaState {
    match s {
        SagaStatus::Running => pb::SagaState::Running,
        SagaStatus::Compensating => pb::SagaState::Compensating,
        SagaStatus::Completed => pb::SagaState::Completed,
        SagaStatus::Compensated => pb::SagaState::Compensated,
        SagaStatus::Failed => pb::SagaState::Failed,
        SagaStatus::Scheduled => pb::SagaState::Scheduled,
    }
}

pub fn step_state(s: StepStatus) -> pb::StepState {
    match s {
        StepStatus::Pending => pb::StepState::Pending,
        StepStatus::Running => pb::StepState::Running,
        StepStatus::Succeeded => pb::StepState::Succeeded,
        StepStatus::Failed => pb::StepState::Failed,
        StepStatus::Compensating => pb::StepState::Compensating,
        StepStatus::Compensated => pb::StepState::Compensated,
        StepStatus::Skipped => pb::StepState::Skipped,
    }
}
