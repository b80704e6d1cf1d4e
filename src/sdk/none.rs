//! [`NoBarrier`]: no record at all, for handlers that are naturally
//! idempotent and keep no state (the benchmark's no-op participants). A
//! repeat runs the handler again, and a compensation always runs: only use it
//! when running twice and undoing nothing are both harmless.

use std::marker::PhantomData;

use async_trait::async_trait;

use super::{Barrier, BarrierError, Handler, call::Answer, call::Request, run_handler};

/// What a [`NoBarrier`] handler writes through: nothing.
#[derive(Debug, Default)]
pub struct NoTx<'a>(PhantomData<&'a ()>);

/// The barrier that records nothing: no store, no lock, no disk.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoBarrier;

#[async_trait]
impl Barrier for NoBarrier {
    /// Nothing to write through.
    type Tx<'a> = NoTx<'a>;

    const SERIALIZES: bool = false;

    async fn call<H: Handler<Self>>(
        &self,
        handler: &H,
        request: &Request,
    ) -> Result<Answer, BarrierError> {
        Ok(
            match run_handler(handler, request, &mut NoTx::default()).await {
                Ok(answer) => Answer::Final(answer),
                Err((reason, after)) => Answer::Retry { reason, after },
            },
        )
    }
}
