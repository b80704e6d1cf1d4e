//! The HTTP answer table of docs/participant.md, in one place: a status, its
//! `Retry-After` header and the body read in full become a [`CallOutcome`].
//!
//! | answer | outcome |
//! | --- | --- |
//! | `2xx`, no body, or a JSON body with outcome absent or `succeeded` | `Succeeded`, with the body's `output` |
//! | `2xx` with outcome `rejected`; `409`, `422` | `Rejected`, the body's `reason` (or its first bytes) |
//! | `2xx` with outcome `retry`; `408`, `425`, `429`, `5xx` | `Transient`, honouring `Retry-After` (or the body's `retry_after`) |
//! | `2xx` whose body is not the JSON of an answer | `Transient`, saying so |
//! | any other status (`400`, `401`, `404`, `3xx`, …) | `Transient`, and flagged [`Classified::misconfigured`] |
//!
//! Invariants:
//! - Pure: the time an HTTP-date `Retry-After` is measured from is passed in.
//! - Every outcome but a success carries a reason naming the status.
//! - A hint is never longer than [`RETRY_AFTER_MAX`], the cap the saga's
//!   decision puts on gRPC's `retry_after` too: capped here as well so that a
//!   `Retry-After: 99999999999` or a date in the year 9999 is a plain long
//!   wait, never an overflow.
//! - A hint that cannot be read (`Retry-After: soon`) is ignored, as browsers
//!   do: the policy's backoff applies.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode, header::RETRY_AFTER};

use super::wire::{AnswerBody, RetryAfter};
use crate::saga::{CallOutcome, decide::RETRY_AFTER_MAX};

/// How many bytes of a body a reason quotes.
pub const QUOTED_BODY_BYTES: usize = 200;

/// An answer's outcome, and whether it says the registration (or the
/// participant) is wrong: a status that retrying will not change.
#[derive(Debug, PartialEq)]
pub struct Classified {
    pub outcome: CallOutcome,
    pub misconfigured: bool,
}

impl From<CallOutcome> for Classified {
    fn from(outcome: CallOutcome) -> Self {
        Self {
            outcome,
            misconfigured: false,
        }
    }
}

/// Classifies one complete answer received at `now`.
pub fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Classified {
    let code = status.as_u16();
    let header_hint = retry_after_header(headers, now);
    if status.is_success() {
        return success(code, body, header_hint).into();
    }
    let answer = parse(body).ok();
    let reason = |default: &str| {
        let said = answer
            .as_ref()
            .and_then(|a| a.reason.clone())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| quote(body));
        if said.is_empty() {
            format!("HTTP {}", status_text(status, default))
        } else {
            format!("HTTP {}: {said}", status_text(status, default))
        }
    };
    match code {
        409 | 422 => CallOutcome::Rejected {
            reason: reason("rejected"),
        }
        .into(),
        408 | 425 | 429 | 500..=599 => CallOutcome::Transient {
            reason: reason("retry"),
            retry_after: header_hint.or_else(|| body_hint(answer.as_ref())),
        }
        .into(),
        _ => Classified {
            outcome: CallOutcome::Transient {
                reason: format!(
                    "{} (a status retrying will not change: check the participant's registration)",
                    reason("client error")
                ),
                retry_after: None,
            },
            misconfigured: true,
        },
    }
}

/// A `2xx`: its body, if any, is the answer.
fn success(code: u16, body: &[u8], header_hint: Option<Duration>) -> CallOutcome {
    if body.iter().all(u8::is_ascii_whitespace) {
        return CallOutcome::Succeeded { output: Vec::new() };
    }
    let answer = match parse(body) {
        Ok(answer) => answer,
        Err(why) => {
            return CallOutcome::Transient {
                reason: format!(
                    "HTTP {code} with a body that is not the JSON of an answer ({why}): {}",
                    quote(body)
                ),
                retry_after: None,
            };
        }
    };
    let outcome = answer.outcome.as_deref().unwrap_or("succeeded");
    let reason = answer.reason.clone().filter(|r| !r.is_empty());
    if outcome.eq_ignore_ascii_case("succeeded") {
        match answer.output_bytes() {
            Ok(output) => CallOutcome::Succeeded { output },
            Err(why) => CallOutcome::Transient {
                reason: format!("HTTP {code} with an output that cannot be read: {why}"),
                retry_after: None,
            },
        }
    } else if outcome.eq_ignore_ascii_case("rejected") {
        CallOutcome::Rejected {
            reason: reason.unwrap_or_else(|| "rejected by the participant".into()),
        }
    } else if outcome.eq_ignore_ascii_case("retry") {
        CallOutcome::Transient {
            reason: reason.unwrap_or_else(|| "the participant asked to retry".into()),
            retry_after: body_hint(Some(&answer)).or(header_hint),
        }
    } else {
        CallOutcome::Transient {
            reason: format!(
                "HTTP {code} with an unknown outcome {outcome:?} (expected \"succeeded\", \"rejected\" or \"retry\")"
            ),
            retry_after: None,
        }
    }
}

