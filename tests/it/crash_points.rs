//! The coordinator killed at each dangerous instant, deterministically, through
//! the crash points of `src/failpoint.rs` (armed with `FAILPOINTS`): it restarts
//! on the same data dir and every promise is checked (`common::chaos::check`).

use std::sync::Arc;

use crate::common::chaos::{Fate, Harness};

/// A mix that goes through every kind of transition, compensations included.
fn fates() -> Vec<Fate> {
    let mut fates = Vec::new();
    for i in 0..24 {
        fates.push(match i % 6 {
            0 => Fate::Complete,
            1 => Fate::Reject { step: 2, fails: 1 },
            2 => Fate::Reject { step: 1, fails: 0 },
            3 => Fate::Transient { step: 1, fails: 2 },
            4 => Fate::Slow { ms: 50 },
            _ => Fate::Reject { step: 2, fails: 0 },
        });
    }
    fates
}

/// Starts the sagas while the armed coordinator dies and a clean one takes over,
/// then checks everything.
async fn crash_at(point: &str, skip: u32) {
    crash_at_with(point, skip, "").await
}

/// [`crash_at`], with more of `FAILPOINTS` (knobs) armed beside the point.
async fn crash_at_with(point: &str, skip: u32, more: &str) {
    let mut failpoints = format!("{point}={skip}*off->return");
    if !more.is_empty() {
        failpoints = format!("{failpoints};{more}");
    }
    let harness = Harness::start(&[("FAILPOINTS", failpoints.as_str())]).await;
    let starter = {
        let harness = harness.clone();
        tokio::spawn(async move {
            for (i, fate) in fates().into_iter().enumerate() {
                harness.start_saga(format!("{i}"), fate).await;
            }
        })
    };
    let watcher = harness.clone();
    let stderr = tokio::task::spawn_blocking(move || watcher.await_crash_and_restart())
        .await
        .unwrap();
    assert!(
        stderr.contains(&format!("crash point {point}")),
        "{point}: died elsewhere:\n{stderr}"
    );
    starter.await.unwrap();
    let summary = harness.settle_and_check().await;
    assert_eq!(summary.sagas, 24);
    assert_eq!(
        summary.listed, 24,
        "{point}: every acknowledged saga exists, once"
    );
    assert!(
        !harness.data_dir.join("journal.fresh").exists(),
        "{point}: the open after the crash removed a fresh store's leftovers"
    );
    harness.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_attempt_start_is_durable_but_before_the_call() {
    crash_at("runner::before_call", 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_the_participant_answered_before_the_result_is_journaled() {
    crash_at("runner::after_call", 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_in_the_middle_of_a_compensation_sequence() {
    crash_at("runner::before_compensate_call", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_a_batch_write_and_its_flush() {
    // Registration takes the first batches; crash well after it.
    crash_at("journal::before_sync", 12).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_in_the_middle_of_a_store_checkpoint() {
    // The first checkpoint with anything to apply (within ~2 s of the start,
    // while the sagas are being started); half of it is durable in sled.
    crash_at("journal::mid_checkpoint", 0).await;
}

/// sled renewing itself at every checkpoint (`sled::renew_floor`), killed
/// with a fresh store complete but not in place, and with both directories
/// exchanged but the exchange not yet synced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_while_a_fresh_store_takes_the_old_ones_place() {
    for point in ["sled::renew_before_exchange", "sled::renew_after_exchange"] {
        crash_at_with(point, 2, "sled::renew_floor=return(1)").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_during_recovery_itself() {
    let harness: Arc<Harness> = Harness::start(&[]).await;
    // Slow sagas, so that plenty are unfinished when the coordinator is killed.
    for i in 0..12 {
        harness
            .start_saga(format!("{i}"), Fate::Slow { ms: 400 })
            .await;
    }
    let restarter = harness.clone();
    let stderr = tokio::task::spawn_blocking(move || {
        restarter.kill_and_restart(&[("FAILPOINTS", "recovery::after_resume=2*off->return")]);
        restarter.await_crash_and_restart()
    })
    .await
    .unwrap();
    assert!(
        stderr.contains("crash point recovery::after_resume"),
        "{stderr}"
    );
    for (i, fate) in fates().into_iter().enumerate().skip(12) {
        harness.start_saga(format!("{i}"), fate).await;
    }
    let summary = harness.settle_and_check().await;
    assert_eq!(summary.listed, 24);
    assert_eq!(summary.kills, 2);
    harness.stop();
}
