//! Calling HTTP/JSON endpoints: the HTTP contract of docs/participant.md.
//!
//! A call is a `POST` of the JSON in `wire.rs` to the endpoint's URL, over
//! HTTP/1.1 ([`Protocol::Http`]) or h2c ([`Protocol::H2c`], HTTP/2 with prior
//! knowledge), and its answer is read by the table in `answer.rs`. The parts:
//!
//! - `wire.rs`: the request and answer bodies, and how bytes travel in them;
//! - `answer.rs`: status, `Retry-After` and body → outcome;
//! - `connector.rs`: how a connection is made (the allow-list applies);
//! - `misconfigured.rs`: answers that say the registration is wrong, logged
//!   once per participant and counted;
//! - `sent.rs`: the request body that tells whether the request went out.
//!
//! Guarantees:
//! - Connections are pooled per origin by hyper-util's client: HTTP/1.1 keeps
//!   idle connections for reuse (one call at a time on each), h2c multiplexes
//!   calls on one connection per origin. Every new connection goes through
//!   [`connector::Connector`], so `--participant-allow` is checked on the
//!   addresses each one is made to, as for gRPC.
//! - Every call carries the step timeout as the header [`TIMEOUT_HEADER`]
//!   (milliseconds), and is cut off at that timeout by the coordinator,
//!   connecting and reading the answer's body included: the request is
//!   dropped, which closes an HTTP/1.1 connection or resets the h2 stream.
//! - Every call carries `Idempotency-Key` (the body's key), the W3C
//!   `traceparent` and `tracestate`, and in cluster mode `x-sagad-epoch`
//!   ([`super::grpc::EPOCH_HEADER`]).
//! - A failure is `NotDelivered` only when the request was never written:
//!   no connection could be made (hyper-util's connect errors: refused,
//!   unreachable, not allowed, none in time), or the step timeout passed
//!   before hyper asked for the body (`sent.rs`). A pooled connection that
//!   turned out closed before the request went on it is retried on a new one
//!   by hyper-util itself. Everything after that (a reset, a connection lost
//!   mid-answer, a timeout once the body was taken) is `Transient`, effect
//!   unknown.
//! - An answer's body is read up to the payload limit; a larger one is
//!   `Transient` with a reason saying so, as is a success whose body is not
//!   the JSON of an answer.

use std::{
    error::Error as StdError,
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use http::{
    HeaderValue, Method, Request, StatusCode,
    header::{ACCEPT, CONTENT_TYPE},
};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Body, Bytes};
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioTimer},
};

use super::{CallRequest, ConfigErrorCount, Participants, classify, guard::AllowList};
use crate::{
    saga::{CallOutcome, Protocol},
    tls::ClientTls,
    trace,
};

pub mod answer;
mod connector;
mod misconfigured;
mod sent;
pub mod wire;

pub use connector::Connector;

/// The header that tells the participant how long the coordinator waits for
/// the answer, in milliseconds: the step's timeout.
pub const TIMEOUT_HEADER: &str = "x-sagad-timeout-ms";
/// The header that carries the call's idempotency key (also in the body).
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// An idle pooled connection is closed after this, so a pool does not hold
/// sockets to participants no saga calls any more.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// With h2c, an idle connection is pinged this often…
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// …and closed when a ping goes unanswered this long.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

type HttpClient = Client<Connector, sent::Sent>;

/// Calls participants over HTTP/JSON.
pub struct HttpParticipants {
    http1: HttpClient,
    h2c: HttpClient,
    /// Largest answer body accepted; a larger one is a transient error.
    max_body_bytes: usize,
    misconfigured: misconfigured::Misconfigured,
}

