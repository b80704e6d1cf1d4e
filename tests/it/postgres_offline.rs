//! The offline tools on a PostgreSQL journal: `sagad journal check
//! --journal` and `sagad export --journal`, run as the real binary against
//! a journal that real coordinators (`sagad serve --journal`) wrote on a
//! throwaway PostgreSQL. The check reads one snapshot beside a running
//! coordinator and changes nothing; damage made with SQL behind the
//! coordinator's back is named; export returns each ended saga once, from
//! the snapshot and from the archives of several nodes' data directories.

use std::{
    collections::BTreeMap,
    path::Path,
    process::{Command, Output},
    time::{Duration, SystemTime},
};

use sagad::proto::v1 as pb;
use serde_json::Value;
use tokio_postgres::Client as Sql;

use crate::common::{
    Answer, Client, FakeParticipant, Served, poll_until,
    postgres::{database, sql},
    process::SagadProcess,
    quick_retry, register_shop, serve, start_order, state, text,
};

/// A shop whose `charge-payment` rejects `"card":"declined"` and whose
/// `validate-order` answers RETRY forever to `"stuck":true`.
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

/// `sagad serve` as node `id` on the journal at `url`, with `extra` settings.
fn node(dir: &Path, url: &str, id: &str, extra: &[(&str, &str)]) -> SagadProcess {
    let mut env = vec![("SAGAD_JOURNAL", url), ("SAGAD_NODE_ID", id)];
    env.extend_from_slice(extra);
    SagadProcess::spawn(dir, &env)
}

async fn client(node: &SagadProcess, shop: &Served) -> Client {
    let mut client =
        pb::coordinator_client::CoordinatorClient::connect(format!("http://{}", node.addr))
            .await
            .unwrap();
    register_shop(&mut client, shop, quick_retry(10_000, 3)).await;
    client
}

/// Runs the `sagad` binary to its end, off the async workers, with none of
/// the settings a test's environment might carry.
async fn sagad(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sagad"));
    command
        .args(args)
        .env_remove("SAGAD_JOURNAL")
        .env_remove("SAGAD_DATA_DIR")
        .env("SAGAD_LOG", "warn");
    tokio::task::spawn_blocking(move || command.output().expect("run sagad"))
        .await
        .unwrap()
}

/// `sagad journal check --journal url`: (exit code, stdout).
async fn check(url: &str) -> (Option<i32>, String) {
    let out = sagad(&["journal", "check", "--journal", url]).await;
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("read one snapshot of postgres://") && stdout.contains("wrote nothing"),
        "{stdout}{}",
        text(&out.stderr)
    );
    (out.status.code(), stdout)
}

