//! Calls for a saga's owner ([`Relay`]), as rows of `sagad.relay`.
//!
//! `relay(call_id PK, saga_id → saga ON DELETE CASCADE, body, asked_by,
//! asked_at, taken_by, answered_at, answer)`: one row per call. `body` and
//! `answer` are JSON ([`OwnerCall`], [`CallAnswer`]), so an operator can
//! read them with `psql`.
//!
//! **Who takes a call: the saga's owner at the time of the take**, in one
//! statement that joins the saga's row. Two nodes polling at once cannot
//! both take a row: the second one's UPDATE waits for the first one's row
//! lock and then finds `taken_by` set (READ COMMITTED re-checks the WHERE
//! on the row it waited for). A fenced node takes nothing: a node that
//! deposed it owns its sagas now, and would find the calls taken.
//!
//! Cost: the owner's poll is one UPDATE that a partial index of waiting
//! rows answers without touching the table while no call waits; a waiting
//! caller reads its row by key per poll.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use deadpool_postgres::Pool;
use uuid::Uuid;

use super::{PgError, Shared, batch::uuid, saga_of};
use crate::{
    journal::{
        JournalError,
        relay::{CallAnswer, CallId, CallState, OwnerCall, Relay, TakenCall},
    },
    saga::SagaId,
};

/// Leaves a call for the saga's owner; nothing when the saga is gone.
const SEND: &str = "INSERT INTO sagad.relay (call_id, saga_id, body, asked_by, asked_at)
     SELECT $1, s.saga_id, $3, $4, clock_timestamp() FROM sagad.saga s WHERE s.saga_id = $2";

const STATE: &str = "SELECT taken_by IS NOT NULL, answer FROM sagad.relay WHERE call_id = $1";

/// Removes the call if no one took it; its state otherwise.
const WITHDRAW: &str = "WITH gone AS (
         DELETE FROM sagad.relay WHERE call_id = $1 AND taken_by IS NULL AND answer IS NULL
         RETURNING call_id)
     SELECT EXISTS (SELECT 1 FROM gone),
            (SELECT taken_by IS NOT NULL FROM sagad.relay WHERE call_id = $1),
            (SELECT answer FROM sagad.relay WHERE call_id = $1)";

/// The waiting calls for this node's sagas, taken.
const TAKE: &str = "UPDATE sagad.relay r SET taken_by = $1
     FROM sagad.saga s
     WHERE r.taken_by IS NULL AND r.answer IS NULL
       AND s.saga_id = r.saga_id AND s.owner_node = $1
     RETURNING r.call_id, r.saga_id, r.body";

const REPLY: &str = "UPDATE sagad.relay SET answer = $2, answered_at = clock_timestamp()
     WHERE call_id = $1 AND taken_by = $3 AND answer IS NULL";

const PUT_BACK: &str = "UPDATE sagad.relay SET taken_by = NULL WHERE call_id = $1 AND taken_by = $2 AND answer IS NULL";

/// Calls older than this are swept: every caller stopped waiting long ago.
const SWEEP: &str =
    "DELETE FROM sagad.relay WHERE asked_at < clock_timestamp() - make_interval(secs => $1)";

/// Every how many polls of [`Relay::take`] the old calls are swept.
const SWEEP_EVERY: u64 = 600;

/// How much longer than a lease a caller waits: the takeover's look (a
/// third of the lease at most) and the new owner's recovery, with room.
const PATIENCE_BEYOND_LEASE: Duration = Duration::from_secs(5);

/// The relayed calls of one PostgreSQL journal, as this node sees them.
pub(super) struct PgRelay {
    pub pool: Pool,
    pub shared: Arc<Shared>,
    pub lease_ttl: Duration,
    pub polls: std::sync::atomic::AtomicU64,
}

