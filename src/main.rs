//! The `sagad` command line.
//!
//! - `serve` runs a coordinator (`cli/serve.rs`, configured by `sagad::config`);
//! - `demo` runs one with three participants and three orders (`cli/demo/`);
//! - the client verbs (`start`, `get`, `list`, `watch`, `cancel`, `retry`,
//!   `tail`, `participants`, `definitions`, `cluster`) talk to a running server
//!   over gRPC (`cli/saga.rs`, `cli/catalog.rs`, `cli/tail.rs`, `cli/cluster.rs`);
//! - `auth token` makes a bearer token for a server with `--auth-tokens`
//!   (`cli/auth.rs`);
//! - `journal check` verifies a stopped server's data directory, reading only
//!   (`cli/journal.rs`), and `journal salvage` copies what a damaged one still
//!   holds to a new data directory (`cli/salvage.rs`);
//!   `export` writes the sagas that ended in a time window as JSON lines, from
//!   its archive files and journal (`cli/export.rs`).
//!
//! Every failure is one line on stderr, `sagad: ...`, and an exit code scripts
//! can tell apart (`cli/error.rs`): 1 server error, 2 bad flags or input,
//! 3 server unreachable, 4/5 `start --wait` ended COMPENSATED/FAILED, 6 `journal
//! check` found a torn tail, 7 `journal salvage` could not carry everything.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use cli::{
    auth::AuthCommand,
    catalog::{DefinitionsCommand, ParticipantsCommand},
    cluster::ClusterCommand,
    demo::DemoArgs,
    error::{CliError, EXIT_FAILURE, EXIT_USAGE},
    export::ExportArgs,
    journal::JournalCommand,
    saga::{CancelArgs, GetArgs, ListArgs, RetryArgs, StartArgs, WatchArgs},
    serve::ServeArgs,
    tail::TailArgs,
};

// jemalloc, tuned: see `sagad::allocator`.
sagad::use_jemalloc!();

mod cli;

#[derive(Parser)]
#[command(
    name = "sagad",
    version,
    about = "A durable saga coordinator",
    after_help = "Client verbs reach the server at --addr (env SAGAD_ADDR, default http://127.0.0.1:50051),\n\
                  with --token (env SAGAD_TOKEN) when it has --auth-tokens.\n\
                  Exit codes: 0 ok, 1 server error, 2 bad flags or input, 3 server unreachable,\n\
                  4 `start --wait` ended COMPENSATED, 5 ended FAILED,\n\
                  6 `journal check` found the journal intact but its log ending in a torn write,\n\
                  7 `journal salvage` wrote the new data directory but could not carry everything."
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

// Verbs are grouped by who uses them: the server, the demo, the client verbs,
// then operator tools that work on a data directory directly.
#[derive(Subcommand)]
enum Command {
    /// Run the coordinator. (Boxed: its flags outweigh every other verb's.)
    Serve(Box<ServeArgs>),
    /// Run a coordinator, three demo participants and three orders, live.
    Demo(DemoArgs),
    /// Start a saga from a definition.
    Start(StartArgs),
    /// Show a saga: its steps and the timeline of every attempt.
    Get(GetArgs),
    /// List sagas, newest first.
    List(ListArgs),
    /// Follow a saga's events live until it ends.
    Watch(WatchArgs),
    /// Cancel a running saga: it stops going forward and compensates.
    Cancel(CancelArgs),
    /// Resume compensating a FAILED saga.
    Retry(RetryArgs),
    /// Print every saga's events in journal order, from an offset, then live.
    Tail(TailArgs),
    /// Register and list participants.
    #[command(subcommand)]
    Participants(ParticipantsCommand),
    /// List saga definitions.
    #[command(subcommand)]
    Definitions(DefinitionsCommand),
    /// The nodes sharing a PostgreSQL journal.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Make bearer tokens for a server with --auth-tokens.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Offline tools on a data directory.
    #[command(subcommand)]
    Journal(JournalCommand),
    /// Write the sagas that ended in a time window as JSON lines, from a stopped
    /// server's archive files and journal.
    Export(ExportArgs),
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => cli::serve::run(*args).await,
        Command::Demo(args) => cli::demo::run(args).await,
        Command::Start(args) => Ok(cli::saga::start(args).await?),
        Command::Get(args) => Ok(cli::saga::get(args).await?),
        Command::List(args) => Ok(cli::saga::list(args).await?),
        Command::Watch(args) => Ok(cli::saga::watch(args).await?),
        Command::Cancel(args) => Ok(cli::saga::cancel(args).await?),
        Command::Retry(args) => Ok(cli::saga::retry(args).await?),
        Command::Tail(args) => Ok(cli::tail::tail(args).await?),
        Command::Participants(command) => Ok(cli::catalog::participants(command).await?),
        Command::Definitions(command) => Ok(cli::catalog::definitions(command).await?),
        Command::Cluster(command) => Ok(cli::cluster::run(command).await?),
        Command::Auth(command) => Ok(cli::auth::run(command)?),
        Command::Journal(command) => cli::journal::run(command).await,
        Command::Export(args) => cli::export::run(args).await,
    }
}

/// The exit code of a failure: classified client failures carry their own,
/// configuration, certificate and definition files that cannot be used are
/// usage errors,
/// anything else is 1.
fn exit_code(error: &anyhow::Error) -> u8 {
    if let Some(e) = error.downcast_ref::<CliError>() {
        e.exit_code()
    } else if error.downcast_ref::<sagad::config::ConfigError>().is_some()
        || matches!(error.downcast_ref(), Some(sagad::Error::Tls(_)))
        || error
            .downcast_ref::<cli::definitions::LoadError>()
            .is_some()
        // A tokens file that cannot be used is a bad input to the start.
        || matches!(
            error.downcast_ref::<sagad::Error>(),
            Some(sagad::Error::Credentials(_))
        )
    {
        EXIT_USAGE
    } else {
        EXIT_FAILURE
    }
}

fn main() -> ExitCode {
    // `use_jemalloc!` above: its statistics describe this process's heap.
    sagad::allocator::mark_global();
    sagad::failpoint::setup();
    // Before any file is made: the data directory is its user's alone.
    sagad::private::restrict_umask();
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let args = match Args::try_parse_from(&argv) {
        Ok(args) => args,
        // Help and version are not failures: clap prints them as it should.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            e.exit()
        }
        Err(e) => {
            let command = cli::error::command_path(&Args::command(), &argv);
            eprintln!("sagad: {}", cli::error::usage_line(&e, &command));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match sagad::runtime::build(None) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sagad: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(args.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sagad: {}", cli::error::one_line(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}