/// Every row of every table of the journal, as text, by table.
async fn everything(db: &Sql) -> BTreeMap<String, String> {
    let tables = db
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = 'sagad' ORDER BY table_name",
            &[],
        )
        .await
        .unwrap();
    let mut all = BTreeMap::new();
    for table in &tables {
        let name: String = table.get(0);
        let rows: Option<String> = db
            .query_one(
                &format!("SELECT string_agg(t::text, ';' ORDER BY t::text) FROM sagad.{name} t"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        all.insert(name, rows.unwrap_or_default());
    }
    all
}

/// The nodes as (id, epoch).
async fn nodes(db: &Sql) -> Vec<(String, i64)> {
    db.query(
        "SELECT node_id, epoch FROM sagad.node ORDER BY node_id",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// Runs the check on damage `made` (SQL), expecting every one of `named`
/// in its report and exit 1, and that the check changed nothing; then
/// `undo` puts the journal back.
async fn damaged(db: &Sql, url: &str, made: &str, named: &[String], undo: &str) {
    db.batch_execute(made).await.unwrap();
    let before = everything(db).await;
    let (code, stdout) = check(url).await;
    assert_eq!(code, Some(1), "{made}: {stdout}");
    assert!(stdout.contains("journal DAMAGED"), "{stdout}");
    for name in named {
        assert!(stdout.contains(name.as_str()), "{made}: {name} in {stdout}");
    }
    assert_eq!(everything(db).await, before, "the check changed nothing");
    db.batch_execute(undo).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_coordinators_journal_checks_clean_and_damage_behind_its_back_is_named() {
    let _heavy = crate::common::heavy().await;
    let url = database().await;
    let dir = tempfile::tempdir().unwrap();
    let coordinator = node(dir.path(), &url, "node-a", &[]);
    let shop = serve(shop()).await;
    let mut client = client(&coordinator, &shop).await;
    let mut completed = Vec::new();
    for i in 0..3 {
        let saga = start_order(&mut client, &format!(r#"{{"order":{i}}}"#), true).await;
        assert_eq!(state(&saga), pb::SagaState::Completed);
        completed.push(saga.id);
    }
    let compensated = start_order(&mut client, r#"{"order":"d","card":"declined"}"#, true).await;
    assert_eq!(state(&compensated), pb::SagaState::Compensated);
    let stuck = start_order(&mut client, r#"{"order":"s","stuck":true}"#, false).await;
    let db = sql(&url).await;
    // Waiting in backoff: it failed an attempt and is due again later.
    poll_until("the stuck saga to wait in backoff", || async {
        let due: Option<bool> = db
            .query_opt(
                "SELECT next_due_at IS NOT NULL FROM sagad.saga WHERE saga_id::text = $1",
                &[&stuck.id],
            )
            .await
            .unwrap()
            .map(|r| r.get(0));
        due.unwrap_or(false).then_some(())
    })
    .await;

    // While the coordinator runs (and the stuck saga keeps retrying), each
    // check reads one consistent snapshot: clean. No node joins.
    let members = nodes(&db).await;
    for _ in 0..3 {
        let (code, stdout) = check(&url).await;
        assert_eq!(code, Some(0), "{stdout}");
        assert!(stdout.contains("journal OK"), "{stdout}");
        assert!(stdout.contains("sagas: 5 ("), "{stdout}");
        assert!(stdout.contains("participants: 3"), "{stdout}");
    }
    assert_eq!(nodes(&db).await, members, "the check joined as no node");

    let (status, stderr) = coordinator.terminate();
    assert!(status.success(), "{status}: {stderr}");
    let whole = everything(&db).await;
    let (code, stdout) = check(&url).await;
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(everything(&db).await, whole, "the check changed nothing");

    // An event deleted from the middle of a saga.
    let id = &completed[0];
    let row = db
        .query_one(
            "SELECT \"offset\", body FROM sagad.event WHERE saga_id::text = $1 AND seq = 3",
            &[id],
        )
        .await
        .unwrap();
    let (offset, body): (i64, Vec<u8>) = (row.get(0), row.get(1));
    let hex: String = body.iter().map(|b| format!("{b:02x}")).collect();
    damaged(
        &db,
        &url,
        &format!("DELETE FROM sagad.event WHERE \"offset\" = {offset}"),
        &[
            format!("saga {id}: event 4 follows event 2"),
            format!(
                "offsets {offset}..{} are missing above the archive horizon 0",
                offset + 1
            ),
        ],
        &format!(
            "INSERT INTO sagad.event (\"offset\", saga_id, seq, body) VALUES ({offset}, '{id}', 3, '\\x{hex}')"
        ),
    )
    .await;

    // A saga row whose status disagrees with its events.
    let id = &completed[1];
    damaged(
        &db,
        &url,
        &format!("UPDATE sagad.saga SET status = 'compensated' WHERE saga_id = '{id}'"),
        &[format!(
            "saga {id}: its row says status compensated, its events say completed"
        )],
        &format!("UPDATE sagad.saga SET status = 'completed' WHERE saga_id = '{id}'"),
    )
    .await;

    // A gap in the offsets above the horizon: the last event moved up one,
    // the feed head with it.
    let last: i64 = db
        .query_one("SELECT max(\"offset\") FROM sagad.event", &[])
        .await
        .unwrap()
        .get(0);
    damaged(
        &db,
        &url,
        &format!(
            "UPDATE sagad.event SET \"offset\" = {} WHERE \"offset\" = {last};
             UPDATE sagad.feed_head SET last = last + 1",
            last + 1
        ),
        &[format!(
            "offsets {last}..{} are missing above the archive horizon 0",
            last + 1
        )],
        &format!(
            "UPDATE sagad.event SET \"offset\" = {last} WHERE \"offset\" = {};
             UPDATE sagad.feed_head SET last = last - 1",
            last + 1
        ),
    )
    .await;

    // A body that is not an event.
    let id = &compensated.id;
    let row = db
        .query_one(
            "SELECT \"offset\", body FROM sagad.event WHERE saga_id::text = $1 AND seq = 2",
            &[id],
        )
        .await
        .unwrap();
    let (offset, body): (i64, Vec<u8>) = (row.get(0), row.get(1));
    let hex: String = body.iter().map(|b| format!("{b:02x}")).collect();
    damaged(
        &db,
        &url,
        &format!("UPDATE sagad.event SET body = '\\x00ff' WHERE \"offset\" = {offset}"),
        &[format!(
            "offset {offset}: journal record of saga {id} from event 2 is damaged"
        )],
        &format!("UPDATE sagad.event SET body = '\\x{hex}' WHERE \"offset\" = {offset}"),
    )
    .await;

    // Every damage undone: clean again, and as the coordinator left it.
    assert_eq!(everything(&db).await, whole);
    let (code, stdout) = check(&url).await;
    assert_eq!(code, Some(0), "{stdout}");
}

/// Polls until none of `ids` is in the journal (archived by retention).
async fn until_archived(db: &Sql, ids: &[String]) {
    poll_until("the sagas to leave the journal", || async move {
        let left: i64 = db
            .query_one(
                "SELECT count(*) FROM sagad.saga WHERE saga_id::text = ANY($1)",
                &[&ids],
            )
            .await
            .unwrap()
            .get(0);
        (left == 0).then_some(())
    })
    .await;
}

/// Starts `n` orders (`declined` ones compensate) and waits for each to end.
async fn ended(client: &mut Client, n: usize, declined: bool) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let payload = match declined {
            true => format!(r#"{{"order":{i},"card":"declined"}}"#),
            false => format!(r#"{{"order":{i}}}"#),
        };
        let saga = start_order(client, &payload, true).await;
        let want = match declined {
            true => pb::SagaState::Compensated,
            false => pb::SagaState::Completed,
        };
        assert_eq!(state(&saga), want);
        ids.push(saga.id);
    }
    ids
}

/// The saga ids `sagad export` wrote, each line a whole record.
fn exported_ids(stdout: &[u8]) -> Vec<String> {
    text(stdout)
        .lines()
        .map(|line| {
            let record: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert!(!record["events"].as_array().unwrap().is_empty(), "{line}");
            record["id"].as_str().unwrap().to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_of_a_cluster_writes_each_ended_saga_once_from_the_snapshot_and_every_archive() {
    let _heavy = crate::common::heavy().await;
    let url = database().await;
    let since = sagad::json::rfc3339(SystemTime::now() - Duration::from_secs(60));
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let shop = serve(shop()).await;
    let db = sql(&url).await;
    let retain = [("SAGAD_RETENTION", "1s")];

    // node-a archives what ended on it into its data directory, and leaves
    // (giving the archiver duty up); node-b then archives into its own.
    let a = node(dir_a.path(), &url, "node-a", &retain);
    let mut on_a = ended(&mut client(&a, &shop).await, 3, false).await;
    on_a.extend(ended(&mut client(&a, &shop).await, 1, true).await);
    until_archived(&db, &on_a).await;
    let (status, stderr) = a.terminate();
    assert!(status.success(), "{status}: {stderr}");
    let b = node(dir_b.path(), &url, "node-b", &retain);
    let on_b = ended(&mut client(&b, &shop).await, 2, false).await;
    until_archived(&db, &on_b).await;
    let (status, stderr) = b.terminate();
    assert!(status.success(), "{status}: {stderr}");

    // node-a again, without retention: what ends now stays in the journal,
    // and it keeps running (a stuck saga retrying) while export reads.
    let a = node(dir_a.path(), &url, "node-a", &[]);
    let mut client_a = client(&a, &shop).await;
    let in_journal = ended(&mut client_a, 2, false).await;
    let stuck = start_order(&mut client_a, r#"{"stuck":true}"#, false).await;

    // A copy of node-a's archive, as if a holder had archived its sagas
    // twice (died between its flush and the removal).
    let dir_c = tempfile::tempdir().unwrap();
    let copy = dir_c.path().join("archive");
    std::fs::create_dir(&copy).unwrap();
    for file in std::fs::read_dir(dir_a.path().join("archive")).unwrap() {
        let file = file.unwrap();
        std::fs::copy(file.path(), copy.join(file.file_name())).unwrap();
    }

    let until = sagad::json::rfc3339(SystemTime::now() + Duration::from_secs(3600));
    let dirs = [dir_a.path(), dir_b.path(), dir_c.path()].map(|d| d.to_str().unwrap());
    let mut args = vec![
        "export",
        "--journal",
        &url,
        "--since",
        &since,
        "--until",
        &until,
    ];
    for dir in &dirs {
        args.extend(["--data-dir", dir]);
    }
    let out = sagad(&args).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut ids = exported_ids(&out.stdout);
    let mut want: Vec<String> = [on_a.clone(), on_b.clone(), in_journal.clone()].concat();
    ids.sort();
    want.sort();
    assert_eq!(
        ids, want,
        "each ended saga once; the stuck one is not ended"
    );
    assert!(!ids.contains(&stuck.id));
    assert!(
        text(&out.stderr).contains("exported 8 sagas (6 from the archive, 2 from the journal)"),
        "{}",
        text(&out.stderr)
    );

    // Without node-b's directory, its sagas are not found anywhere else.
    let out = sagad(&[
        "export",
        "--journal",
        &url,
        "--data-dir",
        dirs[0],
        "--since",
        &since,
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(exported_ids(&out.stdout).len(), 6);

    // A window that ended before any of them: nothing.
    let out = sagad(&[
        "export",
        "--journal",
        &url,
        "--data-dir",
        dirs[0],
        "--data-dir",
        dirs[1],
        "--until",
        &since,
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(exported_ids(&out.stdout).is_empty());

    // Bad input names its flag.
    let out = sagad(&["export", "--data-dir", dirs[0], "--data-dir", dirs[1]]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--data-dir"),
        "{}",
        text(&out.stderr)
    );
    let out = sagad(&[
        "export",
        "--journal",
        &url,
        "--data-dir",
        "/nonexistent/dir",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--data-dir /nonexistent/dir: not a directory"),
        "{}",
        text(&out.stderr)
    );

    let (status, stderr) = a.terminate();
    assert!(status.success(), "{status}: {stderr}");
}
