//! The configuration of `sagad serve`: one [`Config`], built in layers.
//!
//! Every setting can come from four places. Later layers win:
//!
//! ```text
//!   defaults  →  file (--config sagad.toml)  →  env (SAGAD_*)  →  flags
//! ```
//!
//! Each layer is a [`Settings`] (every field optional) and is checked as it is
//! read, so an error names the place the bad value came from: the flag, the
//! environment variable, or the file and key. [`Config::build`] then overlays
//! the layers on the defaults.
//!
//! Invariants:
//! - A file key that is not a setting is refused (a typo must not be ignored),
//!   naming the file and the key.
//! - Environment variables other than the ones in [`ENV_VARS`] are ignored, so
//!   `SAGAD_LOG` and the client's `SAGAD_ADDR` can live in the same shell.
//! - Relative paths in a file are relative to the file's directory, so a file
//!   means the same thing whatever the working directory.
//! - A list setting (`participant_allow`) is replaced whole by a later layer
//!   that has it, never merged: what the flags say is the whole list.
//!
//! | key | flag | env | default |
//! | --- | --- | --- | --- |
//! | `listen` | `--listen` | `SAGAD_LISTEN` | `127.0.0.1:50051` |
//! | `data_dir` | `--data-dir` | `SAGAD_DATA_DIR` | `./sagad-data` |
//! | `sagas` | `--sagas` | `SAGAD_SAGAS` | `./sagas` if it exists |
//! | `max_payload_bytes` | `--max-payload-bytes` | `SAGAD_MAX_PAYLOAD_BYTES` | `1048576` |
//! | `shutdown_grace` | `--shutdown-grace` | `SAGAD_SHUTDOWN_GRACE` | `10s` |
//! | `default_timeout` | `--default-timeout` | `SAGAD_DEFAULT_TIMEOUT` | `10s` |
//! | `metrics_listen` | `--metrics-listen` | `SAGAD_METRICS_LISTEN` | off (no metrics endpoint) |
//! | `on_failed_webhook` | `--on-failed-webhook` | `SAGAD_ON_FAILED_WEBHOOK` | off (no webhook; `http://` only) |
//! | `log_format` | `--log-format` | `SAGAD_LOG_FORMAT` | `text` (or `json`) |
//! | `otlp_endpoint` | `--otlp-endpoint` | `SAGAD_OTLP_ENDPOINT` | none (needs the `otlp` build feature) |
//! | `retention` | `--retention` | `SAGAD_RETENTION` | `forever` (never archive) |
//! | `history_after` | `--history-after` | `SAGAD_HISTORY_AFTER` | `10m` (finished sagas move to `DATA_DIR/history` that long after their end; `never` keeps them in the store) |
//! | `disk_reserve` | `--disk-reserve` | `SAGAD_DISK_RESERVE` | `64MiB` (free space the journal leaves on its disk) |
//! | `auth_tokens` | `--auth-tokens` | `SAGAD_AUTH_TOKENS` | none (every caller anonymous; loopback only) |
//! | `insecure_no_auth` | `--insecure-no-auth` | `SAGAD_INSECURE_NO_AUTH` | `false` (a non-loopback listen needs auth and TLS) |
//! | `journal` | `--journal` | `SAGAD_JOURNAL` | none: sled in `data_dir` (else a `postgres://` URL or `host=… dbname=…`) |
//! | `node_id` | `--node-id` | `SAGAD_NODE_ID` | `HOSTNAME/LISTEN` (the name among nodes sharing a PostgreSQL journal) |
//! | `lease_ttl` | `--lease-ttl` | `SAGAD_LEASE_TTL` | `10s` (how long a node's sagas wait for it before the others take them over) |
//! | `participant_allow` | `--participant-allow` (repeated, or commas) | `SAGAD_PARTICIPANT_ALLOW` (commas) | none: any host (else IPs, CIDRs, names, `*.suffix`; see `participant::guard`) |
//! | TLS: `tls_*`, `metrics_tls_*`, `participant_*` | `--tls-cert`, … | `SAGAD_TLS_CERT`, … | off: see `config/tls.rs` |
//!
//! Which log lines are written is `SAGAD_LOG` (or `RUST_LOG`), an `EnvFilter`
//! directive, read by the binary rather than here: it is not a setting of the
//! coordinator, and every verb honours it.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use http::Uri;

use crate::{
    auth::exposure::{Exposure, ExposureError},
    engine::EngineConfig,
    journal::postgres::{NodeId, PgOptions, PgTarget},
    participant::guard::{AllowEntry, AllowList},
    saga::{StepDefaults, definition},
    server::ServerConfig,
};

mod tls;

pub use tls::TlsSettings;

/// The default listen address (the client's default `--addr` points here).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// The default journal directory.
pub const DEFAULT_DATA_DIR: &str = "./sagad-data";
/// The definitions directory used when none is configured, if it exists.
pub const DEFAULT_SAGAS_DIR: &str = "./sagas";
/// The default largest payload, in bytes.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
/// The default time in-flight calls get after SIGINT/SIGTERM.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The default step call timeout.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// The word for "keep sagas in the journal forever" (the default retention).
pub const RETENTION_FOREVER: &str = "forever";

