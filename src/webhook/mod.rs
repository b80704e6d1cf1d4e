//! The on-failed webhook: one JSON POST per FAILED saga (a compensation gave up
//! and an operator is needed), to `--on-failed-webhook URL`.
//!
//! ```text
//!   runner journals SagaFailed ─┐
//!                               ├─▶ notify ─▶ delivery task ─POST─▶ webhook
//!   start-up scan of FAILED  ───┘              (retry, backoff)      │ 2xx
//!   sagas not in the ledger                                           ▼
//!                                                   ledger: webhook-acked (fsync)
//! ```
//!
//! Delivery is **at least once**, across restarts:
//! - A notice is posted only after its `SagaFailed` is durable (the runner calls
//!   [`Notifier::notify`] after the append), and is retried with capped
//!   exponential backoff and jitter (from [`WEBHOOK_INITIAL_BACKOFF`], times
//!   [`WEBHOOK_BACKOFF_MULTIPLIER`] up to [`WEBHOOK_MAX_BACKOFF`], each delay
//!   spread by ±[`WEBHOOK_BACKOFF_JITTER`]; [`WEBHOOK_MAX_ATTEMPTS`] POSTs) until
//!   the receiver answers 2xx. Any other status, a refused connection or a
//!   timeout ([`WEBHOOK_REQUEST_TIMEOUT`]) is retried.
//! - An acknowledged notice is recorded in the ledger (`ledger.rs`). At every
//!   start, after recovery, [`Notifier::redeliver`] lists the journal's FAILED
//!   sagas and posts each one whose failure is not in the ledger: a notice not
//!   acknowledged before a crash, a stop, or the end of its retries is posted
//!   again then. Nothing is added to the saga journal.
//! - So a receiver may see a notice twice (acknowledged, then the ledger line
//!   lost to a crash): it dedupes on `delivery_id` (also sent as the
//!   `Idempotency-Key` header). A saga retried by an operator that fails again
//!   is a new failure with a new `delivery_id`.
//!
//! Why the retries live in memory, unlike a step's (whose due time is journaled,
//! `saga::retry`): nothing depends on when the next POST goes out, and what
//! must survive a restart is already durable, the failure in the journal and
//! the acknowledgement in the ledger. A restart posts every unacknowledged
//! notice again, from a fresh backoff. So the delays are a plain
//! `backoff::ExponentialBackoff` iterator ([`delivery_backoff`]).
//!
//! Costs and bounds: at most [`WEBHOOK_CONCURRENCY`] POSTs are in flight; the
//! others wait, one small task per undelivered notice, so memory grows only with
//! the number of FAILED sagas the receiver has not acknowledged. The start-up
//! scan lists the FAILED sagas through the journal's index of them (it reads
//! neither finished nor running sagas) and reads each one's history; it runs in
//! the background and does not delay readiness.
//!
//! An `https://` URL is posted to over TLS, verified against the system's
//! roots and the CAs of `--participant-ca` (`crate::tls::ClientTls::webhook_config`),
//! read once at start; no client certificate is presented.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use backoff::{ExponentialBackoff, ExponentialBackoffBuilder, backoff::Backoff};
use http::{Uri, header};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    Error, Result,
    journal::{Journal, ListQuery},
    metrics::Metrics,
    saga::{SagaId, SagaState, SagaStatus},
    tls::ClientTls,
};

mod ledger;
mod notice;

pub use ledger::LEDGER_FILE;
pub use notice::{DeliveryKey, Notice, StepSummary};

