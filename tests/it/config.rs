//! `sagad::config`: layers apply as defaults → file → env → flags, and a file
//! with a key that is not a setting is refused, naming the file and the key.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use sagad::{
    config::{Config, ConfigError, HistoryAfter, LogFormat, Retention, Settings, TlsSettings},
    journal::postgres::{NodeId, PgTarget},
    participant::guard::AllowList,
};

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// A config file in a temp dir; the dir lives as long as the returned guard.
fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sagad.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn each_layer_overrides_the_ones_below_it_field_by_field() {
    let (dir, path) = file(
        r#"
listen = "127.0.0.1:7001"
data_dir = "/from/file"
sagas = "/sagas/from/file"
max_payload_bytes = 1000
shutdown_grace = "1s"
default_timeout = "1s"
metrics_listen = "127.0.0.1:9100"
on_failed_webhook = "http://127.0.0.1:9/from-file"
log_format = "json"
retention = "30d"
history_after = "1h"
"#,
    );
    let env = env(&[
        ("SAGAD_DATA_DIR", "/from/env"),
        ("SAGAD_MAX_PAYLOAD_BYTES", "2000"),
        ("SAGAD_SHUTDOWN_GRACE", "2s"),
        ("SAGAD_DEFAULT_TIMEOUT", "2s"),
        ("SAGAD_METRICS_LISTEN", ":9101"),
        ("SAGAD_ON_FAILED_WEBHOOK", "http://127.0.0.1:9/from-env"),
        ("SAGAD_RETENTION", "7d"),
        ("SAGAD_HISTORY_AFTER", "never"),
    ]);
    let flags = Settings {
        shutdown_grace: Some(Duration::from_secs(3)),
        default_timeout: Some(Duration::from_secs(3)),
        metrics_listen: Some(addr("127.0.0.1:9102")),
        retention: Some(Retention::For(Duration::from_secs(36 * 3600))),
        ..Settings::default()
    };
    let config = Config::load(Some(&path), env, flags).unwrap();
    assert_eq!(
        config,
        Config {
            // file only
            listen: addr("127.0.0.1:7001"),
            sagas: Some(PathBuf::from("/sagas/from/file")),
            log_format: LogFormat::Json,
            // never set
            otlp_endpoint: None,
            disk_reserve: Config::default().disk_reserve,
            auth_tokens: None,
            insecure_no_auth: false,
            journal: None,
            node_id: None,
            lease_ttl: Config::default().lease_ttl,
            participant_allow: None,
            // env over file
            data_dir: PathBuf::from("/from/env"),
            max_payload_bytes: 2000,
            on_failed_webhook: Some("http://127.0.0.1:9/from-env".parse().unwrap()),
            // flags over env over file
            shutdown_grace: Duration::from_secs(3),
            default_timeout: Duration::from_secs(3),
            metrics_listen: Some(addr("127.0.0.1:9102")),
            retention: Retention::For(Duration::from_secs(36 * 3600)),
            // env over file
            history_after: HistoryAfter::Never,
            tls: TlsSettings::default(),
        }
    );
    drop(dir);
}

#[test]
fn the_disk_reserve_is_a_size_from_any_layer_and_a_bad_one_names_its_source() {
    let (_dir, path) = file("disk_reserve = \"1GiB\"\n");
    let config = Config::load(Some(&path), env(&[]), Settings::default()).unwrap();
    assert_eq!(config.disk_reserve, 1 << 30);
    let config = Config::load(
        None,
        env(&[("SAGAD_DISK_RESERVE", "0")]),
        Settings::default(),
    )
    .unwrap();
    assert_eq!(config.disk_reserve, 0, "no reserve at all");
    assert_eq!(Config::default().disk_reserve, 64 << 20);
    let err = Config::load(
        None,
        env(&[("SAGAD_DISK_RESERVE", "12 parsecs")]),
        Settings::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("SAGAD_DISK_RESERVE") && err.contains("unknown unit"),
        "{err}"
    );
}

#[test]
fn with_no_layers_the_defaults_hold() {
    let config = Config::load(None, env(&[]), Settings::default()).unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.listen, addr("127.0.0.1:50051"));
    assert_eq!(config.max_payload_bytes, 1024 * 1024);
    assert_eq!(config.metrics_listen, None, "metrics are off by default");
    assert_eq!(config.on_failed_webhook, None, "no webhook by default");
}

