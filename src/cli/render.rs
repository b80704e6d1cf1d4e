//! The human views of client verbs: a saga with its timeline (`get`, `start
//! --wait`, the demo), one line per live event (`watch`, the demo), and the
//! tables of `list`, `participants list` and `definitions list`.
//!
//! A timeline answers "what happened, and where did it go wrong": every attempt
//! of every step in time order, with its start, duration, outcome and error,
//! and a marker on the attempt at which a step (or a compensation) gave up.
//! The server sends a step's last attempts and summarises the earlier ones
//! (unless `get --all-attempts`); a summary is one row, where they began.

use std::fmt::Write as _;

use sagad::proto::v1 as pb;

use crate::cli::output::{
    Palette, Table, Tone, action_name, between, clock, config_duration, date_time, grouped, offset,
    outcome_name, principal, protocol_name, saga_state_name, short_duration, step_kind_name,
    step_state_name, tone_of, truncate,
};
use crate::cli::scrub::Scrub;

/// Longest error shown in a table cell; `--json` has the full text.
const ERROR_CELL_MAX: usize = 72;
/// Longest payload or output shown on one line.
const BYTES_PREVIEW_MAX: usize = 100;
/// Width the step name is padded to in event lines.
const STEP_COLUMN: usize = 16;

/// A copy of `t` safe to print: every human view starts from one
/// (`scrub.rs`), and adds its own colours after.
fn scrubbed<T: Scrub + Clone>(t: &T) -> T {
    let mut t = t.clone();
    t.scrub();
    t
}

/// The saga, its steps and its timeline.
pub fn saga(s: &pb::Saga, palette: &Palette) -> String {
    let s = &scrubbed(s);
    let mut out = String::new();
    let state = saga_state_name(s.state);
    let _ = writeln!(
        out,
        "saga {}  {}  {}",
        palette.paint(Tone::Bold, &s.id),
        s.definition,
        palette.paint(tone_of(&state), &state)
    );
    if let Some(created) = &s.created_at {
        let mut line = format!("  created   {}", date_time(created));
        match between(Some(created), s.finished_at.as_ref()) {
            Some(took) => {
                let _ = write!(line, ", finished after {}", short_duration(took));
            }
            None => line.push_str(", still running"),
        }
        let _ = writeln!(out, "{line}");
    }
    if let Some(start) = &s.start_at {
        let _ = writeln!(out, "  starts    {}", date_time(start));
    }
    if let Some(deadline) = &s.deadline {
        let _ = writeln!(out, "  deadline  {}", date_time(deadline));
    }
    let _ = writeln!(out, "  by        {}", principal(s.started_by.as_ref()));
    if !s.owner.is_empty() {
        let _ = writeln!(out, "  owner     {}", s.owner);
    }
    if !s.payload.is_empty() {
        let _ = writeln!(
            out,
            "  payload   {}",
            crate::cli::output::bytes_preview(&s.payload, BYTES_PREVIEW_MAX)
        );
    }
    if !s.idempotency_key.is_empty() {
        let _ = writeln!(out, "  key       {}", s.idempotency_key);
    }
    if !s.cancel_reason.is_empty() {
        let _ = writeln!(
            out,
            "  {}  {}",
            palette.paint(Tone::Warn, "cancelled"),
            s.cancel_reason
        );
    }
    if !s.error.is_empty() {
        let _ = writeln!(
            out,
            "  {}       {}",
            palette.paint(Tone::Bad, "why"),
            s.error
        );
    }

    out.push('\n');
    let mut steps = Table::new(&[
        "  STEP",
        "PARTICIPANT",
        "STATE",
        "FORWARD",
        "COMPENSATE",
        "LAST ERROR",
    ]);
    for step in &s.steps {
        let state = step_state_name(step.state);
        let name = match kind_tag(step.kind) {
            Some(kind) => format!("  {} [{kind}]", step.name),
            None => format!("  {}", step.name),
        };
        steps.row(vec![
            (name, Tone::Plain),
            (step.participant.clone(), Tone::Plain),
            (state.clone(), tone_of(&state)),
            (step.forward_attempts.to_string(), Tone::Plain),
            (step.compensate_attempts.to_string(), Tone::Plain),
            (truncate(&step.last_error, ERROR_CELL_MAX), Tone::Plain),
        ]);
    }
    out.push_str(&steps.render(palette));
    for step in s.steps.iter().filter(|s| !s.input_mapping.is_empty()) {
        let mut mapping: Vec<String> = step
            .input_mapping
            .iter()
            .map(|(field, pointer)| format!("{field} = {pointer}"))
            .collect();
        mapping.sort();
        let _ = write!(out, "  input of {}: {}", step.name, mapping.join(", "));
        if !step.input.is_empty() {
            let built = crate::cli::output::bytes_preview(&step.input, BYTES_PREVIEW_MAX);
            let _ = write!(out, " → {built}");
        }
        out.push('\n');
    }

    out.push('\n');
    out.push_str(&timeline(s, palette));
    out
}

