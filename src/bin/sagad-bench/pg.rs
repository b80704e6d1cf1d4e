//! The PostgreSQL database of `run --journal postgres`: where it comes from,
//! what it measured as, and its end.
//!
//! ```text
//!  --pg-url URL given?  no ─▶ a throwaway server (sagad::journal::postgres::throwaway)
//!        │ yes                 started for the run, as the `postgres` user when root
//!        ▼
//!  CREATE DATABASE sagad_bench_PID_SECS on that server, through URL's own database
//!        │ the LIMIT probe, then the coordinators, use only this database
//!        ▼
//!  size (pg_database_size), DROP DATABASE, the throwaway server stopped
//! ```
//!
//! Guarantees:
//! - Every run starts on an empty database: one made for it, never one that
//!   was there before. Nothing of the server's other databases is touched.
//! - A throwaway server never outlives the bench (its `Drop`, and a
//!   parent-death signal if the bench is killed: see `throwaway.rs`). A
//!   database made on a `--pg-url` server is dropped by [`Database::finish`];
//!   a bench killed before that leaves it behind, named so it can be found.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use sagad::journal::postgres::{PgTarget, throwaway::Cluster};
use tokio_postgres::{Client, NoTls};

/// A fresh database, and the server it is on.
pub struct Database {
    /// The URL coordinators are given (`--journal`), and the probes connect to.
    pub url: String,
    /// Its name, for the size query and the drop.
    name: String,
    /// The URL the database was created through (the server's own database).
    admin_url: String,
    /// The throwaway server, if the bench started one; stopped on drop.
    throwaway: Option<Cluster>,
}

impl Database {
    /// A throwaway server, or the one `pg_url` names, and a fresh database on it.
    pub async fn create(pg_url: Option<&str>) -> anyhow::Result<Self> {
        let (admin_url, throwaway) = match pg_url {
            Some(url) => {
                // The same parser sagad uses: a bad URL fails here, with the
                // password redacted, rather than in every coordinator.
                let target =
                    PgTarget::parse(url).map_err(|why| anyhow::anyhow!("--pg-url: {why}"))?;
                eprintln!("sagad-bench: PostgreSQL at {target}");
                (url.to_string(), None)
            }
            None => {
                // initdb and the start block for seconds: off the runtime's thread.
                let cluster = tokio::task::spawn_blocking(Cluster::start)
                    .await?
                    .context("starting a throwaway PostgreSQL server")?;
                eprintln!(
                    "sagad-bench: a throwaway PostgreSQL server on 127.0.0.1:{}",
                    cluster.port()
                );
                (cluster.url("postgres"), Some(cluster))
            }
        };
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        // Digits and underscores only: it goes into SQL unquoted.
        let name = format!("sagad_bench_{}_{since_epoch}", std::process::id());
        let admin = connect(&admin_url).await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .with_context(|| {
                format!("creating database {name} (the --pg-url role needs CREATEDB)")
            })?;
        eprintln!("sagad-bench: journal in the fresh database {name}");
        Ok(Self {
            url: with_dbname(&admin_url, &name),
            name,
            admin_url,
            throwaway,
        })
    }

    /// A plain connection to the run's database.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        connect(&self.url).await
    }

    /// The database's size on disk, then drops it (after the coordinators
    /// stopped: a database with connections cannot be dropped) and stops a
    /// throwaway server. Returns the size in bytes.
    pub async fn finish(mut self) -> anyhow::Result<u64> {
        let admin = connect(&self.admin_url).await?;
        let size: i64 = admin
            .query_one("SELECT pg_database_size($1::text::name)", &[&self.name])
            .await
            .context("reading the database's size")?
            .get(0);
        admin
            .batch_execute(&format!("DROP DATABASE {}", self.name))
            .await
            .with_context(|| format!("dropping database {}", self.name))?;
        drop(admin);
        if let Some(cluster) = self.throwaway.take() {
            tokio::task::spawn_blocking(move || drop(cluster)).await?;
        }
        Ok(size.max(0) as u64)
    }
}

/// One connection, its connection task spawned.
async fn connect(url: &str) -> anyhow::Result<Client> {
    let target = PgTarget::parse(url).map_err(|why| anyhow::anyhow!("{why}"))?;
    let (client, connection) = target
        .config()
        .connect(NoTls)
        .await
        .with_context(|| format!("connecting to {target}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("sagad-bench: a PostgreSQL connection ended: {e}");
        }
    });
    Ok(client)
}

/// `url` naming database `db` instead of its own: a `dbname` parameter,
/// which tokio-postgres reads after a URL's path, and after earlier pairs of
/// a `key=value` string.
fn with_dbname(url: &str, db: &str) -> String {
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    match (is_url, url.contains('?')) {
        (true, true) => format!("{url}&dbname={db}"),
        (true, false) => format!("{url}?dbname={db}"),
        (false, _) => format!("{url} dbname={db}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_name_overrides_the_urls_own() {
        for (url, expected) in [
            (
                "postgres://u@h:5432/postgres",
                "postgres://u@h:5432/postgres?dbname=x",
            ),
            (
                "postgres://u@h/postgres?connect_timeout=5",
                "postgres://u@h/postgres?connect_timeout=5&dbname=x",
            ),
            ("host=h dbname=postgres", "host=h dbname=postgres dbname=x"),
        ] {
            let shown = with_dbname(url, "x");
            assert_eq!(shown, expected);
            let target = PgTarget::parse(&shown).unwrap();
            assert_eq!(target.dbname(), Some("x"), "{shown}");
        }
    }
}
