//! Membership: who this node is, its epoch (its fencing token) and its
//! lease, always judged by the database's clock (`clock_timestamp()`), never
//! by a node's own.
//!
//! - **Join** (at open): an upsert of the node's row that bumps its epoch and
//!   sets a fresh lease, in one transaction with the re-stamping of the
//!   node's open sagas to the new epoch (a restarted node recovers its own
//!   sagas). The upsert waits for a batch still in flight under the old epoch
//!   (that batch holds the row `FOR SHARE`), so once it returns, every later
//!   batch of an older instance finds itself fenced.
//! - **Heartbeat**: every TTL/3 the lease is renewed, for the current epoch
//!   only; zero rows renewed means another process joined as this node (or
//!   the cluster fenced it): the node is fenced for good.
//! - **Check** (first statement of every batch, `writer.rs`): the node's row,
//!   `FOR SHARE`: no row or another epoch is fenced, an expired lease is
//!   lapsed. A lapsed lease may still be renewed while the epoch is unchanged:
//!   a takeover (`takeover.rs`) bumps the epoch first, and only of a node
//!   whose lease has expired, in one statement.
//! - **Re-join** after a fence: when the node's lease has run out (the
//!   survivors deposed it while it was stopped or cut off), the heartbeat
//!   joins again with a new epoch: the sagas the survivors did not claim are
//!   stamped with it and stay this node's, the others are theirs (appends to
//!   them are refused, `NotOwner`, and the engine drops them). When the lease
//!   runs, another process joined as this node: this one stays fenced.
//! - **What the node knows of its lease** ([`LeaseClock`], for health and
//!   metrics only, never for fencing): held from a join or renewal that
//!   worked until a lease after it was *sent*, by this process's monotonic
//!   clock; not held once a batch found it lapsed, or once fenced. So an
//!   idle node cut off from the database sees its lease run out no later
//!   than the database does, without writing anything.
//! - **Its open sagas** are counted after each renewal that worked (and at
//!   the join): one `count(*)` with the predicate of the `saga_open_by_owner`
//!   partial index, every third of a lease, never per scrape.
//!
//! Invariants:
//! - An epoch only grows. A process writes under one epoch at a time; a
//!   re-join gives it a new one, and only after its old one was fenced
//!   ([`Fence`]), so no batch of the old epoch can commit afterwards.
//! - Lease times that decide anything (a write, a fence, a takeover) are
//!   compared inside PostgreSQL only; the [`LeaseClock`] only informs
//!   health and the metrics, and errs towards "not held".

use std::{
    fmt,
    sync::{Arc, Mutex, atomic::Ordering},
    time::{Duration, Instant},
};

use deadpool_postgres::Pool;
use tokio_postgres::{Client, GenericClient, Transaction};
use tokio_util::sync::CancellationToken;

use super::{PgError, PgTarget, Shared};

/// How long a lease lasts without renewal, by default.
pub const LEASE_TTL: Duration = Duration::from_secs(10);

/// The name a node goes by in the journal (`--node-id`): stable across its
/// restarts, unique among the nodes sharing a journal.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeId(String);