/// The file keys, in the order they are documented.
pub const KEYS: [&str; 19] = [
    "listen",
    "data_dir",
    "sagas",
    "max_payload_bytes",
    "shutdown_grace",
    "default_timeout",
    "metrics_listen",
    "on_failed_webhook",
    "log_format",
    "otlp_endpoint",
    "retention",
    "history_after",
    "disk_reserve",
    "auth_tokens",
    "insecure_no_auth",
    "journal",
    "node_id",
    "lease_ttl",
    "participant_allow",
];

/// The environment variables read, one per key, in the same order as [`KEYS`].
pub const ENV_VARS: [&str; 19] = [
    "SAGAD_LISTEN",
    "SAGAD_DATA_DIR",
    "SAGAD_SAGAS",
    "SAGAD_MAX_PAYLOAD_BYTES",
    "SAGAD_SHUTDOWN_GRACE",
    "SAGAD_DEFAULT_TIMEOUT",
    "SAGAD_METRICS_LISTEN",
    "SAGAD_ON_FAILED_WEBHOOK",
    "SAGAD_LOG_FORMAT",
    "SAGAD_OTLP_ENDPOINT",
    "SAGAD_RETENTION",
    "SAGAD_HISTORY_AFTER",
    "SAGAD_DISK_RESERVE",
    "SAGAD_AUTH_TOKENS",
    "SAGAD_INSECURE_NO_AUTH",
    "SAGAD_JOURNAL",
    "SAGAD_NODE_ID",
    "SAGAD_LEASE_TTL",
    "SAGAD_PARTICIPANT_ALLOW",
];

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// How long a saga that ended for good (COMPLETED or COMPENSATED) stays in the
/// journal before the archiver moves it to `DATA_DIR/archive` (`crate::archive`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Retention {
    /// Never archive (the default).
    #[default]
    Forever,
    /// Archive once this long has passed since the saga ended; never zero.
    For(Duration),
}

impl Retention {
    /// The period, if sagas are archived at all.
    pub fn period(self) -> Option<Duration> {
        match self {
            Retention::Forever => None,
            Retention::For(d) => Some(d),
        }
    }
}

/// The word for "keep finished sagas in the journal's store" (no history tier).
pub const HISTORY_NEVER: &str = "never";

/// How long a saga that ended for good stays in the sled journal's store
/// before the mover takes it to the history tier, `DATA_DIR/history`
/// (`crate::archive::mover`), where reads still find it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistoryAfter {
    /// Keep finished sagas in the store (the start-up and memory then grow
    /// with them).
    Never,
    /// Move once this long has passed since the saga ended; never zero.
    After(Duration),
}

/// Ten minutes: long enough that a saga's callers and watchers are done with
/// it while sled still holds it, short enough that sled never holds more than
/// a few segments' worth at a thousand sagas a second. With the fresh store
/// this keeps a start and the store's memory flat at ten million finished
/// sagas (BENCHMARKS.md, "History and waiting sagas at scale").
pub const DEFAULT_HISTORY_AFTER: Duration = Duration::from_secs(10 * 60);

impl Default for HistoryAfter {
    fn default() -> Self {
        HistoryAfter::After(DEFAULT_HISTORY_AFTER)
    }
}

impl HistoryAfter {
    /// The period, if sagas move at all.
    pub fn period(self) -> Option<Duration> {
        match self {
            HistoryAfter::Never => None,
            HistoryAfter::After(d) => Some(d),
        }
    }
}

/// Why a configuration was refused. Every variant names where the bad input was.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML (the message carries line and column).
    #[error("config file {} is not valid TOML: {source}", path.display())]
    Syntax {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    /// The config file names a key that is not a setting.
    #[error(
        "config file {}: unknown key `{key}` (known keys: {}, {}, {})",
        path.display(),
        KEYS.join(", "),
        tls::KEYS.join(", "),
        tls::ORIGINS_KEY
    )]
    UnknownKey { path: PathBuf, key: String },
    /// Settings that only make sense together are set apart (a certificate
    /// without its key, say); the message names both.
    #[error("{0}")]
    Incomplete(String),
    /// A value is malformed or out of range. `origin` says where it came from:
    /// `--listen`, `SAGAD_LISTEN`, or `sagad.toml: listen`.
    #[error("{origin} = {value}: {why}")]
    BadValue {
        origin: String,
        value: String,
        why: String,
    },
    /// The start would expose an unauthenticated or plain-text coordinator.
    #[error(transparent)]
    Exposure(#[from] ExposureError),
}

/// The settings of one layer; `None` means "this layer does not say".
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settings {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub sagas: Option<PathBuf>,
    pub max_payload_bytes: Option<usize>,
    pub shutdown_grace: Option<Duration>,
    pub default_timeout: Option<Duration>,
    pub metrics_listen: Option<SocketAddr>,
    pub on_failed_webhook: Option<Uri>,
    pub log_format: Option<LogFormat>,
    pub otlp_endpoint: Option<String>,
    pub retention: Option<Retention>,
    pub history_after: Option<HistoryAfter>,
    pub disk_reserve: Option<u64>,
    pub auth_tokens: Option<PathBuf>,
    pub insecure_no_auth: Option<bool>,
    pub journal: Option<PgTarget>,
    pub node_id: Option<NodeId>,
    pub lease_ttl: Option<Duration>,
    pub participant_allow: Option<AllowList>,
    pub tls: TlsSettings,
}

