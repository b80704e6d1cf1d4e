//! What a journal's writer is asked to do: the one request type that both
//! writers take from their bounded queue (the sled journal's thread,
//! `kv/writer.rs`; the PostgreSQL journal's task, `postgres/writer.rs`), and
//! the send-then-await that every journal handle does with it.

use tokio::sync::{mpsc, oneshot};

use crate::{
    journal::JournalError,
    saga::{Event, Participant, SagaId},
};

/// A write for the writer, with where its answer goes.
pub(in crate::journal) enum WriteRequest {
    Append {
        events: Vec<Event>,
        reply: oneshot::Sender<Result<Vec<Event>, JournalError>>,
    },
    PutParticipant {
        participant: Box<Participant>,
        reply: oneshot::Sender<Result<(), JournalError>>,
    },
    /// Remove these sagas, the final ones only: by retention, or once the
    /// history tier holds them.
    Remove {
        ids: Vec<SagaId>,
        to: RemovedTo,
        reply: oneshot::Sender<Result<Vec<SagaId>, JournalError>>,
    },
    /// Retention of a history segment: raise the archive horizon to
    /// `offset` (never lowers it). Only a journal with a history tier is
    /// sent it.
    ArchiveThrough {
        offset: u64,
        reply: oneshot::Sender<Result<(), JournalError>>,
    },
    Close {
        reply: oneshot::Sender<Result<(), JournalError>>,
    },
}

/// Where removed sagas went, which says which horizon their offsets raise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::journal) enum RemovedTo {
    /// Retention archived them: they are gone from every read, and
    /// resuming the feed below their offsets is refused.
    Archive,
    /// The history tier holds them (`journal/history/`): reads find them
    /// there, and the feed reads their events from it.
    History,
}

impl WriteRequest {
    /// Answers the request with `error`, unwritten.
    pub(in crate::journal) fn refuse(self, error: JournalError) {
        match self {
            WriteRequest::Append { reply, .. } => drop(reply.send(Err(error))),
            WriteRequest::PutParticipant { reply, .. } => drop(reply.send(Err(error))),
            WriteRequest::Remove { reply, .. } => drop(reply.send(Err(error))),
            WriteRequest::ArchiveThrough { reply, .. } => drop(reply.send(Err(error))),
            WriteRequest::Close { reply } => drop(reply.send(Err(error))),
        }
    }
}

/// Queues the request `make` builds and waits for its answer; a writer that
/// is gone (or goes before answering) is [`JournalError::Closed`].
pub(in crate::journal) async fn send<T>(
    request_tx: &mpsc::Sender<WriteRequest>,
    make: impl FnOnce(oneshot::Sender<Result<T, JournalError>>) -> WriteRequest,
) -> Result<T, JournalError> {
    let (reply, result) = oneshot::channel();
    request_tx
        .send(make(reply))
        .await
        .map_err(|_| JournalError::Closed)?;
    result.await.map_err(|_| JournalError::Closed)?
}

/// Asks the writer to write what is queued and stop; a writer already gone
/// has nothing left to write.
pub(in crate::journal) async fn close(
    request_tx: &mpsc::Sender<WriteRequest>,
) -> Result<(), JournalError> {
    match send(request_tx, |reply| WriteRequest::Close { reply }).await {
        Err(JournalError::Closed) => Ok(()),
        other => other,
    }
}
