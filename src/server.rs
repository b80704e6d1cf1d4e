//! Wiring a whole coordinator: journal, engine, gRPC services, recovery, shutdown.
//!
//! [`start`] opens the journal (the sled journal in the data directory,
//! refusing one another process owns; or, with `postgres`, the shared
//! PostgreSQL journal, joining it as this node),
//! binds the listener and starts serving at once, with health `NOT_SERVING` and
//! the Coordinator answering `UNAVAILABLE` until recovery has resumed every
//! unfinished saga; then health turns `SERVING`, and follows the journal from
//! there: `NOT_SERVING` while it refuses writes (a full disk), and in
//! cluster mode while the node does not hold its lease (it lapsed, or the
//! node was fenced); `SERVING` again once it takes them (and the lease is
//! renewed, or the node joined again).
//!
//! With a retention period, the archiver (`crate::archive`) starts once
//! recovery is done; with the sled journal and `history_after`, so does the
//! mover (`crate::archive::mover`), which takes finished sagas out of sled
//! into the history tier.
//!
//! Stopping (a signal in `sagad serve`, [`Server::stop`] in tests) follows one
//! order: stop accepting connections; stop the archiver after its current
//! batch and the mover after its current segment; stop starting new calls while in-flight ones get the grace period;
//! journal their outcomes; flush and close the journal.
//!
//! Optional parts: with `metrics_listen`, `GET /metrics` is served on its own
//! listener (bound before `start` returns, so a bad address fails the start);
//! with `on_failed_webhook`, every saga that becomes FAILED is posted there, and
//! after recovery the FAILED sagas whose notice was never acknowledged are
//! posted again (`crate::webhook`; with a PostgreSQL journal, only this node's,
//! the acknowledgements kept in the database for every node).
//!
//! With a retention period, the archiver runs on every node given one; with a
//! PostgreSQL journal several nodes share, only the holder of the archiver
//! duty archives (`crate::archive::archiver`).
//!
//! Authentication (`crate::auth`): the Coordinator is always served behind
//! the [`Authorize`] layer; with `auth_tokens` it checks every call against
//! that file, and with a client CA it maps client certificates to roles.
//!
//! TLS (`crate::tls`): with `tls.api`, the gRPC listener speaks only TLS (and
//! with a client CA, only to clients with a certificate it issued); with
//! `tls.metrics`, so does `/metrics`.
//!
//! The tokens file and the certificate files are read before anything is
//! bound (a bad one fails the start), then re-read when they change (checked
//! every `reload_interval`) and on demand through [`Server::reload_hooks`]
//! (the binary's SIGHUP). Health and reflection are served without
//! authentication.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use http::Uri;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::{
    server::NamedService,
    transport::server::{Router, TcpIncoming},
};
use tonic_health::{ServingStatus, server::HealthReporter};
use tower::layer::util::{Identity, Stack};

use crate::{
    Error, Result,
    api::CoordinatorApi,
    archive::{self, Archiver, Mover},
    auth::{Authenticator, Authorize, TokensFile},
    engine::{Engine, EngineConfig, recovery},
    journal::{
        Journal, JournalError, PgJournal, SledJournal,
        postgres::PgOptions,
        store::{DirLock, WalOptions},
    },
    metrics,
    participant::Callers,
    proto::{self, v1::coordinator_server::CoordinatorServer},
    reload::ReloadHooks,
    saga::Definition,
    tls::{ClientTls, LoadedTls, ServerTls, TlsConfig, TlsIncoming},
    webhook::Notifier,
};

