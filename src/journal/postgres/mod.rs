//! The PostgreSQL journal, [`PgJournal`]: the same [`Journal`] contract as
//! the sled journal, kept in a database that several coordinators can share
//! (`sagad serve --journal postgres://…`).
//!
//! It is a sibling of `kv/`, not a store under it: PostgreSQL already has a
//! write-ahead log, transactions, indexes and a clock everyone agrees on, so
//! the saga schema is written as tables and statements rather than as keys.
//!
//! | file | job |
//! |---|---|
//! | `mod.rs` | [`PgJournal`]: opening, the reads' pool, the handle to the writer |
//! | `target.rs` | `--journal` parsed; printed with the password redacted |
//! | `ssl.rs` | its libpq TLS settings (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`) |
//! | `schema.rs` | the tables, created at the first start, versioned |
//! | `node.rs` | membership: node id, epoch, lease, heartbeat, the batch's check, re-join |
//! | `takeover.rs` | deposing nodes whose lease ran out, and claiming their sagas |
//! | `duty.rs` | cluster-wide duties (the archiver): one holder at a time, on a lease |
//! | `notice.rs` | the on-failed webhook's acknowledgements, and whose notice is whose to post |
//! | `relay.rs` | cancels and retries left for a saga's owner by the node they reached |
//! | `batch.rs` | which requests a batch takes, and the rows they write |
//! | `writer.rs` | the writer task: one pipelined transaction per batch, two in flight |
//! | `reads.rs` | the reads, one statement each |
//! | `roster.rs` | the nodes as an operator sees them, and each saga's owner |
//! | `snapshot.rs` | [`PgSnapshot`]: the journal read in one read-only snapshot, beside live nodes, never joining (`journal check`, `export`) |
//! | `check.rs` | `journal check --journal`: every history, row, offset, owner and participant verified in a snapshot |
//! | `throwaway.rs` | a throwaway PostgreSQL for tests and benchmarks |
//!
//! # The tables (schema `sagad`)
//!
//! ```text
//!  node(node_id PK, epoch, lease_until, addr, joined_at)       one row per node
//!  saga(saga_id PK, idempotency_key UNIQUE, definition, status,
//!       created_at, ended_at, owner_node, owner_epoch,
//!       next_due_at, last_seq)                                 one row per saga
//!    index (status, saga_id)                                   list by state, newest first
//!    index (owner_node, saga_id) WHERE status IN ('scheduled',
//!          'running', 'compensating', 'failed')                a node's open sagas
//!  event("offset" PK, saga_id, seq, body, UNIQUE(saga_id, seq)) the journal itself
//!  feed_head(last)                                             one row: the last offset taken
//!  archive_horizon(through)                                    one row: the highest offset removed
//!  participant(name PK, body)
//!  duty(name PK, node_id, epoch, lease_until)                  one row per duty taken
//!  notice(saga_id PK → saga ON DELETE CASCADE, seq,
//!         acked_at, acked_by)                                  the webhook's acknowledgements
//!  relay(call_id PK, saga_id → saga ON DELETE CASCADE, body,
//!        asked_by, asked_at, taken_by, answered_at, answer)    calls for a saga's owner
//!    index (saga_id) WHERE no one took or answered it          the owners' poll
//!  schema_version(version)                                     one row (`schema.rs`)
//! ```
//!
//! - An event's `body` is the event as the sled journal's codec writes it
//!   (`kv/codec/record.rs`: a version byte, a CRC32, postcard), with its
//!   offset left zero: the row's `"offset"` is the one truth. Reading checks
//!   the checksum, and that the body's saga and seq are the row's.
//! - The `saga` row is what the sled journal's indexes are: the listing
//!   summary, the unfinished and failed indexes, the idempotency key, and
//!   the saga's place in its history (`last_seq`) that guards appends.
//!   `next_due_at` is when a saga waiting in backoff is due, for operators
//!   and for recovery's ordering; timers stay in the owner's memory.
//! - Participants are stored as the sled journal stores them.
//! - `ended_at` is the time of the terminal event, so retention never reads
//!   an event to know when a saga ended.
//!
//! # The batch transaction (`writer.rs`)
//!
//! Group commit: one writer task per node drains the queue into one batch,
//! and one batch is one transaction, at READ COMMITTED, at most two in
//! flight per node (the next one's statements run while the previous
//! COMMIT is flushed; it commits after it, step 4):
//!
//! 1. **The node's row, `FOR SHARE`.** No row, or another epoch: this node
//!    is fenced, and nothing is written. A lapsed lease: nothing is written
//!    until it is renewed (by the writer's probe, or the heartbeat). The
//!    share lock lasts to the COMMIT, so
//!    an epoch bump (a re-join, a takeover) waits for the batch in flight and
//!    then fences every later one.
//! 2. **The saga rows.** New sagas are inserted with `ON CONFLICT DO
//!    NOTHING`, so a key another node took is seen as a missing row, not as
//!    an error that would sink the batch. Continued sagas are updated only
//!    where `owner_node`, `owner_epoch` and `last_seq` are what this append
//!    expects. A short count rolls the batch back; only the appends of the
//!    missing rows are refused, saying why, and the rest is sent again.
//! 3. **Participants and removals**, in the same transaction.
//! 4. **Last, the offsets**: `UPDATE feed_head SET last = last + n RETURNING
//!    last`, and the events inserted at `last-n+1 ..= last`, in one
//!    statement. The feed head's row lock is what orders every node's
//!    batches; taken last, it is held only from there to the COMMIT.
//! 5. **COMMIT.** With `synchronous_commit` on (raised for the writer's
//!    session if the server has it off), its answer means durable.
//!
//! All of it is sent at once, pipelined: two round trips per batch. The
//! next batch goes in on the writer's second connection as soon as this
//! one's COMMIT is sent, up to step 4, where it waits for this one's row
//! lock; its COMMIT is sent once this one's answered, and never after a
//! failed one (it is rolled back and refused).
//!
//! **Why offsets are gap-free and in commit order across nodes.** A batch
//! takes its offsets holding the feed head's row lock, which the next batch
//! (of any node) waits for until this one committed or rolled back. So
//! offsets are taken in commit order; a rollback gives its range back to
//! the next taker; and PostgreSQL makes a transaction visible before it
//! releases its locks, so whoever sees offset n also sees every offset
//! below it. Reading by offset needs no horizon of its own: what a
//! statement sees is committed, so durable.
//!
//! # Failure, fencing, durability of what was read
//!
//! - A batch that fails refuses the writes after it until a probe works
//!   (`writer.rs`); a COMMIT without an answer is reported as uncertain,
//!   and the engine reads the saga again before it goes on (it does that
//!   after any failed append). `tests/it/lost_commit.rs` loses COMMIT
//!   answers both ways (committed, and rolled back) through a proxy.
//! - A node that finds itself fenced (its epoch moved on) refuses every
//!   write for the rest of its life, and says so through
//!   [`Journal::write_failure`] (health turns NOT_SERVING; sagas pause).
//! - A lease that runs out while the node writes nothing (the database
//!   unreachable longer than the TTL) is seen without a batch: the node
//!   counts its lease from its last renewal that worked
//!   ([`node::LeaseClock`]), and [`Journal::cluster`] says it is no longer
//!   held (health turns NOT_SERVING; a renewal or re-join brings it back).
//! - [`Journal::durable_offset`] is raised by this node's commits at once,
//!   and by every node's commits within [`FEED_POLL_INTERVAL`] (a short
//!   poll of the feed head, portable where LISTEN/NOTIFY is not).
//!
//! # What it costs
//!
//! Measured with `sagad-bench run --quick --sagas-per-measurement 3000` on
//! this 2-core machine while other builds kept it busy, the same hour for
//! both: W1 at concurrency 64 ran ≈ 1,600–1,700 sagas/s here against ≈ 4,700
//! on sled, W1 at concurrency 1 had a p50 of 2.6–5 ms against 1.1 ms. A
//! transaction held 23 events on average over the whole run (the serial
//! c1 runs included), and every statement but the COMMIT (≈ 4–5 ms, its WAL
//! fsync) took under 3 ms. One transaction in flight per node is the
//! ceiling: throughput is the batch size over the COMMIT's latency.
//!
//! # Several nodes
//!
//! - **Takeover** (`takeover.rs`): every node looks, every second (a third
//!   of a shorter lease), for nodes whose lease ran out while they own open
//!   sagas; it deposes them (a new epoch, which waits for their batch in flight), takes a new
//!   epoch of its own, and claims their sagas in chunks (`FOR UPDATE SKIP
//!   LOCKED`, so survivors split them); the engine resumes each one as a
//!   restart resumes its own ([`Journal::ownership_changes`]).
//! - **Re-join** (`node.rs`): a node that finds itself fenced while nobody
//!   holds its name joins again with a new epoch; appends to the sagas that
//!   moved meanwhile are refused (`NotOwner`), and the engine drops them.
//! - **Epochs** come from one sequence (`sagad.epoch_seq`), so the owner of a
//!   saga after a takeover writes, and calls participants (`x-sagad-epoch`,
//!   [`Journal::epoch`]), under an epoch above any its old owner had.
//! - **Leaving**: [`Journal::close`] gives up the lease (and the node's
//!   duties) once the writer stopped, so the others take the node's sagas
//!   over at their next look.
//! - **Observed** through [`Journal::cluster`], read from memory at each
//!   scrape and health recheck (this module names no metric): the lease as
//!   the node knows it, its epoch, its open sagas (counted after each
//!   renewal, over the `saga_open_by_owner` index), and how often it was
//!   fenced, joined again and deposed a node. A batch's latency, from its
//!   BEGIN to its COMMIT's answer (misses redone included), is what the
//!   [`FlushObserver`] is told, like the sled journal's flush.
//! - **Duties** (`duty.rs`, [`Journal::hold_duty`]): work one node does for
//!   all, today retention's archiver, is held on a lease of its own in
//!   `duty`, by the database's clock, taken only by a live node at its
//!   current epoch; a dead or departed holder's duty is taken by the next
//!   node that asks once its lease ran out.
//! - **The webhook's notices** (`notice.rs`, [`Journal::notices`]): the
//!   acknowledgements live in `notice`, so every node sees them; a FAILED
//!   saga's notice is posted by the saga's owner only, checked in the
//!   database before each POST, and moves with the saga at a takeover, so it
//!   is posted at least once, and never by two live nodes.
//! - **Not yet**: forwarding Cancel and Retry to the saga's owner
//!   (`node.addr` says where it is; today the call is refused, naming it).
//!   Watch needs none: a saga another node runs is followed from here
//!   (`engine/watch.rs`).
//!
//! Invariants:
//! - Every write of the saga journal (sagas, events, participants,
//!   removals) goes through the writer task, in a transaction that checked
//!   this node's epoch and lease first. Membership (joins, renewals,
//!   takeovers), duties and the webhook's acknowledgements are written on
//!   connections of their own, each in one statement or transaction that
//!   judges leases by the database's clock; an acknowledgement is true
//!   whoever records it, so it needs no fencing.
//! - A saga row and its events change in the same transaction.
//! - Offsets are taken last in a batch; no other statement changes
//!   `feed_head`.

