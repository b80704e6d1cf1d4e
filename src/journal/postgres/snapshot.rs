//! A read-only view of a PostgreSQL journal, [`PgSnapshot`]: one consistent
//! snapshot of every table, for the offline tools (`sagad journal check
//! --journal`, `sagad export --journal`), taken beside live coordinators.
//!
//! A snapshot is one connection inside one `BEGIN ISOLATION LEVEL REPEATABLE
//! READ READ ONLY` for its whole life: every read of it sees the database as
//! it was at its first statement, whatever the nodes commit meanwhile, so a
//! check never meets a saga half removed by retention or a batch half seen,
//! and an export's journal is one moment. It never joins: no epoch is drawn,
//! no lease taken, no row written. PostgreSQL refuses any write of a READ
//! ONLY transaction too, and the write methods of [`Journal`] are refused
//! here before anything is sent ([`PgError::ReadOnly`]).
//!
//! The connection comes from a deadpool pool of one, because the journal's
//! reads (`reads.rs`, `roster.rs`) take a pooled connection (`&Object`) and
//! its statement cache; the one `Object` is held until the snapshot is
//! dropped, so no read ever runs outside the transaction.
//!
//! Invariants:
//! - The schema is only looked at ([`schema::read_version`]): a database
//!   without it is refused ("no sagad journal in …"), so is a newer one;
//!   nothing is created or upgraded.
//! - The snapshot is fixed before [`PgSnapshot::open`] returns (PostgreSQL
//!   takes it at a transaction's first statement, not at its BEGIN): whatever
//!   the caller reads afterwards (an export's archive files) is younger.
//! - Every read goes through the one connection, inside the transaction.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio::sync::watch;

use super::{NodeId, NodeInfo, PgError, PgTarget, reads, roster, schema, session_config_idle};
use crate::{
    journal::{Journal, JournalError, JournalStats, ListQuery, SagaSummary},
    saga::{Event, Offset, Participant, SagaId, Timestamp},
};

/// How long the snapshot's session may sit in its transaction without
/// sending anything before PostgreSQL ends it. Longer than a node's
/// ([`super::IDLE_IN_TRANSACTION_TIMEOUT`]): an export reads every archive
/// file between its reads of the journal. Still bounded: an open snapshot
/// holds back vacuum's horizon and would make a schema upgrade wait, so a
/// tool that was stopped (SIGSTOP, a closed laptop) must not hold it forever.
pub const SNAPSHOT_IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// A PostgreSQL journal, read in one snapshot; see the module docs.
pub struct PgSnapshot {
    target: PgTarget,
    /// The one connection, inside the snapshot's transaction.
    client: Object,
    /// The pool `client` came from and goes back to (dropped with it).
    _pool: Pool,
    /// `feed_head.last` in the snapshot: the last offset any node took.
    feed_head: Offset,
    /// Never changes: nothing becomes durable in a snapshot.
    durable: watch::Sender<Offset>,
    /// Never set: a snapshot writes nothing, so no write fails.
    failure: watch::Sender<Option<String>>,
    /// Set by [`Journal::close`]: the transaction ended, reads are refused.
    closed: AtomicBool,
}

impl PgSnapshot {
    /// Connects with the target's TLS settings, begins the snapshot's
    /// transaction and checks the schema's version in it (which fixes the
    /// snapshot).
    pub async fn open(target: PgTarget) -> Result<Self, JournalError> {
        let manager = Manager::from_config(
            session_config_idle(&target, SNAPSHOT_IDLE_TIMEOUT),
            target.tls(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(1)
            .build()
            .map_err(|e| PgError::Schema {
                target: target.to_string(),
                why: format!("cannot build the connection pool: {e}"),
            })?;
        let client = pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(source) => PgError::Connect {
                target: target.to_string(),
                source,
            },
            e => PgError::Pool(e),
        })?;
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(PgError::setup(&target, "beginning the read-only snapshot"))?;
        // The transaction's first statement: the snapshot is taken here.
        schema::read_version(&client, &target).await?;
        let feed_head = reads::last_offset(&client).await?;
        Ok(Self {
            target,
            client,
            _pool: pool,
            feed_head,
            durable: watch::Sender::new(feed_head),
            failure: watch::Sender::new(None),
            closed: AtomicBool::new(false),
        })
    }

