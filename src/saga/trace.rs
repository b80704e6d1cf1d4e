//! W3C Trace Context as a value: the trace a saga belongs to, journaled in
//! `SagaStarted`, and the `traceparent` text each participant call carries, so a
//! participant's traces join the saga's.
//!
//! ```text
//!   StartSaga  traceparent: 00-<trace id>-<caller's span>-<flags>
//!                                  │
//!              journaled in SagaStarted (durable: a resumed saga keeps it)
//!                                  │
//!   each call  traceparent: 00-<trace id>-<new span id>-<flags>
//! ```
//!
//! This module parses and formats the header text and derives a saga's own
//! trace; it reads no clock and makes no random ids. Carrying the headers in
//! gRPC metadata, the fresh span id of each call and the bridge to exported
//! spans are the edge's (`crate::trace`).
//!
//! Invariants:
//! - A [`TraceContext`] is always valid per the W3C format: a trace id and a
//!   parent id that are not all zeros. Invalid headers are never stored: W3C says
//!   to ignore them, so [`TraceContext::parse`] reports why and the caller logs it
//!   and goes on as if there were none.
//! - Every saga has a trace. Without an incoming `traceparent`, its trace id is
//!   the saga id's 16 bytes ([`TraceContext::for_saga`]): derived, so it needs no
//!   storage and is the same after any restart, distinct per saga, and easy to
//!   find (the saga id without dashes).
//! - The serialized form is journaled (postcard, in `SagaStarted`): the fields,
//!   their order and their types never change.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::id::SagaId;

/// Longest `tracestate` kept; W3C lets a vendor drop longer ones (it recommends
/// propagating at least 512 characters).
pub const TRACESTATE_MAX_LEN: usize = 512;
/// The `sampled` trace flag.
pub const FLAG_SAMPLED: u8 = 0x01;

/// A 16-byte trace id, never all zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id, never all zeros. A fresh one is random, so it is made at
/// the edge: `SpanId::random` is defined in `crate::trace`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SpanId(pub [u8; 8]);

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

/// Lower-case hex, by table: every participant call formats a `traceparent`,
/// and a `write!` per byte showed in the coordinator's profile.
fn write_hex(out: &mut impl fmt::Write, bytes: &[u8]) -> fmt::Result {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 32];
    for chunk in bytes.chunks(16) {
        for (i, b) in chunk.iter().enumerate() {
            buf[2 * i] = DIGITS[usize::from(b >> 4)];
            buf[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
        }
        let text = std::str::from_utf8(&buf[..2 * chunk.len()]).map_err(|_| fmt::Error)?;
        out.write_str(text)?;
    }
    Ok(())
}

/// The trace a saga belongs to: journaled with the saga when it came with the
/// StartSaga request, derived from the saga id otherwise.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    pub trace_id: TraceId,
    /// The caller's span the saga runs under. For a trace the saga started
    /// itself, a span id derived from the saga id that no span carries: the
    /// saga's spans are the first ones of that trace.
    pub parent_id: SpanId,
    /// The trace flags (bit 0: sampled), passed on to every call.
    pub flags: u8,
    /// The caller's `tracestate`, passed on to every call unchanged.
    pub tracestate: Option<String>,
}

/// Why a `traceparent` header was ignored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid traceparent {header:?}: {why}")]
pub struct InvalidTraceParent {
    pub header: String,
    pub why: &'static str,
}

impl TraceContext {
    /// Parses a `traceparent` header (and the `tracestate` that came with it).
    ///
    /// Version `00` is exactly `00-<32 hex>-<16 hex>-<2 hex>`, lower-case hex.
    /// A later version is read by its first four fields, as W3C asks (it may
    /// append fields after a `-`); version `ff` is invalid. A `tracestate`
    /// longer than [`TRACESTATE_MAX_LEN`] or empty is dropped.
    pub fn parse(
        traceparent: &str,
        tracestate: Option<&str>,
    ) -> Result<TraceContext, InvalidTraceParent> {
        let invalid = |why| InvalidTraceParent {
            header: traceparent.chars().take(128).collect(),
            why,
        };
        let header = traceparent.trim();
        let bytes = header.as_bytes();
        if bytes.len() < 55 {
            return Err(invalid("shorter than 55 characters"));
        }
        let version =
            hex::<1>(&bytes[0..2]).ok_or_else(|| invalid("version is not 2 hex digits"))?;
        match version[0] {
            0xff => return Err(invalid("version ff is invalid")),
            0x00 if bytes.len() != 55 => {
                return Err(invalid("version 00 must be exactly 55 characters"));
            }
            _ if bytes.len() > 55 && bytes[55] != b'-' => {
                return Err(invalid("fields after the flags must follow a '-'"));
            }
            _ => {}
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return Err(invalid("fields must be separated by '-'"));
        }
        let trace_id = hex::<16>(&bytes[3..35])
            .ok_or_else(|| invalid("trace id is not 32 lower-case hex digits"))?;
        let parent_id = hex::<8>(&bytes[36..52])
            .ok_or_else(|| invalid("parent id is not 16 lower-case hex digits"))?;
        let flags = hex::<1>(&bytes[53..55])
            .ok_or_else(|| invalid("flags are not 2 lower-case hex digits"))?;
        if trace_id == [0; 16] {
            return Err(invalid("trace id is all zeros"));
        }
        if parent_id == [0; 8] {
            return Err(invalid("parent id is all zeros"));
        }
        let tracestate = tracestate
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= TRACESTATE_MAX_LEN)
            .map(str::to_string);
        Ok(TraceContext {
            trace_id: TraceId(trace_id),
            parent_id: SpanId(parent_id),
            flags: flags[0],
            tracestate,
        })
    }

    /// The trace of a saga started without a `traceparent`: the saga id is the
    /// trace id, the saga's root is a span id derived from it, and it is sampled.
    pub fn for_saga(id: SagaId) -> TraceContext {
        let bytes = *id.as_bytes();
        // The last 8 bytes of a UUIDv7 are random; never zero in practice, and
        // mapped to 1 if they ever were, as zero is invalid.
        let mut root = [0; 8];
        root.copy_from_slice(&bytes[8..]);
        if root == [0; 8] {
            root[7] = 1;
        }
        TraceContext {
            trace_id: TraceId(bytes),
            parent_id: SpanId(root),
            flags: FLAG_SAMPLED,
            tracestate: None,
        }
    }

    /// The `traceparent` of one call: this trace, with `span` as the parent the
    /// participant sees.
    pub fn traceparent(&self, span: SpanId) -> String {
        let mut out = String::with_capacity(55);
        // Writing into a String cannot fail.
        out.push_str("00-");
        let _ = write_hex(&mut out, &self.trace_id.0);
        out.push('-');
        let _ = write_hex(&mut out, &span.0);
        out.push('-');
        let _ = write_hex(&mut out, &[self.flags]);
        out
    }

    /// Whether the caller asked for this trace to be recorded.
    pub fn sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }
}

