//! Seeding a data directory with many sagas, fast, exactly as the coordinator
//! would have journaled them: the `seed` verb, and the first step of `scale`.
//!
//! Starting a million sagas through the gRPC API would take ten minutes, so the
//! seeder writes the journal directly, through the library's own
//! [`SledJournal`] and [`Journal::append`]. What it writes is what a coordinator
//! running the bench's W1 saga would have written, because it is made by the
//! same code:
//!
//! - each saga's history comes from the engine's pure functions ([`decide`],
//!   [`attempt_finished`], [`SagaState::apply`]), driven the way the engine's
//!   runner drives them, with a scripted participant answering each call;
//! - the events go to the journal in the runner's groups: everything recorded
//!   since the last append is appended before a call, a wait or the end. A
//!   finished W1 saga is four appends (started + first attempt; result + next
//!   attempt; result + next attempt; last result + completed), a saga waiting in
//!   backoff two (started + first attempt; the transient failure with its due time);
//! - the step snapshot is the bench definition resolved against the three bench
//!   participants, which are registered in the same journal (their endpoints
//!   point at [`PARTICIPANT_BASE_PORT`] and the next ports on 127.0.0.1);
//! - many sagas are seeded at once ([`SEED_LANES`] tasks), so the journal's
//!   group commit lets many appends share one flush, as under load;
//! - when finished sagas move into the history tier as seeding goes, seeding
//!   holds back while more than [`MOVE_LAG_MAX`] finished sagas wait for the
//!   mover: the seed writes faster than a busy server (25k sagas/s against a
//!   mover's 9k/s here), and a server whose store held millions of finished
//!   sagas is not the long-running server the seed stands for.
//!
//! A waiting saga's participant asked to retry in [`WAIT_RETRY_AFTER`]: the
//! engine journals the due time `now + 1 h` (the hint outweighs the backoff),
//! so a coordinator started on the directory resumes the saga and it waits.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use sagad::{
    archive::{Mover, mover::SEGMENT_SAGAS_MAX},
    journal::{JOURNAL_BATCH_MAX, Journal, SledJournal},
    saga::{
        CallOutcome, Decision, Event, EventKind, Offset, Participant, Principal, RetryOverrides,
        SagaId, SagaState, StepDefaults, StepSpec, Timestamp, attempt_finished, decide, definition,
    },
};

use crate::{
    SeedArgs,
    run::{DEFINITION, STEPS, definition_toml, prepare_empty_dir, registered_name},
};

/// Sagas seeded concurrently: as many as one journal flush takes, so every
/// flush is full while the seed runs.
pub const SEED_LANES: usize = JOURNAL_BATCH_MAX;
/// The port of the first bench participant in the seeded step snapshots (the
/// others take the next ports). Nothing needs to listen there: no seeded saga
/// calls a participant within the hour.
pub const PARTICIPANT_BASE_PORT: u16 = 7101;
/// The `retry_after` a waiting saga's participant answered.
pub const WAIT_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// The caller every seeded saga records (a loopback client of a server
/// without authentication), so seeded records are the size real ones are.
const SEED_PEER: ([u8; 4], u16) = ([127, 0, 0, 1], 40_000);
/// Most seeded sagas not yet moved into the history tier before seeding
/// waits for the mover: a few segments, as a server whose mover keeps up.
pub const MOVE_LAG_MAX: usize = 3 * SEGMENT_SAGAS_MAX;
/// How often seeding progress is shown on stderr.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// How the participants answer a seeded saga's calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Script {
    /// Every forward call succeeds: the saga is COMPLETED.
    Complete,
    /// The first call asks to retry in [`WAIT_RETRY_AFTER`]: the saga is
    /// RUNNING, waiting in backoff.
    WaitInBackoff,
}

/// What a seed wrote.
pub struct Seeded {
    /// The seeded sagas' ids, in no particular order.
    pub ids: Vec<SagaId>,
    /// From opening the journal to closing it.
    pub took: Duration,
}

/// The bench participants as registered in a seeded journal.
pub fn participants() -> anyhow::Result<Vec<Participant>> {
    STEPS
        .iter()
        .enumerate()
        .map(|(i, (_, service))| {
            let base = format!(
                "http://127.0.0.1:{}/sagad.v1.ParticipantService",
                PARTICIPANT_BASE_PORT + i as u16
            );
            Participant::new(
                &registered_name(service),
                &format!("{base}/Forward"),
                &format!("{base}/Compensate"),
                // A forward time budget beyond the hour a waiting saga is
                // asked to wait, which would otherwise end it.
                RetryOverrides {
                    max_duration: Some(2 * WAIT_RETRY_AFTER),
                    ..RetryOverrides::default()
                },
                None,
                Timestamp::now(),
            )
            .map_err(anyhow::Error::from)
        })
        .collect()
}

