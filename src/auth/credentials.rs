//! The tokens file: who may call, with which role, proven how.
//!
//! One entry a line, three fields separated by spaces; `#` starts a comment:
//!
//! ```text
//! # NAME      ROLE      CREDENTIAL
//! ops         admin     sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//! checkout    starter   sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae
//! payments    starter   cert:payments.internal
//! ```
//!
//! A credential is a token's hash (`sha256:…`, as `sagad auth token` prints
//! it) or a client certificate's identity (`cert:…`: one of its DNS or URI
//! subject alternative names, or its subject's common name; the certificate
//! must also pass the TLS handshake's verification against the client CA).
//!
//! Invariants:
//! - A file that does not parse is refused whole, naming the file and line:
//!   at start that stops the start, on a reload the previous table stays.
//! - A name may have several credentials (two tokens while one is rotated
//!   out), all with one role; a hash or a certificate identity appears once.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use super::{
    role::Role,
    tokens::{HASH_PREFIX, TokenHash},
};
use crate::saga::definition::validate_name;

/// How a certificate identity is written in the tokens file.
pub const CERT_PREFIX: &str = "cert:";

/// Why a tokens file was refused.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read the tokens file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tokens file {}, line {line}: {why}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        why: String,
    },
}

/// How an entry proves who it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// A bearer token, by its hash.
    Token(TokenHash),
    /// A verified client certificate with this identity.
    Certificate(String),
}

/// One line of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub role: Role,
    pub credential: Credential,
}

/// A parsed tokens file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    entries: Vec<Entry>,
}

impl Credentials {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<Self, CredentialsError> {
        let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses the text of a tokens file; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, CredentialsError> {
        let mut entries: Vec<Entry> = Vec::new();
        let mut roles: HashMap<String, Role> = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let bad = |why: String| CredentialsError::Line {
                path: path.to_path_buf(),
                line,
                why,
            };
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let entry = parse_entry(content).map_err(bad)?;
            if let Some(role) = roles.get(&entry.name)
                && *role != entry.role
            {
                return Err(bad(format!(
                    "'{}' has role {role} on an earlier line: one name, one role",
                    entry.name
                )));
            }
            if entries.iter().any(|e| e.credential == entry.credential) {
                return Err(bad(match &entry.credential {
                    Credential::Token(_) => "this token hash is on an earlier line too".into(),
                    Credential::Certificate(id) => {
                        format!("certificate identity '{id}' is on an earlier line too")
                    }
                }));
            }
            roles.insert(entry.name.clone(), entry.role);
            entries.push(entry);
        }
        Ok(Self { entries })
    }

    /// The entry whose token hash is `token`'s, if any. Every entry is
    /// compared, in constant time each, so the time taken does not say which
    /// entry matched or how close a guess came.
    pub fn by_token(&self, token: &str) -> Option<&Entry> {
        let presented = TokenHash::of(token);
        let mut found = None;
        for entry in &self.entries {
            if let Credential::Token(hash) = &entry.credential
                && hash.matches(&presented)
            {
                found = Some(entry);
            }
        }
        found
    }

    /// The entry of the first of `identities` (a verified certificate's
    /// names, see `certificate.rs`) that has one, and the identity it matched.
    pub fn by_certificate<'a>(&'a self, identities: &'a [String]) -> Option<(&'a Entry, &'a str)> {
        identities.iter().find_map(|identity| {
            self.entries
                .iter()
                .find(|e| matches!(&e.credential, Credential::Certificate(c) if c == identity))
                .map(|e| (e, identity.as_str()))
        })
    }

    /// How many entries there are, for logs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What it holds, for logs: "3 entries (2 tokens, 1 certificate identity)".
    pub fn describe(&self) -> String {
        let certs = self
            .entries
            .iter()
            .filter(|e| matches!(e.credential, Credential::Certificate(_)))
            .count();
        format!(
            "{} entries ({} tokens, {certs} certificate identities)",
            self.len(),
            self.len() - certs
        )
    }
}

