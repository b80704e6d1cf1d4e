//! A scriptable HTTP/JSON participant on a loopback port: the HTTP
//! counterpart of [`super::FakeParticipant`]. One axum router served by
//! hyper-util's auto connection builder, so the same port speaks HTTP/1.1 and
//! h2c (prior knowledge), and every call records the HTTP version it came
//! over, the headers of the contract and the body as sagad sent it.
//!
//! The script sees each call and says what to answer: any status, headers and
//! body, optionally after a gate the test opens (to hold a call past its
//! timeout without sleeping on a guess).

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, Version},
    response::{IntoResponse, Response},
    routing::post,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use sagad::{
    participant::http::wire::{AnswerBody, StepCallBody},
    proto::v1 as pb,
};
use tokio::{net::TcpListener, sync::Notify};
use tokio_util::sync::CancellationToken;

/// One call as the HTTP participant saw it.
#[derive(Clone, Debug)]
pub struct HttpCall {
    /// The path it was POSTed to (`/orders/forward`, …).
    pub path: String,
    pub version: Version,
    pub headers: HeaderMap,
    /// The body as sent, and as read by the contract's own reader.
    pub raw: Bytes,
    pub body: Arc<StepCallBody>,
}

impl HttpCall {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as a JSON value, to look at how payloads and outputs travel.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.raw).unwrap()
    }
}

/// What the script answers.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    /// Answer only once this is notified (see [`HttpFake::release`]).
    pub gated: bool,
}

impl Reply {
    /// `200` with the JSON `{"output": <the step's name as JSON>}`.
    pub fn ok(call: &HttpCall) -> Self {
        let output = serde_json::json!({ "done": call.body.step }).to_string();
        Self::json(200, &AnswerBody::with_output(output.as_bytes()))
    }

    /// A status with no body.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            gated: false,
        }
    }

    /// A status with a raw body.
    pub fn body(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            body: body.into(),
            ..Self::status(status)
        }
    }

    /// A status with an answer as JSON.
    pub fn json(status: u16, answer: &AnswerBody) -> Self {
        Self::body(status, serde_json::to_vec(answer).unwrap())
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn gated(mut self) -> Self {
        self.gated = true;
        self
    }
}

type Script = Arc<dyn Fn(&HttpCall) -> Reply + Send + Sync>;

#[derive(Clone)]
struct Shared {
    script: Script,
    calls: Arc<Mutex<Vec<HttpCall>>>,
    gate: Arc<Notify>,
}

/// An HTTP/JSON participant served on a loopback port until dropped. Any
/// path ending `/forward` or `/compensate` is an endpoint.
pub struct HttpFake {
    pub addr: SocketAddr,
    shared: Shared,
    stop: CancellationToken,
}

impl Drop for HttpFake {
    fn drop(&mut self) {
        self.stop.cancel();
        // Gated calls end too, so no handler outlives the test.
        self.shared.gate.notify_waiters();
    }
}

impl HttpFake {
    pub async fn serve(script: impl Fn(&HttpCall) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Shared {
            script: Arc::new(script),
            calls: Arc::default(),
            gate: Arc::new(Notify::new()),
        };
        let router = Router::new()
            .route("/{participant}/{action}", post(step))
            .with_state(shared.clone());
        let stop = CancellationToken::new();
        tokio::spawn(serve_router(listener, router, None, stop.clone()));
        Self { addr, shared, stop }
    }

    /// The URL of `participant`'s `action` (`forward` or `compensate`).
    pub fn url(&self, participant: &str, action: &str) -> String {
        format!("http://{}/{participant}/{action}", self.addr)
    }

    /// Every call so far, in arrival order.
    pub fn calls(&self) -> Vec<HttpCall> {
        self.shared.calls.lock().unwrap().clone()
    }

    /// Lets every call waiting at the gate answer.
    pub fn release(&self) {
        self.shared.gate.notify_waiters();
    }
}

async fn step(
    State(shared): State<Shared>,
    Path((participant, action)): Path<(String, String)>,
    version: Version,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let body: StepCallBody = match serde_json::from_slice(&raw) {
        Ok(body) => body,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("not a step call: {e}")).into_response();
        }
    };
    let call = HttpCall {
        path: format!("/{participant}/{action}"),
        version,
        headers,
        raw,
        body: Arc::new(body),
    };
    // Registered before the script runs, so a gated call is on record while
    // it waits.
    let gate = shared.gate.notified();
    shared.calls.lock().unwrap().push(call.clone());
    let reply = (shared.script)(&call);
    if reply.gated {
        gate.await;
    }
    let mut response = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
    for (name, value) in reply.headers {
        response
            .headers_mut()
            .insert(name, value.parse().expect("a valid header value"));
    }
    response
}

/// Serves `router` on `listener`, HTTP/1.1 and h2c (prior knowledge) on one
/// port, over TLS when `tls` is given, Nagle off, until `stop`.
pub async fn serve_router(
    listener: TcpListener,
    router: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: CancellationToken,
) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => continue,
            },
            () = stop.cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let (stop, tls) = (stop.clone(), tls.clone());
        tokio::spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            let served = async {
                match tls {
                    None => {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                    // A refused handshake ends the connection; the client
                    // says why.
                    Some(tls) => {
                        if let Ok(stream) = tls.accept(stream).await {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                }
            };
            tokio::select! {
                () = served => {}
                () = stop.cancelled() => {}
            }
        });
    }
}

/// Registers `orders`, `payments` and `shipping` at `fake`, speaking
/// `protocol` (HTTP or H2C), with `retry` and a step timeout of `timeout`.
pub async fn register_http_shop(
    client: &mut super::Client,
    fake: &HttpFake,
    protocol: pb::Protocol,
    retry: pb::RetryPolicy,
    timeout: std::time::Duration,
) {
    for name in ["orders", "payments", "shipping"] {
        client
            .register_participant(pb::RegisterParticipantRequest {
                name: name.into(),
                protocol: protocol as i32,
                forward_endpoint: fake.url(name, "forward"),
                compensate_endpoint: fake.url(name, "compensate"),
                retry: Some(retry),
                timeout: Some(prost_types::Duration::try_from(timeout).unwrap()),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("registering {name} over {protocol:?}: {s:?}"));
    }
}