use std::{
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio::{
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    journal::{
        ClusterStatus, Duty, FlushObserver, JOURNAL_QUEUE_CAPACITY, Journal, JournalError,
        JournalStats, ListQuery, Notices, OwnershipChange, Relay, SagaSummary,
        request::{RemovedTo, WriteRequest},
    },
    saga::{Event, Offset, Participant, SagaId, SagaStatus, Timestamp},
};

mod batch;
mod check;
mod duty;
mod error;
pub mod node;
mod notice;
mod reads;
mod relay;
pub mod roster;
pub mod schema;
mod snapshot;
mod ssl;
mod takeover;
mod target;
pub mod throwaway;
mod writer;

pub use error::PgError;
pub use node::{Epoch, LEASE_TTL, Membership, NodeId};
pub use roster::{Lease, NodeInfo};
pub use snapshot::{PgSnapshot, SNAPSHOT_IDLE_TIMEOUT};
pub use target::{PgTarget, redacted};

/// How often the feed head is read for other nodes' commits.
pub const FEED_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Connections for reads (and the heartbeat), beside the writer's own.
pub const READ_POOL_SIZE: usize = 8;

/// How to open a [`PgJournal`].
#[derive(Clone, Debug)]
pub struct PgOptions {
    pub target: PgTarget,
    /// Who this process is among the nodes sharing the journal.
    pub node: NodeId,
    /// Where this node serves gRPC, as others and operators should reach it
    /// (stored in its `node` row).
    pub addr: String,
    /// How long the lease lasts without a renewal; renewed every third of it.
    pub lease_ttl: Duration,
    /// Connections in the pool for reads.
    pub pool_size: usize,
}

impl PgOptions {
    /// The defaults for `target` and `node`.
    pub fn new(target: PgTarget, node: NodeId, addr: impl Into<String>) -> Self {
        Self {
            target,
            node,
            addr: addr.into(),
            lease_ttl: LEASE_TTL,
            pool_size: READ_POOL_SIZE,
        }
    }
}

/// The state the handle, the writer and the background tasks share.
pub(super) struct Shared {
    pub target: PgTarget,
    pub node: NodeId,
    /// Where this node serves gRPC (its `node` row's `addr`): the configured
    /// listen address until the server says where it bound
    /// ([`Journal::advertise`]). A std mutex, held to read or swap it.
    pub addr: Mutex<String>,
    /// The epoch this process writes under: set by the join, changed by a
    /// re-join after a fence (`node.rs`) and by this node's own bump before
    /// it takes sagas over (`takeover.rs`).
    epoch: AtomicU64,
    /// Read-held by everything that writes under the epoch (each batch
    /// transaction until its COMMIT answered, each lease renewal, a duty's
    /// or a notice's round trip), write-held by what changes it (a re-join,
    /// the bump before a takeover), so none of them meets an epoch changing
    /// under it. tokio's: held across statements, and fair, so a bump
    /// waiting for the batches in flight is not starved by the next ones.
    pub epoch_lock: Arc<tokio::sync::RwLock<()>>,
    /// Set while this process is fenced: from when it learns its epoch moved
    /// on until it joins again.
    pub fence: node::Fence,
    /// Until when this process holds its lease, as far as it knows (health
    /// and metrics; fencing is the batch's check).
    pub lease: node::LeaseClock,
    /// Tells the engine of sagas this node took over and of re-joins.
    pub ownership: mpsc::UnboundedSender<OwnershipChange>,
    /// Why writes fail, while they do (and for good once fenced).
    pub failure: watch::Sender<Option<String>>,
    /// The last offset known committed, by any node.
    pub durable: watch::Sender<Offset>,
    pub counters: Counters,
}

impl Shared {
    /// Which node this process writes as, and at which epoch now.
    pub fn me(&self) -> Membership {
        Membership {
            node: self.node.clone(),
            epoch: self.epoch(),
        }
    }

    /// The epoch alone, without the node id's copy: read at every
    /// participant call (`x-sagad-epoch`) and every scrape.
    pub fn epoch(&self) -> Epoch {
        Epoch(self.epoch.load(Ordering::Acquire))
    }

    /// Records that this process is fenced (saying so once) and returns the
    /// error every write gets until it joins again.
    pub fn fenced(&self, now: Option<u64>) -> PgError {
        let me = self.me();
        let error = PgError::Fenced {
            node: me.node.to_string(),
            held: me.epoch.0,
            now,
        };
        if self.fence.set(now) {
            self.counters.fenced.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %error, "this node is fenced: it journals nothing until it joins again");
            self.failure.send_replace(Some(error.to_string()));
        }
        error
    }

    /// This process writes under `epoch` from now on; only with
    /// [`Shared::epoch_lock`] held, after the change committed.
    pub fn set_epoch(&self, epoch: Epoch) {
        self.epoch.store(epoch.0, Ordering::Release);
    }

    /// The re-join worked: writes go on under `epoch`, and the engine is
    /// told its sagas may have moved.
    pub fn rejoined(&self, epoch: Epoch) {
        self.set_epoch(epoch);
        self.fence.clear();
        self.counters.rejoins.fetch_add(1, Ordering::Relaxed);
        self.failure.send_replace(None);
        tracing::warn!(node = %self.node, epoch = %epoch, "joined the journal again after a fence, with a new epoch");
        let _ = self.ownership.send(OwnershipChange::Rejoined);
    }

    /// Raises the durable offset to `last` (never lowers it).
    pub fn publish(&self, last: u64) {
        self.durable.send_if_modified(|durable| {
            let raised = last > durable.get();
            if raised {
                *durable = Offset(last);
            }
            raised
        });
    }
}

