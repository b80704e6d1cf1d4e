//! `sagad cluster nodes`: the coordinators sharing a PostgreSQL journal, as
//! the server's `ListNodes` reads them (one statement, leases by the
//! database's clock), with the verb's own table and JSON beside it: they
//! show nothing but nodes, so they live here rather than among the saga
//! views of `render.rs` and `json.rs`, under the same conventions.
//!
//! Against a coordinator whose journal is in sled the server answers
//! `FAILED_PRECONDITION`, and the verb exits 1 saying so.

use std::time::Duration;

use sagad::proto::v1 as pb;
use serde_json::{Value, json};

use crate::cli::{
    catalog::ListArgs,
    connect::connect,
    error::CliError,
    output::{Format, Palette, Table, Tone, date_time, rfc3339, short_duration},
    scrub::Scrub,
};

/// `sagad cluster ...`.
#[derive(clap::Subcommand, Debug)]
pub enum ClusterCommand {
    /// List the nodes sharing this coordinator's PostgreSQL journal: epoch,
    /// lease, how many sagas each owns.
    Nodes(ListArgs),
}

pub async fn run(command: ClusterCommand) -> Result<(), CliError> {
    match command {
        ClusterCommand::Nodes(args) => nodes(args).await,
    }
}

async fn nodes(args: ListArgs) -> Result<(), CliError> {
    let mut client = connect(&args.addr).await?;
    let nodes = client
        .list_nodes(pb::ListNodesRequest {})
        .await?
        .into_inner()
        .nodes;
    match args.output.format() {
        Format::Json => outln!("{:#}", Value::Array(nodes.iter().map(node_json).collect())),
        Format::Human => out!("{}", node_table(&nodes, &Palette::detect())),
    }
    Ok(())
}

/// The table of nodes, their control characters escaped.
fn node_table(nodes: &[pb::Node], palette: &Palette) -> String {
    let mut nodes = nodes.to_vec();
    nodes.scrub();
    if nodes.is_empty() {
        // The answering node is always a row, unless its row was deleted.
        return "no nodes in the journal\n".into();
    }
    let mut table = Table::new(&["NODE", "ADDRESS", "EPOCH", "LEASE", "OWNED", "JOINED"]);
    for n in &nodes {
        table.row(vec![
            (n.node_id.clone(), Tone::Bold),
            (n.addr.clone(), Tone::Plain),
            (n.epoch.to_string(), Tone::Plain),
            (
                lease_text(n),
                if n.lease_expired {
                    Tone::Bad
                } else {
                    Tone::Plain
                },
            ),
            (n.owned_open.to_string(), Tone::Plain),
            (
                n.joined_at.as_ref().map(date_time).unwrap_or_default(),
                Tone::Dim,
            ),
        ]);
    }
    table.render(palette)
}

/// `8.2s left`, `expired 3s ago`; minutes and hours as `short_duration`
/// writes them (`2m05s`).
fn lease_text(n: &pb::Node) -> String {
    let Some(remaining) = n.lease_remaining else {
        return "unknown".into();
    };
    let magnitude = magnitude(&remaining);
    let short = magnitude < Duration::from_secs(60);
    match (n.lease_expired, short) {
        (false, true) => format!("{:.1}s left", magnitude.as_secs_f64()),
        (false, false) => format!("{} left", short_duration(magnitude)),
        (true, true) => format!("expired {}s ago", magnitude.as_secs()),
        (true, false) => format!("expired {} ago", short_duration(magnitude)),
    }
}

/// How long a signed wire duration is, either way.
fn magnitude(d: &prost_types::Duration) -> Duration {
    Duration::new(d.seconds.unsigned_abs(), d.nanos.unsigned_abs())
}

/// A node as `--json` prints it: `lease_remaining_ms` negative once the
/// lease ran out (a number, as attempts' `duration_ms`).
fn node_json(n: &pb::Node) -> Value {
    let lease_ms = n
        .lease_remaining
        .map(|d| d.seconds as f64 * 1000.0 + f64::from(d.nanos) / 1_000_000.0);
    json!({
        "node_id": n.node_id,
        "addr": n.addr,
        "epoch": n.epoch,
        "lease_remaining_ms": lease_ms,
        "lease_expired": n.lease_expired,
        "owned_open": n.owned_open,
        "joined_at": n.joined_at.as_ref().map(rfc3339),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, seconds: i64, nanos: i32, expired: bool) -> pb::Node {
        pb::Node {
            node_id: id.into(),
            addr: "127.0.0.1:50051".into(),
            epoch: 3,
            lease_remaining: Some(prost_types::Duration { seconds, nanos }),
            lease_expired: expired,
            owned_open: 12,
            joined_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
        }
    }

    #[test]
    fn leases_read_as_time_left_or_time_since() {
        let text = |n: &pb::Node| lease_text(n);
        assert_eq!(text(&node("a", 8, 200_000_000, false)), "8.2s left");
        assert_eq!(text(&node("a", -3, -400_000_000, true)), "expired 3s ago");
        assert_eq!(text(&node("a", -125, 0, true)), "expired 2m05s ago");
        assert_eq!(text(&node("a", 0, 0, true)), "expired 0s ago");
        let json = node_json(&node("a", -3, -500_000_000, true));
        assert_eq!(json["lease_remaining_ms"], -3500.0);
        assert_eq!(json["joined_at"], "2023-11-14T22:13:20.000Z");
    }

    #[test]
    fn the_table_escapes_what_the_journal_holds() {
        let text = node_table(
            &[
                node("node-a", 9, 0, false),
                node("evil\u{1b}[2J", -1, 0, true),
            ],
            &Palette::plain(),
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("NODE") && lines[0].contains("LEASE"),
            "{text}"
        );
        assert!(
            lines[1].contains("9.0s left") && lines[1].contains("12"),
            "{text}"
        );
        assert!(!text.contains('\u{1b}'), "{text}");
        assert!(lines[2].contains("evil\\u{1b}[2J"), "{text}");
    }
}