/// The body as an answer, or why it is not one.
fn parse(body: &[u8]) -> Result<AnswerBody, String> {
    serde_json::from_slice::<AnswerBody>(body).map_err(|e| {
        if e.is_data() {
            format!("not an answer object: {e}")
        } else {
            format!("not JSON: {e}")
        }
    })
}

/// The body's `retry_after`, capped; a negative or unreadable one is none.
fn body_hint(answer: Option<&AnswerBody>) -> Option<Duration> {
    match answer?.retry_after.as_ref()? {
        // Capped before the conversion, which would fail on a huge number.
        RetryAfter::Seconds(s) if s.is_finite() && *s > RETRY_AFTER_MAX.as_secs_f64() => {
            Some(RETRY_AFTER_MAX)
        }
        hint => hint.duration().ok().map(|d| d.min(RETRY_AFTER_MAX)),
    }
}

/// `Retry-After`: a number of seconds, or an HTTP date (a date in the past
/// is no wait). Anything else is ignored, as browsers do.
pub fn retry_after_header(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = if let Ok(seconds) = text.parse::<u64>() {
        Duration::from_secs(seconds)
    } else {
        let at = httpdate::parse_http_date(text).ok()?;
        at.duration_since(now).unwrap_or_default()
    };
    Some(wait.min(RETRY_AFTER_MAX))
}

/// The first bytes of a body, as text, for a reason or a log line.
pub fn quote(body: &[u8]) -> String {
    let cut = &body[..body.len().min(QUOTED_BODY_BYTES)];
    let text = String::from_utf8_lossy(cut);
    let text = text.trim();
    if body.len() > QUOTED_BODY_BYTES {
        format!("{text}…")
    } else {
        text.to_string()
    }
}

