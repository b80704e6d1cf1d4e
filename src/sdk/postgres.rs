//! [`PgBarrier`]: the barrier in the participant's own PostgreSQL database.
//!
//! Each call is one transaction on a pooled connection. It first takes a
//! transaction-scoped advisory lock on its (saga, step), so calls for one
//! step take turns even across several replicas of the participant; reads
//! the step's records and epoch; and, when the rules say run, hands the
//! handler a savepoint of that transaction (a `tokio_postgres::Transaction`)
//! to write its effect through. A final answer is inserted in the same
//! transaction and committed with the effect; a retry rolls the savepoint
//! back (keeping only a raised epoch) so the next attempt runs afresh.
//!
//! Tables, created on first use (`CREATE TABLE IF NOT EXISTS`, under an
//! advisory lock so two replicas starting together do not race):
//!
//! ```sql
//! sagad_barrier       (saga_id, step, action) → idempotency_key, verdict, output, reason, recorded_at
//! sagad_barrier_epoch (saga_id, step)         → the highest epoch seen
//! ```
//!
//! Invariants:
//! - The effect, its record and the epoch commit together or not at all.
//! - The transaction is `READ COMMITTED` (the server's default): the lock
//!   orders calls of one step only, so a handler updating a row other sagas
//!   also update takes `SELECT … FOR UPDATE` itself (docs/participant.md).
//! - A final answer is returned only after COMMIT returned (durable under
//!   the server's default `synchronous_commit`).

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::OnceCell;
use tokio_postgres::NoTls;

use super::{
    Barrier, BarrierError, Handler,
    call::{Answer, Final, Request, Verdict},
    rules::{Ruling, Seen, judge, raised_epoch},
    run_handler,
};

/// The barrier's tables.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sagad_barrier (
    saga_id text NOT NULL,
    step text NOT NULL,
    action text NOT NULL CHECK (action IN ('forward', 'compensate')),
    idempotency_key text NOT NULL,
    verdict text NOT NULL CHECK (verdict IN ('succeeded', 'rejected')),
    output bytea NOT NULL,
    reason text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (saga_id, step, action)
);
CREATE TABLE IF NOT EXISTS sagad_barrier_epoch (
    saga_id text NOT NULL,
    step text NOT NULL,
    epoch bigint NOT NULL,
    PRIMARY KEY (saga_id, step)
);";

/// The advisory lock key under which the tables are created (any constant
/// that other code is unlikely to use: "sagadbar" in ASCII).
const SCHEMA_LOCK: i64 = 0x7361_6761_6462_6172;

/// The PostgreSQL barrier (see the module docs).
pub struct PgBarrier {
    pool: Pool,
    /// Set once the tables exist.
    schema: OnceCell<()>,
}