/// Delay before the second POST of a notice; it doubles up to the cap.
pub const WEBHOOK_INITIAL_BACKOFF: Duration = Duration::from_millis(250);
/// Each delay between two POSTs of one notice is the previous one times this.
pub const WEBHOOK_BACKOFF_MULTIPLIER: f64 = 2.0;
/// Longest delay between two POSTs of one notice, before jitter.
pub const WEBHOOK_MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Random spread of each delay: 0.2 draws it from ±20% of the nominal one (so
/// a delay at the cap is 48–72 s), so receivers that come back are not hit by
/// every notice at once.
pub const WEBHOOK_BACKOFF_JITTER: f64 = 0.2;
/// POSTs of one notice before this process gives up on it (it is posted again
/// at the next start): about an hour at the cap.
pub const WEBHOOK_MAX_ATTEMPTS: u32 = 64;
/// How long one POST may take.
pub const WEBHOOK_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// POSTs in flight at once.
pub const WEBHOOK_CONCURRENCY: usize = 4;
/// Sagas listed per page by the start-up scan.
const SCAN_PAGE: usize = 256;

/// The delays between the POSTs of one notice, in order: from
/// [`WEBHOOK_INITIAL_BACKOFF`], times [`WEBHOOK_BACKOFF_MULTIPLIER`], capped at
/// [`WEBHOOK_MAX_BACKOFF`], each spread by ±[`WEBHOOK_BACKOFF_JITTER`]. It has no
/// time limit of its own (`next_backoff` never answers `None`):
/// [`WEBHOOK_MAX_ATTEMPTS`] bounds the POSTs.
pub fn delivery_backoff() -> ExponentialBackoff {
    ExponentialBackoffBuilder::new()
        .with_initial_interval(WEBHOOK_INITIAL_BACKOFF)
        .with_multiplier(WEBHOOK_BACKOFF_MULTIPLIER)
        .with_max_interval(WEBHOOK_MAX_BACKOFF)
        .with_randomization_factor(WEBHOOK_BACKOFF_JITTER)
        .with_max_elapsed_time(None)
        .build()
}

/// Posts FAILED-saga notices; cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    url: Uri,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// A std mutex: held only for in-memory checks or inside `spawn_blocking`.
    ledger: Mutex<ledger::Ledger>,
    /// Notices queued or being posted, so a scan and a runner never post one twice
    /// at once. A std mutex: no await inside.
    pending: Mutex<HashSet<DeliveryKey>>,
    slots: Semaphore,
    metrics: Metrics,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Notifier {
    /// A notifier posting to `url` (an `https://` one with `tls`'s
    /// webhook roots), keeping its ledger in `data_dir`. Delivery stops when
    /// `shutdown` is cancelled; [`Notifier::stopped`] waits for it.
    pub async fn open(
        url: Uri,
        tls: &ClientTls,
        data_dir: &std::path::Path,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> Result<Notifier> {
        let connector = match url.scheme_str() {
            Some("https") => HttpsConnectorBuilder::new()
                .with_tls_config(tls.webhook_config(&url.to_string())?)
                .https_only(),
            // hyper-rustls wants a configuration even for a connector that
            // never makes a TLS connection.
            _ => HttpsConnectorBuilder::new()
                .with_tls_config(ClientTls::refusing_config())
                .https_or_http(),
        };
        let connector = connector.enable_http1().build();
        let dir = data_dir.to_path_buf();
        let ledger = tokio::task::spawn_blocking(move || ledger::Ledger::open(&dir))
            .await
            .map_err(|e| Error::Unavailable(format!("webhook ledger task failed: {e}")))?
            .map_err(|source| Error::Io {
                what: format!(
                    "cannot open the webhook ledger {}",
                    data_dir.join(LEDGER_FILE).display()
                ),
                source,
            })?;
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Notifier {
            inner: Arc::new(Inner {
                url,
                client,
                ledger: Mutex::new(ledger),
                pending: Mutex::new(HashSet::new()),
                slots: Semaphore::new(WEBHOOK_CONCURRENCY),
                metrics,
                tracker: TaskTracker::new(),
                shutdown,
            }),
        })
    }

    /// Where notices go.
    pub fn url(&self) -> &Uri {
        &self.inner.url
    }

    /// Posts `notice` in the background unless it is already under way; false
    /// when it was not queued. Never blocks the caller. (A failure the runner
    /// just journaled cannot be in the ledger yet: its key has a new `seq`.)
    pub fn notify(&self, notice: Notice) -> bool {
        if self.inner.shutdown.is_cancelled() {
            return false;
        }
        let pending = {
            let mut pending = self.lock_pending();
            if !pending.insert(notice.key) {
                return false;
            }
            pending.len()
        };
        self.inner.metrics.webhook_pending(pending);
        self.inner.tracker.spawn(self.clone().deliver(notice));
        true
    }

    /// Posts every FAILED saga of `journal` whose failure the webhook has not
    /// acknowledged, then drops from the ledger the sagas that are no longer
    /// FAILED. Run once per start, after recovery.
    pub async fn redeliver(&self, journal: &dyn Journal) -> Result<usize> {
        let mut still_failed = HashSet::new();
        let mut posted = 0;
        let mut before: Option<SagaId> = None;
        loop {
            let page = journal
                .list(&ListQuery {
                    status: Some(SagaStatus::Failed),
                    definition: None,
                    before,
                    limit: SCAN_PAGE,
                })
                .await?;
            for summary in &page {
                still_failed.insert(summary.id);
                let events = journal.read_saga(summary.id).await?;
                let Ok(state) = SagaState::fold(&events) else {
                    continue; // `journal check` reports damaged histories
                };
                let Some(notice) = Notice::for_failed(&state) else {
                    continue;
                };
                let acked = self.lock_ledger().contains(&notice.key);
                if !acked && self.notify(notice) {
                    posted += 1;
                }
            }
            match page.last() {
                Some(last) if page.len() == SCAN_PAGE => before = Some(last.id),
                _ => break,
            }
        }
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut ledger = inner.ledger.lock().unwrap_or_else(|p| p.into_inner());
            ledger.compact(&still_failed)
        })
        .await
        .map_err(|e| Error::Unavailable(format!("webhook ledger task failed: {e}")))?
        .map_err(|source| Error::Io {
            what: "cannot compact the webhook ledger".into(),
            source,
        })?;
        self.inner.metrics.webhook_redelivered(posted);
        Ok(posted)
    }

    /// Runs [`Notifier::redeliver`] as a task of this notifier (stopped by its
    /// shutdown token), logging what it did.
    pub fn redeliver_in_background(&self, journal: Arc<dyn Journal>) {
        let notifier = self.clone();
        let shutdown = self.inner.shutdown.clone();
        self.inner.tracker.spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                scanned = notifier.redeliver(&*journal) => match scanned {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(notices = n, "posting FAILED sagas the on-failed webhook has not acknowledged"),
                    Err(e) => tracing::error!(error = %e, "cannot scan FAILED sagas for the on-failed webhook; they are posted at the next start"),
                },
            }
        });
    }

    /// Waits until every delivery task has stopped (after the shutdown token).
    pub async fn stopped(&self) {
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }

    fn lock_ledger(&self) -> std::sync::MutexGuard<'_, ledger::Ledger> {
        self.inner.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashSet<DeliveryKey>> {
        self.inner.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One notice's retry loop.
    async fn deliver(self, mut notice: Notice) {
        let shutdown = self.inner.shutdown.clone();
        let key = notice.key;
        let mut backoff = delivery_backoff();
        let delivered = loop {
            let posted = tokio::select! {
                _ = shutdown.cancelled() => break false,
                posted = self.post_one(&notice) => posted,
            };
            self.inner.metrics.webhook_attempt(posted.is_ok());
            let delay = match posted {
                Ok(()) => break true,
                Err(why) if notice.delivery_attempt >= WEBHOOK_MAX_ATTEMPTS => {
                    tracing::error!(saga = %key.saga, delivery_id = %key, attempts = notice.delivery_attempt, error = %why, "on-failed webhook gave up; the notice is posted again at the next start");
                    self.inner.metrics.webhook_gave_up();
                    break false;
                }
                Err(why) => {
                    // Without a time limit the backoff never runs out; the cap
                    // is only a fallback that cannot be reached.
                    let delay = backoff.next_backoff().unwrap_or(WEBHOOK_MAX_BACKOFF);
                    tracing::warn!(saga = %key.saga, delivery_id = %key, attempt = notice.delivery_attempt, error = %why, retry_in_ms = delay.as_millis() as u64, "on-failed webhook POST failed; retrying");
                    delay
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break false,
                _ = tokio::time::sleep(delay) => {}
            }
            notice.delivery_attempt += 1;
        };
        if delivered {
            let inner = self.inner.clone();
            let recorded = tokio::task::spawn_blocking(move || {
                inner
                    .ledger
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .record(key)
            })
            .await;
            match recorded {
                Ok(Ok(())) => {
                    tracing::info!(saga = %key.saga, delivery_id = %key, "FAILED saga notice delivered to the on-failed webhook")
                }
                Ok(Err(e)) => {
                    tracing::error!(saga = %key.saga, error = %e, "cannot record the webhook acknowledgement; the notice is posted again at the next start")
                }
                Err(e) => {
                    tracing::error!(saga = %key.saga, error = %e, "webhook ledger task failed")
                }
            }
        }
        let pending = {
            let mut pending = self.lock_pending();
            pending.remove(&key);
            pending.len()
        };
        self.inner.metrics.webhook_pending(pending);
    }

    /// One POST, waiting for a free slot first; `Err` says why it did not count.
    async fn post_one(&self, notice: &Notice) -> Result<(), String> {
        let _slot = self
            .inner
            .slots
            .acquire()
            .await
            .map_err(|_| "the notifier is closed".to_string())?;
        let body = serde_json::to_vec(notice).map_err(|e| format!("cannot encode: {e}"))?;
        let request = http::Request::post(self.inner.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                concat!("sagad/", env!("CARGO_PKG_VERSION")),
            )
            .header("idempotency-key", notice.delivery_id.as_str())
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let response =
            tokio::time::timeout(WEBHOOK_REQUEST_TIMEOUT, self.inner.client.request(request))
                .await
                .map_err(|_| format!("no answer within {WEBHOOK_REQUEST_TIMEOUT:?}"))?
                .map_err(|e| format!("{e:#}"))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("answered HTTP {}", response.status()))
        }
    }
}

