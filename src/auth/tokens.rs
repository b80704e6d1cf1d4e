//! Bearer tokens: how one is made, and the hash the tokens file keeps of it.
//!
//! A token is `sagad_` and 32 random bytes from the operating system's CSPRNG
//! (`getrandom`), base64url without padding: 49 characters, 256 bits of
//! entropy. The prefix lets secret scanners and people recognise one.
//!
//! The file keeps only `sha256:` and the hex SHA-256 of the whole token. A
//! slow password hash (argon2, bcrypt) exists to make guessing a *low-entropy*
//! secret expensive; a 256-bit random token cannot be guessed however fast
//! the hash is, so one SHA-256 already makes a stolen tokens file useless,
//! and it costs a microsecond on every call instead of the tens of
//! milliseconds a password hash would add to each RPC.
//!
//! Invariants:
//! - A token is never stored, logged or echoed by the server: only its hash.
//! - Comparing a presented token with the file's hashes takes the same time
//!   whichever entry matches, or none ([`TokenHash::matches`], `subtle`).

use std::fmt;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What every token starts with.
pub const TOKEN_PREFIX: &str = "sagad_";
/// Random bytes in a token.
pub const TOKEN_RANDOM_BYTES: usize = 32;
/// How a hash is written in the tokens file.
pub const HASH_PREFIX: &str = "sha256:";

/// The SHA-256 of a token.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// The hash of a presented token.
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// Parses `sha256:` and 64 hex digits, as the tokens file writes it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let hex = text.strip_prefix(HASH_PREFIX).ok_or_else(|| {
            format!("'{text}' is not a token hash: write {HASH_PREFIX} and 64 hex digits")
        })?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "'{text}': a token hash is {HASH_PREFIX} and 64 hex digits (sagad auth token prints one)"
            ));
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            // Checked above: two hex digits per byte.
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex digits");
        }
        Ok(Self(bytes))
    }

    /// Whether `self` and `other` are equal, in time that does not depend on
    /// where they differ.
    pub fn matches(&self, other: &TokenHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

/// `sha256:` and the hex digits.
impl fmt::Display for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(HASH_PREFIX)?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Never the digits: a hash is not secret, but logs need not carry it.
impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

/// A fresh token from the operating system's CSPRNG.
pub fn generate() -> Result<String, getrandom::Error> {
    let mut random = [0u8; TOKEN_RANDOM_BYTES];
    getrandom::fill(&mut random)?;
    Ok(format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_hash_to_what_the_file_parses() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 43);
        let hash = TokenHash::of(&a);
        let written = hash.to_string();
        assert!(written.starts_with("sha256:") && written.len() == 7 + 64);
        let parsed = TokenHash::parse(&written).unwrap();
        assert!(parsed.matches(&hash));
        assert!(!parsed.matches(&TokenHash::of(&b)));
        assert_eq!(format!("{hash:?}"), "TokenHash(..)");
    }

    #[test]
    fn the_known_sha256_of_abc() {
        assert_eq!(
            TokenHash::of("abc").to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn malformed_hashes_are_refused_saying_what_a_hash_is() {
        for bad in ["", "ba78", "sha256:", "sha256:zz", "md5:ba7816bf"] {
            let err = TokenHash::parse(bad).unwrap_err();
            assert!(err.contains("64 hex digits"), "{bad}: {err}");
        }
        let upper = format!("sha256:{}", "AB".repeat(32));
        assert!(TokenHash::parse(&upper).is_ok());
    }
}