/// `N` bytes from `2 * N` lower-case hex digits.
fn hex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0; N];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_w3c_example() {
        let trace = TraceContext::parse(VALID, Some("congo=t61rcWkgMzE")).unwrap();
        assert_eq!(
            trace.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(trace.parent_id.to_string(), "00f067aa0ba902b7");
        assert_eq!(trace.flags, 1);
        assert!(trace.sampled());
        assert_eq!(trace.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
        let span = SpanId([0, 0, 0, 0, 0, 0, 0, 0x2a]);
        assert_eq!(
            trace.traceparent(span),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-000000000000002a-01"
        );
    }

    #[test]
    fn invalid_headers_say_why() {
        let cases = [
            ("", "shorter"),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
                "shorter",
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "ff",
            ),
            (
                "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "version",
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                "trace id",
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "all zeros",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                "all zeros",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
                "parent id",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
                "flags",
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "'-'",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
                "exactly 55",
            ),
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
                "follow a '-'",
            ),
        ];
        for (header, why) in cases {
            let err = TraceContext::parse(header, None).unwrap_err();
            assert!(err.why.contains(why), "{header:?}: {err}");
        }
    }

    #[test]
    fn later_versions_are_read_by_their_first_fields() {
        let trace = TraceContext::parse(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-future",
            None,
        )
        .unwrap();
        assert!(!trace.sampled());
        // Passed on as the version this build speaks.
        assert!(trace.traceparent(SpanId([1; 8])).starts_with("00-4bf92f35"));
    }

    #[test]
    fn oversized_or_empty_tracestate_is_dropped() {
        let long = "a=".to_string() + &"b".repeat(TRACESTATE_MAX_LEN);
        assert_eq!(
            TraceContext::parse(VALID, Some(&long)).unwrap().tracestate,
            None
        );
        assert_eq!(
            TraceContext::parse(VALID, Some(" ")).unwrap().tracestate,
            None
        );
    }

    #[test]
    fn the_journaled_form_is_the_fields_in_order() {
        // Journaled in every SagaStarted: these bytes must never change.
        let trace = TraceContext::parse(VALID, Some("k=v")).unwrap();
        let mut expected = vec![
            0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
            0x47, 0x36, // trace id: 16 bytes, no length
            0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7, // parent id: 8 bytes
            0x01, // flags
            0x01, 0x03, // tracestate: Some, 3 bytes
        ];
        expected.extend_from_slice(b"k=v");
        assert_eq!(postcard::to_allocvec(&trace).unwrap(), expected);
        let none = TraceContext {
            tracestate: None,
            ..trace.clone()
        };
        assert_eq!(postcard::to_allocvec(&none).unwrap().last(), Some(&0x00));
    }

    #[test]
    fn a_saga_without_a_caller_trace_uses_its_id() {
        let id: SagaId = "0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b".parse().unwrap();
        let trace = TraceContext::for_saga(id);
        assert_eq!(
            trace.trace_id.to_string(),
            "0192f3c45d6e7f809a1b2c3d4e5f6a7b"
        );
        assert_eq!(trace.parent_id.to_string(), "9a1b2c3d4e5f6a7b");
        assert!(trace.sampled());
        // What it sends parses back to the same trace.
        let header = trace.traceparent(SpanId([7; 8]));
        let back = TraceContext::parse(&header, None).unwrap();
        assert_eq!(back.trace_id, trace.trace_id);
    }
}
