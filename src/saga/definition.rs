//! Participants, saga definitions and the step snapshot a saga runs with, plus
//! parsing the text of one `sagas/*.toml` file (finding and reading the files
//! is the caller's: `sagad serve` does it, this module reads nothing).
//!
//! Invariants:
//! - A `Definition` that exists has passed `validate`: a valid name, at least one
//!   step, unique step names, usable retry overrides and timeouts.
//! - A saga never looks a participant up again after it started: `resolve` copies
//!   endpoints, the fully resolved retry policy and the timeout into a `StepSpec`
//!   list that is journaled with the saga, so re-registering a participant or
//!   editing a file never changes a saga already running.

use std::{
    collections::HashMap,
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
    time::Duration,
};

use serde::{Deserialize, Serialize};

pub use super::protocol::Protocol;
use super::{
    id::Timestamp,
    input::{self, InputMap},
    limits::Limits,
    principal::Principal,
    retry::{PolicyError, RetryOverrides, RetryPolicy},
};

/// Longest accepted name of a participant, definition or step.
pub const NAME_MAX_LEN: usize = 128;
/// Longest accepted endpoint URL, in bytes.
pub const ENDPOINT_MAX_LEN: usize = 2048;
/// The gRPC service of the coordinator itself, which no endpoint may name.
pub const COORDINATOR_SERVICE: &str = "sagad.v1.Coordinator";
/// The gRPC service a participant may implement: a path into it is a gRPC
/// endpoint, whatever protocol its registration says.
pub const PARTICIPANT_SERVICE: &str = "sagad.v1.ParticipantService";
/// Longest accepted step timeout: a call that may take longer than a day is not
/// a step, and gRPC deadlines cannot express absurd ones.
pub const TIMEOUT_MAX: Duration = Duration::from_secs(24 * 3600);
/// Shortest accepted step timeout. A call given a nanosecond times out before
/// it is sent, and each such attempt is journaled: with the retry floor it
/// bounds how fast a step can fail. Ten milliseconds is still several round
/// trips on a local network.
pub const TIMEOUT_MIN: Duration = Duration::from_millis(10);

