//! `sagad serve`: build the [`Config`] (defaults → `--config` file → `SAGAD_*`
//! env → flags), load the definitions, run the coordinator until SIGINT/SIGTERM.
//!
//! The flags carry no defaults and do not read the environment themselves:
//! `sagad::config` applies both, so precedence lives in one place.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use http::Uri;

use sagad::{
    config::{self, Config, ConfigError, HistoryAfter, LogFormat, Retention, Settings},
    journal::postgres::NodeId,
    participant::guard::{AllowEntry, AllowList},
    server,
};

use crate::cli::{definitions, logging, serve_tls::ServeTlsArgs};

/// `sagad serve`. Every flag can also be set in the `--config` file and by an
/// environment variable; see the README's configuration table.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// A TOML file of settings (keys: listen, data_dir, sagas, max_payload_bytes,
    /// shutdown_grace, default_timeout, metrics_listen, on_failed_webhook,
    /// log_format, otlp_endpoint, retention, history_after, disk_reserve, journal, node_id, lease_ttl,
    /// auth_tokens, insecure_no_auth, participant_allow, and the TLS keys:
    /// tls_cert, tls_key, tls_client_ca, metrics_tls_cert, metrics_tls_key,
    /// participant_ca, participant_cert, participant_key, [[participant_tls]]).
    #[arg(long, env = "SAGAD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on (host:port; port 0 or ":0" picks a free port, printed
    /// at start). [env: SAGAD_LISTEN] [default: 127.0.0.1:50051]
    #[arg(long, value_name = "HOST:PORT", value_parser = config::parse_listen)]
    pub listen: Option<SocketAddr>,
    /// Directory of the journal; one sagad process owns it at a time.
    /// [env: SAGAD_DATA_DIR] [default: ./sagad-data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Directory of saga definitions (*.toml). [env: SAGAD_SAGAS] [default: ./sagas, if it exists]
    #[arg(long, value_name = "DIR")]
    pub sagas: Option<PathBuf>,
    /// Largest saga payload (and participant answer) accepted, in bytes.
    /// [env: SAGAD_MAX_PAYLOAD_BYTES] [default: 1048576]
    #[arg(long, value_name = "BYTES", value_parser = config::parse_payload_bytes)]
    pub max_payload_bytes: Option<usize>,
    /// How long in-flight participant calls may run on after SIGINT/SIGTERM.
    /// [env: SAGAD_SHUTDOWN_GRACE] [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration)]
    pub shutdown_grace: Option<Duration>,
    /// Timeout of a step call when neither the step nor its participant sets one.
    /// At least 10ms, at most 24h. [env: SAGAD_DEFAULT_TIMEOUT] [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = config::parse_step_timeout)]
    pub default_timeout: Option<Duration>,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (port 0 picks a free
    /// port, printed at start). [env: SAGAD_METRICS_LISTEN] [default: off]
    #[arg(long, value_name = "HOST:PORT", value_parser = config::parse_listen)]
    pub metrics_listen: Option<SocketAddr>,
    /// POST a JSON notice to this http(s):// URL for every saga that becomes FAILED,
    /// retried until acknowledged (at least once, across restarts).
    /// [env: SAGAD_ON_FAILED_WEBHOOK] [default: off]
    #[arg(long, value_name = "URL", value_parser = config::parse_webhook_url)]
    pub on_failed_webhook: Option<Uri>,
    /// How log lines are written to stderr: text, or json (one object per line).
    /// Which lines: SAGAD_LOG (e.g. info,sagad=debug). [env: SAGAD_LOG_FORMAT] [default: text]
    #[arg(long, value_name = "FORMAT", value_parser = config::parse_log_format)]
    pub log_format: Option<LogFormat>,
    /// Export spans over OTLP/gRPC to this collector (http://host:port); needs a
    /// build with `--features otlp`. [env: SAGAD_OTLP_ENDPOINT] [default: none]
    #[arg(long, value_name = "URL", value_parser = config::parse_otlp_endpoint)]
    pub otlp_endpoint: Option<String>,
    /// How long a COMPLETED or COMPENSATED saga stays in the journal before it is
    /// moved to DATA_DIR/archive/YYYY-MM-DD.jsonl.gz (e.g. 7d, 36h; "forever"
    /// never archives). FAILED sagas always stay. [env: SAGAD_RETENTION] [default: forever]
    #[arg(long, value_name = "DURATION", value_parser = config::parse_retention)]
    pub retention: Option<Retention>,
    /// Free space the journal leaves on its disk (e.g. 64MiB, 1GiB): it
    /// prepares no log segment that would take it, and refuses to start with
    /// less free. [env: SAGAD_DISK_RESERVE] [default: 64MiB]
    #[arg(long, value_name = "SIZE", value_parser = config::parse_bytes)]
    pub disk_reserve: Option<u64>,
    /// The tokens file: lines of NAME ROLE sha256:HASH (from `sagad auth
    /// token`); every call then needs a bearer token in it. Re-read on SIGHUP
    /// and when it changes. [env: SAGAD_AUTH_TOKENS] [default: none: every
    /// caller is anonymous, and only a loopback --listen is allowed]
    #[arg(long, value_name = "FILE")]
    pub auth_tokens: Option<PathBuf>,
    /// Serve on a non-loopback --listen without authentication or TLS
    /// (logged as a warning at start). [env: SAGAD_INSECURE_NO_AUTH]
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Keep the journal in PostgreSQL, shared with other coordinators: a URL
    /// (postgres://user@host:5432/db) or a connection string ('host=a,b
    /// dbname=sagad target_session_attrs=read-write'). The tables are created
    /// at the first start. Without it: sled in --data-dir (which still holds
    /// the webhook's ledger and the archive). [env: SAGAD_JOURNAL] [default: sled]
    #[arg(long, value_name = "URL")]
    pub journal: Option<String>,
    /// This coordinator's name among those sharing a PostgreSQL journal;
    /// keep it across restarts (a restart rejoins as the same node and
    /// recovers its sagas). [env: SAGAD_NODE_ID] [default: HOSTNAME/LISTEN]
    #[arg(long, value_name = "NAME", value_parser = config::parse_node_id)]
    pub node_id: Option<NodeId>,
    /// How long after its end a finished saga (COMPLETED or COMPENSATED)
    /// leaves the sled journal's store for its history tier, DATA_DIR/history,
    /// where every read still finds it: start-up and memory then stay flat
    /// however long the history. "never" keeps finished sagas in the store.
    /// [env: SAGAD_HISTORY_AFTER] [default: 10m]
    #[arg(long, value_name = "DURATION|never", value_parser = config::parse_history_after)]
    pub history_after: Option<HistoryAfter>,
    /// How long this node's lease lasts without renewal (renewed every third
    /// of it) in a PostgreSQL journal: when it runs out, the other nodes take
    /// its sagas over. [env: SAGAD_LEASE_TTL] [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = config::parse_lease_ttl)]
    pub lease_ttl: Option<std::time::Duration>,
    /// Only let participant endpoints name these hosts: an IP, a CIDR
    /// (10.0.0.0/8, fd00::/8), a host name, or *.suffix. Repeat the flag or
    /// separate entries with commas. Checked at registration and at every
    /// connection (a name not allowed by name must resolve only into the
    /// CIDRs). [env: SAGAD_PARTICIPANT_ALLOW] [default: any host]
    #[arg(
        long,
        value_name = "HOST|CIDR",
        value_delimiter = ',',
        value_parser = config::parse_allow_entry
    )]
    pub participant_allow: Vec<AllowEntry>,
    #[command(flatten)]
    pub tls: ServeTlsArgs,
}

