//! Which PostgreSQL database the journal lives in: `--journal`, parsed once,
//! shown everywhere with its password redacted.
//!
//! Both forms tokio-postgres reads are accepted: a URL
//! (`postgres://user:secret@db1:5432,db2:5432/sagad?target_session_attrs=read-write`)
//! and a key-value string (`host=db1,db2 user=sagad dbname=sagad
//! target_session_attrs=read-write`). Several hosts are tried in order; with
//! `target_session_attrs=read-write` only a primary is taken, so a failover
//! to a promoted standby needs no change of configuration.
//!
//! Invariants:
//! - The password never appears in what this type prints ([`fmt::Display`]
//!   and [`fmt::Debug`] both redact it): errors, logs and `--help` output
//!   name the hosts, the user and the database only.
//! - A connection attempt that gets no answer gives up after
//!   [`DEFAULT_CONNECT_TIMEOUT`] unless the target sets its own
//!   `connect_timeout`, so an unreachable host stops a start instead of
//!   hanging it.

use std::{fmt, str::FromStr, time::Duration};

use tokio_postgres::config::Host;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::ssl::{SslMode, SslSettings, take_ssl_settings};
use crate::tls::database_client_config;

/// How long one connection attempt may take when the target does not say.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A PostgreSQL database to keep the journal in.
#[derive(Clone)]
pub struct PgTarget {
    config: tokio_postgres::Config,
    /// `sslmode` and the certificate files, as given.
    ssl: SslSettings,
    /// How connections negotiate TLS, built from `ssl` (its files read) at
    /// parse, so a bad file stops the start.
    tls: MakeRustlsConnect,
    /// How it prints: hosts, user and database, the password redacted.
    shown: String,
}

impl PgTarget {
    /// Parses a `postgres://` / `postgresql://` URL or a `key=value` string.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let is_url = text.starts_with("postgres://") || text.starts_with("postgresql://");
        if !is_url && !text.contains('=') {
            return Err(
                "expected a PostgreSQL URL like postgres://user@host:5432/db, or a connection string like 'host=db1,db2 dbname=sagad'"
                    .into(),
            );
        }
        let (text, ssl) = take_ssl_settings(text)?;
        let mut config = tokio_postgres::Config::from_str(&text).map_err(|e| {
            // tokio-postgres's message names the bad part, never the password.
            format!("not a PostgreSQL connection string: {e}")
        })?;
        if config.get_hosts().is_empty() {
            return Err("names no host (add one: postgres://user@host:5432/db)".into());
        }
        config.ssl_mode(ssl.mode.negotiation());
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("sagad");
        }
        let mut shown = describe(&config);
        if ssl.mode != SslMode::default() {
            shown.push_str(&format!("?sslmode={}", ssl.mode));
        }
        let tls = database_client_config(
            &shown,
            ssl.check(),
            ssl.ca().as_ref(),
            ssl.identity()?.as_ref(),
        )
        .map_err(|e| e.to_string())?;
        Ok(Self {
            config,
            ssl,
            tls: MakeRustlsConnect::new(tls),
            shown,
        })
    }

    /// What connections to it negotiate TLS with (`sslmode` decides whether
    /// they do).
    pub fn tls(&self) -> MakeRustlsConnect {
        self.tls.clone()
    }

    /// The client configuration, password included (never print it).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The database name, if the target gives one (the server defaults it
    /// to the user's name otherwise).
    pub fn dbname(&self) -> Option<&str> {
        self.config.get_dbname()
    }
}

/// `text` with any password in it replaced by `***`: for echoing a value
/// that did not parse (a URL's `user:password@`, a `password=` pair).
pub fn redacted(text: &str) -> String {
    if let Some((scheme, rest)) = text.split_once("://") {
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if let Some((userinfo, hosts)) = authority.rsplit_once('@')
            && let Some((user, _)) = userinfo.split_once(':')
        {
            return format!("{scheme}://{user}:***@{hosts}{tail}");
        }
        return text.to_string();
    }
    text.split(' ')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.trim() == "password" => format!("{key}=***"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `postgres://user:***@host:port,host:port/db`, from what tokio-postgres parsed.
fn describe(config: &tokio_postgres::Config) -> String {
    let mut shown = String::from("postgres://");
    if let Some(user) = config.get_user() {
        shown.push_str(user);
        if config.get_password().is_some() {
            shown.push_str(":***");
        }
        shown.push('@');
    }
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let name = match host {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            };
            // One port for all hosts, or one each, or none (5432).
            match ports.get(i).or(ports.first()) {
                Some(port) => format!("{name}:{port}"),
                None => name,
            }
        })
        .collect();
    shown.push_str(&hosts.join(","));
    if let Some(db) = config.get_dbname() {
        shown.push('/');
        shown.push_str(db);
    }
    shown
}

impl fmt::Display for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgTarget({})", self.shown)
    }
}

/// Two targets are the same when they print the same and carry the same
/// password and TLS settings: what `Config` tests compare.
impl PartialEq for PgTarget {
    fn eq(&self, other: &Self) -> bool {
        self.shown == other.shown
            && self.config.get_password() == other.config.get_password()
            && self.ssl == other.ssl
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_print_without_their_password() {
        let target = PgTarget::parse("postgres://sagad:s3cret@db.example:5433/journal").unwrap();
        assert_eq!(
            target.to_string(),
            "postgres://sagad:***@db.example:5433/journal"
        );
        assert!(!format!("{target:?}").contains("s3cret"));
        assert_eq!(target.config().get_password(), Some(&b"s3cret"[..]));
        assert_eq!(target.dbname(), Some("journal"));
    }

    #[test]
    fn several_hosts_and_key_value_strings_are_read() {
        let url = PgTarget::parse(
            "postgresql://sagad@a:5432,b:5433/sagad?target_session_attrs=read-write",
        )
        .unwrap();
        assert_eq!(url.to_string(), "postgres://sagad@a:5432,b:5433/sagad");
        let kv =
            PgTarget::parse("host=a,b port=5432 user=sagad password=pw dbname=sagad target_session_attrs=read-write")
                .unwrap();
        assert_eq!(kv.to_string(), "postgres://sagad:***@a:5432,b:5432/sagad");
        assert_eq!(
            kv.config().get_target_session_attrs(),
            tokio_postgres::config::TargetSessionAttrs::ReadWrite
        );
        assert_eq!(
            kv.config().get_connect_timeout(),
            Some(&DEFAULT_CONNECT_TIMEOUT)
        );
    }

    #[test]
    fn values_that_do_not_parse_are_echoed_without_their_password() {
        assert_eq!(
            redacted("postgres://u:pw@h:x/db?sslmode=on"),
            "postgres://u:***@h:x/db?sslmode=on"
        );
        assert_eq!(redacted("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redacted("host=h password=pw port=x"),
            "host=h password=*** port=x"
        );
    }

    #[test]
    fn what_is_not_a_target_is_refused_saying_what_is() {
        assert!(
            PgTarget::parse("/var/lib/sagad")
                .unwrap_err()
                .contains("postgres://")
        );
        assert!(
            PgTarget::parse("postgres://")
                .unwrap_err()
                .contains("no host")
        );
        let err = PgTarget::parse("postgres://u:pw@h:notaport/db").unwrap_err();
        assert!(!err.contains("pw@"), "{err}");
    }
}