/// Every attempt of every step, in the order they started (the ones the
/// server summarised as one row), and every endpoint a refresh replaced,
/// when it did.
fn timeline(s: &pb::Saga, palette: &Palette) -> String {
    let attempts: Vec<(usize, &pb::Step, &pb::Attempt)> = s
        .steps
        .iter()
        .enumerate()
        .flat_map(|(i, step)| step.attempts.iter().map(move |a| (i, step, a)))
        .collect();
    if attempts.is_empty() {
        return "  no attempts yet\n".to_string();
    }
    let since_start = |t: Option<&prost_types::Timestamp>| {
        between(s.created_at.as_ref(), t)
            .map(offset)
            .unwrap_or_default()
    };
    let time = |t: Option<&prost_types::Timestamp>| {
        (format!("  {}", t.map(clock).unwrap_or_default()), Tone::Dim)
    };
    let millis =
        |t: Option<&prost_types::Timestamp>| t.map(|t| (t.seconds, t.nanos)).unwrap_or_default();
    // Start times have millisecond resolution, so fast steps tie: within one
    // millisecond, forward calls come before compensations, forward steps go
    // first to last and compensations last to first, as the engine runs them;
    // a refresh comes before the compensations it was made for.
    let mut rows = Vec::with_capacity(attempts.len());
    for (i, step, attempt) in attempts {
        let compensating = attempt.action == pb::Action::Compensate as i32;
        let order = if compensating { usize::MAX - i } else { i };
        let key = (
            millis(attempt.started_at.as_ref()),
            compensating,
            order,
            attempt.number,
        );
        rows.push((key, attempt_row(s, step, attempt, &since_start, &time)));
    }
    for (i, step) in s.steps.iter().enumerate() {
        if let Some(elided) = &step.elided_attempts {
            // Before the step's first attempt shown: the elided ones came first.
            let compensating = elided.forward == 0;
            let order = if compensating { usize::MAX - i } else { i };
            let key = (
                millis(elided.first_started_at.as_ref()),
                compensating,
                order,
                0,
            );
            rows.push((key, elided_row(s, step, elided, &since_start, &time)));
        }
    }
    for step in &s.steps {
        for change in &step.endpoint_changes {
            let key = (millis(change.at.as_ref()), true, 0, 0);
            rows.push((
                key,
                vec![
                    time(change.at.as_ref()),
                    (since_start(change.at.as_ref()), Tone::Dim),
                    (step.name.clone(), Tone::Plain),
                    (action_name(change.action), Tone::Plain),
                    ("REFRESHED".into(), Tone::Warn),
                    (String::new(), Tone::Plain),
                    (
                        format!("endpoint {} → {}", change.old_endpoint, change.new_endpoint),
                        Tone::Plain,
                    ),
                ],
            ));
        }
    }
    // A cancel or retry comes before the compensations it started.
    for entry in s.audit.iter().filter(|a| a.action != "started") {
        let key = (millis(entry.at.as_ref()), false, 0, 0);
        let what = match entry.action.as_str() {
            "cancel_requested" => "CANCEL",
            "retry_requested" => "RETRY",
            other => other,
        };
        rows.push((
            key,
            vec![
                time(entry.at.as_ref()),
                (since_start(entry.at.as_ref()), Tone::Dim),
                (String::new(), Tone::Plain),
                (String::new(), Tone::Plain),
                (what.to_string(), Tone::Warn),
                (String::new(), Tone::Plain),
                (format!("by {}", principal(entry.by.as_ref())), Tone::Plain),
            ],
        ));
    }
    rows.sort_by_key(|(key, _)| *key);
    let mut table = Table::new(&[
        "  TIME (UTC)",
        "+AT",
        "STEP",
        "ATTEMPT",
        "OUTCOME",
        "TOOK",
        "DETAIL",
    ]);
    for (_, row) in rows {
        table.row(row);
    }
    table.render(palette)
}