/// The configuration `sagad serve` runs with.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Address to serve gRPC on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The journal's directory; one process owns it.
    pub data_dir: PathBuf,
    /// Where saga definitions are loaded from; `None` means `./sagas` if it exists.
    pub sagas: Option<PathBuf>,
    /// Largest saga payload (and participant answer) accepted.
    pub max_payload_bytes: usize,
    /// How long in-flight calls may finish after SIGINT/SIGTERM.
    pub shutdown_grace: Duration,
    /// Step call timeout when neither the step nor its participant sets one.
    pub default_timeout: Duration,
    /// Where to serve Prometheus metrics (`GET /metrics`); `None`: not served.
    pub metrics_listen: Option<SocketAddr>,
    /// Where to POST a notice for each saga that becomes FAILED; `None`: nowhere.
    pub on_failed_webhook: Option<Uri>,
    /// How log lines are written to stderr.
    pub log_format: LogFormat,
    /// Where spans are exported over OTLP/gRPC (`http://host:port`); none means
    /// no export. Only accepted by builds with the `otlp` feature.
    pub otlp_endpoint: Option<String>,
    /// How long ended sagas stay in the journal before they are archived.
    pub retention: Retention,
    /// When finished sagas leave the sled journal's store for its history
    /// tier.
    pub history_after: HistoryAfter,
    /// Free bytes the journal leaves on its disk: it prepares no log segment
    /// that would take them, and does not start with less free.
    pub disk_reserve: u64,
    /// The tokens file callers authenticate with (`crate::auth`); `None`:
    /// every caller is anonymous and may do everything.
    pub auth_tokens: Option<PathBuf>,
    /// Serve on a non-loopback address without authentication or TLS.
    pub insecure_no_auth: bool,
    /// The PostgreSQL journal shared with other coordinators; `None`: the
    /// sled journal in `data_dir`.
    pub journal: Option<PgTarget>,
    /// This node's name in a shared journal; `None`: derived from the host
    /// name and the listen address ([`Config::node`]).
    pub node_id: Option<NodeId>,
    /// How long a node's lease lasts without renewal in a shared journal:
    /// after it, the other nodes take the node's sagas over.
    pub lease_ttl: Duration,
    /// The hosts participant endpoints may name; `None`: any host.
    pub participant_allow: Option<AllowList>,
    /// TLS on the listeners and towards participants; checked by
    /// [`Config::load`], turned into files to read by [`Config::server_config`].
    pub tls: TlsSettings,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: parse_listen(DEFAULT_LISTEN).expect("the default listen address parses"),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            sagas: None,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            default_timeout: DEFAULT_STEP_TIMEOUT,
            metrics_listen: None,
            on_failed_webhook: None,
            log_format: LogFormat::default(),
            otlp_endpoint: None,
            retention: Retention::Forever,
            history_after: HistoryAfter::default(),
            disk_reserve: crate::journal::store::wal::DEFAULT_DISK_RESERVE,
            auth_tokens: None,
            insecure_no_auth: false,
            journal: None,
            node_id: None,
            lease_ttl: crate::journal::postgres::LEASE_TTL,
            participant_allow: None,
            tls: TlsSettings::default(),
        }
    }
}

impl Config {
    /// Defaults, then each layer in order; a later layer's value wins.
    pub fn build(file: Option<Settings>, env: Settings, flags: Settings) -> Config {
        let mut config = Config::default();
        for layer in [file.unwrap_or_default(), env, flags] {
            config.apply(layer);
        }
        config
    }

