//! The failover measurement of `run --journal postgres --nodes 2|3`, after
//! the runs: how long the sagas of a node that dies wait for the others.
//!
//! ```text
//!  the last node is given `sagas` sagas that wait: their one step calls a
//!  closed port (each attempt "not delivered", tried again 1 s later)
//!        │ every one journaled and open (the database says so)
//!        ▼
//!  W1 at concurrency 64 on the other nodes, and SIGKILL the last one
//!        │ the database polled every 10 ms from the kill
//!        ▼
//!  claimed: every one of them has another owner
//!  progressed: every one has an event it did not have at the kill
//! ```
//!
//! `FAILOVER` prints the two times from the kill, the lease they are to be
//! compared with (the target is a lease and 2 s), and the takeover rate:
//! sagas moved between the first claim seen and the last, per second (a
//! lower bound: the polls see claims only every 10 ms).

use std::{
    net::TcpListener,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use sagad::proto::v1::{self as pb, coordinator_client::CoordinatorClient};
use tokio_postgres::NoTls;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::{
    check::Workload,
    load::{self, Load, SagaSource},
};

/// How often the database is read after the kill.
const POLL: Duration = Duration::from_millis(10);
/// How long the sagas may take to move before the measurement fails.
const DEADLINE: Duration = Duration::from_secs(120);
/// The participant of the waiting sagas.
const BLACKHOLE: &str = "bench-failover-blackhole";

/// What the measurement found.
pub struct FailoverLine {
    pub sagas: usize,
    pub victim: String,
    pub lease_s: f64,
    pub claimed_s: f64,
    pub progressed_s: f64,
    pub takeover_per_s: f64,
    pub w1_during: usize,
}

impl std::fmt::Display for FailoverLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FAILOVER victim={} sagas={} lease_s={:.1} target_s={:.1} claimed_s={:.2} progressed_s={:.2} takeover_per_s={:.0} w1_c64_sagas_meanwhile={}",
            self.victim,
            self.sagas,
            self.lease_s,
            self.lease_s + 2.0,
            self.claimed_s,
            self.progressed_s,
            self.takeover_per_s,
            self.w1_during,
        )
    }
}

/// The kill itself, given to [`measure`] so that it needs no node handles.
pub type Kill<'a> = Box<dyn FnOnce() -> anyhow::Result<()> + Send + 'a>;

/// Who is killed and who carries on.
pub struct Roles<'a> {
    pub victim_id: &'a str,
    /// A client of the node that is killed.
    pub victim: &'a CoordinatorClient<Channel>,
    /// Clients of the others.
    pub survivors: &'a [CoordinatorClient<Channel>],
    pub kill: Kill<'a>,
}

