//! The `sagad` command line: `serve` runs a coordinator, `demo` shows one at work.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use sagad::{
    engine::EngineConfig,
    saga::{StepDefaults, definition},
    server::{self, ServerConfig},
};
use tracing_subscriber::EnvFilter;

mod cli;

#[derive(Parser)]
#[command(name = "sagad", version, about = "A durable saga coordinator")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the coordinator.
    Serve(ServeArgs),
    /// Start a coordinator and three demo participants, and run three orders.
    Demo,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on (host:port; port 0 or ":0" picks a free port, printed at start).
    #[arg(long, env = "SAGAD_LISTEN", default_value = "127.0.0.1:50051")]
    listen: String,
    /// Directory of the journal; one sagad process owns it at a time.
    #[arg(long, env = "SAGAD_DATA_DIR", default_value = "./sagad-data")]
    data_dir: PathBuf,
    /// Directory of saga definitions (*.toml). Default: ./sagas, if it exists.
    #[arg(long, env = "SAGAD_SAGAS")]
    sagas: Option<PathBuf>,
    /// Largest saga payload (and participant answer) accepted, in bytes.
    #[arg(long, env = "SAGAD_MAX_PAYLOAD_BYTES", default_value_t = 1024 * 1024)]
    max_payload_bytes: usize,
    /// How long in-flight participant calls may run on after SIGINT/SIGTERM.
    #[arg(long, env = "SAGAD_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    shutdown_grace: Duration,
    /// Timeout of a step call when neither the step nor its participant sets one.
    #[arg(long, env = "SAGAD_DEFAULT_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    default_timeout: Duration,
}

/// `:PORT` means the loopback address with that port.
fn parse_listen(text: &str) -> anyhow::Result<SocketAddr> {
    let full = if text.starts_with(':') {
        format!("127.0.0.1{text}")
    } else {
        text.to_string()
    };
    full.parse()
        .with_context(|| format!("--listen '{text}' is not host:port (e.g. 127.0.0.1:50051 or :0)"))
}

fn init_logging(default: &str) {
    let filter = std::env::var("SAGAD_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| default.to_string());
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logging("info");
    let listen = parse_listen(&args.listen)?;
    if args.max_payload_bytes == 0 {
        bail!("--max-payload-bytes must be greater than 0");
    }
    let definitions = match &args.sagas {
        Some(dir) => definition::load_dir(dir)?,
        None if PathBuf::from("sagas").is_dir() => definition::load_dir(&PathBuf::from("sagas"))?,
        None => {
            tracing::warn!(
                "no --sagas directory and no ./sagas: starting without saga definitions (inline steps still work)"
            );
            Vec::new()
        }
    };
    let config = ServerConfig {
        listen,
        data_dir: args.data_dir,
        engine: EngineConfig {
            defaults: StepDefaults {
                timeout: args.default_timeout,
                ..StepDefaults::default()
            },
            max_payload_bytes: args.max_payload_bytes,
            shutdown_grace: args.shutdown_grace,
        },
    };
    let names: Vec<_> = definitions.iter().map(|d| d.name.clone()).collect();
    let server = server::start(config.clone(), definitions).await?;
    // One line on stdout that scripts and tests read to find the port.
    println!("sagad listening on {}", server.local_addr());
    tracing::info!(addr = %server.local_addr(), data_dir = %config.data_dir.display(), definitions = ?names, "serving");
    let token = server.shutdown_token();
    tokio::spawn(async move {
        sagad::engine::shutdown::first_signal().await;
        token.cancel();
    });
    server.wait().await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sagad: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match args.command {
            Command::Serve(args) => serve(args).await,
            Command::Demo => cli::demo::run().await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sagad: {e:#}");
            ExitCode::FAILURE
        }
    }
}
