//! Disk faults: the write-ahead log's `fdatasync` fails (an injected fault
//! standing in for a full or broken disk), on the stack production runs
//! (`KvJournal<WalStore<SledStore>>`). sagad must refuse new work with
//! UNAVAILABLE, act on nothing it could not make durable, and carry on once
//! the disk works again — or after a restart.

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use sagad::{
    engine::EngineConfig,
    journal::{
        Journal, SledJournal,
        store::{DiskFault, WalOptions},
    },
    proto::v1 as pb,
    server::{self, ServerConfig},
};
use tonic::Code;

use crate::common::*;

/// A server over the sled journal whose log syncs fail while `fault` says so.
async fn start_faulty(dir: &Path, fault: Arc<DiskFault>) -> server::Server {
    let options = WalOptions {
        log_fault: Some(fault),
        ..WalOptions::default()
    };
    let journal: Arc<dyn Journal> = Arc::new(SledJournal::open_with(dir, options).unwrap());
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        engine: EngineConfig::default(),
        metrics_listen: None,
        on_failed_webhook: None,
        retention: None,
        history_after: None,
        history_segment_min: sagad::archive::mover::SEGMENT_SAGAS_MIN,
        disk_reserve: sagad::journal::store::wal::DEFAULT_DISK_RESERVE,
        tls: Default::default(),
        postgres: None,
        auth_tokens: None,
        reload_interval: server::RELOAD_INTERVAL,
    };
    let server = server::start_with_journal(config, journal, vec![order_fulfillment()])
        .await
        .unwrap();
    assert!(server.ready().await);
    server
}

async fn connect(server: &server::Server) -> Client {
    Client::connect(format!("http://{}", server.local_addr()))
        .await
        .unwrap()
}

/// A shop whose first step takes a while, so a saga is mid-call when the disk fails.
async fn slow_shop() -> Served {
    serve(FakeParticipant::new(|r| {
        if r.step == "validate-order" && r.action == pb::Action::Forward as i32 {
            Answer::Slow(Duration::from_millis(300), Box::new(Answer::Ok))
        } else {
            Answer::Ok
        }
    }))
    .await
}

/// Polls StartSaga until it is refused for the journal, and returns the message.
async fn until_refused(client: &mut Client) -> String {
    let start = Instant::now();
    loop {
        match client
            .start_saga(pb::StartSagaRequest {
                definition: "order-fulfillment".into(),
                payload: br#"{"probe":true}"#.to_vec(),
                idempotency_key: "probe".into(),
                ..Default::default()
            })
            .await
        {
            Err(s) if s.code() == Code::Unavailable && s.message().contains("journal") => {
                return s.message().to_string();
            }
            Err(s) => panic!("unexpected refusal {:?}: {}", s.code(), s.message()),
            Ok(_) => {}
        }
        assert!(start.elapsed() < DEADLINE, "StartSaga was never refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_flushes_stop_new_work_and_everything_resumes_when_the_disk_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let fault = DiskFault::new();
    let server = start_faulty(dir.path(), fault.clone()).await;
    let shop = slow_shop().await;
    let mut client = connect(&server).await;
    register_shop(&mut client, &shop, quick_retry(3, 3)).await;

    let saga = start_order(&mut client, r#"{"order_id":"d-1"}"#, false).await;
    poll_until("the slow first step to arrive", || {
        let calls = shop.fake.calls();
        async move { (!calls.is_empty()).then_some(()) }
    })
    .await;

    // The disk fails while the first call is in flight.
    fault.fail();
    let message = until_refused(&mut client).await;
    // From here the journal is known to fail: no call may start until it works.
    let failed_at = Instant::now();
    assert!(message.contains("No space left on device"), "{message}");
    let register = client
        .register_participant(pb::RegisterParticipantRequest {
            name: "late".into(),
            forward_endpoint: shop.forward_url(),
            compensate_endpoint: shop.compensate_url(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(register.code(), Code::Unavailable, "{register}");
    // Health tells load balancers, for the server and for the Coordinator.
    for service in ["", "sagad.v1.Coordinator"] {
        until_health(server.local_addr(), service, ServingStatus::NotServing).await;
    }
    // Reads keep working from what is durable. The saga's next step is not
    // called: its start could not be made durable.
    let saga_before = get(&mut client, &saga.id).await;
    assert_eq!(state(&saga_before), pb::SagaState::Running);
    let listed = client
        .list_sagas(pb::ListSagasRequest::default())
        .await
        .expect("ListSagas reads while writes fail")
        .into_inner();
    assert!(
        listed.summaries.iter().any(|s| s.id == saga.id),
        "the saga is listed: {listed:?}"
    );
    let mut watch = client
        .watch_saga(pb::WatchSagaRequest {
            id: saga.id.clone(),
        })
        .await
        .expect("WatchSaga reads while writes fail")
        .into_inner();
    let first = watch.message().await.expect("the history is read");
    assert!(first.is_some(), "the watch starts with the saga's history");

    fault.heal();
    let recovered_at = Instant::now();
    for call in shop.fake.calls() {
        assert!(
            call.arrived < failed_at || call.arrived >= recovered_at,
            "a participant was called while the journal could not write: {call:?}"
        );
    }

    // Writes work again: the stalled saga resumes on its own, new sagas start.
    let done = until_terminal(&mut client, &saga.id).await;
    assert_eq!(state(&done), pb::SagaState::Completed);
    assert_eq!(
        shop.fake.applied(&saga.id),
        vec!["F:validate-order", "F:charge-payment", "F:ship-order"],
        "each effect applied once"
    );
    let fresh = start_order(&mut client, r#"{"order_id":"d-2"}"#, true).await;
    assert_eq!(state(&fresh), pb::SagaState::Completed);
    for service in ["", "sagad.v1.Coordinator"] {
        until_health(server.local_addr(), service, ServingStatus::Serving).await;
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_a_disk_fault_finishes_every_saga() {
    let dir = tempfile::tempdir().unwrap();
    let fault = DiskFault::new();
    let server = start_faulty(dir.path(), fault.clone()).await;
    let shop = slow_shop().await;
    let mut client = connect(&server).await;
    register_shop(&mut client, &shop, quick_retry(3, 3)).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            start_order(&mut client, &format!(r#"{{"order_id":"e-{i}"}}"#), false)
                .await
                .id,
        );
    }
    fault.fail();
    until_refused(&mut client).await;
    // The disk never comes back in this process: stopping cannot flush.
    let stopped = server.stop().await;
    assert!(stopped.is_err(), "a stop that cannot flush must say so");

    // A new process (the disk replaced, say) finishes everything.
    let mut server = TestServer::reopen(dir.path().to_path_buf()).await;
    let mut client = server.client().await;
    for id in &ids {
        let saga = until_terminal(&mut client, id).await;
        assert_eq!(state(&saga), pb::SagaState::Completed, "saga {id}");
        assert_eq!(
            shop.fake.applied(id).len(),
            3,
            "saga {id}: each effect once"
        );
    }
    server.stop().await;
}
