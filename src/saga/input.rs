//! Data flow between steps: a step's input built from JSON Pointers into the
//! saga's payload and the outputs of the steps before it.
//!
//! A mapping names each field of the input object and where its value comes
//! from (RFC 6901 pointers into one document):
//!
//! ```text
//! { "payload": <the saga's payload>,
//!   "steps": { "<step>": { "output": <that step's output> }, ... } }
//! ```
//!
//! so `amount = "/steps/price-order/output/total"` takes the `total` field of
//! step `price-order`'s output, and `order = "/payload/order_id"` a field of
//! the payload (`"/payload"` alone is the whole payload).
//!
//! Invariants:
//! - A mapping that exists has passed [`validate`]: every pointer starts at
//!   the payload or at the output of a step that runs earlier, so it can only
//!   fail to resolve because a value is missing, never because it names a
//!   step that has not run.
//! - [`resolve`] depends on nothing but its arguments. The engine resolves a
//!   step's input once, before its first attempt, and journals it
//!   (`InputResolved`): every attempt and every restart sends those bytes,
//!   and its compensation receives them too.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// A step's input mapping: field name, then the pointer its value is read
/// from. Ordered by field, as the input object is.
pub type InputMap = BTreeMap<String, String>;

/// Most fields one mapping may have.
pub const FIELDS_MAX: usize = 64;
/// Longest pointer accepted, in bytes.
pub const POINTER_MAX_LEN: usize = 1024;
/// Longest field name accepted, in bytes.
pub const FIELD_MAX_LEN: usize = 128;
/// Largest input a mapping may build: what a gRPC participant decodes by
/// default (a mapping may copy the payload into several fields).
pub const INPUT_MAX_BYTES: usize = 4 << 20;

/// What is wrong with one field of a mapping.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("input field '{field}' = '{pointer}': {why}")]
pub struct InputError {
    pub field: String,
    pub pointer: String,
    pub why: String,
}

/// Where a pointer starts: the payload, or one earlier step's output.
#[derive(Debug, PartialEq, Eq)]
enum Root<'a> {
    Payload,
    Output(&'a str),
}

