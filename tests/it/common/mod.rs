//! Shared test fixtures: an in-process coordinator on a loopback port with a
//! temporary sled journal, scriptable participants served over real gRPC, and
//! polling helpers (no test sleeps and hopes).

use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sagad::{
    engine::EngineConfig,
    proto::v1::{
        self as pb,
        coordinator_client::CoordinatorClient,
        participant_service_server::{ParticipantService, ParticipantServiceServer},
    },
    saga::{Definition, definition},
    server::{self, Server, ServerConfig},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status, transport::Channel, transport::server::TcpIncoming};
pub use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// How long any poll waits before the test fails: generous, never a speed assertion.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub type Client = CoordinatorClient<Channel>;

/// Held by each test that loads the whole machine for a long while with real
/// processes: the crash and shutdown runs (a `chaos::Harness` holds it) and the
/// benchmark's `run` and `scale`. Each used to run in a test binary of its own,
/// alone or beside its own kind; two of them at once on two cores slow each
/// other until the timing the crash checks rely on (a 2 s step timeout, a call
/// seen before its retry) no longer holds. Lighter tests still run beside them.
/// A tokio mutex, as it is held across awaits; and a test that fails holding it
/// does not poison it for the others.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits until no other heavy test runs; see [`HEAVY`].
pub async fn heavy() -> tokio::sync::MutexGuard<'static, ()> {
    HEAVY.lock().await
}

/// [`heavy`] for a synchronous test (never call it inside a runtime).
pub fn heavy_blocking() -> tokio::sync::MutexGuard<'static, ()> {
    HEAVY.blocking_lock()
}

pub mod certs;
pub mod chaos;
pub mod commit_cutter;
pub mod damage;
pub mod http;
pub mod postgres;
pub mod process;

/// The shipped order-fulfillment definition.
pub fn order_fulfillment() -> Definition {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("sagas/order-fulfillment.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    definition::parse_definition(&path, &text).unwrap()
}

/// Optional server settings a test can turn on.
#[derive(Clone, Debug, Default)]
pub struct Extras {
    /// Serve `/metrics` here (port 0: a free port, see `TestServer::metrics_addr`).
    pub metrics_listen: Option<SocketAddr>,
    /// POST FAILED sagas here.
    pub on_failed_webhook: Option<String>,
    /// Archive sagas that ended longer ago than this (`--retention`).
    pub retention: Option<Duration>,
    /// Move finished sagas to the history tier this long after their end
    /// (`--history-after`); `None`: they stay in the store.
    pub history_after: Option<Duration>,
    /// Authenticate callers against this tokens file (`--auth-tokens`),
    /// checked for changes every `reload_interval` (the server's default
    /// when unset).
    pub auth_tokens: Option<PathBuf>,
    pub reload_interval: Option<Duration>,
    /// TLS on the listeners and towards participants.
    pub tls: sagad::tls::TlsConfig,
}

/// A coordinator served in-process over loopback gRPC, on a temp sled journal.
pub struct TestServer {
    pub server: Option<Server>,
    pub addr: SocketAddr,
    /// Where `/metrics` is served, when `extras.metrics_listen` asked for it.
    pub metrics_addr: Option<SocketAddr>,
    pub extras: Extras,
    pub data_dir: PathBuf,
    _dir: Option<tempfile::TempDir>,
    definitions: Vec<Definition>,
    config: EngineConfig,
    /// Archive sagas that ended longer ago than this (`--retention`).
    pub retention: Option<Duration>,
}

impl TestServer {
    /// A server with the shipped definitions and default settings.
    pub async fn start() -> Self {
        Self::start_with(vec![order_fulfillment()], EngineConfig::default()).await
    }

    pub async fn start_with(definitions: Vec<Definition>, config: EngineConfig) -> Self {
        Self::start_with_extras(definitions, config, Extras::default()).await
    }

    /// A server with the shipped definitions that archives sagas ended longer
    /// ago than `retention`.
    pub async fn start_retaining(retention: Duration) -> Self {
        let extras = Extras {
            retention: Some(retention),
            ..Extras::default()
        };
        Self::start_with_extras(vec![order_fulfillment()], EngineConfig::default(), extras).await
    }

    pub async fn start_with_extras(
        definitions: Vec<Definition>,
        config: EngineConfig,
        extras: Extras,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_path_buf();
        let retention = extras.retention;
        let mut s = Self {
            server: None,
            addr: "127.0.0.1:0".parse().unwrap(),
            metrics_addr: None,
            extras,
            data_dir,
            _dir: Some(dir),
            definitions,
            config,
            retention,
        };
        s.boot().await;
        s
    }

    /// A server on an existing data directory (the caller keeps it alive).
    pub async fn reopen(data_dir: PathBuf) -> Self {
        let mut s = Self {
            server: None,
            addr: "127.0.0.1:0".parse().unwrap(),
            metrics_addr: None,
            extras: Extras::default(),
            data_dir,
            _dir: None,
            definitions: vec![order_fulfillment()],
            config: EngineConfig::default(),
            retention: None,
        };
        s.boot().await;
        s
    }

    async fn boot(&mut self) {
        let server = server::start(
            ServerConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                data_dir: self.data_dir.clone(),
                engine: self.config.clone(),
                metrics_listen: self.extras.metrics_listen,
                on_failed_webhook: self
                    .extras
                    .on_failed_webhook
                    .as_ref()
                    .map(|url| url.parse().unwrap()),
                retention: self.retention,
                history_after: self.extras.history_after,
                // Tests move a handful of sagas at a time.
                history_segment_min: 1,
                disk_reserve: sagad::journal::store::wal::DEFAULT_DISK_RESERVE,
                auth_tokens: self.extras.auth_tokens.clone(),
                reload_interval: self
                    .extras
                    .reload_interval
                    .unwrap_or(server::RELOAD_INTERVAL),
                tls: self.extras.tls.clone(),
                postgres: None,
            },
            self.definitions.clone(),
        )
        .await
        .expect("server starts");
        assert!(server.ready().await, "server recovers and becomes ready");
        self.addr = server.local_addr();
        self.metrics_addr = server.metrics_addr();
        self.server = Some(server);
    }

    /// A new client connection.
    pub async fn client(&self) -> Client {
        CoordinatorClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }

    /// Stops the server gracefully (as SIGTERM would).
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.expect("clean stop");
        }
    }

    /// Stops and starts again on the same data directory (a new port).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.boot().await;
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown_token().cancel();
        }
    }
}

