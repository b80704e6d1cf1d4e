//! sagad: a durable saga coordinator.
//!
//! Dependencies point one way: `api → engine → {journal, participant} → saga`.
//! - [`saga`]: the pure domain (events, fold, decisions).
//! - [`journal`]: the durable, group-committed event log.
//! - [`participant`]: calling participant endpoints and classifying their answers.
//! - [`engine`]: runs sagas, retries, recovery, shutdown.
//! - [`api`]: the gRPC `Coordinator` service.
//! - [`archive`]: retention: old final sagas move to archive files; export.

pub mod api;
pub mod archive;
pub mod config;
pub mod engine;
pub mod error;
pub mod failpoint;
pub mod journal;
pub mod participant;
pub mod proto;
pub mod saga;
pub mod server;

pub use error::{Error, Result};
