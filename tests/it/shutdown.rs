//! SIGTERM while hundreds of sagas run: in-flight calls finish, everything is
//! flushed, the process exits 0, and the next start finishes every saga.
//! SIGHUP does not stop the server (it reloads TLS certificates, if any). An
//! in-process stop frees the data directory before it returns.

use sagad::journal::{Journal, SledJournal};
use sagad::proto::v1 as pb;
use tonic::Code;

use crate::common::{
    Answer, FakeParticipant, ServingStatus, TestServer,
    chaos::{Fate, Harness},
    poll_until,
    process::SagadProcess,
    quick_retry, register_shop, serve, start_order, until_health,
};

const SAGAS: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_hundreds_of_sagas_running_exits_0_and_a_restart_finishes_them() {
    let harness = Harness::start(&[]).await;
    let mut rng = fastrand::Rng::with_seed(7);
    let mut starts = Vec::new();
    for i in 0..SAGAS {
        // Slow steps (under the 2 s step timeout), and some that compensate.
        let fate = match rng.u32(0..4) {
            0 => Fate::Reject { step: 2, fails: 1 },
            _ => Fate::Slow {
                ms: rng.u64(500..1900),
            },
        };
        let harness = harness.clone();
        starts.push(tokio::spawn(async move {
            harness.start_saga(format!("{i}"), fate).await
        }));
    }
    for start in starts {
        start.await.unwrap();
    }
    let running = harness
        .call(|mut c| async move {
            let request = pb::ListSagasRequest {
                state: pb::SagaState::Running as i32,
                page_size: 1000,
                ..Default::default()
            };
            c.list_sagas(request).await
        })
        .await;
    println!("{} sagas running at SIGTERM", running.summaries.len());
    assert!(
        running.summaries.len() >= 100,
        "hundreds of sagas must be running when SIGTERM arrives"
    );
    let stopper = harness.clone();
    tokio::task::spawn_blocking(move || stopper.terminate_and_restart())
        .await
        .unwrap();
    let summary = harness.settle_and_check().await;
    assert_eq!(summary.sagas, SAGAS);
    assert_eq!(
        summary.listed, SAGAS,
        "every acknowledged saga exists, once"
    );
    harness.stop();
}

/// SIGHUP (a closed terminal, an init system's reload) does not kill the
/// server: without TLS it has nothing to reload and says so, goes on serving,
/// and a later SIGTERM stops it cleanly. (With TLS it reloads the
/// certificates: `tls::sighup_rotates_the_certificate_and_a_bad_file_keeps_the_old_one`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_is_logged_and_the_server_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let sagad = SagadProcess::spawn(dir.path(), &[]);
    sagad.signal("HUP");
    poll_until("the SIGHUP to be logged", || {
        let said = sagad.stderr_so_far();
        async move { said.contains("SIGHUP: nothing to reload").then_some(()) }
    })
    .await;
    until_health(sagad.addr, "", ServingStatus::Serving).await;
    let (status, stderr) = sagad.terminate();
    assert!(status.success(), "{status}: {stderr}");
}

/// `Server::stop` returns only once the data directory is free: a stop with
/// clients still connected (a feed subscription and a watch open, calls in
/// flight on other connections) leaves no task holding the journal, so a
/// new server (or `sagad journal check`) can open the directory at once.
/// (A child process forked meanwhile may hold the lock a moment longer:
/// `journal::store::sled::tests::a_reopen_waits_for_a_forked_child_that_still_holds_the_lock`.)
#[tokio::test]
async fn a_stopped_server_has_released_its_data_directory_with_clients_still_connected() {
    let mut server = TestServer::start().await;
    let shop = serve(FakeParticipant::new(|r| {
        if r.step == "validate-order" {
            Answer::Status(Code::Unavailable)
        } else {
            Answer::Ok
        }
    }))
    .await;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(1000, 3)).await;
    let saga = start_order(&mut client, "{}", false).await;
    let mut feed = client
        .subscribe(pb::SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut watching = server.client().await;
    let mut watch = watching
        .watch_saga(pb::WatchSagaRequest {
            id: saga.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(feed.message().await.unwrap().is_some(), "the feed runs");
    assert!(watch.message().await.unwrap().is_some(), "the watch runs");
    let mut askers = Vec::new();
    for _ in 0..4 {
        let mut asking = server.client().await;
        let id = saga.id.clone();
        askers.push(tokio::spawn(async move {
            while asking
                .get_saga(pb::GetSagaRequest {
                    id: id.clone(),
                    all_attempts: false,
                })
                .await
                .is_ok()
            {}
        }));
    }

    server.stop().await;
    let reopened = SledJournal::open(&server.data_dir);
    assert!(
        reopened.is_ok(),
        "the directory is free once stop returned: {:?}",
        reopened.err()
    );
    reopened.unwrap().close().await.unwrap();
    for asker in askers {
        asker.await.unwrap();
    }
    drop((feed, watch, client, watching));
}