/// The timeline row of one attempt.
fn attempt_row(
    s: &pb::Saga,
    step: &pb::Step,
    attempt: &pb::Attempt,
    since_start: &dyn Fn(Option<&prost_types::Timestamp>) -> String,
    time: &dyn Fn(Option<&prost_types::Timestamp>) -> (String, Tone),
) -> Vec<(String, Tone)> {
    let outcome = outcome_name(attempt.outcome);
    let took = between(attempt.started_at.as_ref(), attempt.finished_at.as_ref())
        .map(short_duration)
        .unwrap_or_else(|| "…".into());
    let mut detail = truncate(&attempt.error, ERROR_CELL_MAX);
    if let Some(wait) = between(
        attempt.finished_at.as_ref(),
        attempt.next_attempt_at.as_ref(),
    ) {
        detail.push_str(&format!("; retry in {}", short_duration(wait)));
    }
    let (detail, detail_tone) = if gave_up(s, step, attempt) {
        let marker = if attempt.action == pb::Action::Compensate as i32 {
            "◀ compensation gave up here"
        } else if never_reached(step) {
            "◀ failed here, never reached: not compensated"
        } else {
            "◀ failed here"
        };
        let text = if detail.is_empty() {
            marker.to_string()
        } else {
            format!("{detail}  {marker}")
        };
        (text, Tone::Bad)
    } else {
        (detail, Tone::Plain)
    };
    vec![
        time(attempt.started_at.as_ref()),
        (since_start(attempt.started_at.as_ref()), Tone::Dim),
        (step.name.clone(), Tone::Plain),
        (
            format!("{} #{}", action_name(attempt.action), attempt.number),
            Tone::Plain,
        ),
        (outcome.clone(), tone_of(&outcome)),
        (took, Tone::Plain),
        (detail, detail_tone),
    ]
}

/// The timeline row of a step's attempts the server left out: which they
/// were, over what time, and their first and last errors.
fn elided_row(
    s: &pb::Saga,
    step: &pb::Step,
    elided: &pb::AttemptsSummary,
    since_start: &dyn Fn(Option<&prost_types::Timestamp>) -> String,
    time: &dyn Fn(Option<&prost_types::Timestamp>) -> (String, Tone),
) -> Vec<(String, Tone)> {
    // A step's forward attempts all come before its compensations.
    let compensations = elided.count.saturating_sub(elided.forward);
    let which = match (elided.forward, compensations) {
        (f, 0) => format!("forward #1–{f}"),
        (0, c) => format!("compensate #1–{c}"),
        (f, c) => format!("forward #1–{f}, compensate #1–{c}"),
    };
    let errors = match (elided.first_error.as_str(), elided.last_error.as_str()) {
        ("", _) => String::new(),
        (first, last) => format!(
            ": first error {}, last error {}",
            truncate(first, ERROR_CELL_MAX),
            truncate(last, ERROR_CELL_MAX)
        ),
    };
    let detail = format!(
        "… {} earlier attempts{errors} (`sagad get {} --all-attempts` lists them)",
        grouped(elided.count),
        s.id
    );
    vec![
        time(elided.first_started_at.as_ref()),
        (since_start(elided.first_started_at.as_ref()), Tone::Dim),
        (step.name.clone(), Tone::Plain),
        (which, Tone::Plain),
        ("…".into(), Tone::Dim),
        (
            between(
                elided.first_started_at.as_ref(),
                elided.last_finished_at.as_ref(),
            )
            .map(short_duration)
            .unwrap_or_default(),
            Tone::Plain,
        ),
        (detail, Tone::Dim),
    ]
}

/// True for the attempt at which a step's action gave up: it failed, no retry
/// was scheduled, no later attempt of the same action exists, and the saga
/// went on to compensate (or to FAILED) because of it.
fn gave_up(saga: &pb::Saga, step: &pb::Step, attempt: &pb::Attempt) -> bool {
    let undoing = matches!(
        pb::SagaState::try_from(saga.state),
        Ok(pb::SagaState::Compensating | pb::SagaState::Compensated | pb::SagaState::Failed)
    );
    let failed = matches!(
        pb::AttemptOutcome::try_from(attempt.outcome),
        Ok(pb::AttemptOutcome::Rejected
            | pb::AttemptOutcome::Transient
            | pb::AttemptOutcome::NotDelivered)
    );
    let last_of_action = step
        .attempts
        .iter()
        .filter(|a| a.action == attempt.action)
        .all(|a| a.number <= attempt.number);
    undoing && failed && last_of_action && attempt.next_attempt_at.is_none()
}

