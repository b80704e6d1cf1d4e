//! Following one saga: its journaled events from the first, then live ones, until
//! the terminal one (the last one journaled: a FAILED saga an operator retried
//! has a terminal event before it too).
//!
//! The subscription to the runner's live events is taken *before* the journal is
//! read, so no event falls between the two; events seen in both are skipped by
//! `seq`. A watcher that falls behind the live buffer re-reads the journal from
//! where it was, so a slow watcher never slows the saga and never misses an event.
//!
//! In a cluster, a saga another node runs has no runner here: its watcher
//! reads the journal again whenever the durable offset moves (at most ten
//! times a second), so `WatchSaga` works on any node.

use tokio::sync::{broadcast, mpsc};

use super::{Command, Engine};
use crate::{
    Error, Result,
    saga::{Event, SagaId, SagaState, SagaStatus},
};

/// Events a watch stream buffers for a slow client.
const WATCH_STREAM_BUFFER: usize = 64;
/// The shortest time between two reads of a saga another node runs: each
/// read is the saga's whole history.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// One event, with the saga's state right after it.
#[derive(Clone, Debug)]
pub struct WatchItem {
    pub event: Event,
    pub status: SagaStatus,
}

/// Streams what [`Engine::watch`] promises.
struct Watcher {
    engine: Engine,
    id: SagaId,
    state: Option<SagaState>,
    out: mpsc::Sender<Result<WatchItem>>,
}

impl Watcher {
    /// Sends `event` if it is the next one; false when the stream should end:
    /// at a terminal event, unless `more` follow it (a FAILED saga an
    /// operator retried goes on past its first terminal event).
    async fn send(&mut self, event: Event, more: bool) -> bool {
        let last = self.state.as_ref().map_or(0, |s| s.last_seq);
        if event.seq <= last {
            return true; // seen already (journal and live overlap)
        }
        let applied = match self.state.as_mut() {
            Some(state) => state.apply(&event).map_err(Error::from),
            None => SagaState::start(&event)
                .map(|s| self.state = Some(s))
                .map_err(Error::from),
        };
        if let Err(e) = applied {
            let _ = self.out.send(Err(e)).await;
            return false;
        }
        let status = self
            .state
            .as_ref()
            .map(|s| s.status)
            .unwrap_or(SagaStatus::Running);
        let ends = event.kind.is_terminal() && !more;
        self.out.send(Ok(WatchItem { event, status })).await.is_ok() && !ends
    }

    /// Sends every journaled event not sent yet; false when the stream should end.
    async fn catch_up(&mut self) -> bool {
        match self.engine.journal().read_saga(self.id).await {
            Ok(events) => {
                let mut events = events.into_iter().peekable();
                while let Some(event) = events.next() {
                    let more = events.peek().is_some();
                    if !self.send(event, more).await {
                        return false;
                    }
                }
                true
            }
            Err(e) => {
                let _ = self.out.send(Err(e.into())).await;
                false
            }
        }
    }

    async fn run(mut self, live: Option<broadcast::Receiver<Event>>) {
        if !self.catch_up().await {
            return;
        }
        if let Some(mut live) = live {
            loop {
                match live.recv().await {
                    Ok(event) => {
                        if !self.send(event, false).await {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if !self.catch_up().await {
                            return;
                        }
                    }
                    // The runner stopped: whatever it did is in the journal.
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
            if !self.catch_up().await {
                return;
            }
        }
        // Still here: the saga is not terminal and has no runner here. In a
        // cluster another node may run it: its events reach the journal.
        if self.engine.shares_its_journal() {
            self.follow_journal().await;
            return;
        }
        self.shutting_down().await;
    }

    /// Follows a saga another node runs, from the journal: read again each
    /// time the durable offset moves (other nodes' commits reach it within
    /// the feed poll), at most every [`FOLLOW_EVERY`], until its terminal
    /// event or shutdown.
    async fn follow_journal(mut self) {
        let mut durable = self.engine.journal().durable_offset();
        let shutdown = self.engine.inner.shutdown.clone();
        loop {
            tokio::select! {
                changed = durable.changed() => if changed.is_err() { break },
                () = shutdown.cancelled() => break,
            }
            if !self.catch_up().await {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(FOLLOW_EVERY) => {}
                () = shutdown.cancelled() => break,
            }
        }
        self.shutting_down().await;
    }

    async fn shutting_down(self) {
        let _ = self
            .out
            .send(Err(Error::Unavailable(
                "the coordinator is shutting down; watch again after it restarts".into(),
            )))
            .await;
    }
}

impl Engine {
    /// The saga's events from the first, then live ones; the stream ends after
    /// the terminal event.
    pub async fn watch(&self, id: SagaId) -> Result<mpsc::Receiver<Result<WatchItem>>> {
        // Subscribe first, then check the saga exists: see the module docs.
        let live = loop {
            if let Some(live) = self.ask(id, |reply| Command::Watch { reply }).await {
                if self.journal().read_saga(id).await?.is_empty() {
                    return Err(Error::NotFound(format!("saga {id} not found")));
                }
                break Some(live);
            }
            let saga = self.get(id).await?;
            // Still owned yet unanswered: its runner was ending or parking
            // (asking again wakes it). Otherwise the journal has it all.
            if saga.status.is_terminal() || !self.is_owned(id) {
                break None;
            }
            tokio::task::yield_now().await;
        };
        let (out, stream) = mpsc::channel(WATCH_STREAM_BUFFER);
        let watcher = Watcher {
            engine: self.clone(),
            id,
            state: None,
            out,
        };
        // Tracked, and bounded by the runner: at shutdown the runner stops, the
        // live channel closes, and the watcher ends after a last catch-up.
        self.inner.tracker.spawn(watcher.run(live));
        Ok(stream)
    }
}