/// What a scripted participant answers.
#[derive(Clone, Debug)]
pub enum Answer {
    Ok,
    /// Succeeded with this output.
    OkWith(&'static str),
    Reject(&'static str),
    Retry(Option<Duration>),
    Status(Code),
    /// Wait this long, then answer.
    Slow(Duration, Box<Answer>),
}

/// One call as the participant saw it.
#[derive(Clone, Debug)]
pub struct Call {
    pub saga_id: String,
    pub step: String,
    pub compensate: bool,
    pub attempt: u32,
    pub key: String,
    pub arrived: Instant,
    /// Wall-clock arrival, to compare with journaled due times.
    pub arrived_wall: std::time::SystemTime,
    /// Set when the answer was sent.
    pub answered: Option<Instant>,
    /// The gRPC deadline the call carried, if any.
    pub deadline: Option<String>,
    pub outputs: Vec<String>,
    /// The payload the call carried.
    pub payload: Vec<u8>,
    /// The W3C `traceparent` and `tracestate` metadata the call carried.
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    /// The caller's `x-sagad-epoch` (cluster mode).
    pub epoch: Option<u64>,
}

type Script = Arc<dyn Fn(&pb::StepRequest) -> Answer + Send + Sync>;

#[derive(Default)]
struct Ledger {
    calls: Vec<Call>,
    /// Keys whose effect was applied (once each), in order.
    applied: Vec<String>,
    /// Forward keys whose compensation arrived first ("nothing to undo"): a late
    /// forward with such a key must not apply (the saga has moved on).
    barred: std::collections::HashSet<String>,
}

impl Ledger {
    /// Applies a successful call's effect as a careful participant does: each key
    /// once; a compensation undoes only an applied forward, and bars a forward
    /// that never arrived.
    fn apply(&mut self, key: &str) {
        if self.applied.iter().any(|k| k == key) {
            return;
        }
        if let Some(forward) = key
            .strip_suffix("/compensate")
            .map(|k| format!("{k}/forward"))
        {
            if self.applied.contains(&forward) {
                self.applied.push(key.to_string());
            } else {
                self.barred.insert(forward);
            }
        } else if !self.barred.contains(key) {
            self.applied.push(key.to_string());
        }
    }
}

/// A participant service answering per a script, keeping a ledger of every call
/// and deduping effects on the idempotency key.
#[derive(Clone)]
pub struct FakeParticipant {
    script: Script,
    ledger: Arc<Mutex<Ledger>>,
}

impl FakeParticipant {
    pub fn new(script: impl Fn(&pb::StepRequest) -> Answer + Send + Sync + 'static) -> Self {
        Self {
            script: Arc::new(script),
            ledger: Arc::new(Mutex::new(Ledger::default())),
        }
    }

    /// Every call so far, in arrival order.
    pub fn calls(&self) -> Vec<Call> {
        self.ledger.lock().unwrap().calls.clone()
    }

    /// Calls of one saga as compact tags: `F:step#n` / `C:step#n`.
    pub fn trace(&self, saga_id: &str) -> Vec<String> {
        self.calls()
            .iter()
            .filter(|c| c.saga_id == saga_id)
            .map(|c| {
                format!(
                    "{}:{}#{}",
                    if c.compensate { "C" } else { "F" },
                    c.step,
                    c.attempt
                )
            })
            .collect()
    }

    /// Effects applied (one per key), for one saga, as `F:step` / `C:step`.
    pub fn applied(&self, saga_id: &str) -> Vec<String> {
        self.ledger
            .lock()
            .unwrap()
            .applied
            .iter()
            .filter_map(|key| {
                let mut parts = key.split('/');
                let (saga, step, action) = (parts.next()?, parts.next()?, parts.next()?);
                (saga == saga_id)
                    .then(|| format!("{}:{step}", if action == "compensate" { "C" } else { "F" }))
            })
            .collect()
    }

    async fn answer(
        &self,
        request: Request<pb::StepRequest>,
    ) -> Result<Response<pb::StepResponse>, Status> {
        let header = |name: &str| {
            request
                .metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (deadline, traceparent, tracestate) = (
            header("grpc-timeout"),
            header("traceparent"),
            header("tracestate"),
        );
        let epoch = header("x-sagad-epoch").map(|e| e.parse().expect("a decimal epoch"));
        let r = request.into_inner();
        let index = {
            let mut ledger = self.ledger.lock().unwrap();
            ledger.calls.push(Call {
                saga_id: r.saga_id.clone(),
                step: r.step.clone(),
                compensate: r.action == pb::Action::Compensate as i32,
                attempt: r.attempt,
                key: r.idempotency_key.clone(),
                arrived: Instant::now(),
                arrived_wall: std::time::SystemTime::now(),
                answered: None,
                deadline,
                outputs: r.outputs.keys().cloned().collect(),
                payload: r.payload.clone(),
                traceparent,
                tracestate,
                epoch,
            });
            ledger.calls.len() - 1
        };
        let mut answer = (self.script)(&r);
        while let Answer::Slow(delay, next) = answer {
            tokio::time::sleep(delay).await;
            answer = *next;
        }
        let mut ledger = self.ledger.lock().unwrap();
        ledger.calls[index].answered = Some(Instant::now());
        let response = match answer {
            Answer::Ok => {
                ledger.apply(&r.idempotency_key);
                Ok(pb::StepResponse {
                    output: format!("out:{}", r.step).into_bytes(),
                    ..Default::default()
                })
            }
            Answer::OkWith(output) => {
                ledger.apply(&r.idempotency_key);
                Ok(pb::StepResponse {
                    output: output.as_bytes().to_vec(),
                    ..Default::default()
                })
            }
            Answer::Reject(reason) => Ok(pb::StepResponse {
                outcome: pb::Outcome::Rejected as i32,
                reason: reason.into(),
                ..Default::default()
            }),
            Answer::Retry(after) => Ok(pb::StepResponse {
                outcome: pb::Outcome::Retry as i32,
                reason: "busy".into(),
                retry_after: after.map(|d| prost_types::Duration::try_from(d).unwrap()),
                ..Default::default()
            }),
            Answer::Status(code) => Err(Status::new(code, "scripted failure")),
            Answer::Slow(..) => unreachable!(),
        };
        response.map(Response::new)
    }
}

#[tonic::async_trait]
impl ParticipantService for FakeParticipant {
    async fn forward(
        &self,
        request: Request<pb::StepRequest>,
    ) -> Result<Response<pb::StepResponse>, Status> {
        self.answer(request).await
    }

    async fn compensate(
        &self,
        request: Request<pb::StepRequest>,
    ) -> Result<Response<pb::StepResponse>, Status> {
        self.answer(request).await
    }
}

/// A fake participant served on a loopback port until dropped.
pub struct Served {
    pub fake: FakeParticipant,
    pub addr: SocketAddr,
    /// `http`, or `https` when served over TLS.
    scheme: &'static str,
    /// What it speaks: gRPC, or the HTTP/JSON contract ([`serve_http`]).
    pub protocol: pb::Protocol,
    stop: CancellationToken,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Served {
    pub fn forward_url(&self) -> String {
        match self.protocol {
            pb::Protocol::Grpc => format!(
                "{}://{}/sagad.v1.ParticipantService/Forward",
                self.scheme, self.addr
            ),
            _ => format!("{}://{}/forward", self.scheme, self.addr),
        }
    }

    pub fn compensate_url(&self) -> String {
        match self.protocol {
            pb::Protocol::Grpc => format!(
                "{}://{}/sagad.v1.ParticipantService/Compensate",
                self.scheme, self.addr
            ),
            _ => format!("{}://{}/compensate", self.scheme, self.addr),
        }
    }
}

pub async fn serve(fake: FakeParticipant) -> Served {
    serve_on(fake, TcpListener::bind("127.0.0.1:0").await.unwrap())
}

/// Serves `fake` at `addr`, the address of a fake that was served and dropped
/// (a participant restarting): waits for the old server to let go of the port.
pub async fn serve_at(fake: FakeParticipant, addr: SocketAddr) -> Served {
    let listener = poll_until("the old participant to free its port", || async move {
        TcpListener::bind(addr).await.ok()
    })
    .await;
    serve_on(fake, listener)
}

fn serve_on(fake: FakeParticipant, listener: TcpListener) -> Served {
    serve_with(fake, listener, None)
}

/// Serves `fake` over TLS (tonic's own server TLS: a participant as a user
/// would write one), on a free loopback port.
pub async fn serve_tls(fake: FakeParticipant, tls: tonic::transport::ServerTlsConfig) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve_with(fake, listener, Some(tls))
}

fn serve_with(
    fake: FakeParticipant,
    listener: TcpListener,
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> Served {
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .expect("a usable participant TLS config");
    }
    tokio::spawn(
        builder
            .add_service(ParticipantServiceServer::new(fake.clone()))
            .serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned()),
    );
    Served {
        fake,
        addr,
        scheme,
        protocol: pb::Protocol::Grpc,
        stop,
    }
}

/// Serves `fake` as an HTTP/JSON participant (docs/participant.md's
/// contract, HTTP/1.1 or h2c on one port): each call becomes the
/// `StepRequest` the gRPC fake sees, with the contract's headers as its
/// metadata, and its answer becomes the contract's (200 with the output,
/// 409 rejected, 503 for retry and for an unavailable status), so the same
/// scripts, ledger and checks run over either protocol.
pub async fn serve_http(fake: FakeParticipant) -> Served {
    serve_http_with(fake, None).await
}

/// [`serve_http`] over TLS with `leaf`'s certificate (HTTP/1.1, ALPN
/// `http/1.1`): an `https://` HTTP/JSON participant.
pub async fn serve_https(fake: FakeParticipant, leaf: &certs::Leaf) -> Served {
    use tokio_rustls::rustls::{
        ServerConfig,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    };
    let certs = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let mut config = ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    serve_http_with(
        fake,
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
    )
    .await
}

async fn serve_http_with(fake: FakeParticipant, tls: Option<tokio_rustls::TlsAcceptor>) -> Served {
    use axum::{
        Router,
        body::Bytes,
        extract::{Path as UrlPath, State},
        http::{HeaderMap, StatusCode},
        response::IntoResponse,
        routing::post,
    };
    use sagad::participant::http::{
        TIMEOUT_HEADER,
        wire::{AnswerBody, StepCallBody},
    };

    async fn step(
        State(fake): State<FakeParticipant>,
        UrlPath(action): UrlPath<String>,
        headers: HeaderMap,
        raw: Bytes,
    ) -> axum::response::Response {
        let body: StepCallBody = match serde_json::from_slice(&raw) {
            Ok(body) => body,
            Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        };
        let action = match action.as_str() {
            "compensate" => pb::Action::Compensate,
            _ => pb::Action::Forward,
        };
        let step_request = pb::StepRequest {
            saga_id: body.saga_id.clone(),
            definition: body.definition.clone(),
            step: body.step.clone(),
            action: action as i32,
            attempt: body.attempt,
            idempotency_key: body.idempotency_key.clone(),
            payload: body.payload_bytes().unwrap(),
            outputs: body.output_bytes().unwrap().into_iter().collect(),
        };
        let mut request = Request::new(step_request);
        for (from, to) in [
            (TIMEOUT_HEADER, "grpc-timeout"),
            ("traceparent", "traceparent"),
            ("tracestate", "tracestate"),
            ("x-sagad-epoch", "x-sagad-epoch"),
        ] {
            if let Some(value) = headers.get(from).and_then(|v| v.to_str().ok()) {
                request
                    .metadata_mut()
                    .insert(to, value.parse().expect("an ASCII header value"));
            }
        }
        let json = |status: StatusCode, answer: AnswerBody| {
            let mut response = (status, serde_json::to_vec(&answer).unwrap()).into_response();
            response
                .headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            response
        };
        match fake.answer(request).await.map(Response::into_inner) {
            Ok(r) if r.outcome == pb::Outcome::Rejected as i32 => json(
                StatusCode::CONFLICT,
                AnswerBody {
                    reason: Some(r.reason),
                    ..Default::default()
                },
            ),
            Ok(r) if r.outcome == pb::Outcome::Retry as i32 => {
                let mut response = StatusCode::SERVICE_UNAVAILABLE.into_response();
                if let Some(after) = r.retry_after {
                    let seconds = (after.seconds as f64 + f64::from(after.nanos) / 1e9).ceil();
                    response
                        .headers_mut()
                        .insert("retry-after", (seconds as u64).to_string().parse().unwrap());
                }
                response
            }
            Ok(r) => json(StatusCode::OK, AnswerBody::with_output(&r.output)),
            Err(status) if status.code() == Code::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                status.message().to_string(),
            )
                .into_response(),
            Err(status) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                status.message().to_string(),
            )
                .into_response(),
        }
    }

    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new()
        .route("/{action}", post(step))
        .with_state(fake.clone());
    let stop = CancellationToken::new();
    tokio::spawn(http::serve_router(listener, router, tls, stop.clone()));
    Served {
        fake,
        addr,
        scheme,
        protocol: pb::Protocol::Http,
        stop,
    }
}

