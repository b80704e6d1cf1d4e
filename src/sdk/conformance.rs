//! The barrier's rules, run against every store (`sled.rs` and
//! `postgres.rs` call each function with their own handler and a reader of
//! the committed effect), so both stores are held to one contract.
//!
//! The test handler [`Shop`] charges on forward and refunds on compensate,
//! writing `charged`/`refunded` for the saga through the store's `tx`, and
//! counts how often each handler ran. The payload's `mode` steers it:
//! `reject` and `retry-first` (a retry on attempt 1) write their effect first
//! and then refuse, so a rollback is visible; `gate` waits for a permit
//! before writing, to hold a call inside the handler.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
};

use tokio::sync::Semaphore;

use super::{
    Answer, Barrier, Final, Handler, Output, Participant, Reject, Request, Verdict,
    call::Action,
    rules::{COMPENSATED_FIRST, NOTHING_TO_UNDO},
};

/// How often each handler ran, and the gate of `gate` mode.
pub struct Counts {
    pub forward: AtomicU32,
    pub compensate: AtomicU32,
    pub gate: Semaphore,
}

impl Default for Counts {
    fn default() -> Self {
        Self {
            forward: AtomicU32::new(0),
            compensate: AtomicU32::new(0),
            gate: Semaphore::new(0),
        }
    }
}

/// The test handler; each store implements `Handler` for it.
#[derive(Clone, Default)]
pub struct Shop {
    pub counts: Arc<Counts>,
}

/// What the forward handler does after writing `charged` for the saga.
pub enum Then {
    Succeed,
    Reject,
    Retry,
}

impl Shop {
    /// Counts a forward call and says how it ends (after `gate`, if asked).
    pub async fn forward_mode(&self, request: &Request) -> Then {
        self.counts.forward.fetch_add(1, Ordering::SeqCst);
        let mode: serde_json::Value = request.payload_json().unwrap_or_default();
        match mode["mode"].as_str() {
            Some("gate") => {
                // The semaphore is never closed: acquire only fails if it is.
                self.counts.gate.acquire().await.unwrap().forget();
                Then::Succeed
            }
            Some("reject") => Then::Reject,
            Some("retry-first") if request.attempt == 1 => Then::Retry,
            _ => Then::Succeed,
        }
    }

    /// The answer of a forward call that ended `then`.
    pub fn forward_answer(request: &Request, then: Then) -> Result<Output, Reject> {
        match then {
            Then::Succeed => Ok(Output::json(
                &serde_json::json!({"charge": request.saga_id}),
            )),
            Then::Reject => Err(Reject::rejected("card declined")),
            Then::Retry => Err(Reject::retry_after(
                "issuer busy",
                std::time::Duration::from_millis(250),
            )),
        }
    }

    /// Counts a compensate call.
    pub fn compensated(&self) {
        self.counts.compensate.fetch_add(1, Ordering::SeqCst);
    }

    fn runs(&self) -> (u32, u32) {
        (
            self.counts.forward.load(Ordering::SeqCst),
            self.counts.compensate.load(Ordering::SeqCst),
        )
    }
}

/// A call of `action` for `saga`'s `charge` step.
pub fn request(
    saga: &str,
    action: Action,
    attempt: u32,
    epoch: Option<u64>,
    mode: &str,
) -> Request {
    Request {
        saga_id: saga.into(),
        definition: "order".into(),
        step: "charge".into(),
        action,
        attempt,
        idempotency_key: format!("{saga}/charge/{action}"),
        epoch,
        payload: serde_json::json!({ "mode": mode }).to_string().into_bytes(),
        outputs: Default::default(),
        deadline: None,
    }
}

fn charged(saga: &str) -> Answer {
    Answer::Final(Final::succeeded(
        serde_json::to_vec(&serde_json::json!({ "charge": saga })).unwrap(),
    ))
}

