//! Retention and archival end to end: a coordinator with a short `--retention`
//! moves COMPLETED and COMPENSATED sagas to `DATA_DIR/archive/*.jsonl.gz` and
//! out of the API, leaves running and FAILED ones alone, frees idempotency keys;
//! `sagad export` reads archive and journal back; and a coordinator killed
//! between an archive flush and the removal loses nothing.

use std::{
    collections::{BTreeMap, HashSet},
    io::Read,
    path::{Path, PathBuf},
    time::Duration,
};

use sagad::{
    archive::record::ArchivedSaga,
    journal::{Journal, SledJournal, check},
    proto::v1 as pb,
    saga::SagaId,
};
use serde_json::Value;
use tonic::Code;

use crate::common::{
    Answer, Client, FakeParticipant, TestServer, get, poll_until, process::SagadProcess,
    quick_retry, register_shop, sagad, serve, start_order, state, text,
};

/// A shop whose `charge-payment` rejects payloads saying `"card":"declined"`
/// and whose `validate-order` answers RETRY forever to `"stuck":true`.
fn shop() -> FakeParticipant {
    FakeParticipant::new(|r| {
        let payload: Value = serde_json::from_slice(&r.payload).unwrap_or_default();
        let forward = r.action == pb::Action::Forward as i32;
        if forward && r.step == "validate-order" && payload["stuck"] == true {
            Answer::Retry(Some(Duration::from_millis(200)))
        } else if forward && r.step == "charge-payment" && payload["card"] == "declined" {
            Answer::Reject("card declined")
        } else {
            Answer::Ok
        }
    })
}

/// Every line of every archive file under `data_dir`, read with a plain
/// multi-member gzip reader, as (file day, JSON).
pub(crate) fn archive_lines(data_dir: &Path) -> Vec<(String, Value)> {
    let dir = data_dir.join("archive");
    let mut names: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => return Vec::new(),
    };
    names.sort();
    let mut lines = Vec::new();
    for path in names {
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let Some(day) = name.strip_suffix(".jsonl.gz") else {
            continue;
        };
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(std::fs::File::open(&path).unwrap())
            .read_to_string(&mut text)
            .unwrap_or_else(|e| panic!("{name} is not gzip: {e}"));
        for line in text.lines() {
            let value: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}: {e}: {line}"));
            lines.push((day.to_string(), value));
        }
    }
    lines
}

