//! One batch, worked out before any statement is sent: which requests it
//! takes, and the rows they write, as the column arrays the batch's
//! multi-row statements take (`unnest($1::uuid[], …)`).
//!
//! A batch takes requests in queue order, with two rules that keep every
//! statement of the batch simple and every saga's order intact:
//! - **One append per saga, one start per idempotency key, one write per
//!   participant name.** A request that would break this waits for the next
//!   batch (it is carried over and taken first, in order), so one saga's
//!   appends commit in the order they were made, each saga row is written
//!   once per transaction, and a key taken within the batch is judged
//!   against the database in the next one rather than guessed at here.
//! - **Removals ride along.** They only touch final sagas, which no append
//!   changes, and run after the appends in the same transaction.
//!
//! Nothing here talks to PostgreSQL: it is tested with plain events.

use std::{
    collections::{HashMap, HashSet},
    time::SystemTime,
};

use tokio::sync::oneshot;
use uuid::Uuid;

use super::status_name;
use crate::{
    journal::{
        JournalError,
        kv::codec,
        request::{RemovedTo, WriteRequest},
    },
    saga::{Event, EventKind, SagaId, SagaStatus, Timestamp},
};

/// An append taken into the batch.
pub(super) struct Append {
    pub events: Vec<Event>,
    pub reply: oneshot::Sender<Result<Vec<Event>, JournalError>>,
}

/// A participant write taken into the batch: its name, its encoded record.
pub(super) struct Put {
    pub name: String,
    pub body: Vec<u8>,
    pub reply: oneshot::Sender<Result<(), JournalError>>,
}

/// A removal taken into the batch.
pub(super) struct Removal {
    pub ids: Vec<SagaId>,
    pub reply: oneshot::Sender<Result<Vec<SagaId>, JournalError>>,
}

/// The requests one batch takes.
#[derive(Default)]
pub(super) struct Batch {
    pub appends: Vec<Append>,
    pub puts: Vec<Put>,
    pub removals: Vec<Removal>,
    /// Sagas an append of this batch touches.
    sagas: HashSet<SagaId>,
    /// Idempotency keys a start of this batch claims.
    keys: HashSet<String>,
    /// Participant names written in this batch.
    names: HashSet<String>,
}

impl Batch {
    /// Takes `request` into the batch, or hands it back when it must wait
    /// for the next one (see the module docs). `Close` is never taken.
    pub fn take(&mut self, request: WriteRequest) -> Option<WriteRequest> {
        match request {
            WriteRequest::Append { events, reply } => {
                let keys: Vec<&String> = events.iter().filter_map(start_key).collect();
                let clashes = events.iter().any(|e| self.sagas.contains(&e.saga))
                    || keys.iter().any(|k| self.keys.contains(*k));
                if clashes {
                    return Some(WriteRequest::Append { events, reply });
                }
                self.keys.extend(keys.into_iter().cloned());
                self.sagas.extend(events.iter().map(|e| e.saga));
                self.appends.push(Append { events, reply });
                None
            }
            WriteRequest::PutParticipant { participant, reply } => {
                if !self.names.insert(participant.name.clone()) {
                    return Some(WriteRequest::PutParticipant { participant, reply });
                }
                self.puts.push(Put {
                    name: participant.name.clone(),
                    body: codec::encode(&*participant),
                    reply,
                });
                None
            }
            WriteRequest::Remove { ids, to, reply } => {
                // The PostgreSQL journal keeps no history tier.
                debug_assert_eq!(to, RemovedTo::Archive);
                self.removals.push(Removal { ids, reply });
                None
            }
            WriteRequest::ArchiveThrough { reply, .. } => {
                // Sent only by a journal with a history tier, which this is not.
                let _ = reply.send(Err(JournalError::Closed));
                None
            }
            close @ WriteRequest::Close { .. } => Some(close),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.appends.is_empty() && self.puts.is_empty() && self.removals.is_empty()
    }

    /// Events in the batch, all appends together.
    pub fn event_count(&self) -> usize {
        self.appends.iter().map(|a| a.events.len()).sum()
    }

    /// Drops the appends touching any of `sagas` from the batch and returns
    /// them (to be refused); the batch is then worked out again without them.
    pub fn drop_appends_of(&mut self, sagas: &HashSet<SagaId>) -> Vec<Append> {
        let (dropped, kept) = std::mem::take(&mut self.appends)
            .into_iter()
            .partition(|a: &Append| a.events.iter().any(|e| sagas.contains(&e.saga)));
        self.appends = kept;
        dropped
    }

    /// The rows the batch's appends write.
    pub fn rows(&self) -> Rows {
        let mut rows = Rows::default();
        for append in &self.appends {
            for change in changes(&append.events) {
                rows.add(change);
            }
            for event in &append.events {
                rows.event_saga.push(uuid(event.saga));
                rows.event_seq.push(event.seq as i64);
                // Stored without its offset: the row's offset column is the
                // one truth, taken in the same statement (`writer.rs`).
                let mut stored = event.clone();
                stored.offset = crate::saga::Offset::ZERO;
                rows.event_body.push(codec::encode(&stored));
            }
        }
        rows
    }
}

/// The idempotency key a `SagaStarted` claims.
fn start_key(event: &Event) -> Option<&String> {
    match &event.kind {
        EventKind::SagaStarted {
            idempotency_key: Some(key),
            ..
        } => Some(key),
        _ => None,
    }
}

/// A saga id as PostgreSQL's uuid.
pub(super) fn uuid(id: SagaId) -> Uuid {
    Uuid::from_bytes(*id.as_bytes())
}

/// What one append does to one saga's row.
#[derive(Debug, PartialEq)]
struct Change<'a> {
    saga: SagaId,
    /// Set when the append starts the saga: its definition, key and start time.
    started: Option<(&'a str, Option<&'a str>, Timestamp)>,
    first_seq: u64,
    last_seq: u64,
    /// The last status the events move the saga to, and when they did.
    status: Option<(SagaStatus, Timestamp)>,
    /// `Some(due)`: the next attempt is now due at `due` (`None`: nothing
    /// waits); `None`: the events do not change it.
    due: Option<Option<Timestamp>>,
}

