//! The feed: every journaled transition of every saga, in offset order, from any
//! offset, then live.
//!
//! A subscriber names the last offset it has seen. Its task reads the journal's
//! offset index from there ([`Journal::read_after`](crate::journal::Journal::read_after)),
//! then waits for the journal's durable offset to move and reads again. It keeps
//! one cursor, the offset of the last event it handled, and only ever reads past
//! it, so:
//!
//! - **Exactly once, in order.** Offsets are assigned in durable order and are
//!   gap-free but for sagas archived by retention; each read starts right after
//!   the cursor. Reconnecting with the last offset received continues exactly
//!   after it, also across restarts (offsets are journaled and never reused).
//! - **Retention.** With `--retention`, sagas that ended long ago leave the
//!   journal (`crate::archive`), and their offsets with them. A subscription
//!   whose `after` is below the journal's archive horizon is refused with
//!   `FAILED_PRECONDITION`: events after it were archived, and the subscriber
//!   would miss them without a word. `after = 0` means "everything still in the
//!   journal" and is always accepted. A running feed delivers every event still
//!   in the journal when it gets there: one that falls further behind than the
//!   retention period skips the sagas archived meanwhile.
//! - **No cursor from elsewhere.** An `after` beyond the journal's last
//!   durable offset was never handed out by it: refused with `OUT_OF_RANGE`
//!   (after [`CURSOR_PATIENCE`], the moment another node's commits take to
//!   reach this one), never a wait that delivers nothing.
//! - **Nothing unstable.** The journal only hands out events below its durable
//!   horizon, so a crash cannot take back an event a subscriber has seen.
//! - **Slow subscribers never slow sagas.** The writer only publishes a number
//!   (a `watch` channel, which never blocks and never queues); a subscriber that
//!   falls behind simply reads more of the journal when it gets to it.
//!
//! Each event is sent with its saga's definition and state after it. The feed
//! learns them from `SagaStarted` events it passes, and reads a saga's history
//! once when it meets a saga mid-way (a subscription from a middle offset).

use std::{collections::HashMap, sync::Arc};

use tokio::sync::mpsc;

use super::Engine;
use crate::{
    Error, Result,
    saga::{Event, EventKind, Offset, SagaId, SagaStatus},
};

/// How long a subscription whose cursor is past this node's last durable
/// offset waits for it before it is refused (`OUT_OF_RANGE`), unless the
/// engine is told otherwise (`EngineConfig::cursor_patience`).
pub const CURSOR_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);
/// Events read from the journal at a time.
const FEED_PAGE: usize = 256;
/// Events a feed stream buffers for a slow client.
const FEED_STREAM_BUFFER: usize = 256;
/// Sagas whose definition and state a feed remembers; it forgets them all
/// beyond this (they are read again when met).
const FEED_SAGAS_MAX: usize = 100_000;

/// What to subscribe to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FeedQuery {
    /// Events with a greater offset are delivered; `Offset::ZERO` starts at
    /// the first.
    pub after: Offset,
    /// Only events of sagas of this definition.
    pub definition: Option<String>,
    /// Only events that change a saga's state.
    pub state_changes_only: bool,
}

/// One event of the feed.
#[derive(Clone, Debug)]
pub struct FeedItem {
    pub event: Event,
    /// The saga's state once the event is applied.
    pub status: SagaStatus,
    /// The saga's definition name.
    pub definition: Arc<str>,
    /// The saga's step names, by index (events name steps by index).
    pub steps: Arc<[String]>,
}

/// What a feed remembers about one saga.
struct SagaInfo {
    definition: Arc<str>,
    steps: Arc<[String]>,
    status: SagaStatus,
}

impl SagaInfo {
    fn from_start(kind: &EventKind) -> Option<SagaInfo> {
        match kind {
            EventKind::SagaStarted {
                definition, steps, ..
            } => Some(SagaInfo {
                definition: definition.as_str().into(),
                steps: steps.iter().map(|s| s.name.clone()).collect(),
                status: SagaStatus::Running,
            }),
            _ => None,
        }
    }
}

/// One subscriber's task.
struct Feed {
    engine: Engine,
    query: FeedQuery,
    /// The offset of the last event handled (sent or filtered out).
    cursor: Offset,
    sagas: HashMap<SagaId, SagaInfo>,
    out: mpsc::Sender<Result<FeedItem>>,
}

