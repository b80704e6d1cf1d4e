//! A damaged journal: files truncated at many offsets, bytes flipped in records.
//! sagad must either recover every acknowledged saga exactly, or refuse to start
//! with a message that says what is damaged and where — never open with sagas
//! silently missing.

use std::process::Command;

use sagad::journal::{SledJournal, check};

use crate::common::damage::{SAGAS, build, copy_dir, only_file, open, records_end};

/// The promise: everything back, or a refusal that names what is damaged.
fn assert_recovered_or_refused(outcome: Result<usize, String>, what: &str, names: &str) -> bool {
    match outcome {
        Ok(intact) => {
            assert_eq!(
                intact, SAGAS,
                "{what}: opened with acknowledged sagas missing or altered"
            );
            false
        }
        Err(message) => {
            assert!(
                message.contains(names),
                "{what}: refusal does not say where: {message}"
            );
            assert!(
                !message.contains("file offset None") && !message.contains("panicked"),
                "{what}: sled's own words instead of a diagnosis: {message}"
            );
            true
        }
    }
}

#[tokio::test]
async fn a_damaged_write_ahead_log_is_refused_with_file_and_offset() {
    let original = tempfile::tempdir().unwrap();
    let acknowledged = build(original.path()).await;
    let segment_name = only_file(&original.path().join("wal"), "wal")
        .file_name()
        .unwrap()
        .to_owned();
    let end = records_end(&original.path().join("wal").join(&segment_name));
    assert!(end > 10_000, "the log holds the records ({end} bytes)");

    let mut refused = 0;
    // Flipped bytes across the records (header included).
    for n in 0..24 {
        let at = 3 + n * (end - 3) / 24;
        let copy = tempfile::tempdir().unwrap();
        copy_dir(original.path(), copy.path());
        let segment = copy.path().join("wal").join(&segment_name);
        let mut bytes = std::fs::read(&segment).unwrap();
        bytes[at] ^= 0x20;
        std::fs::write(&segment, &bytes).unwrap();
        let outcome = open(copy.path(), &acknowledged).await;
        if assert_recovered_or_refused(outcome, &format!("flip at byte {at}"), ".wal at byte") {
            refused += 1;
        }
    }
    assert!(
        refused >= 20,
        "flips in the middle of the log must be refused ({refused}/24)"
    );

    // Truncations anywhere: the segment no longer has its preallocated size.
    for n in 0..12 {
        let cut = n * end / 12 + 7;
        let copy = tempfile::tempdir().unwrap();
        copy_dir(original.path(), copy.path());
        let segment = copy.path().join("wal").join(&segment_name);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap()
            .set_len(cut as u64)
            .unwrap();
        let outcome = open(copy.path(), &acknowledged).await;
        let message = outcome.expect_err("a truncated log segment must be refused");
        assert!(
            message.contains(&segment_name.to_string_lossy().to_string()),
            "{message}"
        );
        assert!(message.contains("truncated"), "{message}");
    }
}

#[tokio::test]
async fn a_damaged_store_is_rebuilt_from_the_log_or_refused() {
    let original = tempfile::tempdir().unwrap();
    let acknowledged = build(original.path()).await;
    let len = records_end(&original.path().join("journal/db"));
    // Truncate or flip sled's own file at many places: sled recovers what it can
    // (often silently less); the log puts back every acknowledged batch.
    for n in 1..16 {
        let at = n * len / 16;
        for flip in [false, true] {
            let copy = tempfile::tempdir().unwrap();
            copy_dir(original.path(), copy.path());
            let db = copy.path().join("journal/db");
            if flip {
                let mut bytes = std::fs::read(&db).unwrap();
                bytes[at] ^= 0x55;
                std::fs::write(&db, &bytes).unwrap();
            } else {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&db)
                    .unwrap()
                    .set_len(at as u64)
                    .unwrap();
            }
            let outcome = open(copy.path(), &acknowledged).await;
            assert_recovered_or_refused(
                outcome,
                &format!("store damaged at {at} (flip: {flip})"),
                "journal/db",
            );
        }
    }
}

#[tokio::test]
async fn a_store_cut_short_after_a_checkpoint_is_refused() {
    let original = tempfile::tempdir().unwrap();
    let acknowledged = build(original.path()).await;
    // Reopening checkpoints the store and starts an empty log: from now on the
    // store alone holds the sagas, and the log's header says where it starts.
    assert_eq!(open(original.path(), &acknowledged).await, Ok(SAGAS));
    // sled preallocates its file: cut within the part that holds data.
    let len = records_end(&original.path().join("journal/db"));
    let mut refused = 0;
    for n in 0..16 {
        let cut = n * len / 16;
        let copy = tempfile::tempdir().unwrap();
        copy_dir(original.path(), copy.path());
        let db = copy.path().join("journal/db");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&db)
            .unwrap()
            .set_len(cut as u64)
            .unwrap();
        let outcome = open(copy.path(), &acknowledged).await;
        if assert_recovered_or_refused(outcome, &format!("store truncated at {cut}"), "journal/db")
        {
            refused += 1;
        }
    }
    // Nothing in the log can put the data back now: the cut must be caught
    // (by sled's own checks, or by the log's record of where it starts).
    assert!(
        refused >= 8,
        "a store cut short after a checkpoint must be refused ({refused}/16)"
    );
}

#[tokio::test]
async fn journal_check_reports_clean_and_damaged_directories() {
    let original = tempfile::tempdir().unwrap();
    build(original.path()).await;
    let sagad = env!("CARGO_BIN_EXE_sagad");
    let clean = Command::new(sagad)
        .args(["journal", "check", "--data-dir"])
        .arg(original.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&clean.stdout);
    assert!(
        clean.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&clean.stderr)
    );
    assert!(
        stdout.contains(&format!("sagas: {SAGAS} ({SAGAS} RUNNING)")),
        "{stdout}"
    );
    assert!(stdout.contains("journal OK"), "{stdout}");

    // Damage the middle of the log: both check and serve refuse, naming the file.
    let segment = only_file(&original.path().join("wal"), "wal");
    let end = records_end(&segment);
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[end / 2] ^= 0x20;
    std::fs::write(&segment, &bytes).unwrap();
    let damaged = Command::new(sagad)
        .args(["journal", "check", "--data-dir"])
        .arg(original.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&damaged.stderr);
    assert!(!damaged.status.success());
    assert!(
        stderr.contains(&segment.display().to_string()) && stderr.contains("at byte"),
        "{stderr}"
    );
    let serve = Command::new(sagad)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(original.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&serve.stderr);
    assert!(
        !serve.status.success(),
        "sagad must refuse a damaged journal"
    );
    assert!(stderr.contains(&segment.display().to_string()), "{stderr}");

    // The offline check also sees damage inside the store's records.
    let report_dir = tempfile::tempdir().unwrap();
    build(report_dir.path()).await;
    let journal = SledJournal::open(report_dir.path()).unwrap();
    assert!(check::check(journal.store()).unwrap().is_clean());
}