/// What is wrong with a participant, a definition or a definition file's text.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    #[error("{what} must not be empty")]
    EmptyName { what: &'static str },
    #[error(
        "{what} '{name}' is not valid: use at most {NAME_MAX_LEN} letters, digits, '-', '_' or '.'"
    )]
    InvalidName { what: &'static str, name: String },
    #[error("a saga needs at least one step")]
    NoSteps,
    #[error("step name '{0}' is used twice: step names must be unique within a saga")]
    DuplicateStep(String),
    #[error(
        "step '{step}' is {what} after the {before_kind} step '{before}': a saga runs its compensatable steps, then at most one pivot, then retriable steps (once past a pivot or a retriable step it can no longer turn back, so nothing after it could be undone)"
    )]
    KindOrder {
        step: String,
        what: &'static str,
        before: String,
        before_kind: &'static str,
    },
    #[error(
        "step '{step}' names participant '{participant}', which is not registered (register it with RegisterParticipant first)"
    )]
    UnknownParticipant { step: String, participant: String },
    #[error(
        "step '{step}' is compensatable, but participant '{participant}' has no compensate endpoint: register one, or make the step a pivot or retriable"
    )]
    CannotUndo { step: String, participant: String },
    #[error("step '{step}': {source}")]
    StepPolicy {
        step: String,
        #[source]
        source: PolicyError,
    },
    #[error("{0}")]
    Policy(#[from] PolicyError),
    #[error(
        "{what} timeout must be at least {:?} and at most 24h (got {got:?})",
        TIMEOUT_MIN
    )]
    Timeout { what: String, got: Duration },
    #[error("{what} '{url}' is not a valid endpoint: {why} (expected {expected})")]
    Endpoint {
        what: &'static str,
        url: String,
        why: &'static str,
        /// What an endpoint of the protocol asked for looks like.
        expected: &'static str,
    },
    #[error("step '{step}' {source}")]
    Input {
        step: String,
        #[source]
        source: input::InputError,
    },
    /// A definition file's text is wrong; `path` is the name the caller gave it.
    #[error("{path}:{line}: {message}")]
    File {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// Checks a participant, definition or step name.
pub fn validate_name(what: &'static str, name: &str) -> Result<(), DefinitionError> {
    if name.is_empty() {
        return Err(DefinitionError::EmptyName { what });
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.len() > NAME_MAX_LEN || !name.chars().all(ok_char) {
        return Err(DefinitionError::InvalidName {
            what,
            name: super::text::quoted(name),
        });
    }
    Ok(())
}

/// Where and how a participant is called: a gRPC method URL,
/// `http://host:port/package.Service/Method` (or `https://…` for a participant
/// reached over TLS, `crate::tls`), or an HTTP/JSON URL `http://host:port/path`
/// (see [`Protocol`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "StoredEndpoint", try_from = "StoredEndpoint")]
pub struct Endpoint {
    /// The URL as given. Shared: every participant call takes a copy of its
    /// endpoint, and a string copy per call showed in the coordinator's profile.
    url: Arc<str>,
    /// What the endpoint speaks; stored as a tag in front of the URL.
    protocol: Protocol,
    /// Length of `scheme://authority`, the part a channel connects to.
    origin_len: usize,
    /// The path, parsed once: every call needs it in this form, and parsing
    /// it per call (a check of each byte and a copy) showed in the profile.
    path: http::uri::PathAndQuery,
}

/// An [`Endpoint`] as stored: its URL, behind its protocol's tag (none for
/// gRPC, so gRPC endpoints are stored as they always were: see
/// `protocol.rs`), and where the path starts in the untagged URL.
#[derive(Serialize, Deserialize)]
struct StoredEndpoint {
    url: Arc<str>,
    origin_len: usize,
}

impl From<Endpoint> for StoredEndpoint {
    fn from(endpoint: Endpoint) -> Self {
        let url = match endpoint.protocol {
            Protocol::Grpc => endpoint.url,
            tagged => format!("{}{}", tagged.tag(), endpoint.url).into(),
        };
        Self {
            url,
            origin_len: endpoint.origin_len,
        }
    }
}

impl TryFrom<StoredEndpoint> for Endpoint {
    type Error = String;

    fn try_from(stored: StoredEndpoint) -> Result<Self, String> {
        let (protocol, url) = Protocol::untag(&stored.url);
        let path = url
            .get(stored.origin_len..)
            .and_then(|path| http::uri::PathAndQuery::from_str(path).ok())
            .ok_or_else(|| format!("endpoint {:?} has no valid path", stored.url))?;
        let url = match protocol {
            Protocol::Grpc => stored.url,
            _ => url.into(),
        };
        Ok(Self {
            url,
            protocol,
            origin_len: stored.origin_len,
            path,
        })
    }
}

/// serde for an endpoint a step or participant may lack (`compensate`):
/// stored as an endpoint with an empty URL, which no endpoint has, so the
/// records keep their shape (journal format 10 says it may be empty).
pub(crate) mod opt_endpoint {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{Endpoint, StoredEndpoint};

    pub fn serialize<S: Serializer>(e: &Option<Endpoint>, s: S) -> Result<S::Ok, S::Error> {
        match e {
            Some(e) => e.serialize(s),
            None => StoredEndpoint {
                url: Arc::from(""),
                origin_len: 0,
            }
            .serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Endpoint>, D::Error> {
        let stored = StoredEndpoint::deserialize(d)?;
        if stored.url.is_empty() {
            return Ok(None);
        }
        Endpoint::try_from(stored)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

impl Endpoint {
    /// Parses and checks a gRPC endpoint URL; `what` names the field in errors.
    pub fn parse(what: &'static str, url: &str) -> Result<Self, DefinitionError> {
        Self::parse_as(what, url, Protocol::Grpc)
    }

    /// Parses and checks an endpoint URL of `protocol`; `what` names the
    /// field in errors, which also say what to write instead.
    pub fn parse_as(
        what: &'static str,
        url: &str,
        protocol: Protocol,
    ) -> Result<Self, DefinitionError> {
        let expected = match protocol {
            Protocol::Grpc => {
                "a gRPC method URL such as http://127.0.0.1:7002/shop.Payments/Charge"
            }
            Protocol::Http | Protocol::H2c => {
                "an HTTP/JSON URL such as http://127.0.0.1:7002/payments/charge"
            }
        };
        let err = |why| DefinitionError::Endpoint {
            what,
            url: super::text::quoted(url),
            why,
            expected,
        };
        if url.len() > ENDPOINT_MAX_LEN {
            return Err(err("it is longer than the 2048 bytes an endpoint may have"));
        }
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("http://") {
            ("http://", rest)
        } else if let Some(rest) = url.strip_prefix("https://") {
            match protocol {
                Protocol::Grpc | Protocol::Http => ("https://", rest),
                Protocol::H2c => {
                    return Err(err(
                        "h2c is HTTP/2 without TLS: write http://, or register the endpoint with protocol http (HTTP/1.1, which may be https://)",
                    ));
                }
            }
        } else {
            return Err(err("it must start with http:// or https://"));
        };
        let slash = rest.find('/').ok_or_else(|| {
            err(match protocol {
                Protocol::Grpc => "it has no /Service/Method path",
                Protocol::Http | Protocol::H2c => "it has no path (write at least /)",
            })
        })?;
        let (authority, path) = rest.split_at(slash);
        if authority.is_empty() {
            return Err(err("it has no host"));
        }
        let parsed = http::uri::Authority::from_str(authority).ok();
        let host_end = authority.rfind(']').unwrap_or(0);
        let has_port = authority[host_end..].contains(':');
        let port_ok = parsed
            .as_ref()
            .is_some_and(|a| !has_port || a.port_u16().is_some());
        if !port_ok || authority.contains('@') {
            return Err(err("its host:port is malformed"));
        }
        match protocol {
            Protocol::Grpc => grpc_path(path).map_err(err)?,
            Protocol::Http | Protocol::H2c => {
                if path.contains('#') {
                    return Err(err("it has a #fragment, which is never sent"));
                }
                if path.starts_with(&format!("/{COORDINATOR_SERVICE}/")) {
                    return Err(err(
                        "it is sagad's own Coordinator service, which no step may call",
                    ));
                }
                // Other gRPC-looking paths are valid HTTP paths too; this one
                // can only be a method of sagad's gRPC participant contract.
                if path.starts_with(&format!("/{PARTICIPANT_SERVICE}/")) {
                    return Err(err(
                        "it is a method of the gRPC participant service: register it with protocol grpc",
                    ));
                }
            }
        }
        let parsed_path =
            http::uri::PathAndQuery::from_str(path).map_err(|_| err("its path is malformed"))?;
        Ok(Self {
            url: url.into(),
            protocol,
            origin_len: scheme.len() + authority.len(),
            path: parsed_path,
        })
    }

    /// What the endpoint speaks.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The full URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `http(s)://host:port`: what a channel connects to (one channel per origin).
    pub fn origin(&self) -> &str {
        &self.url[..self.origin_len]
    }

    /// The host (without brackets for IPv6) and port the endpoint names; the
    /// port is the scheme's default when the URL gives none.
    pub fn host_port(&self) -> (String, u16) {
        let origin = self.origin();
        let authority = &origin[origin.find("://").map_or(0, |i| i + 3)..];
        // Checked by `parse`: an endpoint's authority always parses.
        let Ok(authority) = http::uri::Authority::from_str(authority) else {
            return (authority.to_string(), 0);
        };
        let default = if self.url.starts_with("https://") {
            443
        } else {
            80
        };
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        (host.to_string(), authority.port_u16().unwrap_or(default))
    }

    /// `/package.Service/Method`: the gRPC path of the call.
    pub fn path(&self) -> &str {
        &self.url[self.origin_len..]
    }

    /// [`Endpoint::path`] as a request takes it.
    pub fn path_and_query(&self) -> &http::uri::PathAndQuery {
        &self.path
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

/// Checks that `path` names one gRPC method, and not the coordinator's own.
fn grpc_path(path: &str) -> Result<(), &'static str> {
    let mut segments = path[1..].split('/');
    let (service, method) = (segments.next(), segments.next());
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_'))
    };
    match (service, method, segments.next()) {
        (Some(s), Some(m), None) if valid(s) && valid(m) => {}
        _ => {
            return Err(
                "its path must be exactly /package.Service/Method (an HTTP/JSON endpoint is registered with protocol http or h2c)",
            );
        }
    }
    if service == Some(COORDINATOR_SERVICE) {
        // A step calling the coordinator could cancel its own saga, or
        // register participants with the coordinator's own rights.
        return Err("it is sagad's own Coordinator service, which no step may call");
    }
    Ok(())
}

/// A registered participant: a named pair of endpoints and its defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Participant {
    pub name: String,
    pub forward: Endpoint,
    /// `None`: nothing undoes its calls; only pivot and retriable steps may
    /// use it (`resolve`).
    #[serde(with = "opt_endpoint")]
    pub compensate: Option<Endpoint>,
    /// Defaults for the steps that use this participant.
    pub retry: RetryOverrides,
    pub timeout: Option<Duration>,
    pub registered_at: Timestamp,
    /// Who registered it, and from where (new in journal format 6; older
    /// records read as `None`: not recorded).
    pub registered_by: Option<Principal>,
    /// How many calls it takes at once and per period (new in journal
    /// format 11; older records read as none).
    pub limits: Limits,
}

impl Participant {
    /// Builds and checks a participant registered at `registered_at`: the
    /// caller reads the clock (the domain reads none).
    pub fn new(
        name: &str,
        forward: &str,
        compensate: &str,
        retry: RetryOverrides,
        timeout: Option<Duration>,
        registered_at: Timestamp,
    ) -> Result<Self, DefinitionError> {
        Self::speaking(
            name,
            Protocol::Grpc,
            forward,
            compensate,
            retry,
            timeout,
            registered_at,
        )
    }

    /// As [`Participant::new`], with endpoints that speak `protocol`.
    pub fn speaking(
        name: &str,
        protocol: Protocol,
        forward: &str,
        compensate: &str,
        retry: RetryOverrides,
        timeout: Option<Duration>,
        registered_at: Timestamp,
    ) -> Result<Self, DefinitionError> {
        validate_name("participant name", name)?;
        let forward = Endpoint::parse_as("forward_endpoint", forward, protocol)?;
        let compensate = match compensate {
            "" => None,
            url => Some(Endpoint::parse_as("compensate_endpoint", url, protocol)?),
        };
        retry.validate()?;
        check_timeout(|| format!("participant '{name}'"), timeout)?;
        Ok(Self {
            name: name.to_string(),
            forward,
            compensate,
            retry,
            timeout,
            registered_at,
            registered_by: None,
            limits: Limits::default(),
        })
    }

    /// The endpoint of one action, if it has one.
    pub fn endpoint(&self, action: super::Action) -> Option<&Endpoint> {
        match action {
            super::Action::Forward => Some(&self.forward),
            super::Action::Compensate => self.compensate.as_ref(),
        }
    }

    /// Its endpoints, each with the field that names it.
    pub fn endpoints(&self) -> impl Iterator<Item = (&'static str, &Endpoint)> {
        [
            ("forward_endpoint", Some(&self.forward)),
            ("compensate_endpoint", self.compensate.as_ref()),
        ]
        .into_iter()
        .filter_map(|(what, e)| e.map(|e| (what, e)))
    }

    /// The same participant, with `limits`.
    pub fn limited(self, limits: Limits) -> Self {
        Self { limits, ..self }
    }

    /// The same participant, recorded as registered by `principal`.
    pub fn registered_by(self, principal: Principal) -> Self {
        Self {
            registered_by: Some(principal),
            ..self
        }
    }
}

/// What a step's success means for the saga: the three kinds of transaction
/// of the classic saga. A definition runs its compensatable steps first,
/// then at most one pivot, then its retriable steps (`validate_steps`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    /// Undone by its compensation when the saga turns back (the default).
    #[default]
    Compensatable,
    /// The point of no return: once it succeeded, the saga only goes
    /// forward (a later failure or a cancel never compensates).
    Pivot,
    /// After the pivot (or after the compensatable steps): retried until it
    /// succeeds and never compensated; when its attempts run out the saga is
    /// FAILED for an operator, whose `RetrySaga` tries it again.
    Retriable,
}

impl StepKind {
    /// Lower case, as in TOML and shown: `compensatable`, `pivot`, `retriable`.
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Compensatable => "compensatable",
            StepKind::Pivot => "pivot",
            StepKind::Retriable => "retriable",
        }
    }

    /// Whether a step of this kind is never undone once it succeeded.
    pub fn goes_only_forward(self) -> bool {
        !matches!(self, StepKind::Compensatable)
    }
}

/// One step of a definition, naming its participant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepDef {
    pub name: String,
    pub participant: String,
    pub kind: StepKind,
    /// Overrides the participant's retry policy field by field.
    pub retry: RetryOverrides,
    /// Overrides the participant's timeout.
    pub timeout: Option<Duration>,
    /// The step's input, built from the payload and earlier outputs
    /// (`input.rs`); `None`: the payload and outputs as they are.
    pub input: Option<InputMap>,
}

/// A named, ordered list of steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Definition {
    pub name: String,
    pub description: String,
    pub steps: Vec<StepDef>,
    /// How long a saga of this definition may take from its start before it
    /// turns back (`deadline = "10m"`); StartSaga may give another.
    pub deadline: Option<Duration>,
}

