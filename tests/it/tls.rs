//! TLS end to end over loopback, with certificates the tests make
//! (`common::certs`): the gRPC listener with and without mTLS (a good client,
//! no client certificate, a wrong CA, expired certificates), `/metrics` over
//! TLS, `https://` participants (a private CA, a client certificate, server
//! wide and per origin), the CLI against a TLS server, and certificate
//! rotation by SIGHUP in a real `sagad` process.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Command, Output},
    sync::Arc,
};

use sagad::{
    engine::EngineConfig,
    proto::v1::{self as pb, coordinator_client::CoordinatorClient},
    tls::{KeyPairFiles, ListenerTls, OriginTls, ParticipantTls, TlsConfig},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{
    TlsConnector,
    rustls::{
        ClientConfig, RootCertStore,
        pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
    },
};
use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig,
};

use crate::common::{
    certs::{Ca, Files, Leaf, Validity},
    process::SagadProcess,
    text, *,
};

/// A client TLS configuration trusting `ca`, presenting `identity` if any.
fn trusting(ca: &Ca, identity: Option<&Leaf>) -> ClientTlsConfig {
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca.pem));
    match identity {
        Some(leaf) => tls.identity(Identity::from_pem(&leaf.cert_pem, &leaf.key_pem)),
        None => tls,
    }
}

/// Connects over TLS and makes one call; the error says why it failed.
async fn call(addr: SocketAddr, tls: ClientTlsConfig) -> Result<(), String> {
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| chain(&e))?
        .connect()
        .await
        .map_err(|e| chain(&e))?;
    CoordinatorClient::new(channel)
        .list_definitions(pb::ListDefinitionsRequest {})
        .await
        .map(drop)
        .map_err(|status| format!("{status:?}: {}", chain(&status)))
}

/// A coordinator whose gRPC listener has `api`'s TLS.
async fn tls_server(api: ListenerTls) -> TestServer {
    let tls = TlsConfig {
        api: Some(api),
        ..TlsConfig::default()
    };
    server_with(tls, false).await
}

async fn server_with(tls: TlsConfig, metrics: bool) -> TestServer {
    let extras = Extras {
        metrics_listen: metrics.then(|| "127.0.0.1:0".parse().unwrap()),
        tls,
        ..Extras::default()
    };
    TestServer::start_with_extras(vec![order_fulfillment()], EngineConfig::default(), extras).await
}

#[tokio::test]
async fn tls_serves_clients_that_trust_its_ca_and_refuses_the_others() {
    let (ca, files) = (Ca::new("sagad CA"), Files::new());
    let api = files.listener(&ca.current("sagad"), None);
    let server = tls_server(api).await;
    call(server.addr, trusting(&ca, None)).await.unwrap();

    let stranger = Ca::new("another CA");
    let refused = call(server.addr, trusting(&stranger, None))
        .await
        .unwrap_err();
    assert!(refused.contains("UnknownIssuer"), "{refused}");

    // A plaintext client gets no gRPC answer from a TLS listener.
    let plaintext = async {
        let mut client = CoordinatorClient::connect(format!("http://{}", server.addr))
            .await
            .map_err(|e| chain(&e))?;
        client
            .list_definitions(pb::ListDefinitionsRequest {})
            .await
            .map_err(|s| s.to_string())
    };
    assert!(plaintext.await.is_err(), "plaintext must not be served");
    // Refusals leave the listener serving.
    call(server.addr, trusting(&ca, None)).await.unwrap();
}

#[tokio::test]
async fn an_expired_server_certificate_is_refused_by_its_clients() {
    let (ca, files) = (Ca::new("sagad CA"), Files::new());
    let api = files.listener(&ca.leaf("sagad", Validity::Expired), None);
    let server = tls_server(api).await;
    let refused = call(server.addr, trusting(&ca, None)).await.unwrap_err();
    assert!(refused.to_lowercase().contains("expired"), "{refused}");
}

