//! Metrics: what sagad counts, and (in `http.rs`) the endpoint that exports it
//! in the Prometheus text format at `http://<--metrics-listen>/metrics`.
//!
//! ## What is exported
//!
//! | name | type | labels | meaning |
//! | --- | --- | --- | --- |
//! | `sagad_sagas_started_total` | counter | `definition` | sagas started |
//! | `sagad_sagas_finished_total` | counter | `definition`, `state` | sagas that reached `completed`, `compensated` or `failed` |
//! | `sagad_sagas_failed_total` | counter | `definition` | sagas that became FAILED (a compensation gave up): alert on any increase |
//! | `sagad_sagas_retried_total` | counter | `definition` | FAILED sagas resumed by `RetrySaga` |
//! | `sagad_sagas_active` | gauge | `definition`, `state` | sagas whose journaled state is `scheduled`, `running` or `compensating` |
//! | `sagad_sagas_parked` | gauge | | active sagas parked until their next attempt is due (no runner; read at each scrape) |
//! | `sagad_compensations_started_total` | counter | `definition`, `cause` | sagas that turned back to compensate; `cause` is `step_failed`, `cancelled` or `deadline` |
//! | `sagad_step_attempts_total` | counter | `participant`, `action`, `outcome` | finished calls; `action` is `forward`/`compensate`, `outcome` is `succeeded`, `rejected`, `transient` or `interrupted` |
//! | `sagad_participant_config_errors_total` | counter | `participant`, `status` | HTTP answers that say a participant's registration is wrong (a `4xx` other than 408, 409, 422, 425, 429; a `3xx`): retried, logged once per participant; alert on any |
//! | `sagad_step_call_duration_seconds` | histogram | `participant`, `action` | how long participant calls took, as the coordinator saw them |
//! | `sagad_participant_queue_depth` | gauge | `participant` | calls waiting for the participant's limits (`max_in_flight`, `rate`) to let them go |
//! | `sagad_participant_queue_wait_seconds` | histogram | `participant` | how long calls waited for those limits before they were sent |
//! | `sagad_journal_flushes_total` | counter | | durable journal flushes (group commits) |
//! | `sagad_journal_events_total` | counter | | events made durable |
//! | `sagad_journal_flush_events` | histogram | | events per flush (how well group commit batches) |
//! | `sagad_journal_flush_duration_seconds` | histogram | | write plus sync time of one flush; with PostgreSQL, one batch transaction from BEGIN to the COMMIT's answer |
//! | `sagad_history_sagas` | gauge | | finished sagas in the history tier, `DATA_DIR/history/` (sled) |
//! | `sagad_history_segments` | gauge | | segment files in the history tier (sled) |
//! | `sagad_store_renewals_total` | counter | | fresh stores put in place of sled's old one (sled) |
//! | `sagad_store_replay_bytes` | gauge | | what sled logged since its snapshot, which the next start replays: it falls back after each fresh store (sled; set once the log's checkpoint thread first read it) |
//! | `sagad_recovery_duration_seconds` | gauge | | how long the last start-up recovery took |
//! | `sagad_recovery_resumed_sagas` | gauge | | sagas the last recovery resumed |
//! | `sagad_takeover_sagas_total` | counter | | sagas taken over from nodes whose lease ran out, and resumed (cluster) |
//! | `sagad_cluster_lease_held` | gauge | | 1 while this node holds its lease, else 0 (cluster) |
//! | `sagad_cluster_epoch` | gauge | | the epoch this node writes under (cluster) |
//! | `sagad_cluster_owned_sagas` | gauge | | this node's open sagas, counted after each lease renewal (cluster) |
//! | `sagad_cluster_nodes_deposed_total` | counter | | nodes whose lease ran out that this node deposed (cluster) |
//! | `sagad_cluster_fenced_total` | counter | | times this node learnt it was fenced (cluster) |
//! | `sagad_cluster_rejoins_total` | counter | | times this node joined again after a fence (cluster) |
//! | `sagad_webhook_attempts_total` | counter | `outcome` | POSTs to `--on-failed-webhook`: `delivered` or `error` |
//! | `sagad_webhook_gave_up_total` | counter | | notices whose retries ran out (posted again at the next start) |
//! | `sagad_webhook_pending` | gauge | | FAILED-saga notices not yet acknowledged by the webhook |
//! | `sagad_webhook_redelivered_notices` | gauge | | notices the start-up scan found unacknowledged and posted again (set when the scan ends) |
//!
//! The cluster series (the last seven) exist only with the PostgreSQL
//! journal, whose nodes they describe; with sled they are absent rather than
//! constant, as `ListNodes` is refused rather than answering with a roster of
//! one. The journal keeps them in memory ([`ClusterStatus`], from
//! `Journal::cluster`) and they are copied in at each scrape, as the journal's
//! counters are: the journal names no metric.
//!
//! Label values are lower-case; `definition` is a definition name or `inline`,
//! `participant` a registered participant's name, so the label sets stay as
//! small as the configuration.
//!
//! ## One recorder per engine, never a global one
//!
//! The `metrics` macros write to a process-wide recorder unless told otherwise.
//! sagad builds one [`PrometheusRecorder`] per [`Metrics`] (one per engine) with
//! `PrometheusBuilder::build_recorder`, never installs it, and records through
//! `metrics::with_local_recorder`. Tests run several coordinators in one process,
//! and each must count only its own sagas: with one global recorder their
//! counters would add up, and a gauge such as `sagad_sagas_active` would mean
//! nothing. The price is that only what goes through [`Metrics`] is exported;
//! a dependency calling `metrics::counter!` by itself would reach the global
//! no-op recorder instead (none does today).
//!
//! ## Cost on the hot paths
//!
//! - Without `--metrics-listen` nothing reads them, and the per-saga and
//!   per-call series are not recorded at all ([`Metrics::unread`]).
//! - Counters and gauges are atomics. A labelled series is registered with
//!   the recorder the first time it is used; its handle is kept in a map by
//!   the name it is labelled with (a definition or participant) and its
//!   static label values, so the runners' few lookups per journaled append
//!   cost no allocation (building a series' key allocated per label).
//! - The journal writer thread never touches the registry: it is handed two
//!   histogram handles registered up front ([`Metrics::flush_observer`]) and
//!   records two samples per flush, not per event (a lock-free push each).
//! - Histogram samples wait in lock-free buckets until a scrape or
//!   [`Metrics::upkeep`] (run by the engine every [`METRICS_UPKEEP_INTERVAL`])
//!   drains them, so memory stays bounded when nobody scrapes.
//!
//! Invariants:
//! - `sagad_sagas_active` is seeded by recovery with every unfinished saga (as
//!   it reads each back), then
//!   moved by each durable transition (`SagaStarted`, `CompensationStarted`,
//!   `RetryRequested`, the terminal events), so after a restart it holds what
//!   the journal says. An append that failed during a disk failure and still
//!   became durable later is not seen, and can leave it off until the next start.
//! - Counters count what this process saw since it started; Prometheus treats
//!   the drop to zero at a restart as a counter reset.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use metrics::{Counter, Gauge, Histogram, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::{
    journal::{ClusterStatus, FlushObserver, JournalStats},
    participant::ConfigErrorCount,
    saga::{Action, Failure, SagaStatus, TurnBack},
};

