//! Step snapshots shared by many sagas: written once, referred to by id.
//!
//! Every `SagaStarted` carries the saga's resolved steps. For sagas of a named
//! definition they are the same, saga after saga, so the writer stores them once
//! as a `d <id>` record (`codec.rs`) and the run refers to the id. Readers look
//! the id up, through a cache: snapshots never change.
//!
//! Invariants:
//! - A run refers to a snapshot only if the snapshot record is already durable,
//!   or is written earlier in the same batch (so it is in every prefix of the
//!   batch the store can recover that holds the run).
//! - An id names one content. The id is a hash; a different snapshot that hashes
//!   to an id already taken is stored inline in its event, never under that id.
//! - Snapshot records are never removed: retention removes sagas, and a handful
//!   of snapshots per definition version is all there is.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use super::{
    check::report::CheckReport,
    codec::{self, SNAPSHOT},
};
use crate::{
    journal::{
        JournalError,
        store::{KeyWrite, KvStore},
    },
    saga::{Event, EventKind, StepSpec},
};

/// Snapshots a reader keeps; it forgets them all beyond this (they are read
/// again when needed).
const READ_CACHE_MAX: usize = 1024;

/// The writer's side: which snapshot ids are known to be in the store.
#[derive(Default)]
pub struct SnapshotWriter {
    /// Durable (or written by a batch whose sync failed, which a later sync
    /// makes durable; see the journal's failure rules).
    known: HashSet<u64>,
    /// Written by the batch being built.
    pending: HashSet<u64>,
}

impl SnapshotWriter {
    /// The snapshot id a run should refer to, if its first event is a
    /// `SagaStarted` of a named definition; pushes the snapshot record onto
    /// `writes` (and its id onto `new`) when the store does not have it yet.
    /// The caller hands `new` to [`SnapshotWriter::add`] once those writes are
    /// part of the batch for good.
    pub fn intern<S: KvStore + ?Sized>(
        &mut self,
        store: &S,
        run: &[Event],
        writes: &mut Vec<KeyWrite>,
        new: &mut Vec<u64>,
    ) -> Result<Option<u64>, JournalError> {
        let Some(EventKind::SagaStarted {
            inline_steps: None,
            steps,
            ..
        }) = run.first().map(|e| &e.kind)
        else {
            return Ok(None);
        };
        let record = codec::encode(steps);
        let id = codec::snapshot_id(&record);
        if self.known.contains(&id) || self.pending.contains(&id) || new.contains(&id) {
            return Ok(Some(id));
        }
        let key = codec::snapshot_key(id);
        match store.get(&key)? {
            Some(stored) if codec::decode::<Vec<StepSpec>>(&key, &stored)? == *steps => {
                self.known.insert(id);
                Ok(Some(id))
            }
            // Another snapshot holds this id: keep the steps in the event.
            Some(_) => Ok(None),
            None => {
                writes.push((key, Some(record)));
                new.push(id);
                Ok(Some(id))
            }
        }
    }

    /// Snapshots whose records are now part of the batch being built.
    pub fn add(&mut self, new: Vec<u64>) {
        self.pending.extend(new);
    }

    /// The batch was written: its snapshots are in the store.
    pub fn written(&mut self) {
        self.known.extend(self.pending.drain());
    }

    /// The batch was not written: its snapshots may not be in the store.
    pub fn abandoned(&mut self) {
        self.pending.clear();
    }
}

/// The readers' side: snapshots by id, cached.
#[derive(Default)]
pub struct SnapshotCache {
    /// A std mutex: held only to copy in or out, never across an await.
    snapshots: Mutex<HashMap<u64, Arc<Vec<StepSpec>>>>,
}

impl SnapshotCache {
    /// The snapshot `id`, from the cache or the store.
    pub fn get<S: KvStore + ?Sized>(
        &self,
        store: &S,
        id: u64,
    ) -> Result<Vec<StepSpec>, JournalError> {
        let cached = self
            .snapshots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned();
        if let Some(steps) = cached {
            return Ok(steps.as_ref().clone());
        }
        let steps = read(store, id)?;
        let mut snapshots = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        if snapshots.len() >= READ_CACHE_MAX {
            snapshots.clear();
        }
        snapshots.insert(id, Arc::new(steps.clone()));
        Ok(steps)
    }
}

/// The snapshot `id`, read from the store.
pub fn read<S: KvStore + ?Sized>(store: &S, id: u64) -> Result<Vec<StepSpec>, JournalError> {
    let key = codec::snapshot_key(id);
    match store.get(&key)? {
        Some(bytes) => codec::decode(&key, &bytes),
        None => Err(JournalError::Corrupt {
            key: codec::describe_key(&key),
            why: "a saga refers to it, but it does not exist".into(),
        }),
    }
}