impl Feed {
    async fn run(mut self) {
        let journal = self.engine.journal().clone();
        let shutdown = self.engine.inner.shutdown.clone();
        let mut durable = journal.durable_offset();
        loop {
            // Mark the current horizon seen *before* reading: anything that
            // becomes durable during the read changes it again and wakes us.
            durable.borrow_and_update();
            loop {
                if shutdown.is_cancelled() {
                    return self.end_for_shutdown();
                }
                let page = match journal.read_after(self.cursor, FEED_PAGE).await {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = self.out.send(Err(e.into())).await;
                        return;
                    }
                };
                let full = page.len() == FEED_PAGE;
                for event in page {
                    if !self.deliver(event).await {
                        return;
                    }
                }
                if !full {
                    break;
                }
            }
            tokio::select! {
                changed = durable.changed() => {
                    if changed.is_err() {
                        break; // the journal is gone
                    }
                }
                _ = self.out.closed() => return,
                _ = shutdown.cancelled() => break,
            }
        }
        self.end_for_shutdown();
    }

    /// Tells the subscriber where to resume; never waits for a slow client.
    fn end_for_shutdown(&self) {
        let _ = self.out.try_send(Err(Error::Unavailable(format!(
            "the coordinator is shutting down; subscribe again with after_offset={} to continue",
            self.cursor
        ))));
    }

    /// Handles the next event; false when the stream should end.
    async fn deliver(&mut self, event: Event) -> bool {
        debug_assert!(event.offset > self.cursor, "read_after reads forward");
        self.cursor = event.offset;
        if !self.sagas.contains_key(&event.saga) {
            match self.learn(&event).await {
                // Archived since it was read: it is no longer in the journal.
                Ok(None) => return true,
                Ok(Some(info)) => {
                    if self.sagas.len() >= FEED_SAGAS_MAX {
                        self.sagas.clear();
                    }
                    self.sagas.insert(event.saga, info);
                }
                Err(e) => {
                    let _ = self.out.send(Err(e)).await;
                    return false;
                }
            }
        }
        let changes = SagaStatus::after(&event.kind);
        let Some(info) = self.sagas.get_mut(&event.saga) else {
            return true; // just inserted: unreachable
        };
        if let Some(status) = changes {
            info.status = status;
        }
        let wanted = (!self.query.state_changes_only || changes.is_some())
            && self
                .query
                .definition
                .as_deref()
                .is_none_or(|d| *d == *info.definition);
        let item = wanted.then(|| FeedItem {
            status: info.status,
            definition: info.definition.clone(),
            steps: info.steps.clone(),
            event: event.clone(),
        });
        if event.kind.is_terminal() {
            // A retried FAILED saga is read again if it comes back.
            self.sagas.remove(&event.saga);
        }
        match item {
            Some(item) => {
                let shutdown = self.engine.inner.shutdown.clone();
                tokio::select! {
                    sent = self.out.send(Ok(item)) => sent.is_ok(),
                    _ = shutdown.cancelled() => false,
                }
            }
            None => true,
        }
    }

    /// A saga's definition, steps and state just before `event`; `None` when
    /// the saga has been archived since.
    async fn learn(&self, event: &Event) -> Result<Option<SagaInfo>> {
        if let Some(info) = SagaInfo::from_start(&event.kind) {
            return Ok(Some(info));
        }
        let history = self.engine.journal().read_saga(event.saga).await?;
        if history.is_empty() {
            return Ok(None);
        }
        let mut info = history
            .first()
            .and_then(|first| SagaInfo::from_start(&first.kind))
            .ok_or_else(|| {
                Error::from(crate::journal::JournalError::Corrupt {
                    key: format!("saga {}", event.saga),
                    why: "its history does not begin with SagaStarted".into(),
                })
            })?;
        for earlier in history.iter().take_while(|e| e.seq < event.seq) {
            if let Some(status) = SagaStatus::after(&earlier.kind) {
                info.status = status;
            }
        }
        Ok(Some(info))
    }
}

