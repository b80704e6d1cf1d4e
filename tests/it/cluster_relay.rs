//! Cancel and Retry on any node of a cluster: two `sagad serve --journal
//! postgres://…` processes on one throwaway database. A cancel or a retry
//! sent to the node that does not own the saga is carried out by the owner
//! (journaled by it, under its epoch, with the caller's principal), and
//! answered as the owner answered; what the saga's state refuses is refused
//! with the owner's words. A call sent while the owner is stopped is carried
//! out by the node that takes the saga over; a caller that goes away before
//! the answer withdraws its call, and nothing is done.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sagad::proto::v1 as pb;
use tonic::Code;

use crate::{
    cluster::{client, node, owners},
    common::{
        self, Answer, Client, FakeParticipant, ServingStatus, poll_until,
        postgres::{database, journal_is_whole, sql},
        process::SagadProcess,
        quick_retry, register_shop, start_order, state,
    },
};

/// A shop scripted by the saga's payload: `{"hold":true}` asks for every
/// forward call to be tried again shortly until `forward` opens;
/// `{"fail":true}` rejects the last step, and fails compensations until
/// `compensate` opens; anything else succeeds.
struct Gates {
    forward: Arc<AtomicBool>,
    compensate: Arc<AtomicBool>,
}

fn script(gates: &Gates) -> impl Fn(&pb::StepRequest) -> Answer + Send + Sync + 'static {
    let (forward, compensate) = (gates.forward.clone(), gates.compensate.clone());
    move |request| {
        let payload: serde_json::Value =
            serde_json::from_slice(&request.payload).unwrap_or_default();
        let forward_call = request.action == pb::Action::Forward as i32;
        if payload["hold"] == true && forward_call && !forward.load(Ordering::SeqCst) {
            return Answer::Retry(Some(Duration::from_millis(100)));
        }
        if payload["fail"] == true {
            if forward_call && request.step == "ship-order" {
                return Answer::Reject("out of stock");
            }
            if !forward_call && !compensate.load(Ordering::SeqCst) {
                return Answer::Status(Code::Unavailable);
            }
        }
        Answer::Ok
    }
}

async fn cancel(client: &Client, id: &str, reason: &str) -> Result<pb::Saga, tonic::Status> {
    let answer = client
        .clone()
        .cancel_saga(pb::CancelSagaRequest {
            id: id.into(),
            reason: reason.into(),
        })
        .await?;
    Ok(answer.into_inner())
}

async fn retry(client: &Client, id: &str) -> Result<pb::Saga, tonic::Status> {
    let answer = client
        .clone()
        .retry_saga(pb::RetrySagaRequest {
            id: id.into(),
            ..Default::default()
        })
        .await?;
    Ok(answer.into_inner())
}

async fn until_state(client: &Client, id: &str, wanted: pb::SagaState) -> pb::Saga {
    poll_until(&format!("saga {id} to be {wanted:?}"), || {
        let mut client = client.clone();
        async move {
            let saga = common::get(&mut client, id).await;
            (state(&saga) == wanted).then_some(saga)
        }
    })
    .await
}

