//! The saga verbs: `start`, `get`, `list`, `watch`, `cancel`, `retry`.
//!
//! Each verb checks its input before connecting (a bad payload is a usage
//! error even when no server runs), makes its calls, and prints either the
//! human view (`render.rs`) or JSON (`json.rs`).

use std::{
    io::Read,
    path::{Path, PathBuf},
    time::Duration,
};

use sagad::{api::convert, config::parse_duration, proto::v1 as pb, saga::Timestamp};
use tokio_stream::StreamExt;

use crate::cli::{
    connect::{AddrArgs, connect, normalize_addr},
    error::{CliError, EXIT_COMPENSATED, EXIT_FAILED},
    export::parse_time,
    json,
    output::{Format, OutputArgs, Palette, Tone, is_terminal, saga_state_name},
    render,
};

/// Largest page `list` asks for (the server's maximum).
const PAGE_SIZE_MAX: u32 = 1000;

/// `sagad start`.
#[derive(clap::Args, Debug)]
pub struct StartArgs {
    /// Name of the saga definition to run (see `sagad definitions list`).
    pub definition: String,
    /// The saga's input, as JSON (passed to every step).
    #[arg(long, value_name = "JSON", conflicts_with = "payload_file")]
    pub payload: Option<String>,
    /// Read the input JSON from a file (`-` reads stdin).
    #[arg(long, value_name = "FILE")]
    pub payload_file: Option<PathBuf>,
    /// Same key and same request give the same saga, never a second run.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// Wait for the saga to end and print it; exit 0 only if it COMPLETED
    /// (4 if COMPENSATED, 5 if FAILED).
    #[arg(long)]
    pub wait: bool,
    /// Start later, at this time (RFC 3339 UTC, like 2026-12-24T18:00:00Z):
    /// the saga is journaled now and SCHEDULED until then.
    #[arg(long, value_name = "TIME", value_parser = parse_time, conflicts_with = "delay")]
    pub at: Option<Timestamp>,
    /// Start later, this long from now (like "10m").
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub delay: Option<Duration>,
    /// The saga's deadline, counted from its start (like "10m"), instead of
    /// its definition's: when it passes, the saga turns back and compensates.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "deadline_at")]
    pub deadline: Option<Duration>,
    /// The saga's deadline as a time (RFC 3339 UTC), after its start.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub deadline_at: Option<Timestamp>,
    #[command(flatten)]
    pub addr: AddrArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `sagad get`.
#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// The saga's id.
    pub id: String,
    /// Every attempt of every step. By default a step shows its last 20 and
    /// one line for the earlier ones (how many, the first and last error).
    #[arg(long)]
    pub all_attempts: bool,
    #[command(flatten)]
    pub addr: AddrArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// A saga state as the `--state` flag spells it.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum StateArg {
    Scheduled,
    Running,
    Compensating,
    Completed,
    Compensated,
    Failed,
}

impl From<StateArg> for pb::SagaState {
    fn from(s: StateArg) -> Self {
        match s {
            StateArg::Scheduled => pb::SagaState::Scheduled,
            StateArg::Running => pb::SagaState::Running,
            StateArg::Compensating => pb::SagaState::Compensating,
            StateArg::Completed => pb::SagaState::Completed,
            StateArg::Compensated => pb::SagaState::Compensated,
            StateArg::Failed => pb::SagaState::Failed,
        }
    }
}

/// `sagad list`.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Only sagas in this state.
    #[arg(long, value_enum, ignore_case = true)]
    pub state: Option<StateArg>,
    /// Only sagas of this definition.
    #[arg(long, value_name = "NAME")]
    pub definition: Option<String>,
    /// Show at most this many sagas, newest first.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub limit: usize,
    /// How many sagas to ask the server for per request.
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=PAGE_SIZE_MAX as i64))]
    pub page_size: u32,
    #[command(flatten)]
    pub addr: AddrArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `sagad watch`.
#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    /// The saga's id.
    pub id: String,
    #[command(flatten)]
    pub addr: AddrArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `sagad cancel`.