/// Counters the writer and the background tasks keep and the handle reads
/// ([`Journal::stats`], [`Journal::cluster`]).
#[derive(Default)]
pub(super) struct Counters {
    pub flushes: AtomicU64,
    pub requests: AtomicU64,
    pub events: AtomicU64,
    pub observer: OnceLock<Arc<dyn FlushObserver>>,
    /// This node's open sagas as last counted (`node::count_owned`).
    pub owned_open: AtomicU64,
    /// Times this process learnt it was fenced ([`Shared::fenced`]).
    pub fenced: AtomicU64,
    /// Re-joins after a fence ([`Shared::rejoined`]).
    pub rejoins: AtomicU64,
    /// Nodes this one deposed (`takeover.rs`).
    pub deposed: AtomicU64,
}

/// A journal in a PostgreSQL database; see the module docs.
pub struct PgJournal {
    shared: Arc<Shared>,
    pool: Pool,
    /// The node's lease TTL, which a duty's lease adds to the holder's ask.
    lease_ttl: Duration,
    request_tx: mpsc::Sender<WriteRequest>,
    /// The writer task, awaited by `close` (a std mutex: never held across await).
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Stops the heartbeat, the takeover and the feed poll.
    background: CancellationToken,
    failure: watch::Receiver<Option<String>>,
    /// For the engine, taken once ([`Journal::ownership_changes`]); a std
    /// mutex, held only to take it.
    changes: Mutex<Option<mpsc::UnboundedReceiver<OwnershipChange>>>,
    /// Calls for a saga's owner ([`Journal::relay`]).
    relay: Arc<relay::PgRelay>,
}