    /// Reads the file (if any) and the environment, and builds with `flags` on top.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: Settings,
    ) -> Result<Config, ConfigError> {
        let file = file.map(Settings::from_file).transpose()?;
        let env = Settings::from_env(env)?;
        let config = Config::build(file, env, flags);
        config.tls.resolve(config.metrics_listen.is_some())?;
        Ok(config)
    }

    fn apply(&mut self, layer: Settings) {
        let Settings {
            listen,
            data_dir,
            sagas,
            max_payload_bytes,
            shutdown_grace,
            default_timeout,
            metrics_listen,
            on_failed_webhook,
            log_format,
            otlp_endpoint,
            retention,
            history_after,
            disk_reserve,
            auth_tokens,
            insecure_no_auth,
            journal,
            node_id,
            lease_ttl,
            participant_allow,
            tls,
        } = layer;
        self.tls.apply(tls);
        if let Some(v) = listen {
            self.listen = v;
        }
        if let Some(v) = data_dir {
            self.data_dir = v;
        }
        if let Some(v) = sagas {
            self.sagas = Some(v);
        }
        if let Some(v) = max_payload_bytes {
            self.max_payload_bytes = v;
        }
        if let Some(v) = shutdown_grace {
            self.shutdown_grace = v;
        }
        if let Some(v) = default_timeout {
            self.default_timeout = v;
        }
        if let Some(v) = metrics_listen {
            self.metrics_listen = Some(v);
        }
        if let Some(v) = on_failed_webhook {
            self.on_failed_webhook = Some(v);
        }
        if let Some(v) = log_format {
            self.log_format = v;
        }
        if let Some(v) = otlp_endpoint {
            self.otlp_endpoint = Some(v);
        }
        if let Some(v) = retention {
            self.retention = v;
        }
        if let Some(v) = disk_reserve {
            self.disk_reserve = v;
        }
        if let Some(v) = auth_tokens {
            self.auth_tokens = Some(v);
        }
        if let Some(v) = insecure_no_auth {
            self.insecure_no_auth = v;
        }
        if let Some(v) = journal {
            self.journal = Some(v);
        }
        if let Some(v) = node_id {
            self.node_id = Some(v);
        }
        if let Some(v) = lease_ttl {
            self.lease_ttl = v;
        }
        if let Some(v) = history_after {
            self.history_after = v;
        }
        if let Some(v) = participant_allow {
            self.participant_allow = Some(v);
        }
    }

    /// Whether the gRPC listener speaks TLS (`--tls-cert` and `--tls-key`;
    /// [`Config::load`] refuses one without the other).
    pub fn api_tls(&self) -> bool {
        self.tls.tls_cert.is_some() && self.tls.tls_key.is_some()
    }

    /// What the start would expose, for the safe-default check
    /// ([`Exposure::check`]: refused, or a warning to log).
    pub fn exposure(&self) -> Exposure {
        Exposure {
            listen: self.listen,
            auth: self.auth_tokens.is_some(),
            tls: self.api_tls(),
            insecure_no_auth: self.insecure_no_auth,
        }
    }

    /// This node's name in a shared journal: the configured one, or
    /// `HOSTNAME/LISTEN` (stable across restarts as long as both are; give
    /// `--node-id` when several nodes on one host listen on port 0).
    pub fn node(&self) -> NodeId {
        self.node_id.clone().unwrap_or_else(|| {
            NodeId::new(&format!("{}/{}", host_name(), self.listen)).unwrap_or_else(|_| {
                NodeId::new(&self.listen.to_string()).expect("an address is a node id")
            })
        })
    }

    /// The definitions directory to load: the configured one, or `./sagas` if it
    /// exists, or none (inline steps still work).
    pub fn sagas_dir(&self) -> Option<PathBuf> {
        self.sagas.clone().or_else(|| {
            let default = PathBuf::from(DEFAULT_SAGAS_DIR);
            default.is_dir().then_some(default)
        })
    }

    /// What [`crate::server::start`] needs; an error if the TLS settings do
    /// not go together (see [`TlsSettings::resolve`]).
    pub fn server_config(&self) -> Result<ServerConfig, ConfigError> {
        Ok(ServerConfig {
            listen: self.listen,
            data_dir: self.data_dir.clone(),
            engine: EngineConfig {
                defaults: StepDefaults {
                    timeout: self.default_timeout,
                    ..StepDefaults::default()
                },
                max_payload_bytes: self.max_payload_bytes,
                shutdown_grace: self.shutdown_grace,
                park_after: crate::engine::PARK_AFTER,
                // Decided by `server::start`, from `metrics_listen`.
                record_metrics: true,
                // Set by `server::start` once the listener is bound.
                own_address: None,
                participant_allow: self.participant_allow.clone(),
                cursor_patience: crate::engine::CURSOR_PATIENCE,
            },
            metrics_listen: self.metrics_listen,
            on_failed_webhook: self.on_failed_webhook.clone(),
            retention: self.retention.period(),
            history_after: self.history_after.period(),
            history_segment_min: crate::archive::mover::SEGMENT_SAGAS_MIN,
            disk_reserve: self.disk_reserve,
            auth_tokens: self.auth_tokens.clone(),
            reload_interval: crate::server::RELOAD_INTERVAL,
            postgres: self.journal.clone().map(|target| PgOptions {
                lease_ttl: self.lease_ttl,
                ..PgOptions::new(target, self.node(), self.listen.to_string())
            }),
            tls: self.tls.resolve(self.metrics_listen.is_some())?,
        })
    }
}

/// This machine's host name (`localhost` if it has none).
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer and its length match; gethostname NUL-terminates
    // within it (or truncates, which CStr::from_bytes_until_nul tolerates).
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let name = std::ffi::CStr::from_bytes_until_nul(&buf)
        .ok()
        .and_then(|c| c.to_str().ok())
        .filter(|n| ok && !n.is_empty());
    name.unwrap_or("localhost").to_string()
}

impl Settings {
    /// The `SAGAD_*` variables among `vars`. An empty variable counts as unset,
    /// so `SAGAD_SAGAS= sagad serve` means "not set" rather than "the empty path".
    pub fn from_env(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let vars: HashMap<String, String> = vars
            .into_iter()
            .filter(|(name, value)| {
                let name = name.as_str();
                (ENV_VARS.contains(&name) || tls::ENV_VARS.contains(&name)) && !value.is_empty()
            })
            .collect();
        let mut settings = Settings::default();
        let keys = KEYS.iter().chain(&tls::KEYS);
        for (key, var) in keys.zip(ENV_VARS.iter().chain(&tls::ENV_VARS)) {
            if let Some(value) = vars.get(*var) {
                settings.set(key, value, var, None)?;
            }
        }
        Ok(settings)
    }

    /// Reads a TOML file of settings: every key must be one of [`KEYS`].
    pub fn from_file(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Settings::from_toml(path, &text)
    }

