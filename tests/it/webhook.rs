//! The on-failed webhook end to end: a real coordinator posts to a tiny HTTP
//! receiver on 127.0.0.1 (axum) that can be told to fail. Retries with backoff,
//! the body, at-least-once delivery across a restart, no repeat of an
//! acknowledged notice, and the refusal of URLs sagad cannot post to.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
};

use axum::{Router, extract::State, http::HeaderMap, http::StatusCode, routing::post};
use sagad::{
    config::{Config, Settings},
    engine::EngineConfig,
    proto::v1 as pb,
    tls::{ParticipantTls, Protocol, ServerTls, TlsConfig, TlsIncoming},
};
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::common::*;

/// One POST as the receiver saw it, and what it answered.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    pub(crate) body: Value,
    headers: HeaderMap,
    /// 0 while the answer is held back (and for good if the poster went
    /// away before it came).
    pub(crate) status: u16,
}

/// The receiver's behaviour and log.
pub(crate) struct Hook {
    /// Answer 500 to this many more POSTs, then 200.
    pub(crate) fail_next: AtomicU32,
    /// While true, every POST is logged on arrival and its answer held back
    /// until it turns false: a POST stays in flight as long as a test needs.
    held: watch::Sender<bool>,
    received: Mutex<Vec<Received>>,
}

/// A webhook receiver served on a loopback port until dropped.
pub(crate) struct Receiver {
    pub(crate) hook: Arc<Hook>,
    addr: SocketAddr,
    /// `http`, or `https` when served over TLS.
    scheme: &'static str,
    stop: CancellationToken,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.hook.held.send_replace(false);
        self.stop.cancel();
    }
}

impl Receiver {
    pub(crate) async fn start(fail_first: u32) -> Receiver {
        Self::start_with(fail_first, None).await
    }

