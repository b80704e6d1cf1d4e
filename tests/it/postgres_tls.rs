//! TLS between the coordinators and PostgreSQL: `sslmode` and its
//! certificate files in `--journal`, as libpq reads them. A throwaway server
//! with a certificate for `db.internal` only (not for 127.0.0.1), so that a
//! name check and a chain check can be told apart, and roles that may only
//! come in over TLS (one of them with a client certificate).

use sagad::{
    journal::{
        Journal, PgJournal,
        postgres::{
            NodeId, PgOptions, PgTarget,
            throwaway::{Cluster, ServerTlsFiles},
        },
    },
    proto::v1 as pb,
};

use crate::common::{
    self, Answer, FakeParticipant,
    certs::{Ca, Files, Validity},
    postgres::sql,
    process::SagadProcess,
};

/// The server, its CA's file, a wrong CA's file and a client certificate's
/// files (for role `certuser`).
struct Setup {
    cluster: Cluster,
    files: Files,
    ca: String,
    other_ca: String,
    client_cert: String,
    client_key: String,
}

async fn setup() -> Setup {
    let ca = Ca::new("database CA");
    let server = ca.leaf_for("db", &["db.internal"], Validity::Current);
    let client = ca.leaf_for("certuser", &["certuser"], Validity::Current);
    let tls = ServerTlsFiles {
        cert_pem: server.cert_pem.clone(),
        key_pem: server.key_pem.clone(),
        client_ca_pem: Some(ca.pem.clone()),
        hba: vec![
            "hostssl all certuser 127.0.0.1/32 cert".into(),
            "hostnossl all certuser 127.0.0.1/32 reject".into(),
            "hostnossl all tlsuser 127.0.0.1/32 reject".into(),
        ],
    };
    let cluster = tokio::task::spawn_blocking(move || Cluster::start_with_tls(&tls))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    // The superuser still comes in without TLS, to set up and to look.
    let admin = sql(&cluster.url("postgres")).await;
    for statement in [
        "CREATE ROLE tlsuser LOGIN SUPERUSER",
        "CREATE ROLE certuser LOGIN SUPERUSER",
        "CREATE DATABASE journal",
    ] {
        admin.batch_execute(statement).await.unwrap();
    }
    let files = Files::new();
    let path = |name: &str, pem: &str| files.write(name, pem).display().to_string();
    let (ca_file, other_file) = (
        path("ca.pem", &ca.pem),
        path("other-ca.pem", &Ca::new("someone else").pem),
    );
    let (client_cert, client_key) = (
        path("client.pem", &client.cert_pem),
        path("client.key", &client.key_pem),
    );
    Setup {
        cluster,
        files,
        ca: ca_file,
        other_ca: other_file,
        client_cert,
        client_key,
    }
}

async fn open(target: &str) -> Result<PgJournal, String> {
    let target = PgTarget::parse(target)?;
    let options = PgOptions::new(target, NodeId::new("node-1").unwrap(), "127.0.0.1:0");
    PgJournal::open(options)
        .await
        .map_err(|e| common::chain(&e))
}