pub mod http;

/// How often histogram samples are drained when nobody scrapes.
pub const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Upper bounds of the call and flush latency buckets, in seconds.
const LATENCY_BUCKETS_SECONDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Upper bounds of the events-per-flush buckets (up to `JOURNAL_BATCH_MAX` requests
/// of several events each).
const FLUSH_EVENTS_BUCKETS: [f64; 12] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// The metric names, for code and tests that look them up.
pub mod names {
    pub const SAGAS_STARTED: &str = "sagad_sagas_started_total";
    pub const SAGAS_FINISHED: &str = "sagad_sagas_finished_total";
    pub const SAGAS_FAILED: &str = "sagad_sagas_failed_total";
    pub const SAGAS_RETRIED: &str = "sagad_sagas_retried_total";
    pub const SAGAS_ACTIVE: &str = "sagad_sagas_active";
    pub const SAGAS_PARKED: &str = "sagad_sagas_parked";
    pub const COMPENSATIONS_STARTED: &str = "sagad_compensations_started_total";
    pub const STEP_ATTEMPTS: &str = "sagad_step_attempts_total";
    pub const STEP_CALL_DURATION: &str = "sagad_step_call_duration_seconds";
    pub const PARTICIPANT_CONFIG_ERRORS: &str = "sagad_participant_config_errors_total";
    pub const PARTICIPANT_QUEUE_DEPTH: &str = "sagad_participant_queue_depth";
    pub const PARTICIPANT_QUEUE_WAIT: &str = "sagad_participant_queue_wait_seconds";
    pub const JOURNAL_FLUSHES: &str = "sagad_journal_flushes_total";
    pub const JOURNAL_EVENTS: &str = "sagad_journal_events_total";
    pub const JOURNAL_FLUSH_EVENTS: &str = "sagad_journal_flush_events";
    pub const JOURNAL_FLUSH_DURATION: &str = "sagad_journal_flush_duration_seconds";
    pub const HISTORY_SAGAS: &str = "sagad_history_sagas";
    pub const HISTORY_SEGMENTS: &str = "sagad_history_segments";
    pub const STORE_RENEWALS: &str = "sagad_store_renewals_total";
    pub const STORE_REPLAY_BYTES: &str = "sagad_store_replay_bytes";
    pub const RECOVERY_DURATION: &str = "sagad_recovery_duration_seconds";
    pub const RECOVERY_RESUMED: &str = "sagad_recovery_resumed_sagas";
    pub const RECOVERY_UNREAD: &str = "sagad_recovery_unread_sagas";
    pub const HEAP_ALLOCATED: &str = "sagad_heap_allocated_bytes";
    pub const HEAP_RESIDENT: &str = "sagad_heap_resident_bytes";
    pub const HEAP_AT_START: &str = "sagad_heap_allocated_at_start_bytes";
    pub const TAKEOVER_SAGAS: &str = "sagad_takeover_sagas_total";
    pub const CLUSTER_LEASE_HELD: &str = "sagad_cluster_lease_held";
    pub const CLUSTER_EPOCH: &str = "sagad_cluster_epoch";
    pub const CLUSTER_OWNED_SAGAS: &str = "sagad_cluster_owned_sagas";
    pub const CLUSTER_NODES_DEPOSED: &str = "sagad_cluster_nodes_deposed_total";
    pub const CLUSTER_FENCED: &str = "sagad_cluster_fenced_total";
    pub const CLUSTER_REJOINS: &str = "sagad_cluster_rejoins_total";
    pub const WEBHOOK_ATTEMPTS: &str = "sagad_webhook_attempts_total";
    pub const WEBHOOK_GAVE_UP: &str = "sagad_webhook_gave_up_total";
    pub const WEBHOOK_PENDING: &str = "sagad_webhook_pending";
    pub const WEBHOOK_REDELIVERED: &str = "sagad_webhook_redelivered_notices";
}

use names::*;

/// One engine's metrics; cheap to clone (every clone records into the same recorder).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    /// False when nothing reads the metrics (no `--metrics-listen`): the
    /// per-saga series are then not looked up or moved at all.
    recording: bool,
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    series: Mutex<Series>,
}