/// True when no forward attempt of the step reached its participant: each one
/// was certainly not delivered, so the step did nothing. With a forward
/// attempt shown, every elided attempt was a forward one (they come first).
fn never_reached(step: &pb::Step) -> bool {
    let mut forward = step
        .attempts
        .iter()
        .filter(|a| a.action == pb::Action::Forward as i32)
        .peekable();
    let elided_not_delivered = step
        .elided_attempts
        .as_ref()
        .is_none_or(|e| e.not_delivered == e.count);
    forward.peek().is_some()
        && elided_not_delivered
        && forward.all(|a| a.outcome == pb::AttemptOutcome::NotDelivered as i32)
}

/// One line for a live event: time, step, and what happened.
pub fn event_line(e: &pb::SagaEvent, palette: &Palette) -> String {
    use pb::saga_event::Event as E;
    let e = &scrubbed(e);
    let time = palette.paint(Tone::Dim, &e.at.as_ref().map(clock).unwrap_or_default());
    let step = |name: &str| format!("{name:<STEP_COLUMN$}");
    let what = match &e.event {
        Some(E::SagaStarted(s)) => format!(
            "{}saga started: {} ({})",
            step(""),
            s.definition,
            s.steps.join(" → ")
        ),
        Some(E::AttemptStarted(a)) => format!(
            "{}{} #{} started",
            step(&a.step),
            action_name(a.action),
            a.attempt
        ),
        Some(E::AttemptSucceeded(a)) => {
            let mut line = format!(
                "{}{} #{} {}",
                step(&a.step),
                action_name(a.action),
                a.attempt,
                palette.paint(Tone::Good, "succeeded")
            );
            if !a.output.is_empty() {
                let _ = write!(
                    line,
                    "  {}",
                    palette.paint(
                        Tone::Dim,
                        &crate::cli::output::bytes_preview(&a.output, BYTES_PREVIEW_MAX)
                    )
                );
            }
            line
        }
        Some(E::AttemptFailed(a)) => {
            let outcome = outcome_name(a.outcome);
            let verdict = match outcome.as_str() {
                "REJECTED" => palette.paint(Tone::Bad, "rejected"),
                "INTERRUPTED" => palette.paint(Tone::Warn, "interrupted"),
                "NOT_DELIVERED" => palette.paint(Tone::Warn, "not delivered"),
                _ => palette.paint(Tone::Warn, "failed"),
            };
            let mut line = format!(
                "{}{} #{} {verdict}: {}",
                step(&a.step),
                action_name(a.action),
                a.attempt,
                a.error
            );
            match between(e.at.as_ref(), a.next_attempt_at.as_ref()) {
                Some(wait) => {
                    let _ = write!(line, " (retry in {})", short_duration(wait));
                }
                None if outcome != "REJECTED" => line.push_str(" (no attempts left)"),
                None => {}
            }
            line
        }
        Some(E::CancelRequested(c)) => format!(
            "{}{}: {} (by {})",
            step(""),
            palette.paint(Tone::Warn, "cancel requested"),
            c.reason,
            principal(c.by.as_ref())
        ),
        Some(E::CompensationStarted(c)) => format!(
            "{}{}: {}",
            step(""),
            palette.paint(Tone::Warn, "compensating"),
            c.reason
        ),
        Some(E::SagaCompleted(_)) => {
            format!(
                "{}saga {}",
                step(""),
                palette.paint(Tone::Good, "COMPLETED")
            )
        }
        Some(E::SagaCompensated(_)) => format!(
            "{}saga {}",
            step(""),
            palette.paint(Tone::Warn, "COMPENSATED")
        ),
        Some(E::SagaFailed(f)) => format!(
            "{}saga {}: {}",
            step(""),
            palette.paint(Tone::Bad, "FAILED"),
            f.reason
        ),
        Some(E::RetryRequested(r)) => format!(
            "{}retry requested by {}",
            step(""),
            principal(r.by.as_ref())
        ),
        Some(E::ResumeRequested(r)) => format!(
            "{}retry requested by {}: going forward again",
            step(""),
            principal(r.by.as_ref())
        ),
        Some(E::StartReached(_)) => format!("{}start time reached: going forward", step("")),
        Some(E::InputResolved(r)) => format!(
            "{}input {}",
            step(&r.step),
            crate::cli::output::bytes_preview(&r.input, BYTES_PREVIEW_MAX)
        ),
        Some(E::InputUnresolved(r)) => format!(
            "{}input {}: {}",
            step(&r.step),
            palette.paint(Tone::Bad, "unresolved"),
            r.error
        ),
        Some(E::EndpointsRefreshed(r)) => {
            let changes: Vec<String> = r
                .changes
                .iter()
                .map(|c| {
                    format!(
                        "{} {} {} → {}",
                        c.step,
                        action_name(c.action),
                        c.old_endpoint,
                        c.new_endpoint
                    )
                })
                .collect();
            format!(
                "{}{}: {}",
                step(""),
                palette.paint(Tone::Warn, "endpoints refreshed"),
                changes.join("; ")
            )
        }
        None => format!("{}(an event this client does not know)", step("")),
    };
    format!("{time}  {what}")
}