async fn get_code(client: &mut Client, id: &str) -> Code {
    match client
        .get_saga(pb::GetSagaRequest {
            id: id.into(),
            ..Default::default()
        })
        .await
    {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// Runs the `sagad` binary to its end, off the async workers.
/// The saga ids in `sagad export` output, checking each line is a whole record.
fn exported_ids(stdout: &[u8]) -> Vec<String> {
    text(stdout)
        .lines()
        .map(|line| {
            let record: ArchivedSaga =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert!(!record.events.is_empty());
            record.id
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_archives_finished_sagas_and_leaves_the_rest() {
    let mut server = TestServer::start_retaining(Duration::from_secs(1)).await;
    let shop = serve(shop()).await;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(10_000, 3)).await;

    let stuck = start_order(&mut client, r#"{"order":"s","stuck":true}"#, false).await;
    let keyed = client
        .start_saga(pb::StartSagaRequest {
            definition: "order-fulfillment".into(),
            payload: br#"{"order":"k"}"#.to_vec(),
            idempotency_key: "order-k".into(),
            wait: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .saga
        .unwrap();
    let mut finished = vec![keyed.id.clone()];
    for i in 0..3 {
        let saga = start_order(&mut client, &format!(r#"{{"order":{i}}}"#), true).await;
        assert_eq!(state(&saga), pb::SagaState::Completed);
        finished.push(saga.id);
    }
    for i in 0..2 {
        let saga = start_order(
            &mut client,
            &format!(r#"{{"order":"d{i}","card":"declined"}}"#),
            true,
        )
        .await;
        assert_eq!(state(&saga), pb::SagaState::Compensated);
        finished.push(saga.id);
    }

    // Every finished saga leaves the API once it is older than the retention.
    for id in &finished {
        let mut c = client.clone();
        poll_until(&format!("saga {id} archived"), || {
            let mut c = c.clone();
            let id = id.clone();
            async move { (get_code(&mut c, &id).await == Code::NotFound).then_some(()) }
        })
        .await;
        assert_eq!(get_code(&mut c, id).await, Code::NotFound);
    }
    // The stuck one is untouched and still going.
    let still = get(&mut client, &stuck.id).await;
    assert_eq!(state(&still), pb::SagaState::Running);
    let listed: Vec<String> = client
        .list_sagas(pb::ListSagasRequest::default())
        .await
        .unwrap()
        .into_inner()
        .summaries
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(
        listed,
        vec![stuck.id.clone()],
        "archived sagas are not listed"
    );

    // The archive holds each finished saga's whole history, in its day's file.
    let lines = archive_lines(&server.data_dir);
    let mut archived: Vec<String> = lines
        .iter()
        .map(|(_, v)| v["id"].as_str().unwrap().to_string())
        .collect();
    archived.sort();
    archived.dedup();
    let mut expected = finished.clone();
    expected.sort();
    assert_eq!(
        archived, expected,
        "exactly the finished sagas are archived"
    );
    for (day, value) in &lines {
        let record: ArchivedSaga = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(record.finished_day(), Some(day.as_str()));
        let seqs: Vec<u64> = record.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
        assert!(record.events.windows(2).all(|w| w[0].offset < w[1].offset));
        assert_eq!(value["events"][0]["event"], "saga_started");
        assert_eq!(record.steps.len(), 3);
        match record.state.as_str() {
            "COMPLETED" => {
                // started, three attempts started and succeeded, completed.
                assert_eq!(record.events.len(), 8);
                assert_eq!(value["events"][7]["event"], "saga_completed");
                assert!(record.steps.iter().all(|s| s.state == "SUCCEEDED"));
            }
            "COMPENSATED" => {
                assert_eq!(
                    value["events"][record.events.len() - 1]["event"],
                    "saga_compensated"
                );
                assert_eq!(record.steps[1].state, "FAILED");
                assert_eq!(record.payload["card"], "declined");
            }
            other => panic!("archived a {other} saga"),
        }
        if record.id == keyed.id {
            assert_eq!(record.idempotency_key.as_deref(), Some("order-k"));
        }
    }

    // The archived saga's idempotency key is free: the same request starts anew.
    let again = client
        .start_saga(pb::StartSagaRequest {
            definition: "order-fulfillment".into(),
            payload: br#"{"order":"k"}"#.to_vec(),
            idempotency_key: "order-k".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(again.created, "retention bounds the idempotency window");
    assert_ne!(again.saga.unwrap().id, keyed.id);

    // A feed resumed from an offset whose successors were archived is refused.
    let mut feed = client
        .subscribe(pb::SubscribeRequest {
            after_offset: 1,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner());
    let refusal = match &mut feed {
        Err(status) => status.clone(),
        Ok(stream) => stream.message().await.expect_err("refused"),
    };
    assert_eq!(refusal.code(), Code::FailedPrecondition, "{refusal:?}");
    assert!(refusal.message().contains("archived"), "{refusal:?}");

    server.stop().await;
    // What is left checks clean: the holes are all below the archive horizon.
    let journal = SledJournal::open(&server.data_dir).unwrap();
    let report = check::check(journal.store()).unwrap();
    assert!(report.is_clean(), "{report}");
    assert!(report.archived_through > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_writes_each_finished_saga_of_a_window_once() {
    let mut server = TestServer::start_retaining(Duration::from_secs(1)).await;
    let shop = serve(shop()).await;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(10_000, 3)).await;
    let data_dir = server.data_dir.to_str().unwrap().to_string();

    // An early group, archived; then a later group, still in the journal.
    let mut early = Vec::new();
    for i in 0..3 {
        early.push(
            start_order(&mut client, &format!(r#"{{"e":{i}}}"#), true)
                .await
                .id,
        );
    }
    for id in &early {
        let c = client.clone();
        poll_until("the early group archived", || {
            let mut c = c.clone();
            let id = id.clone();
            async move { (get_code(&mut c, &id).await == Code::NotFound).then_some(()) }
        })
        .await;
    }
    let between = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let mut late = Vec::new();
    for i in 0..2 {
        late.push(
            start_order(&mut client, &format!(r#"{{"l":{i}}}"#), true)
                .await
                .id,
        );
    }
    let stuck = start_order(&mut client, r#"{"stuck":true}"#, false)
        .await
        .id;

    // The data directory belongs to the running server: export is refused.
    let refused = sagad(&["export", "--data-dir", &data_dir], &[]).await;
    assert!(!refused.status.success());
    let why = text(&refused.stderr);
    assert!(
        why.contains("already in use") && why.contains(&data_dir),
        "{why}"
    );

    server.stop().await;

    let all = sagad(&["export", "--data-dir", &data_dir], &[]).await;
    assert!(all.status.success(), "{}", text(&all.stderr));
    let ids = exported_ids(&all.stdout);
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "each saga once: {ids:?}");
    let mut want: Vec<String> = early.iter().chain(&late).cloned().collect();
    want.sort();
    let mut got = ids.clone();
    got.sort();
    assert_eq!(
        got, want,
        "every finished saga, none running ({stuck} is not)"
    );
    assert!(
        text(&all.stderr).contains("exported 5 sagas"),
        "{}",
        text(&all.stderr)
    );

    // A window: only the sagas that ended at or after `between`, into a file.
    let out = server.data_dir.join("late.jsonl");
    let window = sagad(
        &[
            "export",
            "--data-dir",
            &data_dir,
            "--since",
            &between,
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert!(window.status.success(), "{}", text(&window.stderr));
    let mut got = exported_ids(&std::fs::read(&out).unwrap());
    got.sort();
    let mut want = late.clone();
    want.sort();
    assert_eq!(got, want);
    let before = sagad(
        &["export", "--data-dir", &data_dir, "--until", &between],
        &[],
    )
    .await;
    let mut got = exported_ids(&before.stdout);
    got.sort();
    early.sort();
    assert_eq!(got, early);
    let none = sagad(
        &["export", "--data-dir", &data_dir, "--since", "2999-01-01"],
        &[],
    )
    .await;
    assert!(none.status.success());
    assert!(none.stdout.is_empty());

    // Bad times and windows are usage errors naming the flag.
    let bad = sagad(&["export", "--data-dir", &data_dir, "--since", "soon"], &[]).await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("--since"),
        "{}",
        text(&bad.stderr)
    );
    let backwards = sagad(
        &[
            "export",
            "--data-dir",
            &data_dir,
            "--since",
            "2024-05-02",
            "--until",
            "2024-05-01",
        ],
        &[],
    )
    .await;
    assert_eq!(backwards.status.code(), Some(2));
    assert!(text(&backwards.stderr).contains("--since must be earlier than --until"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_retention_is_refused_naming_where_it_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    for (value, why) in [("0s", "greater than 0"), ("abc", "'abc'")] {
        let run = sagad(
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                data_dir,
                "--retention",
                value,
            ],
            &[],
        )
        .await;
        assert_eq!(run.status.code(), Some(2), "--retention {value}");
        let stderr = text(&run.stderr);
        assert!(
            stderr.contains("--retention") && stderr.contains(why),
            "{stderr}"
        );
    }
    let run = sagad(
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir],
        &[("SAGAD_RETENTION", "0d")],
    )
    .await;
    assert_eq!(run.status.code(), Some(2));
    let stderr = text(&run.stderr);
    assert!(
        stderr.contains("SAGAD_RETENTION") && stderr.contains("greater than 0"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("journal").exists(),
        "a refused start touches nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_archive_flush_and_the_removal_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_path_buf();
    let shop = serve(shop()).await;
    let env = [
        ("SAGAD_RETENTION", "1s"),
        ("FAILPOINTS", "archive::after_flush=return"),
    ];
    let armed = {
        let data_dir = data_dir.clone();
        tokio::task::spawn_blocking(move || SagadProcess::spawn(&data_dir, &env))
            .await
            .unwrap()
    };
    let mut client =
        pb::coordinator_client::CoordinatorClient::connect(format!("http://{}", armed.addr))
            .await
            .unwrap();
    register_shop(&mut client, &shop, quick_retry(5, 5)).await;
    // Starts return once journaled; the server dies a retention period after
    // the first saga ends, so a late start may find it gone.
    let mut started: Vec<String> = Vec::new();
    for i in 0..6 {
        match client
            .start_saga(pb::StartSagaRequest {
                definition: "order-fulfillment".into(),
                payload: format!(r#"{{"order":{i}}}"#).into_bytes(),
                ..Default::default()
            })
            .await
        {
            Ok(r) => started.push(r.into_inner().saga.unwrap().id),
            Err(_) => break,
        }
    }
    assert!(!started.is_empty());
    let (_, stderr) = tokio::task::spawn_blocking(move || {
        let mut armed = armed;
        armed.wait_exit()
    })
    .await
    .unwrap();
    assert!(
        stderr.contains("crash point archive::after_flush"),
        "died elsewhere:\n{stderr}"
    );

    // At the crash: part of the sagas are in the archive, and every one is
    // still in the journal (none was removed before its archive was durable).
    let at_crash: Vec<(String, Value)> = archive_lines(&data_dir);
    assert!(
        !at_crash.is_empty(),
        "the crash point follows a flushed archive batch"
    );
    {
        let journal = SledJournal::open(&data_dir).unwrap();
        for id in &started {
            let events = journal
                .read_saga(id.parse::<SagaId>().unwrap())
                .await
                .unwrap();
            assert!(!events.is_empty(), "saga {id} is still in the journal");
        }
        let report = check::check(journal.store()).unwrap();
        assert!(report.is_clean(), "{report}");
        journal.close().await.unwrap();
    }
    for (_, value) in &at_crash {
        assert!(started.contains(&value["id"].as_str().unwrap().to_string()));
    }

    // A clean restart finishes whatever was unfinished and archives everything.
    let server = {
        let data_dir = data_dir.clone();
        tokio::task::spawn_blocking(move || {
            SagadProcess::spawn(&data_dir, &[("SAGAD_RETENTION", "1s")])
        })
        .await
        .unwrap()
    };
    let client =
        pb::coordinator_client::CoordinatorClient::connect(format!("http://{}", server.addr))
            .await
            .unwrap();
    for id in &started {
        poll_until(&format!("saga {id} archived after the restart"), || {
            let mut c = client.clone();
            let id = id.clone();
            async move { (get_code(&mut c, &id).await == Code::NotFound).then_some(()) }
        })
        .await;
    }
    let (status, stderr) = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{stderr}");

    // Each saga is in the archive; those of the interrupted batch twice, as
    // identical lines (the documented at-least-once); export writes each once.
    let mut by_id: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (_, value) in archive_lines(&data_dir) {
        by_id
            .entry(value["id"].as_str().unwrap().to_string())
            .or_default()
            .push(value);
    }
    let mut archived: Vec<&String> = by_id.keys().collect();
    archived.sort();
    let mut want: Vec<&String> = started.iter().collect();
    want.sort();
    assert_eq!(archived, want, "every saga archived, none lost");
    for (_, value) in &at_crash {
        let copies = &by_id[value["id"].as_str().unwrap()];
        assert_eq!(copies.len(), 2, "archived again after the crash");
        assert_eq!(copies[0], copies[1], "both copies are the same record");
    }
    let export = sagad(&["export", "--data-dir", data_dir.to_str().unwrap()], &[]).await;
    assert!(export.status.success(), "{}", text(&export.stderr));
    let mut ids = exported_ids(&export.stdout);
    ids.sort();
    let mut want = started.clone();
    want.sort();
    assert_eq!(ids, want, "export writes each saga once");
    let checked = sagad(
        &["journal", "check", "--data-dir", data_dir.to_str().unwrap()],
        &[],
    )
    .await;
    assert!(checked.status.success(), "{}", text(&checked.stdout));
    assert!(
        text(&checked.stdout).contains("retention"),
        "{}",
        text(&checked.stdout)
    );
}