impl NodeId {
    /// A node id: any non-empty text of at most 200 bytes without control
    /// characters (it is shown in logs and listings).
    pub fn new(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("a node id cannot be empty".into());
        }
        if text.len() > 200 || text.chars().any(char::is_control) {
            return Err(format!(
                "'{}' is not a node id (at most 200 bytes, no control characters)",
                text.escape_debug()
            ));
        }
        Ok(Self(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A node's fencing token: bumped by every join (and, in cluster mode, by a
/// takeover). Work done under an older epoch than the node's current one is
/// a deposed owner's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// This process's place in the journal: which node, at which epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    pub node: NodeId,
    pub epoch: Epoch,
}

/// Set when this process learns its epoch was fenced; cleared only by a
/// re-join, which gives the process a new epoch.
#[derive(Debug, Default)]
pub struct Fence {
    /// The node's epoch in the journal when the fence was seen (`None` when
    /// its row was gone), while fenced. A std mutex: held for one read or
    /// write, never across an await.
    now: Mutex<Option<Option<u64>>>,
}

impl Fence {
    /// Records the fence; true the first time since the last re-join.
    pub fn set(&self, now: Option<u64>) -> bool {
        let mut fence = self.now.lock().unwrap_or_else(|p| p.into_inner());
        let first = fence.is_none();
        if first {
            *fence = Some(now);
        }
        first
    }

    /// The epoch seen when fenced, if fenced.
    pub fn get(&self) -> Option<Option<u64>> {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets the fence: the process re-joined with a new epoch.
    pub(super) fn clear(&self) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// Until when this process holds its lease, as far as it knows: what health
/// and the metrics say, judged without asking the database (the batch's
/// check, by the database's clock, is what fences).
///
/// A renewal that worked set `lease_until` to the database's clock *when it
/// ran* plus the TTL, which is no earlier than when it was sent plus the TTL:
/// counting from the send, this process's view of the lease ends first.
#[derive(Debug)]
pub struct LeaseClock {
    ttl: Duration,
    /// The end of the lease by this process's monotonic clock; `None` once
    /// the database said it ran out (or it was given up), until a renewal
    /// works. A std mutex: held for one read or write, never across an
    /// await.
    until: Mutex<Option<Instant>>,
}

impl LeaseClock {
    /// A lease of `ttl` taken by a join sent at `sent`.
    pub fn new(ttl: Duration, sent: Instant) -> Self {
        Self {
            ttl,
            until: Mutex::new(Some(sent + ttl)),
        }
    }

    /// A join or renewal sent at `sent` worked.
    pub fn renewed(&self, sent: Instant) {
        let end = sent + self.ttl;
        let mut until = self.until.lock().unwrap_or_else(|p| p.into_inner());
        if until.is_none_or(|u| u < end) {
            *until = Some(end);
        }
    }

    /// The database said the lease ran out (a batch's check), or this
    /// process gave it up.
    pub fn lapsed(&self) {
        *self.until.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Whether the lease still runs at `now`, as far as this process knows.
    pub fn held(&self, now: Instant) -> bool {
        self.until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|until| now < until)
    }
}

/// Milliseconds of a duration, as the statements below take them.
fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Joins the journal as `node`: gives it a new epoch (the next of the one
/// sequence every epoch comes from, so above any epoch any node holds), takes
/// a lease of `ttl`, and moves the node's open sagas to the new epoch.
pub async fn join(
    client: &mut Client,
    target: &PgTarget,
    node: &NodeId,
    addr: &str,
    ttl: Duration,
) -> Result<Epoch, PgError> {
    let setup = |what| PgError::setup(target, what);
    let tx = client
        .transaction()
        .await
        .map_err(setup("beginning the join"))?;
    let epoch = join_in(&tx, node, addr, ttl)
        .await
        .map_err(setup("joining as a node"))?;
    tx.commit().await.map_err(setup("committing the join"))?;
    Ok(epoch)
}

/// The join's statements, in the caller's transaction: the upsert that bumps
/// the epoch, and the node's open sagas stamped with it.
async fn join_in(
    tx: &Transaction<'_>,
    node: &NodeId,
    addr: &str,
    ttl: Duration,
) -> Result<Epoch, tokio_postgres::Error> {
    let epoch: i64 = tx
        .query_one(
            "INSERT INTO sagad.node AS n (node_id, epoch, lease_until, addr, joined_at)
             VALUES ($1, nextval('sagad.epoch_seq'),
                     clock_timestamp() + $2::float8 * interval '1 millisecond', $3, clock_timestamp())
             ON CONFLICT (node_id) DO UPDATE SET
                 epoch = EXCLUDED.epoch,
                 lease_until = EXCLUDED.lease_until,
                 addr = EXCLUDED.addr,
                 joined_at = EXCLUDED.joined_at
             RETURNING epoch",
            &[&node.as_str(), &millis(ttl), &addr],
        )
        .await?
        .get(0);
    tx.execute(
        "UPDATE sagad.saga SET owner_epoch = $2
         WHERE owner_node = $1 AND status IN ('scheduled', 'running', 'compensating', 'failed')",
        &[&node.as_str(), &epoch],
    )
    .await?;
    Ok(Epoch(epoch as u64))
}

/// After a fence: joins again, with a new epoch, when nobody holds the
/// node's name (its lease ran out: the survivors deposed it, or its row is
/// gone). `None` when another process holds it (it joined as this node, and
/// its lease runs): this one must stay fenced, or the two would fence each
/// other in turn.
async fn rejoin(shared: &Shared, ttl: Duration) -> Result<Option<Epoch>, PgError> {
    let target = &shared.target;
    let setup = |what| PgError::setup(target, what);
    let mut client = super::connect(target).await?;
    let tx = client
        .transaction()
        .await
        .map_err(setup("beginning the re-join"))?;
    // Locked, so that a process joining as this node meanwhile waits, and
    // then finds this one's fresh lease: the newer join fences this one.
    let held: Option<bool> = tx
        .query_opt(
            "SELECT lease_until > clock_timestamp() FROM sagad.node WHERE node_id = $1 FOR UPDATE",
            &[&shared.node.as_str()],
        )
        .await
        .map_err(setup("reading the node's lease"))?
        .map(|row| row.get(0));
    if held == Some(true) {
        return Ok(None);
    }
    let addr = shared
        .addr
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let epoch = join_in(&tx, &shared.node, &addr, ttl)
        .await
        .map_err(setup("joining again as a node"))?;
    tx.commit().await.map_err(setup("committing the re-join"))?;
    Ok(Some(epoch))
}

/// The first statement of every batch: the node's row, locked `FOR SHARE`
/// until the batch ends, so the epoch cannot change under the batch.
pub const CHECK: &str = "SELECT epoch, lease_until > clock_timestamp() FROM sagad.node
     WHERE node_id = $1 FOR SHARE";

/// What the check found: `(epoch, lease still running)`, or no row.
pub fn judge(found: Option<(i64, bool)>, me: &Membership) -> Result<(), PgError> {
    match found {
        Some((epoch, true)) if epoch as u64 == me.epoch.0 => Ok(()),
        Some((epoch, false)) if epoch as u64 == me.epoch.0 => Err(PgError::LeaseLapsed {
            node: me.node.to_string(),
        }),
        other => Err(PgError::Fenced {
            node: me.node.to_string(),
            held: me.epoch.0,
            now: other.map(|(epoch, _)| epoch as u64),
        }),
    }
}

/// Renews the lease for this epoch only. `Ok(Err(Fenced))` when the node's
/// epoch moved on (or its row is gone); `Err` when the statement failed.
pub async fn renew(
    client: &impl GenericClient,
    me: &Membership,
    ttl: Duration,
) -> Result<Result<(), PgError>, tokio_postgres::Error> {
    // One statement: the renewal, and the epoch as it was before it (the
    // sub-select reads the statement's snapshot), to name it when fenced.
    let row = client
        .query_one(
            "WITH renewed AS (
                 UPDATE sagad.node SET lease_until = clock_timestamp() + $3::float8 * interval '1 millisecond'
                 WHERE node_id = $1 AND epoch = $2 RETURNING epoch)
             SELECT (SELECT count(*) FROM renewed), (SELECT epoch FROM sagad.node WHERE node_id = $1)",
            &[&me.node.as_str(), &(me.epoch.0 as i64), &millis(ttl)],
        )
        .await?;
    let renewed: i64 = row.get(0);
    let now: Option<i64> = row.get(1);
    Ok(if renewed == 1 {
        Ok(())
    } else {
        Err(PgError::Fenced {
            node: me.node.to_string(),
            held: me.epoch.0,
            now: now.map(|e| e as u64),
        })
    })
}

/// [`renew`] under [`Shared::epoch_lock`] (the epoch cannot change under
/// it), noting a renewal that worked in the node's [`LeaseClock`].
pub(super) async fn renew_lease(
    client: &impl GenericClient,
    shared: &Shared,
    ttl: Duration,
) -> Result<Result<(), PgError>, tokio_postgres::Error> {
    let _held = shared.epoch_lock.read().await;
    let sent = Instant::now();
    let renewed = renew(client, &shared.me(), ttl).await;
    if matches!(renewed, Ok(Ok(()))) {
        shared.lease.renewed(sent);
    }
    renewed
}

/// A node's open sagas: the predicate of the `saga_open_by_owner` partial
/// index, so the count reads that index, not every saga.
pub const OWNED_OPEN: &str = "SELECT count(*) FROM sagad.saga
     WHERE owner_node = $1 AND status IN ('scheduled', 'running', 'compensating', 'failed')";

/// Counts this node's open sagas for [`crate::journal::ClusterStatus`]; a
/// count that fails keeps the last one (the next renewal counts again).
pub(super) async fn count_owned(client: &impl GenericClient, shared: &Shared) {
    match client.query_one(OWNED_OPEN, &[&shared.node.as_str()]).await {
        Ok(row) => shared
            .counters
            .owned_open
            .store(row.get::<_, i64>(0) as u64, Ordering::Relaxed),
        Err(e) => tracing::debug!(error = %e, "cannot count the node's open sagas"),
    }
}

/// Renews the lease every `ttl / 3` until `stop`. A renewal that fails (the
/// database is unreachable) is tried again at the next tick; if the lease
/// runs out meanwhile, batches find it lapsed. Once the node is found fenced
/// (here or by a batch), each tick tries to [`rejoin`]; when another process
/// holds the node's name, this one stays fenced and the heartbeat ends.
pub(super) async fn heartbeat(
    pool: Pool,
    shared: Arc<Shared>,
    ttl: Duration,
    stop: CancellationToken,
) {
    // The join just took a fresh lease: the first renewal is a third of it away.
    let every = ttl / 3;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        if shared.fence.get().is_some() {
            let held = shared.epoch_lock.write().await;
            let sent = Instant::now();
            let rejoined = rejoin(&shared, ttl).await;
            if let Ok(Some(epoch)) = &rejoined {
                // The lease first: health, told by the re-join, reads it.
                shared.lease.renewed(sent);
                shared.rejoined(*epoch);
            }
            drop(held);
            match rejoined {
                Ok(Some(_)) => {
                    if let Ok(client) = pool.get().await {
                        count_owned(&**client, &shared).await;
                    }
                }
                Ok(None) => {
                    tracing::error!(
                        node = %shared.node,
                        "another process runs as this node (it joined after this one, and its lease runs): this one stays fenced and journals nothing; stop it"
                    );
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "cannot join the journal again yet"),
            }
            continue;
        }
        let renewed = match pool.get().await {
            Ok(client) => {
                let renewed = renew_lease(&**client, &shared, ttl).await;
                if matches!(renewed, Ok(Ok(()))) {
                    count_owned(&**client, &shared).await;
                }
                renewed.map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        match renewed {
            Ok(Ok(())) => {}
            Ok(Err(PgError::Fenced { now, .. })) => {
                shared.fenced(now);
            }
            Ok(Err(other)) => tracing::warn!(error = %other, "cannot renew the node's lease"),
            Err(e) => tracing::warn!(error = %e, "cannot renew the node's lease; trying again"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_tells_fenced_from_lapsed() {
        let me = Membership {
            node: NodeId::new("a").unwrap(),
            epoch: Epoch(3),
        };
        assert!(judge(Some((3, true)), &me).is_ok());
        assert!(matches!(
            judge(Some((3, false)), &me),
            Err(PgError::LeaseLapsed { .. })
        ));
        let fenced = judge(Some((4, true)), &me).unwrap_err();
        assert!(matches!(fenced, PgError::Fenced { now: Some(4), .. }));
        assert!(fenced.to_string().contains("epoch 3"), "{fenced}");
        assert!(fenced.to_string().contains("epoch 4"), "{fenced}");
        assert!(matches!(
            judge(None, &me),
            Err(PgError::Fenced { now: None, .. })
        ));
    }

    #[test]
    fn the_lease_clock_counts_from_the_send_and_the_databases_word_ends_it() {
        let ttl = Duration::from_secs(2);
        let start = Instant::now();
        let lease = LeaseClock::new(ttl, start);
        assert!(lease.held(start));
        assert!(lease.held(start + ttl - Duration::from_millis(1)));
        assert!(!lease.held(start + ttl), "a lease after the send, no more");
        // A renewal sent later extends it; one sent earlier never shortens it.
        lease.renewed(start + Duration::from_secs(1));
        assert!(lease.held(start + ttl));
        lease.renewed(start);
        assert!(lease.held(start + ttl));
        // The database said it ran out: not held, until a renewal works.
        lease.lapsed();
        assert!(!lease.held(start));
        lease.renewed(start + Duration::from_secs(5));
        assert!(lease.held(start + Duration::from_secs(6)));
    }

    #[test]
    fn node_ids_are_printable_text() {
        assert_eq!(
            NodeId::new(" host-1/127.0.0.1:50051 ").unwrap().as_str(),
            "host-1/127.0.0.1:50051"
        );
        assert!(NodeId::new("").is_err());
        assert!(NodeId::new("a\nb").is_err());
    }
}