#[tokio::test]
async fn mtls_refuses_at_the_handshake_every_client_without_a_good_certificate() {
    let (ca, clients, files) = (Ca::new("sagad CA"), Ca::new("client CA"), Files::new());
    let api = files.listener(&ca.current("sagad"), Some(&clients));
    let server = tls_server(api).await;
    let stranger = Ca::new("another client CA");
    for (who, identity, alert) in [
        ("no certificate", None, "CertificateRequired"),
        (
            "a certificate from another CA",
            Some(stranger.current("mallory")),
            "UnknownCA",
        ),
        (
            "an expired certificate",
            Some(clients.leaf("old-service", Validity::Expired)),
            "CertificateExpired",
        ),
    ] {
        let refused = refusal(server.addr, &ca, identity.as_ref()).await;
        assert!(
            refused.contains(&format!("received fatal alert: {alert}")),
            "{who}: {refused}"
        );
        // No gRPC call gets through either.
        let call = call(server.addr, trusting(&ca, identity.as_ref())).await;
        assert!(call.is_err(), "{who} was served");
    }
    let good = clients.current("billing");
    call(server.addr, trusting(&ca, Some(&good))).await.unwrap();
}

/// How the server refuses a TLS client presenting `identity`: in TLS 1.3 a
/// server judges the client's certificate after the client's side of the
/// handshake is done, and its alert is what the client reads first. So this
/// sends the HTTP/2 preface and reads, which a server that accepted the
/// client answers with its SETTINGS frame.
async fn refusal(addr: SocketAddr, ca: &Ca, identity: Option<&Leaf>) -> String {
    let mut tls = match connect_tls(addr, ca, identity, b"h2").await {
        Ok(tls) => tls,
        Err(e) => return e.to_string(),
    };
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
    let mut first_frame = [0u8; 9];
    let read = async {
        tls.write_all(preface).await?;
        tls.read_exact(&mut first_frame).await
    };
    match read.await {
        Ok(_) => panic!("the server accepted the client"),
        Err(e) => e.to_string(),
    }
}

/// A raw TLS connection to `addr`, trusting `ca`, presenting `identity` if
/// given, offering `alpn`.
async fn connect_tls(
    addr: SocketAddr,
    ca: &Ca,
    identity: Option<&Leaf>,
    alpn: &[u8],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(
        CertificateDer::pem_slice_iter(ca.pem.as_bytes()).map(Result::unwrap),
    );
    let config = ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match identity {
        Some(leaf) => {
            let chain = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
                .map(Result::unwrap)
                .collect();
            let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
            config.with_client_auth_cert(chain, key).unwrap()
        }
        None => config.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// `GET /metrics` over TLS with a client trusting `ca`; the whole answer.
async fn get_metrics_over_tls(addr: SocketAddr, ca: &Ca) -> std::io::Result<String> {
    let mut tls = connect_tls(addr, ca, None, b"http/1.1").await?;
    tls.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await?;
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await?;
    Ok(answer)
}

#[tokio::test]
async fn metrics_are_served_over_tls_with_the_api_certificate() {
    let (ca, files) = (Ca::new("sagad CA"), Files::new());
    let api = files.listener(&ca.current("sagad"), None);
    let server = server_with(
        TlsConfig {
            metrics: Some(api.clone()),
            api: Some(api),
            ..TlsConfig::default()
        },
        true,
    )
    .await;
    let addr = server.metrics_addr.unwrap();
    let answer = get_metrics_over_tls(addr, &ca).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("sagad_"), "{answer}");
    // Plain HTTP gets no metrics.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut plain = Vec::new();
    let _ = tcp.read_to_end(&mut plain).await;
    assert!(
        !String::from_utf8_lossy(&plain).contains("sagad_"),
        "metrics must not be served in plaintext"
    );
}

/// A fake shop served over TLS with `leaf`, requiring client certificates
/// from `client_ca` if given.
async fn tls_shop(leaf: &Leaf, client_ca: Option<&Ca>) -> Served {
    let mut tls =
        ServerTlsConfig::new().identity(Identity::from_pem(&leaf.cert_pem, &leaf.key_pem));
    if let Some(ca) = client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(&ca.pem));
    }
    serve_tls(FakeParticipant::new(|_| Answer::Ok), tls).await
}

