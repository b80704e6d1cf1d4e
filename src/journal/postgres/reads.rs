//! The journal's reads: plain statements on a pooled connection, each one
//! snapshot, so a saga being removed is seen whole or not at all, and a page
//! of the feed never has a hole above the archive horizon (offsets become
//! visible in commit order: `mod.rs`).

use std::time::SystemTime;

use deadpool_postgres::Object;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{PgError, batch::uuid, saga_of, status_name, status_of};
use crate::{
    journal::{JournalError, ListQuery, SagaSummary, kv::codec},
    saga::{Event, Offset, Participant, SagaId, Timestamp},
};

/// Sagas read per round by [`finished_before`].
const RETENTION_CHUNK: i64 = 512;

/// A failed read statement.
pub(super) fn read(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> JournalError {
    move |source| JournalError::Postgres(PgError::Read { what, source })
}

/// An event row `(saga_id, seq, offset, body)`, decoded and checked against
/// its columns.
pub(super) fn event_of(row: &Row) -> Result<Event, JournalError> {
    let saga = saga_of(row.get(0));
    let seq = row.get::<_, i64>(1) as u64;
    let key = codec::event_key(saga, seq);
    let mut event: Event = codec::decode(&key, row.get(3))?;
    if event.saga != saga || event.seq != seq {
        return Err(JournalError::Corrupt {
            key: codec::describe_key(&key),
            why: format!(
                "the stored event is event {} of saga {}",
                event.seq, event.saga
            ),
        });
    }
    event.offset = Offset(row.get::<_, i64>(2) as u64);
    Ok(event)
}

pub async fn saga(client: &Object, id: SagaId) -> Result<Vec<Event>, JournalError> {
    let statement = client
        .prepare_cached(
            "SELECT saga_id, seq, \"offset\", body FROM sagad.event WHERE saga_id = $1 ORDER BY seq",
        )
        .await
        .map_err(read("reading a saga"))?;
    let rows = client
        .query(&statement, &[&uuid(id)])
        .await
        .map_err(read("reading a saga"))?;
    rows.iter().map(event_of).collect()
}

pub async fn after(
    client: &Object,
    after: Offset,
    limit: usize,
) -> Result<Vec<Event>, JournalError> {
    let statement = client
        .prepare_cached(
            "SELECT saga_id, seq, \"offset\", body FROM sagad.event
             WHERE \"offset\" > $1 ORDER BY \"offset\" LIMIT $2",
        )
        .await
        .map_err(read("reading the feed"))?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = client
        .query(&statement, &[&(after.get() as i64), &limit])
        .await
        .map_err(read("reading the feed"))?;
    rows.iter().map(event_of).collect()
}

pub async fn archived_through(client: &Object) -> Result<Offset, JournalError> {
    let row = client
        .query_one("SELECT through FROM sagad.archive_horizon", &[])
        .await
        .map_err(read("reading the archive horizon"))?;
    Ok(Offset(row.get::<_, i64>(0) as u64))
}

pub async fn last_offset(client: &Object) -> Result<Offset, JournalError> {
    let statement = client
        .prepare_cached("SELECT last FROM sagad.feed_head")
        .await
        .map_err(read("reading the feed head"))?;
    let row = client
        .query_one(&statement, &[])
        .await
        .map_err(read("reading the feed head"))?;
    Ok(Offset(row.get::<_, i64>(0) as u64))
}

/// This node's sagas that have not reached a terminal state.
pub async fn unfinished(client: &Object, node: &str) -> Result<Vec<SagaId>, JournalError> {
    let rows = client
        .query(
            "SELECT saga_id FROM sagad.saga
             WHERE owner_node = $1 AND status IN ('scheduled', 'running', 'compensating')
             ORDER BY saga_id",
            &[&node],
        )
        .await
        .map_err(read("listing unfinished sagas"))?;
    Ok(rows.iter().map(|r| saga_of(r.get(0))).collect())
}

/// Every node's sagas that have not reached a terminal state (the
/// read-only snapshot's [`crate::journal::Journal::unfinished`]: it is no node).
pub async fn all_unfinished(client: &Object) -> Result<Vec<SagaId>, JournalError> {
    let rows = client
        .query(
            "SELECT saga_id FROM sagad.saga
             WHERE status IN ('scheduled', 'running', 'compensating')
             ORDER BY saga_id",
            &[],
        )
        .await
        .map_err(read("listing unfinished sagas"))?;
    Ok(rows.iter().map(|r| saga_of(r.get(0))).collect())
}

pub async fn saga_for_key(client: &Object, key: &str) -> Result<Option<SagaId>, JournalError> {
    let statement = client
        .prepare_cached("SELECT saga_id FROM sagad.saga WHERE idempotency_key = $1")
        .await
        .map_err(read("looking up an idempotency key"))?;
    let row = client
        .query_opt(&statement, &[&key])
        .await
        .map_err(read("looking up an idempotency key"))?;
    Ok(row.map(|r| saga_of(r.get(0))))
}

/// Newest first, by id. With a state filter the `(status, saga_id)` index
/// gives the order; with only a definition filter the primary key is walked
/// backwards and filtered, as the sled journal's summaries are.
pub async fn list(client: &Object, query: &ListQuery) -> Result<Vec<SagaSummary>, JournalError> {
    if query.limit == 0 {
        return Ok(Vec::new());
    }
    // The largest uuid stands for "no cursor": every id is below it.
    let before = query.before.map_or(Uuid::max(), uuid);
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
    let status = query.status.map(status_name);
    let mut sql = String::from(
        "SELECT saga_id, status, definition, created_at FROM sagad.saga WHERE saga_id < $1",
    );
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&before];
    if let Some(status) = &status {
        params.push(status);
        sql.push_str(&format!(" AND status = ${}", params.len()));
    }
    if let Some(definition) = &query.definition {
        params.push(definition);
        sql.push_str(&format!(" AND definition = ${}", params.len()));
    }
    params.push(&limit);
    sql.push_str(&format!(" ORDER BY saga_id DESC LIMIT ${}", params.len()));
    let statement = client
        .prepare_cached(&sql)
        .await
        .map_err(read("listing sagas"))?;
    let rows = client
        .query(&statement, &params)
        .await
        .map_err(read("listing sagas"))?;
    rows.iter()
        .map(|row| {
            Ok(SagaSummary {
                id: saga_of(row.get(0)),
                status: status_of(row.get(1))?,
                definition: row.get(2),
                created_at: Timestamp::from(row.get::<_, SystemTime>(3)),
            })
        })
        .collect()
}

