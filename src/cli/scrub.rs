//! What the server sends is made safe to print before a human view shows it:
//! every control character in its texts (names, reasons, errors, endpoints,
//! keys) is escaped, so a cancel reason or a participant's error cannot move
//! the cursor, clear or retitle the operator's terminal, write its clipboard,
//! or recolour what sagad prints (sagad's own colours are added afterwards).
//!
//! Each message is taken apart field by field with nothing left out (`..` is
//! never used), so a text field added to the API does not compile here until
//! it is scrubbed too. Bytes (payloads, outputs) are shown as JSON, which
//! escapes its own strings. JSON output (`--json`) needs none of this: it is
//! escaped JSON already.

use std::fmt::Write as _;

use sagad::proto::v1::{self as pb, saga_event::Event as E};

/// A message whose texts can be scrubbed.
pub trait Scrub {
    /// Escapes the control characters of every text in `self`.
    fn scrub(&mut self);
}

/// `text` with each control character (C0, DEL, C1, newlines too: a text is
/// one cell or one line) written as an escape, `\u{1b}` or `\n`.
fn clean(text: &mut String) {
    if !text.chars().any(char::is_control) {
        return;
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
    }
    *text = out;
}

/// Cleans the keys and values of a map of text (an input mapping).
fn clean_map(map: &mut std::collections::HashMap<String, String>) {
    *map = std::mem::take(map)
        .into_iter()
        .map(|(mut k, mut v)| {
            clean(&mut k);
            clean(&mut v);
            (k, v)
        })
        .collect();
}

impl<T: Scrub> Scrub for Vec<T> {
    fn scrub(&mut self) {
        self.iter_mut().for_each(Scrub::scrub);
    }
}

impl<T: Scrub> Scrub for Option<T> {
    fn scrub(&mut self) {
        if let Some(t) = self {
            t.scrub();
        }
    }
}

impl Scrub for String {
    fn scrub(&mut self) {
        clean(self);
    }
}

impl Scrub for pb::Saga {
    fn scrub(&mut self) {
        let pb::Saga {
            id,
            definition,
            state: _,
            payload: _,
            idempotency_key,
            steps,
            error,
            cancel_reason,
            created_at: _,
            updated_at: _,
            finished_at: _,
            trace_id,
            started_by,
            audit,
            owner,
            start_at: _,
            deadline: _,
        } = self;
        for text in [
            id,
            definition,
            idempotency_key,
            error,
            cancel_reason,
            trace_id,
            owner,
        ] {
            clean(text);
        }
        steps.scrub();
        started_by.scrub();
        audit.scrub();
    }
}

impl Scrub for pb::Principal {
    fn scrub(&mut self) {
        let pb::Principal {
            kind: _,
            name,
            peer,
        } = self;
        clean(name);
        clean(peer);
    }
}

impl Scrub for pb::AuditEntry {
    fn scrub(&mut self) {
        let pb::AuditEntry { action, at: _, by } = self;
        clean(action);
        by.scrub();
    }
}

impl Scrub for pb::Step {
    fn scrub(&mut self) {
        let pb::Step {
            name,
            participant,
            state: _,
            forward_attempts: _,
            compensate_attempts: _,
            last_error,
            output: _,
            started_at: _,
            finished_at: _,
            next_attempt_at: _,
            attempts,
            forward_endpoint,
            compensate_endpoint,
            retry: _,
            timeout: _,
            endpoint_changes,
            elided_attempts,
            forward_protocol: _,
            compensate_protocol: _,
            kind: _,
            input_mapping,
            input: _,
        } = self;
        clean_map(input_mapping);
        for text in [
            name,
            participant,
            last_error,
            forward_endpoint,
            compensate_endpoint,
        ] {
            clean(text);
        }
        attempts.scrub();
        endpoint_changes.scrub();
        elided_attempts.scrub();
    }
}

impl Scrub for pb::Attempt {
    fn scrub(&mut self) {
        let pb::Attempt {
            action: _,
            number: _,
            outcome: _,
            started_at: _,
            finished_at: _,
            error,
            next_attempt_at: _,
        } = self;
        clean(error);
    }
}

impl Scrub for pb::AttemptsSummary {
    fn scrub(&mut self) {
        let pb::AttemptsSummary {
            count: _,
            forward: _,
            not_delivered: _,
            first_error,
            last_error,
            first_started_at: _,
            last_finished_at: _,
        } = self;
        clean(first_error);
        clean(last_error);
    }
}

impl Scrub for pb::EndpointChange {
    fn scrub(&mut self) {
        let pb::EndpointChange {
            step,
            action: _,
            old_endpoint,
            new_endpoint,
            at: _,
        } = self;
        for text in [step, old_endpoint, new_endpoint] {
            clean(text);
        }
    }
}