/// A pointer split into where it starts and the pointer inside that value
/// (`""` for the whole value), or why it is not one of ours.
fn split(pointer: &str) -> Result<(Root<'_>, &str), &'static str> {
    if let Some(rest) = pointer.strip_prefix("/payload") {
        if rest.is_empty() || rest.starts_with('/') {
            return Ok((Root::Payload, rest));
        }
    } else if let Some(rest) = pointer.strip_prefix("/steps/") {
        let (step, rest) = rest.split_once('/').unwrap_or((rest, ""));
        if let Some(inner) = rest.strip_prefix("output")
            && (inner.is_empty() || inner.starts_with('/'))
            && !step.is_empty()
        {
            return Ok((Root::Output(step), inner));
        }
        return Err("a pointer into a step names its output: /steps/STEP/output[/...]");
    }
    Err("a pointer starts at /payload or at /steps/STEP/output")
}

/// Checks step `step`'s mapping: fields named, pointers well formed, and
/// each step a pointer names is one of `earlier` (the steps that run before
/// it).
pub fn validate(step: &str, input: &InputMap, earlier: &[&str]) -> Result<(), InputError> {
    let refuse = |field: &str, pointer: &str, why: String| InputError {
        field: field.to_string(),
        pointer: pointer.to_string(),
        why,
    };
    if input.is_empty() {
        return Err(refuse(
            "",
            "",
            "the input mapping has no fields (leave it out to send the payload)".into(),
        ));
    }
    if input.len() > FIELDS_MAX {
        return Err(refuse(
            "",
            "",
            format!(
                "the input mapping has {} fields; at most {FIELDS_MAX} are allowed",
                input.len()
            ),
        ));
    }
    for (field, pointer) in input {
        if field.is_empty() || field.len() > FIELD_MAX_LEN {
            return Err(refuse(
                field,
                pointer,
                format!("a field needs a name of at most {FIELD_MAX_LEN} bytes"),
            ));
        }
        if pointer.len() > POINTER_MAX_LEN {
            return Err(refuse(
                field,
                pointer,
                format!("a pointer is at most {POINTER_MAX_LEN} bytes"),
            ));
        }
        match split(pointer) {
            Err(why) => return Err(refuse(field, pointer, why.into())),
            Ok((Root::Output(name), _)) if name == step => {
                return Err(refuse(
                    field,
                    pointer,
                    "a step cannot read its own output".into(),
                ));
            }
            Ok((Root::Output(name), _)) if !earlier.contains(&name) => {
                return Err(refuse(
                    field,
                    pointer,
                    format!("step '{name}' does not run before step '{step}'"),
                ));
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

/// The input object `input` describes, as JSON bytes, read from `payload`
/// and the outputs `output_of` gives by step name. `Err` names the first
/// pointer that resolves to nothing (the step is then rejected without a
/// call) and why.
pub fn resolve<'a>(
    input: &InputMap,
    payload: &[u8],
    output_of: impl Fn(&str) -> Option<&'a [u8]>,
) -> Result<Vec<u8>, String> {
    let parse = |bytes: &[u8]| serde_json::from_slice::<Value>(bytes).ok();
    let payload = parse(payload);
    let mut object = Map::new();
    for (field, pointer) in input {
        let missing = |why: &str| format!("input field '{field}': pointer '{pointer}' {why}");
        let (root, inner) = split(pointer).map_err(&missing)?;
        let value = match root {
            Root::Payload => payload
                .as_ref()
                .ok_or_else(|| missing("reads the payload, which is not JSON"))?
                .pointer(inner)
                .cloned(),
            Root::Output(step) => {
                let output = output_of(step)
                    .ok_or_else(|| missing(&format!("reads step '{step}', which has no output")))?;
                parse(output)
                    .ok_or_else(|| {
                        missing(&format!("reads step '{step}''s output, which is not JSON"))
                    })?
                    .pointer(inner)
                    .cloned()
            }
        };
        let value = value.ok_or_else(|| missing("resolves to nothing"))?;
        object.insert(field.clone(), value);
    }
    let built = serde_json::to_vec(&Value::Object(object)).expect("a JSON value always serializes");
    if built.len() > INPUT_MAX_BYTES {
        return Err(format!(
            "the input is {} bytes; a mapping may build at most {INPUT_MAX_BYTES}",
            built.len()
        ));
    }
    Ok(built)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> InputMap {
        pairs
            .iter()
            .map(|(f, p)| (f.to_string(), p.to_string()))
            .collect()
    }

    #[test]
    fn pointers_read_the_payload_and_earlier_outputs() {
        let input = map(&[
            ("amount", "/steps/price-order/output/total"),
            ("order", "/payload/order_id"),
            ("all", "/payload"),
            ("first_item", "/payload/items/0"),
        ]);
        validate("charge", &input, &["price-order"]).unwrap();
        let payload = br#"{"order_id":"A-1","items":["book","pen"]}"#;
        let price = br#"{"total":12.5,"currency":"EUR"}"#.as_slice();
        let built = resolve(&input, payload, |s| (s == "price-order").then_some(price)).unwrap();
        let value: Value = serde_json::from_slice(&built).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "amount": 12.5,
                "order": "A-1",
                "all": {"order_id": "A-1", "items": ["book", "pen"]},
                "first_item": "book",
            })
        );
    }

    #[test]
    fn a_pointer_to_nothing_names_itself() {
        let payload = br#"{"order_id":"A-1"}"#;
        let price = br#"{"total":12.5}"#.as_slice();
        let output_of = |s: &str| (s == "price").then_some(price);
        for (pointer, why) in [
            ("/steps/price/output/vat", "resolves to nothing"),
            ("/payload/customer", "resolves to nothing"),
            ("/steps/ship/output", "which has no output"),
        ] {
            let err = resolve(&map(&[("x", pointer)]), payload, output_of).unwrap_err();
            assert!(
                err.contains(&format!("pointer '{pointer}'")) && err.contains(why),
                "{err}"
            );
        }
        let err = resolve(&map(&[("x", "/payload/a")]), b"not json", output_of).unwrap_err();
        assert!(err.contains("not JSON"), "{err}");
        let big = format!(r#"{{"blob":"{}"}}"#, "x".repeat(INPUT_MAX_BYTES / 2));
        let copies: Vec<(String, &str)> = (0..3).map(|i| (format!("c{i}"), "/payload")).collect();
        let copies: Vec<(&str, &str)> = copies.iter().map(|(f, p)| (f.as_str(), *p)).collect();
        let err = resolve(&map(&copies), big.as_bytes(), output_of).unwrap_err();
        assert!(err.contains("at most"), "{err}");
    }

    #[test]
    fn a_mapping_may_only_read_what_runs_before_it() {
        for (pointer, why) in [
            ("/steps/ship/output/id", "does not run before step 'charge'"),
            ("/steps/charge/output", "its own output"),
            ("/steps/price", "names its output"),
            ("/steps/price/result", "names its output"),
            ("/payloads/x", "starts at /payload"),
            ("amount", "starts at /payload"),
        ] {
            let err = validate("charge", &map(&[("a", pointer)]), &["price"])
                .unwrap_err()
                .to_string();
            assert!(err.contains(why) && err.contains(pointer), "{err}");
        }
        let empty = validate("charge", &InputMap::new(), &[]).unwrap_err();
        assert!(empty.to_string().contains("no fields"), "{empty}");
    }
}
