//! The caller the server gives the engine: each call goes to the caller of
//! its endpoint's protocol (see the module essay in `mod.rs`).

use async_trait::async_trait;

use super::{
    CallRequest, ConfigErrorCount, GrpcParticipants, HttpParticipants, Participants,
    guard::AllowList,
};
use crate::{saga::CallOutcome, tls::ClientTls};

/// gRPC and HTTP/JSON callers, sharing one allow-list and one size limit.
pub struct Callers {
    grpc: GrpcParticipants,
    http: HttpParticipants,
}

impl Callers {
    /// Callers accepting answers up to `max_message_bytes`, reaching
    /// `https://` participants of either protocol with `tls`, and connecting
    /// only where `allow` allows (when given).
    pub fn new(max_message_bytes: usize, tls: ClientTls, allow: Option<AllowList>) -> Self {
        Self {
            grpc: GrpcParticipants::with_tls_allowing(
                max_message_bytes,
                tls.clone(),
                allow.clone(),
            ),
            http: HttpParticipants::new(max_message_bytes, tls, allow),
        }
    }
}

#[async_trait]
impl Participants for Callers {
    async fn call(&self, request: CallRequest) -> CallOutcome {
        if request.endpoint.protocol().is_json() {
            self.http.call(request).await
        } else {
            self.grpc.call(request).await
        }
    }

    fn config_errors(&self) -> Vec<ConfigErrorCount> {
        self.http.config_errors()
    }
}
