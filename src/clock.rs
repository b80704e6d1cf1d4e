//! The edge's clock: the two reads of the wall clock that make domain values,
//! [`Timestamp::now`] and [`SagaId::generate`] (a UUIDv7 is the time and random
//! bits).
//!
//! They are defined here, not beside their types in `saga/id.rs`, because
//! `crate::saga` promises to read no clock of its own: its functions take the
//! time as an argument, so the fold and the decisions replay the same anywhere.
//! The engine, the API, the tools and the tests call these two; the domain
//! never does.
//!
//! Invariants:
//! - Nothing under `src/saga/` reads a clock, makes random values or touches
//!   files; the test at the bottom of this file checks the source for the
//!   calls that would.

use std::time::SystemTime;

use uuid::Uuid;

use crate::saga::{SagaId, Timestamp};

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }
}

impl SagaId {
    /// A fresh, time-ordered id.
    pub fn generate() -> Self {
        Self::from_bytes(Uuid::now_v7().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn saga_ids_sort_by_creation() {
        let a = SagaId::generate();
        let b = SagaId::generate();
        assert!(a < b, "v7 ids created later must sort later");
        assert!(a.as_bytes() < b.as_bytes());
    }

    /// The calls that would break `saga`'s promise: a clock read, randomness,
    /// files, the environment, the runtime or the storage. Comment lines may
    /// name them (to say they are not used).
    const NOT_IN_THE_DOMAIN: &[&str] = &[
        "Timestamp::now",
        "SagaId::generate",
        "SpanId::random",
        "SystemTime::now",
        "Instant::now",
        "now_v7",
        "fastrand",
        "std::fs",
        "std::env",
        "std::net",
        "std::process",
        "tokio",
        "sled",
        "tonic::",
    ];

    #[test]
    fn the_domain_reads_no_clock_and_no_files() {
        let mut files = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src/saga")];
        let mut checked = 0;
        while let Some(path) = files.pop() {
            if path.is_dir() {
                for entry in std::fs::read_dir(&path).unwrap() {
                    files.push(entry.unwrap().path());
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            checked += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            for (i, line) in text.lines().enumerate() {
                if line.trim_start().starts_with("//") {
                    continue;
                }
                for call in NOT_IN_THE_DOMAIN {
                    assert!(
                        !line.contains(call),
                        "{}:{}: `{call}` in the domain; take it as an argument instead",
                        path.display(),
                        i + 1
                    );
                }
            }
        }
        assert!(checked >= 7, "found only {checked} files under src/saga");
    }
}
