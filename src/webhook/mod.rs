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
//! **Several nodes on one PostgreSQL journal: once per saga, never per node.**
//! A ledger per node would let every node's start-up scan post every FAILED
//! saga it has no line for (posted by several), and a notice whose node died
//! would wait for that node to come back (lost meanwhile). So when the
//! journal keeps the notices ([`Journal::notices`]), the ledger is the
//! database's, and the saga's owner posts:
//!
//! ```text
//!   runner journals SagaFailed ─┐                    before each POST:
//!   start-up scan: my pending ──┼─▶ notify ─▶ task ─▶ due? (my saga, my epoch,
//!   sagas taken over, FAILED ───┘                     lease running, FAILED at
//!   (after a re-join: the scan)                        seq, not acknowledged)
//!                                                       │ yes      │ no: stop
//!                                                       ▼
//!                                                      POST ─2xx─▶ sagad.notice
//! ```
//!
//! - Only the owner posts, checked in the database holding a slot, right
//!   before each POST; a takeover moves the saga, and its notice with it, only
//!   from a node whose lease ran out and whose epoch was bumped (its own
//!   checks then say no). So two live nodes never post one notice.
//! - The node that takes a dead node's sagas over posts the notices of the
//!   FAILED ones the dead node did not get acknowledged
//!   ([`Notifier::post_taken_over`]): a node that dies after the webhook
//!   answered but before the acknowledgement was recorded causes one repeat,
//!   never a loss.
//! - An acknowledged notice is never posted again, by any node; the start-up
//!   scan reads this node's pending notices in one statement.
//!
//! Why the owner rather than one node holding a "webhook" duty for all: the
//! owner is already the one node allowed to write the saga, fencing already
//! moves it exactly once when a node dies, and the notice goes out the moment
//! the failure is durable, from the node that journaled it, with no node
//! polling the database for other nodes' failures.
//!
//! Why the retries live in memory, unlike a step's (whose due time is journaled,
//! `saga::retry`): nothing depends on when the next POST goes out, and what
//! must survive a restart is already durable, the failure in the journal and
//! the acknowledgement in the ledger. A restart (or a takeover) posts every
//! unacknowledged notice again, from a fresh backoff. So the delays are a plain
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
    journal::{Journal, ListQuery, Notices},
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
/// Tries to record an acknowledgement in a shared journal before giving up
/// (the notice is then posted again by the next scan of its owner).
const RECORD_TRIES: u32 = 3;

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
    /// Where acknowledgements are kept, and who says a notice is due.
    acks: Acks,
    /// Notices queued or being posted, so a scan and a runner never post one twice
    /// at once. A std mutex: no await inside.
    pending: Mutex<HashSet<DeliveryKey>>,
    slots: Semaphore,
    metrics: Metrics,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

/// Where the acknowledged notices are kept.
enum Acks {
    /// This process's ledger file in the data directory (`ledger.rs`): the
    /// journal is this process's alone (sled). A std mutex: held only for
    /// in-memory checks or inside `spawn_blocking`.
    File(Mutex<ledger::Ledger>),
    /// The journal several nodes share keeps them ([`Journal::notices`]),
    /// and says before each POST whether the notice is this node's to post.
    Journal(Arc<dyn Notices>),
}

/// How one try at a notice went.
enum Attempt {
    /// The webhook answered 2xx.
    Delivered,
    /// The POST failed: why.
    Failed(String),
    /// Not posted: the notice is not this node's to post (any more).
    NotDue,
    /// Not posted: whether it is this node's to post could not be told (why).
    Unchecked(String),
}

