//! Cluster-wide duties ([`Duty`]): work that one node, of all the nodes
//! sharing the journal, does at a time. Today one: retention's archiver.
//!
//! A duty is a row of `sagad.duty(name, node_id, epoch, lease_until)`, a
//! lease like a node's, judged by the database's clock. Taking and renewing
//! it are one statement, an upsert whose update holds only while the row's
//! lease ran out or the row is already this node's:
//!
//! ```text
//!  INSERT INTO duty … SELECT … FROM node WHERE node_id = $me AND epoch = $e
//!                                         AND lease_until > clock_timestamp()
//!  ON CONFLICT (name) DO UPDATE SET node_id = $me, epoch = $e, lease_until = …
//!    WHERE duty.node_id = $me OR duty.lease_until < clock_timestamp()
//!  RETURNING …                                        a row: held; none: not
//! ```
//!
//! - **One holder.** Two nodes asking at once for a duty whose lease ran out
//!   meet on the row's lock: the second waits, then finds the row the
//!   first's, with a running lease, and updates nothing (READ COMMITTED
//!   evaluates the `WHERE` again on the row the first wrote).
//! - **Only a live, unfenced node takes or keeps one.** The row comes from
//!   the node's own, at this process's epoch with a running lease: a node
//!   deposed (or replaced by another process with its name) holds nothing,
//!   even before its duty's lease ran out. A node that is not deposed keeps
//!   its duty across its own epoch bumps (the row is matched by node).
//! - **The lease** is what the holder asked for (how soon it asks again)
//!   plus the node's lease TTL: a holder a little late keeps it, and a dead
//!   holder's duty moves within that time of its last ask.
//! - **Leaving**: a clean close ends the node's duty leases with its own
//!   (`mod.rs`), so another node takes them at its next ask.
//! - **Cost**: one statement per ask (the archiver asks once a pass and once
//!   a batch), holding [`Shared::epoch_lock`] for its round trip, as a lease
//!   renewal does.
//!
//! A lease cannot stop a holder that stalls (a pause longer than the lease)
//! from finishing the piece of work it began; every duty is written so that
//! two holders doing the same piece costs a repeat, never a loss (the
//! archiver's order: `crate::archive::archiver`).

use std::time::Duration;

use deadpool_postgres::Object;

use super::{PgError, Shared};
use crate::journal::{Duty, JournalError};

/// Takes or renews the duty; returns the holder's epoch when it is ours.
const HOLD: &str = "INSERT INTO sagad.duty AS d (name, node_id, epoch, lease_until)
     SELECT $1, n.node_id, n.epoch, clock_timestamp() + $4::float8 * interval '1 millisecond'
     FROM sagad.node n
     WHERE n.node_id = $2 AND n.epoch = $3 AND n.lease_until > clock_timestamp()
     ON CONFLICT (name) DO UPDATE SET
         node_id = EXCLUDED.node_id,
         epoch = EXCLUDED.epoch,
         lease_until = EXCLUDED.lease_until
     WHERE d.node_id = EXCLUDED.node_id OR d.lease_until < clock_timestamp()
     RETURNING d.epoch";

/// Ends this node's duty leases (at this epoch): a clean close.
pub(super) const RELEASE: &str = "UPDATE sagad.duty SET lease_until = clock_timestamp()
     WHERE node_id = $1 AND epoch = $2";

/// Takes or renews `duty` for `lease`; true when this node holds it now.
pub(super) async fn hold(
    client: &Object,
    shared: &Shared,
    duty: Duty,
    lease: Duration,
) -> Result<bool, JournalError> {
    if shared.fence.get().is_some() {
        return Ok(false);
    }
    // The epoch cannot change under the statement (a takeover's bump), so a
    // holder is never refused for an epoch it no longer has.
    let _held = shared.epoch_lock.read().await;
    let me = shared.me();
    let row = client
        .query_opt(
            HOLD,
            &[
                &duty.name(),
                &me.node.as_str(),
                &(me.epoch.0 as i64),
                &(lease.as_secs_f64() * 1000.0),
            ],
        )
        .await
        .map_err(|source| {
            JournalError::Postgres(PgError::Statement {
                what: "taking or renewing a duty",
                source,
            })
        })?;
    Ok(row.is_some())
}