/// Checks a list of steps on its own (names, uniqueness, policies, timeouts,
/// the order of their kinds).
pub fn validate_steps(steps: &[StepDef]) -> Result<(), DefinitionError> {
    if steps.is_empty() {
        return Err(DefinitionError::NoSteps);
    }
    let mut seen = std::collections::HashSet::new();
    // The first step that only goes forward: no compensatable step may
    // follow it (it could never be undone with the saga past that point),
    // nor a second pivot.
    let mut forward_only: Option<&StepDef> = None;
    for step in steps {
        if let Some(before) = forward_only {
            let refused = match step.kind {
                StepKind::Compensatable => Some("a compensatable step"),
                StepKind::Pivot => Some("a second pivot"),
                StepKind::Retriable => None,
            };
            if let Some(what) = refused {
                return Err(DefinitionError::KindOrder {
                    step: step.name.clone(),
                    what,
                    before: before.name.clone(),
                    before_kind: before.kind.as_str(),
                });
            }
        } else if step.kind.goes_only_forward() {
            forward_only = Some(step);
        }
        validate_name("step name", &step.name)?;
        validate_name("participant name", &step.participant)?;
        if !seen.insert(step.name.as_str()) {
            return Err(DefinitionError::DuplicateStep(step.name.clone()));
        }
        step.retry
            .validate()
            .map_err(|source| DefinitionError::StepPolicy {
                step: step.name.clone(),
                source,
            })?;
        check_timeout(|| format!("step '{}'", step.name), step.timeout)?;
        if let Some(input) = &step.input {
            let earlier: Vec<&str> = steps
                .iter()
                .take_while(|s| s.name != step.name)
                .map(|s| s.name.as_str())
                .collect();
            input::validate(&step.name, input, &earlier).map_err(|source| {
                DefinitionError::Input {
                    step: step.name.clone(),
                    source,
                }
            })?;
        }
    }
    Ok(())
}