fn status_text(status: StatusCode, default: &str) -> String {
    format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(default)
    )
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn at(code: u16, headers: &[(&str, &str)], body: &str) -> Classified {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        classify(
            StatusCode::from_u16(code).unwrap(),
            &map,
            body.as_bytes(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        )
    }

    fn outcome(code: u16, body: &str) -> CallOutcome {
        at(code, &[], body).outcome
    }

    #[test]
    fn the_answer_table() {
        assert_eq!(outcome(200, ""), CallOutcome::Succeeded { output: vec![] });
        assert_eq!(outcome(204, ""), CallOutcome::Succeeded { output: vec![] });
        assert_eq!(
            outcome(200, r#"{"output":{"charge":"ch_1"}}"#),
            CallOutcome::Succeeded {
                output: br#"{"charge":"ch_1"}"#.to_vec()
            }
        );
        assert_eq!(
            outcome(
                201,
                r#"{"outcome":"SUCCEEDED","output":"x","output_encoding":"text"}"#
            ),
            CallOutcome::Succeeded {
                output: b"x".to_vec()
            }
        );
        assert_eq!(
            outcome(200, r#"{"outcome":"rejected","reason":"card declined"}"#),
            CallOutcome::Rejected {
                reason: "card declined".into()
            }
        );
        assert_eq!(
            outcome(200, r#"{"outcome":"retry","retry_after":"2s"}"#),
            CallOutcome::Transient {
                reason: "the participant asked to retry".into(),
                retry_after: Some(Duration::from_secs(2))
            }
        );
        assert_eq!(
            outcome(409, r#"{"reason":"card declined"}"#),
            CallOutcome::Rejected {
                reason: "HTTP 409 Conflict: card declined".into()
            }
        );
        assert_eq!(
            outcome(422, "out of stock\n"),
            CallOutcome::Rejected {
                reason: "HTTP 422 Unprocessable Entity: out of stock".into()
            }
        );
        for code in [408, 425, 429, 500, 502, 503, 599] {
            let Classified {
                outcome,
                misconfigured,
            } = at(code, &[], "");
            assert!(
                matches!(&outcome, CallOutcome::Transient { reason, retry_after: None } if reason.contains(&code.to_string())),
                "{code}: {outcome:?}"
            );
            assert!(!misconfigured, "{code}");
        }
        for code in [400, 401, 403, 404, 405, 413, 301, 302] {
            let Classified {
                outcome,
                misconfigured,
            } = at(code, &[], "no such route");
            let CallOutcome::Transient { reason, .. } = outcome else {
                panic!("{code}: {outcome:?}")
            };
            assert!(reason.contains(&format!("HTTP {code}")), "{reason}");
            assert!(reason.contains("no such route"), "{reason}");
            assert!(misconfigured, "{code}");
        }
    }

    #[test]
    fn a_success_that_is_not_an_answer_is_transient_and_says_why() {
        for (body, why) in [
            ("<html>ok</html>", "not JSON"),
            ("[1,2]", "not an answer object"),
            (r#"{"outcome":"maybe"}"#, "unknown outcome"),
            (
                r#"{"output":1,"output_encoding":"base64"}"#,
                "cannot be read",
            ),
        ] {
            let CallOutcome::Transient { reason, .. } = outcome(200, body) else {
                panic!("{body}")
            };
            assert!(reason.contains(why), "{body}: {reason}");
        }
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let hint = |value: &str| match at(503, &[("retry-after", value)], "").outcome {
            CallOutcome::Transient { retry_after, .. } => retry_after,
            other => panic!("{other:?}"),
        };
        assert_eq!(hint("7"), Some(Duration::from_secs(7)));
        // 1_700_000_000 is Tue, 14 Nov 2023 22:13:20 GMT.
        assert_eq!(
            hint("Tue, 14 Nov 2023 22:13:50 GMT"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(hint("Tue, 14 Nov 2023 22:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(hint("soon"), None);
        // The header wins over the body's hint on an error status.
        let both = at(429, &[("retry-after", "3")], r#"{"retry_after":9}"#);
        assert!(matches!(
            both.outcome,
            CallOutcome::Transient { retry_after: Some(d), .. } if d == Duration::from_secs(3)
        ));
    }

    #[test]
    fn hints_are_capped_as_grpc_s_retry_after_is() {
        let hint = |headers: &[(&str, &str)], body: &str| match at(503, headers, body).outcome {
            CallOutcome::Transient { retry_after, .. } => retry_after,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            hint(&[("retry-after", "99999999999")], ""),
            Some(RETRY_AFTER_MAX)
        );
        assert_eq!(
            hint(&[("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT")], ""),
            Some(RETRY_AFTER_MAX)
        );
        assert_eq!(hint(&[], r#"{"retry_after":1e300}"#), Some(RETRY_AFTER_MAX));
        assert_eq!(
            hint(&[], r#"{"retry_after":"400h"}"#),
            Some(RETRY_AFTER_MAX)
        );
        assert_eq!(hint(&[], r#"{"retry_after":-1}"#), None);
        // A 2xx that asks to retry is capped too.
        let retry = at(200, &[], r#"{"outcome":"retry","retry_after":86400}"#).outcome;
        assert!(
            matches!(retry, CallOutcome::Transient { retry_after: Some(d), .. } if d == RETRY_AFTER_MAX),
            "{retry:?}"
        );
    }

    #[test]
    fn the_retry_statuses_take_the_body_s_hint_when_no_header_gives_one() {
        for code in [408, 425, 429, 500, 503] {
            let outcome = at(code, &[], r#"{"reason":"busy","retry_after":"250ms"}"#).outcome;
            assert_eq!(
                outcome,
                CallOutcome::Transient {
                    reason: format!(
                        "HTTP {code} {}: busy",
                        StatusCode::from_u16(code)
                            .unwrap()
                            .canonical_reason()
                            .unwrap()
                    ),
                    retry_after: Some(Duration::from_millis(250))
                }
            );
        }
    }

    #[test]
    fn long_bodies_are_quoted_short() {
        let long = "x".repeat(1000);
        let quoted = quote(long.as_bytes());
        assert_eq!(quoted.chars().count(), QUOTED_BODY_BYTES + 1);
    }
}
