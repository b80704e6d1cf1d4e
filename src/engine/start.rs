//! Starting a saga: [`Engine::start_saga`], and the requests it takes.
//!
//! A start is: check the request's limits; find its steps (a loaded
//! definition, or the request's own) and freeze them against the registered
//! participants; then either answer with the saga its idempotency key already
//! started, or journal `SagaStarted` for a fresh one through its new runner.
//!
//! Invariants:
//! - A start is answered only once `SagaStarted` is durable (or, with `wait`,
//!   once the saga is terminal).
//! - One idempotency key, one saga: a start that loses the race to journal the
//!   same key finds the winner's saga and answers with it, or refuses if that
//!   saga was started with a different request.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{
    CommandRx, Engine, IDEMPOTENCY_KEY_MAX_LEN, INLINE_DEFINITION, RUNNER_COMMAND_CAPACITY, runner,
};
use crate::{
    Error, Result,
    error::JournalFault,
    saga::{
        Event, EventKind, Offset, Principal, SagaId, SagaState, StepDef, StepSpec, Timestamp,
        TraceContext, definition,
    },
};

/// Where a saga's steps come from.
#[derive(Clone, Debug, PartialEq)]
pub enum SagaSource {
    /// A definition loaded at start.
    Definition(String),
    /// Steps given in the request.
    Inline(Vec<StepDef>),
}

/// A request to start a saga.
#[derive(Clone, Debug)]
pub struct StartRequest {
    pub source: SagaSource,
    pub payload: Vec<u8>,
    pub idempotency_key: Option<String>,
    /// Return only once the saga is terminal.
    pub wait: bool,
    /// The caller's W3C trace context, journaled with the saga and passed on to
    /// every participant call. Not part of the request's identity: a repeat
    /// with the same idempotency key but another trace finds the same saga.
    pub trace: Option<TraceContext>,
    /// Who asks: journaled as the saga's `started_by`.
    pub principal: Principal,
    /// The idempotency key may only name a saga this principal's identity
    /// started (a `starter`'s start: another's saga is not shown to it).
    pub own_keys_only: bool,
    /// When the saga makes its first call (`None`: at once). Not part of the
    /// request's identity, like `trace`: a repeat with a relative time asks
    /// for another instant every time, and finds the same saga.
    pub start: Option<When>,
    /// Its deadline, instead of its definition's (`After` counts from the
    /// start). Not part of the request's identity either.
    pub deadline: Option<When>,
}

/// How far ahead a start or a deadline may be.
const TIMES_AHEAD_MAX: Duration = Duration::from_secs(100 * 365 * 86_400);

/// A time a request names: absolute, or relative to a moment the engine
/// fixes (now, for a start; the start, for a deadline).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    At(Timestamp),
    After(Duration),
}

impl When {
    fn from(self, base: Timestamp) -> Timestamp {
        match self {
            When::At(t) => t,
            When::After(d) => base.plus(d),
        }
    }
}

/// The answer to a start.
#[derive(Clone, Debug)]
pub struct Started {
    pub saga: SagaState,
    /// False when the idempotency key named an existing saga.
    pub created: bool,
}

/// A new saga's steps, as one start finds them.
struct Source<'a> {
    /// The definition name the saga records ([`INLINE_DEFINITION`] for inline steps).
    name: String,
    /// The steps to resolve, borrowed: only the saga's own copy is made.
    steps: &'a [StepDef],
    /// The steps journaled with an inline saga (part of its request's identity).
    inline_steps: Option<Vec<StepDef>>,
    /// The definition's deadline, counted from the start.
    deadline: Option<Duration>,
}

impl Engine {
    /// Starts a saga (or finds the one its idempotency key names).
    pub async fn start_saga(&self, request: StartRequest) -> Result<Started> {
        self.check_writable()?;
        self.check_limits(&request)?;
        let source = self.source(&request.source)?;
        let specs = match self.resolve_steps(source.steps) {
            // In a shared journal another node may have registered the
            // participant a moment ago: read them again before refusing.
            Err(_) if self.shares_its_journal() => {
                self.reload_participants().await?;
                self.resolve_steps(source.steps)?
            }
            specs => specs?,
        };
        loop {
            if let Some(started) = self.started_by_key(&request, &source).await? {
                return Ok(started);
            }
            if let Some(started) = self.launch(&request, &source, &specs).await? {
                return Ok(started);
            }
            // Another start with this key won the race: answer with its saga.
        }
    }