/// True when a step timeout lies within [`TIMEOUT_MIN`] and [`TIMEOUT_MAX`].
pub fn timeout_in_bounds(timeout: Duration) -> bool {
    (TIMEOUT_MIN..=TIMEOUT_MAX).contains(&timeout)
}

fn check_timeout(
    what: impl Fn() -> String,
    timeout: Option<Duration>,
) -> Result<(), DefinitionError> {
    match timeout {
        Some(got) if !timeout_in_bounds(got) => Err(DefinitionError::Timeout { what: what(), got }),
        _ => Ok(()),
    }
}

/// A step as a saga runs it: everything needed to call it, frozen at start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepSpec {
    pub name: String,
    pub participant: String,
    pub kind: StepKind,
    pub forward: Endpoint,
    /// `None` for a pivot or retriable step whose participant has no
    /// compensate endpoint.
    #[serde(with = "opt_endpoint")]
    pub compensate: Option<Endpoint>,
    pub retry: RetryPolicy,
    /// Sent as the gRPC deadline of every call of this step.
    pub timeout: Duration,
    /// The step's input mapping (`input.rs`).
    pub input: Option<InputMap>,
}

impl StepSpec {
    /// The endpoint of one action (a step may have no compensate endpoint).
    pub fn endpoint(&self, action: super::Action) -> Option<&Endpoint> {
        match action {
            super::Action::Forward => Some(&self.forward),
            super::Action::Compensate => self.compensate.as_ref(),
        }
    }

    /// The endpoint of one action, to replace it (a refresh, `state.rs`).
    pub(super) fn endpoint_mut(&mut self, action: super::Action) -> Option<&mut Endpoint> {
        match action {
            super::Action::Forward => Some(&mut self.forward),
            super::Action::Compensate => self.compensate.as_mut(),
        }
    }
}

/// Server-wide defaults that steps and participants inherit.
#[derive(Clone, Debug, PartialEq)]
pub struct StepDefaults {
    pub retry: RetryPolicy,
    pub timeout: Duration,
}

