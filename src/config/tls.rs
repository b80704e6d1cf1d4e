//! The TLS settings of `sagad serve`: one layer's worth ([`TlsSettings`], every
//! field optional, layered like every other setting), and the checks that turn
//! the merged layers into a [`TlsConfig`] ([`TlsSettings::resolve`]).
//!
//! | key | flag | env |
//! | --- | --- | --- |
//! | `tls_cert`, `tls_key` | `--tls-cert`, `--tls-key` | `SAGAD_TLS_CERT`, `SAGAD_TLS_KEY` |
//! | `tls_client_ca` | `--tls-client-ca` | `SAGAD_TLS_CLIENT_CA` |
//! | `metrics_tls_cert`, `metrics_tls_key` | `--metrics-tls-cert`, `--metrics-tls-key` | `SAGAD_METRICS_TLS_CERT`, `SAGAD_METRICS_TLS_KEY` |
//! | `participant_ca` | `--participant-ca` | `SAGAD_PARTICIPANT_CA` |
//! | `participant_cert`, `participant_key` | `--participant-cert`, `--participant-key` | `SAGAD_PARTICIPANT_CERT`, `SAGAD_PARTICIPANT_KEY` |
//! | `[[participant_tls]]` (`origin`, `ca`, `cert`, `key`) | file only | file only |
//!
//! Invariants of a resolved configuration:
//! - A certificate always comes with its key (and a key with its certificate).
//! - A client CA (mTLS) only with a listener certificate: mTLS is TLS.
//! - The metrics listener uses its own pair if given, else the gRPC
//!   listener's; the client CA applies to both, so one trust policy covers
//!   every listener. (The web UI listener, when it lands, the same way.)
//! - Per-origin participant settings are keyed by [`origin_key`], each
//!   origin at most once.

use std::path::{Path, PathBuf};

use super::ConfigError;
use crate::tls::{
    KeyPairFiles, ListenerTls, OriginTls, ParticipantTls, PemFile, TlsConfig, origin_key,
};

/// The TLS keys of a settings file, in the order they are documented.
pub const KEYS: [&str; 8] = [
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "metrics_tls_cert",
    "metrics_tls_key",
    "participant_ca",
    "participant_cert",
    "participant_key",
];

/// The environment variables, one per key, in the order of [`KEYS`].
pub const ENV_VARS: [&str; 8] = [
    "SAGAD_TLS_CERT",
    "SAGAD_TLS_KEY",
    "SAGAD_TLS_CLIENT_CA",
    "SAGAD_METRICS_TLS_CERT",
    "SAGAD_METRICS_TLS_KEY",
    "SAGAD_PARTICIPANT_CA",
    "SAGAD_PARTICIPANT_CERT",
    "SAGAD_PARTICIPANT_KEY",
];

/// The file-only key of per-origin participant settings: an array of tables,
/// because a list of records has no sensible flag or variable form.
pub const ORIGINS_KEY: &str = "participant_tls";

/// The fields of one `[[participant_tls]]` table.
const ORIGIN_FIELDS: [&str; 4] = ["origin", "ca", "cert", "key"];

/// The TLS settings of one layer; `None`: this layer does not say.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TlsSettings {
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    pub metrics_tls_cert: Option<PathBuf>,
    pub metrics_tls_key: Option<PathBuf>,
    pub participant_ca: Option<PathBuf>,
    pub participant_cert: Option<PathBuf>,
    pub participant_key: Option<PathBuf>,
    /// Per-origin settings (file only); a layer that has them replaces the
    /// whole list.
    pub participant_tls: Option<Vec<OriginTls>>,
}

impl TlsSettings {
    /// Sets `key` (one of [`KEYS`]) to `path`.
    pub(super) fn set(&mut self, key: &str, path: PathBuf) {
        let field = match key {
            "tls_cert" => &mut self.tls_cert,
            "tls_key" => &mut self.tls_key,
            "tls_client_ca" => &mut self.tls_client_ca,
            "metrics_tls_cert" => &mut self.metrics_tls_cert,
            "metrics_tls_key" => &mut self.metrics_tls_key,
            "participant_ca" => &mut self.participant_ca,
            "participant_cert" => &mut self.participant_cert,
            "participant_key" => &mut self.participant_key,
            other => unreachable!("set() is only called with tls::KEYS, not {other:?}"), // faulty code
        };
        *field = Some(path);
    }

