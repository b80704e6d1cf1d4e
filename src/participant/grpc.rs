//! Calls any gRPC method URL with `StepRequest` → `StepResponse`.
//!
//! Guarantees:
//! - One HTTP/2 connection per participant origin (`http://host:port`, or
//!   `https://host:port` over TLS), made on first use, shared by every later
//!   call, replaced when it closes (`connections.rs`).
//! - Every call carries the step timeout as its gRPC deadline and is also cut off
//!   locally at that timeout, so a participant that never answers cannot hold a
//!   saga longer than its timeout.
//! - Every call carries the request's W3C `traceparent` (and `tracestate`)
//!   metadata, so the participant's traces join the saga's, and in cluster
//!   mode the caller's epoch as `x-sagad-epoch` ([`EPOCH_HEADER`]).
//! - A failure is `NotDelivered` only when the request certainly never left,
//!   and `Transient` (effect unknown) otherwise:
//!   - no connection: the TCP connect, the TLS handshake (a certificate the
//!     coordinator does not trust, say) or the HTTP/2 handshake failed, or
//!     neither finished within the step's timeout. A request is only ever
//!     given to a connection that exists, so nothing of it was sent;
//!   - the connection was closed before the call was handed to it (tonic's
//!     `ready`: hyper's `poll_ready` checks only that);
//!   - hyper handed the request back (`connections::Unsent`): its connection
//!     task never took it from the queue, so h2 never saw it.
//!
//!   Everything after hyper's task took the request (the headers may be on
//!   the wire, a reset, a lost connection, a timeout, any status) is
//!   `Transient`, even where the participant may well have done nothing (an
//!   HTTP/2 `REFUSED_STREAM`, say): only what certainly did not reach it
//!   counts, since a step that is not compensated must have done nothing.

use std::time::Duration;

/// The metadata key of the calling node's epoch (cluster mode): a decimal
/// number that only grows per node id, and grows when a saga changes owner.
pub const EPOCH_HEADER: &str = "x-sagad-epoch";

use async_trait::async_trait;
use tokio::time::Instant;
use tonic::metadata::{AsciiMetadataValue, MetadataMap, MetadataValue};

use super::{CallRequest, Participants, classify, connections::Connections, guard::AllowList};
use crate::{
    proto::v1::{Action as ProtoAction, StepRequest, StepResponse},
    saga::{Action, CallOutcome},
    tls::ClientTls,
    trace,
};

/// Calls participants over gRPC.
pub struct GrpcParticipants {
    connections: Connections,
    /// Largest answer accepted; a larger one is a transient error.
    max_message_bytes: usize,
}

impl GrpcParticipants {
    /// A caller that accepts answers up to `max_message_bytes`, and reaches
    /// `https://` participants with the system's roots.
    pub fn new(max_message_bytes: usize) -> Self {
        Self::with_tls(max_message_bytes, ClientTls::default())
    }

    /// As [`GrpcParticipants::new`], reaching `https://` participants with `tls`.
    pub fn with_tls(max_message_bytes: usize, tls: ClientTls) -> Self {
        Self::with_tls_allowing(max_message_bytes, tls, None)
    }

    /// As [`GrpcParticipants::with_tls`], connecting only to the hosts `allow`
    /// allows, when given (`--participant-allow`; see `guard.rs`). A call to
    /// any other is not delivered, and says why.
    pub fn with_tls_allowing(
        max_message_bytes: usize,
        tls: ClientTls,
        allow: Option<AllowList>,
    ) -> Self {
        Self {
            connections: Connections::new(tls, allow),
            max_message_bytes,
        }
    }
}

/// Adds the W3C trace context headers. The runner builds the `traceparent`
/// from hex digits, and a `tracestate` is only kept if it arrived as valid
/// metadata, so neither can fail to convert; if one ever did, the call goes
/// without it rather than not at all.
///
/// Both are marked never to be indexed by HPACK: a `traceparent` is new on
/// every call, and indexed it filled the connection's header table with values
/// never seen again, each call first comparing itself with all of them and then
/// evicting the oldest (6.9% of the coordinator's instructions went to header
/// encoding, session 8).
fn set_trace_metadata(metadata: &mut MetadataMap, traceparent: &str, tracestate: Option<&str>) {
    if let Ok(mut value) = MetadataValue::try_from(traceparent) {
        value.set_sensitive(true);
        metadata.insert(trace::TRACEPARENT, value);
    }
    if let Some(Ok(mut value)) = tracestate.map(MetadataValue::try_from) {
        value.set_sensitive(true);
        metadata.insert(trace::TRACESTATE, value);
    }
}

