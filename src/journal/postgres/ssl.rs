//! libpq's TLS settings in a connection string, read before tokio-postgres
//! sees it: tokio-postgres knows `sslmode` only as `disable`, `prefer` and
//! `require`, and refuses `sslrootcert`, `sslcert` and `sslkey` as unknown.
//!
//! Both forms of a connection string are read (a URL's query, a key-value
//! string's pairs); the settings here are taken out, everything else is
//! handed on as it was written. `sslmode` means what it means to libpq
//! (`crate::tls::database_client_config` says how much of the server's
//! certificate each mode checks); `allow` is refused, since tokio-postgres
//! cannot try plaintext first and TLS after.

use std::{fmt, path::PathBuf};

use percent_encoding::percent_decode_str;

use crate::tls::{KeyPairFiles, PemFile, ServerCheck};

/// The TLS part of a connection string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SslSettings {
    pub mode: SslMode,
    /// `sslrootcert`: the CAs the server's certificate is checked against.
    pub root_cert: Option<PathBuf>,
    /// `sslcert` and `sslkey`: a client certificate, for servers that ask.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// libpq's `sslmode`, but `allow`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// TLS when the server offers it: libpq's default, and tokio-postgres's.
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, String> {
        Ok(match value {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            "allow" => {
                return Err(
                    "sslmode=allow is not supported (plaintext first, then TLS): use disable, prefer, require, verify-ca or verify-full"
                        .into(),
                );
            }
            other => {
                return Err(format!(
                    "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
                ));
            }
        })
    }

    /// What tokio-postgres is told: whether TLS is tried, and required.
    pub fn negotiation(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Tp;
        match self {
            Self::Disable => Tp::Disable,
            Self::Prefer => Tp::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => Tp::Require,
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        })
    }
}

impl SslSettings {
    /// How much of the server's certificate to check: as libpq, a root
    /// certificate given to `prefer` or `require` makes it check the chain.
    pub fn check(&self) -> ServerCheck {
        match self.mode {
            SslMode::VerifyFull => ServerCheck::Full,
            SslMode::VerifyCa => ServerCheck::Chain,
            _ if self.root_cert.is_some() => ServerCheck::Chain,
            _ => ServerCheck::None,
        }
    }

    /// The CA file, named as the operator gave it.
    pub fn ca(&self) -> Option<PemFile> {
        self.root_cert
            .as_ref()
            .map(|path| PemFile::new(path, "sslrootcert in --journal"))
    }

    /// The client certificate and key; one without the other is refused.
    pub fn identity(&self) -> Result<Option<KeyPairFiles>, String> {
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Ok(Some(KeyPairFiles {
                cert: PemFile::new(cert, "sslcert in --journal"),
                key: PemFile::new(key, "sslkey in --journal"),
            })),
            (None, None) => Ok(None),
            (Some(_), None) => Err("sslcert needs sslkey (the certificate's private key)".into()),
            (None, Some(_)) => {
                Err("sslkey needs sslcert (the certificate it is the key of)".into())
            }
        }
    }

    /// Takes `key=value` if it is one of these settings; false if it is not.
    fn take(&mut self, key: &str, value: String) -> Result<bool, String> {
        match key {
            "sslmode" => self.mode = SslMode::parse(&value)?,
            "sslrootcert" => self.root_cert = Some(value.into()),
            "sslcert" => self.cert = Some(value.into()),
            "sslkey" => self.key = Some(value.into()),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// `text` without its TLS settings, and the settings.
pub fn take_ssl_settings(text: &str) -> Result<(String, SslSettings), String> {
    let mut settings = SslSettings::default();
    let is_url = text.starts_with("postgres://") || text.starts_with("postgresql://");
    let rest = if is_url {
        let Some((base, query)) = text.split_once('?') else {
            return Ok((text.to_string(), settings));
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
            if !settings.take(&decode(key), decode(value))? {
                kept.push(pair);
            }
        }
        match kept.is_empty() {
            true => base.to_string(),
            false => format!("{base}?{}", kept.join("&")),
        }
    } else {
        let mut kept = Vec::new();
        for (key, value) in pairs(text)? {
            if !settings.take(&key, value.clone())? {
                kept.push(format!(
                    "{key}='{}'",
                    value.replace('\\', "\\\\").replace('\'', "\\'")
                ));
            }
        }
        kept.join(" ")
    };
    Ok((rest, settings))
}

/// A key-value connection string's pairs, as libpq reads them: `key = value`
/// with optional blanks around `=`, a value single-quoted to hold blanks,
/// `\` escaping the next character.
fn pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut chars = text.chars().peekable();
    let mut out = Vec::new();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!("'{key}' in the connection string has no '=value'"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    None => return Err(format!("the value of '{key}' has no closing quote")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                match c {
                    '\\' => value.extend(chars.next()),
                    c => value.push(c),
                }
            }
        }
        out.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_gives_up_its_tls_settings_and_keeps_the_rest() {
        let (rest, ssl) = take_ssl_settings(
            "postgres://u@h/db?target_session_attrs=read-write&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u@h/db?target_session_attrs=read-write");
        assert_eq!(ssl.mode, SslMode::VerifyFull);
        assert_eq!(ssl.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(ssl.check(), ServerCheck::Full);
        let (rest, ssl) = take_ssl_settings("postgres://u@h/db?sslmode=require").unwrap();
        assert_eq!(rest, "postgres://u@h/db");
        assert_eq!(ssl.check(), ServerCheck::None);
        let (rest, ssl) = take_ssl_settings("postgres://u@h/db").unwrap();
        assert_eq!(
            (rest.as_str(), ssl),
            ("postgres://u@h/db", SslSettings::default())
        );
    }

    #[test]
    fn a_key_value_string_gives_up_its_tls_settings_quoted_or_not() {
        let (rest, ssl) = take_ssl_settings(
            "host=a,b user=sagad sslmode = verify-ca sslrootcert='/my certs/ca.pem' password='it\\'s'",
        )
        .unwrap();
        assert_eq!(rest, "host='a,b' user='sagad' password='it\\'s'");
        assert_eq!(ssl.mode, SslMode::VerifyCa);
        assert_eq!(ssl.root_cert, Some(PathBuf::from("/my certs/ca.pem")));
        // What is left reads back as it was meant.
        let config: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(config.get_password(), Some(&b"it's"[..]));
        // libpq: a root certificate makes `require` check the chain.
        let (_, ssl) = take_ssl_settings("host=a sslmode=require sslrootcert=/ca.pem").unwrap();
        assert_eq!(ssl.check(), ServerCheck::Chain);
    }

    #[test]
    fn bad_tls_settings_are_refused_saying_what_to_write() {
        let err = take_ssl_settings("postgres://h/db?sslmode=allow").unwrap_err();
        assert!(
            err.contains("not supported") && err.contains("verify-full"),
            "{err}"
        );
        let err = take_ssl_settings("host=h sslmode=strict").unwrap_err();
        assert!(err.contains("sslmode=strict is not one of"), "{err}");
        let err = take_ssl_settings("host=h sslrootcert='/open").unwrap_err();
        assert!(err.contains("no closing quote"), "{err}");
        let (_, ssl) = take_ssl_settings("host=h sslcert=/c.pem").unwrap();
        assert!(ssl.identity().unwrap_err().contains("needs sslkey"));
    }
}