/// Final sagas that ended before `cutoff`, in id order after `after`: the
/// sled journal's walk (`kv/retention.rs`), over the primary key in chunks,
/// stopping at the first saga created at or after the cutoff.
pub async fn finished_before(
    client: &Object,
    cutoff: Timestamp,
    after: Option<SagaId>,
    limit: usize,
) -> Result<Vec<SagaId>, JournalError> {
    let statement = client
        .prepare_cached(
            "SELECT saga_id, status, created_at, ended_at FROM sagad.saga
             WHERE saga_id > $1 ORDER BY saga_id LIMIT $2",
        )
        .await
        .map_err(read("looking for sagas to archive"))?;
    // The nil uuid stands for "from the start": every id is above it.
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut from = after.map_or(Uuid::nil(), uuid);
    let mut found = Vec::new();
    let cutoff_time = cutoff.to_system_time();
    loop {
        let rows = client
            .query(&statement, &[&from, &RETENTION_CHUNK])
            .await
            .map_err(read("looking for sagas to archive"))?;
        for row in &rows {
            let created: SystemTime = row.get(2);
            if created >= cutoff_time {
                return Ok(found); // created after the cutoff: it ended after it too
            }
            let ended: Option<SystemTime> = row.get(3);
            if status_of(row.get(1))?.is_final() && ended.is_some_and(|t| t < cutoff_time) {
                found.push(saga_of(row.get(0)));
                if found.len() == limit {
                    return Ok(found);
                }
            }
        }
        match rows.last() {
            Some(last) if rows.len() as i64 == RETENTION_CHUNK => from = last.get(0),
            _ => return Ok(found),
        }
    }
}

pub async fn participants(client: &Object) -> Result<Vec<Participant>, JournalError> {
    let rows = client
        .query(
            "SELECT name, body FROM sagad.participant ORDER BY name",
            &[],
        )
        .await
        .map_err(read("listing participants"))?;
    rows.iter()
        .map(|row| {
            let key = codec::name_key(codec::PARTICIPANT, row.get(0));
            codec::decode(&key, row.get(1))
        })
        .collect()
}
