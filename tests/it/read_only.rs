//! `sagad journal check` and `sagad export` only read: run as the real binary
//! on a stopped server's directory, on what a killed one left, on one whose
//! log ends in a torn write and on a `chmod -R a-w` copy, they change no byte,
//! name, size or mode of anything under it; they refuse a directory a live
//! server holds.
//!
//! The tests run as root, for whom `chmod a-w` stops no write: the
//! fingerprints compared before and after are the proof.

use std::{
    collections::BTreeMap,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use sagad::{
    journal::{Journal, SledJournal, store::WalOptions},
    proto::v1 as pb,
    saga::{Action, Event, EventKind, Offset, SagaId, Timestamp},
};
use tonic::Code;

use crate::common::{
    Answer, FakeParticipant, TestServer,
    damage::{copy_dir, flip, records_end, step},
    poll_until,
    process::SagadProcess,
    quick_retry, register_shop, serve, start_order, text,
};

/// What is compared of each file and directory under a data directory.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    /// The type and permission bits.
    mode: u32,
    size: u64,
    /// crc32 of a file's bytes (0 for a directory).
    crc: u32,
}

/// Every file and directory under `dir` (itself included, as ""), by path.
fn fingerprint(dir: &Path) -> BTreeMap<PathBuf, Entry> {
    fn walk(root: &Path, path: &Path, found: &mut BTreeMap<PathBuf, Entry>) {
        let meta = std::fs::symlink_metadata(path).unwrap();
        let crc = if meta.is_file() {
            crc32fast::hash(&std::fs::read(path).unwrap())
        } else {
            0
        };
        let relative = path.strip_prefix(root).unwrap().to_path_buf();
        let entry = Entry {
            mode: meta.permissions().mode(),
            size: if meta.is_file() { meta.len() } else { 0 },
            crc,
        };
        found.insert(relative, entry);
        if meta.is_dir() {
            for child in std::fs::read_dir(path).unwrap() {
                walk(root, &child.unwrap().path(), found);
            }
        }
    }
    let mut found = BTreeMap::new();
    walk(dir, dir, &mut found);
    found
}

/// Runs the `sagad` binary to its end, off the async workers, with its
/// temporary files in `tmpdir`.
async fn sagad(args: &[&str], data_dir: &Path, tmpdir: &Path) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sagad"));
    command
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("FAILPOINTS")
        .env_remove("SAGAD_DATA_DIR")
        .env("SAGAD_LOG", "warn")
        .env("TMPDIR", tmpdir);
    tokio::task::spawn_blocking(move || command.output().expect("run sagad"))
        .await
        .unwrap()
}

/// The saga ids in `sagad export` output, sorted.
fn exported_ids(stdout: &[u8]) -> Vec<String> {
    let mut ids: Vec<String> = text(stdout)
        .lines()
        .map(|line| {
            let record: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            record["id"].as_str().unwrap().to_string()
        })
        .collect();
    ids.sort();
    ids
}

/// What a read-only run printed and how it ended.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `args` on `data_dir` and checks that nothing under it changed and
/// that the temporary directory it was given is empty again.
async fn read_only_run(args: &[&str], data_dir: &Path) -> Ran {
    let tmpdir = tempfile::tempdir().unwrap();
    let before = fingerprint(data_dir);
    let output = sagad(args, data_dir, tmpdir.path()).await;
    let ran = Ran {
        code: output.status.code(),
        stdout: text(&output.stdout),
        stderr: text(&output.stderr),
    };
    let after = fingerprint(data_dir);
    let changed: Vec<_> = before
        .iter()
        .filter(|(path, entry)| after.get(*path) != Some(entry))
        .map(|(path, _)| path)
        .chain(after.keys().filter(|path| !before.contains_key(*path)))
        .collect();
    assert!(
        changed.is_empty(),
        "`sagad {}` changed {changed:?} under {}\n{}{}",
        args.join(" "),
        data_dir.display(),
        ran.stdout,
        ran.stderr
    );
    let left: Vec<_> = std::fs::read_dir(tmpdir.path()).unwrap().collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
    ran
}

fn chmod(dir: &Path, mode: &str) {
    let status = Command::new("chmod")
        .args(["-R", mode])
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
}

