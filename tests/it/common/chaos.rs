//! The crash-test harness: the real `sagad` binary on a temp data dir, killed and
//! restarted, with participants (in the test process, over loopback gRPC) that
//! keep a ledger of every call and apply each idempotency key once.
//!
//! Sagas get seeded, scripted fates (complete, rejected at a step, transient
//! failures, slow steps); `check` then proves the promises of `docs/design.md` on what
//! the coordinator and the participants' ledger say.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sagad::proto::v1::{self as pb, coordinator_client::CoordinatorClient};
use tokio::sync::watch;
use tonic::Code;

use super::{Answer, Client, FakeParticipant, Served, process::SagadProcess, serve};

/// The order-fulfillment steps, in order.
pub const STEPS: [&str; 3] = ["validate-order", "charge-payment", "ship-order"];
/// How much later than its start request a saga of the pivot run starts.
const START_DELAY: Duration = Duration::from_millis(150);
/// The pivot run's deadline: never reached by a saga that settles.
const DEADLINE: Duration = Duration::from_secs(3_600);

/// How long the whole run may take to settle: generous, never a speed assertion.
pub const SETTLE_DEADLINE: Duration = Duration::from_secs(180);
/// How long one call may go unanswered. A coordinator that is killed drops its
/// connections at once (the call then fails and is retried), so a call that
/// hangs this long was accepted by a live coordinator that never answered it: a
/// bug to report, not to wait out.
const CALL_DEADLINE: Duration = Duration::from_secs(60);

/// What a saga's participants are scripted to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Fate {
    Complete,
    /// The forward of this step is rejected; compensations of earlier steps fail
    /// `fails` times first.
    Reject {
        step: usize,
        fails: u32,
    },
    /// The forward of this step fails `fails` times, then succeeds.
    Transient {
        step: usize,
        fails: u32,
    },
    /// Every forward takes this long.
    Slow {
        ms: u64,
    },
}

impl Fate {
    /// A seeded mix of fates.
    pub fn pick(rng: &mut fastrand::Rng) -> Self {
        match rng.u32(0..10) {
            0..=3 => Fate::Complete,
            4..=6 => Fate::Reject {
                step: rng.usize(0..3),
                fails: rng.u32(0..3),
            },
            7..=8 => Fate::Transient {
                step: rng.usize(0..3),
                fails: rng.u32(1..4),
            },
            _ => Fate::Slow {
                ms: rng.u64(20..250),
            },
        }
    }

    pub fn payload(&self, key: &str) -> String {
        let (fate, step, n) = match self {
            Fate::Complete => ("complete", 0, 0),
            Fate::Reject { step, fails } => ("reject", *step, *fails as u64),
            Fate::Transient { step, fails } => ("transient", *step, *fails as u64),
            Fate::Slow { ms } => ("slow", 0, *ms),
        };
        format!(r#"{{"key":"{key}","fate":"{fate}","step":{step},"n":{n}}}"#)
    }
}

/// The participants' script: reads the fate from the payload.
pub fn script(r: &pb::StepRequest) -> Answer {
    let p: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
    let step = STEPS.iter().position(|s| *s == r.step).unwrap() as u64;
    let target = p["step"].as_u64().unwrap();
    let n = p["n"].as_u64().unwrap();
    let forward = r.action == pb::Action::Forward as i32;
    match (p["fate"].as_str().unwrap(), forward) {
        ("reject", true) if step == target => Answer::Reject("scripted rejection"),
        ("reject", false) if u64::from(r.attempt) <= n => Answer::Status(Code::Unavailable),
        ("transient", true) if step == target && u64::from(r.attempt) <= n => {
            Answer::Status(Code::Unavailable)
        }
        ("slow", true) => Answer::Slow(Duration::from_millis(n), Box::new(Answer::Ok)),
        _ => Answer::Ok,
    }
}

/// The coordinator process, its data dir, the participants, and what was started.
pub struct Harness {
    pub data_dir: PathBuf,
    _dir: tempfile::TempDir,
    pub shop: Served,
    process: Mutex<Option<SagadProcess>>,
    addr_tx: watch::Sender<SocketAddr>,
    pub addr_rx: watch::Receiver<SocketAddr>,
    /// Acknowledged starts: idempotency key → (saga id, fate).
    pub started: Mutex<HashMap<String, (String, Fate)>>,
    pub kills: Mutex<u32>,
    /// Sagas run the order-fulfillment steps inline, `charge-payment` a
    /// pivot and `ship-order` retriable ([`Harness::start_with_pivot`]).
    pub pivot: bool,
    /// No other heavy test runs while this harness lives.
    _heavy: tokio::sync::MutexGuard<'static, ()>,
}

impl Harness {
    /// Starts the participants and a coordinator (with `env`), and registers the shop.
    pub async fn start(env: &[(&str, &str)]) -> Arc<Self> {
        Self::start_speaking(pb::Protocol::Grpc, env).await
    }