/// The metadata key of a call's deadline.
const GRPC_TIMEOUT: &str = "grpc-timeout";

/// The `grpc-timeout` value for `timeout`, as tonic's `Request::set_timeout`
/// writes it: the count in the finest unit that fits the 8 digits gRPC allows.
/// Written by hand because `set_timeout` runs `format!` on every call (0.9% of
/// the coordinator's instructions, session 9).
fn grpc_timeout(timeout: Duration) -> AsciiMetadataValue {
    const MAX: u128 = 99_999_999;
    let secs = u128::from(timeout.as_secs());
    let (mut count, unit) = [
        (timeout.as_nanos(), b'n'),
        (timeout.as_micros(), b'u'),
        (timeout.as_millis(), b'm'),
        (secs, b'S'),
        (secs / 60, b'M'),
    ]
    .into_iter()
    .find(|&(count, _)| count <= MAX)
    .unwrap_or(((secs / 3600).min(MAX), b'H'));
    let mut text = [0u8; 9];
    let mut start = text.len() - 1;
    text[start] = unit;
    loop {
        start -= 1;
        text[start] = b'0' + (count % 10) as u8;
        count /= 10;
        if count == 0 {
            break;
        }
    }
    AsciiMetadataValue::try_from(&text[start..]).expect("digits and a unit letter are ASCII")
}

#[async_trait]
impl Participants for GrpcParticipants {
    async fn call(&self, request: CallRequest) -> CallOutcome {
        let origin = request.endpoint.origin();
        let path = request.endpoint.path_and_query().clone();
        let timeout = request.timeout;
        let mut message = tonic::Request::new(StepRequest {
            saga_id: request.saga_id.to_string(),
            definition: request.definition,
            step: request.step,
            action: match request.action {
                Action::Forward => ProtoAction::Forward,
                Action::Compensate => ProtoAction::Compensate,
            } as i32,
            attempt: request.attempt,
            idempotency_key: request.idempotency_key,
            payload: request.payload,
            outputs: request.outputs.into_iter().collect(),
        });
        message
            .metadata_mut()
            .insert(GRPC_TIMEOUT, grpc_timeout(timeout));
        set_trace_metadata(
            message.metadata_mut(),
            &request.traceparent,
            request.tracestate.as_deref(),
        );
        if let Some(epoch) = request.epoch {
            message.metadata_mut().insert(EPOCH_HEADER, epoch.into());
        }
        // Connecting counts against the step's timeout too. It comes first and
        // on its own: until it is done nothing of the request has been sent,
        // however it ends.
        let deadline = Instant::now() + timeout;
        let sender = match tokio::time::timeout_at(deadline, self.connections.sender(origin)).await
        {
            Ok(Ok(sender)) => sender,
            Ok(Err(e)) => return classify::not_delivered(origin, e),
            Err(_) => {
                return classify::not_delivered(
                    origin,
                    format!("no connection within the step timeout of {timeout:?}"),
                );
            }
        };
        let unsent = sender.unsent();
        let call = async {
            let origin_uri = sender.origin_uri();
            let mut grpc = tonic::client::Grpc::with_origin(sender, origin_uri)
                .max_decoding_message_size(self.max_message_bytes);
            if let Err(closed) = grpc.ready().await {
                return classify::not_delivered(origin, closed.message());
            }
            let codec = tonic_prost::ProstCodec::<StepRequest, StepResponse>::default();
            match grpc.unary(message, path, codec).await {
                Ok(answer) => classify::response(answer.into_inner()),
                Err(status) if unsent.is_certain() => {
                    classify::not_delivered(origin, status.message())
                }
                Err(status) => classify::status(&status),
            }
        };
        match tokio::time::timeout_at(deadline, call).await {
            Ok(outcome) => outcome,
            Err(_) => classify::timeout(timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::AsyncReadExt,
        net::{TcpListener, TcpStream},
    };

    use super::*;
    use crate::saga::{Endpoint, SagaId};

    fn request_to(addr: std::net::SocketAddr) -> CallRequest {
        CallRequest {
            endpoint: Endpoint::parse("f", &format!("http://{addr}/p.S/Do")).unwrap(),
            participant: "p".into(),
            timeout: Duration::from_secs(20),
            saga_id: SagaId::generate(),
            definition: "d".into(),
            step: "s".into(),
            action: Action::Forward,
            attempt: 1,
            idempotency_key: "k".into(),
            payload: b"{}".to_vec(),
            outputs: vec![],
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            tracestate: None,
            epoch: Some(7),
        }
    }

    /// A loopback address nothing listens on: a port the kernel just gave out
    /// and took back.
    async fn dead_address() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    }

    #[tokio::test]
    async fn a_refused_connection_is_not_delivered() {
        let addr = dead_address().await;
        let outcome = GrpcParticipants::new(1024).call(request_to(addr)).await;
        let CallOutcome::NotDelivered { reason } = outcome else {
            panic!("a refused connection never carried the request: {outcome:?}")
        };
        assert!(reason.contains(&addr.to_string()), "{reason}");
    }

    #[tokio::test]
    async fn a_host_outside_the_allow_list_is_never_connected_to() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let allow = crate::participant::guard::AllowList::parse(["127.0.0.2/32"]).unwrap();
        let caller = GrpcParticipants::with_tls_allowing(1024, ClientTls::default(), Some(allow));
        let outcome = caller.call(request_to(addr)).await;
        let CallOutcome::NotDelivered { reason } = outcome else {
            panic!("a refused host is never sent a request: {outcome:?}")
        };
        assert!(
            reason.contains("host 127.0.0.1 is not in --participant-allow"),
            "{reason}"
        );
        // Had the call connected, the connection would be waiting already.
        let accepted = tokio::time::timeout(Duration::ZERO, listener.accept()).await;
        assert!(accepted.is_err(), "no connection was made");
    }