fn audit_actions(saga: &pb::Saga) -> Vec<&str> {
    saga.audit.iter().map(|a| a.action.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_retry_sent_to_any_node_are_carried_out_by_the_sagas_owner() {
    let _heavy = common::heavy().await;
    let url = database().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let gates = Gates {
        forward: Arc::new(AtomicBool::new(false)),
        compensate: Arc::new(AtomicBool::new(false)),
    };
    let shop = common::serve(FakeParticipant::new(script(&gates))).await;
    let a = node(dir_a.path(), &url, "node-a");
    let b = node(dir_b.path(), &url, "node-b");
    let mut on_a = client(a.addr).await;
    register_shop(&mut on_a, &shop, quick_retry(10_000, 2)).await;
    common::until_health(b.addr, "", ServingStatus::Serving).await;
    let on_b = client(b.addr).await;
    let db = sql(&url).await;

    let held = start_order(&mut on_a, r#"{"hold":true}"#, false).await.id;
    let running = start_order(&mut on_a, r#"{"hold":true}"#, false).await.id;
    let failed = start_order(&mut on_a, r#"{"fail":true}"#, false).await.id;
    let done = start_order(&mut on_a, "{}", true).await;
    assert_eq!(state(&done), pb::SagaState::Completed);
    until_state(&on_b, &failed, pb::SagaState::Failed).await;
    let mine = [
        held.clone(),
        running.clone(),
        failed.clone(),
        done.id.clone(),
    ];
    assert_eq!(
        owners(&db, &mine).await,
        HashSet::from(["node-a".to_string()])
    );

    // A cancel on node-b of node-a's running saga: node-a journals it.
    let cancelled = cancel(&on_b, &held, "asked on node-b").await.unwrap();
    assert_eq!(cancelled.id, held);
    assert_eq!(cancelled.cancel_reason, "asked on node-b");
    let seen_on_a = common::get(&mut on_a, &held).await;
    assert_eq!(seen_on_a.cancel_reason, "asked on node-b");
    assert_eq!(
        audit_actions(&seen_on_a),
        ["started", "cancel_requested"],
        "{seen_on_a:?}"
    );
    // Once it turned back (compensations are not held), a cancel is refused.
    until_state(&on_a, &held, pb::SagaState::Compensated).await;
    let refused = cancel(&on_b, &held, "again").await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let message = refused.message();
    assert!(
        message.contains("COMPENSATED")
            && message.contains("only a RUNNING or SCHEDULED saga can be cancelled"),
        "{message}"
    );

    // What the state refuses is refused with the reason, wherever it is asked.
    let refused = cancel(&on_b, &done.id, "too late").await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("COMPLETED"),
        "{}",
        refused.message()
    );
    // Refused by the owner's runner, in its words.
    let refused = retry(&on_b, &running).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("is RUNNING; only a FAILED saga can be retried"),
        "{}",
        refused.message()
    );
    let unknown = cancel(&on_b, "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "who")
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");

    // A retry on node-b of node-a's FAILED saga: node-a resumes it.
    gates.compensate.store(true, Ordering::SeqCst);
    let retried = retry(&on_b, &failed).await.unwrap();
    assert_eq!(retried.id, failed);
    assert_ne!(state(&retried), pb::SagaState::Failed, "{retried:?}");
    let compensated = until_state(&on_b, &failed, pb::SagaState::Compensated).await;
    assert_eq!(
        audit_actions(&compensated),
        ["started", "retry_requested"],
        "{compensated:?}"
    );
    gates.forward.store(true, Ordering::SeqCst);
    until_state(&on_b, &running, pb::SagaState::Completed).await;
    assert_eq!(
        owners(&db, &mine).await,
        HashSet::from(["node-a".to_string()]),
        "the owner carried the calls out; nothing moved"
    );
    // Every call of those sagas came from node-a, at its epoch.
    let a_epoch: i64 = db
        .query_one("SELECT epoch FROM sagad.node WHERE node_id = 'node-a'", &[])
        .await
        .unwrap()
        .get(0);
    for call in shop.fake.calls() {
        assert_eq!(call.epoch, Some(a_epoch as u64), "{call:?}");
    }

    // Sent while the owner is stopped: carried out by the node that takes
    // the saga over (or refused as retryable, having changed nothing, if
    // the takeover takes longer than the caller waits).
    gates.forward.store(false, Ordering::SeqCst);
    let stranded = start_order(&mut on_a, r#"{"hold":true}"#, false).await.id;
    a.signal("STOP");
    let mut unavailable = 0;
    let cancelled = loop {
        match cancel(&on_b, &stranded, "its owner is stopped").await {
            Ok(saga) => break saga,
            Err(s)
                if s.code() == Code::Unavailable && s.message().contains("nothing was changed") =>
            {
                unavailable += 1;
                assert!(unavailable < 5, "{s:?}");
            }
            Err(s) => panic!("{s:?}"),
        }
    };
    assert_eq!(cancelled.cancel_reason, "its owner is stopped");
    assert_eq!(
        owners(&db, std::slice::from_ref(&stranded)).await,
        HashSet::from(["node-b".to_string()])
    );
    gates.forward.store(true, Ordering::SeqCst);
    let ended = until_state(&on_b, &stranded, pb::SagaState::Compensated).await;
    assert_eq!(audit_actions(&ended), ["started", "cancel_requested"]);
    let calls = db
        .query_one("SELECT count(*) FROM sagad.relay", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert!(calls >= 1, "the calls went through the journal");
    // Woken, it learns it was fenced and joins again before it stops.
    a.signal("CONT");
    poll_until("node-a to join again", || {
        let said = a.stderr_so_far();
        async move { said.contains("joined the journal again").then_some(()) }
    })
    .await;
    journal_is_whole(&db).await;
    for node in [a, b] {
        let (status, stderr) = node.terminate();
        assert!(status.success(), "{status}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_goes_away_withdraws_its_call_and_nothing_is_done() {
    let _heavy = common::heavy().await;
    let url = database().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let gates = Gates {
        forward: Arc::new(AtomicBool::new(false)),
        compensate: Arc::new(AtomicBool::new(true)),
    };
    let shop = common::serve(FakeParticipant::new(script(&gates))).await;
    // A lease long enough that node-b takes nothing over during the test.
    let spawn = |dir: &std::path::Path, id: &str| {
        SagadProcess::spawn(
            dir,
            &[
                ("SAGAD_JOURNAL", url.as_str()),
                ("SAGAD_NODE_ID", id),
                ("SAGAD_LEASE_TTL", "60s"),
            ],
        )
    };
    let (a, b) = (spawn(dir_a.path(), "node-a"), spawn(dir_b.path(), "node-b"));
    let mut on_a = client(a.addr).await;
    register_shop(&mut on_a, &shop, quick_retry(10_000, 2)).await;
    common::until_health(b.addr, "", ServingStatus::Serving).await;
    let on_b = client(b.addr).await;
    let db = sql(&url).await;
    let held = start_order(&mut on_a, r#"{"hold":true}"#, false).await.id;

    // Its owner cannot take the call; the caller gives up after half a second.
    a.signal("STOP");
    let mut request = tonic::Request::new(pb::CancelSagaRequest {
        id: held.clone(),
        reason: "given up on".into(),
    });
    request.set_timeout(Duration::from_millis(500));
    let gone = on_b.clone().cancel_saga(request).await.unwrap_err();
    assert!(
        matches!(gone.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{gone:?}"
    );
    poll_until("the call to be withdrawn", || {
        let db = &db;
        async move {
            let left: i64 = db
                .query_one("SELECT count(*) FROM sagad.relay", &[])
                .await
                .unwrap()
                .get(0);
            (left == 0).then_some(())
        }
    })
    .await;

    // Woken, the owner finds nothing to do: the saga runs to its end.
    a.signal("CONT");
    gates.forward.store(true, Ordering::SeqCst);
    let ended = until_state(&on_b, &held, pb::SagaState::Completed).await;
    assert_eq!(ended.cancel_reason, "");
    assert_eq!(audit_actions(&ended), ["started"]);
    journal_is_whole(&db).await;
    for node in [a, b] {
        let (status, stderr) = node.terminate();
        assert!(status.success(), "{status}: {stderr}");
    }
}