    /// [`Harness::start`], the participants speaking `protocol` (gRPC, or
    /// the HTTP/JSON contract).
    pub async fn start_speaking(protocol: pb::Protocol, env: &[(&str, &str)]) -> Arc<Self> {
        Self::start_as(protocol, false, env).await
    }

    /// [`Harness::start`], every saga's `charge-payment` a pivot and its
    /// `ship-order` retriable: a rejected shipment fails the saga without
    /// undoing anything.
    pub async fn start_with_pivot(env: &[(&str, &str)]) -> Arc<Self> {
        Self::start_as(pb::Protocol::Grpc, true, env).await
    }

    async fn start_as(protocol: pb::Protocol, pivot: bool, env: &[(&str, &str)]) -> Arc<Self> {
        let heavy = super::heavy().await;
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_path_buf();
        let fake = FakeParticipant::new(script);
        let shop = match protocol {
            pb::Protocol::Grpc => serve(fake).await,
            _ => super::serve_http(fake).await,
        };
        let process = SagadProcess::spawn(&data_dir, env);
        let (addr_tx, addr_rx) = watch::channel(process.addr);
        let harness = Arc::new(Self {
            data_dir,
            _dir: dir,
            shop,
            process: Mutex::new(Some(process)),
            addr_tx,
            addr_rx,
            started: Mutex::new(HashMap::new()),
            kills: Mutex::new(0),
            pivot,
            _heavy: heavy,
        });
        let retry = pb::RetryPolicy {
            initial_interval: Some(prost_types::Duration {
                seconds: 0,
                nanos: 20_000_000,
            }),
            multiplier: Some(2.0),
            max_interval: Some(prost_types::Duration {
                seconds: 0,
                nanos: 300_000_000,
            }),
            max_attempts: Some(8),
            max_compensate_attempts: Some(100),
            jitter: Some(0.2),
            max_duration: None,
        };
        for name in ["orders", "payments", "shipping"] {
            let request = pb::RegisterParticipantRequest {
                protocol: harness.shop.protocol as i32,
                name: name.into(),
                forward_endpoint: harness.shop.forward_url(),
                compensate_endpoint: harness.shop.compensate_url(),
                retry: Some(retry),
                timeout: Some(prost_types::Duration {
                    seconds: 2,
                    nanos: 0,
                }),
                ..Default::default()
            };
            harness
                .call(|mut c| {
                    let request = request.clone();
                    async move { c.register_participant(request).await }
                })
                .await;
        }
        harness
    }

    /// SIGKILLs the coordinator and starts a new one on the same data dir (with `env`).
    pub fn kill_and_restart(&self, env: &[(&str, &str)]) {
        let mut process = self.process.lock().unwrap();
        if let Some(p) = process.take() {
            p.kill();
        }
        *self.kills.lock().unwrap() += 1;
        let p = SagadProcess::spawn(&self.data_dir, env);
        let _ = self.addr_tx.send(p.addr);
        *process = Some(p);
    }

    /// Waits for the coordinator to die on its own (a crash point), then starts a
    /// fresh one without crash points. Returns the dead one's stderr.
    pub fn await_crash_and_restart(&self) -> String {
        let mut process = self.process.lock().unwrap();
        let mut dead = process.take().expect("a running coordinator");
        let (status, stderr) = dead.wait_exit();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(9),
            "the crash point kills with SIGKILL; stderr:\n{stderr}"
        );
        *self.kills.lock().unwrap() += 1;
        let p = SagadProcess::spawn(&self.data_dir, &[]);
        let _ = self.addr_tx.send(p.addr);
        *process = Some(p);
        stderr
    }

    async fn client(&self) -> Option<Client> {
        let addr = *self.addr_rx.borrow();
        CoordinatorClient::connect(format!("http://{addr}"))
            .await
            .ok()
    }