impl Engine {
    /// The feed of every saga's events after `query.after`, then live ones, as
    /// the module docs describe. The stream ends only on an error or shutdown.
    pub async fn subscribe(&self, query: FeedQuery) -> Result<mpsc::Receiver<Result<FeedItem>>> {
        self.check_open()?;
        // A cursor past the last durable offset was not handed out by this
        // journal (another data directory's, a typo): waiting for it to be
        // reached would deliver nothing for who knows how long.
        let mut durable = self.journal().durable_offset();
        if *durable.borrow() < query.after {
            // Another node's commits reach this one's durable offset a
            // moment later (PostgreSQL: a poll of the feed head), so a
            // cursor a subscriber got from there is given that moment.
            let _ = tokio::time::timeout(
                self.inner.config.cursor_patience,
                durable.wait_for(|head| *head >= query.after),
            )
            .await;
        }
        let head = *durable.borrow();
        if query.after > head {
            return Err(Error::OutOfRange(format!(
                "after_offset {} is beyond the journal's last offset {head}: no event has it yet \
                 (offsets are never reused, so this cursor came from elsewhere); \
                 subscribe with after_offset={head} for what comes next, or after_offset=0 for everything",
                query.after
            )));
        }
        let archived = self.journal().archived_through().await?;
        if query.after > Offset::ZERO && query.after < archived {
            return Err(Error::FailedPrecondition(format!(
                "events after offset {} were archived by retention (the journal is complete only after offset {archived}); \
                 subscribe with after_offset={archived} to go on without them, or after_offset=0 for everything still in the journal; \
                 archived sagas are in the data directory's archive/ files (sagad export)",
                query.after
            )));
        }
        let (out, stream) = mpsc::channel(FEED_STREAM_BUFFER);
        let feed = Feed {
            engine: self.clone(),
            cursor: query.after,
            query,
            sagas: HashMap::new(),
            out,
        };
        // Tracked: shutdown waits for it, and it stops at once when asked.
        self.inner.tracker.spawn(feed.run());
        Ok(stream)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        engine::EngineConfig,
        journal::{Journal, MemoryJournal},
        participant::Participants,
        saga::{CallOutcome, EventKind},
        testing,
    };

    struct Nobody;

    #[async_trait::async_trait]
    impl Participants for Nobody {
        async fn call(&self, _request: crate::participant::CallRequest) -> CallOutcome {
            CallOutcome::Succeeded { output: vec![] }
        }
    }

    async fn engine() -> (Engine, Arc<dyn Journal>) {
        let journal: Arc<dyn Journal> = Arc::new(MemoryJournal::in_memory());
        let engine = Engine::new(
            journal.clone(),
            Arc::new(Nobody),
            vec![],
            EngineConfig::default(),
        )
        .await
        .unwrap();
        (engine, journal)
    }

    async fn next_item(stream: &mut mpsc::Receiver<Result<FeedItem>>) -> FeedItem {
        tokio::time::timeout(Duration::from_secs(30), stream.recv())
            .await
            .expect("a feed event within the deadline")
            .expect("the feed is open")
            .expect("no feed error")
    }

    /// Appends a saga of `definition`: started, cancelled, compensating, compensated.
    async fn saga(journal: &Arc<dyn Journal>, definition: &str) -> Vec<Event> {
        let mut all = Vec::new();
        for event in testing::cancelled(definition, None, EventKind::SagaCompensated) {
            all.extend(journal.append(vec![event]).await.unwrap());
        }
        all
    }