#[derive(clap::Args, Debug)]
pub struct CancelArgs {
    /// The saga's id.
    pub id: String,
    /// Why, recorded with the saga.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    #[command(flatten)]
    pub addr: AddrArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `sagad retry`.
#[derive(clap::Args, Debug)]
pub struct RetryArgs {
    /// The id of a FAILED saga.
    pub id: String,
    /// First take the participants' current endpoints for the steps still to
    /// be compensated (after a participant moved to a new address).
    #[arg(long)]
    pub refresh_endpoints: bool,
    #[command(flatten)]
    pub addr: AddrArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Prints one saga in the chosen format.
fn print_saga(saga: &pb::Saga, format: Format) {
    match format {
        Format::Json => outln!("{:#}", json::saga(saga)),
        Format::Human => out!("{}", render::saga(saga, &Palette::detect())),
    }
}

/// The payload bytes from `--payload` or `--payload-file`, checked to be JSON
/// and minified: the API compares payloads byte for byte (under one
/// idempotency key), and the same JSON typed twice must be the same request.
fn read_payload(args: &StartArgs) -> Result<Vec<u8>, CliError> {
    let (bytes, flag) = match (&args.payload, &args.payload_file) {
        (Some(text), _) => (text.as_bytes().to_vec(), "--payload".to_string()),
        (None, Some(path)) => (
            read_file(path)?,
            format!("--payload-file {}", path.display()),
        ),
        (None, None) => return Ok(Vec::new()),
    };
    sagad::json::minified(&bytes)
        .map_err(|e| CliError::Usage(format!("{flag} is not valid JSON: {e}")))
}

fn read_file(path: &Path) -> Result<Vec<u8>, CliError> {
    let mut bytes = Vec::new();
    let read = if path == Path::new("-") {
        std::io::stdin().read_to_end(&mut bytes).map(|_| ())
    } else {
        std::fs::read(path).map(|b| bytes = b)
    };
    read.map_err(|e| {
        CliError::Usage(format!(
            "cannot read --payload-file {}: {e}",
            path.display()
        ))
    })?;
    Ok(bytes)
}

pub async fn start(args: StartArgs) -> Result<(), CliError> {
    let payload = read_payload(&args)?;
    let mut client = connect(&args.addr).await?;
    let response = client
        .start_saga(pb::StartSagaRequest {
            definition: args.definition.clone(),
            payload,
            idempotency_key: args.idempotency_key.clone().unwrap_or_default(),
            wait: args.wait,
            steps: Vec::new(),
            start_at: args.at.map(convert::timestamp),
            start_delay: args.delay.map(convert::duration),
            deadline_at: args.deadline_at.map(convert::timestamp),
            deadline: args.deadline.map(convert::duration),
        })
        .await?
        .into_inner();
    let saga = response.saga.unwrap_or_default();
    match args.output.format() {
        Format::Json => outln!(
            "{:#}",
            serde_json::json!({ "created": response.created, "saga": json::saga(&saga) })
        ),
        Format::Human if args.wait => print_saga(&saga, Format::Human),
        Format::Human => {
            let palette = Palette::detect();
            let state = saga_state_name(saga.state);
            let verb = if response.created {
                "started"
            } else {
                "already started (same idempotency key)"
            };
            outln!(
                "saga {} {verb}: {} {}",
                palette.paint(Tone::Bold, &saga.id),
                saga.definition,
                state
            );
            outln!(
                "follow it with: sagad watch {} --addr {}",
                saga.id,
                normalize_addr(&args.addr.addr)
            );
        }
    }
    if args.wait {
        ended_ok(&saga)?;
    }
    Ok(())
}

/// `Ok` for a COMPLETED saga; the `--wait` failure for any other end.
fn ended_ok(saga: &pb::Saga) -> Result<(), CliError> {
    let exit = match pb::SagaState::try_from(saga.state) {
        Ok(pb::SagaState::Completed) => return Ok(()),
        Ok(pb::SagaState::Compensated) => EXIT_COMPENSATED,
        _ => EXIT_FAILED,
    };
    let why = if saga.cancel_reason.is_empty() {
        saga.error.clone()
    } else {
        format!("cancelled: {}", saga.cancel_reason)
    };
    Err(CliError::Ended {
        id: saga.id.clone(),
        state: saga_state_name(saga.state),
        why,
        exit,
    })
}

pub async fn get(args: GetArgs) -> Result<(), CliError> {
    let mut client = connect(&args.addr).await?;
    let saga = client
        .get_saga(pb::GetSagaRequest {
            id: args.id,
            all_attempts: args.all_attempts,
        })
        .await?
        .into_inner();
    print_saga(&saga, args.output.format());
    Ok(())
}

pub async fn list(args: ListArgs) -> Result<(), CliError> {
    let mut client = connect(&args.addr).await?;
    let mut sagas = Vec::new();
    let mut page_token = String::new();
    // Page through the server until the limit or the last page.
    while sagas.len() < args.limit {
        let want = (args.limit - sagas.len()).min(args.page_size as usize) as u32;
        let page = client
            .list_sagas(pb::ListSagasRequest {
                state: args
                    .state
                    .map(|s| pb::SagaState::from(s) as i32)
                    .unwrap_or_default(),
                definition: args.definition.clone().unwrap_or_default(),
                page_size: want,
                page_token: page_token.clone(),
            })
            .await?
            .into_inner();
        sagas.extend(page.summaries);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    sagas.truncate(args.limit);
    match args.output.format() {
        Format::Json => outln!(
            "{:#}",
            serde_json::Value::Array(sagas.iter().map(json::saga_summary).collect())
        ),
        Format::Human => out!("{}", render::saga_table(&sagas, &Palette::detect())),
    }
    Ok(())
}

pub async fn watch(args: WatchArgs) -> Result<(), CliError> {
    let mut client = connect(&args.addr).await?;
    let mut stream = client
        .watch_saga(pb::WatchSagaRequest {
            id: args.id.clone(),
        })
        .await?
        .into_inner();
    let palette = Palette::detect();
    let format = args.output.format();
    while let Some(event) = stream.next().await {
        let event = event?;
        match format {
            // One event per line (NDJSON), so a script can read them as they come.
            Format::Json => outln!("{}", json::event(&event)),
            Format::Human => outln!("{}", render::event_line(&event, &palette)),
        }
        if is_terminal_event(&event) {
            return Ok(());
        }
    }
    Err(CliError::Server {
        code: tonic::Code::Unavailable,
        message: format!(
            "the event stream of saga {} ended before the saga did (is the server shutting down?)",
            args.id
        ),
    })
}

/// True for the last event a saga's stream carries.
pub fn is_terminal_event(event: &pb::SagaEvent) -> bool {
    use pb::saga_event::Event as E;
    is_terminal(event.state)
        && matches!(
            event.event,
            Some(E::SagaCompleted(_) | E::SagaCompensated(_) | E::SagaFailed(_))
        )
}

pub async fn cancel(args: CancelArgs) -> Result<(), CliError> {
    let mut client = connect(&args.addr).await?;
    let saga = client
        .cancel_saga(pb::CancelSagaRequest {
            id: args.id,
            reason: args.reason.unwrap_or_default(),
        })
        .await?
        .into_inner();
    if args.output.format() == Format::Human && !is_terminal(saga.state) {
        outln!(
            "cancel requested: the saga compensates what it did (once any call in flight returns)\n"
        );
    }
    print_saga(&saga, args.output.format());
    Ok(())
}

pub async fn retry(args: RetryArgs) -> Result<(), CliError> {
    let mut client = connect(&args.addr).await?;
    let saga = client
        .retry_saga(pb::RetrySagaRequest {
            id: args.id,
            refresh_endpoints: args.refresh_endpoints,
        })
        .await?
        .into_inner();
    if args.output.format() == Format::Human {
        if args.refresh_endpoints {
            outln!(
                "retry requested with the participants' current endpoints: compensation resumes\n"
            );
        } else {
            outln!("retry requested: compensation resumes\n");
        }
    }
    print_saga(&saga, args.output.format());
    Ok(())
}