impl Scrub for pb::SagaSummary {
    fn scrub(&mut self) {
        let pb::SagaSummary {
            id,
            definition,
            state: _,
            idempotency_key,
            created_at: _,
            updated_at: _,
            finished_at: _,
            step_count: _,
            current_step,
            error,
            cancel_reason,
            trace_id,
            started_by,
        } = self;
        for text in [
            id,
            definition,
            idempotency_key,
            error,
            cancel_reason,
            trace_id,
        ] {
            clean(text);
        }
        current_step.scrub();
        started_by.scrub();
    }
}

impl Scrub for pb::StepSummary {
    fn scrub(&mut self) {
        let pb::StepSummary {
            index: _,
            name,
            participant,
            state: _,
            forward_attempts: _,
            compensate_attempts: _,
            last_error,
            next_attempt_at: _,
        } = self;
        for text in [name, participant, last_error] {
            clean(text);
        }
    }
}

impl Scrub for pb::Participant {
    fn scrub(&mut self) {
        let pb::Participant {
            name,
            forward_endpoint,
            compensate_endpoint,
            retry: _,
            timeout: _,
            registered_at: _,
            registered_by,
            protocol: _,
            max_in_flight: _,
            rate,
        } = self;
        for text in [name, forward_endpoint, compensate_endpoint, rate] {
            clean(text);
        }
        registered_by.scrub();
    }
}

impl Scrub for pb::SagaDefinition {
    fn scrub(&mut self) {
        let pb::SagaDefinition {
            name,
            description,
            steps,
            deadline: _,
        } = self;
        clean(name);
        clean(description);
        steps.scrub();
    }
}

impl Scrub for pb::StepDefinition {
    fn scrub(&mut self) {
        let pb::StepDefinition {
            name,
            participant,
            retry: _,
            timeout: _,
            kind: _,
            input,
        } = self;
        clean(name);
        clean(participant);
        clean_map(input);
    }
}

impl Scrub for pb::Node {
    fn scrub(&mut self) {
        let pb::Node {
            node_id,
            addr,
            epoch: _,
            lease_remaining: _,
            lease_expired: _,
            owned_open: _,
            joined_at: _,
        } = self;
        clean(node_id);
        clean(addr);
    }
}

impl Scrub for pb::FeedEvent {
    fn scrub(&mut self) {
        let pb::FeedEvent { event, definition } = self;
        event.scrub();
        clean(definition);
    }
}

impl Scrub for pb::SagaEvent {
    fn scrub(&mut self) {
        let pb::SagaEvent {
            saga_id,
            seq: _,
            offset: _,
            at: _,
            state: _,
            event,
        } = self;
        clean(saga_id);
        let Some(event) = event else { return };
        match event {
            E::SagaStarted(pb::SagaStarted {
                definition,
                steps,
                idempotency_key,
                started_by,
                start_at: _,
                deadline: _,
            }) => {
                clean(definition);
                clean(idempotency_key);
                steps.scrub();
                started_by.scrub();
            }
            E::AttemptStarted(pb::AttemptStarted {
                step,
                action: _,
                attempt: _,
            }) => clean(step),
            E::AttemptSucceeded(pb::AttemptSucceeded {
                step,
                action: _,
                attempt: _,
                output: _,
            }) => clean(step),
            E::AttemptFailed(pb::AttemptFailed {
                step,
                action: _,
                attempt: _,
                outcome: _,
                error,
                next_attempt_at: _,
            }) => {
                clean(step);
                clean(error);
            }
            E::CancelRequested(pb::CancelRequested { reason, by }) => {
                clean(reason);
                by.scrub();
            }
            E::RetryRequested(pb::RetryRequested { by })
            | E::ResumeRequested(pb::ResumeRequested { by }) => by.scrub(),
            E::CompensationStarted(pb::CompensationStarted { reason })
            | E::SagaFailed(pb::SagaFailed { reason }) => clean(reason),
            E::SagaCompleted(pb::SagaCompleted {})
            | E::SagaCompensated(pb::SagaCompensated {})
            | E::StartReached(pb::StartReached {}) => {}
            E::InputResolved(pb::InputResolved { step, input: _ }) => clean(step),
            E::InputUnresolved(pb::InputUnresolved { step, error }) => {
                clean(step);
                clean(error);
            }
            E::EndpointsRefreshed(pb::EndpointsRefreshed { changes }) => changes.scrub(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        let mut saga = pb::Saga {
            cancel_reason: "\u{1b}[2J\u{1b}]0;owned\u{7}ok\r\nnext é".into(),
            steps: vec![pb::Step {
                attempts: vec![pb::Attempt {
                    error: "bad\u{9b}31m".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        saga.scrub();
        assert_eq!(
            saga.cancel_reason,
            "\\u{1b}[2J\\u{1b}]0;owned\\u{7}ok\\r\\nnext é"
        );
        assert_eq!(saga.steps[0].attempts[0].error, "bad\\u{9b}31m");
    }
}
