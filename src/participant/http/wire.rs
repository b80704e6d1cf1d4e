//! The JSON of the HTTP contract: the body sagad POSTs ([`CallBody`], read
//! back as [`StepCallBody`]) and the body a participant may answer with
//! ([`AnswerBody`]). Shared by the coordinator's client (`mod.rs`), the
//! demo's HTTP participants and the tests, so both sides read one shape.
//!
//! Bytes travel so (the payload, and each output of an earlier step):
//!
//! | the bytes are | the JSON holds | `..._encoding` |
//! | --- | --- | --- |
//! | valid JSON | that JSON, embedded as it is | `"json"` |
//! | UTF-8 but not JSON (also empty) | a string of that text | `"text"` |
//! | not UTF-8 | a string of their standard base64 (with padding) | `"base64"` |
//!
//! The encoding is always sent, so a reader never guesses whether a string is
//! text or JSON that happens to be a string. An answer's `output` follows the
//! same table, `output_encoding` defaulting to `"json"`.
//!
//! Invariants:
//! - Embedding and reading back give the same bytes, whatever they are
//!   (`unembed(embed(b)) == b`); JSON is embedded byte for byte, never
//!   re-serialised.
//! - Unknown fields of an answer are ignored, so a participant may add its own.

use std::{collections::HashMap, time::Duration};

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use serde::{Deserialize, Serialize, Serializer, ser::SerializeMap};
use serde_json::value::RawValue;

use crate::saga::Action;

/// How bytes are written in the JSON (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Json,
    Text,
    Base64,
}

/// Bytes ready to be written into a JSON document.
#[derive(Debug)]
pub enum Embedded<'a> {
    Json(&'a RawValue),
    Text(&'a str),
    Base64(String),
}

impl<'a> Embedded<'a> {
    /// How `bytes` travel (see the module docs).
    pub fn of(bytes: &'a [u8]) -> Self {
        if let Ok(json) = serde_json::from_slice::<&RawValue>(bytes) {
            return Embedded::Json(json);
        }
        match std::str::from_utf8(bytes) {
            Ok(text) => Embedded::Text(text),
            Err(_) => Embedded::Base64(BASE64.encode(bytes)),
        }
    }

    /// The encoding field that goes with it.
    pub fn encoding(&self) -> Encoding {
        match self {
            Embedded::Json(_) => Encoding::Json,
            Embedded::Text(_) => Encoding::Text,
            Embedded::Base64(_) => Encoding::Base64,
        }
    }
}

impl Serialize for Embedded<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Embedded::Json(raw) => raw.serialize(s),
            Embedded::Text(text) => s.serialize_str(text),
            Embedded::Base64(text) => s.serialize_str(text),
        }
    }
}

/// The bytes `value` holds in `encoding`; the error says why it cannot.
pub fn unembed(value: &RawValue, encoding: Encoding) -> Result<Vec<u8>, String> {
    match encoding {
        Encoding::Json => Ok(value.get().as_bytes().to_vec()),
        Encoding::Text => serde_json::from_str::<String>(value.get())
            .map(String::into_bytes)
            .map_err(|_| "an encoding of \"text\" needs a JSON string".to_string()),
        Encoding::Base64 => {
            let text = serde_json::from_str::<String>(value.get())
                .map_err(|_| "an encoding of \"base64\" needs a JSON string".to_string())?;
            BASE64
                .decode(text)
                .map_err(|e| format!("the base64 does not decode: {e}"))
        }
    }
}

/// The name of an action in the JSON.
pub fn action_name(action: Action) -> &'static str {
    match action {
        Action::Forward => "forward",
        Action::Compensate => "compensate",
    }
}

