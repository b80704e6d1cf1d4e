//! The writer task: group commit, one transaction per batch, two batches in
//! flight per node (one waiting for its COMMIT, the next one's statements
//! running), and what a failed or fenced batch means for the writes after it.
//!
//! One task owns the writer's two connections. It takes the first queued
//! request, drains whatever else is queued (up to [`JOURNAL_BATCH_MAX`]),
//! works the batch out (`batch.rs`) and sends its whole transaction at once,
//! pipelined on one connection, in this order:
//!
//! ```text
//!  BEGIN (READ COMMITTED)
//!  1 check     SELECT … FROM node WHERE node_id = $me FOR SHARE   fenced? lapsed?
//!  2 sagas     INSERT new saga rows … ON CONFLICT DO NOTHING      a key taken elsewhere?
//!              UPDATE saga rows … WHERE owner = ($me, $epoch)     moved? stale seq?
//!                                   AND last_seq = first seq - 1
//!  3 others    participants upserted; retention's removals (and the horizon)
//!  4 offsets   UPDATE feed_head SET last = last + n RETURNING last,
//!              INSERT every event, offsets last-n+1 ..= last      one statement
//!  ─ the answers are read ─ any miss: ROLLBACK, refuse just those, redo the rest
//!  COMMIT
//! ```
//!
//! Two round trips per batch, whatever its size. Statement 4 comes last so
//! that the feed head's row lock, which serialises every node's batches, is
//! held only from it to the COMMIT's answer.
//!
//! While a COMMIT waits for PostgreSQL to flush its WAL, the next batch is
//! gathered and sent on the other connection (`overlap`):
//!
//! ```text
//!  conn A  │ batch N: 1 2 3 4 ─ COMMIT ······ answered │         │ batch N+2 …
//!  conn B  │              batch N+1: 1 2 3 ─ 4 (waits for N's feed head) ─ COMMIT ·····
//!                                          acks of N ─┘          └─ sent only now
//! ```
//!
//! Its statement 4 waits for batch N's row lock on the feed head, so its
//! offsets follow N's and it commits after N; its COMMIT is sent only once
//! N's answered, and only if N committed.
//!
//! Invariants:
//! - **Nothing is acknowledged before its COMMIT answered.** With
//!   `synchronous_commit` at least `local`, that answer means durable.
//! - **A miss refuses only its own appends.** A saga row that a guard did not
//!   match (taken key, another owner, a stale seq) rolls the batch back; its
//!   appends are refused, saying which, and the rest is sent again as a new
//!   transaction. Offsets of a rolled-back batch are handed out again: they
//!   were never anyone's.
//! - **A failure stops writes.** After a batch failed, every request is
//!   refused until a probe ([`JOURNAL_PROBE_INTERVAL`]) renews the lease on
//!   a working connection; a batch whose statements went in while it
//!   committed is rolled back (its COMMIT was never sent) and refused as not
//!   written. A COMMIT without an answer is reported as uncertain
//!   ([`PgError::Uncertain`]): the engine reads the saga again before it goes
//!   on.
//! - **Fenced is for good.** Once this process finds its epoch moved on, it
//!   refuses every write until it stops. The epoch cannot change while a
//!   batch is in flight: each holds [`Shared::epoch_lock`] (for reading)
//!   until its COMMIT answered.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    future::Future,
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use tokio::sync::{Notify, OwnedRwLockReadGuard, mpsc, oneshot};
use tokio_postgres::{Client, Row, Statement};
use uuid::Uuid;

use super::{
    PgError, PgTarget, Shared,
    batch::{Batch, uuid},
    node, saga_of,
};
use crate::{
    journal::{JOURNAL_BATCH_MAX, JOURNAL_PROBE_INTERVAL, JournalError, request::WriteRequest},
    saga::{Offset, SagaId},
};

const INSERT_SAGAS: &str = "INSERT INTO sagad.saga (saga_id, idempotency_key, definition, status,
         created_at, ended_at, owner_node, owner_epoch, next_due_at, last_seq)
     SELECT s.saga_id, s.key, s.definition, s.status, s.created_at, s.ended_at, $9, $10, s.due, s.last_seq
     FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                 $6::timestamptz[], $7::timestamptz[], $8::bigint[])
          AS s(saga_id, key, definition, status, created_at, ended_at, due, last_seq)
     ON CONFLICT DO NOTHING
     RETURNING saga_id";