impl Default for StepDefaults {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Freezes `steps` into the snapshot a saga runs with: step overrides, then the
/// participant's defaults, then the server's.
pub fn resolve(
    steps: &[StepDef],
    participants: &HashMap<String, Participant>,
    defaults: &StepDefaults,
) -> Result<Vec<StepSpec>, DefinitionError> {
    validate_steps(steps)?;
    steps
        .iter()
        .map(|step| {
            let p = participants.get(&step.participant).ok_or_else(|| {
                DefinitionError::UnknownParticipant {
                    step: step.name.clone(),
                    participant: step.participant.clone(),
                }
            })?;
            let retry = step
                .retry
                .or(p.retry)
                .resolve(&defaults.retry)
                .map_err(|source| DefinitionError::StepPolicy {
                    step: step.name.clone(),
                    source,
                })?;
            // A participant journaled before the timeout floor existed may
            // still carry a timeout below it: refused like its policy is.
            if step.timeout.is_none() {
                check_timeout(|| format!("participant '{}'", p.name), p.timeout)?;
            }
            if p.compensate.is_none() && step.kind == StepKind::Compensatable {
                return Err(DefinitionError::CannotUndo {
                    step: step.name.clone(),
                    participant: p.name.clone(),
                });
            }
            Ok(StepSpec {
                name: step.name.clone(),
                participant: p.name.clone(),
                kind: step.kind,
                forward: p.forward.clone(),
                compensate: p.compensate.clone(),
                retry,
                timeout: step.timeout.or(p.timeout).unwrap_or(defaults.timeout),
                input: step.input.clone(),
            })
        })
        .collect()
}

/// serde helpers for `Option<Duration>` written as `"250ms"` / `"5s"` in TOML.
pub(crate) mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| {
            humantime::parse_duration(&t).map_err(|e| {
                serde::de::Error::custom(format!(
                    "'{t}' is not a duration ({e}); write it like \"250ms\" or \"5s\""
                ))
            })
        })
        .transpose()
    }
}

/// The shape of a `sagas/*.toml` file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DefinitionFile {
    name: Option<toml::Spanned<String>>,
    #[serde(default)]
    description: String,
    /// A duration, parsed where its line is known.
    deadline: Option<toml::Spanned<String>>,
    #[serde(default)]
    steps: Vec<StepFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepFile {
    name: toml::Spanned<String>,
    participant: String,
    #[serde(default)]
    kind: StepKind,
    #[serde(default)]
    retry: RetryOverrides,
    #[serde(default, with = "opt_duration")]
    timeout: Option<Duration>,
    /// `[steps.input]`: field = "pointer".
    input: Option<InputMap>,
}

