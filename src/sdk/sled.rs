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
//! balance) never lose an update.
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
/// How many times a call runs again when its reads kept being overwritten.
const CONFLICT_TRIES: u32 = 16;

/// The embedded barrier: a sled database (see the module docs).
#[derive(Clone)]
pub struct SledBarrier {
    db: sled::Db,
    records: sled::Tree,
    data: sled::Tree,
    /// Whether a final answer waits for `flush` (false for a temporary db).
    durable: bool,
}

/// A record as stored.
#[derive(Serialize, Deserialize)]
struct Stored {
    idempotency_key: String,
    answer: Final,
}

/// The effect of one call, written through to the `data` tree at commit.
pub struct SledTx {
    data: sled::Tree,
    /// Every key read from the tree, with what it held then.
    reads: HashMap<Vec<u8>, Option<IVec>>,
    /// The call's writes (`None` removes), applied at commit.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl SledTx {
    fn new(data: sled::Tree) -> Self {
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
        })
    }

    /// The committed value of a handler's `key` (to look at the effect).
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, BarrierError> {
        Ok(self.data.get(key)?.map(|v| v.to_vec()))
    }

    /// The committed handler keys under `prefix`, in order.
    pub fn scan(&self, prefix: impl AsRef<[u8]>) -> Result<Vec<(Vec<u8>, Vec<u8>)>, BarrierError> {
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
        effect: Option<&SledTx>,
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
    type Tx<'a> = SledTx;

    async fn call<H: Handler<Self>>(
        &self,
        handler: &H,
        request: &Request,
    ) -> Result<Answer, BarrierError> {
        for _ in 0..CONFLICT_TRIES {
            let seen = self.seen(request)?;
            let epoch = raised_epoch(request.epoch, seen.epoch);
            let (answer, effect) = match judge(request.action, request.epoch, &seen) {
                Ruling::Stale { seen } => {
                    return Ok(Answer::Stale {
                        epoch: request.epoch.unwrap_or_default(),
                        seen,
                    });
                }
                Ruling::Replay(first) => return Ok(Answer::Final(first)),
                Ruling::Record(answer) => (Answer::Final(answer), None),
                Ruling::Run => {
                    let mut tx = SledTx::new(self.data.clone());
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
            attempts: CONFLICT_TRIES,
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