const UPDATE_SAGAS: &str = "UPDATE sagad.saga AS s SET
         last_seq = u.last_seq,
         status = COALESCE(u.status, s.status),
         ended_at = CASE WHEN u.status IS NULL THEN s.ended_at ELSE u.ended_at END,
         next_due_at = CASE WHEN u.due_set THEN u.due ELSE s.next_due_at END
     FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::text[], $5::timestamptz[],
                 $6::bool[], $7::timestamptz[])
          AS u(saga_id, prev_seq, last_seq, status, ended_at, due_set, due)
     WHERE s.saga_id = ANY($1::uuid[])
       AND s.saga_id = u.saga_id AND s.last_seq = u.prev_seq
       AND s.owner_node = $8 AND s.owner_epoch = $9
     RETURNING s.saga_id";

const PUT_PARTICIPANTS: &str = "INSERT INTO sagad.participant (name, body)
     SELECT * FROM unnest($1::text[], $2::bytea[])
     ON CONFLICT (name) DO UPDATE SET body = EXCLUDED.body";

/// Final sagas only; their events go with them, and the horizon rises to the
/// highest offset removed (GREATEST ignores the NULL of removing nothing).
const REMOVE_SAGAS: &str = "WITH gone AS (
         DELETE FROM sagad.saga
         WHERE saga_id = ANY($1::uuid[]) AND status IN ('completed', 'compensated')
         RETURNING saga_id),
     events AS (
         DELETE FROM sagad.event WHERE saga_id IN (SELECT saga_id FROM gone)
         RETURNING \"offset\"),
     horizon AS (
         UPDATE sagad.archive_horizon
         SET through = GREATEST(through, (SELECT max(\"offset\") FROM events))
         RETURNING through)
     SELECT saga_id FROM gone";

/// The offsets and the events, in one statement, last in the batch.
///
/// An event whose (saga, seq) is taken is skipped, not an error: its saga's
/// row guard missed too (a seq is taken only below the row's `last_seq`, or
/// for an id another start took), so the batch is rolled back and redone
/// without that append, which is refused alone (`NotOwner`, `OutOfOrder`).
/// An error would sink the whole batch, everyone's appends with it: a
/// deposed node's runners, waking with stale seqs, would fail every batch.
const APPEND_EVENTS: &str = "WITH head AS (
         UPDATE sagad.feed_head SET last = last + $1::bigint RETURNING last),
     written AS (
         INSERT INTO sagad.event (\"offset\", saga_id, seq, body)
         SELECT head.last - $1::bigint + e.ord, e.saga_id, e.seq, e.body
         FROM head, unnest($2::uuid[], $3::bigint[], $4::bytea[])
              WITH ORDINALITY AS e(saga_id, seq, body, ord)
         ON CONFLICT (saga_id, seq) DO NOTHING)
     SELECT last FROM head";

/// Why a saga row of a batch was not written, read after the rollback.
const EXPLAIN_MISSES: &str = "SELECT saga_id, idempotency_key, owner_node, owner_epoch, last_seq
     FROM sagad.saga WHERE saga_id = ANY($1::uuid[]) OR idempotency_key = ANY($2::text[])";

/// The writer's connection and its prepared statements.
struct Conn {
    client: Client,
    check: Statement,
    insert: Statement,
    update: Statement,
    put: Statement,
    remove: Statement,
    append: Statement,
}

/// How a transaction went, short of success.
enum Miss {
    /// Some saga rows were not written: these sagas' appends are refused.
    Sagas(HashMap<SagaId, JournalError>),
    /// The batch failed as a whole.
    Failed(PgError),
}

/// The writer task's state.
pub(super) struct Writer {
    pub target: PgTarget,
    pub shared: Arc<Shared>,
    pub ttl: Duration,
    /// The writer's connection for the next transaction; `None` once it
    /// broke (or while it is in a batch waiting for its COMMIT), until the
    /// next batch or a probe connects.
    conn: Option<Conn>,
    /// The other connection, idle: two batches can be in flight, one
    /// waiting for its COMMIT while the next one's statements run.
    spare: Option<Conn>,
    /// Set by a failed batch; every write is refused until a probe works.
    failed: Option<Arc<PgError>>,
    /// Requests a batch handed back, first in the next one.
    carried: VecDeque<WriteRequest>,
    /// When the database was last probed (or the failure met).
    probed: Instant,
}

impl Writer {
    /// The writer over an open connection (the one the open joined on).
    pub async fn new(
        target: PgTarget,
        shared: Arc<Shared>,
        ttl: Duration,
        client: Client,
    ) -> Result<Self, PgError> {
        let conn = prepare(client)
            .await
            .map_err(PgError::setup(&target, "preparing the writer's statements"))?;
        Ok(Self {
            target,
            shared,
            ttl,
            conn: Some(conn),
            spare: None,
            failed: None,
            carried: VecDeque::new(),
            probed: Instant::now(),
        })
    }

    pub async fn run(mut self, mut request_rx: mpsc::Receiver<WriteRequest>) {
        // The batch whose COMMIT is on its way, if one is.
        let mut committing: Option<Committing> = None;
        loop {
            if let Some(batch) = committing.take() {
                match self.overlap(batch, &mut request_rx).await {
                    Overlapped::Committing(next) => committing = next,
                    Overlapped::Close(batch, reply) => return self.close(batch, reply).await,
                    Overlapped::Closed => return,
                }
                continue;
            }
            let first = match self.carried.pop_front() {
                Some(request) => request,
                // While failed, requests are refused at once, and the
                // database is probed every interval even while they keep
                // coming; one that comes when a probe is due waits for it.
                None if self.failed.is_some() => {
                    let due = self.probed + JOURNAL_PROBE_INTERVAL;
                    match request_rx.try_recv() {
                        Ok(request) if Instant::now() < due => request,
                        Ok(request) => {
                            self.carried.push_back(request);
                            self.probe().await;
                            continue;
                        }
                        Err(mpsc::error::TryRecvError::Empty) => {
                            tokio::time::sleep_until(due.into()).await;
                            self.probe().await;
                            continue;
                        }
                        Err(mpsc::error::TryRecvError::Disconnected) => return,
                    }
                }
                None => match request_rx.recv().await {
                    Some(request) => request,
                    None => return,
                },
            };
            let (batch, close) = self.gather(first, &mut request_rx);
            if let Some(reply) = close {
                return self.close(batch, reply).await;
            }
            if !batch.is_empty() {
                committing = self.stage(batch).await.map(Staged::commit);
            }
        }
    }

    /// Waits for `batch`'s COMMIT, and meanwhile gathers the next batch
    /// from the requests queued or coming, and runs its statements: their
    /// saga rows and events go in while the database flushes the previous
    /// COMMIT to its WAL (the feed head's row lock, which the previous batch
    /// holds until then, keeps the offsets in commit order). The next
    /// batch's COMMIT is sent only once the previous one's answered, and
    /// only if it worked: after a failed batch nothing more is written, and
    /// the next one is rolled back and refused.
    async fn overlap(
        &mut self,
        batch: Committing,
        request_rx: &mut mpsc::Receiver<WriteRequest>,
    ) -> Overlapped {
        let shared = self.shared.clone();
        let answered = Notify::new();
        let previous = async {
            let finished = finish(&shared, batch).await;
            answered.notify_one();
            finished
        };
        let next = async {
            let first = match self.carried.pop_front() {
                Some(request) => request,
                None => tokio::select! {
                    biased;
                    request = request_rx.recv() => match request {
                        Some(request) => request,
                        None => return Next::Closed,
                    },
                    // Nothing came before the answer: the next batch is
                    // gathered as usual.
                    () = answered.notified() => return Next::Nothing,
                },
            };
            let (batch, close) = self.gather(first, request_rx);
            match close {
                Some(reply) => Next::Close(Box::new(batch), reply),
                None if batch.is_empty() => Next::Nothing,
                None => Next::Staged(self.stage(batch).await.map(Box::new)),
            }
        };
        let (finished, next) = tokio::join!(previous, next);
        let failure = self.settle(finished);
        match next {
            Next::Nothing => Overlapped::Committing(None),
            Next::Closed => Overlapped::Closed,
            Next::Close(batch, reply) => Overlapped::Close(*batch, reply),
            Next::Staged(None) => Overlapped::Committing(None),
            Next::Staged(Some(staged)) => match failure {
                None => Overlapped::Committing(Some(staged.commit())),
                Some(error) => {
                    // Its COMMIT was never sent: certainly not written.
                    let Staged { batch, conn, .. } = *staged;
                    if conn.client.batch_execute("ROLLBACK").await.is_ok() {
                        self.give_back(conn);
                    }
                    refuse(batch, &Arc::new(PgError::NotWritten(error)));
                    Overlapped::Committing(None)
                }
            },
        }
    }

    /// Writes `batch` and whatever earlier batches handed back, then stops
    /// and answers the `Close`.
    async fn close(&mut self, mut batch: Batch, reply: oneshot::Sender<Result<(), JournalError>>) {
        loop {
            if !batch.is_empty()
                && let Some(staged) = self.stage(batch).await
            {
                let finished = finish(&self.shared.clone(), staged.commit()).await;
                self.settle(finished);
            }
            if self.carried.is_empty() {
                break;
            }
            batch = Batch::default();
            for request in std::mem::take(&mut self.carried) {
                self.take_into(&mut batch, request);
            }
        }
        let _ = reply.send(match &self.failed {
            Some(e) => Err(JournalError::Postgres(PgError::Refused(e.clone()))),
            None => Ok(()),
        });
    }

    /// A batch of `first`, what earlier batches handed back and whatever else
    /// is queued (up to [`JOURNAL_BATCH_MAX`]), and the reply of a `Close`
    /// among them.
    fn gather(
        &mut self,
        first: WriteRequest,
        request_rx: &mut mpsc::Receiver<WriteRequest>,
    ) -> (Batch, Option<oneshot::Sender<Result<(), JournalError>>>) {
        let mut requests = vec![first];
        requests.extend(self.carried.drain(..));
        while requests.len() < JOURNAL_BATCH_MAX {
            match request_rx.try_recv() {
                Ok(request) => requests.push(request),
                Err(_) => break,
            }
        }
        let mut batch = Batch::default();
        let mut close = None;
        for request in requests {
            match request {
                WriteRequest::Close { reply } => close = Some(reply),
                request => self.take_into(&mut batch, request),
            }
        }
        (batch, close)
    }

    /// `request` into `batch`, refused if writes are, handed back to the
    /// next batch if this one cannot take it.
    fn take_into(&mut self, batch: &mut Batch, request: WriteRequest) {
        if let Some(refusal) = self.refusal() {
            return request.refuse(refusal);
        }
        if let Some(back) = batch.take(request) {
            self.carried.push_back(back);
        }
    }

    /// Why a write is refused before it is tried, if it is.
    fn refusal(&self) -> Option<JournalError> {
        if let Some(now) = self.shared.fence.get() {
            return Some(JournalError::Postgres(self.shared.fenced(now)));
        }
        self.failed
            .as_ref()
            .map(|e| JournalError::Postgres(PgError::Refused(e.clone())))
    }

    /// Runs the batch's statements, redoing it without the appends a guard
    /// refused: its transaction, waiting for its COMMIT. `None` when
    /// nothing is left to commit (every caller has been answered).
    async fn stage(&mut self, mut batch: Batch) -> Option<Staged> {
        let started = Instant::now();
        loop {
            match self.transact(&batch).await {
                Ok((last, removed, held)) => {
                    let conn = self.conn.take().expect("the transaction's connection");
                    return Some(Staged {
                        batch,
                        conn,
                        last,
                        removed,
                        started,
                        _held: held,
                    });
                }
                Err(Miss::Sagas(mut refused)) => {
                    let sagas: HashSet<SagaId> = refused.keys().copied().collect();
                    let dropped = batch.drop_appends_of(&sagas);
                    // Each round drops at least one append, so this loop ends.
                    assert!(
                        !dropped.is_empty(),
                        "a refused saga has an append in the batch"
                    ); // faulty code
                    for append in dropped {
                        // One append per saga in a batch: its first refused
                        // saga's error is its own.
                        let saga = append
                            .events
                            .iter()
                            .map(|e| e.saga)
                            .find(|s| sagas.contains(s))
                            .expect("dropped for a refused saga");
                        let error = refused
                            .remove(&saga)
                            .unwrap_or(JournalError::Postgres(PgError::Conflict { saga }));
                        let _ = append.reply.send(Err(error));
                    }
                    if batch.is_empty() {
                        return None;
                    }
                }
                Err(Miss::Failed(e)) => {
                    self.fail(batch, e);
                    return None;
                }
            }
        }
    }

    /// One transaction of the batch up to its COMMIT, on `self.conn`: `Ok`
    /// with the last offset it took (0 without events), the sagas its
    /// removals removed, and the hold on the epoch it was written under.
    async fn transact(
        &mut self,
        batch: &Batch,
    ) -> Result<(u64, Vec<SagaId>, OwnedRwLockReadGuard<()>), Miss> {
        let shared = self.shared.clone();
        // The epoch cannot change while the batch is written under it, up
        // to its COMMIT's answer.
        let held = shared.epoch_lock.clone().read_owned().await;
        let me = shared.me();
        let me = &me;
        let conn = self.connect().await.map_err(Miss::Failed)?;
        let rows = batch.rows();
        let (node_id, epoch) = (me.node.as_str(), me.epoch.0 as i64);
        let remove_ids: Vec<Uuid> = batch
            .removals
            .iter()
            .flat_map(|r| r.ids.iter().copied().map(uuid))
            .collect();
        let names: Vec<&str> = batch.puts.iter().map(|p| p.name.as_str()).collect();
        let bodies: Vec<&[u8]> = batch.puts.iter().map(|p| p.body.as_slice()).collect();
        let events = rows.event_saga.len() as i64;
        let client = &conn.client;
        // Sent in this order on the first poll, each before any answer is
        // awaited (tokio-postgres pipelines requests made together); biased,
        // so that order is the order of the statements here.
        let (begun, checked, inserted, updated, put, removed, appended) = tokio::join!(
            biased;
            client.batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED"),
            async { client.query_opt(&conn.check, &[&node_id]).await },
            async {
                if rows.new_id.is_empty() {
                    return Ok(Vec::new());
                }
                client
                    .query(
                        &conn.insert,
                        &[
                            &rows.new_id,
                            &rows.new_key,
                            &rows.new_definition,
                            &rows.new_status,
                            &rows.new_created,
                            &rows.new_ended,
                            &rows.new_due,
                            &rows.new_last_seq,
                            &node_id,
                            &epoch,
                        ],
                    )
                    .await
            },
            async {
                if rows.upd_id.is_empty() {
                    return Ok(Vec::new());
                }
                client
                    .query(
                        &conn.update,
                        &[
                            &rows.upd_id,
                            &rows.upd_prev_seq,
                            &rows.upd_last_seq,
                            &rows.upd_status,
                            &rows.upd_ended,
                            &rows.upd_due_set,
                            &rows.upd_due,
                            &node_id,
                            &epoch,
                        ],
                    )
                    .await
            },
            async {
                if names.is_empty() {
                    return Ok(0);
                }
                client.execute(&conn.put, &[&names, &bodies]).await
            },
            async {
                if remove_ids.is_empty() {
                    return Ok(Vec::new());
                }
                client.query(&conn.remove, &[&remove_ids]).await
            },
            async {
                if events == 0 {
                    return Ok(None);
                }
                client
                    .query_one(
                        &conn.append,
                        &[&events, &rows.event_saga, &rows.event_seq, &rows.event_body],
                    )
                    .await
                    .map(Some)
            },
        );
        let statement = |what: &'static str| move |source| PgError::Statement { what, source };
        let answers: Result<_, PgError> = (|| {
            begun.map_err(statement("beginning the batch"))?;
            let found = checked
                .map_err(statement("checking the node's lease"))?
                .map(|row| (row.get::<_, i64>(0), row.get::<_, bool>(1)));
            let inserted = inserted.map_err(statement("inserting the batch's new sagas"))?;
            let updated = updated.map_err(statement("updating the batch's sagas"))?;
            put.map_err(statement("writing participants"))?;
            let removed = removed.map_err(statement("removing sagas"))?;
            let last = appended.map_err(statement("appending the batch's events"))?;
            Ok((found, inserted, updated, removed, last))
        })();
        let (found, inserted, updated, removed, last) = match answers {
            Ok(answers) => answers,
            Err(e) => {
                self.roll_back().await;
                return Err(Miss::Failed(PgError::NotWritten(Arc::new(e))));
            }
        };
        if let Err(e) = node::judge(found, me) {
            self.roll_back().await;
            return Err(Miss::Failed(match e {
                PgError::Fenced { now, .. } => self.shared.fenced(now),
                lapsed @ PgError::LeaseLapsed { .. } => {
                    // The database's word: health need not wait for the
                    // lease to run out by this node's count.
                    self.shared.lease.lapsed();
                    lapsed
                }
                other => other,
            }));
        }
        let missing_new = missing(&rows.new_id, &inserted);
        let missing_old = missing(&rows.upd_id, &updated);
        if !missing_new.is_empty() || !missing_old.is_empty() {
            self.roll_back().await;
            return Err(self.explain(batch, missing_new, missing_old).await);
        }
        let last = last.map_or(0, |row| row.get::<_, i64>(0) as u64);
        let removed = removed.iter().map(|row| saga_of(row.get(0))).collect();
        Ok((last, removed, held))
    }

    /// Takes in what a finished batch leaves: its connection back, and the
    /// failure writes stop for, which it returns.
    fn settle(
        &mut self,
        (conn, failure): (Option<Conn>, Option<Arc<PgError>>),
    ) -> Option<Arc<PgError>> {
        if let Some(conn) = conn {
            self.give_back(conn);
        }
        if let Some(error) = &failure {
            self.enter_failure(error);
        }
        failure
    }

    /// An idle connection back, for the next batch (or the one after).
    fn give_back(&mut self, conn: Conn) {
        if conn.client.is_closed() {
            return;
        }
        match self.conn {
            None => self.conn = Some(conn),
            Some(_) => self.spare = Some(conn),
        }
    }

    /// Ends a transaction that will not commit; a connection that cannot
    /// even do that is dropped, and the next batch or probe connects anew.
    async fn roll_back(&mut self) {
        let broken = match &self.conn {
            Some(conn) => conn.client.batch_execute("ROLLBACK").await.is_err(),
            None => false,
        };
        if broken {
            self.conn = None;
        }
    }

    /// Why the rows of `new` and `old` (sagas the batch starts and goes on
    /// with) were not written: the error for each saga's appends.
    async fn explain(&mut self, batch: &Batch, new: Vec<Uuid>, old: Vec<Uuid>) -> Miss {
        let keys: Vec<String> = batch
            .appends
            .iter()
            .flat_map(|a| &a.events)
            .filter(|e| new.contains(&uuid(e.saga)))
            .filter_map(|e| match &e.kind {
                crate::saga::EventKind::SagaStarted {
                    idempotency_key: Some(k),
                    ..
                } => Some(k.clone()),
                _ => None,
            })
            .collect();
        let ids: Vec<Uuid> = new.iter().chain(&old).copied().collect();
        let conn = match self.connect().await {
            Ok(conn) => conn,
            Err(e) => return Miss::Failed(e),
        };
        let rows = match conn.client.query(EXPLAIN_MISSES, &[&ids, &keys]).await {
            Ok(rows) => rows,
            Err(source) => {
                return Miss::Failed(PgError::NotWritten(Arc::new(PgError::Statement {
                    what: "reading why saga rows were not written",
                    source,
                })));
            }
        };
        let found: Vec<Found> = rows.iter().map(Found::from).collect();
        let mut refused = HashMap::new();
        for append in &batch.appends {
            for event in &append.events {
                let id = uuid(event.saga);
                if refused.contains_key(&event.saga) || !(new.contains(&id) || old.contains(&id)) {
                    continue;
                }
                let error = if new.contains(&id) {
                    self.why_not_started(event, &found)
                } else {
                    self.why_not_continued(event, &found)
                };
                refused.insert(event.saga, error);
            }
        }
        Miss::Sagas(refused)
    }

    /// A new saga's row was not inserted: its key or its id is taken.
    fn why_not_started(&self, first: &crate::saga::Event, found: &[Found]) -> JournalError {
        if let crate::saga::EventKind::SagaStarted {
            idempotency_key: Some(key),
            ..
        } = &first.kind
            && let Some(holder) = found
                .iter()
                .find(|f| f.key.as_deref() == Some(key.as_str()) && f.id != first.saga)
        {
            return JournalError::IdempotencyConflict {
                key: key.clone(),
                existing: holder.id,
            };
        }
        match found.iter().find(|f| f.id == first.saga) {
            Some(row) => JournalError::Postgres(PgError::OutOfOrder {
                saga: first.saga,
                journaled: row.last_seq,
                first: first.seq,
            }),
            None => JournalError::Postgres(PgError::Conflict { saga: first.saga }),
        }
    }

    /// A saga's row did not match the update's guard: gone, moved, or at
    /// another seq than the append continues from.
    fn why_not_continued(&self, first: &crate::saga::Event, found: &[Found]) -> JournalError {
        let me = self.shared.me();
        let me = &me;
        match found.iter().find(|f| f.id == first.saga) {
            None => JournalError::Corrupt {
                key: format!("saga {}", first.saga),
                why: format!("{} for a saga that never started", first.kind.name()),
            },
            // Another node's: taken over. (This node's at another epoch is
            // a re-stamp between the batch and this look: a conflict, tried
            // again, never a reason to let the saga go.)
            Some(row) if row.owner != me.node.as_str() => {
                JournalError::Postgres(PgError::NotOwner {
                    saga: first.saga,
                    owner: row.owner.clone(),
                    owner_epoch: row.owner_epoch,
                })
            }
            Some(row) if row.last_seq + 1 != first.seq => {
                JournalError::Postgres(PgError::OutOfOrder {
                    saga: first.saga,
                    journaled: row.last_seq,
                    first: first.seq,
                })
            }
            Some(_) => JournalError::Postgres(PgError::Conflict { saga: first.saga }),
        }
    }

    /// The batch failed as a whole: every caller is told, and writes stop
    /// until a probe works (for good when fenced).
    fn fail(&mut self, batch: Batch, error: PgError) {
        let error = Arc::new(error);
        self.enter_failure(&error);
        refuse(batch, &error);
    }

    /// Writes stop after `error` until a probe works (for good when fenced).
    fn enter_failure(&mut self, error: &Arc<PgError>) {
        tracing::error!(error = %error, "journal batch failed; refusing writes until PostgreSQL answers again");
        self.probed = Instant::now();
        if !matches!(**error, PgError::Fenced { .. }) {
            self.shared.failure.send_replace(Some(error.to_string()));
            self.failed = Some(error.clone());
        }
    }

    /// While failed: renews the lease on a working connection; when that
    /// works, writes are taken again. Everything committed so far is durable,
    /// so the durable offset is read again (an uncertain commit may have
    /// taken effect).
    async fn probe(&mut self) {
        self.probed = Instant::now();
        if self.shared.fence.get().is_some() {
            return;
        }
        let (shared, ttl) = (self.shared.clone(), self.ttl);
        let renewed = match self.connect().await {
            Ok(conn) => node::renew_lease(&conn.client, &shared, ttl).await,
            Err(_) => return,
        };
        match renewed {
            Ok(Ok(())) => {}
            Ok(Err(PgError::Fenced { now, .. })) => {
                shared.fenced(now);
                return;
            }
            // Still failing; a broken connection is made anew next time.
            Ok(Err(_)) | Err(_) => return,
        }
        if let Some(conn) = &self.conn
            && let Ok(row) = conn
                .client
                .query_one("SELECT last FROM sagad.feed_head", &[])
                .await
        {
            shared.publish(row.get::<_, i64>(0) as u64);
        }
        tracing::warn!(
            after = %self.failed.as_deref().map(ToString::to_string).unwrap_or_default(),
            "journal writes work again"
        );
        self.failed = None;
        shared.failure.send_replace(None);
    }

    /// The writer's connection (the spare one when the other is in a
    /// batch waiting for its COMMIT), connecting (and preparing) anew if it
    /// broke.
    async fn connect(&mut self) -> Result<&Conn, PgError> {
        if self.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            self.conn = self.spare.take().filter(|c| !c.client.is_closed());
        }
        if self.conn.is_none() {
            let client = super::connect(&self.target)
                .await
                .map_err(|e| PgError::NotWritten(Arc::new(e)))?;
            let conn = prepare(client).await.map_err(|source| {
                PgError::NotWritten(Arc::new(PgError::Statement {
                    what: "preparing the writer's statements",
                    source,
                }))
            })?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_ref().expect("just connected"))
    }
}

/// A batch whose statements all answered: its transaction waits for its
/// COMMIT.
struct Staged {
    batch: Batch,
    conn: Conn,
    /// The last offset it took (0 without events).
    last: u64,
    removed: Vec<SagaId>,
    started: Instant,
    /// The epoch it was written under cannot change until its COMMIT
    /// answered.
    _held: OwnedRwLockReadGuard<()>,
}

/// A COMMIT's answer, with the connection it was sent on.
type CommitAnswer = Pin<Box<dyn Future<Output = (Conn, Result<(), tokio_postgres::Error>)> + Send>>;

/// A batch whose COMMIT has been sent.
struct Committing {
    commit: CommitAnswer,
    batch: Batch,
    last: u64,
    removed: Vec<SagaId>,
    started: Instant,
    _held: OwnedRwLockReadGuard<()>,
}

impl Staged {
    /// Sends the COMMIT (at the first poll: tokio-postgres sends a request
    /// when its future is first polled).
    fn commit(self) -> Committing {
        let Staged {
            batch,
            conn,
            last,
            removed,
            started,
            _held,
        } = self;
        let commit = Box::pin(async move {
            let answer = conn.client.batch_execute("COMMIT").await;
            (conn, answer)
        });
        Committing {
            commit,
            batch,
            last,
            removed,
            started,
            _held,
        }
    }
}

/// What the writer does after an overlap.
enum Overlapped {
    /// Goes on, with the next batch's COMMIT on its way if there is one.
    Committing(Option<Committing>),
    /// Writes this batch and stops.
    Close(Batch, oneshot::Sender<Result<(), JournalError>>),
    /// Stops: every handle is gone.
    Closed,
}

/// The next batch, as far as it got while the previous one committed.
enum Next {
    Nothing,
    Closed,
    Close(Box<Batch>, oneshot::Sender<Result<(), JournalError>>),
    Staged(Option<Box<Staged>>),
}

/// Waits for the COMMIT and answers the batch's callers: the connection
/// back (unless the answer was lost with it), and the failure writes stop
/// for, if it failed.
async fn finish(shared: &Shared, batch: Committing) -> (Option<Conn>, Option<Arc<PgError>>) {
    let Committing {
        commit,
        batch,
        last,
        removed,
        started,
        _held,
    } = batch;
    let (conn, answer) = commit.await;
    drop(_held);
    let committing = |source| PgError::Statement {
        what: "committing the batch",
        source,
    };
    let (conn, error) = match answer {
        Ok(()) => {
            succeed(shared, batch, last, removed, started);
            return (Some(conn), None);
        }
        // PostgreSQL answered: it refused the commit and rolled back.
        Err(e) if e.as_db_error().is_some() => {
            (Some(conn), PgError::NotWritten(Arc::new(committing(e))))
        }
        Err(e) => (None, PgError::Uncertain(Arc::new(committing(e)))),
    };
    let error = Arc::new(error);
    refuse(batch, &error);
    (conn, Some(error))
}

/// The batch committed: counts it, publishes its offsets, answers everyone.
fn succeed(shared: &Shared, batch: Batch, last: u64, mut removed: Vec<SagaId>, started: Instant) {
    let events = batch.event_count() as u64;
    let counters = &shared.counters;
    if let Some(observer) = counters.observer.get() {
        observer.flushed(events, started.elapsed());
    }
    let requests = batch.appends.len() + batch.puts.len() + batch.removals.len();
    counters.flushes.fetch_add(1, Ordering::Relaxed);
    counters
        .requests
        .fetch_add(requests as u64, Ordering::Relaxed);
    counters.events.fetch_add(events, Ordering::Relaxed);
    // Before the acks: an acknowledged event is readable by offset.
    if events > 0 {
        shared.publish(last);
    }
    let mut offset = last + 1 - events;
    for append in batch.appends {
        let mut written = append.events;
        for event in &mut written {
            event.offset = Offset(offset);
            offset += 1;
        }
        let _ = append.reply.send(Ok(written));
    }
    for put in batch.puts {
        let _ = put.reply.send(Ok(()));
    }
    for removal in batch.removals {
        // Each removed saga goes to the first request that named it.
        let (mut mine, rest): (Vec<SagaId>, Vec<SagaId>) =
            removed.into_iter().partition(|id| removal.ids.contains(id));
        removed = rest;
        mine.sort_by_key(|id| removal.ids.iter().position(|r| r == id));
        let _ = removal.reply.send(Ok(mine));
    }
}

/// Tells every caller of a batch that failed as a whole why.
fn refuse(batch: Batch, error: &Arc<PgError>) {
    let each = || match &**error {
        PgError::Fenced { node, held, now } => PgError::Fenced {
            node: node.clone(),
            held: *held,
            now: *now,
        },
        PgError::LeaseLapsed { node } => PgError::LeaseLapsed { node: node.clone() },
        PgError::Uncertain(cause) => PgError::Uncertain(cause.clone()),
        PgError::NotWritten(cause) => PgError::NotWritten(cause.clone()),
        _ => PgError::NotWritten(error.clone()),
    };
    for append in batch.appends {
        let _ = append.reply.send(Err(JournalError::Postgres(each())));
    }
    for put in batch.puts {
        let _ = put.reply.send(Err(JournalError::Postgres(each())));
    }
    for removal in batch.removals {
        let _ = removal.reply.send(Err(JournalError::Postgres(each())));
    }
}

/// Prepares the batch's statements on the writer's connection, after making
/// sure its commits wait for the disk.
async fn prepare(client: Client) -> Result<Conn, tokio_postgres::Error> {
    // `local` and the standby levels all flush the local WAL before a
    // commit answers; only `off` does not, and it is raised for this
    // session only. Stronger settings the server has are kept.
    let level: String = client
        .query_one("SHOW synchronous_commit", &[])
        .await?
        .get(0);
    if level == "off" {
        client.batch_execute("SET synchronous_commit TO on").await?;
    }
    // After five runs PostgreSQL may plan a prepared statement once for all
    // (a generic plan), from what the tables looked like then: at the first
    // start, a `saga` table of a few rows, for which scanning it whole and
    // hashing looks cheapest; that plan stayed until the first statistics
    // (measured: W1 at 190–300 sagas/s instead of ≈2,000 for the first
    // minute of a fresh database). Each run is planned with its own arrays
    // instead. (Forbidding scans and hash joins for the session did that
    // too, but made other statements' plans ten times slower: c1 p50 ≈300
    // ms.) Custom plans alone still scanned `saga` whole until autovacuum
    // first analysed it (up to a minute: its naptime), because without
    // statistics the owner filter looks selective; the guarded update
    // therefore names its keys as `saga_id = ANY($1)` too, which the
    // primary key's uniqueness prices at one row per key, statistics or
    // not (measured: the first W1 c64 run on a fresh database went from
    // ≈1,400–2,100 sagas/s, p95 120–170 ms, to the second run's rate).
    client
        .batch_execute("SET plan_cache_mode = force_custom_plan")
        .await?;
    Ok(Conn {
        check: client.prepare(node::CHECK).await?,
        insert: client.prepare(INSERT_SAGAS).await?,
        update: client.prepare(UPDATE_SAGAS).await?,
        put: client.prepare(PUT_PARTICIPANTS).await?,
        remove: client.prepare(REMOVE_SAGAS).await?,
        append: client.prepare(APPEND_EVENTS).await?,
        client,
    })
}

/// The ids among `sent` that are not in `returned` (rows a statement
/// returned, the id first).
fn missing(sent: &[Uuid], returned: &[Row]) -> Vec<Uuid> {
    let returned: HashSet<Uuid> = returned.iter().map(|row| row.get(0)).collect();
    sent.iter()
        .filter(|id| !returned.contains(id))
        .copied()
        .collect()
}

/// A saga row as read to explain a miss.
struct Found {
    id: SagaId,
    key: Option<String>,
    owner: String,
    owner_epoch: u64,
    last_seq: u64,
}

impl From<&Row> for Found {
    fn from(row: &Row) -> Self {
        Self {
            id: saga_of(row.get(0)),
            key: row.get(1),
            owner: row.get(2),
            owner_epoch: row.get::<_, i64>(3) as u64,
            last_seq: row.get::<_, i64>(4) as u64,
        }
    }
}
