//! [`SledBarrier`]: the embedded barrier store, for small services and tests.
//!
//! One sled database holds two trees: `barrier` (the records and epochs) and
//! `data` (the handler's own keys). A handler writes its effect through a
//! [`SledTx`]: reads see the committed data plus the call's own writes, and
//! nothing reaches the tree until the call's answer is final. Then one sled
//! transaction over both trees checks that every key the handler read is
//! unchanged, applies its writes, and inserts the record: sled makes it
//! wholly visible or not at all, also after a crash. If another call changed a
//! key this one read, the call runs again from the rules (optimistic
//! concurrency), so two steps' handlers updating one shared key (a counter, a
//! balance) never lose an update; after two conflicts it runs alone, so it
//! always ends.
//!
//! Invariants:
//! - The effect and its record are one sled transaction; a retry or a
//!   rejection writes no effect (a rejection only its record).
//! - A final answer is returned only after `flush` (except for
//!   [`SledBarrier::temporary`], which lives as long as the process).
//!
//! Keys: `u32 BE len | saga id | u32 BE len | step | tag`, with tag `f`
//! (forward's record), `c` (compensate's) or `e` (the highest epoch).
//! Records are a version byte, then postcard.

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    sync::Arc,
};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sled::{
    IVec, Transactional,
    transaction::{ConflictableTransactionError, TransactionError},
};

use super::{
    Barrier, BarrierError, Handler,
    call::{Action, Answer, Final, Request, Verdict},
    rules::{Ruling, Seen, judge, raised_epoch},
    run_handler,
};

/// The version byte of a record's encoding.
const RECORD_VERSION: u8 = 1;
/// How many optimistic runs a call makes before it runs alone.
const OPTIMISTIC_TRIES: u32 = 2;

/// One key and its value, as [`SledBarrier::scan`] lists them.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// The embedded barrier: a sled database (see the module docs).
#[derive(Clone)]
pub struct SledBarrier {
    db: sled::Db,
    records: sled::Tree,
    data: sled::Tree,
    /// Whether a final answer waits for `flush` (false for a temporary db).
    durable: bool,
    /// Calls run optimistically under the read side; a call whose reads
    /// were overwritten [`OPTIMISTIC_TRIES`] times runs under the write side,
    /// alone, so a hot key cannot starve it. A tokio lock: held across the
    /// handler's awaits.
    turns: Arc<tokio::sync::RwLock<()>>,
}

/// A record as stored.
#[derive(Serialize, Deserialize)]
struct Stored {
    idempotency_key: String,
    answer: Final,
}

/// The effect of one call, written through to the `data` tree at commit.
pub struct SledTx<'a> {
    data: &'a sled::Tree,
    /// Every key read from the tree, with what it held then.
    reads: HashMap<Vec<u8>, Option<IVec>>,
    /// The call's writes (`None` removes), applied at commit.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a> SledTx<'a> {
    fn new(data: &'a sled::Tree) -> Self {
        Self {
            data,
            reads: HashMap::new(),
            writes: BTreeMap::new(),
        }
    }

    /// The value of `key`: this call's own write, else the committed one.
    pub fn get(&mut self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, sled::Error> {
        let key = key.as_ref();
        if let Some(written) = self.writes.get(key) {
            return Ok(written.clone());
        }
        let value = match self.reads.get(key) {
            Some(read) => read.clone(),
            None => {
                let value = self.data.get(key)?;
                self.reads.insert(key.to_vec(), value.clone());
                value
            }
        };
        Ok(value.map(|v| v.to_vec()))
    }

    /// Sets `key` to `value` when the call commits.
    pub fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.writes.insert(key.into(), Some(value.into()));
    }

    /// Removes `key` when the call commits.
    pub fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.writes.insert(key.into(), None);
    }
}

/// Why the commit transaction gave up: another call changed what this one saw.
#[derive(Debug)]
struct Conflict;