/// Handles of the labelled series met so far. Finding a series through the
/// recorder builds its key (an allocation per label) and hashes it into the
/// registry, and the runners record a few per journaled append; here a handle
/// is found by the name it is labelled with (a definition or a participant,
/// so as few as the configuration has) and its other, static, label values.
#[derive(Default)]
struct Series {
    counters: Handles<Counter>,
    gauges: Handles<Gauge>,
    histograms: Handles<Histogram>,
}

/// A series among those of one name: its metric and static label values.
type SeriesId = (&'static str, &'static str, &'static str);

/// The handles of one kind, by name and series.
type Handles<H> = HashMap<String, HashMap<SeriesId, H>>;

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh recorder with every metric described (see the module docs).
    pub fn new() -> Self {
        Self::build(true)
    }

    /// Metrics nobody reads: the per-saga and per-call series (the hot paths)
    /// are not recorded, everything else is as with [`Metrics::new`]. For a
    /// coordinator without `--metrics-listen`, where they would cost about 2%
    /// of its CPU for nothing.
    pub fn unread() -> Self {
        Self::build(false)
    }

    /// Whether the per-saga series are recorded.
    pub fn recording(&self) -> bool {
        self.inner.recording
    }

    fn build(recording: bool) -> Self {
        let mut builder = PrometheusBuilder::new();
        for name in [
            STEP_CALL_DURATION,
            JOURNAL_FLUSH_DURATION,
            PARTICIPANT_QUEUE_WAIT,
        ] {
            builder = builder
                .set_buckets_for_metric(Matcher::Full(name.into()), &LATENCY_BUCKETS_SECONDS)
                .expect("the latency buckets are not empty"); // faulty code otherwise
        }
        builder = builder
            .set_buckets_for_metric(
                Matcher::Full(JOURNAL_FLUSH_EVENTS.into()),
                &FLUSH_EVENTS_BUCKETS,
            )
            .expect("the flush buckets are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let metrics = Self {
            inner: Arc::new(Inner {
                recording,
                recorder,
                handle,
                series: Mutex::default(),
            }),
        };
        metrics.describe();
        metrics
    }

    /// Runs `f` with this engine's recorder as the one the `metrics` macros use.
    fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.inner.recorder, f)
    }

    fn describe(&self) {
        use metrics::{describe_counter, describe_gauge, describe_histogram};
        self.with(|| {
            describe_counter!(SAGAS_STARTED, "Sagas started.");
            describe_counter!(
                SAGAS_FINISHED,
                "Sagas that reached a terminal state (completed, compensated, failed)."
            );
            describe_counter!(
                SAGAS_FAILED,
                "Sagas that became FAILED: a compensation gave up and an operator is needed."
            );
            describe_counter!(SAGAS_RETRIED, "FAILED sagas resumed by RetrySaga.");
            describe_gauge!(
                SAGAS_ACTIVE,
                "Sagas whose journaled state is running or compensating."
            );
            describe_gauge!(
                SAGAS_PARKED,
                "Active sagas parked until their next attempt is due."
            );
            describe_counter!(
                COMPENSATIONS_STARTED,
                "Sagas that stopped going forward and began compensating."
            );
            describe_counter!(STEP_ATTEMPTS, "Finished participant calls, by outcome.");
            describe_counter!(
                PARTICIPANT_CONFIG_ERRORS,
                "HTTP answers saying a participant's registration is wrong (retried; logged once per participant)."
            );
            describe_histogram!(
                STEP_CALL_DURATION,
                Unit::Seconds,
                "Participant call latency as the coordinator saw it."
            );
            describe_gauge!(
                PARTICIPANT_QUEUE_DEPTH,
                "Calls waiting for their participant's limits to let them go."
            );
            describe_histogram!(
                PARTICIPANT_QUEUE_WAIT,
                Unit::Seconds,
                "How long calls waited for their participant's limits before they were sent."
            );
            describe_counter!(JOURNAL_FLUSHES, "Durable journal flushes (group commits).");
            describe_counter!(JOURNAL_EVENTS, "Events made durable by the journal.");
            describe_histogram!(JOURNAL_FLUSH_EVENTS, "Events made durable per flush.");
            describe_histogram!(
                JOURNAL_FLUSH_DURATION,
                Unit::Seconds,
                "Time to write and sync one journal flush (with PostgreSQL: one batch transaction)."
            );
            describe_gauge!(
                HISTORY_SAGAS,
                "Finished sagas in the sled journal's history tier (DATA_DIR/history)."
            );
            describe_gauge!(HISTORY_SEGMENTS, "Segment files in the history tier.");
            describe_counter!(
                STORE_RENEWALS,
                "Fresh sled stores put in place of the old one since the start."
            );
            describe_gauge!(
                STORE_REPLAY_BYTES,
                Unit::Bytes,
                "What sled logged since its snapshot, which its next open replays (read before each fresh store it might start)."
            );
            describe_gauge!(
                RECOVERY_DURATION,
                Unit::Seconds,
                "How long the last start-up recovery took, until every saga it resumed was read back from the journal."
            );
            describe_gauge!(RECOVERY_RESUMED, "Sagas the last start-up recovery resumed.");
            describe_gauge!(
                HEAP_ALLOCATED,
                Unit::Bytes,
                "Bytes in live heap allocations (jemalloc's count), at this scrape."
            );
            describe_gauge!(
                HEAP_RESIDENT,
                Unit::Bytes,
                "Bytes of physical memory the heap holds (jemalloc's count), at this scrape."
            );
            describe_gauge!(
                HEAP_AT_START,
                Unit::Bytes,
                "Bytes in live heap allocations once the journal was open, before recovery read a saga: what the journal's store holds for the history it opened."
            );
            describe_gauge!(
                RECOVERY_UNREAD,
                "Sagas the last start-up recovery resumed that are not read back from the journal yet (0 once recovery is over)."
            );
            describe_counter!(
                TAKEOVER_SAGAS,
                "Sagas this node took over from nodes whose lease ran out, and resumed (cluster mode)."
            );
            describe_gauge!(
                CLUSTER_LEASE_HELD,
                "1 while this node holds its lease in the shared journal, 0 once it lapsed or the node was fenced."
            );
            describe_gauge!(CLUSTER_EPOCH, "The epoch this node writes under now.");
            describe_gauge!(
                CLUSTER_OWNED_SAGAS,
                "This node's open sagas (running, compensating, failed), counted after each lease renewal."
            );
            describe_counter!(
                CLUSTER_NODES_DEPOSED,
                "Nodes whose lease ran out that this node deposed before taking their sagas over."
            );
            describe_counter!(
                CLUSTER_FENCED,
                "Times this node learnt it was fenced (its epoch moved on)."
            );
            describe_counter!(
                CLUSTER_REJOINS,
                "Times this node joined the journal again after a fence."
            );
            describe_counter!(
                WEBHOOK_ATTEMPTS,
                "POSTs to the on-failed webhook, by outcome (delivered, error)."
            );
            describe_counter!(
                WEBHOOK_GAVE_UP,
                "FAILED-saga notices whose retries ran out; they are posted again at the next start."
            );
            describe_gauge!(
                WEBHOOK_PENDING,
                "FAILED-saga notices not yet acknowledged by the webhook."
            );
            describe_gauge!(
                WEBHOOK_REDELIVERED,
                "Notices the start-up scan found unacknowledged and posted again."
            );
        });
    }

    fn counter(&self, make: impl FnOnce() -> Counter) -> Counter {
        self.with(make)
    }

    /// The handle of series `id` labelled `name`, made by `make` the first
    /// time; `None` when the metrics are not recording.
    fn cached<H: Clone>(
        &self,
        kind: impl FnOnce(&mut Series) -> &mut Handles<H>,
        name: &str,
        id: SeriesId,
        make: impl FnOnce() -> H,
    ) -> Option<H> {
        if !self.inner.recording {
            return None;
        }
        let mut series = self.inner.series.lock().unwrap_or_else(|p| p.into_inner());
        let handles = kind(&mut series);
        if let Some(handle) = handles.get(name).and_then(|by_id| by_id.get(&id)) {
            return Some(handle.clone());
        }
        let handle = self.with(make);
        handles
            .entry(name.to_owned())
            .or_default()
            .insert(id, handle.clone());
        Some(handle)
    }

    /// Adds one to series `id` labelled `name` (made by `make` the first time).
    fn count(&self, name: &str, id: SeriesId, make: impl FnOnce() -> Counter) {
        if let Some(counter) = self.cached(|s| &mut s.counters, name, id, make) {
            counter.increment(1);
        }
    }

    fn gauge_of(&self, name: &str, id: SeriesId, make: impl FnOnce() -> Gauge) -> Option<Gauge> {
        self.cached(|s| &mut s.gauges, name, id, make)
    }

    /// Exports `sagad_sagas_failed_total` at 0 for each definition up front: an
    /// alert on `increase(...)` needs a series that exists before the first
    /// failure, or that first failure is never an increase.
    pub fn known_definitions<'a>(&self, definitions: impl IntoIterator<Item = &'a str>) {
        for definition in definitions {
            self.counter(|| metrics::counter!(SAGAS_FAILED, "definition" => definition.to_owned()))
                .increment(0);
        }
    }

    /// A saga's `SagaStarted` is durable.
    pub fn saga_started(&self, definition: &str) {
        self.count(
            definition,
            (SAGAS_STARTED, "", ""),
            || metrics::counter!(SAGAS_STARTED, "definition" => definition.to_owned()),
        );
    }

    /// A saga's terminal event is durable.
    pub fn saga_finished(&self, definition: &str, state: SagaStatus) {
        let label = state_label(state);
        self.count(definition, (SAGAS_FINISHED, label, ""), || {
            metrics::counter!(SAGAS_FINISHED, "definition" => definition.to_owned(), "state" => label)
        });
        if state == SagaStatus::Failed {
            self.count(
                definition,
                (SAGAS_FAILED, "", ""),
                || metrics::counter!(SAGAS_FAILED, "definition" => definition.to_owned()),
            );
        }
    }

    /// A FAILED saga was resumed by an operator.
    pub fn saga_retried(&self, definition: &str) {
        self.count(
            definition,
            (SAGAS_RETRIED, "", ""),
            || metrics::counter!(SAGAS_RETRIED, "definition" => definition.to_owned()),
        );
    }

    /// Moves a saga from one journaled state to another in `sagad_sagas_active`;
    /// `None` (not yet started) and terminal states are not counted.
    pub fn saga_moved(&self, definition: &str, from: Option<SagaStatus>, to: SagaStatus) {
        let active = |state: SagaStatus| {
            let label = state_label(state);
            self.gauge_of(definition, (SAGAS_ACTIVE, label, ""), || {
                metrics::gauge!(SAGAS_ACTIVE, "definition" => definition.to_owned(), "state" => label)
            })
        };
        if let Some(gauge) = from.filter(|s| !s.is_terminal()).and_then(active) {
            gauge.decrement(1.0);
        }
        if let Some(gauge) = Some(to).filter(|s| !s.is_terminal()).and_then(active) {
            gauge.increment(1.0);
        }
    }

    /// A saga began compensating, for `cause`.
    pub fn compensation_started(&self, definition: &str, cause: TurnBack) {
        let cause = cause.as_str();
        self.count(definition, (COMPENSATIONS_STARTED, cause, ""), || {
            metrics::counter!(COMPENSATIONS_STARTED, "definition" => definition.to_owned(), "cause" => cause)
        });
    }

    /// An attempt's result is durable; `failure` is `None` when it succeeded.
    pub fn attempt_finished(&self, participant: &str, action: Action, failure: Option<Failure>) {
        let outcome = match failure {
            None => "succeeded",
            Some(Failure::Rejected) => "rejected",
            Some(Failure::Transient) => "transient",
            Some(Failure::Interrupted) => "interrupted",
            Some(Failure::NotDelivered) => "not_delivered",
        };
        let action = action.as_str();
        self.count(participant, (STEP_ATTEMPTS, action, outcome), || {
            metrics::counter!(
                STEP_ATTEMPTS,
                "participant" => participant.to_owned(),
                "action" => action,
                "outcome" => outcome
            )
        });
    }

    /// A call of `participant` joined (`+1`) or left (`-1`) the queue of its
    /// limits.
    pub fn participant_queued(&self, participant: &str, delta: f64) {
        if let Some(gauge) = self.gauge_of(
            participant,
            (PARTICIPANT_QUEUE_DEPTH, "", ""),
            || metrics::gauge!(PARTICIPANT_QUEUE_DEPTH, "participant" => participant.to_owned()),
        ) {
            gauge.increment(delta);
        }
    }

    /// A call of `participant` waited `waited` for its limits.
    pub fn participant_waited(&self, participant: &str, waited: Duration) {
        if let Some(histogram) = self.cached(
            |s| &mut s.histograms,
            participant,
            (PARTICIPANT_QUEUE_WAIT, "", ""),
            || metrics::histogram!(PARTICIPANT_QUEUE_WAIT, "participant" => participant.to_owned()),
        ) {
            histogram.record(waited.as_secs_f64());
        }
    }

    /// A participant call returned after `took`.
    pub fn call_returned(&self, participant: &str, action: Action, took: Duration) {
        let action = action.as_str();
        if let Some(histogram) = self.cached(
            |s| &mut s.histograms,
            participant,
            (STEP_CALL_DURATION, action, ""),
            || {
                metrics::histogram!(STEP_CALL_DURATION, "participant" => participant.to_owned(), "action" => action)
            },
        ) {
            histogram.record(took.as_secs_f64());
        }
    }

    /// Start-up recovery finished.
    /// The heap as jemalloc counts it now.
    pub fn heap(&self, now: crate::allocator::HeapStats) {
        self.with(|| {
            metrics::gauge!(HEAP_ALLOCATED).set(now.allocated as f64);
            metrics::gauge!(HEAP_RESIDENT).set(now.resident as f64);
        });
    }

    /// The heap's live bytes once the journal was open.
    pub fn heap_at_start(&self, allocated: u64) {
        self.with(|| metrics::gauge!(HEAP_AT_START).set(allocated as f64));
    }

    /// Start-up recovery claimed `resumed` sagas; `unread` of them are not
    /// read back yet.
    pub fn recovering(&self, resumed: usize, unread: usize) {
        self.with(|| {
            metrics::gauge!(RECOVERY_RESUMED).set(resumed as f64);
            metrics::gauge!(RECOVERY_UNREAD).set(unread as f64);
        });
    }

    /// Start-up recovery read back every saga it claimed, `took` after it began.
    pub fn recovered(&self, took: Duration) {
        self.with(|| {
            metrics::gauge!(RECOVERY_DURATION).set(took.as_secs_f64());
            metrics::gauge!(RECOVERY_UNREAD).set(0.0);
        });
    }

    /// Sagas taken over from a dead node were resumed.
    pub fn took_over(&self, resumed: usize) {
        self.counter(|| metrics::counter!(TAKEOVER_SAGAS))
            .increment(resumed as u64);
    }

    /// One POST to the webhook ended; `delivered` when it was acknowledged (2xx).
    pub fn webhook_attempt(&self, delivered: bool) {
        let outcome = if delivered { "delivered" } else { "error" };
        self.counter(|| metrics::counter!(WEBHOOK_ATTEMPTS, "outcome" => outcome))
            .increment(1);
    }

    /// A notice's retries ran out.
    pub fn webhook_gave_up(&self) {
        self.counter(|| metrics::counter!(WEBHOOK_GAVE_UP))
            .increment(1);
    }

    /// Notices waiting for the webhook's acknowledgement.
    pub fn webhook_pending(&self, pending: usize) {
        self.with(|| metrics::gauge!(WEBHOOK_PENDING).set(pending as f64));
    }

    /// The start-up scan for unacknowledged notices ended, queueing `notices`.
    pub fn webhook_redelivered(&self, notices: usize) {
        self.with(|| metrics::gauge!(WEBHOOK_REDELIVERED).set(notices as f64));
    }

    /// What the journal writer thread calls once per durable flush: two
    /// histogram handles registered here, so the writer never looks anything up.
    pub fn flush_observer(&self) -> Arc<dyn FlushObserver> {
        let (events, duration) = self.with(|| {
            (
                metrics::histogram!(JOURNAL_FLUSH_EVENTS),
                metrics::histogram!(JOURNAL_FLUSH_DURATION),
            )
        });
        Arc::new(FlushHistograms { events, duration })
    }

    /// Copies what the journal knows of this node's place in the cluster
    /// into its series (see the module docs); called before each render in
    /// cluster mode only, so with sled the series never exist.
    pub fn cluster(&self, status: &ClusterStatus) {
        self.with(|| {
            metrics::gauge!(CLUSTER_LEASE_HELD).set(if status.lease_held { 1.0 } else { 0.0 });
            metrics::gauge!(CLUSTER_EPOCH).set(status.epoch as f64);
            metrics::gauge!(CLUSTER_OWNED_SAGAS).set(status.owned_open as f64);
            metrics::counter!(CLUSTER_NODES_DEPOSED).absolute(status.deposed);
            metrics::counter!(CLUSTER_FENCED).absolute(status.fenced);
            metrics::counter!(CLUSTER_REJOINS).absolute(status.rejoins);
            // At 0 before the first takeover, so an increase is seen.
            metrics::counter!(TAKEOVER_SAGAS).increment(0);
        });
    }

    /// Copies the participant callers' counts of answers that say a
    /// registration is wrong (kept by the callers, as the journal keeps its
    /// counters; see `participant::http`); called before each render.
    pub fn participant_config_errors(&self, counts: &[ConfigErrorCount]) {
        self.with(|| {
            for c in counts {
                metrics::counter!(
                    PARTICIPANT_CONFIG_ERRORS,
                    "participant" => c.participant.clone(),
                    "status" => c.status.to_string()
                )
                .absolute(c.count);
            }
        });
    }

    /// Drains histogram samples into their buckets; see the module docs.
    pub fn upkeep(&self) {
        self.inner.handle.run_upkeep();
    }

    /// Everything in the Prometheus text format, with the journal's counters as
    /// of `journal` (they live in the journal as plain atomics; copied here) and
    /// `parked` sagas (counted by the engine's owners; read at each scrape
    /// rather than kept in step at every park and wake).
    pub fn render(&self, journal: JournalStats, parked: usize) -> String {
        self.with(|| {
            metrics::counter!(JOURNAL_FLUSHES).absolute(journal.flushes);
            metrics::counter!(JOURNAL_EVENTS).absolute(journal.events);
            metrics::gauge!(SAGAS_PARKED).set(parked as f64);
            if let Some(local) = journal.local {
                metrics::gauge!(HISTORY_SAGAS).set(local.history_sagas as f64);
                metrics::gauge!(HISTORY_SEGMENTS).set(local.history_segments as f64);
                metrics::counter!(STORE_RENEWALS).absolute(local.store.renewals);
                if let Some(bytes) = local.store.log_since_snapshot {
                    metrics::gauge!(STORE_REPLAY_BYTES).set(bytes as f64);
                }
            }
        });
        self.inner.handle.render()
    }
}