    /// Parses the text of a settings file; `path` names it in errors and anchors
    /// its relative paths.
    pub fn from_toml(path: &Path, text: &str) -> Result<Settings, ConfigError> {
        let table: toml::Table = text.parse().map_err(|source| ConfigError::Syntax {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new(""));
        let mut settings = Settings::default();
        for (key, value) in &table {
            if key == tls::ORIGINS_KEY {
                settings.tls.participant_tls = Some(tls::origins_from_toml(path, base, value)?);
                continue;
            }
            if !KEYS.contains(&key.as_str()) && !tls::KEYS.contains(&key.as_str()) {
                return Err(ConfigError::UnknownKey {
                    path: path.to_path_buf(),
                    key: key.clone(),
                });
            }
            let origin = format!("{}: {key}", path.display());
            if key == "participant_allow" {
                settings.participant_allow = Some(allow_from_toml(value, &origin)?);
                continue;
            }
            // Integers may be written bare (1048576); everything else is a string.
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) if key == "max_payload_bytes" || key == "disk_reserve" => {
                    i.to_string()
                }
                toml::Value::Boolean(b) if key == "insecure_no_auth" => b.to_string(),
                other => {
                    return Err(ConfigError::BadValue {
                        origin,
                        value: other.to_string(),
                        why: format!("expected {}", expected(key)),
                    });
                }
            };
            settings.set(key, &text, &origin, Some(base))?;
        }
        Ok(settings)
    }

    /// Parses `text` as the value of `key`; `origin` names its source in errors.
    /// `base` anchors relative paths (a file's directory).
    fn set(
        &mut self,
        key: &str,
        text: &str,
        origin: &str,
        base: Option<&Path>,
    ) -> Result<(), ConfigError> {
        let bad = |why: String| ConfigError::BadValue {
            origin: origin.to_string(),
            // A journal URL may hold a password: never echo it.
            value: format!("{:?}", crate::journal::postgres::redacted(text)),
            why,
        };
        let path = || match base {
            Some(base) if Path::new(text).is_relative() => base.join(text),
            _ => PathBuf::from(text),
        };
        match key {
            "listen" => self.listen = Some(parse_listen(text).map_err(bad)?),
            "data_dir" => self.data_dir = Some(path()),
            "sagas" => self.sagas = Some(path()),
            "max_payload_bytes" => {
                self.max_payload_bytes = Some(parse_payload_bytes(text).map_err(bad)?)
            }
            "shutdown_grace" => self.shutdown_grace = Some(parse_duration(text).map_err(bad)?),
            "default_timeout" => {
                self.default_timeout = Some(parse_step_timeout(text).map_err(bad)?)
            }
            "metrics_listen" => self.metrics_listen = Some(parse_listen(text).map_err(bad)?),
            "on_failed_webhook" => {
                self.on_failed_webhook = Some(parse_webhook_url(text).map_err(bad)?)
            }
            "log_format" => self.log_format = Some(parse_log_format(text).map_err(bad)?),
            "otlp_endpoint" => self.otlp_endpoint = Some(parse_otlp_endpoint(text).map_err(bad)?),
            "retention" => self.retention = Some(parse_retention(text).map_err(bad)?),
            "history_after" => self.history_after = Some(parse_history_after(text).map_err(bad)?),
            "disk_reserve" => self.disk_reserve = Some(parse_bytes(text).map_err(bad)?),
            "auth_tokens" => self.auth_tokens = Some(path()),
            "insecure_no_auth" => self.insecure_no_auth = Some(parse_bool(text).map_err(bad)?),
            "journal" => self.journal = Some(PgTarget::parse(text).map_err(bad)?),
            "node_id" => self.node_id = Some(parse_node_id(text).map_err(bad)?),
            "lease_ttl" => self.lease_ttl = Some(parse_lease_ttl(text).map_err(bad)?),
            "participant_allow" => {
                self.participant_allow = Some(parse_participant_allow(text).map_err(bad)?)
            }
            tls_key if tls::KEYS.contains(&tls_key) => self.tls.set(tls_key, path()),
            other => unreachable!("set() is only called with KEYS, not {other:?}"), // faulty code
        }
        Ok(())
    }
}

/// What a key's value looks like, for error messages.
fn expected(key: &str) -> &'static str {
    match key {
        "listen" | "metrics_listen" => "a string \"host:port\"",
        "on_failed_webhook" => "a URL string \"http://host:port/path\"",
        "data_dir" | "sagas" => "a path string",
        key if tls::KEYS.contains(&key) => "a path string (a PEM file)",
        "max_payload_bytes" => "a positive integer (bytes)",
        "log_format" => "a string, \"text\" or \"json\"",
        "otlp_endpoint" => "a URL string like \"http://127.0.0.1:4317\"",
        "retention" => "a duration string like \"7d\" or \"36h\", or \"forever\"",
        "history_after" => "a duration string like \"10m\" or \"1h\", or \"never\"",
        "disk_reserve" => "a size like \"64MiB\" or \"1GiB\", or bytes",
        "auth_tokens" => "a path string",
        "insecure_no_auth" => "true or false",
        "journal" => "a URL string \"postgres://user@host:5432/db\"",
        "node_id" => "a string",
        "participant_allow" => "an array of strings like [\"10.0.0.0/8\", \"payments.internal\"]",
        _ => "a duration string like \"10s\" or \"250ms\"",
    }
}

/// A listen address: `host:port`, or `:port` for loopback. Port 0 picks a free one.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let full = if text.starts_with(':') {
        format!("127.0.0.1{text}")
    } else {
        text.to_string()
    };
    full.parse()
        .map_err(|_| format!("'{text}' is not host:port (e.g. 127.0.0.1:50051 or :0)"))
}

/// A webhook URL: `http://host[:port][/path]`; `https://` and other schemes are
/// refused, saying why (see `crate::webhook`).
pub fn parse_webhook_url(text: &str) -> Result<Uri, String> {
    crate::webhook::parse_url(text)
}

/// A payload limit in bytes: a positive integer.
pub fn parse_payload_bytes(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("must be greater than 0".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("'{text}' is not a positive integer (bytes)")),
    }
}