/// Every error in `error`'s chain, with the TLS errors that rustls hides
/// inside `io::Error`s, on one line.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut current = Some(error);
    while let Some(e) = current {
        parts.push(e.to_string());
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            parts.push(inner.to_string());
        }
        current = e.source();
    }
    parts.join(": ")
}

/// A retry policy with short delays, so tests finish quickly.
pub fn quick_retry(max_attempts: u32, max_compensate_attempts: u32) -> pb::RetryPolicy {
    pb::RetryPolicy {
        initial_interval: Some(prost_types::Duration {
            seconds: 0,
            nanos: 20_000_000,
        }),
        multiplier: Some(2.0),
        max_interval: Some(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        }),
        max_attempts: Some(max_attempts),
        max_compensate_attempts: Some(max_compensate_attempts),
        jitter: Some(0.0),
        max_duration: None,
    }
}

/// Registers `orders`, `payments` and `shipping` at the served fake.
///
/// A `sagad` process serves as soon as it prints its address, and answers
/// UNAVAILABLE until its recovery is done (health SERVING): tests that register
/// right after spawning one wait that out here.
pub async fn register_shop(client: &mut Client, served: &Served, retry: pb::RetryPolicy) {
    for name in ["orders", "payments", "shipping"] {
        let request = pb::RegisterParticipantRequest {
            protocol: served.protocol as i32,
            name: name.into(),
            forward_endpoint: served.forward_url(),
            compensate_endpoint: served.compensate_url(),
            retry: Some(retry),
            timeout: Some(prost_types::Duration {
                seconds: 5,
                nanos: 0,
            }),
            ..Default::default()
        };
        poll_until("the coordinator to accept a registration", || {
            let (mut client, request) = (client.clone(), request.clone());
            async move {
                match client.register_participant(request).await {
                    Ok(_) => Some(()),
                    Err(s)
                        if s.code() == Code::Unavailable
                            && s.message().contains("still recovering") =>
                    {
                        None
                    }
                    Err(s) => panic!("RegisterParticipant: {s:?}"),
                }
            }
        })
        .await;
    }
}

