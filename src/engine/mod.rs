//! The engine: runs sagas to a terminal state, durably.
//!
//! Each unfinished saga is owned by one runner task (`runner.rs`) that alone
//! holds its state and is the only writer of its events, or, while it waits a
//! long time for its next attempt, is *parked* (`parking.rs`): no task, only its
//! due time in the engine's timer; right after a start-up it may also be
//! *unread*: claimed by recovery, and waiting to be read back from the
//! journal (`recovery.rs`). The engine keeps the owner of every saga
//! (`owners.rs`) so commands (cancel, retry, wait, watch) reach the runner,
//! waking a parked saga first; reads (get, list) go to the journal, which holds
//! exactly what is durable. A start (`start.rs`) claims a fresh saga and hands
//! it to a new runner, whose first append is `SagaStarted`. In a cluster, a
//! cancel or retry of a saga another node runs is left in the journal for
//! that node, which carries it out (`relay.rs`).
//!
//! Invariants:
//! - At most one runner per saga: a saga is claimed for its runner before the
//!   runner is spawned, under the owners lock, and the runner releases it only
//!   after its last append (or hands the saga to the timer when it parks, under
//!   the same lock).
//! - A saga that is neither running, parked nor unread in the owners is
//!   terminal, or the coordinator is shutting down (or has not claimed its
//!   sagas yet, when the API does not serve yet).
//! - Nothing is answered before it is durable: a start returns once `SagaStarted`
//!   is journaled, a cancel once `CancelRequested` is.
//! - No registration is journaled whose endpoint is the coordinator's own
//!   listener or a host `--participant-allow` refuses (`participant::guard`).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, OnceLock, RwLock},
    time::Duration,
};

use tokio::sync::{Notify, broadcast, mpsc, oneshot};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    Error, Result,
    error::JournalFault,
    journal::{Journal, relay::OwnerCall},
    metrics::Metrics,
    participant::{
        Participants,
        guard::{self, AllowList, HostCheck},
        limits::{Admission, Gates},
    },
    saga::{
        Definition, Endpoint, EndpointChange, Event, EventKind, Offset, Participant, Principal,
        SagaId, SagaState, SagaStatus, StepDefaults, Timestamp,
        limits::Limits,
        refresh::{self, RefreshError},
    },
    webhook::Notifier,
};

mod cluster;
mod feed;
mod observe;
mod owners;
mod ownership;
mod parking;
pub mod recovery;
mod relay;
mod runner;
mod start;
mod watch;

/// Which sagas [`Engine::list`] lists: the journal's query, which the engine
/// passes on as it is (its `limit` capped, its page continued).
pub use crate::journal::ListQuery;
pub use cluster::NO_CLUSTER;
pub use feed::{CURSOR_PATIENCE, FeedItem, FeedQuery};
pub use parking::PARK_AFTER;
use relay::Here;
pub use start::{SagaSource, StartRequest, Started, When};
pub use watch::WatchItem;