    /// Reads one HTTP/2 client's preface and frames until it has sent the
    /// HEADERS frame of a request, then drops the connection unanswered.
    async fn read_until_headers(stream: &mut TcpStream) {
        let mut preface = [0u8; 24];
        stream.read_exact(&mut preface).await.unwrap();
        assert_eq!(&preface, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        loop {
            let mut header = [0u8; 9];
            stream.read_exact(&mut header).await.unwrap();
            let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let mut payload = vec![0u8; length];
            stream.read_exact(&mut payload).await.unwrap();
            const HEADERS: u8 = 0x1;
            if header[3] == HEADERS {
                return;
            }
        }
    }

    #[tokio::test]
    async fn a_connection_lost_after_the_request_was_written_has_an_unknown_effect() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            read_until_headers(&mut stream).await;
            // The request arrived: the participant may act on it. Then the
            // connection dies without an answer.
        });
        let outcome = GrpcParticipants::new(1024).call(request_to(addr)).await;
        server.await.unwrap();
        assert!(
            matches!(outcome, CallOutcome::Transient { .. }),
            "the request reached the participant: {outcome:?}"
        );
    }

    #[test]
    fn deadlines_are_written_as_tonic_writes_them() {
        for timeout in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_nanos(99_999_999),
            Duration::from_nanos(100_000_000),
            Duration::from_millis(30_000),
            Duration::from_micros(123_456_789),
            Duration::from_secs(99_999_999),
            Duration::from_secs(100_000_000),
            Duration::from_secs(6_000_000_000),
        ] {
            let mut expected = tonic::Request::new(());
            expected.set_timeout(timeout);
            assert_eq!(
                Some(&grpc_timeout(timeout)),
                expected.metadata().get(GRPC_TIMEOUT),
                "{timeout:?}"
            );
        }
    }

    #[test]
    fn trace_headers_are_sent_and_never_indexed() {
        let mut metadata = MetadataMap::new();
        let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        set_trace_metadata(&mut metadata, traceparent, Some("vendor=a"));
        for (name, sent) in [
            (trace::TRACEPARENT, traceparent),
            (trace::TRACESTATE, "vendor=a"),
        ] {
            let value = metadata.get(name).expect("the header is set");
            assert_eq!(value.to_str().unwrap(), sent);
            assert!(
                value.is_sensitive(),
                "{name} must not enter the HPACK table"
            );
        }
    }
}
