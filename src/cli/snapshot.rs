//! `--journal URL` for the offline tools (`journal check`, `export`): the
//! target parsed (a bad one is a usage error naming the flag, its password
//! redacted) and one read-only snapshot of it opened
//! (`sagad::journal::postgres::PgSnapshot`): it never joins as a node and
//! writes nothing, so it works beside running coordinators.

use anyhow::Context;
use sagad::journal::postgres::{PgSnapshot, PgTarget, redacted};

use crate::cli::error::CliError;

/// Opens a snapshot of the journal at `url` for `verb`.
pub async fn open(url: &str, verb: &str) -> anyhow::Result<PgSnapshot> {
    let target = PgTarget::parse(url)
        .map_err(|why| CliError::Usage(format!("--journal {}: {why}", redacted(url))))?;
    let shown = target.to_string();
    PgSnapshot::open(target)
        .await
        .with_context(|| format!("`sagad {verb}` cannot read the journal at {shown}"))
}