/// The definition name recorded for sagas started with inline steps.
pub const INLINE_DEFINITION: &str = "inline";
/// Longest accepted idempotency key, in bytes.
pub const IDEMPOTENCY_KEY_MAX_LEN: usize = 256;
/// Longest accepted cancel reason, in bytes: it is journaled and shown.
pub const REASON_MAX_LEN: usize = 1024;
/// Most participants that can be registered: each name is a label value of
/// the call metrics, and a registration loop must not explode their series.
pub const PARTICIPANTS_MAX: usize = 1000;
/// Commands that can queue for one runner.
pub(crate) const RUNNER_COMMAND_CAPACITY: usize = 16;
/// Sagas [`Engine::list_kept`] reads from the listing at a time.
const LIST_KEPT_BATCH: usize = 200;
/// How often stalled sagas are checked for resumption.
const HEAL_INTERVAL: Duration = Duration::from_millis(250);

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// What steps inherit when neither they nor their participant say otherwise.
    pub defaults: StepDefaults,
    /// Largest saga payload accepted, and largest participant answer.
    pub max_payload_bytes: usize,
    /// How long in-flight participant calls may run on after shutdown starts.
    pub shutdown_grace: Duration,
    /// The shortest wait for a next attempt that parks a saga (no task while it
    /// waits; see `parking.rs`). [`PARK_AFTER`] unless a test needs sagas to
    /// park sooner; not an operator setting.
    pub park_after: Duration,
    /// Whether the per-saga metrics are recorded (`Metrics::unread` when not).
    /// `server::start` sets it from whether `/metrics` is served: nothing
    /// else reads them.
    pub record_metrics: bool,
    /// The coordinator's own gRPC listener, which no participant endpoint may
    /// be (`participant::guard`); `server::start` sets it once bound.
    pub own_address: Option<std::net::SocketAddr>,
    /// The hosts participant endpoints may name (`--participant-allow`,
    /// `participant::guard`): checked at registration here, and at every
    /// connection by the caller `server::start` builds. `None`: any host.
    pub participant_allow: Option<AllowList>,
    /// How long a Subscribe cursor past the last durable offset may take to
    /// be reached ([`CURSOR_PATIENCE`]; tests that send hostile cursors
    /// by the thousand set less).
    pub cursor_patience: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            defaults: StepDefaults::default(),
            max_payload_bytes: 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
            park_after: PARK_AFTER,
            record_metrics: true,
            own_address: None,
            participant_allow: None,
            cursor_patience: feed::CURSOR_PATIENCE,
        }
    }
}

/// The owners' end of a runner's command channel.
///
/// Commands travel boxed: a tokio channel allocates its first block of 32
/// slots when it is created, and every saga with a runner has one (100,000
/// sagas waiting in backoff have 100,000), so the slot is kept at 8 bytes
/// (a 288-byte block) rather than `Command`'s 32 (1,056 bytes). Commands are
/// rare; their allocation costs nothing that matters.
type CommandTx = mpsc::Sender<Box<Command>>;
/// The runner's end of its command channel (see [`CommandTx`]).
type CommandRx = mpsc::Receiver<Box<Command>>;

/// A command to the runner that owns a saga.
enum Command {
    Cancel {
        reason: String,
        /// Who asked, journaled with the cancel.
        by: Principal,
        reply: oneshot::Sender<Result<SagaState>>,
    },
    Retry {
        reply: oneshot::Sender<Result<SagaState>>,
    },
    /// Answer with the terminal state once the saga gets there.
    Wait { reply: oneshot::Sender<SagaState> },
    /// Answer with a receiver of the saga's events from now on.
    Watch {
        reply: oneshot::Sender<broadcast::Receiver<Event>>,
    },
}

/// The engine, cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// What every clone of the engine shares.
///
/// Four locks, the last four fields, each guarding one thing:
/// - `participants` (std `RwLock`): read at every start to resolve its steps,
///   written once per registration. Never held across an await.
/// - `registering` (tokio `Mutex`): held across one registration's journal
///   write, so the map and the journal agree on which registration was last.
///   The only lock held across an await, and only registrations take it.
/// - `owners` (std `Mutex`): taken for a few map operations at every start,
///   command, park, wake and runner end; no method of [`owners::Owners`] awaits.
/// - `stalled` (std `Mutex`): taken when a write failure stops a runner and by
///   `heal`. No await inside.
///
/// Only `registering` and then `participants` are ever held together (a
/// registration updates the map during its turn). No other two ever are: each
/// std lock is taken and released in one statement or one block that takes no
/// other lock, so there is no lock order to get wrong.
struct Inner {
    journal: Arc<dyn Journal>,
    /// How participant endpoints are called (gRPC, or a test's fault injector).
    caller: Arc<dyn Participants>,
    config: EngineConfig,
    /// The definitions loaded at start, by name; never changed after.
    definitions: BTreeMap<String, Definition>,
    /// Told when a parked saga is due earlier than any before it (the timer
    /// task shortens its sleep).
    timer_changed: Notify,
    /// Every task the engine spawns (runners, timer, heal), waited for at shutdown.
    tracker: TaskTracker,
    /// Cancelled when the engine stops: no new work, no new calls.
    shutdown: CancellationToken,
    /// This engine's own recorder (see `crate::metrics` for why not a global one).
    metrics: Metrics,
    /// Told about every saga that becomes FAILED (the on-failed webhook), if set.
    on_failed: OnceLock<Notifier>,
    /// The registered participants, by name, as the journal holds them.
    participants: RwLock<HashMap<String, Participant>>,
    /// Taken by one registration at a time (see above).
    registering: tokio::sync::Mutex<()>,
    /// Where calls wait for their participant's limits (a std lock inside,
    /// held for a map lookup only).
    gates: Gates,
    /// The owner of each unfinished saga: its runner's command channel, or the
    /// timer when parked.
    owners: Mutex<owners::Owners>,
    /// Sagas whose runner stopped because the journal could not write; they are
    /// resumed from the journal once it can (see `heal`).
    stalled: Mutex<Stalled>,
}