/// Parses one definition file's text; `path` is only used in errors and for the
/// default name (the file stem).
pub fn parse_definition(path: &Path, text: &str) -> Result<Definition, DefinitionError> {
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let file_error = |line, message: String| DefinitionError::File {
        path: path.to_path_buf(),
        line,
        message,
    };
    let file: DefinitionFile = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(s.start)).unwrap_or(1);
        file_error(line, e.message().to_string())
    })?;
    let (name, name_line) = match &file.name {
        Some(n) => (n.get_ref().clone(), line_of(n.span().start)),
        None => (
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            1,
        ),
    };
    validate_name("definition name", &name).map_err(|e| file_error(name_line, e.to_string()))?;
    if file.steps.is_empty() {
        return Err(file_error(
            1,
            "no steps: add at least one [[steps]] table with name and participant".into(),
        ));
    }
    let deadline = match &file.deadline {
        None => None,
        Some(text) => {
            let line = line_of(text.span().start);
            let d = humantime::parse_duration(text.get_ref()).map_err(|e| {
                file_error(
                    line,
                    format!(
                        "deadline '{}' is not a duration ({e}); write it like \"10m\" or \"1h 30m\"",
                        text.get_ref()
                    ),
                )
            })?;
            if d.is_zero() {
                return Err(file_error(
                    line,
                    "deadline is zero: no saga could ever finish; give a duration like \"10m\", or leave it out for none".into(),
                ));
            }
            Some(d)
        }
    };
    let steps: Vec<StepDef> = file
        .steps
        .iter()
        .map(|s| StepDef {
            name: s.name.get_ref().clone(),
            participant: s.participant.clone(),
            kind: s.kind,
            retry: s.retry,
            timeout: s.timeout,
            input: s.input.clone(),
        })
        .collect();
    // Check step by step so an error points at the step's own line.
    for (i, step) in file.steps.iter().enumerate() {
        validate_steps(&steps[..=i])
            .map_err(|e| file_error(line_of(step.name.span().start), e.to_string()))?;
    }
    Ok(Definition {
        name,
        description: file.description,
        steps,
        deadline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_is_stored_as_its_url_and_origin_length() {
        let e =
            Endpoint::parse("forward_endpoint", "http://[::1]:7002/shop.Payments/Charge").unwrap();
        let stored = postcard::to_allocvec(&e).unwrap();
        let as_before = postcard::to_allocvec(&StoredEndpoint {
            url: "http://[::1]:7002/shop.Payments/Charge".into(),
            origin_len: "http://[::1]:7002".len(),
        })
        .unwrap();
        assert_eq!(stored, as_before, "the encoding on disk must not change");
        let back: Endpoint = postcard::from_bytes(&stored).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.path_and_query().as_str(), "/shop.Payments/Charge");

        let damaged = postcard::to_allocvec(&StoredEndpoint {
            url: "http://[::1]:7002/shop.Payments/Charge".into(),
            origin_len: 99,
        })
        .unwrap();
        assert!(postcard::from_bytes::<Endpoint>(&damaged).is_err());
    }

    #[test]
    fn an_http_endpoint_is_stored_behind_its_tag_and_reads_back() {
        for protocol in [Protocol::Http, Protocol::H2c] {
            let url = "http://127.0.0.1:7002/payments/charge?v=2";
            let e = Endpoint::parse_as("forward_endpoint", url, protocol).unwrap();
            assert_eq!((e.url(), e.protocol()), (url, protocol));
            assert_eq!(e.origin(), "http://127.0.0.1:7002");
            assert_eq!(e.path_and_query().as_str(), "/payments/charge?v=2");
            let stored = postcard::to_allocvec(&e).unwrap();
            let tagged = postcard::to_allocvec(&StoredEndpoint {
                url: format!("{}{url}", protocol.tag()).into(),
                origin_len: "http://127.0.0.1:7002".len(),
            })
            .unwrap();
            assert_eq!(stored, tagged);
            let back: Endpoint = postcard::from_bytes(&stored).unwrap();
            assert_eq!(back, e);
        }
    }

    #[test]
    fn http_endpoints_are_refused_naming_what_to_write() {
        for (protocol, url, why) in [
            (
                Protocol::H2c,
                "https://h:1/charge",
                "h2c is HTTP/2 without TLS",
            ),
            (Protocol::Http, "http://h:1", "no path (write at least /)"),
            (Protocol::Http, "grpc://h:1/a", "must start with http://"),
            (Protocol::Http, "http:///charge", "no host"),
            (Protocol::Http, "http://h:1/a#b", "#fragment"),
            (
                Protocol::Http,
                "http://h:1/sagad.v1.Coordinator/CancelSaga",
                "own Coordinator",
            ),
            (
                Protocol::Grpc,
                "http://h:1/api/payments/charge",
                "registered with protocol http",
            ),
            (
                Protocol::H2c,
                "http://h:1/sagad.v1.ParticipantService/Forward",
                "register it with protocol grpc",
            ),
        ] {
            let err = Endpoint::parse_as("compensate_endpoint", url, protocol)
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{protocol} {url}: {err}");
            assert!(err.starts_with("compensate_endpoint"), "{err}");
        }
        let err = Endpoint::parse_as("f", "http://h:1", Protocol::Http)
            .unwrap_err()
            .to_string();
        assert!(err.contains("HTTP/JSON URL such as"), "{err}");
        assert!(Endpoint::parse_as("f", "http://h:1/", Protocol::H2c).is_ok());
    }

    #[test]
    fn endpoint_splits_origin_and_path() {
        let e = Endpoint::parse(
            "forward_endpoint",
            "http://127.0.0.1:7002/shop.Payments/Charge",
        )
        .unwrap();
        assert_eq!(e.origin(), "http://127.0.0.1:7002");
        assert_eq!(e.path(), "/shop.Payments/Charge");
        assert_eq!(
            Endpoint::parse("x", "http://[::1]:7/a.B/C")
                .unwrap()
                .origin(),
            "http://[::1]:7"
        );
        let tls = Endpoint::parse("x", "https://pay.example:8443/a.B/C").unwrap();
        assert_eq!(tls.origin(), "https://pay.example:8443");
        assert_eq!(tls.path(), "/a.B/C");
    }

    #[test]
    fn malformed_endpoints_are_refused_with_the_reason() {
        for (url, why) in [
            (
                "127.0.0.1:7002/shop.Payments/Charge",
                "must start with http:// or https://",
            ),
            ("ftp://h:1/a.B/C", "must start with http:// or https://"),
            ("https://h:1", "no /Service/Method"),
            ("http://h:1", "no /Service/Method"),
            ("http://h:1/a.B", "exactly /package.Service/Method"),
            ("http://h:1/a.B/C/D", "exactly /package.Service/Method"),
            ("http:///a.B/C", "no host"),
            ("http://h:port/a.B/C", "malformed"),
        ] {
            let err = Endpoint::parse("forward_endpoint", url)
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{url}: {err}");
        }
    }

    fn participant(name: &str) -> Participant {
        Participant::new(
            name,
            "http://127.0.0.1:1/p.S/Do",
            "http://127.0.0.1:1/p.S/Undo",
            RetryOverrides {
                max_attempts: Some(3),
                ..Default::default()
            },
            Some(Duration::from_secs(2)),
            Timestamp(1_000),
        )
        .unwrap()
    }

    fn step(name: &str, participant: &str) -> StepDef {
        StepDef {
            name: name.into(),
            participant: participant.into(),
            kind: crate::saga::StepKind::Compensatable,
            retry: RetryOverrides::default(),
            timeout: None,
            input: None,
        }
    }

    #[test]
    fn resolve_layers_step_participant_and_server_defaults() {
        let participants = HashMap::from([("pay".to_string(), participant("pay"))]);
        let mut s = step("charge", "pay");
        s.timeout = Some(Duration::from_millis(500));
        s.retry.max_compensate_attempts = Some(4);
        let specs = resolve(&[s], &participants, &StepDefaults::default()).unwrap();
        assert_eq!(specs[0].timeout, Duration::from_millis(500));
        assert_eq!(specs[0].retry.max_attempts, 3, "from the participant");
        assert_eq!(specs[0].retry.max_compensate_attempts, 4, "from the step");
        assert_eq!(specs[0].retry.multiplier, 2.0, "from the server");
        assert_eq!(specs[0].forward.url(), "http://127.0.0.1:1/p.S/Do");
    }

    #[test]
    fn a_participant_without_a_compensate_endpoint_serves_only_steps_never_undone() {
        let carrier = Participant::new(
            "carrier",
            "http://127.0.0.1:1/p.S/Ship",
            "",
            RetryOverrides::default(),
            None,
            Timestamp(1),
        )
        .unwrap();
        assert_eq!(carrier.compensate, None);
        let stored = postcard::to_allocvec(&carrier).unwrap();
        let back: Participant = postcard::from_bytes(&stored).unwrap();
        assert_eq!(back, carrier, "no endpoint reads back as none");

        let participants = HashMap::from([
            ("pay".to_string(), participant("pay")),
            ("carrier".to_string(), carrier),
        ]);
        let d = StepDefaults::default();
        let err = resolve(&[step("ship", "carrier")], &participants, &d)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "step 'ship' is compensatable, but participant 'carrier' has no compensate endpoint"
            ),
            "{err}"
        );
        let mut ship = step("ship", "carrier");
        ship.kind = StepKind::Pivot;
        let mut mail = step("mail", "carrier");
        mail.kind = StepKind::Retriable;
        let specs = resolve(&[step("charge", "pay"), ship, mail], &participants, &d).unwrap();
        assert_eq!(specs[1].compensate, None);
        assert_eq!(specs[1].endpoint(crate::saga::Action::Compensate), None);
        let snapshot: Vec<StepSpec> =
            postcard::from_bytes(&postcard::to_allocvec(&specs).unwrap()).unwrap();
        assert_eq!(snapshot, specs);
    }

    #[test]
    fn resolve_refuses_unknown_participants_and_duplicate_steps() {
        let participants = HashMap::from([("pay".to_string(), participant("pay"))]);
        let d = StepDefaults::default();
        let err = resolve(&[step("a", "nobody")], &participants, &d).unwrap_err();
        assert!(
            matches!(err, DefinitionError::UnknownParticipant { .. }),
            "{err}"
        );
        let err = resolve(&[step("a", "pay"), step("a", "pay")], &participants, &d).unwrap_err();
        assert!(matches!(err, DefinitionError::DuplicateStep(_)), "{err}");
        assert!(matches!(
            resolve(&[], &participants, &d),
            Err(DefinitionError::NoSteps)
        ));
        let err = resolve(&[step("", "pay")], &participants, &d).unwrap_err();
        assert!(matches!(err, DefinitionError::EmptyName { .. }), "{err}");
    }

    #[test]
    fn a_participant_registered_below_the_floors_is_refused_at_start() {
        // As a build before the floors journaled it (`new` refuses these now).
        let mut old = participant("pay");
        old.timeout = Some(Duration::from_nanos(1));
        old.retry.initial_interval = Some(Duration::ZERO);
        old.retry.max_interval = Some(Duration::ZERO);
        let participants = HashMap::from([("pay".to_string(), old)]);
        let d = StepDefaults::default();
        let err = resolve(&[step("a", "pay")], &participants, &d)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("retry.initial_interval must be at least 10ms"),
            "{err}"
        );
        // A step's own settings replace the participant's: then it runs.
        let mut own = step("a", "pay");
        own.retry.initial_interval = Some(Duration::from_millis(10));
        own.retry.max_interval = Some(Duration::from_secs(1));
        let err = resolve(std::slice::from_ref(&own), &participants, &d)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("participant 'pay' timeout must be at least 10ms"),
            "{err}"
        );
        own.timeout = Some(Duration::from_secs(1));
        assert!(resolve(&[own], &participants, &d).is_ok());
    }

    #[test]
    fn shipped_order_fulfillment_parses() {
        let text = include_str!("../../sagas/order-fulfillment.toml");
        let d = parse_definition(Path::new("sagas/order-fulfillment.toml"), text).unwrap();
        assert_eq!(d.name, "order-fulfillment");
        let names: Vec<_> = d
            .steps
            .iter()
            .map(|s| (s.name.as_str(), s.participant.as_str()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("validate-order", "orders"),
                ("charge-payment", "payments"),
                ("ship-order", "shipping")
            ]
        );
    }

    /// Kinds are read from TOML; an order that could not be undone is refused
    /// at the offending step's line, saying why.
    #[test]
    fn step_kinds_parse_and_a_step_that_could_not_be_undone_is_refused_at_its_line() {
        let path = Path::new("sagas/ship.toml");
        let steps = |kinds: &[&str]| -> String {
            kinds
                .iter()
                .enumerate()
                .map(|(i, kind)| {
                    let kind = match *kind {
                        "" => String::new(),
                        k => format!("kind = \"{k}\"\n"),
                    };
                    format!("[[steps]]\nname = \"s{i}\"\nparticipant = \"p\"\n{kind}")
                })
                .collect()
        };
        let d = parse_definition(path, &steps(&["", "pivot", "retriable", "retriable"])).unwrap();
        let kinds: Vec<StepKind> = d.steps.iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds,
            [
                StepKind::Compensatable,
                StepKind::Pivot,
                StepKind::Retriable,
                StepKind::Retriable
            ]
        );
        assert!(parse_definition(path, &steps(&["compensatable", "retriable"])).is_ok());
        assert!(parse_definition(path, &steps(&["pivot"])).is_ok());

        // Step s2's name is on line 9 (four lines for each step with a kind, three without).
        for (kinds, line, says) in [
            (
                &["", "pivot", "compensatable"][..],
                9,
                "step 's2' is a compensatable step after the pivot step 's1'",
            ),
            (
                &["", "retriable", ""][..],
                9,
                "step 's2' is a compensatable step after the retriable step 's1'",
            ),
            (
                &["", "pivot", "pivot"][..],
                9,
                "step 's2' is a second pivot after the pivot step 's1'",
            ),
            (
                &["", "retriable", "pivot"][..],
                9,
                "step 's2' is a second pivot after the retriable step 's1'",
            ),
        ] {
            let err = parse_definition(path, &steps(kinds))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("sagas/ship.toml:{line}:")),
                "{err}"
            );
            assert!(err.contains(says), "{err}");
        }
        let err = parse_definition(path, &steps(&["sometimes"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("sagas/ship.toml:4:") && err.contains("compensatable"),
            "{err}"
        );
    }

    #[test]
    fn input_mappings_parse_and_a_pointer_to_a_later_step_is_refused_at_its_line() {
        let path = Path::new("sagas/pay.toml");
        let text = |pointer: &str| {
            format!(
                "name = \"pay\"\ndeadline = \"10m\"\n\n[[steps]]\nname = \"price-order\"\nparticipant = \"p\"\n\n[[steps]]\nname = \"charge\"\nparticipant = \"p\"\n[steps.input]\namount = \"{pointer}\"\norder = \"/payload/order_id\"\n\n[[steps]]\nname = \"ship\"\nparticipant = \"p\"\n"
            )
        };
        let d = parse_definition(path, &text("/steps/price-order/output/total")).unwrap();
        assert_eq!(d.deadline, Some(Duration::from_secs(600)));
        let input = d.steps[1].input.as_ref().unwrap();
        assert_eq!(input["amount"], "/steps/price-order/output/total");
        assert_eq!(input["order"], "/payload/order_id");
        assert_eq!(
            (d.steps[0].input.as_ref(), d.steps[2].input.as_ref()),
            (None, None)
        );

        // Step "charge" is named on line 9.
        for (pointer, says) in [
            (
                "/steps/ship/output/id",
                "step 'ship' does not run before step 'charge'",
            ),
            ("/steps/charge/output", "a step cannot read its own output"),
            (
                "total",
                "a pointer starts at /payload or at /steps/STEP/output",
            ),
        ] {
            let err = parse_definition(path, &text(pointer))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("sagas/pay.toml:9:"), "{err}");
            assert!(
                err.contains(says) && err.contains("input field 'amount'"),
                "{err}"
            );
        }
        for (deadline, says) in [("0s", "deadline is zero"), ("soon", "is not a duration")] {
            let text = text("/payload").replace("\"10m\"", &format!("\"{deadline}\""));
            let err = parse_definition(path, &text).unwrap_err().to_string();
            assert!(
                err.starts_with("sagas/pay.toml:2:") && err.contains(says),
                "{err}"
            );
        }
    }

    #[test]
    fn file_errors_name_path_and_line() {
        let path = Path::new("sagas/bad.toml");
        let text =
            "name = \"x\"\n\n[[steps]]\nname = \"a\"\nparticipant = \"p\"\ncolour = \"red\"\n";
        let err = parse_definition(path, text).unwrap_err().to_string();
        assert!(err.starts_with("sagas/bad.toml:6:"), "{err}");
        assert!(err.contains("colour"), "{err}");

        let text = "[[steps]]\nname = \"a\"\nparticipant = \"p\"\n[[steps]]\nname = \"a\"\nparticipant = \"q\"\n";
        let err = parse_definition(path, text).unwrap_err().to_string();
        assert!(err.starts_with("sagas/bad.toml:5:"), "{err}");
        assert!(err.contains("used twice"), "{err}");

        let text = "[[steps]]\nname = \"a\"\nparticipant = \"p\"\ntimeout = \"soon\"\n";
        let err = parse_definition(path, text).unwrap_err().to_string();
        assert!(
            err.contains("sagas/bad.toml:4:") && err.contains("not a duration"),
            "{err}"
        );

        // Below the floors a step would retry in a hot loop.
        for (fields, floor) in [
            (
                "retry = { initial_interval = \"0s\", max_interval = \"0s\" }",
                "retry.initial_interval must be at least 10ms (got 0ns)",
            ),
            (
                "retry = { max_attempts = 4294967295 }",
                "retry.max_attempts must be at most 10000 (got 4294967295)",
            ),
            (
                "timeout = \"1ns\"",
                "step 'a' timeout must be at least 10ms",
            ),
        ] {
            let text =
                format!("name = \"x\"\n\n[[steps]]\nname = \"a\"\nparticipant = \"p\"\n{fields}\n");
            let err = parse_definition(path, &text).unwrap_err().to_string();
            assert!(
                err.starts_with("sagas/bad.toml:4:") && err.contains(floor),
                "{fields}: {err}"
            );
        }

        let d = parse_definition(
            Path::new("dir/shop.toml"),
            "[[steps]]\nname = \"a\"\nparticipant = \"p\"\n",
        )
        .unwrap();
        assert_eq!(d.name, "shop", "the name defaults to the file stem");
    }
}
