//! Damage in the store's files after a clean stop, when the log has been
//! checkpointed into sled and sled's files are the only copy of the
//! journal: one flipped byte at dozens of places of `journal/db` (its
//! segment header, its messages, the unused space after them), of sled's
//! snapshot and of its settings file.
//!
//! For every place the outcome must be one of: the journal opens and every
//! saga reads back exactly; or the open is refused with a message that
//! names the damaged file, says the store is corrupt and whether the log can
//! rebuild it (never a panic, never sled's `Read corrupted data at file
//! offset None`), and then `sagad journal salvage` writes a directory that
//! opens, holding every saga it says it carried exactly as acknowledged,
//! and naming every saga it could not carry. A real `sagad` refuses the
//! damaged directory and serves the salvaged one.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Command, Output},
};

use sagad::{
    journal::{Salvage, SledJournal},
    proto::v1 as pb,
    saga::SagaId,
};
use tonic::Code;

use crate::common::{
    damage::{Acknowledged, SAGAS, build, copy_dir, flip, open, records_end, unlocked},
    process::SagadProcess,
};

/// A journal of [`SAGAS`] sagas, stopped cleanly twice: the second open
/// replayed nothing, checkpointed, and started an empty log, so the store
/// is the only copy of every saga.
async fn stopped_twice(dir: &Path) -> Acknowledged {
    let acknowledged = build(dir).await;
    assert_eq!(open(dir, &acknowledged).await, Ok(SAGAS));
    acknowledged
}

/// sled's snapshot file in `dir`'s journal.
fn snapshot_file(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("snap.")
        })
        .expect("sled wrote a snapshot at the second open")
}

/// The places flipped: (file under `journal/`, byte).
fn places(dir: &Path) -> Vec<(String, usize)> {
    let db = dir.join("journal/db");
    let end = records_end(&db);
    let size = std::fs::metadata(&db).unwrap().len() as usize;
    // The segment header, then messages all through the data, then the
    // unused (zero-filled) rest of the segment.
    let mut places: Vec<(String, usize)> = [0, 5, 13, 19]
        .into_iter()
        .chain((0..40).map(|n| 20 + n * (end - 20) / 40))
        .chain([end - 1, end + 7, size / 2, size - 1])
        .map(|at| ("db".to_string(), at))
        .collect();
    let snapshot = snapshot_file(dir);
    let name = snapshot.file_name().unwrap().to_string_lossy().to_string();
    let len = std::fs::metadata(&snapshot).unwrap().len() as usize;
    places.extend([0, len / 2, len - 1].map(|at| (name.clone(), at)));
    places.extend([3, 40].map(|at| ("conf".to_string(), at)));
    places
}

/// What became of one flipped byte.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// It opened and every saga read back exactly.
    Harmless,
    /// Refused; the salvage carried everything.
    SalvagedWhole,
    /// Refused; the salvage carried some and named the rest.
    SalvagedWithLosses,
}

/// Salvages `dir` into `out` and holds the result to the promise: every
/// saga carried reads back exactly, every acknowledged saga not carried is
/// named, and nothing is named that was not acknowledged.
async fn salvage_and_verify(
    dir: &Path,
    out: &Path,
    acknowledged: &Acknowledged,
    what: &str,
) -> Salvage {
    let from = dir.to_path_buf();
    let salvage = tokio::task::spawn_blocking(move || unlocked(|| SledJournal::salvage(&from)))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{what}: salvage failed: {e}"));
    salvage
        .write(out)
        .await
        .unwrap_or_else(|e| panic!("{what}: writing the salvage failed: {e}"));
    let report = &salvage.report;
    let named: BTreeSet<SagaId> = report.not_carried().collect();
    let ids: BTreeSet<SagaId> = acknowledged.iter().map(|(id, _)| *id).collect();
    assert!(
        named.is_subset(&ids),
        "{what}: names sagas never written: {report}"
    );
    let carried: Acknowledged = acknowledged
        .iter()
        .filter(|(id, _)| !named.contains(id))
        .cloned()
        .collect();
    assert_eq!(
        report.sagas,
        carried.len(),
        "{what}: a saga neither carried nor named: {report}"
    );
    assert_eq!(
        open(out, &carried).await,
        Ok(carried.len()),
        "{what}: a carried saga does not read back exactly: {report}"
    );
    salvage
}

