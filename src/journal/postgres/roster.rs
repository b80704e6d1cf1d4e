//! The roster: every node sharing the journal and what it holds, as an
//! operator sees it (`ListNodes`, `sagad cluster nodes`), and which node
//! owns a saga (`Saga.owner`).
//!
//! These are reads for people, not for fencing: the batch's check
//! (`node.rs`) is what decides whether a node may write. Still, a lease is
//! judged here as it is there, by the database's clock, so the roster never
//! calls a node's lease running that the next batch would find lapsed (or the
//! other way round) because some node's clock is off.
//!
//! Invariants:
//! - [`nodes`] is one statement: every row, its lease and its saga count
//!   come from one snapshot and one reading of `clock_timestamp()`.
//! - A lease is running exactly when `lease_until > clock_timestamp()`, the
//!   comparison of [`super::node::CHECK`].

use std::time::{Duration, SystemTime};

use deadpool_postgres::Object;

use super::{Epoch, NodeId, PgError, batch::uuid};
use crate::{
    journal::JournalError,
    saga::{SagaId, Timestamp},
};

/// One node of the roster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub node: NodeId,
    /// Where it serves gRPC: its listen address, a port 0 resolved once bound.
    pub addr: String,
    /// Its current epoch: the instance that joined last.
    pub epoch: Epoch,
    /// Its lease, by the database's clock when the roster was read.
    pub lease: Lease,
    /// Its open sagas (running, compensating or failed): the ones whose
    /// events it still writes, and that a takeover of it would move.
    pub owned_open: u64,
    /// When its current epoch joined.
    pub joined_at: Timestamp,
}

/// A node's lease as the database's clock judged it: one value, so "expired"
/// and "time left" cannot disagree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lease {
    /// Running, with this long left.
    Left(Duration),
    /// Ran out this long ago: the node has not renewed it (dead, stopped,
    /// cut off from the database), and writes nothing until it does.
    Expired { ago: Duration },
}

impl Lease {
    /// The lease from its signed remaining time in microseconds: above zero
    /// is running (`lease_until > clock_timestamp()`), anything else expired.
    pub fn from_micros(remaining: i64) -> Self {
        let magnitude = Duration::from_micros(remaining.unsigned_abs());
        if remaining > 0 {
            Lease::Left(magnitude)
        } else {
            Lease::Expired { ago: magnitude }
        }
    }

    pub fn is_expired(self) -> bool {
        matches!(self, Lease::Expired { .. })
    }
}

/// The whole roster, by node id. The database's clock is read once (the CTE
/// holds a volatile function, so PostgreSQL evaluates it once rather than
/// inlining it per row); each node's count has the predicate of the
/// `saga_open_by_owner` partial index, so it reads that index, not every
/// saga, once the table is large.
const ROSTER: &str = "WITH now AS (SELECT clock_timestamp() AS t)
     SELECT n.node_id, n.addr, n.epoch,
            (extract(epoch FROM n.lease_until - now.t) * 1000000)::bigint,
            n.joined_at,
            (SELECT count(*) FROM sagad.saga s
              WHERE s.owner_node = n.node_id
                AND s.status IN ('scheduled', 'running', 'compensating', 'failed'))
     FROM sagad.node n, now
     ORDER BY n.node_id";

/// Every node sharing the journal, in one statement.
pub async fn nodes(client: &Object) -> Result<Vec<NodeInfo>, JournalError> {
    let read = |source| {
        JournalError::Postgres(PgError::Read {
            what: "listing the nodes",
            source,
        })
    };
    let statement = client.prepare_cached(ROSTER).await.map_err(read)?;
    let rows = client.query(&statement, &[]).await.map_err(read)?;
    rows.iter()
        .map(|row| {
            Ok(NodeInfo {
                node: node_of(row.get(0))?,
                addr: row.get(1),
                epoch: Epoch(row.get::<_, i64>(2) as u64),
                lease: Lease::from_micros(row.get(3)),
                joined_at: Timestamp::from(row.get::<_, SystemTime>(4)),
                owned_open: row.get::<_, i64>(5) as u64,
            })
        })
        .collect()
}