/// The orders and shipping of an example participant's tests: every call
/// succeeds but shipping an order whose payload says `"carrier":"down"`,
/// which is rejected (so the saga compensates).
pub async fn serve_shop_with_carrier_down() -> Served {
    serve(FakeParticipant::new(|r| {
        let down = String::from_utf8_lossy(&r.payload).contains(r#""carrier":"down""#);
        if r.step == "ship-order" && down {
            Answer::Reject("no carrier")
        } else {
            Answer::Ok
        }
    }))
    .await
}

/// A short name for a journaled event's kind, to assert a history's shape.
pub fn event_kind(event: &pb::SagaEvent) -> &'static str {
    use pb::saga_event::Event as E;
    match event.event.as_ref() {
        Some(E::SagaStarted(_)) => "started",
        Some(E::AttemptStarted(_)) => "attempt",
        Some(E::AttemptSucceeded(_)) => "ok",
        Some(E::AttemptFailed(_)) => "failed",
        Some(E::CancelRequested(_)) => "cancel",
        Some(E::CompensationStarted(_)) => "compensating",
        Some(E::SagaCompleted(_)) => "completed",
        Some(E::SagaCompensated(_)) => "compensated",
        Some(E::SagaFailed(_)) => "saga-failed",
        Some(E::RetryRequested(_)) => "retry",
        Some(E::EndpointsRefreshed(_)) => "refreshed",
        Some(E::ResumeRequested(_)) => "resume",
        Some(E::StartReached(_)) => "start-reached",
        Some(E::InputResolved(_)) => "input",
        Some(E::InputUnresolved(_)) => "input-unresolved",
        None => "none",
    }
}