/// The `list` table: one line per saga, with the step it is at and why.
pub fn saga_table(sagas: &[pb::SagaSummary], palette: &Palette) -> String {
    let sagas = &scrubbed(&sagas.to_vec());
    if sagas.is_empty() {
        return "no sagas\n".into();
    }
    let mut table = Table::new(&[
        "ID",
        "DEFINITION",
        "STATE",
        "CREATED",
        "TOOK",
        "STEP",
        "ATTEMPTS",
        "WHY",
    ]);
    for s in sagas {
        let state = saga_state_name(s.state);
        let step = s.current_step.as_ref();
        table.row(vec![
            (s.id.clone(), Tone::Plain),
            (s.definition.clone(), Tone::Plain),
            (state.clone(), tone_of(&state)),
            (
                s.created_at.as_ref().map(date_time).unwrap_or_default(),
                Tone::Dim,
            ),
            (
                between(s.created_at.as_ref(), s.finished_at.as_ref())
                    .map(short_duration)
                    .unwrap_or_else(|| "…".into()),
                Tone::Plain,
            ),
            (
                step.map(|c| format!("{} ({}/{})", c.name, c.index + 1, s.step_count))
                    .unwrap_or_default(),
                Tone::Plain,
            ),
            (step.map(attempt_counts).unwrap_or_default(), Tone::Plain),
            (truncate(&why(s), ERROR_CELL_MAX), Tone::Plain),
        ]);
    }
    table.render(palette)
}

/// `4`, or `4 + 2 compensate` once the step is being undone.
fn attempt_counts(step: &pb::StepSummary) -> String {
    match step.compensate_attempts {
        0 => grouped(step.forward_attempts),
        c => format!(
            "{} + {} compensate",
            grouped(step.forward_attempts),
            grouped(c)
        ),
    }
}

/// Why a saga is where it is: its error, its cancel reason, or, while it is
/// still going, its current step's last error (what it retries after).
fn why(s: &pb::SagaSummary) -> String {
    if !s.error.is_empty() {
        s.error.clone()
    } else if !s.cancel_reason.is_empty() {
        format!("cancelled: {}", s.cancel_reason)
    } else {
        s.current_step
            .as_ref()
            .filter(|_| !crate::cli::output::is_terminal(s.state))
            .map(|step| step.last_error.clone())
            .unwrap_or_default()
    }
}

/// A step's kind when it is not the default (compensatable), as shown.
fn kind_tag(kind: i32) -> Option<&'static str> {
    Some(step_kind_name(kind)).filter(|name| *name != "compensatable")
}