impl PgJournal {
    /// Connects, creates or checks the tables, joins as `options.node` (a new
    /// epoch), and starts the writer, the heartbeat and the feed poll.
    pub async fn open(options: PgOptions) -> Result<Self, JournalError> {
        let PgOptions {
            target,
            node,
            addr,
            lease_ttl,
            pool_size,
        } = options;
        let mut client = connect(&target).await?;
        schema::ensure(&mut client, &target).await?;
        warn_if_not_durable(&client).await;
        let sent = std::time::Instant::now();
        let epoch = node::join(&mut client, &target, &node, &addr, lease_ttl).await?;
        let last: i64 = client
            .query_one("SELECT last FROM sagad.feed_head", &[])
            .await
            .map_err(PgError::setup(&target, "reading the feed head"))?
            .get(0);
        tracing::info!(target = %target, node = %node, epoch = %epoch, "joined the PostgreSQL journal");
        let (failure_tx, failure) = watch::channel(None);
        let (ownership, changes) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            target: target.clone(),
            node,
            addr: Mutex::new(addr),
            epoch: AtomicU64::new(epoch.0),
            epoch_lock: Default::default(),
            fence: node::Fence::default(),
            lease: node::LeaseClock::new(lease_ttl, sent),
            ownership,
            failure: failure_tx,
            durable: watch::Sender::new(Offset(last as u64)),
            counters: Counters::default(),
        });
        node::count_owned(&client, &shared).await;
        let pool = pool(&target, pool_size)?;
        let writer = writer::Writer::new(target, shared.clone(), lease_ttl, client).await?;
        let (request_tx, request_rx) = mpsc::channel(JOURNAL_QUEUE_CAPACITY);
        let writer = tokio::spawn(writer.run(request_rx));
        let background = CancellationToken::new();
        tokio::spawn(node::heartbeat(
            pool.clone(),
            shared.clone(),
            lease_ttl,
            background.clone(),
        ));
        tokio::spawn(takeover::run(
            pool.clone(),
            shared.clone(),
            lease_ttl,
            background.clone(),
        ));
        tokio::spawn(poll_feed_head(
            pool.clone(),
            shared.clone(),
            background.clone(),
        ));
        let relay = Arc::new(relay::PgRelay {
            pool: pool.clone(),
            shared: shared.clone(),
            lease_ttl,
            polls: AtomicU64::new(0),
        });
        Ok(Self {
            relay,
            shared,
            pool,
            lease_ttl,
            request_tx,
            writer: Mutex::new(Some(writer)),
            background,
            failure,
            changes: Mutex::new(Some(changes)),
        })
    }

    /// Which node this journal writes as, and at which epoch now.
    pub fn membership(&self) -> Membership {
        self.shared.me()
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, JournalError>>) -> WriteRequest,
    ) -> Result<T, JournalError> {
        crate::journal::request::send(&self.request_tx, make).await
    }

    /// Ends the node's lease and its duties' leases now, for its epoch only
    /// (a newer instance keeps its own). Only after the writer stopped: no batch can need the lease
    /// again. A failure is logged: the lease then runs out by itself.
    async fn release(&self) {
        let me = self.shared.me();
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] =
            [&me.node.as_str(), &(me.epoch.0 as i64)];
        let released = match self.reader().await {
            // The duties first: while the node's lease runs, nobody else
            // could take them anyway.
            Ok(client) => async {
                client.execute(duty::RELEASE, &params).await?;
                client
                    .execute(
                        "UPDATE sagad.node SET lease_until = clock_timestamp()
                         WHERE node_id = $1 AND epoch = $2",
                        &params,
                    )
                    .await
            }
            .await
            .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match released {
            Ok(_) => {
                self.shared.lease.lapsed();
                tracing::info!(node = %me.node, "gave up the node's lease and its duties")
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot give up the node's lease; it runs out by itself")
            }
        }
    }

    /// A pooled connection for a read.
    async fn reader(&self) -> Result<Object, JournalError> {
        pooled(&self.pool).await
    }
}