/// How often health asks the journal whether it can write (and, in cluster
/// mode, whether the node holds its lease), between the failed writes it
/// hears of at once.
const HEALTH_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);
/// How often the files that can be reloaded (the tokens file, TLS
/// certificates) are checked for changes.
pub const RELOAD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Where and how to serve.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Where the journal lives (and the webhook's ledger of acknowledged notices,
    /// and, with a retention, `archive/`).
    pub data_dir: PathBuf,
    pub engine: EngineConfig,
    /// Where to serve `GET /metrics`; port 0 picks a free one. `None`: not served.
    pub metrics_listen: Option<SocketAddr>,
    /// Where to POST a notice for each saga that becomes FAILED.
    pub on_failed_webhook: Option<Uri>,
    /// How long ended sagas stay in the journal; `None` keeps them forever.
    /// With a period, an archiver (`crate::archive`) runs once recovery is done.
    pub retention: Option<std::time::Duration>,
    /// How long after their end finished sagas move from the sled journal's
    /// store to its history tier (`crate::archive::mover`); `None` keeps them
    /// in the store. Nothing moves with a PostgreSQL journal.
    pub history_after: Option<std::time::Duration>,
    /// Fewest due sagas the mover makes a segment of
    /// ([`archive::mover::SEGMENT_SAGAS_MIN`] unless a test needs fewer; not
    /// an operator setting).
    pub history_segment_min: usize,
    /// Free bytes the journal leaves on its disk (`WalOptions::disk_reserve`).
    pub disk_reserve: u64,
    /// The tokens file callers authenticate with; `None`: every caller is
    /// anonymous and may do everything (`crate::auth`).
    pub auth_tokens: Option<PathBuf>,
    /// How often reloadable files are checked for changes ([`RELOAD_INTERVAL`]
    /// unless a test needs it sooner; not an operator setting).
    pub reload_interval: std::time::Duration,
    /// The PostgreSQL journal to keep sagas in, shared with other nodes;
    /// `None`: the sled journal in `data_dir`.
    pub postgres: Option<PgOptions>,
    /// TLS on the listeners and towards participants; the default is none.
    pub tls: TlsConfig,
}

/// A running coordinator.
pub struct Server {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    engine: Engine,
    shutdown: CancellationToken,
    ready_rx: watch::Receiver<bool>,
    reload: ReloadHooks,
    task: JoinHandle<Result<()>>,
    /// The data directory's lock when the journal is elsewhere (a sled
    /// journal holds its own): kept for the server's whole life.
    _dir_lock: Option<DirLock>,
}

/// Opens the journal, binds, and starts serving; recovery runs in the background
/// (see the module docs). Errors here are startup errors: locked or unreadable
/// data directory, unreachable database, address in use.
pub async fn start(config: ServerConfig, definitions: Vec<Definition>) -> Result<Server> {
    crate::private::warn_if_open(&config.data_dir);
    if let Some(options) = &config.postgres {
        // Before the join: a refused start must not fence a live node.
        let dir = config.data_dir.clone();
        let lock = tokio::task::spawn_blocking(move || DirLock::take(&dir))
            .await
            .map_err(|e| Error::Unavailable(format!("data directory lock task failed: {e}")))?
            .map_err(JournalError::Open)?;
        let journal = PgJournal::open(options.clone()).await?;
        let mut server = start_with_journal(config, Arc::new(journal), definitions).await?;
        server._dir_lock = Some(lock);
        return Ok(server);
    }
    let dir = config.data_dir.clone();
    let options = WalOptions {
        disk_reserve: config.disk_reserve,
        ..WalOptions::default()
    };
    // Opening sled reads its files: keep that off the async workers.
    let journal = tokio::task::spawn_blocking(move || SledJournal::open_with(&dir, options))
        .await
        .map_err(|e| Error::Unavailable(format!("journal open task failed: {e}")))??;
    start_with_journal(config, Arc::new(journal), definitions).await
}

