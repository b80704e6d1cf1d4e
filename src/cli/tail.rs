//! `sagad tail`: the feed of every saga's events, from an offset, then live.
//!
//! Each line carries the event's global offset. When the stream ends (the
//! server stops, the connection drops), the error names the last offset
//! printed, so `sagad tail --after N` continues exactly after it: every event
//! once, in order, also across coordinator restarts.

use sagad::proto::v1 as pb;
use tokio_stream::StreamExt;

use crate::cli::{
    connect::{AddrArgs, connect},
    error::CliError,
    json,
    output::{Format, OutputArgs, Palette, Tone},
    render,
};

/// `sagad tail`.
#[derive(clap::Args, Debug)]
pub struct TailArgs {
    /// Print the events after this offset (0: from the first event).
    #[arg(long, value_name = "OFFSET", default_value_t = 0)]
    pub after: u64,
    /// Only events of sagas of this definition (`inline` for inline steps).
    #[arg(long, value_name = "NAME")]
    pub definition: Option<String>,
    /// Only events that change a saga's state (started, compensating, ended, retried).
    #[arg(long)]
    pub state_changes: bool,
    /// Stop after this many events (default: follow until interrupted).
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    #[command(flatten)]
    pub addr: AddrArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub async fn tail(args: TailArgs) -> Result<(), CliError> {
    if args.limit == Some(0) {
        return Ok(());
    }
    let mut client = connect(&args.addr).await?;
    let mut stream = client
        .subscribe(pb::SubscribeRequest {
            after_offset: args.after,
            definition: args.definition.clone().unwrap_or_default(),
            state_changes_only: args.state_changes,
        })
        .await?
        .into_inner();
    let palette = Palette::detect();
    let format = args.output.format();
    let mut last = args.after;
    let mut printed = 0;
    let ended = loop {
        let feed = match stream.next().await {
            Some(Ok(feed)) => feed,
            Some(Err(status)) => break status.message().to_string(),
            None => break "the server ended the stream".to_string(),
        };
        let Some(event) = &feed.event else {
            continue;
        };
        last = event.offset;
        match format {
            // One event per line (NDJSON), with the saga's definition added.
            Format::Json => {
                let mut value = json::event(event);
                value["definition"] = feed.definition.clone().into();
                outln!("{value}");
            }
            Format::Human => outln!(
                "{} {} {} {}",
                palette.paint(Tone::Dim, &format!("{:>8}", event.offset)),
                event.saga_id,
                feed.definition,
                render::event_line(event, &palette)
            ),
        }
        printed += 1;
        if args.limit.is_some_and(|limit| printed >= limit) {
            return Ok(());
        }
    };
    Err(CliError::Server {
        code: tonic::Code::Unavailable,
        message: format!("{ended}; continue with `sagad tail --after {last}`"),
    })
}