    /// A receiver served over TLS (sagad's own TLS listener, as the web
    /// receiver of a user would be any HTTPS server) when `tls` is given.
    async fn start_with(fail_first: u32, tls: Option<ServerTls>) -> Receiver {
        let hook = Arc::new(Hook {
            fail_next: AtomicU32::new(fail_first),
            held: watch::Sender::new(false),
            received: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/hooks/failed", post(receive))
            .with_state(hook.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let stopped = stop.clone().cancelled_owned();
        let scheme = if tls.is_some() { "https" } else { "http" };
        match tls {
            Some(tls) => tokio::spawn(
                axum::serve(TlsIncoming::new(listener, tls), app)
                    .with_graceful_shutdown(stopped)
                    .into_future(),
            ),
            None => tokio::spawn(
                axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .into_future(),
            ),
        };
        Receiver {
            hook,
            addr,
            scheme,
            stop,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("{}://{}/hooks/failed", self.scheme, self.addr)
    }

    /// Holds back the answer to every POST from now on (`true`), or answers
    /// them, the held ones at once (`false`).
    pub(crate) fn hold(&self, held: bool) {
        self.hook.held.send_replace(held);
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.hook.received.lock().unwrap().clone()
    }

    /// POSTs about one saga, in arrival order.
    pub(crate) fn about(&self, saga_id: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.body["saga_id"] == saga_id)
            .collect()
    }

    /// Waits until a POST about `saga_id` was answered 200.
    pub(crate) async fn until_acknowledged(&self, saga_id: &str) -> Received {
        poll_until(&format!("an acknowledged POST about {saga_id}"), || {
            let acked = self.about(saga_id).into_iter().find(|r| r.status == 200);
            async move { acked }
        })
        .await
    }
}

async fn receive(State(hook): State<Arc<Hook>>, headers: HeaderMap, body: String) -> StatusCode {
    let failing = hook
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let status = if failing {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    // Logged on arrival, so a POST whose poster dies before the answer
    // still counts.
    let at = {
        let mut received = hook.received.lock().unwrap();
        received.push(Received {
            body: serde_json::from_str(&body).expect("the body is JSON"),
            headers,
            status: 0,
        });
        received.len() - 1
    };
    let _ = hook.held.subscribe().wait_for(|held| !*held).await;
    hook.received.lock().unwrap()[at].status = status.as_u16();
    status
}

/// A shop whose shipping declines "decline" and "stuck" orders, and whose refund
/// declines "stuck" ones: "stuck" ends FAILED, "decline" COMPENSATED.
pub(crate) async fn shop() -> Served {
    serve(FakeParticipant::new(|r| {
        let forward = r.action == pb::Action::Forward as i32;
        let payload = String::from_utf8_lossy(&r.payload).to_string();
        match (forward, r.step.as_str(), payload.as_str()) {
            (true, "ship-order", "decline" | "stuck") => Answer::Reject("out of stock"),
            (false, "charge-payment", "stuck") => Answer::Reject("refund declined"),
            _ => Answer::Ok,
        }
    }))
    .await
}

async fn server_posting_to(receiver: &Receiver) -> TestServer {
    server_posting_with(receiver, TlsConfig::default()).await
}

async fn server_posting_with(receiver: &Receiver, tls: TlsConfig) -> TestServer {
    TestServer::start_with_extras(
        vec![order_fulfillment()],
        EngineConfig::default(),
        Extras {
            metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
            on_failed_webhook: Some(receiver.url()),
            tls,
            ..Extras::default()
        },
    )
    .await
}

#[tokio::test]
async fn an_https_webhook_is_posted_to_over_tls_verified_against_the_participant_ca() {
    let (ca, files) = (certs::Ca::new("hooks CA"), certs::Files::new());
    let listener = files.listener(&ca.current("hooks"), None);
    let tls = ServerTls::load("the receiver", &listener, Protocol::Http1).unwrap();
    let receiver = Receiver::start_with(0, Some(tls)).await;
    assert!(receiver.url().starts_with("https://"));
    let participants = ParticipantTls {
        ca: Some(files.ca("hooks-ca", &ca)),
        ..ParticipantTls::default()
    };
    let server = server_posting_with(
        &receiver,
        TlsConfig {
            participants,
            ..TlsConfig::default()
        },
    )
    .await;
    let shop = shop().await;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(3, 3)).await;
    let saga = start_order(&mut client, "stuck", true).await;
    assert_eq!(state(&saga), pb::SagaState::Failed);
    let acked = receiver.until_acknowledged(&saga.id).await;
    assert_eq!(acked.body["saga_id"], saga.id.as_str());
}

#[tokio::test]
async fn a_failed_saga_is_posted_and_retried_until_acknowledged() {
    let receiver = Receiver::start(2).await;
    let server = server_posting_to(&receiver).await;
    let shop = shop().await;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(3, 3)).await;

    let compensated = start_order(&mut client, "decline", true).await;
    assert_eq!(state(&compensated), pb::SagaState::Compensated);
    let saga = start_order(&mut client, "stuck", true).await;
    assert_eq!(state(&saga), pb::SagaState::Failed);

    let acked = receiver.until_acknowledged(&saga.id).await;
    let posts = receiver.about(&saga.id);
    // Two 500s, then the 200: the same notice three times, numbered.
    assert_eq!(
        posts.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![500, 500, 200]
    );
    assert_eq!(
        posts
            .iter()
            .map(|r| r.body["delivery_attempt"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let delivery_id = acked.body["delivery_id"].as_str().unwrap().to_string();
    assert!(
        delivery_id.starts_with(&format!("{}/", saga.id)),
        "{delivery_id}"
    );
    assert!(
        posts
            .iter()
            .all(|r| r.body["delivery_id"] == delivery_id.as_str())
    );

    let body = &acked.body;
    assert_eq!(body["event"], "saga.failed");
    assert_eq!(body["saga_id"], saga.id.as_str());
    assert_eq!(body["definition"], "order-fulfillment");
    assert_eq!(body["state"], "FAILED");
    assert_eq!(body["failed_step"], "charge-payment");
    assert_eq!(body["last_error"], "refund declined");
    let reason = body["reason"].as_str().unwrap();
    assert!(
        reason.contains("compensation of step 'charge-payment'"),
        "{reason}"
    );
    let failed_at = humantime::parse_rfc3339(body["failed_at"].as_str().unwrap())
        .expect("failed_at is RFC 3339");
    let finished = saga.finished_at.as_ref().unwrap();
    let finished = std::time::UNIX_EPOCH
        + std::time::Duration::new(finished.seconds as u64, finished.nanos as u32);
    assert_eq!(
        failed_at
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
        finished
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
        "failed_at is when the saga finished"
    );
    let steps: Vec<(&str, &str)> = body["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        vec![
            ("validate-order", "SUCCEEDED"),
            ("charge-payment", "FAILED"),
            ("ship-order", "FAILED"),
        ]
    );
    assert_eq!(body["steps"][1]["compensate_attempts"], 1);
    assert_eq!(acked.headers["content-type"], "application/json");
    assert_eq!(acked.headers["idempotency-key"], delivery_id.as_str());

    // Only the FAILED saga is posted.
    assert!(receiver.about(&compensated.id).is_empty());
    assert_eq!(receiver.received().len(), 3);

    let text = poll_until("the pending notice to clear", || {
        let addr = server.metrics_addr.unwrap();
        async move {
            let text = scrape(addr).await;
            (sample(&text, "sagad_webhook_pending") == Some(0.0)).then_some(text)
        }
    })
    .await;
    assert_eq!(
        sample(&text, "sagad_webhook_attempts_total{outcome=\"error\"}"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "sagad_webhook_attempts_total{outcome=\"delivered\"}"),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn delivery_survives_a_restart_and_an_acknowledged_notice_is_not_repeated() {
    let receiver = Receiver::start(0).await;
    let mut server = server_posting_to(&receiver).await;
    let shop = shop().await;
    let mut client = server.client().await;
    register_shop(&mut client, &shop, quick_retry(3, 3)).await;

    // First failure: acknowledged at once.
    let first = start_order(&mut client, "stuck", true).await;
    receiver.until_acknowledged(&first.id).await;

    // Second failure: the receiver is down (500s) until after the restart.
    receiver.hook.fail_next.store(u32::MAX, Ordering::SeqCst);
    let second = start_order(&mut client, "stuck", true).await;
    assert_eq!(state(&second), pb::SagaState::Failed);
    poll_until("a refused POST about the second saga", || {
        let refused = !receiver.about(&second.id).is_empty();
        async move { refused.then_some(()) }
    })
    .await;
    server.stop().await;
    let before_restart = receiver.received().len();
    receiver.hook.fail_next.store(0, Ordering::SeqCst);

    server.restart().await;
    let acked = receiver.until_acknowledged(&second.id).await;
    assert_eq!(acked.body["state"], "FAILED");
    // The scan ends by saying how many notices it posted again: just the one.
    let metrics = server.metrics_addr.unwrap();
    let text = poll_until("the start-up scan to finish", || async move {
        let text = scrape(metrics).await;
        sample(&text, "sagad_webhook_redelivered_notices").map(|_| text)
    })
    .await;
    assert_eq!(
        sample(&text, "sagad_webhook_redelivered_notices"),
        Some(1.0),
        "{text}"
    );
    poll_until("nothing pending", || async move {
        let text = scrape(metrics).await;
        (sample(&text, "sagad_webhook_pending") == Some(0.0)).then_some(())
    })
    .await;
    let after: Vec<Received> = receiver.received()[before_restart..].to_vec();
    assert!(
        after
            .iter()
            .all(|r| r.body["saga_id"] == second.id.as_str()),
        "the acknowledged first notice is not posted again: {after:#?}"
    );
    assert_eq!(after.iter().filter(|r| r.status == 200).count(), 1);

    // Once acknowledged, a further restart posts nothing.
    let acknowledged = receiver.received().len();
    server.restart().await;
    let metrics = server.metrics_addr.unwrap();
    let text = poll_until("the second start-up scan to finish", || async move {
        let text = scrape(metrics).await;
        sample(&text, "sagad_webhook_redelivered_notices").map(|_| text)
    })
    .await;
    assert_eq!(
        sample(&text, "sagad_webhook_redelivered_notices"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(receiver.received().len(), acknowledged);
    drop(client);
}

#[test]
fn webhook_urls_sagad_cannot_post_to_are_refused_naming_their_source() {
    let env = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
    let err = Config::load(
        None,
        env("SAGAD_ON_FAILED_WEBHOOK", "mailto:ops@example.com"),
        Settings::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("SAGAD_ON_FAILED_WEBHOOK"), "{err}");
    assert!(err.contains("not an http:// or https:// URL"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sagad.toml");
    std::fs::write(&path, "on_failed_webhook = \"ftp://x\"\n").unwrap();
    let err = Config::load(Some(&path), vec![], Settings::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("on_failed_webhook") && err.contains("ftp://x"),
        "{err}"
    );
    assert!(err.contains("http://"), "{err}");

    let config = Config::load(
        None,
        env("SAGAD_ON_FAILED_WEBHOOK", "http://127.0.0.1:9/hooks"),
        Settings::default(),
    )
    .unwrap();
    assert_eq!(
        config
            .server_config()
            .unwrap()
            .on_failed_webhook
            .unwrap()
            .to_string(),
        "http://127.0.0.1:9/hooks"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_webhook_flag_exits_2_naming_the_flag() {
    let (code, stderr) = sagad_exit(&["--on-failed-webhook", "ftp://x"], &[]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--on-failed-webhook") && stderr.contains("ftp://x"),
        "{stderr}"
    );
    assert!(stderr.contains("http://"), "{stderr}");

    let (code, stderr) = sagad_exit(&[], &[("SAGAD_ON_FAILED_WEBHOOK", "https:///h")]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("SAGAD_ON_FAILED_WEBHOOK") && stderr.contains("https:///h"),
        "{stderr}"
    );
}