    /// Lays `layer` over these settings: its values win.
    pub(super) fn apply(&mut self, layer: TlsSettings) {
        let TlsSettings {
            tls_cert,
            tls_key,
            tls_client_ca,
            metrics_tls_cert,
            metrics_tls_key,
            participant_ca,
            participant_cert,
            participant_key,
            participant_tls,
        } = layer;
        let pairs = [
            (&mut self.tls_cert, tls_cert),
            (&mut self.tls_key, tls_key),
            (&mut self.tls_client_ca, tls_client_ca),
            (&mut self.metrics_tls_cert, metrics_tls_cert),
            (&mut self.metrics_tls_key, metrics_tls_key),
            (&mut self.participant_ca, participant_ca),
            (&mut self.participant_cert, participant_cert),
            (&mut self.participant_key, participant_key),
        ];
        for (field, value) in pairs {
            if value.is_some() {
                *field = value;
            }
        }
        if participant_tls.is_some() {
            self.participant_tls = participant_tls;
        }
    }

    /// The TLS configuration these (merged) settings describe; `metrics_on`
    /// says whether a metrics listener is configured at all.
    pub fn resolve(&self, metrics_on: bool) -> Result<TlsConfig, ConfigError> {
        let api = pair(&self.tls_cert, &self.tls_key, "--tls-cert", "--tls-key")?;
        let client_ca = self
            .tls_client_ca
            .as_ref()
            .map(|p| PemFile::new(p, "--tls-client-ca"));
        if client_ca.is_some() && api.is_none() {
            return Err(incomplete(
                "--tls-client-ca (tls_client_ca) needs --tls-cert and --tls-key: mTLS is TLS with client certificates",
            ));
        }
        let own_metrics = pair(
            &self.metrics_tls_cert,
            &self.metrics_tls_key,
            "--metrics-tls-cert",
            "--metrics-tls-key",
        )?;
        if own_metrics.is_some() && !metrics_on {
            return Err(incomplete(
                "--metrics-tls-cert (metrics_tls_cert) is set but --metrics-listen is not: there is no metrics endpoint to serve over TLS",
            ));
        }
        let listener = |identity: KeyPairFiles| ListenerTls {
            identity,
            client_ca: client_ca.clone(),
        };
        let metrics = own_metrics
            .or_else(|| api.clone())
            .filter(|_| metrics_on)
            .map(listener);
        let participants = ParticipantTls {
            ca: self
                .participant_ca
                .as_ref()
                .map(|p| PemFile::new(p, "--participant-ca")),
            identity: pair(
                &self.participant_cert,
                &self.participant_key,
                "--participant-cert",
                "--participant-key",
            )?,
            origins: self.participant_tls.clone().unwrap_or_default(),
        };
        Ok(TlsConfig {
            api: api.map(listener),
            metrics,
            participants,
        })
    }
}

fn incomplete(why: &str) -> ConfigError {
    ConfigError::Incomplete(why.to_string())
}

/// A certificate and its key, both or neither.
fn pair(
    cert: &Option<PathBuf>,
    key: &Option<PathBuf>,
    cert_flag: &str,
    key_flag: &str,
) -> Result<Option<KeyPairFiles>, ConfigError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(KeyPairFiles {
            cert: PemFile::new(cert, cert_flag),
            key: PemFile::new(key, key_flag),
        })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(incomplete(&format!(
            "{cert_flag} is set without {key_flag}: a certificate needs its private key"
        ))),
        (None, Some(_)) => Err(incomplete(&format!(
            "{key_flag} is set without {cert_flag}: a private key needs its certificate"
        ))),
    }
}