/// Sagas stopped by a journal failure, resumed by `heal` once it works
/// again; each with whether it is still to be counted in the active gauge
/// when it resumes (it never was: its first read since start-up or takeover
/// is what failed).
#[derive(Default)]
struct Stalled(HashMap<SagaId, bool>);

impl Stalled {
    /// Adds a saga; one still to be counted stays so.
    fn again(&mut self, id: SagaId, uncounted: bool) {
        *self.0.entry(id).or_insert(uncounted) |= uncounted;
    }

    fn drain(&mut self) -> Vec<(SagaId, bool)> {
        self.0.drain().collect()
    }
}

impl Engine {
    /// An engine over `journal`, with the participants the journal holds.
    /// Unfinished sagas are not resumed until [`recovery::recover`] runs.
    pub async fn new(
        journal: Arc<dyn Journal>,
        caller: Arc<dyn Participants>,
        definitions: Vec<Definition>,
        config: EngineConfig,
    ) -> Result<Self> {
        let participants = participants_of(journal.as_ref()).await?;
        if let Some(allow) = &config.participant_allow {
            warn_disallowed(allow, participants.values());
        }
        let metrics = if config.record_metrics {
            Metrics::new()
        } else {
            Metrics::unread()
        };
        if metrics.recording() {
            journal.observe_flushes(metrics.flush_observer());
        }
        // The journal is open and no saga was read yet.
        if let Some(heap) = crate::allocator::heap_stats() {
            metrics.heap_at_start(heap.allocated);
        }
        metrics.known_definitions(
            definitions
                .iter()
                .map(|d| d.name.as_str())
                .chain([INLINE_DEFINITION]),
        );
        let engine = Self {
            inner: Arc::new(Inner {
                journal,
                caller,
                config,
                definitions: definitions
                    .into_iter()
                    .map(|d| (d.name.clone(), d))
                    .collect(),
                timer_changed: Notify::new(),
                tracker: TaskTracker::new(),
                shutdown: CancellationToken::new(),
                metrics,
                on_failed: OnceLock::new(),
                participants: RwLock::new(participants),
                registering: tokio::sync::Mutex::new(()),
                gates: Gates::default(),
                owners: Mutex::new(owners::Owners::default()),
                stalled: Mutex::new(Stalled::default()),
            }),
        };
        engine.inner.tracker.spawn(engine.clone().heal());
        engine.inner.tracker.spawn(engine.clone().metrics_upkeep());
        engine.inner.tracker.spawn(engine.clone().run_timer());
        if let Some(changes) = engine.inner.journal.ownership_changes() {
            engine
                .inner
                .tracker
                .spawn(ownership::follow(engine.clone(), changes));
        }
        if engine.shares_its_journal() {
            engine
                .inner
                .tracker
                .spawn(engine.clone().refresh_participants());
        }
        if let Some(relay) = engine.inner.journal.relay() {
            engine
                .inner
                .tracker
                .spawn(engine.clone().serve_relayed(relay));
        }
        Ok(engine)
    }