impl ServeArgs {
    /// The flags as the top configuration layer.
    fn settings(&self) -> Result<Settings, ConfigError> {
        Ok(Settings {
            listen: self.listen,
            data_dir: self.data_dir.clone(),
            sagas: self.sagas.clone(),
            max_payload_bytes: self.max_payload_bytes,
            shutdown_grace: self.shutdown_grace,
            default_timeout: self.default_timeout,
            metrics_listen: self.metrics_listen,
            on_failed_webhook: self.on_failed_webhook.clone(),
            log_format: self.log_format,
            otlp_endpoint: self.otlp_endpoint.clone(),
            retention: self.retention,
            history_after: self.history_after,
            disk_reserve: self.disk_reserve,
            auth_tokens: self.auth_tokens.clone(),
            // Off is the default: the flag only turns it on.
            insecure_no_auth: self.insecure_no_auth.then_some(true),
            // Parsed here, not by clap, which would echo a password.
            journal: self
                .journal
                .as_deref()
                .map(config::journal_flag)
                .transpose()?,
            node_id: self.node_id.clone(),
            lease_ttl: self.lease_ttl,
            // No flag is "this layer does not say", never "no host".
            participant_allow: AllowList::new(self.participant_allow.clone()),
            tls: self.tls.settings(),
        })
    }
}