#[test]
fn bad_metrics_and_webhook_values_name_their_source_and_say_why() {
    let (_dir, path) = file("metrics_listen = \"nonsense\"\n");
    let err = Config::load(Some(&path), env(&[]), Settings::default()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!("{}: metrics_listen", path.display())),
        "{text}"
    );
    assert!(
        text.contains("nonsense") && text.contains("host:port"),
        "{text}"
    );

    let err = Config::load(
        None,
        env(&[("SAGAD_ON_FAILED_WEBHOOK", "ftp://x")]),
        Settings::default(),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("SAGAD_ON_FAILED_WEBHOOK"), "{text}");
    assert!(text.contains("not an http:// or https:// URL"), "{text}");

    let (_dir, path) = file("on_failed_webhook = \"mailto:ops@example.com\"\n");
    let err = Config::load(Some(&path), env(&[]), Settings::default()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("on_failed_webhook"), "{text}");
    assert!(text.contains("not an http:// or https:// URL"), "{text}");

    let (_dir, path) = file("metrics_listen = 9100\n");
    let err = Config::load(Some(&path), env(&[]), Settings::default()).unwrap_err();
    assert!(err.to_string().contains("host:port"), "{err}");
}

#[test]
fn flags_beat_env_beat_file_for_the_same_key() {
    let (_dir, path) = file("listen = \"127.0.0.1:1001\"\n");
    let from_env = env(&[("SAGAD_LISTEN", ":1002")]);
    let only_file = Config::load(Some(&path), env(&[]), Settings::default()).unwrap();
    assert_eq!(only_file.listen, addr("127.0.0.1:1001"));
    let file_and_env = Config::load(Some(&path), from_env.clone(), Settings::default()).unwrap();
    assert_eq!(file_and_env.listen, addr("127.0.0.1:1002"));
    let flags = Settings {
        listen: Some(addr("127.0.0.1:1003")),
        ..Settings::default()
    };
    let all = Config::load(Some(&path), from_env, flags).unwrap();
    assert_eq!(all.listen, addr("127.0.0.1:1003"));
}

#[test]
fn an_unknown_key_is_refused_naming_the_file_and_the_key() {
    let (_dir, path) = file("listen = \":0\"\ndatadir = \"./data\"\n");
    let err = Config::load(Some(&path), env(&[]), Settings::default()).unwrap_err();
    match &err {
        ConfigError::UnknownKey { path: p, key } => {
            assert_eq!(p, &path);
            assert_eq!(key, "datadir");
        }
        other => panic!("expected UnknownKey, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("`datadir`"), "{text}");
    assert!(text.contains("data_dir"), "lists the known keys: {text}");
}

#[test]
fn bad_values_name_their_source() {
    let (_dir, path) = file("listen = \"nowhere\"\n");
    let err = Config::load(Some(&path), env(&[]), Settings::default()).unwrap_err();
    assert!(matches!(err, ConfigError::BadValue { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("{}: listen", path.display())),
        "{text}"
    );
    assert!(text.contains("nowhere"), "{text}");

    let err = Config::load(
        None,
        env(&[("SAGAD_SHUTDOWN_GRACE", "a while")]),
        Settings::default(),
    )
    .unwrap_err();
    assert!(err.to_string().starts_with("SAGAD_SHUTDOWN_GRACE"), "{err}");

    let (_dir, path) = file("max_payload_bytes = \"lots\"\n");
    let err = Config::load(Some(&path), env(&[]), Settings::default()).unwrap_err();
    assert!(err.to_string().contains("max_payload_bytes"), "{err}");

    let (_dir, path) = file("retention = \"0s\"\n");
    let err = Config::load(Some(&path), env(&[]), Settings::default()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!("{}: retention", path.display())),
        "{text}"
    );
    assert!(text.contains("greater than 0"), "{text}");
    let err = Config::load(
        None,
        env(&[("SAGAD_RETENTION", "abc")]),
        Settings::default(),
    )
    .unwrap_err();
    assert!(err.to_string().starts_with("SAGAD_RETENTION"), "{err}");

    // The default step timeout keeps the floor a step's own timeout keeps.
    let (_dir, path) = file("default_timeout = \"1ns\"\n");
    let err = Config::load(Some(&path), env(&[]), Settings::default()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!("{}: default_timeout", path.display()))
            && text.contains("at least 10ms"),
        "{text}"
    );
}

#[test]
fn a_file_that_is_not_toml_or_not_there_is_refused() {
    let (_dir, path) = file("listen = \n");
    let err = Config::load(Some(&path), env(&[]), Settings::default()).unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { .. }), "{err:?}");
    assert!(
        err.to_string().contains("line 1"),
        "points at the line: {err}"
    );

    let missing = PathBuf::from("/nonexistent/sagad.toml");
    let err = Config::load(Some(&missing), env(&[]), Settings::default()).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/sagad.toml"), "{err}");
}