/// A repeat gets the first answer back, and the handler ran once; a
/// rejection is kept the same way, without its effect.
pub async fn repeats_get_the_first_answer<B, F, Fut>(p: Participant<B, Shop>, effect: F)
where
    B: Barrier,
    Shop: Handler<B>,
    F: Fn(String) -> Fut,
    Fut: Future<Output = Option<String>>,
{
    let first = p.call(&request("s1", Action::Forward, 1, None, "ok")).await;
    assert_eq!(first, charged("s1"));
    // A repeat with another attempt number and another mode: still the first answer.
    let again = p
        .call(&request("s1", Action::Forward, 2, None, "reject"))
        .await;
    assert_eq!(again, first);
    assert_eq!(p.handler().runs(), (1, 0));
    assert_eq!(effect("s1".into()).await.as_deref(), Some("charged"));

    let no = p
        .call(&request("s2", Action::Forward, 1, None, "reject"))
        .await;
    assert_eq!(no, Answer::Final(Final::rejected("card declined")));
    let again = p.call(&request("s2", Action::Forward, 2, None, "ok")).await;
    assert_eq!(again, no);
    assert_eq!(p.handler().runs(), (2, 0));
    assert_eq!(effect("s2".into()).await, None, "a rejection did nothing");
    // A rejected forward has nothing to undo.
    let undo = p
        .call(&request("s2", Action::Compensate, 1, None, "ok"))
        .await;
    assert!(
        matches!(&undo, Answer::Final(f) if f.reason == NOTHING_TO_UNDO),
        "{undo:?}"
    );
    assert_eq!(p.handler().runs(), (2, 0));

    // A compensation of a succeeded forward runs once, and repeats answer the same.
    let undo = p
        .call(&request("s1", Action::Compensate, 1, None, "ok"))
        .await;
    assert_eq!(undo, Answer::Final(Final::succeeded(Vec::new())));
    assert_eq!(
        p.call(&request("s1", Action::Compensate, 2, None, "ok"))
            .await,
        undo
    );
    assert_eq!(p.handler().runs(), (2, 1));
    assert_eq!(effect("s1".into()).await.as_deref(), Some("refunded"));
}

/// A compensation before its forward is "nothing to undo" without the
/// handler, and the forward that arrives later is rejected without it.
pub async fn a_compensation_first_bars_its_forward<B, F, Fut>(p: Participant<B, Shop>, effect: F)
where
    B: Barrier,
    Shop: Handler<B>,
    F: Fn(String) -> Fut,
    Fut: Future<Output = Option<String>>,
{
    let undo = p
        .call(&request("s3", Action::Compensate, 1, None, "ok"))
        .await;
    let Answer::Final(undo) = undo else {
        panic!("{undo:?}")
    };
    assert_eq!(
        (undo.verdict, undo.reason.as_str()),
        (Verdict::Succeeded, NOTHING_TO_UNDO)
    );
    let late = p.call(&request("s3", Action::Forward, 1, None, "ok")).await;
    assert_eq!(late, Answer::Final(Final::rejected(COMPENSATED_FIRST)));
    assert_eq!(
        p.call(&request("s3", Action::Forward, 2, None, "ok")).await,
        late
    );
    assert_eq!(p.handler().runs(), (0, 0), "neither handler ran");
    assert_eq!(effect("s3".into()).await, None);
}