    /// The database read, printed with its password redacted.
    pub fn target(&self) -> &PgTarget {
        &self.target
    }

    /// The last offset any node had taken when the snapshot was taken.
    pub fn feed_head(&self) -> Offset {
        self.feed_head
    }

    /// The connection, inside the snapshot; refused once closed.
    pub(super) fn client(&self) -> Result<&Object, JournalError> {
        match self.closed.load(Ordering::Acquire) {
            true => Err(JournalError::Closed),
            false => Ok(&self.client),
        }
    }

    /// The refusal of a write.
    fn refuse(&self, what: &'static str) -> JournalError {
        JournalError::Postgres(PgError::ReadOnly {
            target: self.target.to_string(),
            what,
        })
    }
}

#[async_trait]
impl Journal for PgSnapshot {
    async fn append(&self, _events: Vec<Event>) -> Result<Vec<Event>, JournalError> {
        Err(self.refuse("appending events"))
    }

    async fn read_saga(&self, id: SagaId) -> Result<Vec<Event>, JournalError> {
        reads::saga(self.client()?, id).await
    }

    async fn read_after(&self, after: Offset, limit: usize) -> Result<Vec<Event>, JournalError> {
        reads::after(self.client()?, after, limit).await
    }

    async fn archived_through(&self) -> Result<Offset, JournalError> {
        reads::archived_through(self.client()?).await
    }

    async fn finished_before(
        &self,
        cutoff: Timestamp,
        after: Option<SagaId>,
        limit: usize,
    ) -> Result<Vec<SagaId>, JournalError> {
        reads::finished_before(self.client()?, cutoff, after, limit).await
    }

    async fn remove_sagas(&self, _ids: Vec<SagaId>) -> Result<Vec<SagaId>, JournalError> {
        Err(self.refuse("removing sagas"))
    }

    fn durable_offset(&self) -> watch::Receiver<Offset> {
        self.durable.subscribe()
    }

    /// Every node's unfinished sagas: a snapshot is no node.
    async fn unfinished(&self) -> Result<Vec<SagaId>, JournalError> {
        reads::all_unfinished(self.client()?).await
    }

    async fn saga_for_key(&self, key: &str) -> Result<Option<SagaId>, JournalError> {
        reads::saga_for_key(self.client()?, key).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<SagaSummary>, JournalError> {
        reads::list(self.client()?, query).await
    }

    async fn put_participant(&self, _participant: Participant) -> Result<(), JournalError> {
        Err(self.refuse("registering a participant"))
    }

    async fn participants(&self) -> Result<Vec<Participant>, JournalError> {
        reads::participants(self.client()?).await
    }

    fn stats(&self) -> JournalStats {
        JournalStats::default()
    }

    fn write_failure(&self) -> Option<String> {
        None
    }

    fn write_failures(&self) -> watch::Receiver<Option<String>> {
        self.failure.subscribe()
    }

    /// Ends the snapshot's transaction (it wrote nothing: a ROLLBACK loses
    /// nothing); later reads are refused. Dropping the snapshot ends it too,
    /// with the connection.
    async fn close(&self) -> Result<(), JournalError> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.client
            .batch_execute("ROLLBACK")
            .await
            .map_err(reads::read("ending the read-only snapshot"))
    }

    async fn owner(&self, id: SagaId) -> Result<Option<NodeId>, JournalError> {
        roster::owner(self.client()?, id).await
    }

    async fn nodes(&self) -> Result<Option<Vec<NodeInfo>>, JournalError> {
        roster::nodes(self.client()?).await.map(Some)
    }
}