/// A size in bytes: a number, optionally followed by `KiB`, `MiB` or `GiB`
/// (`64MiB`); zero is allowed (no reserve).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "'{text}': unknown unit '{other}' (use B, KiB, MiB or GiB)"
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("'{text}' is not a size like 64MiB"))
}

/// A yes or no: `true`/`false` (also `1`/`0`, as environment variables say it).
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("'{text}' is not true or false")),
    }
}

/// `--participant-allow` entries as the environment gives them: one string,
/// split at commas (`10.0.0.0/8,payments.internal`).
pub fn parse_participant_allow(text: &str) -> Result<AllowList, String> {
    AllowList::parse(text.split(','))
}

/// One `--participant-allow` entry (the flag is repeated, or takes commas).
pub fn parse_allow_entry(text: &str) -> Result<AllowEntry, String> {
    text.parse()
}

/// The file's `participant_allow`: an array of strings, each one entry.
fn allow_from_toml(value: &toml::Value, origin: &str) -> Result<AllowList, ConfigError> {
    let bad = |value: String, why: String| ConfigError::BadValue {
        origin: origin.to_string(),
        value,
        why,
    };
    let items = value.as_array().ok_or_else(|| {
        bad(
            value.to_string(),
            format!("expected {}", expected("participant_allow")),
        )
    })?;
    let mut texts = Vec::with_capacity(items.len());
    for item in items {
        let text = item
            .as_str()
            .ok_or_else(|| bad(item.to_string(), "each entry must be a string".into()))?;
        texts.push(text);
    }
    AllowList::parse(texts).map_err(|why| bad(value.to_string(), why))
}

/// A node id: non-empty text without control characters.
pub fn parse_node_id(text: &str) -> Result<NodeId, String> {
    NodeId::new(text)
}

/// `--journal`'s value, refused naming the flag, with any password redacted
/// (clap would echo a value it refused whole).
pub fn journal_flag(text: &str) -> Result<PgTarget, ConfigError> {
    let mut settings = Settings::default();
    settings.set("journal", text, "--journal", None)?;
    Ok(settings.journal.expect("set by set()"))
}

/// A log format: `text` or `json`.
pub fn parse_log_format(text: &str) -> Result<LogFormat, String> {
    match text {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!("'{text}' is not a log format (text or json)")),
    }
}

/// An OTLP/gRPC collector endpoint, `http://host:port`. Refused by builds
/// without the `otlp` feature, so a configured export is never silently off.
pub fn parse_otlp_endpoint(text: &str) -> Result<String, String> {
    if !cfg!(feature = "otlp") {
        return Err(
            "this sagad was built without the otlp feature; rebuild with --features otlp".into(),
        );
    }
    let uri: http::Uri = text
        .parse()
        .map_err(|_| format!("'{text}' is not a URL like http://127.0.0.1:4317"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(_)) => Ok(text.to_string()),
        (Some("https"), _) => Err(format!(
            "'{text}': TLS to the collector is not built in; use an http:// endpoint (a local collector or agent)"
        )),
        _ => Err(format!(
            "'{text}' is not a URL like http://127.0.0.1:4317 (scheme http, host and port)"
        )),
    }
}

/// A retention period: a duration greater than zero (`7d`, `36h`), or `forever`.
pub fn parse_retention(text: &str) -> Result<Retention, String> {
    let period = positive_or(
        text,
        RETENTION_FOREVER,
        "7d or 36h",
        "to keep sagas forever",
    )?;
    Ok(period.map_or(Retention::Forever, Retention::For))
}

/// A duration greater than zero, or the word `none` for no period at all
/// (`None`); `examples` and `none_means` are for the messages.
fn positive_or(
    text: &str,
    none: &str,
    examples: &str,
    none_means: &str,
) -> Result<Option<Duration>, String> {
    if text.trim() == none {
        return Ok(None);
    }
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err(format!(
            "must be greater than 0 (use \"{none}\" {none_means})"
        )),
        Ok(d) => Ok(Some(d)),
        Err(e) => Err(format!(
            "'{text}' is not a duration like {examples}, nor \"{none}\" ({e})"
        )),
    }
}

/// When finished sagas move to the history tier: a duration greater than
/// zero (`10m`, `1h`), or `never`.
pub fn parse_history_after(text: &str) -> Result<HistoryAfter, String> {
    let period = positive_or(
        text,
        HISTORY_NEVER,
        "10m or 1h",
        "to keep finished sagas in the store",
    )?;
    Ok(period.map_or(HistoryAfter::Never, HistoryAfter::After))
}

/// A step call timeout: a duration within the bounds a step's own timeout
/// keeps (`saga::definition::TIMEOUT_MIN` to `TIMEOUT_MAX`).
pub fn parse_step_timeout(text: &str) -> Result<Duration, String> {
    let timeout = parse_duration(text)?;
    if definition::timeout_in_bounds(timeout) {
        Ok(timeout)
    } else {
        Err(format!(
            "must be at least {:?} and at most {} (got {timeout:?})",
            definition::TIMEOUT_MIN,
            humantime::format_duration(definition::TIMEOUT_MAX)
        ))
    }
}

/// A lease's length: at least a second (renewed every third of it, a
/// shorter one would be lost to a busy database's pauses) and at most an hour.
pub fn parse_lease_ttl(text: &str) -> Result<Duration, String> {
    let ttl = parse_duration(text)?;
    if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&ttl) {
        return Err(format!("'{text}' is not between 1s and 1h"));
    }
    Ok(ttl)
}

