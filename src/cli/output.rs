//! How client verbs print: the `--output`/`--json` choice, colour (only on a
//! terminal, and never with `NO_COLOR`), aligned tables, and the formatting of
//! times, durations and enum names shared by every human view.
//!
//! Human output is for people and may change; JSON output is for scripts and
//! keeps its field names (see `json.rs`).

use std::{
    io::{ErrorKind, IsTerminal, Write},
    time::{Duration, SystemTime},
};

use sagad::proto::v1 as pb;

/// Writes `text` to stdout and flushes it (watch lines must show at once). If
/// the reader has gone (`sagad list | head`), exits quietly with 0: it has read
/// what it wanted.
pub fn emit(text: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        if e.kind() == ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("sagad: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// The two output formats.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns and timelines, coloured on a terminal.
    Human,
    /// JSON on stdout (one document; `watch` prints one event per line).
    Json,
}

/// The output flags every client verb takes.
#[derive(clap::Args, Clone, Debug)]
pub struct OutputArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    output: Format,
    /// Shorthand for `--output json`.
    #[arg(long)]
    json: bool,
}

impl OutputArgs {
    /// The chosen format.
    pub fn format(&self) -> Format {
        if self.json { Format::Json } else { self.output }
    }
}

/// What a piece of text means, which picks its colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    Plain,
    /// Done well: COMPLETED, SUCCEEDED.
    Good,
    /// Gave up or said no: FAILED, REJECTED.
    Bad,
    /// Undoing or retrying: COMPENSATING, TRANSIENT.
    Warn,
    /// Secondary detail: timestamps.
    Dim,
    /// Headers and names.
    Bold,
}

/// Colours text, or not: colour only when stdout is a terminal and `NO_COLOR`
/// is unset (<https://no-color.org>), so pipes and files get plain text.
#[derive(Clone, Copy, Debug)]
pub struct Palette {
    colour: bool,
}

impl Palette {
    /// Colour if stdout is a terminal and `NO_COLOR` is unset.
    pub fn detect() -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Self {
            colour: std::io::stdout().is_terminal() && !no_color,
        }
    }

    /// Never colour.
    #[cfg(test)]
    pub fn plain() -> Self {
        Self { colour: false }
    }

    /// `text` in the colour of `tone`.
    pub fn paint(&self, tone: Tone, text: &str) -> String {
        let code = match tone {
            Tone::Plain => return text.to_string(),
            Tone::Good => "32",
            Tone::Bad => "31",
            Tone::Warn => "33",
            Tone::Dim => "2",
            Tone::Bold => "1",
        };
        if self.colour && !text.is_empty() {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

/// The tone of a state or outcome name (as `state_name` and friends print them).
pub fn tone_of(name: &str) -> Tone {
    match name {
        "COMPLETED" | "SUCCEEDED" => Tone::Good,
        "FAILED" | "REJECTED" => Tone::Bad,
        "COMPENSATING" | "COMPENSATED" | "TRANSIENT" | "INTERRUPTED" | "NOT_DELIVERED"
        | "SKIPPED" => Tone::Warn,
        _ => Tone::Plain,
    }
}

/// A table printed with aligned columns. Widths are measured on the plain text,
/// before colour codes are added, so colour never breaks the alignment.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<(String, Tone)>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row of cells, each with its tone.
    pub fn row(&mut self, cells: Vec<(String, Tone)>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, each ending in a newline.
    pub fn render(&self, palette: &Palette) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, (text, _)) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(text.chars().count());
            }
        }
        let mut out = String::new();
        let line = |cells: Vec<(String, Tone)>, out: &mut String| {
            let last = cells.len().saturating_sub(1);
            for (i, (text, tone)) in cells.into_iter().enumerate() {
                out.push_str(&palette.paint(tone, &text));
                if i < last {
                    // The last column is not padded: no trailing spaces.
                    let pad = widths[i] - text.chars().count() + 2;
                    out.extend(std::iter::repeat_n(' ', pad));
                }
            }
            // An empty last cell would leave the padding of the one before it.
            let kept = out.trim_end_matches(' ').len();
            out.truncate(kept);
            out.push('\n');
        };
        line(
            self.headers
                .iter()
                .map(|h| (h.to_string(), Tone::Bold))
                .collect(),
            &mut out,
        );
        for row in &self.rows {
            line(row.clone(), &mut out);
        }
        out
    }
}