impl Drop for PgJournal {
    fn drop(&mut self) {
        self.background.cancel();
    }
}

#[async_trait]
impl Journal for PgJournal {
    async fn append(&self, events: Vec<Event>) -> Result<Vec<Event>, JournalError> {
        self.request(|reply| WriteRequest::Append { events, reply })
            .await
    }

    async fn read_saga(&self, id: SagaId) -> Result<Vec<Event>, JournalError> {
        reads::saga(&self.reader().await?, id).await
    }

    async fn read_after(&self, after: Offset, limit: usize) -> Result<Vec<Event>, JournalError> {
        reads::after(&self.reader().await?, after, limit).await
    }

    async fn archived_through(&self) -> Result<Offset, JournalError> {
        reads::archived_through(&self.reader().await?).await
    }

    async fn finished_before(
        &self,
        cutoff: Timestamp,
        after: Option<SagaId>,
        limit: usize,
    ) -> Result<Vec<SagaId>, JournalError> {
        reads::finished_before(&self.reader().await?, cutoff, after, limit).await
    }

    async fn remove_sagas(&self, ids: Vec<SagaId>) -> Result<Vec<SagaId>, JournalError> {
        if ids.is_empty() {
            return Ok(ids);
        }
        self.request(|reply| WriteRequest::Remove {
            ids,
            to: RemovedTo::Archive,
            reply,
        })
        .await
    }