/// The label value of a saga state.
fn state_label(state: SagaStatus) -> &'static str {
    match state {
        SagaStatus::Running => "running",
        SagaStatus::Compensating => "compensating",
        SagaStatus::Completed => "completed",
        SagaStatus::Compensated => "compensated",
        SagaStatus::Failed => "failed",
        SagaStatus::Scheduled => "scheduled",
    }
}

/// The journal's per-flush histograms.
struct FlushHistograms {
    events: Histogram,
    duration: Histogram,
}

impl FlushObserver for FlushHistograms {
    fn flushed(&self, events: u64, took: Duration) {
        self.events.record(events as f64);
        self.duration.record(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{LocalStats, StoreUpkeep};

    /// The value of the sample `name{labels}` in `text`, labels as rendered.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map(|v| v.trim().parse().unwrap())
    }

    #[test]
    fn two_instances_do_not_share_counts() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.saga_started("order");
        a.saga_started("order");
        b.saga_started("order");
        let series = "sagad_sagas_started_total{definition=\"order\"}";
        assert_eq!(
            sample(&a.render(JournalStats::default(), 0), series),
            Some(2.0)
        );
        assert_eq!(
            sample(&b.render(JournalStats::default(), 0), series),
            Some(1.0)
        );
    }

    #[test]
    fn active_gauge_follows_transitions_and_ignores_terminal_states() {
        let m = Metrics::new();
        m.saga_moved("d", None, SagaStatus::Running);
        m.saga_moved("d", None, SagaStatus::Running);
        m.saga_moved("d", Some(SagaStatus::Running), SagaStatus::Compensating);
        m.saga_moved("d", Some(SagaStatus::Compensating), SagaStatus::Failed);
        m.saga_moved("d", Some(SagaStatus::Failed), SagaStatus::Compensating);
        let text = m.render(JournalStats::default(), 0);
        let running = "sagad_sagas_active{definition=\"d\",state=\"running\"}";
        let compensating = "sagad_sagas_active{definition=\"d\",state=\"compensating\"}";
        assert_eq!(sample(&text, running), Some(1.0), "{text}");
        assert_eq!(sample(&text, compensating), Some(1.0), "{text}");
        assert!(!text.contains("state=\"failed\"} "), "{text}");
    }