/// As [`start`], over a journal the caller opened (tests inject faulty stores
/// this way); `config.data_dir` holds only the webhook's ledger and the archive,
/// when they are on.
pub async fn start_with_journal(
    config: ServerConfig,
    journal: Arc<dyn Journal>,
    definitions: Vec<Definition>,
) -> Result<Server> {
    let upkeep = Upkeep {
        archiver: config
            .retention
            .map(|r| Archiver::new(journal.clone(), archive::archive_dir(&config.data_dir), r)),
        mover: config
            .history_after
            .filter(|_| config.postgres.is_none())
            .map(|after| {
                Mover::new(journal.clone(), after).with_at_least(config.history_segment_min)
            }),
    };
    let reload = ReloadHooks::default();
    let auth = authenticator(&config, &reload).await?;
    let tls = load_tls(&config.tls).await?;
    for part in &tls.reloadables {
        reload.register(part.clone());
    }
    let (listener, addr) = bind(config.listen).await?;
    // Port 0 is resolved now: the roster shows where this node really serves.
    journal.advertise(&addr.to_string()).await?;
    let engine = start_engine(&config, journal, definitions, addr, &tls.participants).await?;
    let shutdown = CancellationToken::new();
    let (metrics_listener, metrics_addr) = bind_metrics(config.metrics_listen).await?;
    let notifier = open_notifier(&config, &engine, &tls.participants, &shutdown).await?;
    let ready = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = watch::channel(false);
    let (health, router) = grpc_services(&config, &engine, &ready, auth).await?;
    let incoming = match tls.api {
        Some(api) => Incoming::Tls(TlsIncoming::new(listener, api)),
        // Nagle must be turned off on the incoming stream itself: the server builder's
        // tcp_nodelay is ignored by serve_with_incoming (64 concurrent calls on one
        // connection reached 26–30k calls/s with it on, against 42–51k with it off).
        None => Incoming::Plain(TcpIncoming::from(listener).with_nodelay(Some(true))),
    };
    let metrics = metrics_listener.map(|listener| (listener, tls.metrics));
    let serving = Serving {
        engine: engine.clone(),
        shutdown: shutdown.clone(),
        health,
        ready,
        ready_tx,
        notifier,
    };
    let reloading = reload
        .clone()
        .watch(config.reload_interval, shutdown.clone());
    let task = tokio::spawn(serving.run(router, incoming, metrics, upkeep, reloading));
    Ok(Server {
        addr,
        metrics_addr,
        engine,
        shutdown,
        ready_rx,
        reload,
        task,
        _dir_lock: None,
    })
}

/// How callers are checked: against the tokens file, read now (off the async
/// workers) and registered for reloads; or not at all.
async fn authenticator(config: &ServerConfig, reload: &ReloadHooks) -> Result<Arc<Authenticator>> {
    let Some(path) = config.auth_tokens.clone() else {
        return Ok(Arc::new(Authenticator::Open));
    };
    let tokens = tokio::task::spawn_blocking(move || TokensFile::open(&path))
        .await
        .map_err(|e| Error::Unavailable(format!("tokens file read task failed: {e}")))??;
    let tokens = Arc::new(tokens);
    tracing::info!(
        file = %tokens.path().display(),
        "authentication on: {}",
        tokens.current().describe()
    );
    reload.register(tokens.clone());
    Ok(Arc::new(Authenticator::Tokens(tokens)))
}

/// Reads every certificate file, off the async workers.
async fn load_tls(config: &TlsConfig) -> Result<LoadedTls> {
    let config = config.clone();
    let loaded = tokio::task::spawn_blocking(move || config.load())
        .await
        .map_err(|e| Error::Unavailable(format!("TLS load task failed: {e}")))??;
    Ok(loaded)
}

/// The gRPC listener's connections: plain TCP, or TLS over it.
enum Incoming {
    Plain(TcpIncoming),
    Tls(TlsIncoming),
}

/// The engine over `journal`, calling participants over gRPC or HTTP, recording
/// metrics only when they are served, refusing participants at its own
/// address, and connecting only where the allow-list (if any) allows.
async fn start_engine(
    config: &ServerConfig,
    journal: Arc<dyn Journal>,
    definitions: Vec<Definition>,
    own_address: SocketAddr,
    tls: &ClientTls,
) -> Result<Engine> {
    let caller = Arc::new(Callers::new(
        config.engine.max_payload_bytes,
        tls.clone(),
        config.engine.participant_allow.clone(),
    ));
    let engine_config = EngineConfig {
        record_metrics: config.metrics_listen.is_some(),
        own_address: Some(own_address),
        ..config.engine.clone()
    };
    Engine::new(journal, caller, definitions, engine_config).await
}