    fn durable_offset(&self) -> watch::Receiver<Offset> {
        self.shared.durable.subscribe()
    }

    /// This node's unfinished sagas: the ones it must recover.
    async fn unfinished(&self) -> Result<Vec<SagaId>, JournalError> {
        reads::unfinished(&self.reader().await?, self.shared.node.as_str()).await
    }

    async fn saga_for_key(&self, key: &str) -> Result<Option<SagaId>, JournalError> {
        reads::saga_for_key(&self.reader().await?, key).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<SagaSummary>, JournalError> {
        reads::list(&self.reader().await?, query).await
    }

    async fn put_participant(&self, participant: Participant) -> Result<(), JournalError> {
        self.request(|reply| WriteRequest::PutParticipant {
            participant: Box::new(participant),
            reply,
        })
        .await
    }

    async fn participants(&self) -> Result<Vec<Participant>, JournalError> {
        reads::participants(&self.reader().await?).await
    }

    fn stats(&self) -> JournalStats {
        let counters = &self.shared.counters;
        JournalStats {
            flushes: counters.flushes.load(Ordering::Relaxed),
            requests: counters.requests.load(Ordering::Relaxed),
            events: counters.events.load(Ordering::Relaxed),
            local: None,
        }
    }

    fn observe_flushes(&self, observer: Arc<dyn FlushObserver>) {
        let _ = self.shared.counters.observer.set(observer);
    }

    fn write_failure(&self) -> Option<String> {
        self.failure.borrow().clone()
    }

    fn write_failures(&self) -> watch::Receiver<Option<String>> {
        self.failure.clone()
    }

    /// Writes what is queued and stops the writer, the heartbeat, the
    /// takeover and the feed poll, then gives up the node's lease, so the
    /// other nodes take its open sagas over at their next look instead of
    /// after a lease's time. Reads still work.
    async fn close(&self) -> Result<(), JournalError> {
        let result = crate::journal::request::close(&self.request_tx).await;
        self.background.cancel();
        let writer = self.writer.lock().expect("writer handle lock").take();
        if let Some(writer) = writer {
            // The writer answered Close and is returning.
            let _ = writer.await;
        }
        if result.is_ok() {
            self.release().await;
        }
        result
    }

    fn ownership_changes(&self) -> Option<mpsc::UnboundedReceiver<OwnershipChange>> {
        self.changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn epoch(&self) -> Option<u64> {
        Some(self.shared.epoch().0)
    }

    async fn advertise(&self, addr: &str) -> Result<(), JournalError> {
        *self.shared.addr.lock().unwrap_or_else(|p| p.into_inner()) = addr.to_string();
        self.reader()
            .await?
            .execute(
                "UPDATE sagad.node SET addr = $2 WHERE node_id = $1",
                &[&self.shared.node.as_str(), &addr],
            )
            .await
            .map_err(|source| {
                JournalError::Postgres(PgError::Statement {
                    what: "recording where this node serves",
                    source,
                })
            })?;
        Ok(())
    }

    async fn owner(&self, id: SagaId) -> Result<Option<NodeId>, JournalError> {
        roster::owner(&self.reader().await?, id).await
    }

    async fn nodes(&self) -> Result<Option<Vec<NodeInfo>>, JournalError> {
        roster::nodes(&self.reader().await?).await.map(Some)
    }

    /// From memory only: the lease as this process knows it
    /// ([`node::LeaseClock`]), the counters the background tasks keep.
    fn cluster(&self) -> Option<ClusterStatus> {
        let shared = &self.shared;
        let counters = &shared.counters;
        Some(ClusterStatus {
            lease_held: shared.fence.get().is_none()
                && shared.lease.held(std::time::Instant::now()),
            epoch: shared.epoch().0,
            owned_open: counters.owned_open.load(Ordering::Relaxed),
            fenced: counters.fenced.load(Ordering::Relaxed),
            rejoins: counters.rejoins.load(Ordering::Relaxed),
            deposed: counters.deposed.load(Ordering::Relaxed),
        })
    }

    /// A lease of `within` plus the node's lease TTL (`duty.rs`).
    async fn hold_duty(&self, duty: Duty, within: Duration) -> Result<bool, JournalError> {
        let client = self.reader().await?;
        duty::hold(&client, &self.shared, duty, within + self.lease_ttl).await
    }

    fn notices(&self) -> Option<Arc<dyn Notices>> {
        Some(Arc::new(notice::PgNotices {
            pool: self.pool.clone(),
            shared: self.shared.clone(),
        }))
    }

    fn relay(&self) -> Option<Arc<dyn Relay>> {
        Some(self.relay.clone())
    }

    fn node(&self) -> Option<NodeId> {
        Some(self.shared.node.clone())
    }
}

/// A connection from `pool`, for a read or a statement outside the writer.
pub(super) async fn pooled(pool: &Pool) -> Result<Object, JournalError> {
    pool.get()
        .await
        .map_err(|e| JournalError::Postgres(PgError::Pool(e)))
}

/// One connection to `target`, its connection task spawned; an error names
/// the target without its password.
pub(super) async fn connect(target: &PgTarget) -> Result<Client, PgError> {
    let (client, connection) =
        session_config(target)
            .connect(target.tls())
            .await
            .map_err(|source| PgError::Connect {
                target: target.to_string(),
                source,
            })?;
    tokio::spawn(async move {
        // It ends when the client is dropped, or with the error every
        // request on it then meets.
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "a journal connection ended");
        }
    });
    Ok(client)
}

