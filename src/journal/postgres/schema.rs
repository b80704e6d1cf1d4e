//! The journal's tables, created on the first start and versioned.
//!
//! Everything lives in one PostgreSQL schema, `sagad`, so the journal can
//! share a database with other applications and is dropped with one
//! statement. `sagad.schema_version` holds one row: the version the tables
//! are at. A start finds one of three things:
//! - no `sagad` schema: it creates every table at [`SCHEMA_VERSION`];
//! - the same version: it goes on;
//! - an older version: it is upgraded, one version at a time, in the same
//!   transaction (so a failed upgrade leaves the older version whole);
//! - a newer version (a newer sagad wrote it): it is refused, naming both
//!   versions, and changes nothing.
//!
//! A read-only open (`snapshot.rs`: `journal check`, `export`) only reads the
//! version ([`read_version`]): no schema is refused ("no sagad journal"), a
//! newer one too, and nothing is ever created or upgraded.
//!
//! | version | what it added |
//! |---|---|
//! | 1 | the tables |
//! | 2 | `epoch_seq`: every epoch is drawn from one sequence, so a node that takes a saga over writes (and calls its participants) under an epoch above any its old owner had (`takeover.rs`) |
//! | 3 | `duty`: cluster-wide duties, one holder at a time on a lease (`duty.rs`); `notice`: the on-failed webhook's acknowledgements, one truth for every node (`notice.rs`) |
//! | 4 | `relay`: cancels and retries that reached a node other than the saga's owner, for the owner to carry out (`relay.rs`) |
//! | 5 | the `scheduled` status (a saga journaled to start later), among the open sagas of the owner index |
//!
//! Two nodes starting at once on an empty database must not both create the
//! tables: the check and the creation run in one transaction under a
//! transaction-level advisory lock, so the second waits and then finds the
//! tables made. (The lock guards this bootstrap only; nothing else relies on
//! advisory locks.)

use tokio_postgres::Client;

use super::{PgError, PgTarget};

/// The version of the tables this build creates and reads.
pub const SCHEMA_VERSION: i32 = 5;

/// The advisory lock key of the bootstrap: "sagad" in ASCII, arbitrary but fixed.
const BOOTSTRAP_LOCK: i64 = 0x73_6167_6164;

/// Version 1 of the tables. Why each part is there is in `mod.rs`.
const CREATE_V1: &str = r#"
CREATE SCHEMA sagad;
CREATE TABLE sagad.schema_version (
    version integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE sagad.node (
    node_id text PRIMARY KEY,
    epoch bigint NOT NULL,
    lease_until timestamptz NOT NULL,
    addr text NOT NULL,
    joined_at timestamptz NOT NULL
);
CREATE TABLE sagad.saga (
    saga_id uuid PRIMARY KEY,
    idempotency_key text UNIQUE,
    definition text NOT NULL,
    status text NOT NULL
        CHECK (status IN ('running', 'compensating', 'completed', 'compensated', 'failed')),
    created_at timestamptz NOT NULL,
    ended_at timestamptz,
    owner_node text NOT NULL,
    owner_epoch bigint NOT NULL,
    next_due_at timestamptz,
    last_seq bigint NOT NULL
);
CREATE INDEX saga_by_status ON sagad.saga (status, saga_id);
CREATE INDEX saga_open_by_owner ON sagad.saga (owner_node, saga_id)
    WHERE status IN ('running', 'compensating', 'failed');
CREATE TABLE sagad.event (
    "offset" bigint PRIMARY KEY,
    saga_id uuid NOT NULL,
    seq bigint NOT NULL,
    body bytea NOT NULL,
    UNIQUE (saga_id, seq)
);
CREATE TABLE sagad.feed_head (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    last bigint NOT NULL
);
INSERT INTO sagad.feed_head (last) VALUES (0);
CREATE TABLE sagad.archive_horizon (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    through bigint NOT NULL
);
INSERT INTO sagad.archive_horizon (through) VALUES (0);
CREATE TABLE sagad.participant (
    name text PRIMARY KEY,
    body bytea NOT NULL
);
"#;

/// From version 1 to 2: epochs from one sequence, starting above every
/// epoch a node holds now.
const UPGRADE_TO_V2: &str = r#"
CREATE SEQUENCE sagad.epoch_seq AS bigint;
SELECT setval('sagad.epoch_seq', COALESCE(max(epoch), 0) + 1, false) FROM sagad.node;
"#;

/// From version 2 to 3: the duties' leases, and the webhook's
/// acknowledgements (gone with their saga, when retention removes it).
const UPGRADE_TO_V3: &str = r#"
CREATE TABLE sagad.duty (
    name text PRIMARY KEY,
    node_id text NOT NULL,
    epoch bigint NOT NULL,
    lease_until timestamptz NOT NULL
);
CREATE TABLE sagad.notice (
    saga_id uuid PRIMARY KEY REFERENCES sagad.saga (saga_id) ON DELETE CASCADE,
    seq bigint NOT NULL,
    acked_at timestamptz NOT NULL,
    acked_by text NOT NULL
);
"#;

/// From version 3 to 4: calls for a saga's owner (gone with their saga).
/// The partial index holds only the calls no owner took yet, so the
/// owners' polls cost next to nothing while none wait.
const UPGRADE_TO_V4: &str = r#"
CREATE TABLE sagad.relay (
    call_id uuid PRIMARY KEY,
    saga_id uuid NOT NULL REFERENCES sagad.saga (saga_id) ON DELETE CASCADE,
    body text NOT NULL,
    asked_by text NOT NULL,
    asked_at timestamptz NOT NULL,
    taken_by text,
    answered_at timestamptz,
    answer text
);
CREATE INDEX relay_waiting ON sagad.relay (saga_id) WHERE taken_by IS NULL AND answer IS NULL;
"#;

/// From version 4 to 5: a saga may be `scheduled` (journaled, waiting for
/// its start), and a scheduled saga is open: its owner's, taken over with
/// the rest when the owner dies.
const UPGRADE_TO_V5: &str = r#"
ALTER TABLE sagad.saga DROP CONSTRAINT saga_status_check;
ALTER TABLE sagad.saga ADD CONSTRAINT saga_status_check
    CHECK (status IN ('scheduled', 'running', 'compensating', 'completed', 'compensated', 'failed'));
DROP INDEX sagad.saga_open_by_owner;
CREATE INDEX saga_open_by_owner ON sagad.saga (owner_node, saga_id)
    WHERE status IN ('scheduled', 'running', 'compensating', 'failed');
"#;

/// Each upgrade, by the version it leaves the tables at.
const UPGRADES: [(i32, &str); 4] = [
    (2, UPGRADE_TO_V2),
    (3, UPGRADE_TO_V3),
    (4, UPGRADE_TO_V4),
    (5, UPGRADE_TO_V5),
];

/// The version of the tables, read without creating or upgrading anything
/// (the read-only snapshot's open, `snapshot.rs`): a database without the
/// schema and one a newer sagad wrote are refused. An older version is read
/// as it is: a snapshot reads only tables every version has.
pub async fn read_version(client: &Client, target: &PgTarget) -> Result<i32, PgError> {
    let setup = |what| PgError::setup(target, what);
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('sagad.schema_version') IS NOT NULL",
            &[],
        )
        .await
        .map_err(setup("looking for the sagad schema"))?
        .get(0);
    if !exists {
        return Err(PgError::NoJournal {
            target: target.to_string(),
        });
    }
    let found = client
        .query_one("SELECT max(version) FROM sagad.schema_version", &[])
        .await
        .map_err(setup("reading the schema version"))?
        .get::<_, Option<i32>>(0)
        .unwrap_or(0);
    judge(found, target)?;
    Ok(found)
}