/// Binds the gRPC listener; port 0 picks a free port, so the bound address is
/// returned too.
async fn bind(listen: SocketAddr) -> Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Io {
            what: format!("cannot listen on {listen}"),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Io {
        what: "cannot read the bound address".into(),
        source,
    })?;
    Ok((listener, addr))
}

/// Binds the `/metrics` listener, when one is asked for.
async fn bind_metrics(
    listen: Option<SocketAddr>,
) -> Result<(Option<TcpListener>, Option<SocketAddr>)> {
    let Some(at) = listen else {
        return Ok((None, None));
    };
    let listener = metrics::http::bind(at).await?;
    let addr = listener.local_addr().map_err(|source| Error::Io {
        what: "cannot read the metrics address".into(),
        source,
    })?;
    Ok((Some(listener), Some(addr)))
}

/// Opens the on-failed webhook's notifier, when one is configured, and tells
/// the engine to use it.
async fn open_notifier(
    config: &ServerConfig,
    engine: &Engine,
    tls: &ClientTls,
    shutdown: &CancellationToken,
) -> Result<Option<Notifier>> {
    let Some(url) = &config.on_failed_webhook else {
        return Ok(None);
    };
    // A journal several nodes share keeps the acknowledgements for all of
    // them; with sled, the ledger file in the data directory does.
    let notifier = Notifier::open(
        url.clone(),
        tls,
        &config.data_dir,
        engine.journal().notices(),
        engine.metrics().clone(),
        shutdown.clone(),
    )
    .await?;
    engine.notify_failed_to(notifier.clone());
    Ok(Some(notifier))
}

/// Calls (and streams: watches, subscriptions) one connection may have open
/// at once; a client asking for more waits for one to end (HTTP/2's own
/// limit, which clients obey). Each open stream holds a task and a buffer
/// here: one connection must not hold unboundedly many.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 1000;