/// The kind of a principal as `--json` and the tables name it: `anonymous`,
/// `token`, `cert` (as `sagad::saga::Identity::kind`).
pub fn principal_kind(p: &pb::Principal) -> &'static str {
    match pb::PrincipalKind::try_from(p.kind) {
        Ok(pb::PrincipalKind::Anonymous) => "anonymous",
        Ok(pb::PrincipalKind::Token) => "token",
        Ok(pb::PrincipalKind::Certificate) => "cert",
        _ => "unknown",
    }
}

/// Who made a call: `token:ops from 127.0.0.1:50412`, `anonymous from …`, or
/// `not recorded` for writes journaled before principals were.
pub fn principal(p: Option<&pb::Principal>) -> String {
    let Some(p) = p else {
        return "not recorded".into();
    };
    let who = match principal_kind(p) {
        "anonymous" => "anonymous".to_string(),
        kind => format!("{kind}:{}", p.name),
    };
    if p.peer.is_empty() {
        who
    } else {
        format!("{who} from {}", p.peer)
    }
}

/// `SAGA_STATE_COMPENSATED` → `COMPENSATED`.
pub fn saga_state_name(value: i32) -> String {
    pb::SagaState::try_from(value)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("SAGA_STATE_")
                .to_string()
        })
        .unwrap_or_else(|_| format!("STATE_{value}"))
}

/// `PROTOCOL_HTTP` → `http`, as `--protocol` writes it; unspecified is gRPC.
pub fn protocol_name(value: i32) -> String {
    match pb::Protocol::try_from(value) {
        Ok(pb::Protocol::Unspecified | pb::Protocol::Grpc) => "grpc".into(),
        Ok(pb::Protocol::Http) => "http".into(),
        Ok(pb::Protocol::H2c) => "h2c".into(),
        Err(_) => format!("protocol_{value}"),
    }
}

/// `STEP_STATE_SUCCEEDED` → `SUCCEEDED`.
pub fn step_state_name(value: i32) -> String {
    pb::StepState::try_from(value)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("STEP_STATE_")
                .to_string()
        })
        .unwrap_or_else(|_| format!("STATE_{value}"))
}

/// A step's kind as TOML names it: `compensatable` (also for a value this
/// build does not know), `pivot`, `retriable`.
pub fn step_kind_name(kind: i32) -> &'static str {
    match pb::StepKind::try_from(kind) {
        Ok(pb::StepKind::Pivot) => "pivot",
        Ok(pb::StepKind::Retriable) => "retriable",
        _ => "compensatable",
    }
}

/// `ATTEMPT_OUTCOME_TRANSIENT` → `TRANSIENT`.
pub fn outcome_name(value: i32) -> String {
    pb::AttemptOutcome::try_from(value)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("ATTEMPT_OUTCOME_")
                .to_string()
        })
        .unwrap_or_else(|_| format!("OUTCOME_{value}"))
}

/// `ACTION_COMPENSATE` → `compensate`.
pub fn action_name(value: i32) -> String {
    pb::Action::try_from(value)
        .map(|s| s.as_str_name().trim_start_matches("ACTION_").to_lowercase())
        .unwrap_or_else(|_| format!("action_{value}"))
}

/// True for the states a saga never leaves.
pub fn is_terminal(state: i32) -> bool {
    matches!(
        pb::SagaState::try_from(state),
        Ok(pb::SagaState::Completed | pb::SagaState::Compensated | pb::SagaState::Failed)
    )
}

/// A wire timestamp as a `SystemTime` (`None` before the epoch, which we never write).
pub fn system_time(ts: &prost_types::Timestamp) -> Option<SystemTime> {
    SystemTime::try_from(*ts).ok()
}

/// `2025-01-31T12:00:00.123Z`, the form JSON output uses.
pub fn rfc3339(ts: &prost_types::Timestamp) -> String {
    system_time(ts)
        .map(sagad::json::rfc3339)
        .unwrap_or_default()
}

/// `12:00:00.123` (UTC): the time of day, for timelines.
pub fn clock(ts: &prost_types::Timestamp) -> String {
    let full = rfc3339(ts);
    full.get(11..23).unwrap_or(&full).to_string()
}