/// Runs one order through `shop` on a coordinator with `participants` TLS.
async fn order_through(
    shop: &Served,
    participants: ParticipantTls,
    retry: pb::RetryPolicy,
) -> pb::Saga {
    let server = server_with(
        TlsConfig {
            participants,
            ..TlsConfig::default()
        },
        false,
    )
    .await;
    let mut client = server.client().await;
    register_shop(&mut client, shop, retry).await;
    start_order(&mut client, r#"{"order_id":"T-1"}"#, true).await
}

#[tokio::test]
async fn https_participants_are_verified_against_a_private_ca() {
    let (private, files) = (Ca::new("participants CA"), Files::new());
    let shop = tls_shop(&private.current("shop"), None).await;
    assert!(shop.forward_url().starts_with("https://"));
    let participants = ParticipantTls {
        ca: Some(files.ca("participants-ca", &private)),
        ..ParticipantTls::default()
    };
    let saga = order_through(&shop, participants, quick_retry(3, 3)).await;
    assert_eq!(state(&saga), pb::SagaState::Completed, "{saga:?}");
    assert_eq!(shop.fake.trace(&saga.id).len(), 3);
}

#[tokio::test]
async fn an_https_participant_whose_certificate_is_not_trusted_is_never_called() {
    let (private, other, files) = (
        Ca::new("participants CA"),
        Ca::new("other CA"),
        Files::new(),
    );
    let shop = tls_shop(&private.current("shop"), None).await;
    let participants = ParticipantTls {
        ca: Some(files.ca("other-ca", &other)),
        ..ParticipantTls::default()
    };
    let saga = order_through(&shop, participants, quick_retry(2, 2)).await;
    assert_ne!(state(&saga), pb::SagaState::Completed, "{saga:?}");
    let error = &saga.steps[0].last_error;
    assert!(error.contains("UnknownIssuer"), "{saga:?}");
    assert!(shop.fake.calls().is_empty(), "no request reached it");
}

/// An HTTP/JSON participant may be `https://` too: verified the same way.
#[tokio::test]
async fn https_http_participants_are_verified_like_grpc_ones() {
    let (private, other, files) = (
        Ca::new("participants CA"),
        Ca::new("other CA"),
        Files::new(),
    );
    let shop = serve_https(
        FakeParticipant::new(|_| Answer::Ok),
        &private.current("shop"),
    )
    .await;
    assert!(shop.forward_url().starts_with("https://"));
    let trusted = ParticipantTls {
        ca: Some(files.ca("participants-ca", &private)),
        ..ParticipantTls::default()
    };
    let saga = order_through(&shop, trusted, quick_retry(3, 3)).await;
    assert_eq!(state(&saga), pb::SagaState::Completed, "{saga:?}");
    assert_eq!(shop.fake.trace(&saga.id).len(), 3);

    let shop = serve_https(
        FakeParticipant::new(|_| Answer::Ok),
        &private.current("shop"),
    )
    .await;
    let untrusted = ParticipantTls {
        ca: Some(files.ca("other-ca", &other)),
        ..ParticipantTls::default()
    };
    let saga = order_through(&shop, untrusted, quick_retry(2, 2)).await;
    assert_ne!(state(&saga), pb::SagaState::Completed, "{saga:?}");
    let error = &saga.steps[0].last_error;
    assert!(error.contains("UnknownIssuer"), "{saga:?}");
    assert!(shop.fake.calls().is_empty(), "no request reached it");
}

#[tokio::test]
async fn participants_that_require_a_client_certificate_get_one_server_wide_or_per_origin() {
    let (private, clients, files) = (
        Ca::new("participants CA"),
        Ca::new("client CA"),
        Files::new(),
    );
    let shop = tls_shop(&private.current("shop"), Some(&clients)).await;
    let ca = files.ca("participants-ca", &private);
    let identity = files.leaf("sagad-client", &clients.current("sagad"));

    let server_wide = ParticipantTls {
        ca: Some(ca.clone()),
        identity: Some(identity.clone()),
        origins: vec![],
    };
    let saga = order_through(&shop, server_wide, quick_retry(3, 3)).await;
    assert_eq!(state(&saga), pb::SagaState::Completed, "{saga:?}");

    let per_origin = ParticipantTls {
        ca: Some(ca.clone()),
        identity: None,
        origins: vec![OriginTls {
            origin: sagad::tls::origin_key(&format!("https://{}", shop.addr)).unwrap(),
            ca: None,
            identity: Some(identity),
        }],
    };
    let saga = order_through(&shop, per_origin, quick_retry(3, 3)).await;
    assert_eq!(state(&saga), pb::SagaState::Completed, "{saga:?}");

    let calls_before = shop.fake.calls().len();
    let without = ParticipantTls {
        ca: Some(ca),
        ..ParticipantTls::default()
    };
    let saga = order_through(&shop, without, quick_retry(2, 2)).await;
    assert_ne!(state(&saga), pb::SagaState::Completed, "{saga:?}");
    assert_eq!(
        shop.fake.calls().len(),
        calls_before,
        "no request was served"
    );
}

/// Runs the `sagad` binary with `args` and `env` (nothing inherited that
/// sagad reads), to its end.
async fn sagad(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sagad"));
    command.args(args);
    for var in [
        "SAGAD_ADDR",
        "SAGAD_CA",
        "SAGAD_CERT",
        "SAGAD_KEY",
        "SAGAD_LOG",
        "RUST_LOG",
    ] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    tokio::task::spawn_blocking(move || command.output().expect("sagad runs"))
        .await
        .unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test]
async fn the_cli_speaks_tls_to_https_addresses_with_its_ca_and_certificate() {
    let (ca, clients, files) = (Ca::new("sagad CA"), Ca::new("client CA"), Files::new());
    let ca_file = files.ca("sagad-ca", &ca);
    let server = tls_server(files.listener(&ca.current("sagad"), None)).await;
    let https = format!("https://{}", server.addr);
    let ca_path = path(&ca_file.path);
    let listed = sagad(
        &[
            "definitions",
            "list",
            "--json",
            "--addr",
            &https,
            "--ca",
            ca_path,
        ],
        &[],
    )
    .await;
    assert!(listed.status.success(), "{listed:?}");
    assert!(
        text(&listed.stdout).contains("order-fulfillment"),
        "{listed:?}"
    );
    // The same through the environment.
    let by_env = sagad(
        &["definitions", "list", "--addr", &https],
        &[("SAGAD_CA", ca_path)],
    )
    .await;
    assert!(by_env.status.success(), "{by_env:?}");

    // Without --ca the system's roots are used, and they do not know this CA.
    let unknown = sagad(&["definitions", "list", "--addr", &https], &[]).await;
    assert_eq!(unknown.status.code(), Some(3), "{unknown:?}");
    let line = text(&unknown.stderr);
    assert!(
        line.contains("TLS") && line.contains("UnknownIssuer"),
        "{line}"
    );
    assert_eq!(line.trim_end().lines().count(), 1, "{line}");

    // TLS flags with a plaintext address are refused, not ignored.
    let plain = format!("http://{}", server.addr);
    let refused = sagad(
        &["definitions", "list", "--addr", &plain, "--ca", ca_path],
        &[],
    )
    .await;
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(
        text(&refused.stderr).contains("--ca is for TLS"),
        "{refused:?}"
    );
    // A plaintext client of a TLS listener is told what to change.
    let mistaken = sagad(&["definitions", "list", "--addr", &plain], &[]).await;
    assert_eq!(mistaken.status.code(), Some(3), "{mistaken:?}");
    assert!(
        text(&mistaken.stderr).contains("use an https:// --addr"),
        "{mistaken:?}"
    );

    // Under mTLS: the client certificate from flags (or SAGAD_CERT/SAGAD_KEY).
    let mtls = tls_server(files.listener(&ca.current("sagad"), Some(&clients))).await;
    let https = format!("https://{}", mtls.addr);
    let me = files.leaf("operator", &clients.current("operator"));
    let (cert, key) = (path(&me.cert.path), path(&me.key.path));
    let with_cert = sagad(
        &[
            "definitions",
            "list",
            "--addr",
            &https,
            "--ca",
            ca_path,
            "--cert",
            cert,
            "--key",
            key,
        ],
        &[],
    )
    .await;
    assert!(with_cert.status.success(), "{with_cert:?}");
    let by_env = sagad(
        &["participants", "list", "--addr", &https],
        &[
            ("SAGAD_CA", ca_path),
            ("SAGAD_CERT", cert),
            ("SAGAD_KEY", key),
        ],
    )
    .await;
    assert!(by_env.status.success(), "{by_env:?}");
    let without = sagad(
        &["definitions", "list", "--addr", &https, "--ca", ca_path],
        &[],
    )
    .await;
    assert!(!without.status.success(), "{without:?}");
    let line = text(&without.stderr);
    assert!(line.contains("CertificateRequired"), "{line}");
    assert_eq!(line.trim_end().lines().count(), 1, "{line}");
}

/// The certificate a new TLS connection to `addr` is shown.
async fn presented(addr: SocketAddr, ca: &Ca) -> Vec<u8> {
    let tls = connect_tls(addr, ca, None, b"h2").await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rotates_the_certificate_and_a_bad_file_keeps_the_old_one() {
    let (ca, files, data) = (
        Ca::new("sagad CA"),
        Files::new(),
        tempfile::tempdir().unwrap(),
    );
    let first = ca.current("sagad-1");
    let KeyPairFiles { cert, key } = files.leaf("server", &first);
    let sagad = SagadProcess::spawn_with(
        data.path(),
        &["--tls-cert", path(&cert.path), "--tls-key", path(&key.path)],
        &[],
    );
    assert_eq!(presented(sagad.addr, &ca).await, first.der);

    let second = ca.current("sagad-2");
    files.leaf("server", &second);
    sagad.signal("HUP");
    poll_until("a new connection to see the new certificate", || async {
        (presented(sagad.addr, &ca).await == second.der).then_some(())
    })
    .await;

    files.write("server.pem", "not a certificate\n");
    sagad.signal("HUP");
    let said = poll_until("the bad file to be reported", || {
        let said = sagad.stderr_so_far();
        async move {
            said.contains("could not reload the TLS certificates")
                .then_some(said)
        }
    })
    .await;
    assert!(said.contains(path(&cert.path)), "{said}");
    assert!(said.contains("--tls-cert"), "{said}");
    assert_eq!(
        presented(sagad.addr, &ca).await,
        second.der,
        "still the last good one"
    );
    let (status, stderr) = sagad.terminate();
    assert!(status.success(), "{status}: {stderr}");
}

#[tokio::test]
async fn a_bad_certificate_or_key_at_start_is_one_line_naming_the_file_and_flag() {
    let (ca, files, data) = (
        Ca::new("sagad CA"),
        Files::new(),
        tempfile::tempdir().unwrap(),
    );
    let good = files.leaf("good", &ca.current("sagad"));
    let other = files.leaf("other", &ca.current("other"));
    let missing = files.dir().join("missing.pem");
    for (cert, key, names) in [
        (missing.as_path(), good.key.path.as_path(), "--tls-cert"),
        (
            good.cert.path.as_path(),
            good.cert.path.as_path(),
            "--tls-key",
        ),
        (
            good.cert.path.as_path(),
            other.key.path.as_path(),
            "--tls-key",
        ),
    ] {
        let mut sagad = SagadProcess::spawn_with(
            data.path(),
            &["--tls-cert", path(cert), "--tls-key", path(key)],
            &[],
        );
        let (status, stderr) = sagad.wait_exit();
        assert_eq!(status.code(), Some(2), "{stderr}");
        let lines: Vec<_> = stderr
            .lines()
            .filter(|l| l.starts_with("sagad: "))
            .collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(lines[0].contains(names), "{stderr}");
        let named = if names == "--tls-cert" { cert } else { key };
        assert!(lines[0].contains(path(named)), "{stderr}");
    }
}

/// A client over mTLS presenting `identity`, with no token.
async fn mtls_client(addr: SocketAddr, ca: &Ca, identity: &Leaf) -> CoordinatorClient<Channel> {
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(trusting(ca, Some(identity)))
        .unwrap()
        .connect()
        .await
        .unwrap();
    CoordinatorClient::new(channel)
}

#[tokio::test]
async fn client_certificates_are_identities_mapped_to_roles_by_the_tokens_file() {
    let (ca, clients, files) = (Ca::new("sagad CA"), Ca::new("client CA"), Files::new());
    let tokens = files.write(
        "tokens",
        "ops operator cert:ops-cli\ncheckout starter cert:checkout-svc\nroot admin cert:admin-cli\n",
    );
    let extras = Extras {
        tls: TlsConfig {
            api: Some(files.listener(&ca.current("sagad"), Some(&clients))),
            ..TlsConfig::default()
        },
        auth_tokens: Some(tokens),
        ..Extras::default()
    };
    let server =
        TestServer::start_with_extras(vec![order_fulfillment()], EngineConfig::default(), extras)
            .await;
    let mut admin = mtls_client(server.addr, &ca, &clients.current("admin-cli")).await;
    let shop = serve(FakeParticipant::new(|_| Answer::Ok)).await;
    for name in ["orders", "payments", "shipping"] {
        admin
            .register_participant(pb::RegisterParticipantRequest {
                protocol: pb::Protocol::Grpc as i32,
                name: name.into(),
                forward_endpoint: shop.forward_url(),
                compensate_endpoint: shop.compensate_url(),
                retry: None,
                timeout: None,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let mut checkout = mtls_client(server.addr, &ca, &clients.current("checkout-svc")).await;
    let started = checkout
        .start_saga(pb::StartSagaRequest {
            definition: "order-fulfillment".into(),
            payload: b"{}".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .saga
        .unwrap();
    let refused = checkout
        .list_participants(pb::ListParticipantsRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("needs role reader"),
        "{refused:?}"
    );

    // The operator reads everyone's sagas, and sees who started this one:
    // the certificate's identity, with the address it came from.
    let mut ops = mtls_client(server.addr, &ca, &clients.current("ops-cli")).await;
    let saga = ops
        .get_saga(pb::GetSagaRequest {
            id: started.id.clone(),
            all_attempts: false,
        })
        .await
        .unwrap()
        .into_inner();
    let by = saga.started_by.unwrap();
    assert_eq!(
        (by.kind, by.name.as_str()),
        (pb::PrincipalKind::Certificate as i32, "checkout-svc")
    );
    assert!(by.peer.starts_with("127.0.0.1:"), "{by:?}");
    let refused = ops
        .register_participant(pb::RegisterParticipantRequest {
            protocol: pb::Protocol::Grpc as i32,
            name: "payments".into(),
            forward_endpoint: "http://127.0.0.1:1/p.P/Charge".into(),
            compensate_endpoint: "http://127.0.0.1:1/p.P/Refund".into(),
            retry: None,
            timeout: None,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");

    // A certificate the client CA issued, but with no entry: the handshake
    // passes, the call does not.
    let mut stranger = mtls_client(server.addr, &ca, &clients.current("stranger")).await;
    let refused = stranger
        .list_definitions(pb::ListDefinitionsRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("no cert: entry"), "{refused:?}");
}
