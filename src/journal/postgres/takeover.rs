//! Takeover: the survivors move a dead node's open sagas to themselves.
//!
//! Every [`LOOK_EVERY`] (or a third of a lease, if shorter) each live node
//! looks for nodes whose lease ran out
//! (judged by the database's clock) while they still own open sagas:
//!
//! 1. **Depose** such a node: give it a new epoch, in one statement that
//!    holds only while its lease is still expired and it still owns sagas
//!    at its current epoch (so survivors racing depose it once, and a node
//!    that re-joined meanwhile is left alone). The update waits for the
//!    node's batch in flight, which holds its row `FOR SHARE`; every later
//!    batch of that node finds itself fenced (`node.rs`).
//! 2. **Bump its own epoch**, when there is anything to claim: every epoch
//!    comes from one sequence, so the claimer's new one is above any epoch
//!    the dead node ever wrote or called under. A participant that keeps the
//!    highest `x-sagad-epoch` it saw per idempotency key can so refuse a
//!    deposed owner's late call. The bump holds [`Shared::epoch_lock`]: no
//!    batch or renewal of this node runs under the old epoch meanwhile.
//! 3. **Claim** its sagas in chunks of [`CLAIM_CHUNK`]: those owned at an
//!    epoch older than the node's (so deposed) while its lease is expired,
//!    locked `FOR UPDATE SKIP LOCKED`, so several survivors split them
//!    without waiting for each other. Each chunk is one transaction that
//!    first checks the claimer's own epoch and lease `FOR SHARE`, as a
//!    batch does: a fenced node claims nothing.
//! 4. **Hand** each chunk to the engine ([`OwnershipChange::Adopted`]),
//!    which resumes the sagas as a restart resumes its own: a call that was
//!    in flight on the dead node is recorded as interrupted and retried with
//!    the same idempotency key.
//!
//! FAILED sagas move too (a `RetrySaga` needs an owner); finished ones have
//! none to move.
//!
//! Invariants:
//! - A saga changes owner only in a transaction that checked the claimer's
//!   epoch and lease, and only away from a node whose lease has expired and
//!   whose epoch was bumped since it stamped the saga.
//! - The engine is told of a saga only after its claim committed, or after
//!   a COMMIT whose answer was lost (a saga that did not move is refused at
//!   its first append, before any call).

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{PgError, Shared, node, saga_of};
use crate::{journal::OwnershipChange, saga::SagaId};

/// Sagas one claim transaction moves.
pub const CLAIM_CHUNK: i64 = 1000;

/// Gives a new epoch to every node whose lease ran out while it owns open
/// sagas at its current epoch; returns their ids.
const DEPOSE: &str = "UPDATE sagad.node AS n SET epoch = nextval('sagad.epoch_seq')
     WHERE n.node_id <> $1 AND n.lease_until < clock_timestamp()
       AND EXISTS (SELECT 1 FROM sagad.saga s
                   WHERE s.owner_node = n.node_id AND s.owner_epoch = n.epoch
                     AND s.status IN ('scheduled', 'running', 'compensating', 'failed'))
     RETURNING n.node_id";

/// Whether any saga waits to be claimed from a deposed node.
const CLAIMABLE: &str = "SELECT EXISTS (
         SELECT 1 FROM sagad.saga s JOIN sagad.node n ON n.node_id = s.owner_node
         WHERE s.owner_node <> $1
           AND s.status IN ('scheduled', 'running', 'compensating', 'failed')
           AND s.owner_epoch < n.epoch AND n.lease_until < clock_timestamp())";

/// This node's new epoch, while its lease runs and its epoch is `$2`.
const BUMP: &str = "UPDATE sagad.node SET epoch = nextval('sagad.epoch_seq')
     WHERE node_id = $1 AND epoch = $2 AND lease_until > clock_timestamp()
     RETURNING epoch";

/// This node's open sagas, stamped with its new epoch `$2`.
const RESTAMP: &str = "UPDATE sagad.saga SET owner_epoch = $2
     WHERE owner_node = $1 AND status IN ('scheduled', 'running', 'compensating', 'failed')";

/// Moves up to `$3` deposed sagas to this node (`$1` at epoch `$2`);
/// returns them with the node they came from.
const CLAIM: &str = "WITH mine AS (
         SELECT s.saga_id, s.owner_node FROM sagad.saga s
         JOIN sagad.node n ON n.node_id = s.owner_node
         WHERE s.owner_node <> $1
           AND s.status IN ('scheduled', 'running', 'compensating', 'failed')
           AND s.owner_epoch < n.epoch AND n.lease_until < clock_timestamp()
         LIMIT $3
         FOR UPDATE OF s SKIP LOCKED)
     UPDATE sagad.saga AS s SET owner_node = $1, owner_epoch = $2
     FROM mine WHERE s.saga_id = mine.saga_id
     RETURNING s.saga_id, mine.owner_node";