    /// Calls the coordinator until it answers, across kills and restarts. Errors
    /// that a restart explains (transport, unavailable) are retried; any other
    /// status fails the test.
    pub async fn call<T, F, Fut>(&self, mut f: F) -> T
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let start = Instant::now();
        loop {
            assert!(
                start.elapsed() < SETTLE_DEADLINE,
                "the coordinator never answered"
            );
            let answer = tokio::time::timeout(CALL_DEADLINE, async {
                let client = self.client().await?;
                Some(f(client).await)
            })
            .await;
            let Ok(answer) = answer else {
                panic!(
                    "a call to the coordinator at {} got no answer in {CALL_DEADLINE:?}",
                    *self.addr_rx.borrow()
                );
            };
            let Some(answer) = answer else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            match answer {
                Ok(response) => return response.into_inner(),
                Err(s) if explained_by_a_restart(&s) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(s) => panic!("unexpected answer {:?}: {}", s.code(), s.message()),
            }
        }
    }

    /// Starts a saga with `fate` under idempotency key `key`, retrying across
    /// restarts until it is acknowledged.
    pub async fn start_saga(&self, key: String, fate: Fate) {
        let kinds = [
            pb::StepKind::Compensatable,
            pb::StepKind::Pivot,
            pb::StepKind::Retriable,
        ];
        let participants = ["orders", "payments", "shipping"];
        let request = pb::StartSagaRequest {
            // Inline steps have no definition name.
            definition: match self.pivot {
                true => String::new(),
                false => "order-fulfillment".into(),
            },
            steps: match self.pivot {
                true => (0..3)
                    .map(|i| pb::StepDefinition {
                        name: STEPS[i].into(),
                        participant: participants[i].into(),
                        kind: kinds[i] as i32,
                        // The pivot builds its input from the payload: its
                        // fields (the script reads them), and one more.
                        input: match i {
                            1 => ["key", "fate", "step", "n"]
                                .map(|f| (f.to_string(), format!("/payload/{f}")))
                                .into_iter()
                                .chain([("order".to_string(), "/payload/key".to_string())])
                                .collect(),
                            _ => Default::default(),
                        },
                        ..Default::default()
                    })
                    .collect(),
                false => Vec::new(),
            },
            payload: fate.payload(&key).into_bytes(),
            idempotency_key: key.clone(),
            // With the pivot, each saga also starts a moment later and has a
            // deadline it never reaches: both journaled, both kept by kills.
            start_delay: self
                .pivot
                .then(|| sagad::api::convert::duration(START_DELAY)),
            deadline: self.pivot.then(|| sagad::api::convert::duration(DEADLINE)),
            ..Default::default()
        };
        let response = self
            .call(|mut c| {
                let request = request.clone();
                async move { c.start_saga(request).await }
            })
            .await;
        let id = response.saga.unwrap().id;
        let previous = self.started.lock().unwrap().insert(key, (id.clone(), fate));
        if let Some((other, _)) = previous {
            assert_eq!(other, id, "one idempotency key, one saga");
        }
    }

    /// Waits until every acknowledged saga is terminal, then checks every promise.
    pub async fn settle_and_check(&self) -> Summary {
        let started: Vec<(String, (String, Fate))> = self
            .started
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut summary = Summary::default();
        for (key, (id, fate)) in &started {
            let start = Instant::now();
            let saga = loop {
                let saga = self
                    .call(|mut c| {
                        let id = id.clone();
                        // Every attempt: the check holds the journal's whole numbering.
                        let request = pb::GetSagaRequest {
                            id,
                            all_attempts: true,
                        };
                        async move { c.get_saga(request).await }
                    })
                    .await;
                let state = pb::SagaState::try_from(saga.state).unwrap();
                if matches!(
                    state,
                    pb::SagaState::Completed | pb::SagaState::Compensated | pb::SagaState::Failed
                ) {
                    break saga;
                }
                assert!(
                    start.elapsed() < SETTLE_DEADLINE,
                    "saga {id} ({fate:?}) stuck in {state:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            check(&saga, key, fate, &self.shop.fake, self.pivot);
            match pb::SagaState::try_from(saga.state).unwrap() {
                pb::SagaState::Completed => summary.completed += 1,
                pb::SagaState::Failed => summary.failed += 1,
                _ => summary.compensated += 1,
            }
        }
        // No saga exists twice: every idempotency key names one saga.
        let mut keys = HashSet::new();
        let mut token = String::new();
        loop {
            let page = self
                .call(|mut c| {
                    let page_token = token.clone();
                    async move {
                        c.list_sagas(pb::ListSagasRequest {
                            page_size: 1000,
                            page_token,
                            ..Default::default()
                        })
                        .await
                    }
                })
                .await;
            for saga in &page.summaries {
                assert!(
                    keys.insert(saga.idempotency_key.clone()),
                    "two sagas for key {}",
                    saga.idempotency_key
                );
            }
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        summary.sagas = started.len();
        summary.listed = keys.len();
        summary.kills = *self.kills.lock().unwrap();
        summary
    }

    /// SIGTERMs the coordinator, checks it exits 0, and starts a new one.
    pub fn terminate_and_restart(&self) {
        let mut process = self.process.lock().unwrap();
        let p = process.take().expect("a running coordinator");
        let (status, stderr) = p.terminate();
        assert!(
            status.success(),
            "sagad did not exit cleanly on SIGTERM: {status}\n{stderr}"
        );
        let p = SagadProcess::spawn(&self.data_dir, &[]);
        let _ = self.addr_tx.send(p.addr);
        *process = Some(p);
    }

    /// Starts `lanes` tasks that start sagas under keys `{prefix}0`,
    /// `{prefix}1`, … a few milliseconds apart, until at least `sagas` are
    /// started and [`Lanes::finish`] is called. Saga 0 completes and saga 1
    /// is compensated; the others' fates are drawn from `rng`.
    pub fn start_lanes(
        self: &Arc<Self>,
        lanes: usize,
        sagas: usize,
        prefix: &str,
        rng: &mut fastrand::Rng,
    ) -> Lanes {
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handles = (0..lanes)
            .map(|lane| {
                let (harness, next, done) = (self.clone(), next.clone(), done.clone());
                let mut rng = fastrand::Rng::with_seed(rng.u64(..) ^ lane as u64);
                let prefix = prefix.to_string();
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        if i >= sagas && done.load(std::sync::atomic::Ordering::SeqCst) {
                            break;
                        }
                        let fate = match i {
                            0 => Fate::Complete,
                            1 => Fate::Reject { step: 2, fails: 1 },
                            _ => Fate::pick(&mut rng),
                        };
                        harness.start_saga(format!("{prefix}{i}"), fate).await;
                        tokio::time::sleep(Duration::from_millis(rng.u64(5..40))).await;
                    }
                })
            })
            .collect();
        Lanes { done, handles }
    }

    /// Stops the coordinator with SIGTERM and checks it exits 0.
    pub fn stop(&self) {
        if let Some(p) = self.process.lock().unwrap().take() {
            let (status, stderr) = p.terminate();
            assert!(
                status.success(),
                "sagad did not exit cleanly: {status}\n{stderr}"
            );
        }
    }
}