impl SledBarrier {
    /// Opens (or creates) the store in the directory `path`. sled allows one
    /// process per directory.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, BarrierError> {
        Self::with(sled::open(path)?, true)
    }

    /// A store that lives only as long as the process (the demo, tests):
    /// nothing survives, so nothing waits for a flush.
    pub fn temporary() -> Result<Self, BarrierError> {
        Self::with(sled::Config::new().temporary(true).open()?, false)
    }

    fn with(db: sled::Db, durable: bool) -> Result<Self, BarrierError> {
        Ok(Self {
            records: db.open_tree("barrier")?,
            data: db.open_tree("data")?,
            db,
            durable,
            turns: Arc::default(),
        })
    }

    /// The committed value of a handler's `key` (to look at the effect).
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, BarrierError> {
        Ok(self.data.get(key)?.map(|v| v.to_vec()))
    }

    /// The committed handler keys under `prefix`, in order.
    pub fn scan(&self, prefix: impl AsRef<[u8]>) -> Result<Vec<KeyValue>, BarrierError> {
        self.data
            .scan_prefix(prefix)
            .map(|kv| {
                let (k, v) = kv?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }

    /// What is recorded for the request's step.
    fn seen(&self, request: &Request) -> Result<Seen, BarrierError> {
        let record = |tag| -> Result<Option<Final>, BarrierError> {
            let key = step_key(request, tag);
            let Some(bytes) = self.records.get(&key)? else {
                return Ok(None);
            };
            decode(&bytes)
                .map(|s| Some(s.answer))
                .map_err(|why| BarrierError::Corrupt {
                    key: format!("{}/{}", request.saga_id, request.step),
                    why,
                })
        };
        let epoch = match self.records.get(step_key(request, b'e'))? {
            Some(bytes) => Some(u64::from_be_bytes(bytes.as_ref().try_into().map_err(
                |_| BarrierError::Corrupt {
                    key: format!("{}/{}", request.saga_id, request.step),
                    why: "an epoch is not 8 bytes".into(),
                },
            )?)),
            None => None,
        };
        Ok(Seen {
            forward: record(b'f')?,
            compensate: record(b'c')?,
            epoch,
        })
    }

    /// Commits `record` (if any), the raised epoch (if any) and the effect
    /// (if any) in one transaction; `Ok(false)` on a conflict.
    fn commit(
        &self,
        request: &Request,
        record: Option<&Final>,
        epoch: Option<u64>,
        effect: Option<&SledTx<'_>>,
    ) -> Result<bool, BarrierError> {
        let record_key = step_key(request, action_tag(request.action));
        let record = record.map(|answer| {
            encode(&Stored {
                idempotency_key: request.idempotency_key.clone(),
                answer: answer.clone(),
            })
        });
        let result = (&self.records, &self.data).transaction(|(records, data)| {
            if record.is_some() && records.get(&record_key)?.is_some() {
                return Err(ConflictableTransactionError::Abort(Conflict));
            }
            if let Some(tx) = effect {
                for (key, seen) in &tx.reads {
                    if data.get(key)? != *seen {
                        return Err(ConflictableTransactionError::Abort(Conflict));
                    }
                }
                for (key, value) in &tx.writes {
                    match value {
                        Some(value) => data.insert(key.as_slice(), value.as_slice())?,
                        None => data.remove(key.as_slice())?,
                    };
                }
            }
            if let Some(record) = &record {
                records.insert(record_key.as_slice(), record.as_slice())?;
            }
            if let Some(epoch) = epoch {
                records.insert(step_key(request, b'e'), &epoch.to_be_bytes())?;
            }
            Ok(())
        });
        match result {
            Ok(()) => Ok(true),
            Err(TransactionError::Abort(Conflict)) => Ok(false),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }
}

#[async_trait]
impl Barrier for SledBarrier {
    type Tx<'a> = SledTx<'a>;

    async fn call<H: Handler<Self>>(
        &self,
        handler: &H,
        request: &Request,
    ) -> Result<Answer, BarrierError> {
        for attempt in 1..=OPTIMISTIC_TRIES + 1 {
            let _turn = if attempt > OPTIMISTIC_TRIES {
                Err(self.turns.write().await)
            } else {
                Ok(self.turns.read().await)
            };
            let seen = self.seen(request)?;
            let epoch = raised_epoch(request.epoch, seen.epoch);
            let (answer, effect) = match judge(request.action, request.epoch, &seen) {
                Ruling::Stale { seen } => {
                    return Ok(Answer::Stale {
                        epoch: request.epoch.unwrap_or_default(),
                        seen,
                    });
                }
                // A replay records nothing, but a newer epoch: a deposed
                // caller coming after it must learn nothing.
                Ruling::Replay(first) if epoch.is_none() => return Ok(Answer::Final(first)),
                Ruling::Replay(first) => {
                    if self.commit(request, None, epoch, None)? {
                        if self.durable {
                            self.db.flush_async().await?;
                        }
                        return Ok(Answer::Final(first));
                    }
                    continue;
                }
                Ruling::Record(answer) => (Answer::Final(answer), None),
                Ruling::Run => {
                    let mut tx = SledTx::new(&self.data);
                    match run_handler(handler, request, &mut tx).await {
                        // A rejected call did nothing: only its record stays.
                        Ok(answer) if answer.verdict == Verdict::Rejected => {
                            (Answer::Final(answer), None)
                        }
                        Ok(answer) => (Answer::Final(answer), Some(tx)),
                        Err((reason, after)) => (Answer::Retry { reason, after }, None),
                    }
                }
            };
            let record = match &answer {
                Answer::Final(answer) => Some(answer),
                _ => None,
            };
            if record.is_none() && epoch.is_none() {
                return Ok(answer);
            }
            if self.commit(request, record, epoch, effect.as_ref())? {
                if self.durable {
                    self.db.flush_async().await?;
                }
                return Ok(answer);
            }
        }
        Err(BarrierError::Conflict {
            attempts: OPTIMISTIC_TRIES + 1,
        })
    }
}

fn action_tag(action: Action) -> u8 {
    match action {
        Action::Forward => b'f',
        Action::Compensate => b'c',
    }
}

fn step_key(request: &Request, tag: u8) -> Vec<u8> {
    let (saga, step) = (request.saga_id.as_bytes(), request.step.as_bytes());
    let mut key = Vec::with_capacity(9 + saga.len() + step.len());
    key.extend_from_slice(&(saga.len() as u32).to_be_bytes());
    key.extend_from_slice(saga);
    key.extend_from_slice(&(step.len() as u32).to_be_bytes());
    key.extend_from_slice(step);
    key.push(tag);
    key
}

fn encode(stored: &Stored) -> Vec<u8> {
    let mut bytes = vec![RECORD_VERSION];
    // A struct of strings and bytes always encodes.
    bytes.extend(postcard::to_stdvec(stored).expect("a record encodes"));
    bytes
}

fn decode(bytes: &[u8]) -> Result<Stored, String> {
    match bytes.split_first() {
        Some((&RECORD_VERSION, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
        Some((v, _)) => Err(format!(
            "record version {v}, this build reads {RECORD_VERSION}"
        )),
        None => Err("an empty record".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdk::{
        Output, Participant, Reject,
        conformance::{self, Shop},
    };

    #[async_trait]
    impl Handler<SledBarrier> for Shop {
        async fn forward(&self, request: &Request, tx: &mut SledTx<'_>) -> Result<Output, Reject> {
            let then = self.forward_mode(request).await;
            tx.insert(format!("charge/{}", request.saga_id), "charged");
            Shop::forward_answer(request, then)
        }

        async fn compensate(&self, request: &Request, tx: &mut SledTx<'_>) -> Result<(), Reject> {
            self.compensated();
            let key = format!("charge/{}", request.saga_id);
            assert_eq!(tx.get(&key)?.as_deref(), Some(&b"charged"[..]));
            tx.insert(key, "refunded");
            Ok(())
        }
    }

    /// A durable store in a temp dir, its participant and a reader of the effect.
    fn fixture() -> (
        tempfile::TempDir,
        Participant<SledBarrier, Shop>,
        impl Fn(String) -> std::future::Ready<Option<String>>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let barrier = SledBarrier::open(dir.path().join("barrier")).unwrap();
        let reader = barrier.clone();
        let effect = move |saga: String| {
            let value = reader.get(format!("charge/{saga}")).unwrap();
            std::future::ready(value.map(|v| String::from_utf8(v).unwrap()))
        };
        (dir, Participant::new(barrier, Shop::default()), effect)
    }

    #[tokio::test]
    async fn sled_repeats_get_the_first_answer() {
        let (_dir, p, effect) = fixture();
        conformance::repeats_get_the_first_answer(p, effect).await;
    }

    #[tokio::test]
    async fn sled_a_compensation_first_bars_its_forward() {
        let (_dir, p, effect) = fixture();
        conformance::a_compensation_first_bars_its_forward(p, effect).await;
    }

    #[tokio::test]
    async fn sled_an_older_epoch_is_refused() {
        let (_dir, p, effect) = fixture();
        conformance::an_older_epoch_is_refused(p, effect).await;
    }

    #[tokio::test]
    async fn sled_a_retry_rolls_back_effect_and_record() {
        let (_dir, p, effect) = fixture();
        conformance::a_retry_rolls_back_effect_and_record(p, effect).await;
    }

    /// Random interleavings of every kind of call, against the model.
    #[tokio::test]
    async fn sled_random_interleavings_keep_every_rule() {
        for seed in [1, 2, 3, fastrand::u64(..)] {
            let (_dir, p, effect) = fixture();
            conformance::random_interleavings(p, effect, seed).await;
        }
    }

    #[tokio::test]
    async fn sled_concurrent_duplicates_run_once() {
        let (_dir, p, _) = fixture();
        conformance::concurrent_duplicates_run_once(p).await;
    }

    #[tokio::test]
    async fn sled_records_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("barrier");
        let first = {
            let p = Participant::new(SledBarrier::open(&path).unwrap(), Shop::default());
            let forward = conformance::request("s7", Action::Forward, 1, None, "ok");
            p.call(&forward).await
        };
        let p = Participant::new(SledBarrier::open(&path).unwrap(), Shop::default());
        let forward = conformance::request("s7", Action::Forward, 2, None, "ok");
        assert_eq!(p.call(&forward).await, first);
        assert_eq!(
            p.handler()
                .counts
                .forward
                .load(std::sync::atomic::Ordering::SeqCst),
            0
        );
    }

    /// Two steps' handlers updating one shared key: the optimistic check
    /// makes the loser run again, so no update is lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sled_shared_keys_lose_no_update() {
        struct Counter;
        #[async_trait]
        impl Handler<SledBarrier> for Counter {
            async fn forward(&self, _: &Request, tx: &mut SledTx<'_>) -> Result<Output, Reject> {
                let n = tx
                    .get("total")?
                    .map_or(0, |v| u64::from_be_bytes(v.try_into().unwrap()));
                tokio::task::yield_now().await;
                tx.insert("total", (n + 1).to_be_bytes().to_vec());
                Ok(Output::empty())
            }
            async fn compensate(&self, _: &Request, _: &mut SledTx<'_>) -> Result<(), Reject> {
                Ok(())
            }
        }
        let p = Participant::new(SledBarrier::temporary().unwrap(), Counter);
        let calls: Vec<_> = (0..32)
            .map(|i| {
                let p = p.clone();
                tokio::spawn(async move {
                    let request =
                        conformance::request(&format!("c{i}"), Action::Forward, 1, None, "ok");
                    p.call(&request).await
                })
            })
            .collect();
        for call in calls {
            assert!(matches!(call.await.unwrap(), Answer::Final(_)));
        }
        let total = p.barrier().get("total").unwrap().unwrap();
        assert_eq!(u64::from_be_bytes(total.try_into().unwrap()), 32);
    }
}