/// Reads the `[[participant_tls]]` tables of the settings file `path`;
/// relative paths are relative to `base`, the file's directory.
pub(super) fn origins_from_toml(
    path: &Path,
    base: &Path,
    value: &toml::Value,
) -> Result<Vec<OriginTls>, ConfigError> {
    let bad = |value: String, why: String| ConfigError::BadValue {
        origin: format!("{}: {ORIGINS_KEY}", path.display()),
        value,
        why,
    };
    let tables = value.as_array().ok_or_else(|| {
        bad(
            value.to_string(),
            "expected [[participant_tls]] tables with origin, ca, cert and key".into(),
        )
    })?;
    let mut origins: Vec<OriginTls> = Vec::new();
    for table in tables {
        let Some(table) = table.as_table() else {
            return Err(bad(table.to_string(), "expected a table".into()));
        };
        if let Some(unknown) = table.keys().find(|k| !ORIGIN_FIELDS.contains(&k.as_str())) {
            return Err(bad(
                table.to_string(),
                format!(
                    "unknown field `{unknown}` (known: {})",
                    ORIGIN_FIELDS.join(", ")
                ),
            ));
        }
        let text = |field: &str| -> Result<Option<String>, ConfigError> {
            match table.get(field) {
                None => Ok(None),
                Some(toml::Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(bad(other.to_string(), format!("{field} must be a string"))),
            }
        };
        let origin = text("origin")?
            .ok_or_else(|| bad(table.to_string(), "every table needs an origin".into()))
            .and_then(|o| origin_key(&o).map_err(|why| bad(format!("{o:?}"), why)))?;
        if origins.iter().any(|o| o.origin == origin) {
            return Err(bad(
                format!("{origin:?}"),
                "this origin has two tables".into(),
            ));
        }
        let file = |field: &str| -> Result<Option<PemFile>, ConfigError> {
            Ok(text(field)?.map(|p| {
                PemFile::new(
                    base.join(p),
                    format!("{}: {ORIGINS_KEY} {origin} {field}", path.display()),
                )
            }))
        };
        let identity = match (file("cert")?, file("key")?) {
            (Some(cert), Some(key)) => Some(KeyPairFiles { cert, key }),
            (None, None) => None,
            _ => {
                return Err(bad(
                    format!("{origin:?}"),
                    "cert and key go together".into(),
                ));
            }
        };
        origins.push(OriginTls {
            ca: file("ca")?,
            identity,
            origin,
        });
    }
    Ok(origins)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(pairs: &[(&str, &str)]) -> TlsSettings {
        let mut settings = TlsSettings::default();
        for (key, path) in pairs {
            settings.set(key, PathBuf::from(path));
        }
        settings
    }

    #[test]
    fn metrics_share_the_api_pair_and_the_client_ca_unless_given_their_own() {
        let shared = paths(&[("tls_cert", "c"), ("tls_key", "k"), ("tls_client_ca", "ca")]);
        let config = shared.resolve(true).unwrap();
        assert_eq!(config.metrics, config.api);
        assert_eq!(
            config.api.unwrap().client_ca.unwrap().setting,
            "--tls-client-ca"
        );
        assert_eq!(shared.resolve(false).unwrap().metrics, None);
        let mut own = shared.clone();
        own.apply(paths(&[
            ("metrics_tls_cert", "mc"),
            ("metrics_tls_key", "mk"),
        ]));
        let metrics = own.resolve(true).unwrap().metrics.unwrap();
        assert_eq!(metrics.identity.cert.path, PathBuf::from("mc"));
        assert!(metrics.client_ca.is_some());
    }

    #[test]
    fn halves_of_pairs_and_lone_client_cas_are_refused_naming_the_flags() {
        for (settings, says) in [
            (
                paths(&[("tls_cert", "c")]),
                "--tls-cert is set without --tls-key",
            ),
            (
                paths(&[("tls_key", "k")]),
                "--tls-key is set without --tls-cert",
            ),
            (paths(&[("tls_client_ca", "ca")]), "mTLS is TLS"),
            (
                paths(&[("participant_key", "k")]),
                "--participant-key is set",
            ),
            (
                paths(&[("metrics_tls_cert", "c"), ("metrics_tls_key", "k")]),
                "--metrics-listen is not",
            ),
        ] {
            let err = settings.resolve(false).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn origin_tables_are_checked_and_normalised() {
        let read = |text: &str| {
            let table: toml::Table = text.parse().unwrap();
            origins_from_toml(
                Path::new("/etc/s.toml"),
                Path::new("/etc"),
                &table[ORIGINS_KEY],
            )
        };
        let origins = read(
            "[[participant_tls]]\norigin = \"https://Pay:8443\"\nca = \"ca.pem\"\n\
             [[participant_tls]]\norigin = \"https://ship\"\ncert = \"c\"\nkey = \"/k\"\n",
        )
        .unwrap();
        assert_eq!(origins[0].origin, "https://pay:8443");
        assert_eq!(
            origins[0].ca.as_ref().unwrap().path,
            PathBuf::from("/etc/ca.pem")
        );
        assert!(origins[0].identity.is_none());
        assert_eq!(origins[1].origin, "https://ship:443");
        assert_eq!(
            origins[1].identity.as_ref().unwrap().key.path,
            PathBuf::from("/k")
        );
        for (text, says) in [
            ("[[participant_tls]]\nca = \"x\"", "needs an origin"),
            ("[[participant_tls]]\norigin = \"http://p:1\"", "https://"),
            (
                "[[participant_tls]]\norigin = \"https://p:1\"\ncert = \"c\"",
                "go together",
            ),
            (
                "[[participant_tls]]\norigin = \"https://p:1\"\ncerts = \"c\"",
                "unknown field",
            ),
            (
                "[[participant_tls]]\norigin = \"https://p:1\"\n[[participant_tls]]\norigin = \"https://P:1\"",
                "two tables",
            ),
            ("participant_tls = \"x\"", "expected [[participant_tls]]"),
        ] {
            let err = read(text).unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
            assert!(err.starts_with("/etc/s.toml: participant_tls"), "{err}");
        }
    }
}