/// The changes of one append, one per saga, in the order the sagas first
/// appear in it.
fn changes(events: &[Event]) -> Vec<Change<'_>> {
    let mut order: Vec<Change<'_>> = Vec::new();
    let mut at: HashMap<SagaId, usize> = HashMap::new();
    for event in events {
        let index = *at.entry(event.saga).or_insert_with(|| {
            order.push(Change {
                saga: event.saga,
                started: None,
                first_seq: event.seq,
                last_seq: event.seq,
                status: None,
                due: None,
            });
            order.len() - 1
        });
        let change = &mut order[index];
        change.last_seq = event.seq;
        if let EventKind::SagaStarted {
            definition,
            idempotency_key,
            ..
        } = &event.kind
        {
            change.started = Some((definition, idempotency_key.as_deref(), event.at));
        }
        if let Some(status) = SagaStatus::after(&event.kind) {
            change.status = Some((status, event.at));
        }
        match &event.kind {
            EventKind::AttemptFailed { retry_at, .. } => change.due = Some(*retry_at),
            EventKind::SagaStarted {
                start_at: Some(start),
                ..
            } => change.due = Some(Some(*start)),
            EventKind::AttemptStarted { .. } | EventKind::StartReached => change.due = Some(None),
            kind if kind.is_terminal() => change.due = Some(None),
            _ => {}
        }
    }
    order
}

/// The column arrays of the batch's saga and event statements.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Rows {
    // Sagas started by the batch (INSERT).
    pub new_id: Vec<Uuid>,
    pub new_key: Vec<Option<String>>,
    pub new_definition: Vec<String>,
    pub new_status: Vec<&'static str>,
    pub new_created: Vec<SystemTime>,
    pub new_ended: Vec<Option<SystemTime>>,
    pub new_due: Vec<Option<SystemTime>>,
    pub new_last_seq: Vec<i64>,
    // Sagas the batch goes on with (UPDATE, guarded).
    pub upd_id: Vec<Uuid>,
    /// The `last_seq` the row must have: the append's first seq, less one.
    pub upd_prev_seq: Vec<i64>,
    pub upd_last_seq: Vec<i64>,
    /// The new status, or NULL to keep it.
    pub upd_status: Vec<Option<&'static str>>,
    /// With a new status: when it ended (NULL: not ended).
    pub upd_ended: Vec<Option<SystemTime>>,
    pub upd_due_set: Vec<bool>,
    pub upd_due: Vec<Option<SystemTime>>,
    // Every event of the batch, in order.
    pub event_saga: Vec<Uuid>,
    pub event_seq: Vec<i64>,
    pub event_body: Vec<Vec<u8>>,
}