    /// Refuses a payload or an idempotency key over its limit.
    fn check_limits(&self, request: &StartRequest) -> Result<()> {
        let max = self.inner.config.max_payload_bytes;
        if request.payload.len() > max {
            return Err(Error::InvalidArgument(format!(
                "payload is {} bytes; the limit is {max} bytes (--max-payload-bytes)",
                request.payload.len()
            )));
        }
        if let Some(key) = &request.idempotency_key
            && key.len() > IDEMPOTENCY_KEY_MAX_LEN
        {
            return Err(Error::InvalidArgument(format!(
                "idempotency_key is {} bytes; at most {IDEMPOTENCY_KEY_MAX_LEN} are allowed",
                key.len()
            )));
        }
        Ok(())
    }

    /// The steps a start names: a loaded definition's, or the request's own.
    fn source<'a>(&'a self, source: &'a SagaSource) -> Result<Source<'a>> {
        match source {
            SagaSource::Definition(name) => {
                let definition = self.inner.definitions.get(name).ok_or_else(|| {
                    let known: Vec<_> = self.inner.definitions.keys().map(String::as_str).collect();
                    Error::NotFound(format!(
                        "definition '{}' not found; known definitions: {}",
                        crate::saga::text::quoted(name),
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ))
                })?;
                Ok(Source {
                    name: name.clone(),
                    steps: definition.steps.as_slice(),
                    inline_steps: None,
                    deadline: definition.deadline,
                })
            }
            SagaSource::Inline(steps) => Ok(Source {
                name: INLINE_DEFINITION.to_string(),
                steps: steps.as_slice(),
                inline_steps: Some(steps.clone()),
                deadline: None,
            }),
        }
    }

    /// Freezes `steps` against the participants registered now (see
    /// [`definition::resolve`]).
    fn resolve_steps(&self, steps: &[StepDef]) -> Result<Vec<StepSpec>> {
        let participants = self
            .inner
            .participants
            .read()
            .unwrap_or_else(|p| p.into_inner());
        Ok(definition::resolve(
            steps,
            &participants,
            &self.inner.config.defaults,
        )?)
    }