    #[test]
    fn histograms_render_as_buckets_and_journal_counters_are_copied() {
        let m = Metrics::new();
        m.call_returned("payments", Action::Forward, Duration::from_millis(3));
        m.flush_observer().flushed(7, Duration::from_micros(300));
        let text = m.render(
            JournalStats {
                flushes: 5,
                requests: 6,
                events: 9,
                local: Some(LocalStats {
                    history_sagas: 200_000,
                    history_segments: 2,
                    store: StoreUpkeep {
                        renewals: 1,
                        log_since_snapshot: Some(4096),
                    },
                }),
            },
            3,
        );
        assert_eq!(sample(&text, "sagad_sagas_parked"), Some(3.0), "{text}");
        assert!(
            text.contains("sagad_step_call_duration_seconds_bucket{participant=\"payments\",action=\"forward\",le=\"0.005\"} 1"),
            "{text}"
        );
        assert_eq!(
            sample(&text, "sagad_journal_flush_events_sum"),
            Some(7.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, "sagad_journal_flushes_total"),
            Some(5.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, "sagad_journal_events_total"),
            Some(9.0),
            "{text}"
        );
        assert!(
            text.contains("# HELP sagad_step_call_duration_seconds"),
            "{text}"
        );
        for (series, value) in [
            (HISTORY_SAGAS, 200_000.0),
            (HISTORY_SEGMENTS, 2.0),
            (STORE_RENEWALS, 1.0),
            (STORE_REPLAY_BYTES, 4096.0),
        ] {
            assert_eq!(sample(&text, series), Some(value), "{series} in {text}");
        }
        let without = Metrics::new().render(JournalStats::default(), 0);
        assert!(
            !without.contains("sagad_history_") && !without.contains("sagad_store_"),
            "a journal without a tier has none of its series: {without}"
        );
    }