/// A duration such as `10s`, `250ms` or `1m30s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("'{text}' is not a duration like 10s or 250ms ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_the_documented_table() {
        let config = Config::build(None, Settings::default(), Settings::default());
        assert_eq!(config.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(config.data_dir, PathBuf::from("./sagad-data"));
        assert_eq!(config.max_payload_bytes, 1_048_576);
        assert_eq!(config.shutdown_grace, Duration::from_secs(10));
        assert_eq!(config.default_timeout, Duration::from_secs(10));
        assert_eq!(config.retention, Retention::Forever);
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.otlp_endpoint, None);
    }

    #[test]
    fn log_format_comes_from_every_layer() {
        let file = Settings::from_toml(Path::new("s.toml"), "log_format = \"json\"").unwrap();
        assert_eq!(file.log_format, Some(LogFormat::Json));
        let from_env = Settings::from_env(env(&[("SAGAD_LOG_FORMAT", "text")])).unwrap();
        let config = Config::build(Some(file.clone()), from_env, Settings::default());
        assert_eq!(config.log_format, LogFormat::Text);
        let config = Config::build(Some(file), Settings::default(), Settings::default());
        assert_eq!(config.log_format, LogFormat::Json);
        let err = Settings::from_env(env(&[("SAGAD_LOG_FORMAT", "xml")])).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("SAGAD_LOG_FORMAT"), "{text}");
        assert!(text.contains("text or json"), "{text}");
    }

    #[test]
    fn otlp_endpoint_needs_the_feature_and_an_http_url() {
        let result = parse_otlp_endpoint("http://127.0.0.1:4317");
        if cfg!(feature = "otlp") {
            assert_eq!(result.unwrap(), "http://127.0.0.1:4317");
            assert!(
                parse_otlp_endpoint("https://collector:4317")
                    .unwrap_err()
                    .contains("TLS")
            );
            assert!(parse_otlp_endpoint("collector:4317").is_err());
            assert!(parse_otlp_endpoint("not a url").is_err());
        } else {
            assert!(result.unwrap_err().contains("--features otlp"));
            let err = Settings::from_toml(
                Path::new("s.toml"),
                "otlp_endpoint = \"http://127.0.0.1:4317\"",
            )
            .unwrap_err();
            assert!(err.to_string().contains("s.toml: otlp_endpoint"), "{err}");
        }
    }

    #[test]
    fn history_after_is_a_positive_duration_or_never() {
        assert_eq!(
            parse_history_after("1h"),
            Ok(HistoryAfter::After(Duration::from_secs(3600)))
        );
        assert_eq!(parse_history_after("never"), Ok(HistoryAfter::Never));
        assert!(parse_history_after("0s").unwrap_err().contains("never"));
        assert!(parse_history_after("soon").unwrap_err().contains("'soon'"));
        let err = Settings::from_toml(Path::new("s.toml"), "history_after = \"soon\"").unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("s.toml") && message.contains("history_after"),
            "{message}"
        );
        assert_eq!(HistoryAfter::Never.period(), None);
    }

    #[test]
    fn retention_is_a_positive_duration_or_forever() {
        assert_eq!(
            parse_retention("7d"),
            Ok(Retention::For(Duration::from_secs(7 * 86_400)))
        );
        assert_eq!(
            parse_retention("36h").unwrap().period(),
            Some(Duration::from_secs(36 * 3600))
        );
        assert_eq!(parse_retention("forever"), Ok(Retention::Forever));
        assert!(
            parse_retention("0s")
                .unwrap_err()
                .contains("greater than 0")
        );
        assert!(parse_retention("abc").unwrap_err().contains("'abc'"));
        let err = Settings::from_env(env(&[("SAGAD_RETENTION", "0d")])).unwrap_err();
        assert!(err.to_string().starts_with("SAGAD_RETENTION"), "{err}");
        let file = Settings::from_toml(Path::new("s.toml"), "retention = \"2d\"").unwrap();
        assert_eq!(
            file.retention,
            Some(Retention::For(Duration::from_secs(2 * 86_400)))
        );
    }

    #[test]
    fn auth_settings_come_from_every_layer_and_decide_exposure() {
        let file = Settings::from_toml(
            Path::new("/etc/sagad/sagad.toml"),
            "auth_tokens = \"tokens\"\ninsecure_no_auth = true\nlisten = \"0.0.0.0:1\"",
        )
        .unwrap();
        assert_eq!(file.auth_tokens, Some(PathBuf::from("/etc/sagad/tokens")));
        assert_eq!(file.insecure_no_auth, Some(true));
        let from_env = Settings::from_env(env(&[("SAGAD_INSECURE_NO_AUTH", "0")])).unwrap();
        let config = Config::build(Some(file.clone()), from_env, Settings::default());
        assert!(!config.insecure_no_auth);
        // Authenticated, but tokens would cross the network in clear text.
        assert!(config.exposure().check().is_err());
        let config = Config::build(Some(file), Settings::default(), Settings::default());
        assert!(config.exposure().check().unwrap().is_some());
        assert!(Config::default().exposure().check().unwrap().is_none());
        let err = Settings::from_env(env(&[("SAGAD_INSECURE_NO_AUTH", "yes")])).unwrap_err();
        assert!(
            err.to_string().starts_with("SAGAD_INSECURE_NO_AUTH"),
            "{err}"
        );
    }

    #[test]
    fn the_journal_and_node_id_come_from_every_layer() {
        let file = Settings::from_toml(
            Path::new("s.toml"),
            "journal = \"postgres://sagad@db1:5432/sagad\"\nnode_id = \"from-file\"",
        )
        .unwrap();
        let from_env = Settings::from_env(env(&[(
            "SAGAD_JOURNAL",
            "host=db1,db2 user=sagad dbname=sagad target_session_attrs=read-write",
        )]))
        .unwrap();
        let config = Config::build(Some(file.clone()), from_env, Settings::default());
        assert_eq!(
            config.journal.as_ref().unwrap().to_string(),
            "postgres://sagad@db1,db2/sagad"
        );
        assert_eq!(config.node().as_str(), "from-file");
        let server = config
            .server_config()
            .unwrap()
            .postgres
            .expect("a PostgreSQL journal");
        assert_eq!(server.node.as_str(), "from-file");
        assert_eq!(server.addr, "127.0.0.1:50051");

        // Without one: sled, and a node id from the host and the address.
        let config = Config::build(None, Settings::default(), Settings::default());
        assert!(config.server_config().unwrap().postgres.is_none());
        assert!(
            config.node().as_str().ends_with("/127.0.0.1:50051"),
            "{}",
            config.node()
        );
    }

    #[test]
    fn a_bad_journal_url_is_refused_without_echoing_its_password() {
        let err = journal_flag("postgres://sagad:hunter2@db:notaport/sagad").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("--journal"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        let err = Settings::from_env(env(&[("SAGAD_JOURNAL", "/var/lib/sagad")])).unwrap_err();
        assert!(err.to_string().contains("postgres://"), "{err}");
    }

    #[test]
    fn participant_allow_comes_from_every_layer_and_names_a_bad_entry() {
        let file = Settings::from_toml(
            Path::new("s.toml"),
            "participant_allow = [\"10.0.0.0/8\", \"payments.internal\", \"*.svc.cluster.local\"]",
        )
        .unwrap();
        let shown = |config: &Config| -> Vec<String> {
            let list = config.participant_allow.as_ref().expect("a list");
            list.entries().iter().map(ToString::to_string).collect()
        };
        let config = Config::build(Some(file.clone()), Settings::default(), Settings::default());
        assert_eq!(
            shown(&config),
            ["10.0.0.0/8", "payments.internal", "*.svc.cluster.local"]
        );
        // A later layer replaces the list whole.
        let from_env =
            Settings::from_env(env(&[("SAGAD_PARTICIPANT_ALLOW", "127.0.0.1/32, ::1")])).unwrap();
        let config = Config::build(Some(file), from_env, Settings::default());
        // A /32 is shown as the address it is.
        assert_eq!(shown(&config), ["127.0.0.1", "::1"]);
        let engine = config.server_config().unwrap().engine;
        assert_eq!(engine.participant_allow, config.participant_allow);
        // Without the setting: any host.
        let config = Config::build(None, Settings::default(), Settings::default());
        assert_eq!(config.participant_allow, None);

        let err = Settings::from_env(env(&[(
            "SAGAD_PARTICIPANT_ALLOW",
            "10.0.0.0/8,10.0.0.0/40",
        )]))
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("SAGAD_PARTICIPANT_ALLOW"), "{err}");
        assert!(err.contains("'10.0.0.0/40' is not a CIDR"), "{err}");
        for (text, why) in [
            (
                "participant_allow = [\"fd00::/129\"]",
                "'fd00::/129' is not a CIDR",
            ),
            ("participant_allow = []", "allow no participant host"),
            ("participant_allow = \"10.0.0.0/8\"", "an array of strings"),
            ("participant_allow = [8]", "must be a string"),
        ] {
            let err = Settings::from_toml(Path::new("s.toml"), text)
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("s.toml: participant_allow"),
                "{text}: {err}"
            );
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn colon_port_means_loopback() {
        assert_eq!(parse_listen(":0").unwrap().to_string(), "127.0.0.1:0");
        assert!(parse_listen("nonsense").unwrap_err().contains("nonsense"));
    }

    #[test]
    fn file_paths_are_relative_to_the_file() {
        let settings = Settings::from_toml(
            Path::new("/etc/sagad/sagad.toml"),
            "data_dir = \"data\"\nsagas = \"/abs\"",
        )
        .unwrap();
        assert_eq!(settings.data_dir, Some(PathBuf::from("/etc/sagad/data")));
        assert_eq!(settings.sagas, Some(PathBuf::from("/abs")));
    }

    #[test]
    fn wrong_types_in_the_file_name_the_key() {
        let err = Settings::from_toml(Path::new("s.toml"), "shutdown_grace = 10").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("s.toml: shutdown_grace"), "{text}");
        assert!(text.contains("duration"), "{text}");
    }

    #[test]
    fn empty_and_foreign_env_vars_are_ignored() {
        let settings = Settings::from_env(env(&[
            ("SAGAD_SAGAS", ""),
            ("SAGAD_LOG", "debug"),
            ("SAGAD_ADDR", "x"),
        ]))
        .unwrap();
        assert_eq!(settings, Settings::default());
    }

    #[test]
    fn zero_payload_limit_is_refused_naming_the_variable() {
        let err = Settings::from_env(env(&[("SAGAD_MAX_PAYLOAD_BYTES", "0")])).unwrap_err();
        assert!(
            err.to_string().starts_with("SAGAD_MAX_PAYLOAD_BYTES"),
            "{err}"
        );
    }
}