/// The bench definition's step snapshot: the definition file the coordinator
/// is given, parsed and resolved as the engine does at StartSaga (server
/// defaults for retry and timeout).
pub fn step_snapshot(participants: &[Participant]) -> anyhow::Result<Vec<StepSpec>> {
    let file = format!("{DEFINITION}.toml");
    let definition = definition::parse_definition(Path::new(&file), &definition_toml())?;
    let registry = participants
        .iter()
        .map(|p| (p.name.clone(), p.clone()))
        .collect();
    Ok(definition::resolve(
        &definition.steps,
        &registry,
        &StepDefaults::default(),
    )?)
}

/// One saga's history, as the appends the engine's runner would make, in order.
pub fn history(
    steps: &[StepSpec],
    payload: Vec<u8>,
    script: Script,
) -> anyhow::Result<Vec<Vec<Event>>> {
    let started = Event {
        saga: SagaId::generate(),
        seq: 1,
        offset: Offset::ZERO,
        at: Timestamp::now(),
        kind: EventKind::SagaStarted {
            definition: DEFINITION.into(),
            inline_steps: None,
            steps: steps.to_vec(),
            payload,
            idempotency_key: None,
            trace: None,
            // As a server without authentication journals its callers.
            started_by: Some(Box::new(Principal::anonymous(Some(SEED_PEER.into())))),
            start_at: None,
            deadline: None,
        },
    };
    let mut state = SagaState::start(&started)?;
    let mut pending = vec![started];
    let mut appends = Vec::new();
    // The runner's loop (`engine/runner.rs`), with the call answered by `script`.
    loop {
        match decide(&state, Timestamp::now()) {
            Decision::Record(kind) => record(&mut state, &mut pending, kind)?,
            Decision::Call {
                step,
                action,
                attempt,
            } => {
                appends.push(std::mem::take(&mut pending));
                let outcome = match script {
                    Script::Complete => CallOutcome::Succeeded { output: Vec::new() },
                    Script::WaitInBackoff => CallOutcome::Transient {
                        reason: "sagad-bench scale: the participant asked to retry".into(),
                        retry_after: Some(WAIT_RETRY_AFTER),
                    },
                };
                let kind = attempt_finished(
                    &state,
                    step,
                    action,
                    attempt,
                    outcome,
                    Timestamp::now(),
                    fastrand::f64(),
                );
                record(&mut state, &mut pending, kind)?;
            }
            // The runner would journal what is pending and wait (or stop): the
            // seeded saga stays here.
            Decision::WaitUntil(_) | Decision::Finished => {
                if !pending.is_empty() {
                    appends.push(pending);
                }
                return Ok(appends);
            }
        }
    }
}

/// Applies a transition and queues it for the next append, as the runner does.
fn record(state: &mut SagaState, pending: &mut Vec<Event>, kind: EventKind) -> anyhow::Result<()> {
    let event = Event {
        saga: state.id,
        seq: state.last_seq + 1,
        offset: Offset::ZERO,
        at: Timestamp::now(),
        kind,
    };
    state.apply(&event)?;
    pending.push(event);
    Ok(())
}