/// Refuses a version this build cannot read: a newer one, or one no sagad writes.
fn judge(found: i32, target: &PgTarget) -> Result<(), PgError> {
    if found > SCHEMA_VERSION {
        return Err(PgError::NewerSchema {
            target: target.to_string(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    if found < 1 {
        return Err(PgError::Schema {
            target: target.to_string(),
            why: format!(
                "sagad.schema_version says {found}, and no sagad writes versions below 1: the table was changed by hand"
            ),
        });
    }
    Ok(())
}

/// Creates the tables if the database has none, or checks their version.
pub async fn ensure(client: &mut Client, target: &PgTarget) -> Result<(), PgError> {
    let setup = |what| PgError::setup(target, what);
    let tx = client
        .transaction()
        .await
        .map_err(setup("beginning the schema check"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&BOOTSTRAP_LOCK])
        .await
        .map_err(setup("waiting for another node's schema check"))?;
    let exists: bool = tx
        .query_one(
            "SELECT to_regclass('sagad.schema_version') IS NOT NULL",
            &[],
        )
        .await
        .map_err(setup("looking for the sagad schema"))?
        .get(0);
    let found = if exists {
        tx.query_one("SELECT max(version) FROM sagad.schema_version", &[])
            .await
            .map_err(setup("reading the schema version"))?
            .get::<_, Option<i32>>(0)
            .unwrap_or(0)
    } else {
        // A new journal is version 1 made, then upgraded like any other.
        tx.batch_execute(CREATE_V1)
            .await
            .map_err(setup("creating the sagad schema"))?;
        tx.execute("INSERT INTO sagad.schema_version (version) VALUES (1)", &[])
            .await
            .map_err(setup("recording the schema version"))?;
        1
    };
    judge(found, target)?;
    for (version, upgrade) in UPGRADES.iter().filter(|(v, _)| *v > found) {
        tx.batch_execute(upgrade)
            .await
            .map_err(setup("upgrading the sagad schema"))?;
        tx.execute("UPDATE sagad.schema_version SET version = $1", &[version])
            .await
            .map_err(setup("recording the schema version"))?;
    }
    if !exists {
        tracing::info!(target = %target, version = SCHEMA_VERSION, "created the journal's tables");
    } else if found < SCHEMA_VERSION {
        tracing::info!(target = %target, from = found, to = SCHEMA_VERSION, "upgraded the journal's tables");
    }
    tx.commit()
        .await
        .map_err(setup("committing the schema check"))
}
