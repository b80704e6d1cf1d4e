//! The integration suite: one test crate, a module per area.
//!
//! One crate, not a crate per file, because each test crate links the whole
//! dependency tree again (tonic, hyper, sled, the sagad library): seventeen links
//! on a two-core CI cost more than the tests themselves. Cargo finds this file as
//! the test target `it`; run one area with `cargo test --test it api::`.
//!
//! All modules share one process. Nothing here may set process-wide state (a
//! global tracing subscriber or metrics recorder, environment variables, crash
//! points, signal handlers): whatever needs that runs in a `sagad` child
//! process, which gets its own environment (`common::process`, `cli::Proc`).

mod common;

mod api;
mod archive;
mod auth;
mod bench;
mod cli;
mod cluster;
mod cluster_duties;
mod cluster_failover;
mod cluster_metrics;
mod cluster_relay;
mod config;
mod crash;
mod crash_points;
mod damaged_journal;
mod data_flow;
mod disk_faults;
mod disk_full;
mod feed;
mod files;
mod history;
mod history_tier;
mod http_participants;
mod lost_commit;
mod metrics;
mod outage;
mod parking;
mod participant_allow;
mod participant_limits;
mod payments_example;
mod postgres;
mod postgres_offline;
mod postgres_tls;
mod process;
mod python_participant;
mod read_only;
mod saga_times;
mod sagas;
mod sdk;
mod shutdown;
mod step_kinds;
mod store_damage;
mod tls;
mod tracing;
mod webhook;