impl Notifier {
    /// A notifier posting to `url` (an `https://` one with `tls`'s
    /// webhook roots), keeping its acknowledgements in `notices` when the
    /// journal keeps them for several nodes ([`Journal::notices`]), else in
    /// its ledger in `data_dir`. Delivery stops when `shutdown` is
    /// cancelled; [`Notifier::stopped`] waits for it.
    pub async fn open(
        url: Uri,
        tls: &ClientTls,
        data_dir: &std::path::Path,
        notices: Option<Arc<dyn Notices>>,
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
        let acks = match notices {
            Some(notices) => Acks::Journal(notices),
            None => Acks::File(Mutex::new(open_ledger(data_dir).await?)),
        };
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Notifier {
            inner: Arc::new(Inner {
                url,
                client,
                acks,
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

    /// Posts every notice of `journal` the webhook has not acknowledged and
    /// this node must post: with its own ledger, every FAILED saga whose
    /// failure is not in it (then the ledger forgets the sagas that are no
    /// longer FAILED); with a journal several nodes share, this node's
    /// pending notices ([`Notices::pending`]). Run once per start, after
    /// recovery, and again after a re-join.
    pub async fn redeliver(&self, journal: &dyn Journal) -> Result<usize> {
        let posted = match &self.inner.acks {
            Acks::File(_) => self.redeliver_unrecorded(journal).await?,
            Acks::Journal(notices) => {
                let mut posted = 0;
                for (id, seq) in notices.pending().await? {
                    if let Some(notice) = failed_notice(journal, id).await?
                        && notice.key.seq == seq
                        && self.notify(notice)
                    {
                        posted += 1;
                    }
                }
                posted
            }
        };
        self.inner.metrics.webhook_redelivered(posted);
        Ok(posted)
    }

    /// [`Notifier::redeliver`] with this process's own ledger.
    async fn redeliver_unrecorded(&self, journal: &dyn Journal) -> Result<usize> {
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
                let Some(notice) = failed_notice(journal, summary.id).await? else {
                    continue;
                };
                let acked = self.recorded_here(&notice.key);
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
        tokio::task::spawn_blocking(move || match &inner.acks {
            Acks::File(ledger) => ledger
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .compact(&still_failed),
            Acks::Journal(_) => Ok(()),
        })
        .await
        .map_err(|e| Error::Unavailable(format!("webhook ledger task failed: {e}")))?
        .map_err(|source| Error::Io {
            what: "cannot compact the webhook ledger".into(),
            source,
        })?;
        Ok(posted)
    }

    /// Posts, in the background, the notices of the FAILED sagas among
    /// `sagas`, which this node just took over from a dead one
    /// (`engine/ownership.rs`): whatever their old owner did not get
    /// acknowledged is this node's to post now. Each is checked before its
    /// POST, as every notice in a shared journal is.
    pub fn post_taken_over(&self, journal: Arc<dyn Journal>, sagas: Vec<SagaId>) {
        let notifier = self.clone();
        let shutdown = self.inner.shutdown.clone();
        self.inner.tracker.spawn(async move {
            let mut posted = 0;
            for id in sagas {
                if shutdown.is_cancelled() {
                    return;
                }
                match failed_notice(&*journal, id).await {
                    Ok(Some(notice)) => posted += usize::from(notifier.notify(notice)),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(saga = %id, error = %e, "cannot read a FAILED saga taken over; its notice is posted at the next start")
                    }
                }
            }
            if posted > 0 {
                tracing::info!(notices = posted, "posting the on-failed notices of FAILED sagas taken over");
            }
        });
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

    /// Whether this process's own ledger has `key` (never, with a shared
    /// journal's notices: those are checked before each POST instead).
    fn recorded_here(&self, key: &DeliveryKey) -> bool {
        match &self.inner.acks {
            Acks::File(ledger) => ledger
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(key),
            Acks::Journal(_) => false,
        }
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
            let attempt = tokio::select! {
                _ = shutdown.cancelled() => break false,
                attempt = self.attempt(&notice) => attempt,
            };
            // Without a time limit the backoff never runs out; the cap is
            // only a fallback that cannot be reached.
            let mut next_delay = || backoff.next_backoff().unwrap_or(WEBHOOK_MAX_BACKOFF);
            let delay = match attempt {
                Attempt::Delivered => break true,
                Attempt::NotDue => {
                    tracing::debug!(saga = %key.saga, delivery_id = %key, "the notice is not this node's to post (acknowledged, the saga retried, or another node's now)");
                    break false;
                }
                Attempt::Unchecked(why) => {
                    let delay = next_delay();
                    tracing::warn!(saga = %key.saga, delivery_id = %key, error = %why, retry_in_ms = delay.as_millis() as u64, "cannot tell whether the on-failed notice is this node's to post; asking again");
                    delay
                }
                Attempt::Failed(why) if notice.delivery_attempt >= WEBHOOK_MAX_ATTEMPTS => {
                    tracing::error!(saga = %key.saga, delivery_id = %key, attempts = notice.delivery_attempt, error = %why, "on-failed webhook gave up; the notice is posted again at the next start");
                    self.inner.metrics.webhook_gave_up();
                    break false;
                }
                Attempt::Failed(why) => {
                    let delay = next_delay();
                    tracing::warn!(saga = %key.saga, delivery_id = %key, attempt = notice.delivery_attempt, error = %why, retry_in_ms = delay.as_millis() as u64, "on-failed webhook POST failed; retrying");
                    notice.delivery_attempt += 1;
                    delay
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break false,
                _ = tokio::time::sleep(delay) => {}
            }
        };
        if delivered {
            self.record(key).await;
        }
        let pending = {
            let mut pending = self.lock_pending();
            pending.remove(&key);
            pending.len()
        };
        self.inner.metrics.webhook_pending(pending);
    }

    /// One try: a free slot, then (with a shared journal's notices) whether
    /// the notice is still this node's to post, then the POST.
    async fn attempt(&self, notice: &Notice) -> Attempt {
        let Ok(_slot) = self.inner.slots.acquire().await else {
            return Attempt::Failed("the notifier is closed".into());
        };
        // Checked holding the slot, right before the POST: a check made
        // before a wait for a slot could be stale by the time of the POST.
        if let Acks::Journal(notices) = &self.inner.acks {
            match notices.due(notice.key.saga, notice.key.seq).await {
                Ok(true) => {}
                Ok(false) => return Attempt::NotDue,
                Err(e) => return Attempt::Unchecked(e.to_string()),
            }
        }
        let posted = self.post_one(notice).await;
        self.inner.metrics.webhook_attempt(posted.is_ok());
        match posted {
            Ok(()) => Attempt::Delivered,
            Err(why) => Attempt::Failed(why),
        }
    }

    /// Records that the webhook acknowledged `key`; a failure is logged (the
    /// notice is then posted again: at the next start, or by its next owner).
    async fn record(&self, key: DeliveryKey) {
        let recorded = match &self.inner.acks {
            Acks::File(_) => {
                let inner = self.inner.clone();
                tokio::task::spawn_blocking(move || match &inner.acks {
                    Acks::File(ledger) => ledger
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .record(key)
                        .map_err(|e| e.to_string()),
                    Acks::Journal(_) => Ok(()),
                })
                .await
                .unwrap_or_else(|e| Err(format!("webhook ledger task failed: {e}")))
            }
            Acks::Journal(notices) => {
                let mut tries = 0;
                loop {
                    tries += 1;
                    match notices.acknowledged(key.saga, key.seq).await {
                        Ok(()) => break Ok(()),
                        Err(e) if tries >= RECORD_TRIES => break Err(e.to_string()),
                        Err(e) => {
                            tracing::warn!(saga = %key.saga, error = %e, "cannot record the webhook acknowledgement yet; trying again");
                            tokio::time::sleep(WEBHOOK_INITIAL_BACKOFF * tries).await;
                        }
                    }
                }
            }
        };
        match recorded {
            Ok(()) => {
                tracing::info!(saga = %key.saga, delivery_id = %key, "FAILED saga notice delivered to the on-failed webhook")
            }
            Err(e) => {
                tracing::error!(saga = %key.saga, error = %e, "cannot record the webhook acknowledgement; the notice is posted again at the next start")
            }
        }
    }

    /// One POST (the caller holds a slot); `Err` says why it did not count.
    async fn post_one(&self, notice: &Notice) -> Result<(), String> {
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

/// Opens this process's ledger in `data_dir`, off the async workers.
async fn open_ledger(data_dir: &std::path::Path) -> Result<ledger::Ledger> {
    let dir = data_dir.to_path_buf();
    tokio::task::spawn_blocking(move || ledger::Ledger::open(&dir))
        .await
        .map_err(|e| Error::Unavailable(format!("webhook ledger task failed: {e}")))?
        .map_err(|source| Error::Io {
            what: format!(
                "cannot open the webhook ledger {}",
                data_dir.join(LEDGER_FILE).display()
            ),
            source,
        })
}

/// The notice of saga `id`'s failure, read from `journal` and folded; `None`
/// when the saga is not FAILED, or its history does not fold (`journal
/// check` reports damaged histories).
async fn failed_notice(journal: &dyn Journal, id: SagaId) -> Result<Option<Notice>> {
    let events = journal.read_saga(id).await?;
    Ok(SagaState::fold(&events)
        .ok()
        .and_then(|state| Notice::for_failed(&state)))
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