/// The newest segment of the log in `data_dir`.
fn last_segment(data_dir: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(data_dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segments.sort();
    segments.pop().expect("a log segment")
}

/// A stopped server's directory: sagas archived, completed ones still in the
/// journal, one running; the server stopped as SIGTERM stops it. Returns the
/// server (it owns the directory) and the finished sagas.
async fn stopped_server() -> (TestServer, Vec<String>) {
    let mut server = TestServer::start_retaining(Duration::from_secs(1)).await;
    let shop = serve(FakeParticipant::new(|r| {
        if r.payload.starts_with(b"{\"stuck\"") && r.action == pb::Action::Forward as i32 {
            Answer::Retry(Some(Duration::from_millis(200)))
        } else {
            Answer::Ok
        }
    }))
    .await;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(10_000, 3)).await;
    let mut finished = Vec::new();
    for i in 0..3 {
        finished.push(
            start_order(&mut client, &format!(r#"{{"e":{i}}}"#), true)
                .await
                .id,
        );
    }
    for id in &finished {
        poll_until("the early sagas archived", || {
            let (mut client, id) = (client.clone(), id.clone());
            async move {
                let found = client
                    .get_saga(pb::GetSagaRequest {
                        id,
                        ..Default::default()
                    })
                    .await;
                matches!(found, Err(s) if s.code() == Code::NotFound).then_some(())
            }
        })
        .await;
    }
    for i in 0..2 {
        finished.push(
            start_order(&mut client, &format!(r#"{{"l":{i}}}"#), true)
                .await
                .id,
        );
    }
    start_order(&mut client, r#"{"stuck":true}"#, false).await;
    server.stop().await;
    finished.sort();
    (server, finished)
}

/// The events of a one-step saga that completes.
fn completing() -> Vec<Event> {
    let saga = SagaId::generate();
    let kinds = [
        EventKind::SagaStarted {
            definition: "shop".into(),
            inline_steps: None,
            steps: vec![step("only")],
            payload: br#"{"order":1}"#.to_vec(),
            idempotency_key: None,
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
        EventKind::AttemptSucceeded {
            step: 0,
            action: Action::Forward,
            attempt: 1,
            output: b"{}".to_vec(),
        },
        EventKind::SagaCompleted,
    ];
    kinds
        .into_iter()
        .enumerate()
        .map(|(n, kind)| Event {
            saga,
            seq: n as u64 + 1,
            offset: Offset::ZERO,
            at: Timestamp::now(),
            kind,
        })
        .collect()
}

const KILLED_SAGAS: usize = 6;

/// What a killed server leaves: sagas whose events are in the log only (no
/// checkpoint since the open), copied from a journal still open into `to`.
/// The last append is the last saga's `SagaCompleted`, alone in the log's
/// last record. Returns the sagas' ids, sorted.
async fn killed_server(to: &Path) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions {
        checkpoint_interval: Duration::from_secs(3600),
        zero_filled_segments: false,
        ..WalOptions::default()
    };
    let journal = SledJournal::open_with(dir.path(), options).unwrap();
    let mut ids = Vec::new();
    for _ in 0..KILLED_SAGAS {
        let events = completing();
        ids.push(events[0].saga.to_string());
        for event in events {
            journal.append(vec![event]).await.unwrap();
        }
    }
    copy_dir(dir.path(), to);
    journal.close().await.unwrap();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_export_change_nothing_in_a_stopped_servers_directory_or_a_read_only_copy() {
    let (server, finished) = stopped_server().await;
    let read_only = tempfile::tempdir().unwrap();
    copy_dir(&server.data_dir, read_only.path());
    chmod(read_only.path(), "a-w");

    for dir in [server.data_dir.as_path(), read_only.path()] {
        let check = read_only_run(&["journal", "check"], dir).await;
        assert_eq!(check.code, Some(0), "{}{}", check.stdout, check.stderr);
        assert!(check.stdout.contains("journal OK"), "{}", check.stdout);
        assert!(check.stdout.contains("1 RUNNING"), "{}", check.stdout);
        assert!(check.stdout.contains("left as it was"), "{}", check.stdout);

        let export = read_only_run(&["export"], dir).await;
        assert_eq!(export.code, Some(0), "{}", export.stderr);
        assert_eq!(exported_ids(export.stdout.as_bytes()), finished);
        assert!(
            export.stderr.contains("exported 5 sagas"),
            "{}",
            export.stderr
        );
    }
    chmod(read_only.path(), "u+w"); // for the temp dir's removal as a non-root user
}

#[tokio::test]
async fn a_killed_servers_directory_reads_as_its_next_start_finds_it_and_a_torn_tail_stays() {
    let dir = tempfile::tempdir().unwrap();
    let ids = killed_server(dir.path()).await;

    // Every saga is in the log only: read from it, in memory.
    let check = read_only_run(&["journal", "check"], dir.path()).await;
    assert_eq!(check.code, Some(0), "{}{}", check.stdout, check.stderr);
    assert!(
        check
            .stdout
            .contains(&format!("sagas: {KILLED_SAGAS} ({KILLED_SAGAS} COMPLETED)")),
        "{}",
        check.stdout
    );
    let export = read_only_run(&["export"], dir.path()).await;
    assert_eq!(export.code, Some(0), "{}", export.stderr);
    assert_eq!(exported_ids(export.stdout.as_bytes()), ids);

    // The last record damaged: a torn tail, as a crash mid-write leaves it.
    let segment = last_segment(dir.path());
    let end = records_end(&segment);
    flip(&segment, end - 1, 0x20);
    let check = read_only_run(&["journal", "check"], dir.path()).await;
    assert_eq!(check.code, Some(6), "{}{}", check.stdout, check.stderr);
    let finding = format!("torn tail: {} at byte ", segment.display());
    assert!(check.stdout.contains(&finding), "{}", check.stdout);
    assert!(
        check.stdout.contains("the next start cuts it off"),
        "{}",
        check.stdout
    );
    assert!(
        check.stdout.contains(&format!(
            "sagas: {KILLED_SAGAS} ({} COMPLETED, 1 RUNNING)",
            KILLED_SAGAS - 1
        )),
        "the torn batch is not read: {}",
        check.stdout
    );
    assert!(check.stderr.contains("torn write"), "{}", check.stderr);
    let export = read_only_run(&["export"], dir.path()).await;
    assert_eq!(export.code, Some(0), "{}", export.stderr);
    assert_eq!(
        exported_ids(export.stdout.as_bytes()).len(),
        KILLED_SAGAS - 1
    );
    assert!(export.stderr.contains("torn write"), "{}", export.stderr);

    // The same on a read-only copy.
    let read_only = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), read_only.path());
    chmod(read_only.path(), "a-w");
    let check = read_only_run(&["journal", "check"], read_only.path()).await;
    assert_eq!(check.code, Some(6), "{}{}", check.stdout, check.stderr);
    let export = read_only_run(&["export"], read_only.path()).await;
    assert_eq!(export.code, Some(0), "{}", export.stderr);
    chmod(read_only.path(), "u+w");

    // Damage before the end stays damage: exit 1, the file and byte named.
    flip(&segment, end / 2, 0x20);
    let check = read_only_run(&["journal", "check"], dir.path()).await;
    assert_eq!(check.code, Some(1), "{}{}", check.stdout, check.stderr);
    assert!(
        check.stderr.contains(&segment.display().to_string()) && check.stderr.contains("at byte"),
        "{}",
        check.stderr
    );
    flip(&segment, end / 2, 0x20); // back to the torn tail alone

    // The start that follows finds what the check said, and cuts the tail.
    let journal = SledJournal::open(dir.path()).unwrap();
    assert_eq!(journal.unfinished().await.unwrap().len(), 1);
    journal.close().await.unwrap();
    drop(journal);
    let check = read_only_run(&["journal", "check"], dir.path()).await;
    assert_eq!(check.code, Some(0), "{}{}", check.stdout, check.stderr);
}

#[tokio::test]
async fn check_and_export_refuse_a_directory_a_live_server_holds() {
    let dir = tempfile::tempdir().unwrap();
    let server = SagadProcess::spawn(dir.path(), &[]);
    let lock = std::fs::read(dir.path().join("LOCK")).unwrap();
    let tmpdir = tempfile::tempdir().unwrap();
    for verb in [&["journal", "check"][..], &["export"]] {
        let refused = sagad(verb, dir.path(), tmpdir.path()).await;
        let stderr = text(&refused.stderr);
        assert_eq!(refused.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&dir.path().display().to_string())
                && stderr.contains("a sagad server is running on it"),
            "{stderr}"
        );
        assert!(refused.stdout.is_empty());
    }
    assert_eq!(std::fs::read(dir.path().join("LOCK")).unwrap(), lock);
    assert_eq!(std::fs::read_dir(tmpdir.path()).unwrap().count(), 0);

    // The server went on undisturbed; stopped, its directory checks clean.
    let (status, stderr) = server.terminate();
    assert!(status.success(), "{stderr}");
    let check = read_only_run(&["journal", "check"], dir.path()).await;
    assert_eq!(check.code, Some(0), "{}{}", check.stdout, check.stderr);
}

#[tokio::test]
async fn the_copy_goes_where_tmpdir_says() {
    let dir = tempfile::tempdir().unwrap();
    killed_server(dir.path()).await;
    let missing = dir.path().join("no-such-tmpdir");
    let output = sagad(&["journal", "check"], dir.path(), &missing).await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
}