#[test]
fn the_server_config_carries_every_setting() {
    let config = Config {
        listen: addr("127.0.0.1:0"),
        data_dir: PathBuf::from("/d"),
        sagas: None,
        max_payload_bytes: 77,
        shutdown_grace: Duration::from_secs(4),
        default_timeout: Duration::from_secs(6),
        metrics_listen: Some(addr("127.0.0.1:0")),
        on_failed_webhook: Some("http://hooks.internal/sagad".parse().unwrap()),
        // Logging settings are the binary's, not the server's.
        log_format: LogFormat::Json,
        otlp_endpoint: None,
        retention: Retention::For(Duration::from_secs(60)),
        history_after: HistoryAfter::After(Duration::from_secs(90)),
        disk_reserve: 123,
        auth_tokens: Some(PathBuf::from("/etc/sagad/tokens")),
        insecure_no_auth: false,
        journal: Some(PgTarget::parse("postgres://sagad@db:5433/sagad").unwrap()),
        node_id: Some(NodeId::new("node-7").unwrap()),
        lease_ttl: Duration::from_secs(4),
        participant_allow: Some(AllowList::parse(["10.0.0.0/8"]).unwrap()),
        tls: TlsSettings {
            tls_cert: Some(PathBuf::from("/c.pem")),
            tls_key: Some(PathBuf::from("/k.pem")),
            ..TlsSettings::default()
        },
    };
    let server = config.server_config().unwrap();
    assert_eq!(server.listen, addr("127.0.0.1:0"));
    assert_eq!(server.data_dir, PathBuf::from("/d"));
    assert_eq!(server.engine.max_payload_bytes, 77);
    assert_eq!(server.engine.shutdown_grace, Duration::from_secs(4));
    assert_eq!(server.engine.defaults.timeout, Duration::from_secs(6));
    assert_eq!(server.metrics_listen, Some(addr("127.0.0.1:0")));
    assert_eq!(
        server.on_failed_webhook.unwrap().to_string(),
        "http://hooks.internal/sagad"
    );
    assert_eq!(server.retention, Some(Duration::from_secs(60)));
    assert_eq!(server.history_after, Some(Duration::from_secs(90)));
    assert_eq!(server.disk_reserve, 123);
    assert_eq!(server.auth_tokens, Some(PathBuf::from("/etc/sagad/tokens")));
    let postgres = server.postgres.expect("the PostgreSQL journal");
    assert_eq!(
        postgres.target.to_string(),
        "postgres://sagad@db:5433/sagad"
    );
    assert_eq!(postgres.node.as_str(), "node-7");
    assert_eq!(postgres.lease_ttl, Duration::from_secs(4));
    assert_eq!(
        server.engine.participant_allow,
        Some(AllowList::parse(["10.0.0.0/8"]).unwrap())
    );
    let api = server.tls.api.unwrap();
    assert_eq!(api.identity.cert.path, PathBuf::from("/c.pem"));
    assert_eq!(
        server.tls.metrics,
        Some(api),
        "metrics share the API's pair"
    );
    let forever = Config {
        retention: Retention::Forever,
        history_after: HistoryAfter::Never,
        ..config
    };
    let server = forever.server_config().unwrap();
    assert_eq!((server.retention, server.history_after), (None, None));
    assert_eq!(
        Config::default().history_after,
        HistoryAfter::After(Duration::from_secs(600)),
        "finished sagas move to the history tier ten minutes after their end by default"
    );
}

#[test]
fn tls_settings_layer_like_the_others_and_must_come_in_pairs() {
    let (dir, path) = file(
        r#"
tls_cert = "certs/server.pem"
tls_key = "certs/server.key"
participant_ca = "/etc/ssl/private-ca.pem"

[[participant_tls]]
origin = "https://payments.internal:8443"
cert = "certs/to-payments.pem"
key = "certs/to-payments.key"
"#,
    );
    let flags = Settings {
        tls: TlsSettings {
            tls_client_ca: Some(PathBuf::from("/flags/clients.pem")),
            ..TlsSettings::default()
        },
        ..Settings::default()
    };
    let env = env(&[("SAGAD_TLS_KEY", "/env/server.key")]);
    let config = Config::load(Some(&path), env, flags).unwrap();
    let tls = config.server_config().unwrap().tls;
    let api = tls.api.unwrap();
    assert_eq!(api.identity.cert.path, dir.path().join("certs/server.pem"));
    assert_eq!(api.identity.key.path, PathBuf::from("/env/server.key"));
    assert_eq!(
        api.client_ca.unwrap().path,
        PathBuf::from("/flags/clients.pem")
    );
    assert_eq!(tls.metrics, None, "no metrics listener");
    let origin = &tls.participants.origins[0];
    assert_eq!(origin.origin, "https://payments.internal:8443");
    assert_eq!(
        origin.identity.as_ref().unwrap().cert.path,
        dir.path().join("certs/to-payments.pem")
    );

    let err = Config::load(
        None,
        self::env(&[("SAGAD_TLS_CERT", "/c.pem")]),
        Settings::default(),
    )
    .unwrap_err();
    assert!(matches!(err, ConfigError::Incomplete(_)), "{err:?}");
    assert!(err.to_string().contains("--tls-key"), "{err}");
}