/// `NAME ROLE CREDENTIAL`.
fn parse_entry(content: &str) -> Result<Entry, String> {
    let fields: Vec<&str> = content.split_whitespace().collect();
    let [name, role, credential] = fields[..] else {
        return Err(format!(
            "expected three fields, NAME ROLE CREDENTIAL (got {}); `sagad auth token NAME --role ROLE` prints a line",
            fields.len()
        ));
    };
    validate_name("name", name).map_err(|e| e.to_string())?;
    let role: Role = role.parse()?;
    let credential = if credential.starts_with(HASH_PREFIX) {
        Credential::Token(TokenHash::parse(credential)?)
    } else if let Some(identity) = credential.strip_prefix(CERT_PREFIX) {
        if identity.is_empty() {
            return Err("cert: needs the certificate's identity (a SAN or the subject CN)".into());
        }
        Credential::Certificate(identity.to_string())
    } else {
        return Err(format!(
            "'{credential}' is not a credential: write {HASH_PREFIX}HEX (a token's hash) or {CERT_PREFIX}IDENTITY (a client certificate)"
        ));
    };
    Ok(Entry {
        name: name.to_string(),
        role,
        credential,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_line(name: &str, role: &str, token: &str) -> String {
        format!("{name} {role} {}\n", TokenHash::of(token))
    }

    fn parse(text: &str) -> Result<Credentials, CredentialsError> {
        Credentials::parse(Path::new("tokens"), text)
    }

    #[test]
    fn tokens_and_certificates_map_to_their_entries() {
        let text = format!(
            "# comment\n\n{}{}payments starter cert:payments.internal # the service\n",
            hash_line("ops", "admin", "t-ops"),
            hash_line("ops", "admin", "t-ops-next"),
        );
        let creds = parse(&text).unwrap();
        assert_eq!(creds.len(), 3);
        assert_eq!(creds.by_token("t-ops").unwrap().name, "ops");
        assert_eq!(creds.by_token("t-ops-next").unwrap().role, Role::Admin);
        assert!(creds.by_token("t-nope").is_none());
        // A token that is a certificate identity's text proves nothing.
        assert!(creds.by_token("cert:payments.internal").is_none());
        let ids = vec!["other.example".to_string(), "payments.internal".to_string()];
        let (entry, matched) = creds.by_certificate(&ids).unwrap();
        assert_eq!(
            (entry.name.as_str(), matched),
            ("payments", "payments.internal")
        );
        assert!(creds.by_certificate(&ids[..1]).is_none());
        assert_eq!(
            creds.describe(),
            "3 entries (2 tokens, 1 certificate identities)"
        );
    }

    #[test]
    fn bad_lines_are_refused_naming_the_line() {
        let cases = [
            ("ops admin\n", "three fields"),
            ("ops root sha256:00\n", "not a role"),
            ("ops admin plaintext-token\n", "not a credential"),
            ("ops admin sha256:abc\n", "64 hex digits"),
            ("bad/name admin cert:x\n", "not valid"),
            ("ops admin cert:\n", "identity"),
        ];
        for (text, why) in cases {
            let err = parse(&format!("# header\n{text}")).unwrap_err().to_string();
            assert!(err.contains("line 2") && err.contains(why), "{text}: {err}");
        }
        let twice = format!(
            "{}{}",
            hash_line("a", "admin", "t"),
            hash_line("b", "reader", "t")
        );
        assert!(
            parse(&twice)
                .unwrap_err()
                .to_string()
                .contains("earlier line")
        );
        let two_roles = format!(
            "{}{}",
            hash_line("a", "admin", "t1"),
            hash_line("a", "reader", "t2")
        );
        assert!(
            parse(&two_roles)
                .unwrap_err()
                .to_string()
                .contains("one role")
        );
        let missing = Credentials::read(Path::new("/nonexistent/tokens")).unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/tokens"));
    }
}
