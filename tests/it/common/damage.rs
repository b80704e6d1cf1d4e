//! Damaging data directories on purpose: a journal of known sagas built
//! through the library, copies of a directory, flipped bytes, and an open
//! that says what it found. Shared by `damaged_journal`, `store_damage` and
//! `read_only`.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use sagad::{
    journal::{Journal, JournalError, SledJournal, StoreError, store::WalOptions},
    saga::{
        Action, Endpoint, Event, EventKind, Failure, Offset, RetryPolicy, SagaId, StepSpec,
        Timestamp,
    },
};

use super::DEADLINE;

/// Sagas [`build`] writes.
pub const SAGAS: usize = 40;

/// Every saga acknowledged, with its events' kinds.
pub type Acknowledged = Vec<(SagaId, Vec<EventKind>)>;

/// A step of participant `p`, on endpoints nothing listens on.
pub fn step(name: &str) -> StepSpec {
    StepSpec {
        name: name.into(),
        participant: "p".into(),
        kind: sagad::saga::StepKind::Compensatable,
        forward: Endpoint::parse("f", "http://127.0.0.1:1/p.S/Do").unwrap(),
        compensate: Some(Endpoint::parse("c", "http://127.0.0.1:1/p.S/Undo").unwrap()),
        retry: RetryPolicy::default(),
        timeout: Duration::from_secs(1),
        input: None,
    }
}

fn event(saga: SagaId, seq: u64, kind: EventKind) -> Event {
    Event {
        saga,
        seq,
        offset: Offset::ZERO,
        at: Timestamp::now(),
        kind,
    }
}

/// Writes [`SAGAS`] sagas one append at a time (one log record each), each
/// waiting for its second attempt, and returns what was acknowledged. With
/// sparse segments only, so every record stays in one segment: a
/// zero-filled spare that became ready part-way would take the rest, and
/// the damage done to the log is done to one segment.
pub async fn build(dir: &Path) -> Acknowledged {
    let options = WalOptions {
        zero_filled_segments: false,
        ..WalOptions::default()
    };
    let journal = SledJournal::open_with(dir, options).unwrap();
    let mut acknowledged = Vec::new();
    for i in 0..SAGAS {
        let id = SagaId::generate();
        let kinds = vec![
            EventKind::SagaStarted {
                definition: "shop".into(),
                inline_steps: None,
                steps: vec![step("a"), step("b")],
                payload: format!(r#"{{"order":{i}}}"#).into_bytes(),
                idempotency_key: Some(format!("order-{i}")),
                trace: None,
                started_by: None,
                start_at: None,
                deadline: None,
            },
            EventKind::AttemptStarted {
                step: 0,
                action: Action::Forward,
                attempt: 1,
            },
            EventKind::AttemptFailed {
                step: 0,
                action: Action::Forward,
                attempt: 1,
                failure: Failure::Transient,
                error: "unavailable".into(),
                // Far ahead: a server started on the journal leaves them be.
                retry_at: Some(Timestamp::now().plus(Duration::from_secs(3600))),
            },
        ];
        journal
            .append(vec![event(id, 1, kinds[0].clone())])
            .await
            .unwrap();
        journal
            .append(vec![
                event(id, 2, kinds[1].clone()),
                event(id, 3, kinds[2].clone()),
            ])
            .await
            .unwrap();
        acknowledged.push((id, kinds));
    }
    journal.close().await.unwrap();
    acknowledged
}

/// Copies everything under `from` into `to`, modes and all.
pub fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// The one file in `dir` with `extension`.
pub fn only_file(dir: &Path, extension: &str) -> PathBuf {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.remove(0)
}

/// Where the data ends in a preallocated file (a log segment, sled's file).
pub fn records_end(file: &Path) -> usize {
    let bytes = std::fs::read(file).unwrap();
    bytes.iter().rposition(|b| *b != 0).unwrap() + 1
}

/// Flips bits of the byte at `at` of `file` (`mask` again undoes it).
pub fn flip(file: &Path, at: usize, mask: u8) {
    let mut bytes = std::fs::read(file).unwrap();
    bytes[at] ^= mask;
    std::fs::write(file, &bytes).unwrap();
}

/// `open` again while it finds the directory locked, up to [`DEADLINE`].
///
/// In this test process a directory just closed can look locked for a
/// moment: a child another test spawns at that instant (`cp`, `sagad`)
/// holds a copy of every descriptor until its exec closes them, the lock's
/// among them (a `flock` belongs to the open file, not to the process).
pub fn unlocked<T>(open: impl Fn() -> Result<T, JournalError>) -> Result<T, JournalError> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match open() {
            Err(JournalError::Open(StoreError::Locked { .. })) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Opens the (damaged) directory as a server would: `Err(message)` if
/// refused (a panic counts, with its message), or how many acknowledged
/// sagas read back exactly.
pub async fn open(dir: &Path, acknowledged: &Acknowledged) -> Result<usize, String> {
    let dir = dir.to_path_buf();
    // No spare segment: zero-filling 32 MiB at every open is most of a
    // test's time here, and no test of damage needs one.
    let options = WalOptions {
        zero_filled_segments: false,
        ..WalOptions::default()
    };
    let opened = tokio::task::spawn_blocking(move || {
        std::panic::catch_unwind(|| unlocked(|| SledJournal::open_with(&dir, options.clone())))
            .map_err(|p| {
                p.downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| "sled panicked".into())
            })
    })
    .await
    .unwrap();
    let journal = match opened {
        Ok(Ok(journal)) => journal,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(panic) => return Err(format!("panicked: {panic}")),
    };
    let mut intact = 0;
    for (id, kinds) in acknowledged {
        let events = journal.read_saga(*id).await.map_err(|e| e.to_string())?;
        let read: Vec<EventKind> = events.into_iter().map(|e| e.kind).collect();
        if &read == kinds {
            intact += 1;
        }
    }
    journal.close().await.ok();
    Ok(intact)
}