/// Starts an order-fulfillment saga and returns its id.
pub async fn start_order(client: &mut Client, payload: &str, wait: bool) -> pb::Saga {
    start_definition(client, "order-fulfillment", payload, wait).await
}

/// Starts a saga of `definition` and returns it.
pub async fn start_definition(
    client: &mut Client,
    definition: &str,
    payload: &str,
    wait: bool,
) -> pb::Saga {
    let request = pb::StartSagaRequest {
        definition: definition.into(),
        payload: payload.as_bytes().to_vec(),
        wait,
        ..Default::default()
    };
    start_request(client, request).await
}

/// Sends `request` and returns the saga it started (or found).
pub async fn start_request(client: &mut Client, request: pb::StartSagaRequest) -> pb::Saga {
    client
        .start_saga(request)
        .await
        .unwrap()
        .into_inner()
        .saga
        .unwrap()
}

/// Every event `WatchSaga` streams for saga `id`, to its end.
pub async fn watched(client: &mut Client, id: &str) -> Vec<pb::SagaEvent> {
    let mut stream = client
        .watch_saga(pb::WatchSagaRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Some(event) = stream.message().await.unwrap() {
        events.push(event);
    }
    events
}

pub async fn get(client: &mut Client, id: &str) -> pb::Saga {
    client
        .get_saga(pb::GetSagaRequest {
            id: id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// Polls the health of `service` at `addr` until it is `want`. Health
/// follows the server's state a moment later (readiness, a journal fault):
/// poll, never race.
pub async fn until_health(addr: SocketAddr, service: &str, want: ServingStatus) {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = HealthClient::new(channel);
    poll_until(&format!("health of {service:?} to be {want:?}"), || {
        let mut health = health.clone();
        async move {
            let status = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status;
            (status == want as i32).then_some(())
        }
    })
    .await;
}

/// Polls `check` until it returns `Some`, failing the test at the deadline.
pub async fn poll_until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls GetSaga until the saga is terminal.
pub async fn until_terminal(client: &mut Client, id: &str) -> pb::Saga {
    let start = Instant::now();
    loop {
        let saga = get(client, id).await;
        let state = pb::SagaState::try_from(saga.state).unwrap();
        if matches!(
            state,
            pb::SagaState::Completed | pb::SagaState::Compensated | pb::SagaState::Failed
        ) {
            return saga;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "saga {id} not terminal: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn state(saga: &pb::Saga) -> pb::SagaState {
    pb::SagaState::try_from(saga.state).unwrap()
}

pub fn step_states(saga: &pb::Saga) -> Vec<pb::StepState> {
    saga.steps
        .iter()
        .map(|s| pb::StepState::try_from(s.state).unwrap())
        .collect()
}

/// `GET http://addr/metrics` over real HTTP; panics unless it answers 200 in the
/// Prometheus text format.
pub async fn scrape(addr: SocketAddr) -> String {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::{client::legacy::Client, rt::TokioExecutor};

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<hyper::body::Bytes>>();
    let response = client
        .get(format!("http://{addr}/metrics").parse().unwrap())
        .await
        .expect("the metrics endpoint answers");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// Waits until the start-up recovery of the server whose metrics are at
/// `metrics` has read back every saga it resumed (SERVING comes before).
pub async fn until_read_back(metrics: SocketAddr) {
    poll_until("recovery to read every saga back", || async move {
        let text = scrape(metrics).await;
        (sample(&text, "sagad_recovery_unread_sagas") == Some(0.0)).then_some(())
    })
    .await;
}

/// The value of one series (`name{label="v",...}` exactly as rendered) in a
/// scrape, if it is there.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

/// A child process killed when dropped, so a failing test never leaks it.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `command` (stdout piped, stdin closed) and waits for the first
/// `count` lines it prints, which announce where it listens; `what` names it
/// when it cannot be started, with `install` saying how to get it. Whatever
/// it prints later is read and dropped, so it never blocks on a full pipe.
pub fn spawn_announcing(
    mut command: std::process::Command,
    what: &str,
    install: &str,
    count: usize,
) -> (KillOnDrop, Vec<String>) {
    use std::io::{BufRead, BufReader};

    let spawned = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => KillOnDrop(child),
        Err(e) => panic!("this test runs {what}, which could not be started ({e}): {install}"),
    };
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // The thread ends with the process.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let lines = (0..count)
        .map(|i| {
            rx.recv_timeout(DEADLINE).unwrap_or_else(|_| {
                panic!("{what} printed only {i} of the {count} lines announcing where it listens")
            })
        })
        .collect();
    (child, lines)
}

/// A process's output as text (lossy: for messages and matching).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a `sagad` verb to its end (off the async workers) with `env` added
/// and the settings a test must not inherit removed; its whole output.
pub async fn sagad(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sagad"));
    command
        .args(args)
        .env_remove("FAILPOINTS")
        .env_remove("SAGAD_DATA_DIR")
        .env_remove("SAGAD_RETENTION")
        .env("SAGAD_LOG", "warn");
    for (k, v) in env {
        command.env(k, v);
    }
    tokio::task::spawn_blocking(move || command.output().expect("run sagad"))
        .await
        .unwrap()
}

/// Runs `sagad serve` with `args` (on a temp data dir and a free port, so a
/// wrong success would touch nothing) and returns (exit code, stderr); fails
/// the test if it does not exit by itself.
pub async fn sagad_exit(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    use std::io::Read;

    let dir = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sagad"));
    command.arg("serve");
    // A test that names its own --listen gets it instead of a free loopback port.
    if !args.contains(&"--listen") {
        command.args(["--listen", "127.0.0.1:0"]);
    }
    // And one that names its own --data-dir, that one.
    if !args.contains(&"--data-dir") {
        command.arg("--data-dir").arg(dir.path());
    }
    command
        .args(args)
        .env_remove("SAGAD_METRICS_LISTEN")
        .env_remove("SAGAD_ON_FAILED_WEBHOOK")
        .env_remove("SAGAD_CONFIG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = KillOnDrop(command.spawn().unwrap());
    let code = poll_until("sagad to exit", || {
        let exited = child.0.try_wait().unwrap();
        async move { exited.map(|status| status.code()) }
    })
    .await;
    let mut stderr = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (code, stderr)
}
