//! Wiring a whole coordinator: journal, engine, gRPC services, recovery, shutdown.
//!
//! [`start`] opens the journal (refusing a data directory another process owns),
//! binds the listener and starts serving at once, with health `NOT_SERVING` and
//! the Coordinator answering `UNAVAILABLE` until recovery has resumed every
//! unfinished saga; then health turns `SERVING`.
//!
//! With a retention period, the archiver (`crate::archive`) starts once
//! recovery is done.
//!
//! Stopping (a signal in `sagad serve`, [`Server::stop`] in tests) follows one
//! order: stop accepting connections; stop the archiver after its current
//! batch; stop starting new calls while in-flight ones get the grace period;
//! journal their outcomes; flush and close the journal.
//!
//! Optional parts: with `metrics_listen`, `GET /metrics` is served on its own
//! listener (bound before `start` returns, so a bad address fails the start);
//! with `on_failed_webhook`, every saga that becomes FAILED is posted there, and
//! after recovery the FAILED sagas whose notice was never acknowledged are
//! posted again (`crate::webhook`).

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
use tonic::transport::server::TcpIncoming;

use crate::{
    Error, Result,
    api::CoordinatorApi,
    archive::{self, Archiver},
    engine::{Engine, EngineConfig, recovery},
    journal::{Journal, SledJournal},
    metrics,
    participant::GrpcParticipants,
    proto::{self, v1::coordinator_server::CoordinatorServer},
    saga::Definition,
    webhook::Notifier,
};

/// Room for the rest of a StartSaga request around a payload of the maximum size.
const REQUEST_OVERHEAD_BYTES: usize = 256 * 1024;

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
    /// Where to POST a notice for each saga that becomes FAILED (`http://` only).
    pub on_failed_webhook: Option<Uri>,
    /// How long ended sagas stay in the journal; `None` keeps them forever.
    /// With a period, an archiver (`crate::archive`) runs once recovery is done.
    pub retention: Option<std::time::Duration>,
}

/// A running coordinator.
pub struct Server {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    engine: Engine,
    shutdown: CancellationToken,
    ready_rx: watch::Receiver<bool>,
    task: JoinHandle<Result<()>>,
}

/// Opens the journal, binds, and starts serving; recovery runs in the background
/// (see the module docs). Errors here are startup errors: locked or unreadable
/// data directory, address in use.
pub async fn start(config: ServerConfig, definitions: Vec<Definition>) -> Result<Server> {
    let dir = config.data_dir.clone();
    // Opening sled reads its files: keep that off the async workers.
    let journal = tokio::task::spawn_blocking(move || SledJournal::open(&dir))
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
    let participants = Arc::new(GrpcParticipants::new(config.engine.max_payload_bytes));
    let archiver = config
        .retention
        .map(|r| Archiver::new(journal.clone(), archive::archive_dir(&config.data_dir), r));
    let engine_config = EngineConfig {
        record_metrics: config.metrics_listen.is_some(),
        ..config.engine.clone()
    };
    let engine = Engine::new(journal, participants, definitions, engine_config).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Io {
            what: format!("cannot listen on {}", config.listen),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Io {
        what: "cannot read the bound address".into(),
        source,
    })?;
    let shutdown = CancellationToken::new();
    let metrics_listener = match config.metrics_listen {
        Some(at) => Some(metrics::http::bind(at).await?),
        None => None,
    };
    let metrics_addr = metrics_listener
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()
        .map_err(|source| Error::Io {
            what: "cannot read the metrics address".into(),
            source,
        })?;
    let notifier = match &config.on_failed_webhook {
        Some(url) => {
            let notifier = Notifier::open(
                url.clone(),
                &config.data_dir,
                engine.metrics().clone(),
                shutdown.clone(),
            )
            .await?;
            engine.notify_failed_to(notifier.clone());
            Some(notifier)
        }
        None => None,
    };

    let ready = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = watch::channel(false);
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_not_serving::<CoordinatorServer<CoordinatorApi>>()
        .await;
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Unavailable(format!("reflection service: {e}")))?;
    let max_request = config.engine.max_payload_bytes + REQUEST_OVERHEAD_BYTES;
    let coordinator = CoordinatorServer::new(CoordinatorApi::new(engine.clone(), ready.clone()))
        .max_decoding_message_size(max_request)
        .max_encoding_message_size(usize::MAX);
    // Nagle must be turned off on the incoming stream itself: the server builder's
    // tcp_nodelay is ignored by serve_with_incoming (STACK.md).
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let router = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(coordinator);

    let task = {
        let engine = engine.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let serve =
                router.serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());
            let serve_metrics = async {
                match metrics_listener {
                    Some(listener) => {
                        let render_engine = engine.clone();
                        let render: metrics::http::Render =
                            Arc::new(move || render_engine.render_metrics());
                        metrics::http::serve(listener, render, shutdown.clone()).await
                    }
                    None => Ok(()),
                }
            };
            let recover_then_stop = async {
                let mut archiving = None;
                tokio::select! {
                    result = recovery::recover(&engine) => match result {
                        Ok(_) => {
                            if let Some(notifier) = &notifier {
                                notifier.redeliver_in_background(engine.journal().clone());
                            }
                            archiving = archiver.map(|a| a.spawn(shutdown.child_token()));
                            ready.store(true, Ordering::Release);
                            health.set_serving::<CoordinatorServer<CoordinatorApi>>().await;
                            health.set_service_status("", tonic_health::ServingStatus::Serving).await;
                            let _ = ready_tx.send(true);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "recovery failed; stopping");
                            shutdown.cancel();
                            let _ = engine.shutdown().await;
                            return Err(e);
                        }
                    },
                    _ = shutdown.cancelled() => {}
                }
                shutdown.cancelled().await;
                // The archiver finishes the removals of its batch before the
                // journal closes.
                if let Some(archiving) = archiving {
                    let _ = archiving.await;
                }
                health
                    .set_not_serving::<CoordinatorServer<CoordinatorApi>>()
                    .await;
                health
                    .set_service_status("", tonic_health::ServingStatus::NotServing)
                    .await;
                let stopped = engine.shutdown().await;
                if let Some(notifier) = &notifier {
                    notifier.stopped().await;
                }
                stopped
            };
            let (served, metrics_served, stopped) =
                tokio::join!(serve, serve_metrics, recover_then_stop);
            served.map_err(|e| Error::Unavailable(format!("gRPC server failed: {e}")))?;
            if let Err(e) = metrics_served {
                tracing::error!(error = %e, "the metrics endpoint failed");
            }
            stopped
        })
    };
    Ok(Server {
        addr,
        metrics_addr,
        engine,
        shutdown,
        ready_rx,
        task,
    })
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
