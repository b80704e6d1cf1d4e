//! SIGKILL at random moments: hundreds of sagas with mixed fates, the real
//! coordinator killed and restarted on the same data dir at least 20 times, and
//! then every promise checked (see `common::chaos::check`); once with gRPC
//! participants, once with the same ones speaking HTTP/JSON, once with a
//! pivot and a retriable step (each saga of that run scheduled a moment
//! ahead, with a deadline, and its pivot mapping its input).
//!
//! `SAGAD_CRASH_SEED` replays a run; `SAGAD_CRASH_ROUNDS` runs more rounds (each
//! with its own sagas and kills) for a longer soak.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use sagad::proto::v1 as pb;

use crate::common::chaos::{Fate, Harness};

const SAGAS_PER_ROUND: usize = 300;
const KILLS_PER_ROUND: u32 = 20;
const LANES: usize = 8;

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number"))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    sigkill_at_random_moments(pb::Protocol::Grpc, false).await;
}

/// The same kills, the sagas' payment a pivot and their shipment retriable:
/// past the pivot nothing is undone (a rejected shipment fails the saga with
/// the first two steps applied once), and a retriable step is never
/// compensated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_with_a_pivot_undoes_nothing_past_it() {
    sigkill_at_random_moments(pb::Protocol::Grpc, true).await;
}

/// The same kills, the same checks, with participants that speak the
/// HTTP/JSON contract.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_nothing_acknowledged_over_http() {
    sigkill_at_random_moments(pb::Protocol::Http, false).await;
}

async fn sigkill_at_random_moments(protocol: pb::Protocol, pivot: bool) {
    let seed = env_number("SAGAD_CRASH_SEED").unwrap_or_else(|| fastrand::u64(..));
    let rounds = env_number("SAGAD_CRASH_ROUNDS").unwrap_or(1);
    println!(
        "crash test ({protocol:?}, pivot: {pivot}) seed {seed} (replay with SAGAD_CRASH_SEED={seed}), {rounds} round(s)"
    );
    let harness = match pivot {
        true => Harness::start_with_pivot(&[]).await,
        false => Harness::start_speaking(protocol, &[]).await,
    };
    let mut total_sagas = 0;
    for round in 0..rounds {
        let mut rng = fastrand::Rng::with_seed(seed.wrapping_add(round));
        let killer_done = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicUsize::new(0));

        // The killer: a SIGKILL every few hundred milliseconds, then a restart.
        let killer = {
            let harness = harness.clone();
            let done = killer_done.clone();
            let mut rng = fastrand::Rng::with_seed(rng.u64(..));
            std::thread::spawn(move || {
                for _ in 0..KILLS_PER_ROUND {
                    std::thread::sleep(Duration::from_millis(rng.u64(30..300)));
                    harness.kill_and_restart(&[]);
                }
                done.store(true, Ordering::SeqCst);
            })
        };

        // Lanes start sagas throughout the kills, retrying across restarts.
        let mut lanes = Vec::new();
        for lane in 0..LANES {
            let harness = harness.clone();
            let done = killer_done.clone();
            let next = next.clone();
            let mut rng = fastrand::Rng::with_seed(rng.u64(..) ^ lane as u64);
            lanes.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= SAGAS_PER_ROUND && done.load(Ordering::SeqCst) {
                        break;
                    }
                    let fate = Fate::pick(&mut rng);
                    harness.start_saga(format!("r{round}-s{i}"), fate).await;
                    tokio::time::sleep(Duration::from_millis(rng.u64(5..60))).await;
                }
            }));
        }
        for lane in lanes {
            lane.await.unwrap();
        }
        tokio::task::spawn_blocking(move || killer.join().unwrap())
            .await
            .unwrap();
        let summary = harness.settle_and_check().await;
        println!("round {round}: {summary:?}");
        assert_eq!(
            summary.listed, summary.sagas,
            "every acknowledged saga exists, once"
        );
        assert!(summary.sagas >= SAGAS_PER_ROUND * (round as usize + 1));
        total_sagas = summary.sagas;
    }
    let kills = *harness.kills.lock().unwrap();
    assert!(kills >= KILLS_PER_ROUND * rounds as u32);
    println!("crash test: {kills} kills, {total_sagas} sagas, nothing lost (seed {seed})");
    harness.stop();
}