/// The `participants list` table.
pub fn participant_table(participants: &[pb::Participant], palette: &Palette) -> String {
    let participants = &scrubbed(&participants.to_vec());
    if participants.is_empty() {
        return "no participants registered (see `sagad participants register --help`)\n".into();
    }
    let mut table = Table::new(&[
        "NAME",
        "PROTOCOL",
        "FORWARD",
        "COMPENSATE",
        "TIMEOUT",
        "RETRY",
        "LIMITS",
        "REGISTERED BY",
    ]);
    for p in participants {
        table.row(vec![
            (p.name.clone(), Tone::Bold),
            (protocol_name(p.protocol), Tone::Plain),
            (p.forward_endpoint.clone(), Tone::Plain),
            (
                match p.compensate_endpoint.as_str() {
                    "" => "- (cannot be undone)".to_string(),
                    url => url.to_string(),
                },
                Tone::Plain,
            ),
            (
                p.timeout
                    .as_ref()
                    .map(config_duration)
                    .unwrap_or_else(|| "default".into()),
                Tone::Plain,
            ),
            (retry_summary(p.retry.as_ref()), Tone::Plain),
            (limits_summary(p), Tone::Plain),
            (principal(p.registered_by.as_ref()), Tone::Plain),
        ]);
    }
    table.render(palette)
}

/// `2 at once, 50/s`, or `-`.
fn limits_summary(p: &pb::Participant) -> String {
    let mut parts = Vec::new();
    if p.max_in_flight > 0 {
        parts.push(format!("{} at once", p.max_in_flight));
    }
    if !p.rate.is_empty() {
        parts.push(p.rate.clone());
    }
    match parts.is_empty() {
        true => "-".into(),
        false => parts.join(", "),
    }
}

/// `max_attempts=3 initial=100ms`, or `default`.
fn retry_summary(p: Option<&pb::RetryPolicy>) -> String {
    let Some(p) = p else {
        return "default".into();
    };
    let mut parts = Vec::new();
    if let Some(n) = p.max_attempts {
        parts.push(format!("max_attempts={n}"));
    }
    if let Some(d) = &p.max_duration {
        parts.push(format!("max_duration={}", config_duration(d)));
    }
    if let Some(n) = p.max_compensate_attempts {
        parts.push(format!("max_compensate_attempts={n}"));
    }
    if let Some(d) = &p.initial_interval {
        parts.push(format!("initial={}", config_duration(d)));
    }
    if let Some(m) = p.multiplier {
        parts.push(format!("multiplier={m}"));
    }
    if let Some(d) = &p.max_interval {
        parts.push(format!("max_interval={}", config_duration(d)));
    }
    if let Some(j) = p.jitter {
        parts.push(format!("jitter={j}"));
    }
    if parts.is_empty() {
        "default".into()
    } else {
        parts.join(" ")
    }
}