/// Checks a webhook URL: `http(s)://host[:port][/path]`. Any other scheme or
/// a missing host is refused with the reason.
pub fn parse_url(text: &str) -> Result<Uri, String> {
    let uri: Uri = text
        .parse()
        .map_err(|e| format!("'{text}' is not a URL ({e}); expected http://host:port/path"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(format!(
                "'{text}' is not an http:// or https:// URL; expected http://host:port/path"
            ));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!(
            "'{text}' names no host; expected http://host:port/path"
        ));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_delays_double_from_the_first_up_to_the_cap_with_jitter() {
        let mut backoff = delivery_backoff();
        let mut nominal = WEBHOOK_INITIAL_BACKOFF;
        let mut total = Duration::ZERO;
        // One delay after each POST but the last.
        for attempt in 1..WEBHOOK_MAX_ATTEMPTS {
            let delay = backoff.next_backoff().expect("no time limit");
            let low = nominal.mul_f64(1.0 - WEBHOOK_BACKOFF_JITTER);
            // The crate draws up to one nanosecond past the band.
            let high = nominal.mul_f64(1.0 + WEBHOOK_BACKOFF_JITTER) + Duration::from_micros(1);
            assert!(
                (low..=high).contains(&delay),
                "delay after POST {attempt}: {delay:?} outside {low:?}..={high:?}"
            );
            total += delay;
            nominal = nominal
                .mul_f64(WEBHOOK_BACKOFF_MULTIPLIER)
                .min(WEBHOOK_MAX_BACKOFF);
        }
        assert_eq!(nominal, WEBHOOK_MAX_BACKOFF, "the cap is reached");
        // "About an hour" of retries, as the README says.
        let minutes = total.as_secs() / 60;
        assert!((40..=75).contains(&minutes), "{minutes} min of retries");
    }

    #[test]
    fn only_http_urls_with_a_host_are_accepted() {
        assert_eq!(
            parse_url("http://127.0.0.1:9000/hooks/sagad")
                .unwrap()
                .path(),
            "/hooks/sagad"
        );
        assert!(parse_url("http://alerts.internal").is_ok());
        assert_eq!(
            parse_url("https://x.example/h").unwrap().scheme_str(),
            Some("https")
        );
        let ftp = parse_url("ftp://x").unwrap_err();
        assert!(ftp.contains("not an http:// or https:// URL"), "{ftp}");
        assert!(parse_url("nonsense").is_err());
        assert!(parse_url("http:///path").is_err());
    }
}