/// Decodes the `e` record at `key`, reading snapshots straight from `store`.
pub fn decode_run<S: KvStore + ?Sized>(
    store: &S,
    key: &[u8],
    bytes: &[u8],
) -> Result<Vec<Event>, JournalError> {
    codec::decode_run(key, bytes, &|id| read(store, id))
}

/// The runs of the `e` record at `key` (one, or a bundle's), reading
/// snapshots straight from `store`.
pub fn decode_runs<S: KvStore + ?Sized>(
    store: &S,
    key: &[u8],
    bytes: &[u8],
) -> Result<Vec<Vec<Event>>, JournalError> {
    codec::decode_runs(key, bytes, &|id| read(store, id))
}

/// Every snapshot in `store`, for `journal check`.
pub fn all<S: KvStore + ?Sized>(store: &S) -> Result<Vec<(u64, Vec<StepSpec>)>, JournalError> {
    store
        .scan(&[SNAPSHOT])?
        .into_iter()
        .map(|(key, value)| {
            let id =
                u64::from_be_bytes(key[1..].try_into().map_err(|_| JournalError::Corrupt {
                    key: codec::describe_key(&key),
                    why: "a snapshot key is 9 bytes".into(),
                })?);
            Ok((id, codec::decode(&key, &value)?))
        })
        .collect()
}

/// `sagad journal check`: step snapshots are named by the hash of their
/// content.
pub(super) fn check_snapshots<S: KvStore>(store: &S, report: &mut CheckReport) {
    match all(store) {
        Ok(all) => {
            for (id, steps) in all {
                if codec::snapshot_id(&codec::encode(&steps)) != id {
                    report.problems.push(format!(
                        "{}: its content does not match its id",
                        codec::describe_key(&codec::snapshot_key(id))
                    ));
                }
            }
        }
        Err(e) => report.problems.push(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Journal, MemoryJournal, check};
    use crate::saga::Offset;
    use crate::testing::started;

    fn with_steps(mut event: Event, names: &[&str], inline: bool) -> Event {
        let EventKind::SagaStarted {
            steps,
            inline_steps,
            ..
        } = &mut event.kind
        else {
            unreachable!()
        };
        let template = steps[0].clone();
        *steps = names
            .iter()
            .map(|name| StepSpec {
                name: name.to_string(),
                ..template.clone()
            })
            .collect();
        if inline {
            *inline_steps = Some(Vec::new());
        }
        event
    }

    fn snapshot_count(journal: &MemoryJournal) -> usize {
        journal.store().scan(&[SNAPSHOT]).unwrap().len()
    }

    #[tokio::test]
    async fn sagas_of_one_definition_share_one_snapshot_and_read_back_whole() {
        let journal = MemoryJournal::in_memory();
        let mut written = Vec::new();
        for _ in 0..3 {
            let event = with_steps(started("shop", None), &["a", "b"], false);
            written.extend(journal.append(vec![event]).await.unwrap());
        }
        assert_eq!(snapshot_count(&journal), 1);
        let other = with_steps(started("shop", None), &["a", "c"], false);
        written.extend(journal.append(vec![other]).await.unwrap());
        assert_eq!(snapshot_count(&journal), 2);
        // Inline steps stay in their event.
        let inline = with_steps(started("inline", None), &["x"], true);
        written.extend(journal.append(vec![inline]).await.unwrap());
        assert_eq!(snapshot_count(&journal), 2);
        for event in &written {
            assert_eq!(
                journal.read_saga(event.saga).await.unwrap(),
                std::slice::from_ref(event)
            );
        }
        assert_eq!(journal.read_after(Offset(0), 100).await.unwrap(), written);
        let report = check::check(journal.store()).unwrap();
        assert!(
            !report.problems.iter().any(|p| p.contains("snapshot")),
            "{report}"
        );
    }

    #[tokio::test]
    async fn a_snapshot_whose_id_is_taken_by_other_steps_stays_in_its_event() {
        let journal = MemoryJournal::in_memory();
        let event = with_steps(started("shop", None), &["a"], false);
        let EventKind::SagaStarted { steps, .. } = &event.kind else {
            unreachable!()
        };
        // Other steps already stored under the id these steps hash to.
        let id = codec::snapshot_id(&codec::encode(steps));
        let mut impostor = steps.clone();
        impostor[0].name = "impostor".into();
        journal
            .store()
            .write(vec![(
                codec::snapshot_key(id),
                Some(codec::encode(&impostor)),
            )])
            .unwrap();
        let written = journal.append(vec![event]).await.unwrap();
        assert_eq!(journal.read_saga(written[0].saga).await.unwrap(), written);
        assert_eq!(snapshot_count(&journal), 1);
    }
}