/// When a status makes a saga end: its time, for `ended_at`.
fn ended(status: Option<(SagaStatus, Timestamp)>) -> Option<SystemTime> {
    status
        .filter(|(s, _)| s.is_terminal())
        .map(|(_, at)| at.to_system_time())
}

impl Rows {
    fn add(&mut self, change: Change<'_>) {
        let due = change.due.flatten().map(Timestamp::to_system_time);
        match change.started {
            Some((definition, key, created)) => {
                self.new_id.push(uuid(change.saga));
                self.new_key.push(key.map(str::to_string));
                self.new_definition.push(definition.to_string());
                let status = change.status.map_or(SagaStatus::Running, |(s, _)| s);
                self.new_status.push(status_name(status));
                self.new_created.push(created.to_system_time());
                self.new_ended.push(ended(change.status));
                self.new_due.push(due);
                self.new_last_seq.push(change.last_seq as i64);
            }
            None => {
                self.upd_id.push(uuid(change.saga));
                self.upd_prev_seq.push(change.first_seq as i64 - 1);
                self.upd_last_seq.push(change.last_seq as i64);
                self.upd_status
                    .push(change.status.map(|(s, _)| status_name(s)));
                self.upd_ended.push(ended(change.status));
                self.upd_due_set.push(change.due.is_some());
                self.upd_due.push(due);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        saga::Action,
        testing::{attempt, next, started},
    };

    fn append(
        events: Vec<Event>,
    ) -> (
        WriteRequest,
        oneshot::Receiver<Result<Vec<Event>, JournalError>>,
    ) {
        let (reply, rx) = oneshot::channel();
        (WriteRequest::Append { events, reply }, rx)
    }

    #[test]
    fn a_second_append_of_a_saga_or_a_key_waits_for_the_next_batch() {
        let mut batch = Batch::default();
        let first = started("shop", Some("k"));
        let id = first.saga;
        assert!(batch.take(append(vec![first]).0).is_none());
        let again = batch.take(append(vec![next(id, 2, attempt(1))]).0);
        assert!(
            matches!(again, Some(WriteRequest::Append { .. })),
            "same saga"
        );
        let same_key = batch.take(append(vec![started("shop", Some("k"))]).0);
        assert!(
            matches!(same_key, Some(WriteRequest::Append { .. })),
            "same key"
        );
        assert!(
            batch
                .take(append(vec![started("shop", Some("other"))]).0)
                .is_none()
        );
        assert_eq!(batch.appends.len(), 2);
    }

    #[test]
    fn rows_say_what_each_saga_becomes() {
        let mut batch = Batch::default();
        let first = started("shop", None);
        let new_id = first.saga;
        let mut start_and_fail = vec![first, next(new_id, 2, attempt(1))];
        start_and_fail.push(next(
            new_id,
            3,
            EventKind::AttemptFailed {
                step: 0,
                action: Action::Forward,
                attempt: 1,
                failure: crate::saga::Failure::Transient,
                error: "e".into(),
                retry_at: Some(Timestamp(5_000)),
            },
        ));
        let old = SagaId::generate();
        let mut done = next(old, 7, EventKind::SagaCompleted);
        done.at = Timestamp(9_000);
        batch.take(append(start_and_fail).0);
        batch.take(append(vec![next(old, 6, attempt(2)), done]).0);
        let rows = batch.rows();
        assert_eq!(rows.new_id, vec![uuid(new_id)]);
        assert_eq!(rows.new_status, vec!["running"]);
        assert_eq!(rows.new_last_seq, vec![3]);
        assert_eq!(rows.new_due, vec![Some(Timestamp(5_000).to_system_time())]);
        assert_eq!(rows.new_ended, vec![None]);
        assert_eq!(rows.upd_id, vec![uuid(old)]);
        assert_eq!(rows.upd_prev_seq, vec![5], "the row must be at event 5");
        assert_eq!(rows.upd_last_seq, vec![7]);
        assert_eq!(rows.upd_status, vec![Some("completed")]);
        assert_eq!(
            rows.upd_ended,
            vec![Some(Timestamp(9_000).to_system_time())]
        );
        assert_eq!((rows.upd_due_set[0], rows.upd_due[0]), (true, None));
        assert_eq!(rows.event_seq, vec![1, 2, 3, 6, 7]);
    }
}