/// A call under an older epoch than one seen for its step is refused and
/// runs nothing, also when the newer epoch's call only asked for a retry.
pub async fn an_older_epoch_is_refused<B, F, Fut>(p: Participant<B, Shop>, effect: F)
where
    B: Barrier,
    Shop: Handler<B>,
    F: Fn(String) -> Fut,
    Fut: Future<Output = Option<String>>,
{
    let retry = p
        .call(&request("s4", Action::Forward, 1, Some(8), "retry-first"))
        .await;
    assert!(matches!(retry, Answer::Retry { .. }), "{retry:?}");
    let stale = p
        .call(&request("s4", Action::Forward, 2, Some(7), "ok"))
        .await;
    assert_eq!(stale, Answer::Stale { epoch: 7, seen: 8 });
    assert_eq!(p.handler().runs(), (1, 0));
    assert_eq!(effect("s4".into()).await, None);

    assert_eq!(
        p.call(&request("s4", Action::Forward, 2, Some(9), "ok"))
            .await,
        charged("s4")
    );
    // Even a recorded answer is not given to a deposed caller.
    let stale = p
        .call(&request("s4", Action::Forward, 3, Some(8), "ok"))
        .await;
    assert_eq!(stale, Answer::Stale { epoch: 8, seen: 9 });
    let stale = p
        .call(&request("s4", Action::Compensate, 1, Some(8), "ok"))
        .await;
    assert_eq!(stale, Answer::Stale { epoch: 8, seen: 9 });
    assert_eq!(p.handler().runs(), (2, 0));
    assert_eq!(effect("s4".into()).await.as_deref(), Some("charged"));
    // The current epoch, and a single node's call without one, go on.
    let undo = p
        .call(&request("s4", Action::Compensate, 1, Some(9), "ok"))
        .await;
    assert!(matches!(undo, Answer::Final(_)), "{undo:?}");
    assert_eq!(p.handler().runs(), (2, 1));
}

/// A handler that asks for a retry after writing leaves neither effect nor
/// record: the next attempt runs again and its effect is the only one.
pub async fn a_retry_rolls_back_effect_and_record<B, F, Fut>(p: Participant<B, Shop>, effect: F)
where
    B: Barrier,
    Shop: Handler<B>,
    F: Fn(String) -> Fut,
    Fut: Future<Output = Option<String>>,
{
    let retry = p
        .call(&request("s5", Action::Forward, 1, None, "retry-first"))
        .await;
    assert_eq!(
        retry,
        Answer::Retry {
            reason: "issuer busy".into(),
            after: Some(std::time::Duration::from_millis(250))
        }
    );
    assert_eq!(
        effect("s5".into()).await,
        None,
        "the effect was rolled back"
    );
    // Nothing recorded: a compensation now has nothing to undo... but first
    // the retry, which runs the handler again.
    let done = p
        .call(&request("s5", Action::Forward, 2, None, "retry-first"))
        .await;
    assert_eq!(done, charged("s5"));
    assert_eq!(p.handler().runs(), (2, 0));
    assert_eq!(effect("s5".into()).await.as_deref(), Some("charged"));
}

/// Two deliveries of one call at once: the second waits for the first's
/// turn and gets its answer; the handler runs once. Run on a current-thread
/// runtime, so "the second is waiting" is reached by yielding, not by time.
pub async fn concurrent_duplicates_run_once<B>(p: Participant<B, Shop>)
where
    B: Barrier,
    Shop: Handler<B>,
{
    let first = tokio::spawn({
        let p = p.clone();
        async move {
            p.call(&request("s6", Action::Forward, 1, None, "gate"))
                .await
        }
    });
    // Wait (I/O included) until the first call is inside its handler.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while p.handler().runs().0 == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first call never ran"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let second = tokio::spawn({
        let p = p.clone();
        async move {
            p.call(&request("s6", Action::Forward, 1, None, "gate"))
                .await
        }
    });
    // The second reaches its turn's lock without I/O; let it get there.
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
    assert_eq!(p.handler().runs().0, 1, "the duplicate waited for its turn");
    // Permits for both: were the second to run its handler, it could.
    p.handler().counts.gate.add_permits(2);
    let (a, b) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!(a, charged("s6"));
    assert_eq!(b, a);
    assert_eq!(p.handler().runs(), (1, 0));
}