/// Whether every session of `user` the server has is encrypted, and how many
/// there are.
async fn sessions_of(setup: &Setup, user: &str) -> (i64, bool) {
    let admin = sql(&setup.cluster.url("postgres")).await;
    let row = admin
        .query_one(
            "SELECT count(*), coalesce(bool_and(s.ssl), false)
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.usename = $1",
            &[&user],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_checks_the_database_server_as_its_sslmode_says() {
    let setup = setup().await;
    let port = setup.cluster.port();
    let at =
        |user: &str, query: &str| format!("postgres://{user}@127.0.0.1:{port}/journal?{query}");

    // verify-full: the chain and the name. The certificate names
    // db.internal, so that is the host; hostaddr says where it is.
    let full = format!(
        "host=db.internal hostaddr=127.0.0.1 port={port} user=tlsuser dbname=journal sslmode=verify-full sslrootcert='{}'",
        setup.ca
    );
    let journal = open(&full).await.unwrap();
    let (sessions, all_tls) = sessions_of(&setup, "tlsuser").await;
    assert!(
        sessions >= 1 && all_tls,
        "{sessions} sessions, all TLS: {all_tls}"
    );
    journal.close().await.unwrap();

    // By address, the name does not match: verify-full refuses, naming the
    // target; verify-ca (the chain only) connects.
    let err = open(&at(
        "tlsuser",
        &format!("sslmode=verify-full&sslrootcert={}", setup.ca),
    ))
    .await
    .err()
    .expect("the certificate does not name 127.0.0.1");
    assert!(
        err.contains("127.0.0.1") && err.contains("sslmode=verify-full"),
        "{err}"
    );
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    open(&at(
        "tlsuser",
        &format!("sslmode=verify-ca&sslrootcert={}", setup.ca),
    ))
    .await
    .unwrap()
    .close()
    .await
    .unwrap();

    // A CA that did not issue it: refused, by any mode that checks.
    for mode in ["verify-ca", "verify-full", "require"] {
        let err = open(&at(
            "tlsuser",
            &format!("sslmode={mode}&sslrootcert={}", setup.other_ca),
        ))
        .await
        .err()
        .unwrap_or_else(|| panic!("{mode} with the wrong CA connected"));
        assert!(err.to_lowercase().contains("certificate"), "{mode}: {err}");
    }

    // require and prefer without a CA: encrypted, the server not asked who
    // it is (libpq's meaning).
    for mode in ["require", "prefer"] {
        open(&at("tlsuser", &format!("sslmode={mode}")))
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"))
            .close()
            .await
            .unwrap();
    }
    // disable: the server lets tlsuser in over TLS only.
    let err = open(&at("tlsuser", "sslmode=disable"))
        .await
        .err()
        .expect("plaintext refused");
    assert!(err.contains("no encryption"), "{err}");

    // A client certificate, for a role the server authenticates by it.
    let with_cert = format!(
        "sslmode=verify-ca&sslrootcert={}&sslcert={}&sslkey={}",
        setup.ca, setup.client_cert, setup.client_key
    );
    open(&at("certuser", &with_cert))
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
    let err = open(&at(
        "certuser",
        &format!("sslmode=verify-ca&sslrootcert={}", setup.ca),
    ))
    .await
    .err()
    .expect("no client certificate, no entry");
    assert!(err.contains("certuser"), "{err}");

    // Files that are not there, or not PEM, stop the parse naming the file.
    let err = PgTarget::parse(&at(
        "tlsuser",
        "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
    ))
    .err()
    .unwrap();
    assert!(
        err.contains("/nonexistent/ca.pem") && err.contains("sslrootcert"),
        "{err}"
    );
    let junk = setup
        .files
        .write("junk.pem", "not a certificate")
        .display()
        .to_string();
    let err = PgTarget::parse(&at(
        "tlsuser",
        &format!("sslmode=verify-full&sslrootcert={junk}"),
    ))
    .err()
    .unwrap();
    assert!(err.contains(&junk), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_runs_sagas_over_a_verified_tls_journal() {
    let setup = setup().await;
    let url = format!(
        "postgres://tlsuser@127.0.0.1:{}/journal?sslmode=verify-ca&sslrootcert={}",
        setup.cluster.port(),
        setup.ca
    );
    let dir = tempfile::tempdir().unwrap();
    let shop = common::serve(FakeParticipant::new(|_| Answer::Ok)).await;
    let process = SagadProcess::spawn(
        dir.path(),
        &[("SAGAD_JOURNAL", &url), ("SAGAD_NODE_ID", "node-1")],
    );
    let mut client =
        pb::coordinator_client::CoordinatorClient::connect(format!("http://{}", process.addr))
            .await
            .unwrap();
    common::register_shop(&mut client, &shop, common::quick_retry(3, 3)).await;
    let done = common::start_order(&mut client, "{}", true).await;
    assert_eq!(common::state(&done), pb::SagaState::Completed);
    // Every session the coordinator holds (writer, heartbeat, reads) is TLS.
    let (sessions, all_tls) = sessions_of(&setup, "tlsuser").await;
    assert!(
        sessions >= 2 && all_tls,
        "{sessions} sessions, all TLS: {all_tls}"
    );
    let (status, stderr) = process.terminate();
    assert!(status.success(), "{stderr}");

    // A server the CA does not vouch for stops the start, saying so.
    let wrong = url.replace(&setup.ca, &setup.other_ca);
    let (code, stderr) = common::sagad_exit(&["--journal", &wrong], &[]).await;
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("cannot connect") && stderr.contains("certificate"),
        "{stderr}"
    );
}