/// How long a session of this journal may sit inside a transaction without
/// sending anything before PostgreSQL ends it (`idle_in_transaction_session_
/// timeout`). A node stopped (SIGSTOP, a VM paused) in the middle of a batch
/// would otherwise hold its row `FOR SHARE` for as long as it is stopped, and
/// no survivor could depose it. No transaction of sagad waits this long
/// between its statements and its COMMIT.
pub const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(5);

/// The target's settings, with the session settings every journal
/// connection needs added to whatever `options` the target gives.
fn session_config(target: &PgTarget) -> tokio_postgres::Config {
    session_config_idle(target, IDLE_IN_TRANSACTION_TIMEOUT)
}

/// [`session_config`], with `idle` for the idle-in-transaction timeout (the
/// read-only snapshot's is longer: `snapshot.rs`).
fn session_config_idle(target: &PgTarget, idle: Duration) -> tokio_postgres::Config {
    let mut config = target.config().clone();
    let ours = format!(
        "-c idle_in_transaction_session_timeout={}",
        idle.as_millis()
    );
    let options = match config.get_options() {
        Some(theirs) if !theirs.is_empty() => format!("{theirs} {ours}"),
        _ => ours,
    };
    config.options(&options);
    config
}

/// The pool of reading connections.
fn pool(target: &PgTarget, size: usize) -> Result<Pool, PgError> {
    let manager = Manager::from_config(
        session_config(target),
        target.tls(),
        ManagerConfig {
            // A broken connection fails its next statement and is dropped;
            // checking each one before use would cost a round trip per read.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size.max(1))
        .build()
        .map_err(|e| PgError::Schema {
            target: target.to_string(),
            why: format!("cannot build the connection pool: {e}"),
        })
}

/// Says so, once at open, when the server does not make commits durable.
async fn warn_if_not_durable(client: &Client) {
    if let Ok(row) = client.query_one("SHOW fsync", &[]).await
        && row.get::<_, String>(0) == "off"
    {
        tracing::warn!(
            "the PostgreSQL server runs with fsync=off: a crash of its machine can lose acknowledged sagas"
        );
    }
}

/// Raises the durable offset with other nodes' commits, every
/// [`FEED_POLL_INTERVAL`], until `stop`.
async fn poll_feed_head(pool: Pool, shared: Arc<Shared>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(FEED_POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let Ok(client) = pool.get().await else {
            continue;
        };
        match reads::last_offset(&client).await {
            Ok(last) => shared.publish(last.get()),
            Err(e) => tracing::debug!(error = %e, "cannot read the feed head"),
        }
    }
}

/// A saga status as the `status` column holds it.
pub(super) fn status_name(status: SagaStatus) -> &'static str {
    match status {
        SagaStatus::Running => "running",
        SagaStatus::Compensating => "compensating",
        SagaStatus::Completed => "completed",
        SagaStatus::Compensated => "compensated",
        SagaStatus::Failed => "failed",
        SagaStatus::Scheduled => "scheduled",
    }
}

/// The `status` column read back.
pub(super) fn status_of(name: &str) -> Result<SagaStatus, JournalError> {
    Ok(match name {
        "running" => SagaStatus::Running,
        "compensating" => SagaStatus::Compensating,
        "completed" => SagaStatus::Completed,
        "compensated" => SagaStatus::Compensated,
        "failed" => SagaStatus::Failed,
        "scheduled" => SagaStatus::Scheduled,
        other => {
            return Err(JournalError::Corrupt {
                key: "sagad.saga.status".into(),
                why: format!("unknown status '{other}'"),
            });
        }
    })
}

/// A uuid column read back as a saga id.
pub(super) fn saga_of(id: Uuid) -> SagaId {
    SagaId::from_bytes(*id.as_bytes())
}

#[cfg(test)]
mod tests;
