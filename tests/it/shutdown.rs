//! SIGTERM while hundreds of sagas run: in-flight calls finish, everything is
//! flushed, the process exits 0, and the next start finishes every saga.
//! SIGHUP does not stop the server (it reloads TLS certificates, if any).

use sagad::proto::v1 as pb;

use crate::common::{
    ServingStatus,
    chaos::{Fate, Harness},
    poll_until,
    process::SagadProcess,
    until_health,
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