/// Whether a call's failure is what a coordinator that is dead, restarting
/// or recovering answers (or its connection breaking): tried again, by the
/// harnesses, rather than failing the test.
pub fn explained_by_a_restart(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Internal
    )
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Summary {
    pub sagas: usize,
    pub listed: usize,
    pub completed: usize,
    pub compensated: usize,
    /// Past the pivot, a retriable step that gave up ([`Harness::pivot`]).
    pub failed: usize,
    pub kills: u32,
}

/// The tasks of [`Harness::start_lanes`].
pub struct Lanes {
    done: Arc<std::sync::atomic::AtomicBool>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Lanes {
    /// Lets the lanes stop once enough sagas are started, and waits for them.
    pub async fn finish(self) {
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
        for handle in self.handles {
            handle.await.unwrap();
        }
    }
}

/// Checks one terminal saga against its script and the participants' ledger.
///
/// With `pivot` (`charge-payment` a pivot, `ship-order` retriable), a saga
/// may also end FAILED: only when `ship-order` gave up past the pivot, with
/// the first two steps applied once and nothing compensated; and
/// `ship-order`, a retriable step, is never compensated.
pub fn check(saga: &pb::Saga, key: &str, fate: &Fate, fake: &FakeParticipant, pivot: bool) {
    let id = &saga.id;
    let state = pb::SagaState::try_from(saga.state).unwrap();
    let ctx = format!(
        "saga {id} ({key}, {fate:?}, {state:?}, error: {:?})",
        saga.error
    );
    let applied = fake.applied(id);
    let forwards: Vec<&str> = applied
        .iter()
        .filter_map(|a| a.strip_prefix("F:"))
        .collect();
    let compensations: Vec<&str> = applied
        .iter()
        .filter_map(|a| a.strip_prefix("C:"))
        .collect();
    if pivot {
        assert!(
            !compensations.contains(&STEPS[2]),
            "{ctx}: a retriable step is never compensated"
        );
        // Scheduled: nothing arrived before the journaled start, and the
        // deadline counts from it (both survived every kill).
        let wall = |t: &prost_types::Timestamp| std::time::SystemTime::try_from(*t).unwrap();
        let start = wall(
            saga.start_at
                .as_ref()
                .unwrap_or_else(|| panic!("{ctx}: no start")),
        );
        let deadline = wall(
            saga.deadline
                .as_ref()
                .unwrap_or_else(|| panic!("{ctx}: no deadline")),
        );
        assert_eq!(deadline.duration_since(start).ok(), Some(DEADLINE), "{ctx}");
        for call in fake.calls().iter().filter(|c| &c.saga_id == id) {
            assert!(
                call.arrived_wall >= start,
                "{ctx}: {} before its start",
                call.step
            );
        }
        // The pivot's mapped input: journaled once, sent by every attempt
        // (across kills) and by its compensation, as built.
        let json = |bytes: &[u8]| serde_json::from_slice::<serde_json::Value>(bytes).unwrap();
        let mut expected = json(&saga.payload);
        expected["order"] = expected["key"].clone();
        for call in fake
            .calls()
            .iter()
            .filter(|c| &c.saga_id == id && c.step == STEPS[1])
        {
            assert_eq!(json(&call.payload), expected, "{ctx}: the pivot's input");
        }
        if !saga.steps[1].input.is_empty() {
            assert_eq!(
                json(&saga.steps[1].input),
                expected,
                "{ctx}: journaled input"
            );
        }
    }
    if state == pb::SagaState::Failed {
        assert!(pivot, "{ctx}: compensations always succeed in time here");
        assert!(
            saga.error.contains("past the point of no return"),
            "{ctx}: only a step past the pivot fails a saga here"
        );
        // The retriable step may have applied after all when its last
        // attempt was cut off by a kill: its outcome is unknown, and the
        // operator's retry sends the same idempotency key. An attempt that
        // reached the participant after it applied would have succeeded, so
        // only the last one can hide it.
        let expected = match saga.error.contains("outcome is unknown") {
            true if forwards.len() == 3 => STEPS.as_slice(),
            _ => &STEPS[..2],
        };
        assert_eq!(
            forwards, expected,
            "{ctx}: the steps up to the pivot applied once, the retriable one at most once"
        );
        assert!(
            compensations.is_empty(),
            "{ctx}: nothing undone past the pivot"
        );
        assert_eq!(saga.steps[2].state, pb::StepState::Failed as i32, "{ctx}");
    }
    match state {
        pb::SagaState::Failed => {}
        pb::SagaState::Completed => {
            assert!(
                !matches!(fate, Fate::Reject { .. }),
                "{ctx}: a rejected saga cannot complete"
            );
            assert_eq!(
                forwards, STEPS,
                "{ctx}: every forward applied exactly once, in order"
            );
            assert!(compensations.is_empty(), "{ctx}: nothing compensated");
        }
        pb::SagaState::Compensated => {
            if !matches!(fate, Fate::Reject { .. }) {
                // Only running out of attempts (restarts interrupt attempts and
                // count against the budget) may turn back a saga scripted to pass.
                assert!(
                    saga.error.contains("failed after"),
                    "{ctx}: compensated without a reason"
                );
            }
            // Net effect zero: each applied forward has exactly one compensation,
            // applied in reverse step order.
            let mut expected: Vec<&str> = forwards.clone();
            expected.reverse();
            assert_eq!(
                compensations, expected,
                "{ctx}: compensations undo exactly the applied forwards, last first"
            );
            if let Fate::Reject { step, .. } = fate {
                assert!(
                    !forwards.contains(&STEPS[*step]),
                    "{ctx}: a rejected forward did nothing"
                );
                // A journaled rejection leaves the step FAILED (it did nothing).
                // Kills may instead cut off every attempt before an answer was
                // journaled: then its effect is unknown, and it is compensated
                // like a step that ran out of attempts.
                let expected = if saga.error.contains("failed after") {
                    pb::StepState::Compensated
                } else {
                    pb::StepState::Failed
                };
                assert_eq!(saga.steps[*step].state, expected as i32, "{ctx}");
            }
        }
        other => panic!("{ctx}: not terminal: {other:?}"),
    }
    // The journal's attempts: numbered 1..n per step and action, never reused.
    let mut journaled = HashSet::new();
    for step in &saga.steps {
        for action in [pb::Action::Forward as i32, pb::Action::Compensate as i32] {
            let numbers: Vec<u32> = step
                .attempts
                .iter()
                .filter(|a| a.action == action)
                .map(|a| a.number)
                .collect();
            let expected: Vec<u32> = (1..=numbers.len() as u32).collect();
            assert_eq!(numbers, expected, "{ctx}: step {} attempts", step.name);
            journaled.extend(numbers.iter().map(|n| (step.name.clone(), action, *n)));
        }
    }
    // Every call a participant received was journaled first, under its number;
    // and no number reached it twice (a restart never reuses one). The order
    // they arrive in proves nothing: attempt n, sent by a process that then
    // died, can reach the participant after the next process's n + 1.
    let mut seen = HashSet::new();
    for call in fake.calls().iter().filter(|c| &c.saga_id == id) {
        let action = if call.compensate {
            pb::Action::Compensate
        } else {
            pb::Action::Forward
        } as i32;
        assert!(
            journaled.contains(&(call.step.clone(), action, call.attempt)),
            "{ctx}: call {}#{} (compensate: {}) is not in the journal",
            call.step,
            call.attempt,
            call.compensate
        );
        assert!(
            seen.insert((call.step.clone(), call.compensate, call.attempt)),
            "{ctx}: attempt {} of {} (compensate: {}) reached the participant twice",
            call.attempt,
            call.step,
            call.compensate
        );
    }
}

/// [`check`] itself, on histories the harness can meet: it must accept every
/// outcome the design allows, or a crash test fails on a correct coordinator.
mod checks {
    use sagad::proto::v1::participant_service_server::ParticipantService;
    use tonic::Request;

