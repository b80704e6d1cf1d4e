//! Texts of bounded size: what an error quotes of its input, and what the
//! journal keeps of what a participant says.
//!
//! Both come from outside. A name of 100 KB quoted whole in an error makes
//! the answer larger than the header gRPC carries messages in (the caller got
//! a transport error, not the refusal); a participant's 1 MB error text
//! journaled with each of its attempts would fill the disk at the rate it
//! fails. So errors quote at most [`QUOTE_MAX_CHARS`] characters of a value,
//! and an attempt keeps at most [`ERROR_TEXT_MAX_BYTES`] of its error.

/// Characters of an input value an error message quotes.
pub const QUOTE_MAX_CHARS: usize = 64;
/// Bytes of a participant's reason (or a transport error) an attempt keeps.
pub const ERROR_TEXT_MAX_BYTES: usize = 2048;

/// `value` as an error quotes it: whole when short, else its first
/// characters and its length.
pub fn quoted(value: &str) -> String {
    match value.char_indices().nth(QUOTE_MAX_CHARS) {
        None => value.to_string(),
        Some((end, _)) => format!("{}… ({} bytes)", &value[..end], value.len()),
    }
}

/// `text` cut to at most `max` bytes (at a character boundary), saying how
/// much was cut.
pub fn clipped(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes cut)", &text[..end], text.len() - end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_quoted_whole_and_long_ones_cut_with_their_length() {
        assert_eq!(quoted("payments"), "payments");
        let long = "é".repeat(100_000);
        let q = quoted(&long);
        assert!(q.starts_with(&"é".repeat(QUOTE_MAX_CHARS)), "{q}");
        assert!(q.ends_with("… (200000 bytes)"), "{q}");
        assert!(q.len() < 200);
    }

    #[test]
    fn texts_are_clipped_at_a_character_boundary() {
        assert_eq!(clipped("short".into(), 10), "short");
        let clipped = clipped("aé".repeat(10), 4);
        assert_eq!(clipped, "aéa… (26 more bytes cut)");
    }
}
