//! Fuzzing the saga definition parser: text at random, the shipped definition
//! with characters cut out and put in, and definitions written from random
//! fields (names, participants, durations, retry numbers, unknown keys).
//! `parse_definition` either returns a definition that holds up (a valid name,
//! steps that validate) or an error that names the file and a line within
//! it; it never panics.

use std::path::Path;

use proptest::{collection::vec, option, prelude::*};

use super::definition::{self, DefinitionError, validate_name, validate_steps};
use crate::testing;

const SHIPPED: &str = include_str!("../../sagas/order-fulfillment.toml");

fn checked(text: &str) -> Result<(), TestCaseError> {
    let path = Path::new("sagas/fuzzed.toml");
    match definition::parse_definition(path, text) {
        Ok(d) => {
            prop_assert!(
                validate_name("definition name", &d.name).is_ok(),
                "{}",
                d.name
            );
            prop_assert!(validate_steps(&d.steps).is_ok());
        }
        Err(DefinitionError::File {
            path: p,
            line,
            message,
        }) => {
            prop_assert_eq!(p.as_path(), path);
            prop_assert!(
                line >= 1 && line <= text.lines().count() + 1,
                "line {line}: {message}"
            );
            prop_assert!(!message.is_empty());
        }
        Err(other) => prop_assert!(false, "an error that names no file and line: {other}"),
    }
    Ok(())
}

/// Values a field could be given: strings of any kind, numbers at the edges,
/// durations that are nearly right.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>().prop_map(|s| format!("{s:?}")),
        "[a-z0-9._-]{0,12}".prop_map(|s| format!("\"{s}\"")),
        prop_oneof![
            Just("\"0ms\""),
            Just("\"1ns\""),
            Just("\"-1s\""),
            Just("\"25h\""),
            Just("\"99999999999999999999s\""),
            Just("\"1.5s\""),
            Just("\"s\""),
            Just("\"100ms\""),
        ]
        .prop_map(String::from),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        Just("nan".to_string()),
        Just("inf".to_string()),
        Just("true".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
    ]
}

fn key() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "name",
        "participant",
        "timeout",
        "description",
        "steps",
        "bogus",
    ])
}

fn retry_key() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "initial_interval",
        "multiplier",
        "max_interval",
        "max_attempts",
        "max_compensate_attempts",
        "jitter",
        "max_duration",
        "bogus",
    ])
}

/// A definition file written from random fields.
fn written() -> impl Strategy<Value = String> {
    let step = (
        vec((key(), value()), 0..4),
        option::of(vec((retry_key(), value()), 0..4)),
    );
    (option::of(value()), vec(step, 0..4)).prop_map(|(name, steps)| {
        let mut text = String::new();
        if let Some(name) = name {
            text.push_str(&format!("name = {name}\n"));
        }
        for (fields, retry) in steps {
            text.push_str("[[steps]]\n");
            for (k, v) in fields {
                text.push_str(&format!("{k} = {v}\n"));
            }
            if let Some(retry) = retry {
                let fields: Vec<String> = retry.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                text.push_str(&format!("retry = {{ {} }}\n", fields.join(", ")));
            }
        }
        text
    })
}

/// The shipped definition with characters cut out and put in.
fn edited() -> impl Strategy<Value = String> {
    vec((any::<usize>(), option::of(any::<char>())), 1..6).prop_map(|edits| {
        let mut chars: Vec<char> = SHIPPED.chars().collect();
        for (at, put) in edits {
            let at = at % (chars.len() + 1);
            match put {
                Some(c) => chars.insert(at, c),
                None if at < chars.len() => {
                    chars.remove(at);
                }
                None => {}
            }
        }
        chars.into_iter().collect()
    })
}

#[test]
fn the_definition_parser_reads_or_refuses_anything_naming_a_line() {
    checked(SHIPPED).unwrap();
    testing::fuzz(
        "definition parser",
        prop_oneof![any::<String>(), written(), edited()],
        |text| checked(&text),
    );
}