/// The body of one call, borrowing from the call's request.
#[derive(Serialize)]
pub struct CallBody<'a> {
    pub saga_id: &'a str,
    pub definition: &'a str,
    pub step: &'a str,
    pub action: &'static str,
    pub attempt: u32,
    pub idempotency_key: &'a str,
    pub payload: Embedded<'a>,
    pub payload_encoding: Encoding,
    #[serde(serialize_with = "outputs_values")]
    pub outputs: &'a [(String, Embedded<'a>)],
    #[serde(serialize_with = "outputs_encodings", rename = "output_encodings")]
    pub output_encodings: &'a [(String, Embedded<'a>)],
}

fn outputs_values<S: Serializer>(
    outputs: &&[(String, Embedded<'_>)],
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(outputs.len()))?;
    for (name, value) in outputs.iter() {
        map.serialize_entry(name, value)?;
    }
    map.end()
}

fn outputs_encodings<S: Serializer>(
    outputs: &&[(String, Embedded<'_>)],
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(outputs.len()))?;
    for (name, value) in outputs.iter() {
        map.serialize_entry(name, &value.encoding())?;
    }
    map.end()
}

/// The JSON body for one call of `action`.
#[allow(clippy::too_many_arguments)]
pub fn call_body(
    saga_id: &str,
    definition: &str,
    step: &str,
    action: Action,
    attempt: u32,
    idempotency_key: &str,
    payload: &[u8],
    outputs: &[(String, Vec<u8>)],
) -> Vec<u8> {
    let embedded: Vec<(String, Embedded<'_>)> = outputs
        .iter()
        .map(|(name, bytes)| (name.clone(), Embedded::of(bytes)))
        .collect();
    let payload = Embedded::of(payload);
    let body = CallBody {
        saga_id,
        definition,
        step,
        action: action_name(action),
        attempt,
        idempotency_key,
        payload_encoding: payload.encoding(),
        payload,
        outputs: &embedded,
        output_encodings: &embedded,
    };
    // Strings, numbers and JSON already checked: writing cannot fail.
    serde_json::to_vec(&body).expect("a call body always serialises")
}

/// A call's body as a participant reads it.
#[derive(Debug, Deserialize)]
pub struct StepCallBody {
    pub saga_id: String,
    pub definition: String,
    pub step: String,
    pub action: String,
    pub attempt: u32,
    pub idempotency_key: String,
    pub payload: Box<RawValue>,
    pub payload_encoding: Encoding,
    #[serde(default)]
    pub outputs: HashMap<String, Box<RawValue>>,
    #[serde(default)]
    pub output_encodings: HashMap<String, Encoding>,
}

impl StepCallBody {
    /// The payload's bytes.
    pub fn payload_bytes(&self) -> Result<Vec<u8>, String> {
        unembed(&self.payload, self.payload_encoding).map_err(|e| format!("payload: {e}"))
    }

    /// Each earlier step's output, as bytes.
    pub fn output_bytes(&self) -> Result<Vec<(String, Vec<u8>)>, String> {
        self.outputs
            .iter()
            .map(|(name, value)| {
                let encoding = self
                    .output_encodings
                    .get(name)
                    .copied()
                    .unwrap_or(Encoding::Json);
                unembed(value, encoding)
                    .map(|bytes| (name.clone(), bytes))
                    .map_err(|e| format!("outputs.{name}: {e}"))
            })
            .collect()
    }
}

/// A hint of when to try again: seconds (`1.5`) or a duration (`"250ms"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RetryAfter {
    Seconds(f64),
    Text(String),
}

impl RetryAfter {
    /// The hint as a duration; the error says why it is not one.
    pub fn duration(&self) -> Result<Duration, String> {
        match self {
            RetryAfter::Seconds(s) => Duration::try_from_secs_f64(*s)
                .map_err(|_| format!("retry_after {s} is not a number of seconds >= 0")),
            RetryAfter::Text(text) => humantime::parse_duration(text)
                .map_err(|e| format!("retry_after '{text}' is not a duration like \"250ms\": {e}")),
        }
    }
}

/// The optional JSON body of a 2xx (or 409/422) answer.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct AnswerBody {
    /// `"succeeded"` (the default), `"rejected"` or `"retry"`, in any case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The step's output, passed to later steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_encoding: Option<Encoding>,
    /// Why, shown in `GetSaga`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<RetryAfter>,
}

impl AnswerBody {
    /// An answer carrying `output` (any bytes, written per the module docs).
    pub fn with_output(output: &[u8]) -> Self {
        let embedded = Embedded::of(output);
        let encoding = embedded.encoding();
        let json = serde_json::to_string(&embedded).expect("embedded bytes serialise");
        Self {
            output: RawValue::from_string(json).ok(),
            output_encoding: (encoding != Encoding::Json).then_some(encoding),
            ..Self::default()
        }
    }

    /// The output's bytes (empty when there is none).
    pub fn output_bytes(&self) -> Result<Vec<u8>, String> {
        match &self.output {
            None => Ok(Vec::new()),
            Some(value) => unembed(value, self.output_encoding.unwrap_or(Encoding::Json))
                .map_err(|e| format!("output: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_embedded_by_what_they_are_and_read_back_the_same() {
        for (bytes, encoding, json) in [
            (
                &br#"{"order_id":"B-7"}"#[..],
                Encoding::Json,
                r#"{"order_id":"B-7"}"#,
            ),
            (b"42", Encoding::Json, "42"),
            (b"not json", Encoding::Text, r#""not json""#),
            (b"", Encoding::Text, r#""""#),
            (&[0xff, 0x00, 0x80][..], Encoding::Base64, r#""/wCA""#),
        ] {
            let embedded = Embedded::of(bytes);
            assert_eq!(embedded.encoding(), encoding, "{bytes:?}");
            let written = serde_json::to_string(&embedded).unwrap();
            assert_eq!(written, json);
            let raw: Box<RawValue> = serde_json::from_str(&written).unwrap();
            assert_eq!(unembed(&raw, encoding).unwrap(), bytes);
        }
    }

    #[test]
    fn a_call_body_reads_back_as_it_was_written() {
        let outputs = vec![
            ("validate".to_string(), br#"{"ok":true}"#.to_vec()),
            ("blob".to_string(), vec![0xfe, 0xff]),
        ];
        let body = call_body(
            "01J",
            "order",
            "charge",
            Action::Compensate,
            3,
            "01J/charge/compensate",
            b"{\"a\": 1}",
            &outputs,
        );
        let read: StepCallBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(read.action, "compensate");
        assert_eq!(read.attempt, 3);
        assert_eq!(read.payload_bytes().unwrap(), b"{\"a\": 1}");
        let mut back = read.output_bytes().unwrap();
        back.sort();
        let mut expected = outputs.clone();
        expected.sort();
        assert_eq!(back, expected);
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["payload"]["a"], 1, "JSON is embedded as JSON");
        assert_eq!(value["output_encodings"]["blob"], "base64");
    }

    #[test]
    fn answers_carry_outputs_of_any_kind() {
        for output in [&b"{\"charge\":\"ch_1\"}"[..], b"plain", &[0, 159]] {
            let json = serde_json::to_string(&AnswerBody::with_output(output)).unwrap();
            let back: AnswerBody = serde_json::from_str(&json).unwrap();
            assert_eq!(back.output_bytes().unwrap(), output, "{json}");
        }
        let odd: AnswerBody =
            serde_json::from_str(r#"{"output":1,"output_encoding":"base64","mine":true}"#).unwrap();
        assert!(
            odd.output_bytes()
                .unwrap_err()
                .contains("needs a JSON string")
        );
        for (hint, seconds) in [(r#"2"#, 2.0), (r#"0.25"#, 0.25), (r#""1500ms""#, 1.5)] {
            let hint: RetryAfter = serde_json::from_str(hint).unwrap();
            assert_eq!(hint.duration().unwrap().as_secs_f64(), seconds);
        }
        assert!(RetryAfter::Seconds(-1.0).duration().is_err());
    }
}
