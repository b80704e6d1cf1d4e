//! Following a shared journal's changes of ownership (cluster mode: several
//! coordinators on one PostgreSQL journal, `journal::postgres`).
//!
//! - **Adopted**: the journal moved a dead node's open sagas to this node
//!   (`postgres/takeover.rs`). Each is resumed exactly as a restart resumes
//!   its own (`recovery::resume`): a call that was in flight on the dead node
//!   is recorded as interrupted and retried with the same idempotency key
//!   (a compensation never starts before a forward call that may still be
//!   in flight has passed its deadline). A saga that cannot be read yet is left
//!   to `heal`, as a saga stalled by a failed write is. A FAILED saga is not
//!   resumed, but its on-failed notice is this node's now: the webhook
//!   posts it unless the dead node's POST was acknowledged (`crate::webhook`).
//! - **Rejoined**: this node was fenced (deposed while cut off, its sagas
//!   taken over) and joined again with a new epoch. A runner of a saga that
//!   moved finds out at its next append (`NotOwner`: it drops the saga,
//!   never calling its participant); parked sagas that moved are dropped
//!   here, so they do not wait in memory for a due time that is no longer
//!   this node's to keep. The webhook looks again for the notices of the
//!   FAILED sagas that stayed this node's (its deliveries stopped while it
//!   was fenced).

use std::collections::HashSet;

use tokio::sync::mpsc;

use super::{Engine, recovery};
use crate::{journal::OwnershipChange, saga::SagaId};

/// Acts on every change until shutdown.
pub(super) async fn follow(engine: Engine, mut changes: mpsc::UnboundedReceiver<OwnershipChange>) {
    loop {
        let change = tokio::select! {
            change = changes.recv() => change,
            () = engine.inner.shutdown.cancelled() => return,
        };
        match change {
            Some(OwnershipChange::Adopted { from, sagas }) => adopt(&engine, &from, sagas).await,
            Some(OwnershipChange::Rejoined) => {
                let_go_of_moved(&engine).await;
                engine.repost_after_rejoin();
            }
            None => return,
        }
    }
}

async fn adopt(engine: &Engine, from: &str, sagas: Vec<SagaId>) {
    let (mut resumed, mut interrupted) = (0, 0);
    // Not resumed: FAILED sagas (and any already running here).
    let mut not_running = Vec::new();
    for id in sagas {
        match recovery::resume(engine, id, true).await {
            Ok(Some(how)) => {
                resumed += 1;
                interrupted += how.interrupted;
            }
            Ok(None) => not_running.push(id),
            Err(e) => {
                tracing::warn!(saga = %id, error = %e, "cannot resume a saga taken over yet; trying again");
                engine.stall_uncounted(id);
            }
        }
    }
    engine.post_taken_over(not_running);
    engine.metrics().took_over(resumed);
    tracing::info!(
        from,
        resumed,
        interrupted,
        "resumed the sagas taken over from a dead node"
    );
}

async fn let_go_of_moved(engine: &Engine) {
    let mine: HashSet<SagaId> = match engine.journal().unfinished().await {
        Ok(ids) => ids.into_iter().collect(),
        Err(e) => {
            // Parked sagas that moved then go when they are due: their
            // first append is refused, and the runner drops them.
            tracing::warn!(error = %e, "cannot read which sagas are still this node's after the re-join");
            return;
        }
    };
    // The timer needs no word: a due time it wakes for and no longer finds
    // is skipped.
    let dropped = engine.lock_owners().abandon_parked_except(&mine);
    tracing::info!(
        dropped,
        "after the re-join: parked sagas that other nodes took over are dropped"
    );
}
