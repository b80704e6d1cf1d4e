//! The on-failed webhook's notices ([`Notices`]), kept in the database so
//! that every node sees one truth: which failures the webhook acknowledged,
//! and whose turn it is to post the others.
//!
//! `sagad.notice(saga_id PK → saga ON DELETE CASCADE, seq, acked_at,
//! acked_by)` holds one row per saga whose failure was acknowledged: the
//! `seq` of that `SagaFailed`. There are no rows for pending notices: a
//! notice is pending while its saga's row is FAILED at `last_seq` and no
//! acknowledgement of that seq is recorded. So the batch transaction writes
//! nothing more when a saga fails, and the pending set cannot disagree with
//! the journal (a retried saga's old notice stops being pending by itself).
//!
//! **Who posts: the saga's owner.** FAILED sagas have owners like open ones,
//! and move with them (`takeover.rs`). A node posts a notice only after
//! [`Notices::due`] said, in one statement, that the saga is its own, under
//! its current epoch and a running lease, still FAILED at that seq, and not
//! acknowledged. So two live nodes never post the same notice: the other
//! node could post it only after a takeover, which needs this node's lease
//! to have run out and its epoch to have been bumped (after which its own
//! check says no). A node that dies after a POST the webhook answered, but
//! before the acknowledgement was recorded, leaves the notice pending: the
//! node that takes its sagas over posts it again, once (at least once,
//! never per node).
//!
//! Acknowledgements are recorded outside the writer task: an
//! acknowledgement is true whoever records it, so it needs no fencing, and
//! it must not wait behind (or fail with) a batch of appends.
//!
//! Cost: one indexed statement per POST for the check, one per
//! acknowledgement, one per start for the pending list. The check holds
//! [`Shared::epoch_lock`] for its round trip, as a lease renewal does, so it
//! waits for the batch in flight and the next batch waits for it; POSTs are
//! as rare as FAILED sagas, so batches barely notice.

use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use uuid::Uuid;

use super::{PgError, Shared, batch::uuid, node, saga_of};
use crate::{
    journal::{JournalError, Notices},
    saga::SagaId,
};

/// This node's FAILED sagas whose failure has no acknowledgement (the
/// partial index of open sagas by owner covers FAILED ones).
const PENDING: &str = "SELECT s.saga_id, s.last_seq FROM sagad.saga s
     WHERE s.owner_node = $1 AND s.status = 'failed'
       AND NOT EXISTS (SELECT 1 FROM sagad.notice k
                       WHERE k.saga_id = s.saga_id AND k.seq = s.last_seq)
     ORDER BY s.saga_id";

/// The node's epoch and lease (as the batch's check reads them), and
/// whether the notice of saga `$1`'s failure `$2` is this node's to post.
const DUE: &str = "SELECT
         (SELECT epoch FROM sagad.node WHERE node_id = $3),
         (SELECT lease_until > clock_timestamp() FROM sagad.node WHERE node_id = $3),
         EXISTS (SELECT 1 FROM sagad.saga s
                 WHERE s.saga_id = $1 AND s.owner_node = $3
                   AND s.status = 'failed' AND s.last_seq = $2
                   AND NOT EXISTS (SELECT 1 FROM sagad.notice k
                                   WHERE k.saga_id = $1 AND k.seq = $2))";

/// Records an acknowledgement; a later failure of the same saga replaces
/// an older one's (only the last failure can be pending). Nothing when the
/// saga is gone (retention removed it after a retry ended it).
const ACKNOWLEDGE: &str = "INSERT INTO sagad.notice AS k (saga_id, seq, acked_at, acked_by)
     SELECT s.saga_id, $2, clock_timestamp(), $3 FROM sagad.saga s WHERE s.saga_id = $1
     ON CONFLICT (saga_id) DO UPDATE SET
         seq = EXCLUDED.seq, acked_at = EXCLUDED.acked_at, acked_by = EXCLUDED.acked_by
     WHERE k.seq <= EXCLUDED.seq";

/// The notices of one PostgreSQL journal, as this node sees them.
pub(super) struct PgNotices {
    pub pool: Pool,
    pub shared: Arc<Shared>,
}

fn read(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> JournalError {
    move |source| JournalError::Postgres(PgError::Read { what, source })
}

impl PgNotices {
    async fn client(&self) -> Result<deadpool_postgres::Object, JournalError> {
        super::pooled(&self.pool).await
    }
}

#[async_trait]
impl Notices for PgNotices {
    async fn pending(&self) -> Result<Vec<(SagaId, u64)>, JournalError> {
        let rows = self
            .client()
            .await?
            .query(PENDING, &[&self.shared.node.as_str()])
            .await
            .map_err(read("listing the webhook's pending notices"))?;
        Ok(rows
            .iter()
            .map(|row| (saga_of(row.get::<_, Uuid>(0)), row.get::<_, i64>(1) as u64))
            .collect())
    }

    async fn due(&self, id: SagaId, seq: u64) -> Result<bool, JournalError> {
        if self.shared.fence.get().is_some() {
            return Ok(false);
        }
        let client = self.client().await?;
        // The epoch cannot change under the statement (a takeover's bump),
        // which would make this node's own notice look like another's.
        let _held = self.shared.epoch_lock.read().await;
        let me = self.shared.me();
        let row = client
            .query_one(DUE, &[&uuid(id), &(seq as i64), &me.node.as_str()])
            .await
            .map_err(read("checking whether a webhook notice is due"))?;
        let (epoch, live): (Option<i64>, Option<bool>) = (row.get(0), row.get(1));
        let found = epoch.map(|epoch| (epoch, live.unwrap_or(false)));
        match node::judge(found, &me) {
            Ok(()) => Ok(row.get(2)),
            // Deposed or replaced: the saga is (or soon will be) another
            // node's, and a re-join looks for this node's notices again.
            Err(PgError::Fenced { .. }) => Ok(false),
            Err(lapsed) => Err(JournalError::Postgres(lapsed)),
        }
    }

    async fn acknowledged(&self, id: SagaId, seq: u64) -> Result<(), JournalError> {
        self.client()
            .await?
            .execute(
                ACKNOWLEDGE,
                &[&uuid(id), &(seq as i64), &self.shared.node.as_str()],
            )
            .await
            .map_err(|source| {
                JournalError::Postgres(PgError::Statement {
                    what: "recording a webhook acknowledgement",
                    source,
                })
            })?;
        Ok(())
    }
}