    /// Resumes stalled sagas once the journal writes again; runs until shutdown.
    async fn heal(self) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(HEAL_INTERVAL) => {}
                _ = self.inner.shutdown.cancelled() => return,
            }
            if self.inner.journal.write_failure().is_some() {
                continue;
            }
            let stalled = self.lock_stalled().drain();
            for (id, uncounted) in stalled {
                match recovery::resume(&self, id, uncounted).await {
                    Ok(_) => tracing::info!(saga = %id, "saga resumed after the journal recovered"),
                    // The journal writes again, so whatever was written is
                    // durable: a saga it does not hold never started (its
                    // StartSaga failed, and said so).
                    Err(Error::NotFound(_)) => {
                        tracing::debug!(saga = %id, "a saga whose start was never journaled is dropped");
                    }
                    Err(e) => {
                        // Tried again every HEAL_INTERVAL: a journal that
                        // still cannot read is no news each time.
                        if e.is_retryable() {
                            tracing::debug!(saga = %id, error = %e, "cannot resume saga yet");
                        } else {
                            tracing::error!(saga = %id, error = %e, "cannot resume saga yet");
                        }
                        self.lock_stalled().again(id, uncounted);
                    }
                }
            }
        }
    }

    fn lock_stalled(&self) -> std::sync::MutexGuard<'_, Stalled> {
        self.inner.stalled.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes that a saga's runner stopped on a journal write failure.
    fn stall(&self, id: SagaId) {
        self.lock_stalled().again(id, false);
    }

    /// Notes that a saga could not be read back at start-up or takeover:
    /// it is resumed like a stalled one, and counted in the active gauge then.
    fn stall_uncounted(&self, id: SagaId) {
        self.lock_stalled().again(id, true);
    }

    /// Refuses new work while the journal cannot write.
    fn check_writable(&self) -> Result<()> {
        self.check_open()?;
        match self.inner.journal.write_failure() {
            Some(why) => Err(Error::Unavailable(format!(
                "the journal cannot write to disk ({why}); new work is refused until it can, and running sagas wait"
            ))),
            None => Ok(()),
        }
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The journal under the engine.
    pub fn journal(&self) -> &Arc<dyn Journal> {
        &self.inner.journal
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.shutdown.is_cancelled() {
            return Err(Error::Unavailable(
                "the coordinator is shutting down".into(),
            ));
        }
        Ok(())
    }

    /// Creates or replaces a participant, durably, with who registered it
    /// (`participant.registered_by`). Replacing one with other endpoints is
    /// logged at WARN with both and the principal: pointing a participant
    /// elsewhere sends it the next sagas' payloads.
    pub async fn register_participant(&self, participant: Participant) -> Result<Participant> {
        self.check_writable()?;
        if let Some(own) = self.inner.config.own_address {
            for (_, endpoint) in participant.endpoints() {
                if let Some(why) = guard::own_address(endpoint, own) {
                    return Err(Error::InvalidArgument(format!(
                        "participant '{}': {why}",
                        participant.name
                    )));
                }
            }
        }
        // Before the registration's turn: resolving a name may take a while,
        // and holds up no other registration.
        if let Some(allow) = &self.inner.config.participant_allow {
            for (what, endpoint) in participant.endpoints() {
                guard::admit(allow, endpoint).await.map_err(|why| {
                    Error::InvalidArgument(format!(
                        "participant '{}': {what} {endpoint}: {why}",
                        participant.name
                    ))
                })?;
            }
        }
        // A policy that cannot resolve against the server defaults (an initial
        // interval above the default cap, say) would fail every later start.
        participant
            .retry
            .resolve(&self.inner.config.defaults.retry)
            .map_err(|e| {
                Error::InvalidArgument(format!("participant '{}': {e}", participant.name))
            })?;
        let _one_at_a_time = self.inner.registering.lock().await;
        {
            let registered = self
                .inner
                .participants
                .read()
                .unwrap_or_else(|p| p.into_inner());
            if registered.len() >= PARTICIPANTS_MAX && !registered.contains_key(&participant.name) {
                return Err(Error::FailedPrecondition(format!(
                    "{PARTICIPANTS_MAX} participants are registered, the most there can be (each is a metrics label); re-register one of them instead"
                )));
            }
        }
        self.inner
            .journal
            .put_participant(participant.clone())
            .await?;
        let previous = self
            .inner
            .participants
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(participant.name.clone(), participant.clone());
        log_registration(previous.as_ref(), &participant);
        Ok(participant)
    }

    /// The limits `participant` is registered with now (none if it is not).
    fn limits_of(&self, participant: &str) -> Limits {
        self.inner
            .participants
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(participant)
            .map(|p| p.limits)
            .unwrap_or_default()
    }

    /// Waits until `participant`'s `limits` let one more call go, counted
    /// in its queue's metrics (also when the wait is given up: shutdown).
    async fn wait_for_limits(&self, participant: &str, limits: Limits) -> Admission {
        struct Queued<'a>(&'a Metrics, &'a str);
        impl Drop for Queued<'_> {
            fn drop(&mut self) {
                self.0.participant_queued(self.1, -1.0);
            }
        }
        let metrics = &self.inner.metrics;
        metrics.participant_queued(participant, 1.0);
        let _queued = Queued(metrics, participant);
        let started = std::time::Instant::now();
        let admitted = self.inner.gates.admit(participant, limits).await;
        metrics.participant_waited(participant, started.elapsed());
        admitted
    }

    /// Every registered participant, by name.
    pub fn participants(&self) -> Vec<Participant> {
        let participants = self
            .inner
            .participants
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = participants.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The definitions loaded at start, by name.
    pub fn definitions(&self) -> Vec<Definition> {
        self.inner.definitions.values().cloned().collect()
    }

    /// A saga as the journal holds it.
    pub async fn get(&self, id: SagaId) -> Result<SagaState> {
        let events = self.inner.journal.read_saga(id).await?;
        if events.is_empty() {
            return Err(Error::NotFound(format!("saga {id} not found")));
        }
        Ok(SagaState::fold(&events)?)
    }

    /// Sagas matching `query`, newest first, and the cursor of the next page.
    pub async fn list(&self, mut query: ListQuery) -> Result<(Vec<SagaState>, Option<SagaId>)> {
        let limit = query.limit;
        query.limit = limit + 1;
        let mut summaries = self.inner.journal.list(&query).await?;
        let more = summaries.len() > limit;
        summaries.truncate(limit);
        let mut sagas = Vec::with_capacity(summaries.len());
        for summary in &summaries {
            match self.get(summary.id).await {
                Ok(saga) => sagas.push(saga),
                // Archived by retention since the listing was read.
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let next = if more {
            summaries.last().map(|s| s.id)
        } else {
            None
        };
        Ok((sagas, next))
    }

    /// As [`Engine::list`], of only the sagas `keep` accepts (a starter's
    /// own): reads the listing in batches until the page is full or the
    /// listing ends. Every saga it passes over is read, so a caller that
    /// keeps few of many sagas pays for the ones it skips.
    pub async fn list_kept(
        &self,
        query: ListQuery,
        keep: impl Fn(&SagaState) -> bool,
    ) -> Result<(Vec<SagaState>, Option<SagaId>)> {
        let limit = query.limit;
        let mut kept = Vec::new();
        let mut batch = ListQuery {
            limit: LIST_KEPT_BATCH,
            ..query
        };
        loop {
            let (sagas, next) = self.list(batch.clone()).await?;
            kept.extend(sagas.into_iter().filter(|s| keep(s)));
            if kept.len() > limit {
                kept.truncate(limit);
                let next = kept.last().map(|s| s.id);
                return Ok((kept, next));
            }
            match next {
                Some(before) => batch.before = Some(before),
                None => return Ok((kept, None)),
            }
        }
    }

    /// Cancels a running saga: it stops going forward (once any in-flight call
    /// returned) and compensates what it did. `by` is journaled with it. In
    /// a cluster, a saga another node runs is cancelled by its owner
    /// (`relay.rs`).
    pub async fn cancel(&self, id: SagaId, reason: String, by: Principal) -> Result<SagaState> {
        if reason.len() > REASON_MAX_LEN {
            return Err(Error::InvalidArgument(format!(
                "reason is {} bytes; at most {REASON_MAX_LEN} are allowed",
                reason.len()
            )));
        }
        match self.cancel_here(id, &reason, &by).await {
            Here::Answered(answer) => answer,
            Here::Elsewhere => {
                self.relay_to_owner(id, OwnerCall::Cancel { reason, by })
                    .await
            }
        }
    }

    /// [`Engine::cancel`] of a saga this node runs; [`Here::Elsewhere`]
    /// for an unfinished saga it does not (another node's, in a cluster).
    async fn cancel_here(&self, id: SagaId, reason: &str, by: &Principal) -> Here<SagaState> {
        loop {
            let asked = self
                .ask(id, |reply| Command::Cancel {
                    reason: reason.to_string(),
                    by: by.clone(),
                    reply,
                })
                .await;
            if let Some(answer) = asked {
                return Here::Answered(answer);
            }
            let saga = match self.get(id).await {
                Ok(saga) => saga,
                Err(e) => return Here::Answered(Err(e)),
            };
            if self.is_owned(id) {
                // A runner is finishing, or a retry just started one: ask again.
                tokio::task::yield_now().await;
                continue;
            }
            if !saga.status.is_terminal() && self.shares_its_journal() {
                return Here::Elsewhere;
            }
            return Here::Answered(Err(self.not_running(
                &saga,
                "cancelled",
                "RUNNING or SCHEDULED",
            )));
        }
    }

    /// Resumes compensating a FAILED saga, with a fresh attempt budget; one
    /// that failed past its point of no return resumes going forward, its
    /// step that gave up with a fresh budget. With
    /// `refresh_endpoints`, the steps still to be called first take their
    /// participants' current endpoints (`saga::refresh`), journaled
    /// in the same append as the retry; a participant no longer registered is
    /// `NotFound`, and nothing changes. `by` is journaled with the retry. In
    /// a cluster, a saga another node owns is retried by its owner
    /// (`relay.rs`).
    pub async fn retry(
        &self,
        id: SagaId,
        refresh_endpoints: bool,
        by: Principal,
    ) -> Result<SagaState> {
        self.check_open()?;
        match self.retry_here(id, refresh_endpoints, &by).await {
            Here::Answered(answer) => answer,
            Here::Elsewhere => {
                let call = OwnerCall::Retry {
                    refresh_endpoints,
                    by,
                };
                self.relay_to_owner(id, call).await
            }
        }
    }

    /// [`Engine::retry`] of a saga this node owns; [`Here::Elsewhere`] for
    /// a FAILED saga another node owns.
    async fn retry_here(
        &self,
        id: SagaId,
        refresh_endpoints: bool,
        by: &Principal,
    ) -> Here<SagaState> {
        loop {
            if let Some(answer) = self.ask(id, |reply| Command::Retry { reply }).await {
                return Here::Answered(answer);
            }
            let saga = match self.get(id).await {
                Ok(saga) => saga,
                Err(e) => return Here::Answered(Err(e)),
            };
            if saga.status != SagaStatus::Failed {
                if self.is_owned(id) {
                    tokio::task::yield_now().await;
                    continue;
                }
                // Its runner is on another node, and answers there.
                if !saga.status.is_terminal() && self.shares_its_journal() {
                    return Here::Elsewhere;
                }
                return Here::Answered(Err(self.not_running(&saga, "retried", "FAILED")));
            }
            match self.owned_by_another_node(id).await {
                Ok(false) => {}
                Ok(true) => return Here::Elsewhere,
                Err(e) => return Here::Answered(Err(e)),
            }
            // Claim the saga: whoever inserts the runner first resumes it.
            let (command_tx, command_rx) = mpsc::channel(RUNNER_COMMAND_CAPACITY);
            if !self.lock_owners().claim(id, command_tx) {
                continue;
            }
            // Read again now that no one else can resume it.
            let saga = match self.get(id).await {
                Ok(saga) if saga.status == SagaStatus::Failed => saga,
                other => {
                    self.lock_owners().release(id);
                    return Here::Answered(
                        other.and_then(|saga| Err(self.not_running(&saga, "retried", "FAILED"))),
                    );
                }
            };
            let refresh = if refresh_endpoints {
                match self.endpoint_changes(&saga) {
                    Ok(changes) => changes,
                    Err(e) => {
                        self.lock_owners().release(id);
                        return Here::Answered(Err(e));
                    }
                }
            } else {
                Vec::new()
            };
            let at = Timestamp::now();
            let refreshed = !refresh.is_empty();
            // Past its point of no return a saga goes forward again; else it
            // resumes compensating.
            let retry = match saga.can_turn_back() {
                true => EventKind::RetryRequested {
                    by: Some(by.clone()),
                },
                false => EventKind::ResumeRequested {
                    by: Some(by.clone()),
                },
            };
            let kinds = (refreshed)
                .then(|| EventKind::EndpointsRefreshed { changes: refresh })
                .into_iter()
                .chain([retry]);
            let mut state = saga;
            let mut events = Vec::new();
            for kind in kinds {
                let event = Event {
                    saga: id,
                    seq: state.last_seq + 1,
                    offset: Offset::ZERO,
                    at,
                    kind,
                };
                if let Err(e) = state.apply(&event) {
                    self.lock_owners().release(id);
                    return Here::Answered(Err(e.into()));
                }
                events.push(event);
            }
            let (ack_tx, ack_rx) = oneshot::channel();
            let ack = Some(runner::Ack::State(ack_tx));
            self.spawn_runner(state, events, command_rx, ack, vec![]);
            let answer = ack_rx.await.unwrap_or_else(|_| {
                Err(Error::Unavailable(
                    "the coordinator is shutting down".into(),
                ))
            });
            // Taken over between the look at its owner and the append.
            if matches!(&answer, Err(e) if e.journal_fault() == Some(JournalFault::Moved)) {
                return Here::Elsewhere;
            }
            if answer.is_ok() {
                tracing::info!(saga = %id, refreshed, by = %by, "saga retried by an operator");
            }
            return Here::Answered(answer);
        }
    }

    /// The endpoint changes that bring a FAILED saga's remaining compensations
    /// to the participants registered now.
    fn endpoint_changes(&self, saga: &SagaState) -> Result<Vec<EndpointChange>> {
        let participants = self
            .inner
            .participants
            .read()
            .unwrap_or_else(|p| p.into_inner());
        refresh::endpoint_changes(saga, |name| participants.get(name)).map_err(|e| match e {
            RefreshError::UnknownParticipant { .. } => Error::NotFound(e.to_string()),
            RefreshError::NotFailed { .. } => Error::FailedPrecondition(e.to_string()),
        })
    }

    /// Waits until a saga is terminal and returns it.
    pub async fn wait(&self, id: SagaId) -> Result<SagaState> {
        loop {
            if let Some(saga) = self.ask(id, |reply| Command::Wait { reply }).await {
                return Ok(saga);
            }
            let saga = self.get(id).await?;
            if saga.status.is_terminal() {
                return Ok(saga);
            }
            if !self.is_owned(id) {
                return Err(Error::Unavailable(format!(
                    "the coordinator is shutting down before saga {id} finished; it resumes at the next start"
                )));
            }
            tokio::task::yield_now().await;
        }
    }

    /// Stops the engine: no new calls start, in-flight calls get the grace period,
    /// every runner journals what it knows, and the journal is flushed and closed.
    pub async fn shutdown(&self) -> Result<()> {
        self.inner.shutdown.cancel();
        self.inner.tracker.close();
        let grace = self.inner.config.shutdown_grace + Duration::from_secs(5);
        if tokio::time::timeout(grace, self.inner.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some sagas did not stop within the grace period");
        }
        self.inner.journal.close().await?;
        Ok(())
    }

    /// Sagas this engine owns right now: with a runner, or parked.
    pub fn active_sagas(&self) -> usize {
        self.lock_owners().len()
    }

    fn not_running(&self, saga: &SagaState, verb: &str, wanted: &str) -> Error {
        if saga.status.is_terminal() {
            let why = saga
                .error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default();
            Error::FailedPrecondition(format!(
                "saga {} is {}{why}; only a {wanted} saga can be {verb}",
                saga.id,
                saga.status.as_str()
            ))
        } else {
            Error::Unavailable("the coordinator is shutting down".into())
        }
    }

    fn lock_owners(&self) -> std::sync::MutexGuard<'_, owners::Owners> {
        self.inner.owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the saga is owned: it has a runner, or is parked or unread.
    fn is_owned(&self, id: SagaId) -> bool {
        self.lock_owners().contains(id)
    }

    /// Sends a command to the saga's runner (waking the saga if it is parked)
    /// and waits for the answer; `None` when the saga is not owned, or its runner
    /// stopped or parked before answering (callers look again and ask again).
    async fn ask<T>(
        &self,
        id: SagaId,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        match self.route(id, Box::new(make(reply)))? {
            parking::Delivery::Send(command_tx, command) => command_tx.send(command).await.ok()?,
            parking::Delivery::Queued => {}
        }
        answer.await.ok()
    }

    fn spawn_runner(
        &self,
        state: SagaState,
        pending: Vec<Event>,
        command_rx: CommandRx,
        ack: Option<runner::Ack>,
        waiters: Vec<oneshot::Sender<SagaState>>,
    ) {
        let runner = runner::Runner::new(self.clone(), state, pending, command_rx, ack, waiters);
        self.inner.tracker.spawn(runner.run());
    }
}
/// Logs a registration: at WARN when it moved an existing participant to
/// other endpoints, with the old ones, the new ones, and who did it.
fn log_registration(previous: Option<&Participant>, now: &Participant) {
    let shown = |e: &Option<Endpoint>| {
        e.as_ref()
            .map_or_else(|| "none".into(), ToString::to_string)
    };
    let by = now
        .registered_by
        .as_ref()
        .map_or_else(|| "unknown".to_string(), ToString::to_string);
    match previous {
        Some(old) if old.forward != now.forward || old.compensate != now.compensate => {
            tracing::warn!(
                name = %now.name,
                old_forward = %old.forward,
                old_compensate = %shown(&old.compensate),
                forward = %now.forward,
                compensate = %shown(&now.compensate),
                by = %by,
                "participant re-registered to other endpoints"
            );
        }
        _ => tracing::info!(
            name = %now.name,
            forward = %now.forward,
            compensate = %shown(&now.compensate),
            by = %by,
            "participant registered"
        ),
    }
}

/// Warns, at start, of each registered participant whose endpoint the
/// allow-list refuses by itself (an IP or a name it does not allow; names
/// that need DNS are left to the connection): it was registered before the
/// list was set, and every call of it will now be refused.
/// The participants `journal` holds, by name.
async fn participants_of(journal: &dyn Journal) -> Result<HashMap<String, Participant>> {
    Ok(journal
        .participants()
        .await?
        .into_iter()
        .map(|p| (p.name.clone(), p))
        .collect())
}

fn warn_disallowed<'a>(allow: &AllowList, participants: impl Iterator<Item = &'a Participant>) {
    for participant in participants {
        for (_, endpoint) in participant.endpoints() {
            let (host, _) = endpoint.host_port();
            if let HostCheck::Refused(why) = allow.host(&host) {
                tracing::warn!(
                    participant = %participant.name,
                    endpoint = %endpoint,
                    "a registered participant's {why}: its calls will not be made (register it again at an allowed host)"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stalled_saga_still_to_be_counted_stays_so() {
        let mut stalled = Stalled::default();
        let (first_read_failed, write_failed) = (SagaId::generate(), SagaId::generate());
        stalled.again(first_read_failed, true);
        // A write failure of it later does not make heal forget to count it.
        stalled.again(first_read_failed, false);
        stalled.again(write_failed, false);
        let mut drained = stalled.drain();
        drained.sort();
        let mut expected = vec![(first_read_failed, true), (write_failed, false)];
        expected.sort();
        assert_eq!(drained, expected);
        assert!(stalled.drain().is_empty());
    }
}
