//! A request body that tells whether it was ever handed to a connection.
//!
//! hyper-util's client connects inside `request()`, so when the step timeout
//! cuts a call off, the error alone does not say whether the request went
//! out: the connection may still have been on its way (a slow handshake, a
//! full accept queue), or the request may have been written and the answer be
//! late. hyper asks for the body only once it writes the request on a
//! connection; a participant cannot act on a `POST` whose body it never got
//! (its `Content-Length` is never met), so a body never asked for means the
//! request certainly never reached anyone: `NotDelivered`, as the gRPC side
//! says of a connection not made within the step timeout.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use http_body_util::Full;
use hyper::body::{Body, Bytes, Frame, SizeHint};

/// [`Full`], noting in a shared flag when it is first polled.
pub struct Sent {
    inner: Full<Bytes>,
    polled: Arc<AtomicBool>,
}

/// Whether a [`Sent`] body was handed to a connection.
#[derive(Clone, Default)]
pub struct Handed(Arc<AtomicBool>);

impl Handed {
    /// `bytes` as a body that sets this flag when hyper first asks for it.
    pub fn body(&self, bytes: Bytes) -> Sent {
        Sent {
            inner: Full::new(bytes),
            polled: Arc::clone(&self.0),
        }
    }

    /// True once hyper asked for the body: the request may have arrived.
    pub fn may_have_arrived(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

impl Body for Sent {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.polled.store(true, Ordering::Release);
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    // Delegated so that hyper still sends a `Content-Length`.
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn the_flag_is_set_by_the_first_poll_and_the_body_is_unchanged() {
        let handed = Handed::default();
        let body = handed.body(Bytes::from_static(b"{\"a\":1}"));
        assert_eq!(body.size_hint().exact(), Some(7), "Content-Length is known");
        assert!(!handed.may_have_arrived());
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"{\"a\":1}");
        assert!(handed.may_have_arrived());
    }
}
