//! Modules of the `sagad` binary (not the library): one per group of verbs,
//! plus what they share.
//!
//! - `serve`: the coordinator itself, configured through `sagad::config`;
//!   `definitions` reads the saga definitions it starts with from `--sagas`;
//!   `serve_tls` holds its TLS flags.
//! - `saga`, `catalog`, `tail`, `cluster`: the client verbs, over gRPC to a
//!   running server.
//! - `connect`, `client_tls`, `error`: reaching the server (over TLS for
//!   `https://`); failures and their exit codes.
//! - `output`, `render`, `json`: how results are printed (human or JSON).
//! - `demo`: a coordinator and three participants in one process.
//! - `auth`: `auth token`, making a bearer token and its tokens-file line.
//! - `journal`, `salvage`, `export`: offline tools on a data directory
//!   (`journal check`, `journal salvage`, `export`); `snapshot`: the
//!   PostgreSQL journal they read instead with `--journal`.
//! - `logging`: where `serve`'s logs and spans go (text or JSON, OTLP).
//! - `signal`: SIGINT/SIGTERM: the first stops `serve` (and `demo --serve`)
//!   gracefully, a second exits at once; SIGHUP re-reads the tokens file and
//!   the TLS certificates.

// The output macros come before the `mod` lines: macro_rules are in scope in
// the modules declared after them, so every verb can use them unimported.

/// `println!` for results: a closed stdout (`sagad list | head`) ends the
/// process quietly instead of panicking.
macro_rules! outln {
    () => {
        $crate::cli::output::emit("\n")
    };
    ($($arg:tt)*) => {
        $crate::cli::output::emit(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for results, with `outln!`'s handling of a closed stdout.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::emit(&format!($($arg)*))
    };
}

pub mod auth;
pub mod catalog;
pub mod client_tls;
pub mod cluster;
pub mod connect;
pub mod definitions;
pub mod demo;
pub mod error;
pub mod export;
pub mod journal;
pub mod json;
pub mod logging;
pub mod output;
pub mod render;
pub mod saga;
pub mod salvage;
pub mod scrub;
pub mod serve;
pub mod serve_tls;
pub mod signal;
pub mod snapshot;
pub mod tail;