fn read(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> JournalError {
    move |source| JournalError::Postgres(PgError::Read { what, source })
}

fn statement(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> JournalError {
    move |source| JournalError::Postgres(PgError::Statement { what, source })
}

/// A JSON column read back: only sagad writes it, so another one was
/// written by hand (or by a newer sagad).
fn json<T: serde::de::DeserializeOwned>(column: &str, text: &str) -> Result<T, JournalError> {
    serde_json::from_str(text).map_err(|e| JournalError::Corrupt {
        key: format!("sagad.relay.{column}"),
        why: e.to_string(),
    })
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("relayed calls and answers serialize")
}

fn state_of(taken: Option<bool>, answer: Option<String>) -> Result<CallState, JournalError> {
    Ok(match (taken, answer) {
        (_, Some(answer)) => CallState::Answered(json("answer", &answer)?),
        (Some(true), None) => CallState::Taken,
        (Some(false), None) => CallState::Waiting,
        (None, None) => CallState::Gone,
    })
}

impl PgRelay {
    async fn client(&self) -> Result<deadpool_postgres::Object, JournalError> {
        super::pooled(&self.pool).await
    }
}

#[async_trait]
impl Relay for PgRelay {
    async fn send(&self, id: SagaId, call: &OwnerCall) -> Result<Option<CallId>, JournalError> {
        let call_id = Uuid::now_v7();
        let sent = self
            .client()
            .await?
            .execute(
                SEND,
                &[
                    &call_id,
                    &uuid(id),
                    &to_json(call),
                    &self.shared.node.as_str(),
                ],
            )
            .await
            .map_err(statement("leaving a call for a saga's owner"))?;
        Ok((sent == 1).then_some(CallId(call_id)))
    }

    async fn state(&self, id: CallId) -> Result<CallState, JournalError> {
        let row = self
            .client()
            .await?
            .query_opt(STATE, &[&id.0])
            .await
            .map_err(read("reading a relayed call"))?;
        match row {
            Some(row) => state_of(Some(row.get(0)), row.get(1)),
            None => Ok(CallState::Gone),
        }
    }

    async fn withdraw(&self, id: CallId) -> Result<CallState, JournalError> {
        let row = self
            .client()
            .await?
            .query_one(WITHDRAW, &[&id.0])
            .await
            .map_err(statement("withdrawing a relayed call"))?;
        if row.get::<_, bool>(0) {
            return Ok(CallState::Waiting);
        }
        state_of(row.get(1), row.get(2))
    }

    async fn take(&self) -> Result<Vec<TakenCall>, JournalError> {
        if self.shared.fence.get().is_some() {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let polls = self
            .polls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if polls % SWEEP_EVERY == SWEEP_EVERY - 1 {
            let age = (self.patience() * 4).max(Duration::from_secs(600));
            client
                .execute(SWEEP, &[&age.as_secs_f64()])
                .await
                .map_err(statement("sweeping old relayed calls"))?;
        }
        let rows = client
            .query(TAKE, &[&self.shared.node.as_str()])
            .await
            .map_err(statement("taking the calls for this node's sagas"))?;
        rows.iter()
            .map(|row| {
                Ok(TakenCall {
                    id: CallId(row.get(0)),
                    saga: saga_of(row.get(1)),
                    call: json("body", row.get(2))?,
                })
            })
            .collect()
    }

    async fn reply(&self, id: CallId, answer: &CallAnswer) -> Result<(), JournalError> {
        self.client()
            .await?
            .execute(
                REPLY,
                &[&id.0, &to_json(answer), &self.shared.node.as_str()],
            )
            .await
            .map_err(statement("answering a relayed call"))?;
        Ok(())
    }

    async fn put_back(&self, id: CallId) -> Result<(), JournalError> {
        self.client()
            .await?
            .execute(PUT_BACK, &[&id.0, &self.shared.node.as_str()])
            .await
            .map_err(statement("putting a relayed call back"))?;
        Ok(())
    }

    fn patience(&self) -> Duration {
        self.lease_ttl + self.lease_ttl / 3 + PATIENCE_BEYOND_LEASE
    }
}