impl HttpParticipants {
    /// A caller accepting answer bodies up to `max_body_bytes`, reaching
    /// `https://` origins with `tls`, connecting only where `allow` allows
    /// (when given).
    pub fn new(max_body_bytes: usize, tls: ClientTls, allow: Option<AllowList>) -> Self {
        let connector = Connector::new(allow, tls);
        let http1 = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector.clone());
        let h2c = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .http2_only(true)
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .http2_keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .build(connector);
        Self {
            http1,
            h2c,
            max_body_bytes,
            misconfigured: misconfigured::Misconfigured::default(),
        }
    }

    fn request(
        &self,
        call: &CallRequest,
        handed: &sent::Handed,
    ) -> Result<Request<sent::Sent>, String> {
        let body = wire::call_body(
            &call.saga_id.to_string(),
            &call.definition,
            &call.step,
            call.action,
            call.attempt,
            &call.idempotency_key,
            &call.payload,
            &call.outputs,
        );
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(call.endpoint.url())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .header(TIMEOUT_HEADER, call.timeout.as_millis().to_string())
            .header(IDEMPOTENCY_HEADER, call.idempotency_key.as_str())
            .body(handed.body(Bytes::from(body)))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let headers = request.headers_mut();
        // A traceparent is built from hex digits; a tracestate was valid
        // metadata when it arrived. Either could only fail to convert if
        // that changed, and then the call goes without it.
        if let Ok(value) = HeaderValue::from_str(&call.traceparent) {
            headers.insert(trace::TRACEPARENT, value);
        }
        if let Some(Ok(value)) = call.tracestate.as_deref().map(HeaderValue::from_str) {
            headers.insert(trace::TRACESTATE, value);
        }
        if let Some(epoch) = call.epoch {
            headers.insert(super::grpc::EPOCH_HEADER, HeaderValue::from(epoch));
        }
        Ok(request)
    }

    async fn exchange(&self, call: &CallRequest, handed: &sent::Handed) -> CallOutcome {
        let origin = call.endpoint.origin();
        let request = match self.request(call, handed) {
            Ok(request) => request,
            Err(why) => return classify::not_delivered(origin, why),
        };
        let client = match call.endpoint.protocol() {
            Protocol::H2c => &self.h2c,
            _ => &self.http1,
        };
        let answer = match client.request(request).await {
            Ok(answer) => answer,
            Err(e) if e.is_connect() || !handed.may_have_arrived() => {
                return classify::not_delivered(origin, chain(&e));
            }
            Err(e) => {
                return CallOutcome::Transient {
                    reason: format!("the connection to {origin} failed: {}", chain(&e)),
                    retry_after: None,
                };
            }
        };
        let (parts, body) = answer.into_parts();
        let body = match read_body(parts.status, body, self.max_body_bytes).await {
            Ok(body) => body,
            Err(outcome) => return outcome,
        };
        let classified = answer::classify(parts.status, &parts.headers, &body, SystemTime::now());
        if classified.misconfigured {
            self.misconfigured.record(
                &call.participant,
                call.endpoint.url(),
                parts.status.as_u16(),
                &body,
            );
        }
        classified.outcome
    }
}

/// An answer's body, read in full up to `limit` bytes; a larger one, or a
/// connection lost while it is read, is the transient outcome saying so.
async fn read_body<B>(status: StatusCode, body: B, limit: usize) -> Result<Bytes, CallOutcome>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(CallOutcome::Transient {
            reason: format!(
                "HTTP {} with a body larger than the {limit} bytes an answer may have (--max-payload-bytes)",
                status.as_u16(),
            ),
            retry_after: None,
        }),
        Err(e) => Err(CallOutcome::Transient {
            reason: format!(
                "HTTP {}: the connection failed while the answer was read: {}",
                status.as_u16(),
                chain(e.as_ref())
            ),
            retry_after: None,
        }),
    }
}

/// An error and its causes, as one line: hyper-util's own text
/// ("client error (Connect)") says little without them.
fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

#[async_trait]
impl Participants for HttpParticipants {
    async fn call(&self, request: CallRequest) -> CallOutcome {
        let timeout = request.timeout;
        let handed = sent::Handed::default();
        match tokio::time::timeout(timeout, self.exchange(&request, &handed)).await {
            Ok(outcome) => outcome,
            Err(_) if !handed.may_have_arrived() => classify::not_delivered(
                request.endpoint.origin(),
                format!("no connection within the step timeout of {timeout:?}"),
            ),
            Err(_) => classify::timeout(timeout),
        }
    }

