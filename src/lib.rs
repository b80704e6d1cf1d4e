//! sagad: a durable saga coordinator.
//!
//! Clients start sagas over gRPC; sagad calls each step's participant, journals
//! every transition durably before acting on it, retries transient failures,
//! compensates the steps already done when one fails for good, and on restart
//! finishes everything it had begun.
//!
//! What sagad is not:
//! - not a workflow engine with steps defined in code: a saga is data (a
//!   definition of steps and participants), and participants are services;
//! - not a message broker: it calls participants and waits for their answers;
//! - not a cluster, yet: one process owns one data directory (a second is
//!   refused), or joins a shared PostgreSQL journal as a fenced node
//!   (`journal/postgres/`); takeover of a dead node's sagas is still to come;
//! - not a store for business data: payloads and outputs are carried, not queried.
//!
//! Dependencies point one way: `api → engine → {journal, participant} → saga`.
//!
//! | module | what it is for |
//! |---|---|
//! | [`saga`] | the pure domain: ids, definitions, events, the fold, decisions, retry policies, the endpoint refresh, trace context; no I/O, no clock |
//! | [`clock`] | the wall-clock reads the domain leaves to the edge (`Timestamp::now`, `SagaId::generate`) |
//! | [`journal`] | the durable, group-committed event log: the contract, the saga schema, the stores (its `mod.rs` draws the map) |
//! | [`participant`] | calling participant endpoints and classifying their answers |
//! | [`sdk`] | the Rust participant SDK: handlers behind a barrier (sled, PostgreSQL), served over gRPC and HTTP/JSON |
//! | [`engine`] | runs sagas: runners, timers and parking, retries, recovery, watch and the feed, shutdown |
//! | [`api`] | the gRPC `Coordinator` service: validation, proto ↔ domain, errors → statuses |
//! | [`auth`] | who may call: bearer tokens and certificate identities, roles, the layer that decides |
//! | [`server`] | assembles a server: journal, engine, listeners, services, background tasks |
//! | [`config`] | one configuration: defaults, then file, then environment, then flags |
//! | [`error`] | the crate's error, classified for callers |
//! | [`metrics`] | the Prometheus metrics and their HTTP endpoint |
//! | [`tls`] | TLS on every listener and towards participants: certificates from PEM files, reloaded while serving |
//! | [`private`] | the data directory and its files readable by sagad's user alone, whatever the umask |
//! | [`webhook`] | the at-least-once POST for every saga that becomes FAILED |
//! | [`archive`] | retention: old final sagas move to archive files; export |
//! | [`trace`] | W3C trace context at the edge: gRPC headers, call span ids, exported spans |
//! | [`json`] | the JSON conventions shared by `--output json`, archives and notices |
//! | [`proto`] | the generated protobuf types and services |
//! | [`reload`] | re-reading files while serving (SIGHUP and a timer): the tokens file, certificates |
//! | [`runtime`] | the tokio runtime the binaries run on |
//! | [`failpoint`] | crash points for the crash tests (debug builds only) |
//! | [`allocator`] | jemalloc, tuned, for the binaries (`use_jemalloc!`) |
//!
//! The design the code holds to is in `docs/design.md`, the participant
//! contract in `docs/participant.md`, the benchmark workloads in
//! `docs/workload.md`.

pub mod allocator;
pub mod api;
pub mod archive;
pub mod auth;
pub mod clock;
pub mod config;
pub mod engine;
pub mod error;
pub mod failpoint;
pub mod journal;
pub mod json;
pub mod metrics;
pub mod participant;
pub mod private;
pub mod proto;
pub mod reload;
pub mod runtime;
pub mod saga;
pub mod sdk;
pub mod server;
#[cfg(test)]
pub mod testing;
pub mod tls;
pub mod trace;
pub mod webhook;

pub use error::{Error, Result};
