//! Private files: whatever the umask it starts under, `sagad` makes its data
//! directory `0700` and every file in it `0600` (journal, log segments,
//! archive, webhook ledger), and so is an export; a data directory open to
//! others is named in a warning at start.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use sagad::proto::v1 as pb;

use crate::common::{process::SagadProcess, *};

/// Every path under `dir`, `dir` itself included.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut all = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < all.len() {
        if all[i].is_dir() {
            for entry in std::fs::read_dir(&all[i]).unwrap() {
                all.push(entry.unwrap().path());
            }
        }
        i += 1;
    }
    all
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_is_private_under_any_umask() {
    for umask in [0o000, 0o077] {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("deep/data");
        let shop = serve(FakeParticipant::new(|_| Answer::Ok)).await;
        let sagad = SagadProcess::spawn_under_umask(
            &data,
            &[
                "--retention",
                "100ms",
                "--on-failed-webhook",
                "http://127.0.0.1:9/failed",
            ],
            &[],
            Some(umask),
        );
        let mut client = Client::connect(format!("http://{}", sagad.addr))
            .await
            .unwrap();
        register_shop(&mut client, &shop, quick_retry(3, 3)).await;
        let saga = start_order(&mut client, r#"{"card":"4111"}"#, true).await;
        assert_eq!(state(&saga), pb::SagaState::Completed);
        // Archived once older than the retention: the archive has a file too.
        poll_until("the saga to be archived", || {
            let archive = data.join("archive");
            async move {
                std::fs::read_dir(&archive)
                    .ok()
                    .is_some_and(|mut files| files.next().is_some())
                    .then_some(())
            }
        })
        .await;
        let (status, stderr) = sagad.terminate();
        assert!(status.success(), "{stderr}");
        let out = root.path().join("export.jsonl");
        let export = std::process::Command::new(env!("CARGO_BIN_EXE_sagad"))
            .args([
                "export",
                "--data-dir",
                data.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ])
            .status()
            .unwrap();
        assert!(export.success());
        let mut files = 0;
        for path in tree(&data).into_iter().chain([out]) {
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let want = if meta.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(
                mode(&path),
                want,
                "umask {umask:03o}: {} is {:03o}",
                path.display(),
                mode(&path)
            );
            files += usize::from(meta.is_file());
        }
        assert!(
            files >= 5,
            "the journal, its log, the archive and the ledger were looked at"
        );
        // The parent made on the way is private too; the temp root is not ours.
        assert_eq!(mode(&root.path().join("deep")), 0o700);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_open_to_others_is_named_in_a_warning() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sagad = SagadProcess::spawn(&data, &[]);
    let (status, stderr) = sagad.terminate();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("open to its group or to others")
            && stderr.contains(&data.display().to_string()),
        "{stderr}"
    );
}