    fn config_errors(&self) -> Vec<ConfigErrorCount> {
        self.misconfigured.counts()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::Full;
    use tokio::{io::AsyncReadExt, net::TcpListener};

    use super::*;
    use crate::saga::{Action, Endpoint, SagaId};

    fn call(epoch: Option<u64>) -> CallRequest {
        call_to("http://127.0.0.1:1/pay?v=2", epoch)
    }

    fn call_to(url: &str, epoch: Option<u64>) -> CallRequest {
        CallRequest {
            endpoint: Endpoint::parse_as("f", url, Protocol::Http).unwrap(),
            participant: "payments".into(),
            timeout: Duration::from_millis(2500),
            saga_id: SagaId::generate(),
            definition: "d".into(),
            step: "s".into(),
            action: Action::Forward,
            attempt: 1,
            idempotency_key: "k/s/forward".into(),
            payload: b"{}".to_vec(),
            outputs: vec![],
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            tracestate: Some("vendor=x".into()),
            epoch,
        }
    }

    #[test]
    fn a_request_carries_the_contract_s_headers() {
        let caller = HttpParticipants::new(1024, ClientTls::default(), None);
        let request = caller
            .request(&call(Some(7)), &sent::Handed::default())
            .unwrap();
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.uri(), "http://127.0.0.1:1/pay?v=2");
        let header = |name: &str| request.headers()[name].to_str().unwrap().to_string();
        assert_eq!(header("content-type"), "application/json");
        assert_eq!(header(IDEMPOTENCY_HEADER), "k/s/forward");
        assert_eq!(header(TIMEOUT_HEADER), "2500");
        assert_eq!(header("x-sagad-epoch"), "7");
        assert_eq!(header("tracestate"), "vendor=x");
        assert!(header("traceparent").starts_with("00-0af7"));
        // Outside cluster mode there is no epoch to send.
        let request = caller
            .request(&call(None), &sent::Handed::default())
            .unwrap();
        assert!(!request.headers().contains_key("x-sagad-epoch"));
    }

    #[tokio::test]
    async fn a_body_is_read_up_to_the_limit_and_no_further() {
        let ok = read_body(StatusCode::OK, Full::new(Bytes::from(vec![b'x'; 64])), 64).await;
        assert_eq!(ok.unwrap().len(), 64);
        let big = read_body(StatusCode::OK, Full::new(Bytes::from(vec![b'x'; 65])), 64).await;
        let Err(CallOutcome::Transient {
            reason,
            retry_after,
        }) = big
        else {
            panic!("{big:?}")
        };
        assert!(
            reason.contains("HTTP 200 with a body larger than the 64 bytes"),
            "{reason}"
        );
        assert_eq!(retry_after, None);
    }

    #[tokio::test]
    async fn a_connection_still_being_made_at_the_step_timeout_carried_nothing() {
        // TCP is accepted but the TLS handshake never answered: the request
        // cannot have been written when the step timeout cuts the call off.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { listener.accept().await.unwrap() });
        let mut request = call_to(&format!("https://{addr}/pay"), None);
        request.timeout = Duration::from_millis(300);
        let caller = HttpParticipants::new(1024, ClientTls::default(), None);
        let outcome = caller.call(request).await;
        let _held = server.await.unwrap();
        let CallOutcome::NotDelivered { reason } = outcome else {
            panic!("no request went on an unfinished connection: {outcome:?}")
        };
        assert!(
            reason.contains("no connection within the step timeout of 300ms"),
            "{reason}"
        );
    }

    #[tokio::test]
    async fn a_request_written_and_never_answered_has_an_unknown_effect() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            // Read the whole request (its JSON body ends in `}`), then hold
            // the connection without answering.
            let mut got = Vec::new();
            while !(got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"}")) {
                let mut chunk = [0u8; 4096];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                }
            }
            (stream, got)
        });
        // Generous, so that the request is surely written before it passes.
        let timeout = Duration::from_secs(3);
        let mut request = call_to(&format!("http://{addr}/pay"), None);
        request.timeout = timeout;
        let caller = HttpParticipants::new(1024, ClientTls::default(), None);
        let (outcome, held) = tokio::join!(caller.call(request), server);
        let (_held, got) = held.unwrap();
        assert!(got.ends_with(b"}"), "the participant got the whole request");
        assert_eq!(outcome, classify::timeout(timeout));
    }
}