    /// The saga the request's idempotency key already started, if any: refused
    /// if it was started with a different request, and awaited to its end if the
    /// request waits.
    async fn started_by_key(
        &self,
        request: &StartRequest,
        source: &Source<'_>,
    ) -> Result<Option<Started>> {
        let Some(key) = &request.idempotency_key else {
            return Ok(None);
        };
        loop {
            let Some(existing) = self.inner.journal.saga_for_key(key).await? else {
                return Ok(None);
            };
            let saga = match self.get(existing).await {
                Ok(saga) => saga,
                // Archived by retention since the key was read: the key is free.
                Err(Error::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let owner = saga.started_by.as_ref().map(|by| &by.identity);
            if request.own_keys_only && owner != Some(&request.principal.identity) {
                return Err(Error::AlreadyExists(format!(
                    "idempotency_key '{key}' names a saga another principal started; use a new key for a new saga"
                )));
            }
            if saga.definition != source.name
                || saga.inline_steps != source.inline_steps
                || saga.payload != request.payload
            {
                return Err(Error::AlreadyExists(format!(
                    "idempotency_key '{key}' already started saga {existing} with a different request (definition, steps or payload differ); use a new key for a new saga"
                )));
            }
            let saga = if request.wait {
                self.wait(existing).await?
            } else {
                saga
            };
            return Ok(Some(Started {
                saga,
                created: false,
            }));
        }
    }

    /// Starts a fresh saga: claims it, has its new runner journal `SagaStarted`,
    /// and answers once that is durable (or, with `wait`, once the saga is
    /// terminal). `None` when another start journaled the same idempotency key
    /// first.
    async fn launch(
        &self,
        request: &StartRequest,
        source: &Source<'_>,
        specs: &[StepSpec],
    ) -> Result<Option<Started>> {
        let started = started_event(request, source, specs)?;
        let state = SagaState::start(&started)?;
        let id = state.id;
        let (command_tx, command_rx) = mpsc::channel(RUNNER_COMMAND_CAPACITY);
        let claimed = self.lock_owners().claim(id, command_tx);
        debug_assert!(claimed, "a fresh id is owned by no one");
        let (wait_tx, wait_rx) = oneshot::channel();
        let waiter = request.wait.then_some(wait_tx);
        let journaled = match self.journal_start(state, started, command_rx, waiter).await {
            Ok(journaled) => journaled,
            Err(e) if e.journal_fault() == Some(JournalFault::KeyTaken) => return Ok(None),
            Err(e) => return Err(e),
        };
        let saga = match journaled {
            Some(saga) => saga,
            None => match wait_rx.await {
                Ok(saga) => saga,
                Err(_) => self.wait(id).await?,
            },
        };
        Ok(Some(Started {
            saga,
            created: true,
        }))
    }

    /// Spawns the runner of a claimed new saga, which appends `started` first,
    /// and waits for that append to be durable. Answers with the saga's state,
    /// or, given a `waiter` (a start that waits), with `None`: the runner sends
    /// the terminal state to the waiter.
    async fn journal_start(
        &self,
        state: SagaState,
        started: Event,
        command_rx: CommandRx,
        waiter: Option<oneshot::Sender<SagaState>>,
    ) -> Result<Option<SagaState>> {
        let shutting_down = || Error::Unavailable("the coordinator is shutting down".into());
        match waiter {
            Some(wait_tx) => {
                let (ack_tx, ack_rx) = oneshot::channel();
                let ack = Some(runner::Ack::Durable(ack_tx));
                self.spawn_runner(state, vec![started], command_rx, ack, vec![wait_tx]);
                ack_rx.await.unwrap_or_else(|_| Err(shutting_down()))?;
                Ok(None)
            }
            None => {
                let (ack_tx, ack_rx) = oneshot::channel();
                let ack = Some(runner::Ack::State(ack_tx));
                self.spawn_runner(state, vec![started], command_rx, ack, vec![]);
                Ok(Some(ack_rx.await.unwrap_or_else(|_| Err(shutting_down()))?))
            }
        }
    }
}

/// The first event of a fresh saga: a new id, now, and the request frozen
/// with its resolved steps and its times made absolute. A deadline not after
/// the start is refused.
fn started_event(request: &StartRequest, source: &Source<'_>, specs: &[StepSpec]) -> Result<Event> {
    let now = Timestamp::now();
    let start_at = request.start.map(|s| s.from(now)).filter(|&t| t > now);
    let start = start_at.unwrap_or(now);
    let deadline = match (request.deadline, source.deadline) {
        (Some(when), _) => Some(when.from(start)),
        (None, definition) => definition.map(|d| start.plus(d)),
    };
    // Past this, a time is a mistake (and no clock or format is made for it).
    let latest = now.plus(TIMES_AHEAD_MAX);
    for (what, time) in [("start", Some(start)), ("deadline", deadline)] {
        if let Some(time) = time
            && time > latest
        {
            return Err(Error::InvalidArgument(format!(
                "the saga's {what} is {} ahead; at most 100 years are allowed",
                humantime::format_duration(Duration::from_secs(time.since(now).as_secs()))
            )));
        }
    }
    if let Some(deadline) = deadline
        && deadline <= start
    {
        let show = |t: Timestamp| crate::json::timestamp(t);
        return Err(Error::InvalidArgument(format!(
            "the deadline {} is not after the saga's start {}: give a later deadline_at, or a deadline duration",
            show(deadline),
            show(start)
        )));
    }
    Ok(Event {
        saga: SagaId::generate(),
        seq: 1,
        offset: Offset::ZERO,
        at: now,
        kind: EventKind::SagaStarted {
            definition: source.name.clone(),
            inline_steps: source.inline_steps.clone(),
            steps: specs.to_vec(),
            payload: request.payload.clone(),
            idempotency_key: request.idempotency_key.clone(),
            trace: request.trace.clone().map(Box::new),
            started_by: Some(Box::new(request.principal.clone())),
            start_at,
            deadline,
        },
    })
}