    #[tokio::test]
    async fn history_then_live_each_once_in_order_with_state_and_definition() {
        let (engine, journal) = engine().await;
        let first = saga(&journal, "shop").await;
        let mut stream = engine.subscribe(FeedQuery::default()).await.unwrap();
        let second = saga(&journal, "shop").await;
        let expected: Vec<Event> = first.into_iter().chain(second).collect();
        let mut statuses = Vec::new();
        for want in &expected {
            let item = next_item(&mut stream).await;
            assert_eq!(&item.event, want);
            assert_eq!(&*item.definition, "shop");
            assert_eq!(&*item.steps, ["only".to_string()]);
            statuses.push(item.status);
        }
        assert_eq!(
            statuses[..4],
            [
                SagaStatus::Running,
                SagaStatus::Running,
                SagaStatus::Compensating,
                SagaStatus::Compensated
            ]
        );
        assert!(stream.try_recv().is_err(), "nothing more than journaled");
        engine.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn archived_sagas_are_skipped_and_a_resume_below_the_horizon_is_refused() {
        let (engine, journal) = engine().await;
        let gone = saga(&journal, "shop").await;
        let kept = saga(&journal, "shop").await;
        journal.remove_sagas(vec![gone[0].saga]).await.unwrap();
        let horizon = gone.last().unwrap().offset;

        let mut everything = engine.subscribe(FeedQuery::default()).await.unwrap();
        for want in &kept {
            assert_eq!(&next_item(&mut everything).await.event, want);
        }
        let err = engine
            .subscribe(FeedQuery {
                after: gone[1].offset,
                ..FeedQuery::default()
            })
            .await
            .expect_err("a resume below the archive horizon is refused");
        match err {
            Error::FailedPrecondition(why) => {
                assert!(why.contains(&format!("after_offset={horizon}")), "{why}")
            }
            other => panic!("expected FAILED_PRECONDITION, got {other:?}"),
        }
        let mut resumed = engine
            .subscribe(FeedQuery {
                after: horizon,
                ..FeedQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(next_item(&mut resumed).await.event, kept[0]);
        engine.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn a_cursor_beyond_the_head_is_out_of_range_and_the_head_itself_waits() {
        let (engine, journal) = engine().await;
        let done = saga(&journal, "shop").await;
        let head = done.last().unwrap().offset;
        let err = engine
            .subscribe(FeedQuery {
                after: Offset(head.0 + 1),
                ..FeedQuery::default()
            })
            .await
            .expect_err("a cursor no event has yet is refused");
        match err {
            Error::OutOfRange(why) => {
                assert!(why.contains(&format!("after_offset={head}")), "{why}")
            }
            other => panic!("expected OUT_OF_RANGE, got {other:?}"),
        }
        // At the head: nothing yet, then what comes next.
        let mut next = engine
            .subscribe(FeedQuery {
                after: head,
                ..FeedQuery::default()
            })
            .await
            .unwrap();
        let later = saga(&journal, "shop").await;
        assert_eq!(next_item(&mut next).await.event, later[0]);
        engine.shutdown().await.unwrap();
    }

    /// A cursor just past the head that becomes durable within the
    /// patience (another node's commit reaching this one) is served.
    #[tokio::test]
    async fn a_cursor_the_head_reaches_soon_is_served() {
        let (engine, journal) = engine().await;
        let done = saga(&journal, "shop").await;
        let head = done.last().unwrap().offset;
        let subscribing = tokio::spawn({
            let engine = engine.clone();
            async move {
                engine
                    .subscribe(FeedQuery {
                        after: Offset(head.0 + 1),
                        ..FeedQuery::default()
                    })
                    .await
            }
        });
        let later = saga(&journal, "shop").await;
        let mut stream = subscribing
            .await
            .unwrap()
            .expect("served once the head reached it");
        assert_eq!(next_item(&mut stream).await.event, later[1]);
        engine.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn from_a_middle_offset_with_filters() {
        let (engine, journal) = engine().await;
        let shop = saga(&journal, "shop").await;
        let other = saga(&journal, "other").await;
        // From the middle of the first saga: its state is learnt from the journal.
        let mut stream = engine
            .subscribe(FeedQuery {
                after: shop[1].offset,
                ..FeedQuery::default()
            })
            .await
            .unwrap();
        let item = next_item(&mut stream).await;
        assert_eq!(item.event, shop[2]);
        assert_eq!(item.status, SagaStatus::Compensating);
        assert_eq!(next_item(&mut stream).await.event, shop[3]);
        assert_eq!(next_item(&mut stream).await.event, other[0]);

        let mut changes = engine
            .subscribe(FeedQuery {
                after: Offset::ZERO,
                definition: Some("other".into()),
                state_changes_only: true,
            })
            .await
            .unwrap();
        for want in [&other[0], &other[2], &other[3]] {
            let item = next_item(&mut changes).await;
            assert_eq!(&item.event, want);
            assert_eq!(&*item.definition, "other");
        }
        let later = saga(&journal, "other").await;
        assert_eq!(next_item(&mut changes).await.event, later[0]);
        engine.shutdown().await.unwrap();
        // Shutdown ends the stream saying where to resume.
        let end = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match changes.recv().await {
                    Some(Ok(_)) => continue,
                    other => return other,
                }
            }
        })
        .await
        .unwrap();
        match end {
            Some(Err(Error::Unavailable(why))) => assert!(why.contains("after_offset="), "{why}"),
            other => panic!("expected UNAVAILABLE at shutdown, got {other:?}"),
        }
    }
}
