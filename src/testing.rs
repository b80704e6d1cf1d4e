//! Events to test with: the histories the journal, feed, index, archive and
//! engine tests build their cases from, written once.

use std::time::Duration;

use crate::saga::{
    Action, Endpoint, Event, EventKind, Offset, RetryPolicy, SagaId, StepSpec, Timestamp,
    TraceContext,
};

/// A step of participant `p`, on endpoints nothing listens on. Its policy has
/// no time budget, as every journal format version can hold it: tests write
/// these events as older builds did, and read them back unchanged.
pub fn spec(name: &str) -> StepSpec {
    StepSpec {
        name: name.into(),
        participant: "p".into(),
        kind: crate::saga::StepKind::Compensatable,
        forward: Endpoint::parse("f", "http://127.0.0.1:1/p.S/Do").unwrap(),
        compensate: Some(Endpoint::parse("c", "http://127.0.0.1:1/p.S/Undo").unwrap()),
        retry: RetryPolicy {
            max_duration: None,
            ..RetryPolicy::default()
        },
        timeout: Duration::from_secs(1),
        input: None,
    }
}

/// The `SagaStarted` event of a fresh one-step saga.
pub fn started(definition: &str, key: Option<&str>) -> Event {
    Event {
        saga: SagaId::generate(),
        seq: 1,
        offset: Offset::ZERO,
        at: Timestamp::now(),
        kind: EventKind::SagaStarted {
            definition: definition.into(),
            inline_steps: None,
            steps: vec![spec("only")],
            payload: br#"{"order_id":1}"#.to_vec(),
            idempotency_key: key.map(str::to_string),
            // Journaled like every other field: reads must give it back.
            trace: Some(Box::new(
                TraceContext::parse(
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                    Some("congo=t61rcWkgMzE"),
                )
                .expect("a valid traceparent"),
            )),
            // None, so older formats' writers (which have no principals) take it.
            started_by: None,
            start_at: None,
            deadline: None,
        },
    }
}

/// Event `seq` of `saga`.
pub fn next(saga: SagaId, seq: u64, kind: EventKind) -> Event {
    Event {
        saga,
        seq,
        offset: Offset::ZERO,
        at: Timestamp::now(),
        kind,
    }
}

pub fn attempt(step_seq: u32) -> EventKind {
    EventKind::AttemptStarted {
        step: 0,
        action: Action::Forward,
        attempt: step_seq,
    }
}

/// The events of a one-step saga that completes, timed from `at` (ms) on.
pub fn completing(key: Option<&str>, at: u64) -> Vec<Event> {
    let first = started("shop", key);
    let id = first.saga;
    let kinds = [
        attempt(1),
        EventKind::AttemptSucceeded {
            step: 0,
            action: Action::Forward,
            attempt: 1,
            output: b"{}".to_vec(),
        },
        EventKind::SagaCompleted,
    ];
    let mut events = vec![first];
    events.extend(
        kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| next(id, i as u64 + 2, kind)),
    );
    for (i, e) in events.iter_mut().enumerate() {
        e.at = Timestamp(at + i as u64);
    }
    events
}

/// The events of a saga of `definition` that is cancelled, compensates and
/// ends with `last`.
pub fn cancelled(definition: &str, key: Option<&str>, last: EventKind) -> Vec<Event> {
    let first = started(definition, key);
    let id = first.saga;
    vec![
        first,
        next(
            id,
            2,
            EventKind::CancelRequested {
                reason: "r".into(),
                by: None,
            },
        ),
        next(id, 3, EventKind::CompensationStarted { reason: "r".into() }),
        next(id, 4, last),
    ]
}

/// The events of a saga that ends with `last` after compensating, timed from `at`.
pub fn turning_back(last: EventKind, at: u64) -> Vec<Event> {
    let mut events = cancelled("shop", None, last);
    for (i, e) in events.iter_mut().enumerate() {
        e.at = Timestamp(at + i as u64);
    }
    events
}

/// How many cases each fuzz target runs: `SAGAD_FUZZ_CASES` (the knob for
/// long runs), else [`FUZZ_CASES`], a fixed number, so `cargo test` does the
/// same work every time. Failures are not persisted to files: a failing case
/// is printed, minimised, and becomes a plain test.
pub fn fuzz_runner() -> proptest::test_runner::TestRunner {
    proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: fuzz_cases(),
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    })
}

/// Cases a fuzz target runs in `cargo test`.
pub const FUZZ_CASES: u32 = 256;

/// The number of cases [`fuzz_runner`] runs.
pub fn fuzz_cases() -> u32 {
    std::env::var("SAGAD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(FUZZ_CASES)
}

/// Runs `test` on `cases` inputs of `strategy`, naming the target in the
/// count it prints and in a failure.
pub fn fuzz<S: proptest::strategy::Strategy>(
    target: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), proptest::test_runner::TestCaseError>,
) {
    let mut runner = fuzz_runner();
    if let Err(e) = runner.run(&strategy, test) {
        panic!("fuzz target {target}: {e}");
    }
    println!("fuzz target {target}: {} cases", fuzz_cases());
}

/// `bytes` damaged by `edits`: each `(at, xor)` flips bits of the byte at
/// `at` (modulo the length), then the result is cut to `cut` bytes, if
/// shorter, and `tail` appended.
pub fn damaged(bytes: &[u8], edits: &[(usize, u8)], cut: Option<usize>, tail: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if !out.is_empty() {
        for &(at, xor) in edits {
            let at = at % out.len();
            out[at] ^= xor;
        }
    }
    if let Some(cut) = cut {
        out.truncate(cut);
    }
    out.extend_from_slice(tail);
    out
}