/// How every gRPC response passes on its way out (`api::oversized_as_payload`).
type Remap = fn(http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body>;
/// The gRPC services, behind that.
type GrpcRouter = Router<Stack<tower::util::MapResponseLayer<Remap>, Identity>>;

/// The gRPC services: health (NOT_SERVING until recovery is done), reflection
/// (v1 and v1alpha),
/// and the Coordinator, which answers `UNAVAILABLE` until `ready` is set.
async fn grpc_services(
    config: &ServerConfig,
    engine: &Engine,
    ready: &Arc<AtomicBool>,
    auth: Arc<Authenticator>,
) -> Result<(HealthReporter, GrpcRouter)> {
    let (health, health_service) = tonic_health::server::health_reporter();
    report_health(&health, ServingStatus::NotServing).await;
    // Both versions of reflection: grpcurl asks v1, while Python's
    // grpcio-reflection and other older clients still ask only v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let refused =
        |e: tonic_reflection::server::Error| Error::Unavailable(format!("reflection service: {e}"));
    let reflection_v1 = reflection().build_v1().map_err(refused)?;
    let reflection_v1alpha = reflection().build_v1alpha().map_err(refused)?;
    let max_request = config.engine.max_payload_bytes + crate::api::REQUEST_OVERHEAD_BYTES;
    let coordinator = CoordinatorServer::new(CoordinatorApi::new(engine.clone(), ready.clone()))
        .max_decoding_message_size(max_request)
        .max_encoding_message_size(usize::MAX);
    // Health and reflection stay open: probes and `grpcurl list` need no token.
    let coordinator = Authorize::new(coordinator, auth);
    let router = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .layer(tower::util::MapResponseLayer::new(
            crate::api::oversized_as_payload as Remap,
        ))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(coordinator);
    Ok((health, router))
}

/// Reports `status` for the Coordinator and for the server as a whole (the
/// empty service name), the two that health checks ask about.
async fn report_health(health: &HealthReporter, status: ServingStatus) {
    health
        .set_service_status(
            <CoordinatorServer<CoordinatorApi> as NamedService>::NAME,
            status,
        )
        .await;
    health.set_service_status("", status).await;
}

/// Serves `GET /metrics` on `listener` (over TLS with one) until shutdown;
/// nothing without a listener.
async fn serve_metrics(
    listener: Option<(TcpListener, Option<ServerTls>)>,
    engine: &Engine,
    shutdown: &CancellationToken,
) -> Result<()> {
    let Some((listener, tls)) = listener else {
        return Ok(());
    };
    let render_engine = engine.clone();
    let render: metrics::http::Render = Arc::new(move || render_engine.render_metrics());
    match tls {
        Some(tls) => {
            let listener = TlsIncoming::new(listener, tls);
            metrics::http::serve(listener, render, shutdown.clone()).await
        }
        None => metrics::http::serve(listener, render, shutdown.clone()).await,
    }
}

/// The background work that starts once recovery is done and finishes its
/// current step before the journal closes.
struct Upkeep {
    archiver: Option<Archiver>,
    mover: Option<Mover>,
}

/// What the server task holds while it serves: the parts recovery and the stop
/// act on.
struct Serving {
    engine: Engine,
    /// Cancelled to stop (a signal, [`Server::stop`], or a failed recovery).
    shutdown: CancellationToken,
    /// What health checks are told: NOT_SERVING until recovery is done, while
    /// the journal refuses writes, and once the stop begins.
    health: HealthReporter,
    /// Read by the Coordinator on every call; set once recovery is done.
    ready: Arc<AtomicBool>,
    /// Tells [`Server::ready`] the same.
    ready_tx: watch::Sender<bool>,
    /// The on-failed webhook, when configured: redelivers after recovery,
    /// finishes after the engine stopped.
    notifier: Option<Notifier>,
}

impl Serving {
    /// Serves gRPC (and metrics) while recovery runs, until shutdown; then
    /// stops in order (see the module docs).
    async fn run(
        self,
        router: GrpcRouter,
        incoming: Incoming,
        metrics_listener: Option<(TcpListener, Option<ServerTls>)>,
        upkeep: Upkeep,
        reloading: impl std::future::Future<Output = ()>,
    ) -> Result<()> {
        let stopping = self.shutdown.clone().cancelled_owned();
        let serve = async {
            match incoming {
                Incoming::Plain(i) => router.serve_with_incoming_shutdown(i, stopping).await,
                Incoming::Tls(i) => router.serve_with_incoming_shutdown(i, stopping).await,
            }
        };
        let serve_metrics = serve_metrics(metrics_listener, &self.engine, &self.shutdown);
        let (served, metrics_served, stopped, ()) = tokio::join!(
            serve,
            serve_metrics,
            self.recover_then_stop(upkeep),
            reloading
        );
        served.map_err(|e| Error::Unavailable(format!("gRPC server failed: {e}")))?;
        if let Err(e) = metrics_served {
            tracing::error!(error = %e, "the metrics endpoint failed");
        }
        stopped
    }

    /// Recovers every unfinished saga, opens for business, and once shutdown
    /// starts, stops. A failed recovery stops the server at once.
    async fn recover_then_stop(&self, upkeep: Upkeep) -> Result<()> {
        let mut upkeeping = Vec::new();
        tokio::select! {
            result = recovery::recover(&self.engine) => match result {
                Ok(_) => upkeeping = self.open(upkeep).await,
                Err(e) => {
                    tracing::error!(error = %e, "recovery failed; stopping");
                    self.shutdown.cancel();
                    let _ = self.engine.shutdown().await;
                    return Err(e);
                }
            },
            _ = self.shutdown.cancelled() => {}
        }
        if self.ready.load(Ordering::Acquire) {
            tokio::select! {
                () = self.follow_journal() => {}
                _ = self.shutdown.cancelled() => {}
            }
        }
        self.shutdown.cancelled().await;
        self.stop(upkeeping).await
    }

    /// While serving, health follows the journal: NOT_SERVING while it refuses
    /// writes (so load balancers send new work elsewhere), SERVING again once
    /// it takes them. A failed write is reported at once; a store that fails
    /// everything (seen by reads and checkpoints, not by the writer) within
    /// [`HEALTH_RECHECK`]. In cluster mode, also NOT_SERVING while this node
    /// does not hold its lease ([`Journal::cluster`]): a fence is reported at
    /// once (it is a write failure too), a lease that ran out while nothing
    /// was written within [`HEALTH_RECHECK`] of its end; a re-join at once,
    /// a renewal within the recheck. Returns only if the journal's writer is
    /// gone.
    async fn follow_journal(&self) {
        let journal = self.engine.journal();
        let mut failures = journal.write_failures();
        let mut reported = ServingStatus::Serving;
        loop {
            failures.borrow_and_update();
            let lapsed = journal.cluster().is_some_and(|c| !c.lease_held);
            let status = match journal.write_failure() {
                Some(_) => ServingStatus::NotServing,
                None if lapsed => ServingStatus::NotServing,
                None => ServingStatus::Serving,
            };
            if status != reported {
                if lapsed {
                    tracing::warn!(
                        "this node does not hold its lease in the shared journal: health is NOT_SERVING until it is renewed"
                    );
                } else if status == ServingStatus::Serving {
                    tracing::info!("health is SERVING again");
                }
                report_health(&self.health, status).await;
                reported = status;
            }
            tokio::select! {
                changed = failures.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(HEALTH_RECHECK) => {}
            }
        }
    }

    /// After recovery: posts again the FAILED notices never acknowledged,
    /// starts the archiver and the mover, and reports SERVING. Returns their
    /// tasks.
    async fn open(&self, upkeep: Upkeep) -> Vec<JoinHandle<()>> {
        if let Some(notifier) = &self.notifier {
            notifier.redeliver_in_background(self.engine.journal().clone());
        }
        let upkeeping = [
            upkeep
                .archiver
                .map(|a| a.spawn(self.shutdown.child_token())),
            upkeep.mover.map(|m| m.spawn(self.shutdown.child_token())),
        ]
        .into_iter()
        .flatten()
        .collect();
        self.ready.store(true, Ordering::Release);
        report_health(&self.health, ServingStatus::Serving).await;
        let _ = self.ready_tx.send(true);
        upkeeping
    }

    /// The stop, once shutdown started: the archiver finishes the removals of
    /// its batch (and the mover those of its segment) before the journal
    /// closes, health turns NOT_SERVING, the engine stops (in-flight calls get
    /// their grace, the journal is flushed and closed), and the notifier
    /// finishes.
    async fn stop(&self, upkeeping: Vec<JoinHandle<()>>) -> Result<()> {
        for task in upkeeping {
            let _ = task.await;
        }
        report_health(&self.health, ServingStatus::NotServing).await;
        let stopped = self.engine.shutdown().await;
        if let Some(notifier) = &self.notifier {
            notifier.stopped().await;
        }
        stopped
    }
}

impl Server {
    /// The address the server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address `GET /metrics` is served on, when it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The engine behind the server.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// What SIGHUP reloads (the tokens file and the TLS certificates, when
    /// they are configured).
    pub fn reload_hooks(&self) -> ReloadHooks {
        self.reload.clone()
    }

    /// Cancelling this token starts a graceful stop.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Resolves once recovery finished and the server reports SERVING; false if it
    /// stopped first.
    pub async fn ready(&self) -> bool {
        let mut ready = self.ready_rx.clone();
        ready.wait_for(|r| *r).await.is_ok()
    }

    /// Runs until stopped; returns how the stop went.
    pub async fn wait(self) -> Result<()> {
        self.task
            .await
            .map_err(|e| Error::Unavailable(format!("server task failed: {e}")))?
    }

    /// Stops gracefully and waits for it.
    pub async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }
}
