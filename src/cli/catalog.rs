//! What a saga can be built from: `participants register`, `participants list`
//! and `definitions list`.

use std::time::Duration;

use sagad::{
    api::convert::protocol_pb,
    config::parse_duration,
    proto::v1 as pb,
    saga::{
        Protocol,
        limits::{LIMIT_MAX, Rate},
        retry::ATTEMPTS_MAX,
    },
};

use crate::cli::{
    connect::{AddrArgs, connect},
    error::CliError,
    json,
    output::{Format, OutputArgs, Palette},
    render,
};

/// The attempt budgets a policy may give (checked here too, so a typo is a
/// usage error before anything connects).
const ATTEMPTS: std::ops::RangeInclusive<i64> = 1..=ATTEMPTS_MAX as i64;

/// `sagad participants ...`.
#[derive(clap::Subcommand, Debug)]
pub enum ParticipantsCommand {
    /// Register a participant, or replace the one of that name (running sagas
    /// keep the endpoints they started with).
    Register(RegisterArgs),
    /// List the registered participants.
    List(ListArgs),
}

/// `sagad definitions ...`.
#[derive(clap::Subcommand, Debug)]
pub enum DefinitionsCommand {
    /// List the saga definitions the server loaded.
    List(ListArgs),
}

/// `sagad participants register`.
#[derive(clap::Args, Debug)]
pub struct RegisterArgs {
    /// The name steps refer to (letters, digits, '-', '_', '.').
    pub name: String,
    /// URL that does the work: a gRPC method such as
    /// http://127.0.0.1:7002/shop.Payments/Charge, or with --protocol http an
    /// HTTP/JSON endpoint such as http://127.0.0.1:7002/payments/charge
    #[arg(long, value_name = "URL")]
    pub forward: String,
    /// URL that undoes it, e.g. http://127.0.0.1:7002/shop.Payments/Refund.
    /// Leave it out for a participant nothing can undo: only pivot and
    /// retriable steps may then use it.
    #[arg(long, value_name = "URL")]
    pub compensate: Option<String>,
    /// What both endpoints speak: grpc (StepRequest/StepResponse, the default),
    /// http (a JSON POST over HTTP/1.1) or h2c (the same JSON over HTTP/2
    /// without TLS); see docs/participant.md.
    #[arg(long, default_value = "grpc", value_parser = parse_protocol)]
    pub protocol: Protocol,
    /// Per-call timeout (sent as the gRPC deadline, or HTTP's
    /// x-sagad-timeout-ms header), e.g. 5s or 250ms; 10ms to 24h.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Forward attempts before the step counts as failed (1 to 10000).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(ATTEMPTS))]
    pub max_attempts: Option<u32>,
    /// Compensate attempts before the saga is FAILED (1 to 10000).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(ATTEMPTS))]
    pub max_compensate_attempts: Option<u32>,
    /// Delay before the second attempt (later ones grow exponentially); at least 10ms.
    #[arg(long, value_parser = parse_duration)]
    pub initial_interval: Option<Duration>,
    /// Cap on any one delay between attempts; at least 10ms.
    #[arg(long, value_parser = parse_duration)]
    pub max_interval: Option<Duration>,
    /// Forward attempts stop once the next one would start later than this
    /// after the step's first, e.g. 5m (whichever of this and --max-attempts
    /// comes first).
    #[arg(long, value_parser = parse_duration)]
    pub max_duration: Option<Duration>,
    /// At most this many of its calls in flight at once, whatever the number
    /// of sagas; calls beyond it wait their turn (never fail for it).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=LIMIT_MAX as i64))]
    pub max_in_flight: Option<u32>,
    /// At most this many calls per period, evenly spaced: "50/s", "600/m",
    /// "5/250ms".
    #[arg(long, value_name = "N/PERIOD", value_parser = |s: &str| s.parse::<Rate>())]
    pub rate: Option<Rate>,
    #[command(flatten)]
    pub addr: AddrArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// The flags of a list verb.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub addr: AddrArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `--protocol`, read by the same names the server uses.
fn parse_protocol(text: &str) -> Result<Protocol, String> {
    text.parse()
}

fn wire(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

pub async fn participants(command: ParticipantsCommand) -> Result<(), CliError> {
    match command {
        ParticipantsCommand::Register(args) => register(args).await,
        ParticipantsCommand::List(args) => list_participants(args).await,
    }
}

pub async fn definitions(command: DefinitionsCommand) -> Result<(), CliError> {
    match command {
        DefinitionsCommand::List(args) => list_definitions(args).await,
    }
}

async fn register(args: RegisterArgs) -> Result<(), CliError> {
    let retry = pb::RetryPolicy {
        initial_interval: args.initial_interval.map(wire),
        max_interval: args.max_interval.map(wire),
        max_attempts: args.max_attempts,
        max_compensate_attempts: args.max_compensate_attempts,
        max_duration: args.max_duration.map(wire),
        ..Default::default()
    };
    let mut client = connect(&args.addr).await?;
    let participant = client
        .register_participant(pb::RegisterParticipantRequest {
            protocol: protocol_pb(args.protocol) as i32,
            name: args.name,
            forward_endpoint: args.forward,
            compensate_endpoint: args.compensate.unwrap_or_default(),
            // An empty policy would override nothing: leave it unset.
            retry: (retry != pb::RetryPolicy::default()).then_some(retry),
            timeout: args.timeout.map(wire),
            max_in_flight: args.max_in_flight.unwrap_or(0),
            rate: args.rate.map(|r| r.to_string()).unwrap_or_default(),
        })
        .await?
        .into_inner();
    match args.output.format() {
        Format::Json => outln!("{:#}", json::participant(&participant)),
        Format::Human => {
            outln!("registered participant {}", participant.name);
            out!(
                "{}",
                render::participant_table(&[participant], &Palette::detect())
            );
        }
    }
    Ok(())
}

async fn list_participants(args: ListArgs) -> Result<(), CliError> {
    let mut client = connect(&args.addr).await?;
    let mut participants = client
        .list_participants(pb::ListParticipantsRequest {})
        .await?
        .into_inner()
        .participants;
    participants.sort_by(|a, b| a.name.cmp(&b.name));
    match args.output.format() {
        Format::Json => outln!(
            "{:#}",
            serde_json::Value::Array(participants.iter().map(json::participant).collect())
        ),
        Format::Human => out!(
            "{}",
            render::participant_table(&participants, &Palette::detect())
        ),
    }
    Ok(())
}

async fn list_definitions(args: ListArgs) -> Result<(), CliError> {
    let mut client = connect(&args.addr).await?;
    let mut definitions = client
        .list_definitions(pb::ListDefinitionsRequest {})
        .await?
        .into_inner()
        .definitions;
    definitions.sort_by(|a, b| a.name.cmp(&b.name));
    match args.output.format() {
        Format::Json => outln!(
            "{:#}",
            serde_json::Value::Array(definitions.iter().map(json::definition).collect())
        ),
        Format::Human => out!(
            "{}",
            render::definition_table(&definitions, &Palette::detect())
        ),
    }
    Ok(())
}