    use super::*;

    fn attempt(action: pb::Action, number: u32) -> pb::Attempt {
        pb::Attempt {
            action: action as i32,
            number,
            ..Default::default()
        }
    }

    /// A saga whose rejecting step was never answered: kills cut off every
    /// forward attempt, so the step's effect is unknown and it is compensated
    /// like a step that ran out of attempts (docs/design.md, answers table).
    #[test]
    fn a_rejecting_step_whose_every_attempt_was_cut_off_is_compensated() {
        let saga = pb::Saga {
            id: "s".into(),
            state: pb::SagaState::Compensated as i32,
            error: "step 'validate-order' failed after 8 attempts: interrupted".into(),
            steps: STEPS
                .iter()
                .enumerate()
                .map(|(i, name)| pb::Step {
                    name: name.to_string(),
                    state: if i == 0 {
                        pb::StepState::Compensated as i32
                    } else {
                        pb::StepState::Skipped as i32
                    },
                    attempts: if i == 0 {
                        (1..=8)
                            .map(|n| attempt(pb::Action::Forward, n))
                            .chain([attempt(pb::Action::Compensate, 1)])
                            .collect()
                    } else {
                        Vec::new()
                    },
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let fake = FakeParticipant::new(|_| Answer::Ok);
        check(
            &saga,
            "k",
            &Fate::Reject { step: 0, fails: 0 },
            &fake,
            false,
        );
    }

    /// Attempt n of a step was in flight when the coordinator died; the next
    /// process journaled it as interrupted and sent n + 1, which reached the
    /// participant first: numbers arrive out of order, but none twice.
    #[tokio::test]
    async fn attempts_of_two_processes_may_arrive_out_of_order() {
        let saga = pb::Saga {
            id: "s".into(),
            state: pb::SagaState::Completed as i32,
            steps: STEPS
                .iter()
                .map(|name| pb::Step {
                    name: name.to_string(),
                    state: pb::StepState::Succeeded as i32,
                    attempts: if *name == STEPS[2] {
                        vec![
                            attempt(pb::Action::Forward, 1),
                            attempt(pb::Action::Forward, 2),
                        ]
                    } else {
                        vec![attempt(pb::Action::Forward, 1)]
                    },
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let fake = FakeParticipant::new(|_| Answer::Ok);
        let call = |step: &str, attempt: u32| {
            Request::new(pb::StepRequest {
                saga_id: "s".into(),
                step: step.into(),
                action: pb::Action::Forward as i32,
                attempt,
                idempotency_key: format!("s/{step}/forward"),
                ..Default::default()
            })
        };
        fake.forward(call(STEPS[0], 1)).await.unwrap();
        fake.forward(call(STEPS[1], 1)).await.unwrap();
        fake.forward(call(STEPS[2], 2)).await.unwrap();
        fake.forward(call(STEPS[2], 1)).await.unwrap();
        check(&saga, "k", &Fate::Complete, &fake, false);
    }
}