/// Runs the measurement: `sagas` waiting sagas on the victim, W1 (`w1`) on
/// the survivors, the nodes' lease `lease`.
pub async fn measure(
    db_url: &str,
    roles: Roles<'_>,
    w1: &SagaSource,
    sagas: usize,
    lease: Duration,
) -> anyhow::Result<FailoverLine> {
    let Roles {
        victim_id,
        victim,
        survivors,
        kill,
    } = roles;
    let (db, connection) = tokio_postgres::connect(db_url, NoTls)
        .await
        .context("connecting to the bench database")?;
    tokio::spawn(connection);
    start_waiting(victim, sagas).await?;
    let started = Instant::now();
    let before = loop {
        let before = open_of(&db, victim_id).await?;
        if before.len() >= sagas {
            break before;
        }
        if started.elapsed() > DEADLINE {
            bail!(
                "only {} of {sagas} waiting sagas are open on {victim_id}",
                before.len()
            );
        }
        tokio::time::sleep(POLL).await;
    };
    let ids: Vec<Uuid> = before.iter().map(|(id, _)| *id).collect();
    let seqs: Vec<i64> = before.iter().map(|(_, seq)| *seq).collect();

    // Load on the survivors while the takeover runs, so it competes with work.
    let survivors = survivors.to_vec();
    let w1 = w1.clone();
    let during = tokio::spawn(async move {
        let load = Load {
            workload: Workload::W1,
            concurrency: 64,
            // Ended by the cap: the most that could run meanwhile.
            sagas: 100_000,
            cap: lease + Duration::from_secs(5),
            tag: "failover".into(),
        };
        load::drive(&survivors, &w1, &load).await.map(|r| r.started)
    });
    kill()?;
    let killed = Instant::now();
    let (mut first_claim, mut claimed, mut progressed) = (None, None, None);
    while claimed.is_none() || progressed.is_none() {
        if killed.elapsed() > DEADLINE {
            bail!("the sagas of {victim_id} were not all taken over within {DEADLINE:?}");
        }
        let row = db
            .query_one(
                "SELECT count(*) FILTER (WHERE s.owner_node <> $1),
                        count(*) FILTER (WHERE s.last_seq > b.seq)
                 FROM sagad.saga s JOIN unnest($2::uuid[], $3::bigint[]) AS b(id, seq)
                   ON s.saga_id = b.id",
                &[&victim_id, &ids, &seqs],
            )
            .await
            .context("reading the takeover's progress")?;
        let (moved, moved_on): (i64, i64) = (row.get(0), row.get(1));
        let at = killed.elapsed();
        if moved > 0 && first_claim.is_none() {
            first_claim = Some(at);
        }
        if moved as usize >= sagas && claimed.is_none() {
            claimed = Some(at);
        }
        if moved_on as usize >= sagas && progressed.is_none() {
            progressed = Some(at);
        }
        tokio::time::sleep(POLL).await;
    }
    let w1_during = during.await??;
    let (first, claimed, progressed) = (
        first_claim.unwrap_or_default(),
        claimed.unwrap_or_default(),
        progressed.unwrap_or_default(),
    );
    let claiming = (claimed - first).max(POLL);
    Ok(FailoverLine {
        sagas,
        victim: victim_id.to_string(),
        lease_s: lease.as_secs_f64(),
        claimed_s: claimed.as_secs_f64(),
        progressed_s: progressed.as_secs_f64(),
        takeover_per_s: sagas as f64 / claiming.as_secs_f64(),
        w1_during,
    })
}

/// Registers the blackhole participant on the victim and starts `sagas`
/// sagas of its one step there, without waiting for them.
async fn start_waiting(client: &CoordinatorClient<Channel>, sagas: usize) -> anyhow::Result<()> {
    // A port bound and let go: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let endpoint = format!("http://127.0.0.1:{port}/sagad.v1.ParticipantService");
    let second = Some(prost_types::Duration {
        seconds: 1,
        nanos: 0,
    });
    let mut client = client.clone();
    client
        .register_participant(pb::RegisterParticipantRequest {
            name: BLACKHOLE.into(),
            forward_endpoint: format!("{endpoint}/Forward"),
            compensate_endpoint: format!("{endpoint}/Compensate"),
            retry: Some(pb::RetryPolicy {
                initial_interval: second,
                multiplier: Some(1.0),
                max_interval: second,
                // The most there may be: hours of waiting at one a second.
                max_attempts: Some(10_000),
                max_compensate_attempts: Some(10_000),
                jitter: Some(0.2),
                max_duration: None,
            }),
            timeout: second,
            protocol: pb::Protocol::Grpc as i32,
            ..Default::default()
        })
        .await
        .context("registering the failover's participant")?;
    let mut lanes = Vec::new();
    for lane in 0..64 {
        let mut client = client.clone();
        lanes.push(tokio::spawn(async move {
            for _ in (lane..sagas).step_by(64) {
                client
                    .start_saga(pb::StartSagaRequest {
                        steps: vec![pb::StepDefinition {
                            name: "wait".into(),
                            participant: BLACKHOLE.into(),
                            ..Default::default()
                        }],
                        payload: b"{}".to_vec(),
                        ..Default::default()
                    })
                    .await?;
            }
            Ok::<_, tonic::Status>(())
        }));
    }
    for lane in lanes {
        lane.await?.context("starting a waiting saga")?;
    }
    Ok(())
}

/// The open sagas `node` owns, with their last seq.
async fn open_of(db: &tokio_postgres::Client, node: &str) -> anyhow::Result<Vec<(Uuid, i64)>> {
    Ok(db
        .query(
            "SELECT saga_id, last_seq FROM sagad.saga
             WHERE owner_node = $1 AND status IN ('running', 'compensating')",
            &[&node],
        )
        .await
        .context("reading the victim's open sagas")?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect())
}