impl PgBarrier {
    /// The barrier over connections from `pool`.
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            schema: OnceCell::new(),
        }
    }

    /// The barrier over a pool of at most `size` plain connections to `url`
    /// (`postgres://…`; for TLS build the pool yourself and use [`Self::new`]).
    pub fn connect(url: &str, size: usize) -> Result<Self, BarrierError> {
        let config: tokio_postgres::Config = url.parse()?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(size.max(1))
            .build()
            .map_err(|e| BarrierError::Setup(format!("cannot build the connection pool: {e}")))?;
        Ok(Self::new(pool))
    }

    /// A connection from the barrier's pool (to read the effects).
    pub async fn client(&self) -> Result<deadpool_postgres::Object, BarrierError> {
        Ok(self.pool.get().await?)
    }

    async fn create_tables(&self) -> Result<(), BarrierError> {
        let mut client = self.pool.get().await?;
        let tx = tokio_postgres::Client::transaction(&mut client).await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .await?;
        tx.batch_execute(SCHEMA).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// What is recorded for the request's step, read inside `tx`.
async fn seen(
    tx: &tokio_postgres::Transaction<'_>,
    request: &Request,
) -> Result<Seen, BarrierError> {
    let mut seen = Seen::default();
    let rows = tx
        .query(
            "SELECT action, verdict, output, reason FROM sagad_barrier \
             WHERE saga_id = $1 AND step = $2",
            &[&request.saga_id, &request.step],
        )
        .await?;
    for row in rows {
        let (action, verdict): (String, String) = (row.get(0), row.get(1));
        let verdict = Verdict::parse(&verdict).ok_or_else(|| BarrierError::Corrupt {
            key: format!("{}/{}/{action}", request.saga_id, request.step),
            why: format!("an unknown verdict {verdict:?}"),
        })?;
        let answer = Final {
            verdict,
            output: row.get(2),
            reason: row.get(3),
        };
        match action.as_str() {
            "forward" => seen.forward = Some(answer),
            _ => seen.compensate = Some(answer),
        }
    }
    seen.epoch = tx
        .query_opt(
            "SELECT epoch FROM sagad_barrier_epoch WHERE saga_id = $1 AND step = $2",
            &[&request.saga_id, &request.step],
        )
        .await?
        .map(|row| row.get::<_, i64>(0) as u64);
    Ok(seen)
}

#[async_trait]
impl Barrier for PgBarrier {
    type Tx<'a> = tokio_postgres::Transaction<'a>;

    async fn call<H: Handler<Self>>(
        &self,
        handler: &H,
        request: &Request,
    ) -> Result<Answer, BarrierError> {
        self.schema.get_or_try_init(|| self.create_tables()).await?;
        let mut client = self.pool.get().await?;
        let mut tx = tokio_postgres::Client::transaction(&mut client).await?;
        // Turns per step across processes; released by COMMIT or ROLLBACK.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&format!(
                "sagad_barrier/{}/{}",
                request.saga_id, request.step
            )],
        )
        .await?;
        let seen = seen(&tx, request).await?;
        let raised = raised_epoch(request.epoch, seen.epoch);
        let mut replayed = false;
        let answer = match judge(request.action, request.epoch, &seen) {
            Ruling::Stale { seen } => {
                return Ok(Answer::Stale {
                    epoch: request.epoch.unwrap_or_default(),
                    seen,
                });
            }
            // The transaction read only; dropping it rolls back.
            Ruling::Replay(first) if raised.is_none() => return Ok(Answer::Final(first)),
            // A replay records nothing, but a newer epoch: a deposed caller
            // coming after it must learn nothing.
            Ruling::Replay(first) => {
                replayed = true;
                Answer::Final(first)
            }
            Ruling::Record(answer) => Answer::Final(answer),
            Ruling::Run => {
                let mut effect = tx.savepoint("sagad_barrier_effect").await?;
                match run_handler(handler, request, &mut effect).await {
                    Ok(answer) if answer.verdict == Verdict::Succeeded => {
                        effect.commit().await?;
                        Answer::Final(answer)
                    }
                    // A rejected call did nothing: only its record stays.
                    Ok(answer) => {
                        effect.rollback().await?;
                        Answer::Final(answer)
                    }
                    Err((reason, after)) => {
                        effect.rollback().await?;
                        Answer::Retry { reason, after }
                    }
                }
            }
        };
        if let Some(epoch) = raised {
            tx.execute(
                "INSERT INTO sagad_barrier_epoch (saga_id, step, epoch) VALUES ($1, $2, $3) \
                 ON CONFLICT (saga_id, step) DO UPDATE \
                 SET epoch = GREATEST(sagad_barrier_epoch.epoch, EXCLUDED.epoch)",
                &[&request.saga_id, &request.step, &(epoch as i64)],
            )
            .await?;
        }
        if let Answer::Final(answer) = &answer
            && !replayed
        {
            tx.execute(
                "INSERT INTO sagad_barrier \
                 (saga_id, step, action, idempotency_key, verdict, output, reason) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &request.saga_id,
                    &request.step,
                    &request.action.as_str(),
                    &request.idempotency_key,
                    &answer.verdict.name(),
                    &answer.output,
                    &answer.reason,
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;
    use crate::sdk::{
        Output, Participant, Reject,
        call::Action,
        conformance::{self, Shop},
    };

    type Tx<'a> = tokio_postgres::Transaction<'a>;

    #[async_trait]
    impl Handler<PgBarrier> for Shop {
        async fn forward(&self, request: &Request, tx: &mut Tx<'_>) -> Result<Output, Reject> {
            let then = self.forward_mode(request).await;
            tx.execute(
                "INSERT INTO charges (saga_id, state) VALUES ($1, 'charged')",
                &[&request.saga_id],
            )
            .await?;
            Shop::forward_answer(request, then)
        }

        async fn compensate(&self, request: &Request, tx: &mut Tx<'_>) -> Result<(), Reject> {
            self.compensated();
            let n = tx
                .execute(
                    "UPDATE charges SET state = 'refunded' WHERE saga_id = $1 AND state = 'charged'",
                    &[&request.saga_id],
                )
                .await?;
            assert_eq!(
                n, 1,
                "the barrier runs a compensation only after its forward"
            );
            Ok(())
        }
    }

    /// A fresh database on the throwaway server, its participant and a
    /// reader of the effect.
    async fn fixture() -> (
        Participant<PgBarrier, Shop>,
        impl Fn(String) -> std::pin::Pin<Box<dyn Future<Output = Option<String>> + Send>>,
    ) {
        let url = crate::journal::postgres::throwaway::shared_database()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let barrier = PgBarrier::connect(&url, 4).unwrap();
        barrier
            .client()
            .await
            .unwrap()
            .batch_execute("CREATE TABLE charges (saga_id text PRIMARY KEY, state text NOT NULL)")
            .await
            .unwrap();
        let pool = barrier.pool.clone();
        let effect = move |saga: String| {
            let pool = pool.clone();
            Box::pin(async move {
                let client = pool.get().await.unwrap();
                client
                    .query_opt("SELECT state FROM charges WHERE saga_id = $1", &[&saga])
                    .await
                    .unwrap()
                    .map(|row| row.get::<_, String>(0))
            }) as std::pin::Pin<Box<dyn Future<Output = Option<String>> + Send>>
        };
        (Participant::new(barrier, Shop::default()), effect)
    }

    #[tokio::test]
    async fn postgres_repeats_get_the_first_answer() {
        let (p, effect) = fixture().await;
        conformance::repeats_get_the_first_answer(p, effect).await;
    }

    #[tokio::test]
    async fn postgres_a_compensation_first_bars_its_forward() {
        let (p, effect) = fixture().await;
        conformance::a_compensation_first_bars_its_forward(p, effect).await;
    }

    #[tokio::test]
    async fn postgres_an_older_epoch_is_refused() {
        let (p, effect) = fixture().await;
        conformance::an_older_epoch_is_refused(p, effect).await;
    }

    #[tokio::test]
    async fn postgres_a_retry_rolls_back_effect_and_record() {
        let (p, effect) = fixture().await;
        conformance::a_retry_rolls_back_effect_and_record(p, effect).await;
    }

    /// Random interleavings of every kind of call, against the model.
    #[tokio::test]
    async fn postgres_random_interleavings_keep_every_rule() {
        for seed in [1, fastrand::u64(..)] {
            let (p, effect) = fixture().await;
            conformance::random_interleavings(p, effect, seed).await;
        }
    }

    #[tokio::test]
    async fn postgres_concurrent_duplicates_run_once() {
        let (p, _) = fixture().await;
        conformance::concurrent_duplicates_run_once(p).await;
    }

    /// Two participants over one database (two replicas of a service): the
    /// advisory lock gives their duplicates turns too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_replicas_share_one_barrier() {
        let (a, effect) = fixture().await;
        let b = Participant::new(PgBarrier::new(a.barrier().pool.clone()), Shop::default());
        let forward = conformance::request("r1", Action::Forward, 1, None, "ok");
        let (x, y) = tokio::join!(a.call(&forward), b.call(&forward));
        assert_eq!(x, y);
        let runs = |p: &Participant<PgBarrier, Shop>| {
            p.handler()
                .counts
                .forward
                .load(std::sync::atomic::Ordering::SeqCst)
        };
        assert_eq!(runs(&a) + runs(&b), 1);
        assert_eq!(effect("r1".into()).await.as_deref(), Some("charged"));
    }
}