/// How often a node looks for dead ones, at most: a dead node's sagas wait
/// its lease and up to this long (two cheap statements each time).
pub const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Looks for dead nodes every [`LOOK_EVERY`] (a third of `ttl` if shorter)
/// until `stop`, and takes their sagas.
pub(super) async fn run(pool: Pool, shared: Arc<Shared>, ttl: Duration, stop: CancellationToken) {
    let every = (ttl / 3).min(LOOK_EVERY);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        if shared.fence.get().is_some() {
            continue;
        }
        if let Err(e) = take_over(&pool, &shared, &stop).await {
            tracing::warn!(error = %e, "cannot take over the sagas of dead nodes yet");
        }
    }
}

/// One round: depose the dead, then claim what they own, chunk by chunk.
async fn take_over(pool: &Pool, shared: &Shared, stop: &CancellationToken) -> Result<(), PgError> {
    let me = shared.me();
    let mut client = pool.get().await.map_err(PgError::Pool)?;
    // Deposing the dead bumps their epochs only; the claims follow.
    let deposed = client
        .query(DEPOSE, &[&me.node.as_str()])
        .await
        .map_err(statement("deposing nodes whose lease ran out"))?;
    shared
        .counters
        .deposed
        .fetch_add(deposed.len() as u64, Ordering::Relaxed);
    for row in &deposed {
        let dead: String = row.get(0);
        tracing::warn!(node = %dead, "a node's lease ran out: it is deposed, and its sagas are taken over");
    }
    let claimable: bool = client
        .query_one(CLAIMABLE, &[&me.node.as_str()])
        .await
        .map_err(statement("looking for sagas to take over"))?
        .get(0);
    if !claimable || !bump(&mut client, pool, shared).await? {
        return Ok(());
    }
    let me = shared.me();
    while !stop.is_cancelled() && shared.fence.get().is_none() {
        let tx = client
            .transaction()
            .await
            .map_err(statement("beginning a claim"))?;
        let found: Option<(i64, bool)> = tx
            .query_opt(node::CHECK, &[&me.node.as_str()])
            .await
            .map_err(statement("checking this node's epoch before a claim"))?
            .map(|row| (row.get(0), row.get(1)));
        if node::judge(found, &me).is_err() {
            // Fenced or lapsed: the heartbeat and the writer find out why.
            return Ok(());
        }
        let rows = tx
            .query(
                CLAIM,
                &[&me.node.as_str(), &(me.epoch.0 as i64), &CLAIM_CHUNK],
            )
            .await
            .map_err(statement("claiming a dead node's sagas"))?;
        // A COMMIT without an answer may have taken effect: the sagas are
        // handed over all the same, or none would run them until a restart.
        // Those that did not move are refused at their first append
        // (`NotOwner`), and the engine drops them, having called no one.
        let committed = tx.commit().await.map_err(statement("committing a claim"));
        if rows.is_empty() {
            return committed;
        }
        let mut by_node: Vec<(String, Vec<SagaId>)> = Vec::new();
        for row in &rows {
            let (id, from): (Uuid, String) = (row.get(0), row.get(1));
            match by_node.iter_mut().find(|(node, _)| *node == from) {
                Some((_, sagas)) => sagas.push(saga_of(id)),
                None => by_node.push((from, vec![saga_of(id)])),
            }
        }
        for (from, sagas) in by_node {
            tracing::info!(from = %from, sagas = sagas.len(), "took over sagas");
            let _ = shared
                .ownership
                .send(OwnershipChange::Adopted { from, sagas });
        }
        committed?;
        if (rows.len() as i64) < CLAIM_CHUNK {
            return Ok(());
        }
    }
    Ok(())
}

/// This node's own epoch bump, its open sagas stamped with the new one, in
/// one transaction; false (nothing changed) when the node is fenced or its
/// lease lapsed.
async fn bump(
    client: &mut deadpool_postgres::Object,
    pool: &Pool,
    shared: &Shared,
) -> Result<bool, PgError> {
    let _held = shared.epoch_lock.write().await;
    let me = shared.me();
    let tx = client
        .transaction()
        .await
        .map_err(statement("beginning the epoch bump"))?;
    let bumped = tx
        .query_opt(BUMP, &[&me.node.as_str(), &(me.epoch.0 as i64)])
        .await
        .map_err(statement("bumping this node's epoch"))?;
    let Some(row) = bumped else {
        return Ok(false);
    };
    let epoch: i64 = row.get(0);
    tx.execute(RESTAMP, &[&me.node.as_str(), &epoch])
        .await
        .map_err(statement("stamping this node's sagas with its new epoch"))?;
    if let Err(e) = tx.commit().await {
        // Without an answer the bump may have committed; this process would
        // then write under an epoch the database no longer has, find itself
        // fenced with its own lease running, and stay fenced. So look.
        if let Ok(other) = pool.get().await
            && let Ok(row) = other
                .query_one(
                    "SELECT epoch FROM sagad.node WHERE node_id = $1",
                    &[&me.node.as_str()],
                )
                .await
            && row.get::<_, i64>(0) == epoch
        {
            shared.set_epoch(node::Epoch(epoch as u64));
        }
        return Err(statement("committing the epoch bump")(e));
    }
    shared.set_epoch(node::Epoch(epoch as u64));
    tracing::info!(node = %me.node, epoch, "took a new epoch before taking sagas over");
    Ok(true)
}

/// A takeover statement that failed doing `what`; for `map_err`.
fn statement(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> PgError {
    move |source| PgError::Statement { what, source }
}
