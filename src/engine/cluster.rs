//! What the engine can say of the cluster it runs in: the nodes sharing its
//! journal and the owner of a saga, read from the journal as they are (the
//! engine keeps no view of other nodes in memory).
//!
//! Only a PostgreSQL journal has nodes. With sled there is no cluster to
//! show, and a roster of one would suggest there were: [`Engine::nodes`]
//! refuses instead, saying how to make one ([`NO_CLUSTER`]).

use std::time::Duration;

use super::Engine;
use crate::{
    Error, Result,
    journal::postgres::{NodeId, NodeInfo},
    saga::SagaId,
};

/// How often a node of a cluster reads the participants again: how long a
/// registration on another node may take to reach this one's listing (a
/// start that names a participant not known here reads them at once).
pub const PARTICIPANTS_REFRESH: Duration = Duration::from_secs(2);

/// Why a coordinator whose journal is in sled lists no nodes.
pub const NO_CLUSTER: &str = "this coordinator keeps its journal in sled: it has no cluster nodes (--journal postgres://… makes one)";

impl Engine {
    /// Every node sharing the journal, its lease judged by the database's
    /// clock; `FailedPrecondition` for a journal without nodes.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>> {
        self.journal()
            .nodes()
            .await?
            .ok_or_else(|| Error::FailedPrecondition(NO_CLUSTER.into()))
    }

    /// The node that owns saga `id`; `None` with a journal without nodes.
    pub async fn owner(&self, id: SagaId) -> Result<Option<NodeId>> {
        Ok(self.journal().owner(id).await?)
    }

    /// Where saga `id` runs, as an operator reads it: its owner and the
    /// address the owner serves at, as far as the journal says.
    pub(super) async fn where_it_runs(&self, id: SagaId) -> String {
        let Ok(Some(owner)) = self.owner(id).await else {
            return "another node".into();
        };
        let addr = self
            .journal()
            .nodes()
            .await
            .ok()
            .flatten()
            .and_then(|nodes| nodes.into_iter().find(|n| n.node == owner))
            .map_or_else(|| "address unknown".to_string(), |n| n.addr);
        format!("node {owner} ({addr})")
    }

    /// Whether other coordinators write this journal too (cluster mode).
    pub(super) fn shares_its_journal(&self) -> bool {
        self.journal().epoch().is_some()
    }

    /// Reads the participants again from the journal, where other nodes
    /// register them too. Under the registration lock, so a registration of
    /// this node is never overwritten by an older read.
    pub(super) async fn reload_participants(&self) -> Result<()> {
        let _one_at_a_time = self.inner.registering.lock().await;
        let read = super::participants_of(self.journal().as_ref()).await?;
        *self
            .inner
            .participants
            .write()
            .unwrap_or_else(|p| p.into_inner()) = read;
        Ok(())
    }

    /// In cluster mode, reads the participants again every
    /// [`PARTICIPANTS_REFRESH`] until shutdown, so registrations made on other
    /// nodes reach this one's starts and listings.
    pub(super) async fn refresh_participants(self) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(PARTICIPANTS_REFRESH) => {}
                () = self.inner.shutdown.cancelled() => return,
            }
            if let Err(e) = self.reload_participants().await {
                tracing::debug!(error = %e, "cannot read the participants again yet");
            }
        }
    }
}