    #[test]
    fn cluster_series_exist_only_once_a_cluster_status_is_copied_in() {
        let m = Metrics::new();
        let text = m.render(JournalStats::default(), 0);
        assert!(!text.contains("sagad_cluster_"), "{text}");
        assert!(!text.contains("sagad_takeover_sagas_total "), "{text}");
        m.cluster(&ClusterStatus {
            lease_held: true,
            epoch: 7,
            owned_open: 3,
            fenced: 1,
            rejoins: 1,
            deposed: 2,
        });
        let text = m.render(JournalStats::default(), 0);
        for (series, value) in [
            (CLUSTER_LEASE_HELD, 1.0),
            (CLUSTER_EPOCH, 7.0),
            (CLUSTER_OWNED_SAGAS, 3.0),
            (CLUSTER_FENCED, 1.0),
            (CLUSTER_REJOINS, 1.0),
            (CLUSTER_NODES_DEPOSED, 2.0),
            (TAKEOVER_SAGAS, 0.0),
        ] {
            assert_eq!(sample(&text, series), Some(value), "{series} in {text}");
            assert!(
                text.contains(&format!("# HELP {series} ")),
                "{series} in {text}"
            );
        }
        m.cluster(&ClusterStatus {
            lease_held: false,
            ..ClusterStatus::default()
        });
        let text = m.render(JournalStats::default(), 0);
        assert_eq!(sample(&text, CLUSTER_LEASE_HELD), Some(0.0), "{text}");
    }

