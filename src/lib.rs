//! sagad: a durable saga coordinator.
//!
//! Dependencies point one way: `api → engine → {journal, participant} → saga`.
//! - [`saga`]: the pure domain (events, fold, decisions).
//! - [`clock`]: the wall-clock reads the domain leaves to the edge
//!   (`Timestamp::now`, `SagaId::generate`).
//! - [`journal`]: the durable, group-committed event log.
//! - [`participant`]: calling participant endpoints and classifying their answers.
//! - [`engine`]: runs sagas, retries, recovery, shutdown.
//! - [`api`]: the gRPC `Coordinator` service.
//! - [`metrics`]: the Prometheus metrics and their HTTP endpoint.
//! - [`webhook`]: the at-least-once POST for every saga that becomes FAILED.
//! - [`trace`]: W3C trace context at the edge: its gRPC headers, call span ids,
//!   exported spans (the value a saga journals is `saga::TraceContext`).
//! - [`archive`]: retention: old final sagas move to archive files; export.
//! - [`json`]: the JSON conventions shared by `--output json`, archives and notices.
//! - [`allocator`]: jemalloc, tuned, for the binaries (`use_jemalloc!`).

pub mod allocator;
pub mod api;
pub mod archive;
pub mod clock;
pub mod config;
pub mod engine;
pub mod error;
pub mod failpoint;
pub mod journal;
pub mod json;
pub mod metrics;
pub mod participant;
pub mod proto;
pub mod runtime;
pub mod saga;
pub mod server;
pub mod trace;
pub mod webhook;

pub use error::{Error, Result};