#[tokio::test]
async fn a_flip_anywhere_in_the_store_reads_back_or_is_named_and_salvaged() {
    let original = tempfile::tempdir().unwrap();
    let acknowledged = stopped_twice(original.path()).await;
    let mut outcomes: BTreeMap<Outcome, Vec<String>> = BTreeMap::new();
    for (file, at) in places(original.path()) {
        let what = format!("{file} byte {at}");
        let copy = tempfile::tempdir().unwrap();
        copy_dir(original.path(), copy.path());
        let damaged = copy.path().join("journal").join(&file);
        flip(&damaged, at, 0x55);
        let outcome = match open(copy.path(), &acknowledged).await {
            Ok(intact) => {
                assert_eq!(
                    intact, SAGAS,
                    "{what}: opened with sagas missing or altered"
                );
                Outcome::Harmless
            }
            Err(message) => {
                assert!(
                    message.contains(&damaged.display().to_string()),
                    "{what}: the refusal does not name the file: {message}"
                );
                assert!(
                    message.contains("the journal's store is corrupt"),
                    "{what}: {message}"
                );
                assert!(
                    message.contains("so the log cannot rebuild it")
                        || message.contains("so it can rebuild the store"),
                    "{what}: the refusal does not say whether the log can rebuild the store: {message}"
                );
                assert!(
                    !message.contains("file offset None") && !message.contains("panicked"),
                    "{what}: sled's own words: {message}"
                );
                let out = tempfile::tempdir().unwrap();
                let salvage =
                    salvage_and_verify(copy.path(), out.path(), &acknowledged, &what).await;
                assert!(
                    salvage.findings.iter().any(|f| f.file == damaged),
                    "{what}: the salvage does not name the damage: {:?}",
                    salvage.findings
                );
                match salvage.is_lossless() {
                    true => Outcome::SalvagedWhole,
                    false => Outcome::SalvagedWithLosses,
                }
            }
        };
        outcomes.entry(outcome).or_default().push(what);
    }
    // What was measured, for whoever reads the test's output.
    for (outcome, places) in &outcomes {
        eprintln!(
            "{outcome:?}: {} places: {}",
            places.len(),
            places.join(", ")
        );
    }
    // The flips reach every kind of outcome: dead data, data sled refuses
    // whole (a copy steps around it), and live pages whose keys are lost.
    for outcome in [
        Outcome::Harmless,
        Outcome::SalvagedWhole,
        Outcome::SalvagedWithLosses,
    ] {
        assert!(
            outcomes.contains_key(&outcome),
            "no flip was {outcome:?}: {outcomes:?}"
        );
    }
}

/// Runs the `sagad` binary to its end.
fn sagad(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sagad"))
        .args(args)
        .env_remove("SAGAD_DATA_DIR")
        .env("SAGAD_LOG", "warn")
        .output()
        .expect("run sagad")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Every file under `dir` with its bytes.
fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(contents(&path));
        } else {
            let bytes = std::fs::read(&path).unwrap();
            found.insert(path, bytes);
        }
    }
    found
}

/// Places through `journal/db`'s data tried in turn for a flip of a kind.
const TRIES: usize = 64;

/// A copy of `original` with the byte at `try_`/[`TRIES`] of `journal/db`'s
/// data flipped, when a start refuses it.
async fn refused_copy(
    original: &Path,
    acknowledged: &Acknowledged,
    try_: usize,
) -> Option<tempfile::TempDir> {
    let at = try_ * records_end(&original.join("journal/db")) / TRIES;
    let copy = tempfile::tempdir().unwrap();
    copy_dir(original, copy.path());
    flip(&copy.path().join("journal/db"), at, 0x55);
    open(copy.path(), acknowledged)
        .await
        .is_err()
        .then_some(copy)
}

/// `sagad journal salvage --data-dir data_dir --out out`.
fn salvage_cli(data_dir: &str, out: &str) -> Output {
    sagad(&["journal", "salvage", "--data-dir", data_dir, "--out", out])
}

/// A copy of `original` with a flip in `journal/db` that a salvage cannot
/// carry every saga past (one hitting a live leaf), found by trying bytes
/// through the data; returns it with the sagas that salvage does not carry.
async fn with_live_page_damaged(
    original: &Path,
    acknowledged: &Acknowledged,
) -> (tempfile::TempDir, BTreeSet<SagaId>) {
    for try_ in 1..TRIES {
        let Some(copy) = refused_copy(original, acknowledged, try_).await else {
            continue;
        };
        let dir = copy.path().to_path_buf();
        let salvage = tokio::task::spawn_blocking(move || unlocked(|| SledJournal::salvage(&dir)))
            .await
            .unwrap()
            .unwrap();
        let lost: BTreeSet<SagaId> = salvage.report.not_carried().collect();
        // A leaf's worth of sagas, not the tree's root (which loses them all).
        if lost.is_empty() || lost.len() == SAGAS {
            continue;
        }
        return (copy, lost);
    }
    panic!("no flip through the data hit a live page");
}