/// The payload of seeded saga `i`, shaped like the load's W1 payloads.
fn payload(script: Script, i: usize) -> Vec<u8> {
    let tag = match script {
        Script::Complete => "scale-finished",
        Script::WaitInBackoff => "scale-waiting",
    };
    format!(r#"{{"order_id":"{tag}-{i:07}","workload":"W1"}}"#).into_bytes()
}

/// The `seed` verb: finished sagas, then waiting ones, into one new directory.
pub async fn run(args: SeedArgs) -> anyhow::Result<()> {
    prepare_empty_dir(&args.data_dir)?;
    for (script, count) in [
        (Script::Complete, args.finished),
        (Script::WaitInBackoff, args.waiting),
    ] {
        if count > 0 {
            let seeded = seed(&args.data_dir, script, count, !args.keep_in_store).await?;
            eprintln!(
                "sagad-bench: seeded {count} sagas ({script:?}) into {} in {:.1} s",
                args.data_dir.display(),
                seeded.took.as_secs_f64()
            );
        }
    }
    Ok(())
}

/// Seeds `count` sagas following `script` into the journal in `dir` (created
/// if absent; the bench participants are registered there too), then closes it.
/// With `to_history`, finished sagas move into the history tier as seeding
/// goes, a segment at a time, as a long-running coordinator's mover takes
/// them (so sled never holds more than a few segments' worth).
pub async fn seed(
    dir: &Path,
    script: Script,
    count: usize,
    to_history: bool,
) -> anyhow::Result<Seeded> {
    let began = Instant::now();
    let journal = {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || SledJournal::open(&dir))
    }
    .await?
    .with_context(|| format!("opening the journal in {}", dir.display()))?;
    let journal = Arc::new(journal);
    let participants = participants()?;
    let steps = Arc::new(step_snapshot(&participants)?);
    for p in participants {
        journal.put_participant(p).await?;
    }

    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    // How many the mover has taken; without a mover, nobody waits for it.
    let (moved_tx, moved_rx) = tokio::sync::watch::channel(if to_history { 0 } else { count });
    let mut lanes = tokio::task::JoinSet::new();
    for _ in 0..SEED_LANES.min(count) {
        let (journal, steps, next, done) =
            (journal.clone(), steps.clone(), next.clone(), done.clone());
        let mut moved = moved_rx.clone();
        lanes.spawn(async move {
            let mut ids = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return anyhow::Ok(ids);
                }
                // Fails only once the mover is gone, and then it failed:
                // its error is the one reported.
                if moved.wait_for(|&m| i < m + MOVE_LAG_MAX).await.is_err() {
                    return anyhow::Ok(ids);
                }
                let appends = history(&steps, payload(script, i), script)?;
                ids.push(appends[0][0].saga);
                for events in appends {
                    journal.append(events).await?;
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let progress = {
        let done = done.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            loop {
                tokio::time::sleep(PROGRESS_INTERVAL).await;
                let n = done.load(Ordering::Relaxed);
                eprintln!(
                    "sagad-bench: seeded {n} of {count} sagas ({:.0}/s)",
                    n as f64 / started.elapsed().as_secs_f64()
                );
            }
        })
    };
    // As the mover would, while the lanes run: whole segments only.
    let stop_moving = tokio_util::sync::CancellationToken::new();
    let moving = to_history.then(|| {
        let mover = Mover::new(journal.clone(), Duration::ZERO).with_at_least(SEGMENT_SAGAS_MAX);
        let stop = stop_moving.clone();
        tokio::spawn(async move {
            let mut moved = 0;
            while !stop.is_cancelled() {
                moved += mover.pass(Timestamp::now(), &stop).await?.sagas;
                moved_tx.send_replace(moved);
                tokio::select! {
                    () = tokio::time::sleep(PROGRESS_INTERVAL) => {}
                    () = stop.cancelled() => {}
                }
            }
            anyhow::Ok(moved)
        })
    });
    let mut ids = Vec::with_capacity(count);
    let mut failure = None;
    while let Some(lane) = lanes.join_next().await {
        match lane? {
            Ok(lane_ids) => ids.extend(lane_ids),
            Err(e) => {
                failure.get_or_insert(e);
                lanes.abort_all();
            }
        }
    }
    progress.abort();
    stop_moving.cancel();
    if let Some(moving) = moving {
        let mut moved = moving.await??;
        // What is left, however few.
        let rest = Mover::new(journal.clone(), Duration::ZERO).with_at_least(1);
        let never = tokio_util::sync::CancellationToken::new();
        moved += rest.pass(Timestamp::now(), &never).await?.sagas;
        eprintln!("sagad-bench: moved {moved} finished sagas into the history tier");
    }
    journal.close().await?;
    // The journal's files are released (the directory's lock too) on drop.
    drop(journal);
    if let Some(e) = failure {
        return Err(e.context(format!("seeding {}", dir.display())));
    }
    if ids.len() != count {
        bail!("seeded {} sagas where {count} were asked", ids.len());
    }
    Ok(Seeded {
        ids,
        took: began.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use sagad::saga::{Action, Failure, SagaStatus};

    use super::*;

    fn steps() -> Vec<StepSpec> {
        step_snapshot(&participants().unwrap()).unwrap()
    }

    fn kinds(appends: &[Vec<Event>]) -> Vec<Vec<&'static str>> {
        appends
            .iter()
            .map(|a| a.iter().map(|e| e.kind.name()).collect())
            .collect()
    }

    #[test]
    fn a_finished_saga_is_four_appends_as_the_runner_groups_them() {
        let appends = history(&steps(), b"{}".to_vec(), Script::Complete).unwrap();
        assert_eq!(
            kinds(&appends),
            [
                vec!["SagaStarted", "AttemptStarted"],
                vec!["AttemptSucceeded", "AttemptStarted"],
                vec!["AttemptSucceeded", "AttemptStarted"],
                vec!["AttemptSucceeded", "SagaCompleted"],
            ]
        );
        let events: Vec<Event> = appends.concat();
        let state = SagaState::fold(&events).unwrap();
        assert_eq!(state.status, SagaStatus::Completed);
        assert_eq!(state.steps.len(), 3);
        assert!(
            state.steps[0]
                .forward
                .url()
                .starts_with("http://127.0.0.1:")
        );
    }

    #[test]
    fn a_waiting_saga_failed_its_first_attempt_and_is_due_in_an_hour() {
        let before = Timestamp::now();
        let appends = history(&steps(), b"{}".to_vec(), Script::WaitInBackoff).unwrap();
        assert_eq!(
            kinds(&appends),
            [vec!["SagaStarted", "AttemptStarted"], vec!["AttemptFailed"]]
        );
        match &appends[1][0].kind {
            EventKind::AttemptFailed {
                step: 0,
                action: Action::Forward,
                attempt: 1,
                failure: Failure::Transient,
                retry_at: Some(due),
                ..
            } => assert!(*due >= before.plus(WAIT_RETRY_AFTER)),
            other => panic!("unexpected {other:?}"),
        }
        let state = SagaState::fold(&appends.concat()).unwrap();
        assert_eq!(state.status, SagaStatus::Running);
        assert!(matches!(
            decide(&state, Timestamp::now()),
            Decision::WaitUntil(_)
        ));
    }
}