/// The `definitions list` table.
pub fn definition_table(definitions: &[pb::SagaDefinition], palette: &Palette) -> String {
    let definitions = &scrubbed(&definitions.to_vec());
    if definitions.is_empty() {
        return "no definitions loaded (start the server with --sagas DIR)\n".into();
    }
    let mut table = Table::new(&["NAME", "STEPS (participant)", "DEADLINE", "DESCRIPTION"]);
    for d in definitions {
        let steps = d
            .steps
            .iter()
            .map(|s| match kind_tag(s.kind) {
                Some(kind) => format!("{} ({}, {kind})", s.name, s.participant),
                None => format!("{} ({})", s.name, s.participant),
            })
            .collect::<Vec<_>>()
            .join(" → ");
        table.row(vec![
            (d.name.clone(), Tone::Bold),
            (steps, Tone::Plain),
            (
                d.deadline
                    .as_ref()
                    .map(config_duration)
                    .unwrap_or_else(|| "-".into()),
                Tone::Plain,
            ),
            (d.description.clone(), Tone::Plain),
        ]);
    }
    table.render(palette)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(action: pb::Action, number: u32, ms: i64) -> pb::Attempt {
        pb::Attempt {
            action: action as i32,
            number,
            outcome: pb::AttemptOutcome::Succeeded as i32,
            started_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000 + ms / 1000,
                nanos: (ms % 1000) as i32 * 1_000_000,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_step_never_reached_is_marked_as_not_compensated() {
        use pb::Action::{Compensate, Forward};
        let failed = |action, number, ms, outcome: pb::AttemptOutcome| pb::Attempt {
            outcome: outcome as i32,
            error: "cannot reach http://127.0.0.1:9".into(),
            ..attempt(action, number, ms)
        };
        let saga = pb::Saga {
            state: pb::SagaState::Compensated as i32,
            steps: vec![
                pb::Step {
                    name: "validate".into(),
                    attempts: vec![attempt(Forward, 1, 0), attempt(Compensate, 1, 300)],
                    ..Default::default()
                },
                pb::Step {
                    name: "charge".into(),
                    attempts: vec![
                        failed(Forward, 1, 10, pb::AttemptOutcome::NotDelivered),
                        failed(Forward, 2, 200, pb::AttemptOutcome::NotDelivered),
                    ],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let text = timeline(&saga, &Palette::plain());
        let marked: Vec<&str> = text.lines().filter(|l| l.contains('◀')).collect();
        assert_eq!(marked.len(), 1, "{text}");
        assert!(
            marked[0].contains("charge") && marked[0].contains("forward #2"),
            "{text}"
        );
        assert!(marked[0].contains("NOT_DELIVERED"), "{text}");
        assert!(
            marked[0].contains("never reached: not compensated"),
            "{text}"
        );
    }

    #[test]
    fn elided_attempts_are_one_row_where_they_began_and_still_count() {
        use pb::Action::Forward;
        let failed = |number, ms, outcome: pb::AttemptOutcome| pb::Attempt {
            outcome: outcome as i32,
            error: "cannot reach http://127.0.0.1:9".into(),
            ..attempt(Forward, number, ms)
        };
        let at = |ms: i64| {
            Some(prost_types::Timestamp {
                seconds: 1_700_000_000 + ms / 1000,
                nanos: (ms % 1000) as i32 * 1_000_000,
            })
        };
        let elided = |not_delivered| pb::AttemptsSummary {
            count: 9_998,
            forward: 9_998,
            not_delivered,
            first_error: "connection refused".into(),
            last_error: "reset by peer".into(),
            first_started_at: at(10),
            last_finished_at: at(99_000),
        };
        let saga = |not_delivered| pb::Saga {
            id: "s-1".into(),
            state: pb::SagaState::Compensated as i32,
            steps: vec![
                pb::Step {
                    name: "validate".into(),
                    attempts: vec![attempt(Forward, 1, 0)],
                    ..Default::default()
                },
                pb::Step {
                    name: "charge".into(),
                    forward_attempts: 10_000,
                    attempts: vec![
                        failed(9_999, 99_100, pb::AttemptOutcome::NotDelivered),
                        failed(10_000, 99_200, pb::AttemptOutcome::NotDelivered),
                    ],
                    elided_attempts: Some(elided(not_delivered)),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let text = timeline(&saga(9_998), &Palette::plain());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "a header, 3 attempts, 1 summary: {text}");
        let summary = lines[2];
        assert!(
            summary.contains("charge") && summary.contains("forward #1–9998"),
            "{text}"
        );
        assert!(
            summary.contains(
                "… 9,998 earlier attempts: first error connection refused, last error reset by peer"
            ) && summary.contains("sagad get s-1 --all-attempts"),
            "{text}"
        );
        assert!(lines[4].contains("forward #10000"), "{text}");
        assert!(
            lines[4].contains("never reached: not compensated"),
            "every attempt, elided or not, was not delivered: {text}"
        );
        // One elided attempt was delivered: the step may have done something.
        let text = timeline(&saga(9_997), &Palette::plain());
        let marked = text.lines().find(|l| l.contains('◀')).unwrap();
        assert!(
            marked.contains("forward #10000") && !marked.contains("never reached"),
            "{text}"
        );
        // The step table still counts every attempt.
        let view = super::saga(&saga(9_998), &Palette::plain());
        assert!(
            view.lines()
                .any(|l| l.trim_start().starts_with("charge") && l.contains("10000")),
            "{view}"
        );
    }

    #[test]
    fn the_list_shows_the_current_step_and_why() {
        let summary = |state: pb::SagaState, error: &str, step: pb::StepSummary| pb::SagaSummary {
            id: format!("s-{}", step.index),
            definition: "order-fulfillment".into(),
            state: state as i32,
            step_count: 3,
            error: error.into(),
            current_step: Some(step),
            ..Default::default()
        };
        let step = |index, name: &str, forward, compensate, last_error: &str| pb::StepSummary {
            index,
            name: name.into(),
            forward_attempts: forward,
            compensate_attempts: compensate,
            last_error: last_error.into(),
            ..Default::default()
        };
        let text = saga_table(
            &[
                summary(
                    pb::SagaState::Running,
                    "",
                    step(1, "charge-payment", 1_204, 0, "busy"),
                ),
                summary(
                    pb::SagaState::Compensated,
                    "step 'ship-order' was rejected: out of stock",
                    step(0, "validate-order", 1, 1, ""),
                ),
            ],
            &Palette::plain(),
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].contains("STEP") && lines[0].contains("ATTEMPTS"),
            "{text}"
        );
        assert!(
            lines[1].contains("charge-payment (2/3)")
                && lines[1].contains("1,204")
                && lines[1].trim_end().ends_with("busy"),
            "a running saga's why is its step's last error: {text}"
        );
        assert!(
            lines[2].contains("validate-order (1/3)")
                && lines[2].contains("1 + 1 compensate")
                && lines[2].contains("out of stock"),
            "{text}"
        );
    }

    #[test]
    fn a_refresh_shows_where_it_happened_in_the_timeline_and_as_an_event() {
        use pb::Action::{Compensate, Forward};
        let at = |ms: i64| {
            Some(prost_types::Timestamp {
                seconds: 1_700_000_000 + ms / 1000,
                nanos: (ms % 1000) as i32 * 1_000_000,
            })
        };
        let change = pb::EndpointChange {
            step: "charge".into(),
            action: Compensate as i32,
            old_endpoint: "http://127.0.0.1:7002/shop.Payments/Refund".into(),
            new_endpoint: "http://127.0.0.1:7012/shop.Payments/Refund".into(),
            at: at(500),
        };
        let saga = pb::Saga {
            state: pb::SagaState::Compensated as i32,
            steps: vec![pb::Step {
                name: "charge".into(),
                attempts: vec![
                    attempt(Forward, 1, 0),
                    attempt(Compensate, 1, 100),
                    attempt(Compensate, 2, 500),
                ],
                endpoint_changes: vec![change.clone()],
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = timeline(&saga, &Palette::plain());
        let kinds: Vec<&str> = text
            .lines()
            .skip(1)
            .map(|line| line.split_whitespace().nth(2).unwrap())
            .collect();
        assert_eq!(
            kinds,
            ["forward", "compensate", "compensate", "compensate"],
            "{text}"
        );
        let refreshed = text.lines().nth(3).unwrap();
        assert!(refreshed.contains("REFRESHED"), "{text}");
        assert!(
            refreshed.contains("endpoint http://127.0.0.1:7002/shop.Payments/Refund → http://127.0.0.1:7012/shop.Payments/Refund"),
            "{text}"
        );
        assert!(
            text.lines().nth(4).unwrap().contains("compensate #2"),
            "{text}"
        );

        let event = pb::SagaEvent {
            event: Some(pb::saga_event::Event::EndpointsRefreshed(
                pb::EndpointsRefreshed {
                    changes: vec![change],
                },
            )),
            ..Default::default()
        };
        let line = event_line(&event, &Palette::plain());
        assert!(
            line.contains("endpoints refreshed: charge compensate http://127.0.0.1:7002/shop.Payments/Refund → http://127.0.0.1:7012/shop.Payments/Refund"),
            "{line}"
        );
    }

    #[test]
    fn attempts_in_the_same_millisecond_show_in_the_order_they_ran() {
        use pb::Action::{Compensate, Forward};
        let step = |name: &str, attempts: Vec<pb::Attempt>| pb::Step {
            name: name.into(),
            attempts,
            ..Default::default()
        };
        // Everything in one millisecond but the failed retry.
        let saga = pb::Saga {
            steps: vec![
                step(
                    "first",
                    vec![attempt(Forward, 1, 0), attempt(Compensate, 1, 5)],
                ),
                step(
                    "second",
                    vec![attempt(Forward, 1, 0), attempt(Compensate, 1, 5)],
                ),
                step(
                    "third",
                    vec![
                        attempt(Forward, 1, 0),
                        attempt(Forward, 2, 5),
                        attempt(Compensate, 1, 5),
                    ],
                ),
            ],
            ..Default::default()
        };
        let text = timeline(&saga, &Palette::plain());
        let order: Vec<String> = text
            .lines()
            .skip(1)
            .map(|line| {
                let mut words = line.split_whitespace().skip(1);
                format!("{} {}", words.next().unwrap(), words.next().unwrap())
            })
            .collect();
        assert_eq!(
            order,
            [
                "first forward",
                "second forward",
                "third forward",
                "third forward",
                "third compensate",
                "second compensate",
                "first compensate"
            ],
            "{text}"
        );
    }
}