/// Runs the coordinator until the first SIGINT/SIGTERM, then stops gracefully.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    // The configuration comes first: it says how to log. Its errors are printed
    // by main, without a subscriber.
    let config = Config::load(args.config.as_deref(), std::env::vars(), args.settings()?)?;
    let exposed = config.exposure().check().map_err(ConfigError::from)?;
    let logging = logging::init("info", config.log_format, config.otlp_endpoint.as_deref())?;
    if let Some(warning) = exposed {
        tracing::warn!("{warning}");
    }
    raise_open_files_limit();
    let served = serve(config).await;
    logging.shutdown().await;
    served
}

/// Raises this process's soft limit of open files to its hard limit: every
/// connection is a file, and so is every segment of the history tier, which
/// stays open for reads (about one per 100,000 finished sagas). A limit that
/// cannot be raised is only logged: the server runs within it.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    let raised = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0
            && (limit.rlim_cur >= limit.rlim_max || {
                limit.rlim_cur = limit.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0
            })
    };
    if !raised {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot raise the open files limit to its hard limit; serving within the soft one"
        );
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let definitions = match config.sagas_dir() {
        Some(dir) => definitions::load_dir(&dir)?,
        None => {
            tracing::warn!(
                "no --sagas directory and no ./sagas: starting without saga definitions (inline steps still work)"
            );
            Vec::new()
        }
    };
    let names: Vec<_> = definitions.iter().map(|d| d.name.clone()).collect();
    let server_config = config.server_config()?;
    let metrics_scheme = if server_config.tls.metrics.is_some() {
        "https"
    } else {
        "http"
    };
    let tls_on = server_config.tls.api.is_some();
    let server = server::start(server_config, definitions).await?;
    let stop = crate::cli::signal::stop_signal(server.reload_hooks()).await;
    // One line on stdout that scripts and tests read to find the port.
    outln!("sagad listening on {}", server.local_addr());
    if let Some(addr) = server.metrics_addr() {
        outln!("sagad metrics on {metrics_scheme}://{addr}/metrics");
    }
    tracing::info!(
        addr = %server.local_addr(),
        data_dir = %config.data_dir.display(),
        journal = %config.journal.as_ref().map_or("sled".to_string(), ToString::to_string),
        node = %config.node(),
        definitions = ?names,
        metrics = ?server.metrics_addr(),
        tls = tls_on,
        on_failed_webhook = ?config.on_failed_webhook.as_ref().map(ToString::to_string),
        retention = ?config.retention,
        auth_tokens = ?config.auth_tokens.as_ref().map(|p| p.display().to_string()),
        "serving"
    );
    let token = server.shutdown_token();
    tokio::spawn(async move {
        if stop.await.is_ok() {
            token.cancel();
        }
    });
    // An error here (the journal's last checkpoint failed, say) is main's
    // to print; only a stop that did all it had to is a clean one.
    server.wait().await?;
    tracing::info!("stopped cleanly");
    Ok(())
}