    #[test]
    fn known_definitions_export_a_zero_failed_count_to_alert_on() {
        let m = Metrics::new();
        m.known_definitions(["order", "inline"]);
        let text = m.render(JournalStats::default(), 0);
        let series = "sagad_sagas_failed_total{definition=\"order\"}";
        assert_eq!(sample(&text, series), Some(0.0), "{text}");
        m.saga_finished("order", SagaStatus::Failed);
        let text = m.render(JournalStats::default(), 0);
        assert_eq!(sample(&text, series), Some(1.0), "{text}");
    }

    #[test]
    fn unread_metrics_leave_the_per_saga_series_out() {
        let m = Metrics::unread();
        m.saga_started("order");
        m.saga_moved("order", None, SagaStatus::Running);
        m.attempt_finished("p", Action::Forward, None);
        m.call_returned("p", Action::Forward, Duration::from_millis(3));
        m.saga_finished("order", SagaStatus::Failed);
        let text = m.render(JournalStats::default(), 0);
        for name in [
            SAGAS_STARTED,
            SAGAS_ACTIVE,
            STEP_ATTEMPTS,
            STEP_CALL_DURATION,
            SAGAS_FINISHED,
        ] {
            assert!(!text.contains(&format!("{name}{{")), "{name} in {text}");
        }
        // The same calls on recording metrics do show up.
        let m = Metrics::new();
        m.saga_started("order");
        let text = m.render(JournalStats::default(), 0);
        assert_eq!(
            sample(&text, "sagad_sagas_started_total{definition=\"order\"}"),
            Some(1.0)
        );
    }

    #[test]
    fn cached_handles_keep_every_series_apart() {
        let m = Metrics::new();
        m.attempt_finished("p", Action::Forward, None);
        m.attempt_finished("p", Action::Forward, None);
        m.attempt_finished("p", Action::Compensate, None);
        m.attempt_finished("p", Action::Forward, Some(Failure::Rejected));
        m.attempt_finished("q", Action::Forward, None);
        let text = m.render(JournalStats::default(), 0);
        for (labels, count) in [
            (
                "participant=\"p\",action=\"forward\",outcome=\"succeeded\"",
                2.0,
            ),
            (
                "participant=\"p\",action=\"compensate\",outcome=\"succeeded\"",
                1.0,
            ),
            (
                "participant=\"p\",action=\"forward\",outcome=\"rejected\"",
                1.0,
            ),
            (
                "participant=\"q\",action=\"forward\",outcome=\"succeeded\"",
                1.0,
            ),
        ] {
            let series = format!("sagad_step_attempts_total{{{labels}}}");
            assert_eq!(sample(&text, &series), Some(count), "{series} in {text}");
        }
    }
}