/// Random interleavings, checked against a model of the rules: for each of
/// `sagas` sagas, a seeded sequence of forwards (succeeding, declined, or
/// busy on attempt 1), compensations, repeats, late forwards and stale
/// epochs. Every answer must be the model's (a final answer is always the
/// action's first one), the handlers must have run exactly as often as the
/// model ran them, and each saga's net effect must be once (`charged`) or
/// zero (nothing, or `refunded`).
pub async fn random_interleavings<B, F, Fut>(p: Participant<B, Shop>, effect: F, seed: u64)
where
    B: Barrier,
    Shop: Handler<B>,
    F: Fn(String) -> Fut,
    Fut: Future<Output = Option<String>>,
{
    /// What the model knows of one saga's step.
    #[derive(Default)]
    struct Model {
        forward: Option<Final>,
        compensate: Option<Final>,
        epoch: Option<u64>,
    }
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut forward_runs, mut compensate_runs) = (0, 0);
    let sagas: Vec<String> = (0..20).map(|i| format!("p{seed}-{i}")).collect();
    let mut models: Vec<Model> = sagas.iter().map(|_| Model::default()).collect();
    for _ in 0..200 {
        let i = rng.usize(..sagas.len());
        let (saga, model) = (&sagas[i], &mut models[i]);
        let action = if rng.bool() {
            Action::Forward
        } else {
            Action::Compensate
        };
        let attempt = rng.u32(1..4);
        let epoch = (rng.u8(..4) > 0).then(|| rng.u64(1..5));
        let mode = ["ok", "ok", "reject", "retry-first"][rng.usize(..4)];
        let ctx = format!("seed {seed}: {saga} {action} #{attempt} epoch {epoch:?} {mode}");
        let answer = p.call(&request(saga, action, attempt, epoch, mode)).await;

        if let (Some(e), Some(high)) = (epoch, model.epoch)
            && e < high
        {
            assert_eq!(
                answer,
                Answer::Stale {
                    epoch: e,
                    seen: high
                },
                "{ctx}"
            );
            continue;
        }
        model.epoch = model.epoch.max(epoch);
        let (this, other) = match action {
            Action::Forward => (&model.forward, &model.compensate),
            Action::Compensate => (&model.compensate, &model.forward),
        };
        let expected = if let Some(first) = this {
            Some(first.clone())
        } else if action == Action::Forward && other.is_some() {
            Some(Final::rejected(COMPENSATED_FIRST))
        } else if action == Action::Compensate
            && !matches!(other, Some(f) if f.verdict == Verdict::Succeeded)
        {
            let mut nothing = Final::succeeded(Vec::new());
            nothing.reason = NOTHING_TO_UNDO.into();
            Some(nothing)
        } else if action == Action::Compensate {
            compensate_runs += 1;
            Some(Final::succeeded(Vec::new()))
        } else {
            forward_runs += 1;
            match mode {
                "reject" => Some(Final::rejected("card declined")),
                "retry-first" if attempt == 1 => None,
                _ => Some(Final::succeeded(
                    serde_json::to_vec(&serde_json::json!({ "charge": saga })).unwrap(),
                )),
            }
        };
        match expected {
            Some(expected) => {
                assert_eq!(answer, Answer::Final(expected.clone()), "{ctx}");
                let slot = match action {
                    Action::Forward => &mut model.forward,
                    Action::Compensate => &mut model.compensate,
                };
                slot.get_or_insert(expected);
            }
            None => assert!(matches!(answer, Answer::Retry { .. }), "{ctx}: {answer:?}"),
        }
    }
    assert_eq!(
        p.handler().runs(),
        (forward_runs, compensate_runs),
        "seed {seed}: each handler ran once per first final answer it gave"
    );
    for (saga, model) in sagas.iter().zip(&models) {
        let forwarded = matches!(&model.forward, Some(f) if f.verdict == Verdict::Succeeded);
        let undone = matches!(&model.compensate, Some(f) if f.reason != NOTHING_TO_UNDO);
        let expected = match (forwarded, undone) {
            (true, true) => Some("refunded"),
            (true, false) => Some("charged"),
            _ => None,
        };
        assert_eq!(
            effect(saga.clone()).await.as_deref(),
            expected,
            "seed {seed}: {saga}'s net effect"
        );
    }
}
