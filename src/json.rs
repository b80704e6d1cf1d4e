//! The JSON conventions of every document sagad writes for people and scripts,
//! in one place: `--output json` of the client verbs (`get`, `list`, `watch`,
//! `tail`, …), the archive lines and `sagad export` (`archive::record`), and the
//! on-failed webhook's notice (`webhook::notice`).
//!
//! - **Times** are RFC 3339 strings in UTC with milliseconds,
//!   `2024-05-01T09:12:03.512Z` ([`rfc3339`], [`timestamp`]), read back by
//!   [`parse_rfc3339`]. An unset time is `null`.
//! - **Durations** of a policy or a timeout are strings in the form saga
//!   definitions use, `"250ms"`, `"1m 30s"` ([`duration`]), so a value can be
//!   pasted back into a definition file. (A measured duration is a number with
//!   its unit in the name, `duration_ms`.)
//! - **Bytes** (payloads, step outputs) are embedded as the JSON they hold, and
//!   are `null` when empty. Bytes that are not JSON are written one of two ways,
//!   each for its reader:
//!   - a *view* ([`bytes_or_text`], `--output json`) writes UTF-8 text as a
//!     string, something to print, grep or `jq`; other bytes as an object
//!     `{"$base64": "…"}` ([`BASE64_MARKER`]), so nothing is replaced;
//!   - a *record* ([`bytes_or_base64`], archives and export) writes `null` and,
//!     beside the field, `<field>_base64` (standard alphabet, padded), so an
//!     archive holds exactly what the journal held.
//!
//! Enum values lose their prefix (`"COMPENSATED"`, `"TRANSIENT"`, `"forward"`);
//! each document maps its own enums (the API's in the CLI, the domain's
//! `as_str` elsewhere) to the same names.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use serde_json::Value;

use crate::saga::Timestamp;

/// `2024-05-01T09:12:03.512Z`: a time in UTC with milliseconds.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// A journaled time, as [`rfc3339`] writes it.
pub fn timestamp(time: Timestamp) -> String {
    rfc3339(time.to_system_time())
}

/// The time of an RFC 3339 string in UTC (`…Z`, with or without fractional
/// seconds) such as [`rfc3339`] writes; `None` when it is not one.
pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
    humantime::parse_rfc3339(text).ok().map(Timestamp::from)
}

/// A policy duration or a timeout, as definitions write it: `"250ms"`, `"1m 30s"`.
pub fn duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// The key of the object a view writes bytes that are neither JSON nor
/// UTF-8 as (the `$` keeps it apart from the keys payloads use).
pub const BASE64_MARKER: &str = "$base64";

/// Bytes for a view: the JSON they hold, else the text they are, else
/// `{"$base64": "…"}` (standard alphabet, padded); `null` when empty.
pub fn bytes_or_text(b: &[u8]) -> Value {
    if b.is_empty() {
        return Value::Null;
    }
    if let Ok(value) = serde_json::from_slice(b) {
        return value;
    }
    match std::str::from_utf8(b) {
        Ok(text) => Value::String(text.into()),
        Err(_) => {
            let mut marked = serde_json::Map::new();
            marked.insert(
                BASE64_MARKER.into(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
            );
            Value::Object(marked)
        }
    }
}

/// Bytes for a record: the JSON they hold and `None`; when they are not JSON,
/// `null` and the bytes in base64 for the `<field>_base64` beside it; `null`
/// and `None` when empty.
pub fn bytes_or_base64(b: &[u8]) -> (Value, Option<String>) {
    if b.is_empty() {
        return (Value::Null, None);
    }
    match serde_json::from_slice(b) {
        Ok(value) => (value, None),
        Err(_) => (
            Value::Null,
            Some(base64::engine::general_purpose::STANDARD.encode(b)),
        ),
    }
}

/// `text`, checked to be one JSON document, without the whitespace between
/// its tokens: the same JSON in the same bytes however it was typed (a
/// trailing newline, indentation), so one idempotency key matches it. Every
/// token is kept as written (key order, number spelling: a round trip
/// through a parsed value would sort keys and round big numbers).
pub fn minified(text: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::from_slice::<serde::de::IgnoredAny>(text)?;
    let mut out = Vec::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for &byte in text {
        if in_string {
            out.push(byte);
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if !matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
            in_string = byte == b'"';
            out.push(byte);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn times_are_utc_with_milliseconds_and_read_back() {
        let t = Timestamp(1_700_000_000_123);
        assert_eq!(timestamp(t), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(t.to_system_time()), timestamp(t));
        assert_eq!(parse_rfc3339(&timestamp(t)), Some(t));
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20Z"),
            Some(Timestamp(1_700_000_000_000))
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn minified_json_keeps_every_token_as_written() {
        let typed =
            b"{\n  \"b\": [1, 2.50, 12345678901234567890123],\n  \"a\": \"x \\\" y\\\\\"\n}\n";
        assert_eq!(
            minified(typed).unwrap(),
            br#"{"b":[1,2.50,12345678901234567890123],"a":"x \" y\\"}"#.to_vec()
        );
        assert_eq!(minified(b" \"a  b\" ").unwrap(), br#""a  b""#.to_vec());
        assert!(minified(b"{bad").is_err());
        assert!(minified(b"{} {}").is_err(), "one document only");
    }

    #[test]
    fn durations_are_written_as_definitions_write_them() {
        assert_eq!(duration(Duration::from_millis(250)), "250ms");
        assert_eq!(duration(Duration::from_secs(90)), "1m 30s");
        assert_eq!(duration(Duration::ZERO), "0s");
    }

    #[test]
    fn json_bytes_are_embedded_in_views_and_records_alike() {
        let b = br#"{"order_id":"B-7","n":[1,2]}"#;
        assert_eq!(bytes_or_text(b), json!({"order_id": "B-7", "n": [1, 2]}));
        assert_eq!(bytes_or_base64(b), (bytes_or_text(b), None));
        assert_eq!(bytes_or_text(b""), Value::Null);
        assert_eq!(bytes_or_base64(b""), (Value::Null, None));
    }

    #[test]
    fn other_bytes_are_text_in_a_view_and_base64_in_a_record() {
        assert_eq!(bytes_or_text(b"not json"), json!("not json"));
        assert_eq!(
            bytes_or_base64(b"not json"),
            (Value::Null, Some("bm90IGpzb24=".into()))
        );
        // Neither keeps less than every byte: a view marks what is not text.
        assert_eq!(bytes_or_text(&[0xff, 0x00]), json!({"$base64": "/wA="}));
        assert_eq!(
            bytes_or_base64(&[0xff, 0x00]),
            (Value::Null, Some("/wA=".into()))
        );
    }
}
