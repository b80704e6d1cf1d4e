//! What can go wrong with the PostgreSQL journal, said so that a caller can
//! tell a start that cannot happen, a read that failed, a write that did not
//! happen, a write that may have, and a node that lost its right to write.
//! `crate::error` classifies each variant once ([`crate::error::JournalFault`]).
//!
//! A batch's failure reaches every caller of the batch, so its cause is
//! shared ([`Arc`]): tokio-postgres's errors cannot be cloned.

use std::sync::Arc;

use super::PgTarget;
use crate::saga::SagaId;

/// A PostgreSQL journal failure; wrapped in [`crate::journal::JournalError::Postgres`].
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// No connection could be made at open (the host is unreachable, refuses
    /// us, or the database does not exist). `target` has no password.
    #[error("cannot connect to the PostgreSQL journal at {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: tokio_postgres::Error,
    },
    /// The database holds a schema written by a newer sagad.
    #[error(
        "the PostgreSQL journal at {target} has schema version {found}, newer than version {known} that this sagad knows; run a sagad at least as new as the one that wrote it"
    )]
    NewerSchema {
        target: String,
        found: i32,
        known: i32,
    },
    /// A read-only open found no `sagad` schema: nothing to read, and a
    /// read-only open creates nothing (`snapshot.rs`).
    #[error(
        "no sagad journal in {target}: the database has no `sagad` schema (the first `sagad serve --journal` creates it)"
    )]
    NoJournal { target: String },
    /// A write asked of a journal opened read-only (a snapshot, for
    /// `journal check` and `export`): nothing was sent.
    #[error(
        "the PostgreSQL journal at {target} is opened read-only (one snapshot, for `sagad journal check` and `sagad export`): {what} is refused, nothing was written"
    )]
    ReadOnly { target: String, what: &'static str },
    /// The `sagad` schema is there but not as any sagad leaves it.
    #[error("the PostgreSQL journal at {target} is not usable: {why}")]
    Schema { target: String, why: String },
    /// A statement of the open (creating the schema, joining) failed.
    #[error("opening the PostgreSQL journal at {target}: {what}: {source}")]
    Setup {
        target: String,
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    /// A read failed, or no connection could be had for it; nothing was
    /// asked to change.
    #[error("{what}: {source}")]
    Read {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    /// The pool of reading connections could not give one.
    #[error("no connection to the PostgreSQL journal: {0}")]
    Pool(#[source] deadpool_postgres::PoolError),
    /// A statement of a batch transaction failed (the cause inside
    /// [`PgError::NotWritten`] and [`PgError::Uncertain`]).
    #[error("{what}: {source}")]
    Statement {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    /// A batch failed before its COMMIT was sent, or PostgreSQL refused the
    /// COMMIT: it was rolled back, nothing of it was written.
    #[error("a journal batch failed before it committed ({0}); nothing of it was written")]
    NotWritten(#[source] Arc<PgError>),
    /// A batch's COMMIT was sent and no answer came back (the connection
    /// broke): it may have committed.
    #[error("a journal batch's commit got no answer ({0}); it may have taken effect")]
    Uncertain(#[source] Arc<PgError>),
    /// Refused before anything was sent: an earlier batch failed, and the
    /// database has not answered a probe since.
    #[error(
        "the journal refuses writes after an earlier failure ({0}); it takes them again by itself once PostgreSQL answers"
    )]
    Refused(#[source] Arc<PgError>),
    /// Another process holds this node's identity now, or the cluster took
    /// its sagas over: this process must write nothing more.
    #[error(
        "node {node} was fenced: this process joined with epoch {held}, and the journal says {}; it journals nothing more (restart it to join again)",
        now.map_or_else(|| "the node left".to_string(), |e| format!("epoch {e}"))
    )]
    Fenced {
        node: String,
        held: u64,
        /// The node's epoch in the database now; `None` when its row is gone.
        now: Option<u64>,
    },
    /// The node's lease ran out, by the database's clock, before the
    /// heartbeat renewed it; writes go on once it is renewed (while no other
    /// node took its sagas over).
    #[error(
        "node {node}'s lease ran out (by the database's clock) before it was renewed; writes resume once the heartbeat renews it"
    )]
    LeaseLapsed { node: String },
    /// An append to a saga this node does not own (at its epoch): nothing
    /// was written.
    #[error(
        "saga {saga} belongs to node {owner} (epoch {owner_epoch}), not to this node at its epoch; nothing was written"
    )]
    NotOwner {
        saga: SagaId,
        owner: String,
        owner_epoch: u64,
    },
    /// A saga's row changed while the batch ran in a way nothing explains
    /// (removed, or started by another node, meanwhile): nothing was written,
    /// and the same append may work when made again.
    #[error(
        "saga {saga} changed while its append was being written; nothing was written, try again"
    )]
    Conflict { saga: SagaId },
    /// An append that does not continue the saga's history as the journal
    /// holds it (its first event is not the one after the last journaled):
    /// the caller's view of the saga is stale. Nothing was written.
    #[error(
        "saga {saga} has {journaled} events in the journal, but the append starts at event {first}; nothing was written"
    )]
    OutOfOrder {
        saga: SagaId,
        journaled: u64,
        first: u64,
    },
}

impl PgError {
    /// A statement of the open against `target` failed doing `what`; for
    /// `map_err`.
    pub(super) fn setup(
        target: &PgTarget,
        what: &'static str,
    ) -> impl FnOnce(tokio_postgres::Error) -> PgError {
        let target = target.to_string();
        move |source| PgError::Setup {
            target,
            what,
            source,
        }
    }
}