/// `2025-01-31 12:00:00 UTC`, for headers.
pub fn date_time(ts: &prost_types::Timestamp) -> String {
    let full = rfc3339(ts);
    match (full.get(..10), full.get(11..19)) {
        (Some(date), Some(time)) => format!("{date} {time} UTC"),
        _ => full,
    }
}

/// The time from `from` to `to`, if both are set and in order.
pub fn between(
    from: Option<&prost_types::Timestamp>,
    to: Option<&prost_types::Timestamp>,
) -> Option<Duration> {
    let (from, to) = (system_time(from?)?, system_time(to?)?);
    to.duration_since(from).ok()
}

/// A wire duration as a std one (negative ones, which we never write, become 0).
pub fn std_duration(d: &prost_types::Duration) -> Duration {
    Duration::try_from(*d).unwrap_or_default()
}

/// A short human duration: `850µs`, `12ms`, `1.25s`, `2m05s`, `1h02m`.
pub fn short_duration(d: Duration) -> String {
    let micros = d.as_micros();
    if micros < 1_000 {
        format!("{micros}µs")
    } else if micros < 1_000_000 {
        format!("{}ms", micros / 1_000)
    } else if d.as_secs() < 60 {
        format!("{:.2}s", d.as_secs_f64())
    } else if d.as_secs() < 3600 {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    } else {
        format!("{}h{:02}m", d.as_secs() / 3600, (d.as_secs() % 3600) / 60)
    }
}

/// An offset from the saga's start, `+12ms`: whole milliseconds at least, so
/// the first attempt reads `+0ms` rather than a few microseconds.
pub fn offset(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        "+0ms".into()
    } else {
        format!("+{}", short_duration(d))
    }
}

/// A configuration-style duration (`250ms`, `5s`), as definitions and flags write them.
pub fn config_duration(d: &prost_types::Duration) -> String {
    sagad::json::duration(std_duration(d))
}

/// Bytes as text for one line: one-line UTF-8 as written (so JSON keeps its
/// key order), multi-line JSON re-encoded compactly, binary summarised; cut to
/// `max` characters.
pub fn bytes_preview(bytes: &[u8], max: usize) -> String {
    let text = match std::str::from_utf8(bytes) {
        Ok(text) if !text.contains('\n') => text.to_string(),
        Ok(text) => serde_json::from_str::<serde_json::Value>(text)
            .map(|json| json.to_string())
            .unwrap_or_else(|_| text.replace('\n', " ")),
        Err(_) => format!("<{} bytes>", bytes.len()),
    };
    truncate(&text, max)
}

/// A count with its thousands grouped: `9,981`.
pub fn grouped(n: u32) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// `text` cut to `max` characters, with an ellipsis when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// `bytes` in KiB or MiB, for people.
pub fn size(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    match bytes {
        b if b < MIB => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{:.1} MiB", b as f64 / MIB as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_group_their_thousands() {
        let shown: Vec<String> = [0, 7, 999, 1_000, 9_981, 123_456, u32::MAX]
            .into_iter()
            .map(grouped)
            .collect();
        assert_eq!(
            shown,
            [
                "0",
                "7",
                "999",
                "1,000",
                "9,981",
                "123,456",
                "4,294,967,295"
            ]
        );
    }

    #[test]
    fn table_columns_align_and_the_last_is_not_padded() {
        let mut table = Table::new(&["ID", "STATE"]);
        table.row(vec![
            ("a-long-id".into(), Tone::Plain),
            ("OK".into(), Tone::Good),
        ]);
        table.row(vec![
            ("b".into(), Tone::Plain),
            ("FAILED".into(), Tone::Bad),
        ]);
        let text = table.render(&Palette::plain());
        assert_eq!(text, "ID         STATE\na-long-id  OK\nb          FAILED\n");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(short_duration(Duration::from_micros(850)), "850µs");
        assert_eq!(short_duration(Duration::from_millis(12)), "12ms");
        assert_eq!(short_duration(Duration::from_millis(1250)), "1.25s");
        assert_eq!(short_duration(Duration::from_secs(125)), "2m05s");
    }

    #[test]
    fn plain_palette_adds_no_codes() {
        assert_eq!(Palette::plain().paint(Tone::Bad, "FAILED"), "FAILED");
        assert_eq!(
            Palette { colour: true }.paint(Tone::Bad, "FAILED"),
            "\x1b[31mFAILED\x1b[0m"
        );
    }
}