/// The node that owns saga `id`; `None` when no saga has that id.
pub async fn owner(client: &Object, id: SagaId) -> Result<Option<NodeId>, JournalError> {
    let read = |source| {
        JournalError::Postgres(PgError::Read {
            what: "reading a saga's owner",
            source,
        })
    };
    let statement = client
        .prepare_cached("SELECT owner_node FROM sagad.saga WHERE saga_id = $1")
        .await
        .map_err(read)?;
    let row = client
        .query_opt(&statement, &[&uuid(id)])
        .await
        .map_err(read)?;
    row.map(|row| node_of(row.get(0))).transpose()
}

/// A node id column read back: joins only write valid ones, so another one
/// was written by hand.
fn node_of(text: &str) -> Result<NodeId, JournalError> {
    NodeId::new(text).map_err(|why| JournalError::Corrupt {
        key: "sagad.node.node_id".into(),
        why,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        journal::postgres::{LEASE_TTL, PgJournal, PgOptions, PgTarget, throwaway},
        journal::{Journal, MemoryJournal},
        saga::EventKind,
        testing::{completing, started, turning_back},
    };

    async fn open(url: &str, node: &str) -> PgJournal {
        let options = PgOptions::new(
            PgTarget::parse(url).unwrap(),
            NodeId::new(node).unwrap(),
            format!("{node}.internal:50051"),
        );
        PgJournal::open(options).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_roster_counts_each_nodes_open_sagas_and_judges_leases_by_the_database() {
        let url = throwaway::shared_database()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (a, b) = (open(&url, "node-a").await, open(&url, "node-b").await);
        let running = started("shop", None);
        let id = running.saga;
        a.append(vec![running]).await.unwrap();
        a.append(turning_back(
            EventKind::SagaFailed { reason: "r".into() },
            0,
        ))
        .await
        .unwrap();
        a.append(completing(None, 0)).await.unwrap();
        let theirs = started("shop", None);
        b.append(vec![theirs.clone()]).await.unwrap();

        let nodes = b
            .nodes()
            .await
            .unwrap()
            .expect("a PostgreSQL journal has nodes");
        let seen: Vec<(&str, &str, u64, u64)> = nodes
            .iter()
            .map(|n| (n.node.as_str(), n.addr.as_str(), n.epoch.0, n.owned_open))
            .collect();
        assert_eq!(
            seen,
            [
                // Epochs come from one sequence: node-b joined second.
                ("node-a", "node-a.internal:50051", 1, 2),
                ("node-b", "node-b.internal:50051", 2, 1),
            ],
            "running and failed sagas count, completed ones do not"
        );
        for n in &nodes {
            assert!(
                matches!(n.lease, Lease::Left(left) if left <= LEASE_TTL),
                "{n:?}"
            );
        }
        assert_eq!(a.owner(id).await.unwrap().unwrap().as_str(), "node-a");
        assert_eq!(
            a.owner(theirs.saga).await.unwrap().unwrap().as_str(),
            "node-b"
        );
        assert_eq!(a.owner(SagaId::generate()).await.unwrap(), None);

        // The database's clock says node-b's lease ran out, whatever this
        // process's clock says.
        let (db, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        db.execute(
            "UPDATE sagad.node SET lease_until = clock_timestamp() - interval '3 seconds'
             WHERE node_id = 'node-b'",
            &[],
        )
        .await
        .unwrap();
        let nodes = a.nodes().await.unwrap().unwrap();
        assert!(!nodes[0].lease.is_expired(), "{nodes:?}");
        assert!(
            matches!(nodes[1].lease, Lease::Expired { ago } if ago >= Duration::from_secs(3)),
            "{nodes:?}"
        );
    }

    #[tokio::test]
    async fn a_journal_without_nodes_has_no_roster_and_no_owners() {
        let journal = MemoryJournal::in_memory();
        let first = started("shop", None);
        let id = first.saga;
        journal.append(vec![first]).await.unwrap();
        assert_eq!(journal.nodes().await.unwrap(), None);
        assert_eq!(journal.owner(id).await.unwrap(), None);
    }

    #[test]
    fn a_lease_is_running_only_with_time_left() {
        assert_eq!(
            Lease::from_micros(8_200_000),
            Lease::Left(Duration::from_millis(8_200))
        );
        // The batch's check is `lease_until > clock_timestamp()`: at the
        // instant itself the lease has run out.
        assert_eq!(
            Lease::from_micros(0),
            Lease::Expired {
                ago: Duration::ZERO
            }
        );
        assert_eq!(
            Lease::from_micros(-3_000_000),
            Lease::Expired {
                ago: Duration::from_secs(3)
            }
        );
        assert!(Lease::from_micros(i64::MIN).is_expired());
    }
}
