//! Enforcing participant limits (`saga::limits`): a call waits here, after
//! its attempt is journaled and before it is sent, until the participant's
//! limits let it go.
//!
//! ```text
//!   runner ──admit(participant, limits)──▶ [in-flight permit] ─▶ [rate slot] ─▶ send
//!                                           FIFO semaphore        FIFO, evenly spaced
//! ```
//!
//! Both queues are first come, first served (tokio's semaphore and mutex
//! are fair), so no saga starves another, and a call never fails for
//! waiting: it waits. The permit is taken before the rate slot, so calls
//! that waited for a permit are still spaced when they go. The step's
//! timeout starts when the call is sent, not while it waits. A rate is
//! enforced as evenly spaced calls (`"50/s"`: one every 20 ms), never as a
//! burst. Limits are read from the registration at every call, so a
//! re-registration applies to the next call (calls already waiting finish
//! under the old ones). Each coordinator enforces them for its own calls: in
//! a cluster of N nodes a participant may see up to N times its limits.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Duration, Instant},
};

use crate::saga::limits::Limits;

/// The gates of every limited participant, by name.
#[derive(Default)]
pub struct Gates {
    gates: Mutex<HashMap<String, Arc<Gate>>>,
}

/// One participant's queues, for the limits it was made with.
struct Gate {
    limits: Limits,
    in_flight: Option<Arc<Semaphore>>,
    /// When the next call may go, and the gap between calls.
    next: Option<(tokio::sync::Mutex<Instant>, Duration)>,
}

/// A call let through: it holds its in-flight permit until dropped (when the
/// call returns).
pub struct Admission {
    _permit: Option<OwnedSemaphorePermit>,
}

impl Gates {
    /// Waits until `participant`'s `limits` let one more call go.
    pub async fn admit(&self, participant: &str, limits: Limits) -> Admission {
        if limits.is_none() {
            return Admission { _permit: None };
        }
        let gate = self.gate(participant, limits);
        let permit = match &gate.in_flight {
            // Never closed: a gate's semaphore lives as long as the gate.
            Some(s) => s.clone().acquire_owned().await.ok(),
            None => None,
        };
        if let Some((next, gap)) = &gate.next {
            let slot = {
                let mut next = next.lock().await;
                let slot = (*next).max(Instant::now());
                *next = slot + *gap;
                slot
            };
            tokio::time::sleep_until(slot).await;
        }
        Admission { _permit: permit }
    }

    /// The gate for `limits`, made afresh when the participant's limits
    /// changed.
    fn gate(&self, participant: &str, limits: Limits) -> Arc<Gate> {
        let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        match gates.get(participant) {
            Some(gate) if gate.limits == limits => gate.clone(),
            _ => {
                let gate = Arc::new(Gate {
                    limits,
                    in_flight: limits
                        .max_in_flight
                        .map(|n| Arc::new(Semaphore::new(n as usize))),
                    next: limits
                        .rate
                        .map(|r| (tokio::sync::Mutex::new(Instant::now()), r.interval())),
                });
                gates.insert(participant.to_string(), gate.clone());
                gate
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::saga::limits::Rate;

    /// Under a paused clock: twenty callers, two at a time, ten a second.
    #[tokio::test(start_paused = true)]
    async fn calls_wait_their_turn_two_at_a_time_and_evenly_spaced() {
        let gates = Arc::new(Gates::default());
        let limits = Limits {
            max_in_flight: Some(2),
            rate: Some(Rate {
                calls: 10,
                per: Duration::from_secs(1),
            }),
        };
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let started = Instant::now();
        let mut sent = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (gates, now, most) = (gates.clone(), now.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                let admitted = gates.admit("carrier", limits).await;
                let at = Instant::now();
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(n, Ordering::SeqCst);
                // Each call takes 350 ms at the participant.
                tokio::time::sleep(Duration::from_millis(350)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                drop(admitted);
                at
            }));
        }
        for task in tasks {
            sent.push(task.await.unwrap());
        }
        assert_eq!(
            most.load(Ordering::SeqCst),
            2,
            "never more than two at once"
        );
        sent.sort();
        for pair in sent.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(100), "{pair:?}");
        }
        assert!(sent[19] - started >= Duration::from_millis(1_900));

        // No limits: no wait, no gate.
        let free = Instant::now();
        gates.admit("free", Limits::default()).await;
        assert_eq!(Instant::now(), free);
        assert!(!gates.gates.lock().unwrap().contains_key("free"));
    }
}