#[tokio::test]
async fn a_real_sagad_refuses_the_damaged_store_and_serves_the_salvaged_one() {
    let original = tempfile::tempdir().unwrap();
    let acknowledged = stopped_twice(original.path()).await;
    let (damaged, not_carried) = with_live_page_damaged(original.path(), &acknowledged).await;
    assert!(!not_carried.is_empty() && not_carried.len() < SAGAS);
    let db = damaged.path().join("journal/db").display().to_string();

    // The server refuses to start, saying what is damaged and the way out.
    let mut server = SagadProcess::spawn(damaged.path(), &[]);
    let (status, stderr) = server.wait_exit();
    assert!(
        !status.success(),
        "sagad started on a damaged store: {stderr}"
    );
    assert!(
        stderr.contains(&db) && stderr.contains("is corrupt"),
        "{stderr}"
    );
    assert!(stderr.contains("sagad journal salvage"), "{stderr}");
    assert!(!stderr.contains("file offset None"), "{stderr}");

    // The check names the damage as a finding and says what a salvage keeps.
    let data_dir = damaged.path().to_str().unwrap();
    let check = sagad(&["journal", "check", "--data-dir", data_dir]);
    let said = text(&check);
    assert_eq!(check.status.code(), Some(1), "{said}");
    assert!(said.contains(&format!("{db} at byte")), "{said}");
    assert!(said.contains("would not carry everything"), "{said}");

    // The salvage writes a new directory, leaving the damaged one as it was.
    let before = contents(damaged.path());
    let out = tempfile::tempdir().unwrap();
    let salvaged_dir = out.path().join("salvaged");
    let salvaged = salvaged_dir.to_str().unwrap();
    let run = salvage_cli(data_dir, salvaged);
    let said = text(&run);
    assert_eq!(run.status.code(), Some(7), "{said}");
    assert!(said.contains(&format!("{db} at byte")), "{said}");
    assert!(said.contains("cannot rebuild the store"), "{said}");
    for id in &not_carried {
        assert!(said.contains(&id.to_string()), "{id} not named: {said}");
    }
    assert_eq!(
        contents(damaged.path()),
        before,
        "the damaged directory changed"
    );
    let report = std::fs::read_to_string(salvaged_dir.join("salvage/report.txt")).unwrap();
    assert!(report.contains(&format!("{db} at byte")), "{report}");
    // A second salvage into the now full directory is refused, naming it.
    let again = salvage_cli(data_dir, salvaged);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again).contains(&format!("--out {salvaged}: it exists and is not empty")),
        "{}",
        text(&again)
    );
    let check = sagad(&["journal", "check", "--data-dir", salvaged]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));

    // A real server starts on it and serves every saga carried, unchanged.
    let server = SagadProcess::spawn(&salvaged_dir, &[]);
    let mut client =
        pb::coordinator_client::CoordinatorClient::connect(format!("http://{}", server.addr))
            .await
            .unwrap();
    for (id, kinds) in &acknowledged {
        let got = client
            .get_saga(pb::GetSagaRequest {
                id: id.to_string(),
                ..Default::default()
            })
            .await;
        if not_carried.contains(id) {
            assert_eq!(
                got.unwrap_err().code(),
                Code::NotFound,
                "{id} was not carried"
            );
            continue;
        }
        let saga = got.unwrap_or_else(|e| panic!("{id}: {e}")).into_inner();
        let sagad::saga::EventKind::SagaStarted { payload, .. } = &kinds[0] else {
            unreachable!("every history starts with SagaStarted")
        };
        assert_eq!(&saga.payload, payload, "{id}");
        assert_eq!(saga.state(), pb::SagaState::Running, "{id}");
        assert_eq!(
            saga.steps[0].forward_attempts, 1,
            "{id}: its attempt is kept"
        );
    }
    // Off this runtime's only thread: the client's connection needs it to
    // answer the server's goodbye.
    let (status, stderr) = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    drop(client);
    assert!(status.success(), "{stderr}");
}

#[tokio::test]
async fn damage_sled_can_read_past_is_a_finding_and_salvages_whole() {
    let original = tempfile::tempdir().unwrap();
    let acknowledged = stopped_twice(original.path()).await;
    // A flip that sled refuses but that holds no live page: the first one
    // through the data whose salvage carries everything.
    for try_ in 1..TRIES {
        let Some(copy) = refused_copy(original.path(), &acknowledged, try_).await else {
            continue;
        };
        let data_dir = copy.path().to_str().unwrap();
        let check = sagad(&["journal", "check", "--data-dir", data_dir]);
        let said = text(&check);
        let out = tempfile::tempdir().unwrap();
        let salvaged = out.path().join("salvaged");
        let run = salvage_cli(data_dir, salvaged.to_str().unwrap());
        if run.status.code() == Some(7) {
            continue; // a live page: the other test's case
        }
        assert_eq!(run.status.code(), Some(0), "{}", text(&run));
        assert_eq!(check.status.code(), Some(1), "{said}");
        let db = copy.path().join("journal/db").display().to_string();
        assert!(said.contains(&format!("{db} at byte")), "{said}");
        assert!(said.contains("(read past in a copy)"), "{said}");
        assert!(said.contains("losing nothing"), "{said}");
        assert_eq!(open(&salvaged, &acknowledged).await, Ok(SAGAS));
        return;
    }
    panic!("no flip through the data was refused yet salvaged whole");
}
