//! Authentication, roles and audited writes (`sagad::auth`): every RPC under
//! every role, missing and wrong credentials, a starter kept to its own
//! sagas, principals in GetSaga and the participant listing, revocation by
//! SIGHUP and by the file timer, the safe-default refusal, and the attack
//! the security issue describes, step by step, against a real `sagad`.

use std::{path::Path, time::Duration};

use sagad::{
    auth::tokens::TokenHash,
    engine::EngineConfig,
    proto::v1::{self as pb, coordinator_client::CoordinatorClient},
};
use tonic::{Code, Request, Status, transport::Channel};

use crate::common::{
    Answer, Client, Extras, FakeParticipant, ServingStatus, TestServer, order_fulfillment,
    poll_until, process::SagadProcess, sagad_exit, serve, until_health,
};

/// The token of each test principal is its name, prefixed (tokens are only
/// hashed: any text works).
fn token(name: &str) -> String {
    format!("sagad_test_{name}")
}

/// A tokens file line for `name` with `role`.
fn line(name: &str, role: &str) -> String {
    format!("{name} {role} {}\n", TokenHash::of(&token(name)))
}

/// One principal per role, named after it, and a second starter.
fn every_role() -> String {
    ["reader", "starter", "operator", "admin"]
        .iter()
        .map(|r| line(r, r))
        .chain([line("starter2", "starter")])
        .collect()
}

/// `message`, sent as `name` (its bearer token), or with no credentials.
fn as_<T>(name: Option<&str>, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(name) = name {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", token(name)).parse().unwrap(),
        );
    }
    request
}

/// A server with `tokens` as its tokens file (kept at `dir/tokens`).
async fn server_with(dir: &Path, tokens: &str, reload_interval: Option<Duration>) -> TestServer {
    let path = dir.join("tokens");
    std::fs::write(&path, tokens).unwrap();
    let extras = Extras {
        auth_tokens: Some(path),
        reload_interval,
        ..Extras::default()
    };
    TestServer::start_with_extras(vec![order_fulfillment()], EngineConfig::default(), extras).await
}

/// A participant that always succeeds, registered by `admin` as `orders`,
/// `payments` and `shipping`.
async fn shop(client: &mut Client) -> crate::common::Served {
    let served = serve(FakeParticipant::new(|_| Answer::Ok)).await;
    for name in ["orders", "payments", "shipping"] {
        client
            .register_participant(as_(Some("admin"), register(name, &served.forward_url())))
            .await
            .unwrap();
    }
    served
}

fn register(name: &str, forward: &str) -> pb::RegisterParticipantRequest {
    pb::RegisterParticipantRequest {
        protocol: pb::Protocol::Grpc as i32,
        name: name.into(),
        forward_endpoint: forward.into(),
        compensate_endpoint: forward.replace("Forward", "Compensate"),
        retry: None,
        timeout: None,
        ..Default::default()
    }
}

fn start(key: &str) -> pb::StartSagaRequest {
    pb::StartSagaRequest {
        definition: "order-fulfillment".into(),
        payload: b"{}".to_vec(),
        idempotency_key: key.into(),
        ..Default::default()
    }
}

/// A server with a principal of every role, and the shop registered.
async fn shop_server() -> (tempfile::TempDir, TestServer, Client, crate::common::Served) {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(dir.path(), &every_role(), None).await;
    let mut client = server.client().await;
    let shop = shop(&mut client).await;
    (dir, server, client, shop)
}

/// Starts an order as `who`, with idempotency key `key`.
async fn started(client: &Client, who: &str, key: &str) -> pb::Saga {
    client
        .clone()
        .start_saga(as_(Some(who), start(key)))
        .await
        .unwrap()
        .into_inner()
        .saga
        .unwrap()
}

/// Calls RPC `method` as `who` (saga-naming calls name `saga`): the status
/// it was refused with, or `None` when it went through to the service (which
/// may still have said no for its own reasons: a cancel of a finished saga).
async fn call(client: &mut Client, method: &str, who: Option<&str>, saga: &str) -> Option<Status> {
    let id = saga.to_string();
    let result: Result<(), Status> = match method {
        "RegisterParticipant" => {
            let r = register(
                &format!("probe-{}", who.unwrap_or("nobody")),
                "http://127.0.0.1:1/sagad.v1.ParticipantService/Forward",
            );
            client.register_participant(as_(who, r)).await.map(drop)
        }
        "ListParticipants" => client
            .list_participants(as_(who, pb::ListParticipantsRequest {}))
            .await
            .map(drop),
        "StartSaga" => client
            .start_saga(as_(who, start(&format!("start-{}", who.unwrap_or("-")))))
            .await
            .map(drop),
        "GetSaga" => client
            .get_saga(as_(
                who,
                pb::GetSagaRequest {
                    id,
                    all_attempts: false,
                },
            ))
            .await
            .map(drop),
        "ListSagas" => client
            .list_sagas(as_(who, pb::ListSagasRequest::default()))
            .await
            .map(drop),
        "WatchSaga" => client
            .watch_saga(as_(who, pb::WatchSagaRequest { id }))
            .await
            .map(drop),
        "CancelSaga" => client
            .cancel_saga(as_(
                who,
                pb::CancelSagaRequest {
                    id,
                    reason: "test".into(),
                },
            ))
            .await
            .map(drop),
        "RetrySaga" => client
            .retry_saga(as_(
                who,
                pb::RetrySagaRequest {
                    id,
                    refresh_endpoints: false,
                },
            ))
            .await
            .map(drop),
        "ListDefinitions" => client
            .list_definitions(as_(who, pb::ListDefinitionsRequest {}))
            .await
            .map(drop),
        "Subscribe" => client
            .subscribe(as_(who, pb::SubscribeRequest::default()))
            .await
            .map(drop),
        // This server's journal is sled: a caller let through is told it has
        // no nodes (FAILED_PRECONDITION), which counts as let through.
        "ListNodes" => client
            .list_nodes(as_(who, pb::ListNodesRequest {}))
            .await
            .map(drop),
        other => panic!("no request for {other}"),
    };
    result
        .err()
        .filter(|s| matches!(s.code(), Code::PermissionDenied | Code::Unauthenticated))
}

/// Every RPC, and the role it needs beyond each role (`None`: allowed).
/// Starters read only their own sagas: the saga these calls name was started
/// by `admin`, so a starter is refused it, naming `reader`.
const TABLE: [(&str, [Option<&str>; 4]); 11] = [
    //                       reader          starter         operator        admin
    (
        "RegisterParticipant",
        [Some("admin"), Some("admin"), Some("admin"), None],
    ),
    ("ListParticipants", [None, Some("reader"), None, None]),
    ("StartSaga", [Some("starter"), None, Some("starter"), None]),
    ("GetSaga", [None, Some("reader"), None, None]),
    ("ListSagas", [None, None, None, None]),
    ("WatchSaga", [None, Some("reader"), None, None]),
    (
        "CancelSaga",
        [Some("operator"), Some("operator"), None, None],
    ),
    (
        "RetrySaga",
        [Some("operator"), Some("operator"), None, None],
    ),
    ("ListDefinitions", [None, Some("reader"), None, None]),
    ("Subscribe", [None, Some("reader"), None, None]),
    ("ListNodes", [None, Some("reader"), None, None]),
];

#[tokio::test]
async fn every_rpc_under_every_role_is_allowed_or_refused_naming_the_role_needed() {
    let (_dir, server, mut client, _shop) = shop_server().await;
    let saga = started(&client, "admin", "admins").await;

    for (method, needs) in TABLE {
        for (role, needed) in ["reader", "starter", "operator", "admin"]
            .into_iter()
            .zip(needs)
        {
            let refused = call(&mut client, method, Some(role), &saga.id).await;
            match (needed, refused) {
                (None, None) => {}
                (Some(needs), Some(status)) => {
                    assert_eq!(status.code(), Code::PermissionDenied, "{method} as {role}");
                    assert!(
                        status.message().contains(&format!("needs role {needs}")),
                        "{method} as {role}: {}",
                        status.message()
                    );
                }
                (needed, refused) => {
                    panic!("{method} as {role}: expected refusal {needed:?}, got {refused:?}")
                }
            }
        }
        // No credentials, or a token the file does not have: UNAUTHENTICATED.
        for who in [None, Some("stranger")] {
            let status = call(&mut client, method, who, &saga.id).await;
            let status = status.unwrap_or_else(|| panic!("{method} as {who:?} went through"));
            assert_eq!(status.code(), Code::Unauthenticated, "{method} as {who:?}");
        }
    }

    // Health stays open: probes carry no token.
    until_health(server.addr, "", ServingStatus::Serving).await;
}

#[tokio::test]
async fn a_starter_reads_only_the_sagas_it_started() {
    let (_dir, _server, mut client, _shop) = shop_server().await;
    let own = started(&client, "starter", "mine").await;
    let admins = started(&client, "admin", "theirs").await;

    let got = client
        .get_saga(as_(
            Some("starter"),
            pb::GetSagaRequest {
                id: own.id.clone(),
                all_attempts: false,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let by = got.started_by.unwrap();
    assert_eq!(
        (by.kind, by.name.as_str()),
        (pb::PrincipalKind::Token as i32, "starter")
    );
    assert!(by.peer.starts_with("127.0.0.1:"), "{}", by.peer);
    let mut events = client
        .watch_saga(as_(
            Some("starter"),
            pb::WatchSagaRequest { id: own.id.clone() },
        ))
        .await
        .unwrap()
        .into_inner();
    let first = events.message().await.unwrap().unwrap();
    assert!(matches!(
        first.event,
        Some(pb::saga_event::Event::SagaStarted(pb::SagaStarted {
            started_by: Some(_),
            ..
        }))
    ));

    // The list holds its own saga only; an admin's list holds both.
    let ids = |who: &'static str| {
        let mut client = client.clone();
        async move {
            let page = client
                .list_sagas(as_(Some(who), pb::ListSagasRequest::default()))
                .await
                .unwrap()
                .into_inner();
            page.summaries.into_iter().map(|s| s.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(ids("starter").await, vec![own.id.clone()]);
    assert!(ids("starter2").await.is_empty());
    assert_eq!(ids("admin").await.len(), 2);

    // Another starter is refused the saga, and cannot reach it through its key.
    let refused = client
        .get_saga(as_(
            Some("starter2"),
            pb::GetSagaRequest {
                id: own.id.clone(),
                all_attempts: false,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(
        refused.message().contains("needs role reader"),
        "{}",
        refused.message()
    );
    let taken = client
        .start_saga(as_(Some("starter2"), start("mine")))
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists);
    assert!(!taken.message().contains(&own.id), "{}", taken.message());
    // The same start again by its own starter is the same saga.
    let again = client
        .start_saga(as_(Some("starter"), start("mine")))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created);
    assert_eq!(again.saga.unwrap().id, own.id);
    assert!(
        client
            .get_saga(as_(
                Some("starter"),
                pb::GetSagaRequest {
                    id: admins.id,
                    all_attempts: false
                }
            ))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn cancels_retries_and_registrations_are_journaled_with_their_principal() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = server_with(dir.path(), &every_role(), None).await;
    let mut client = server.client().await;
    // A participant that asks to be called again in a minute: the saga
    // waits, running, until it is cancelled.
    let slow = serve(FakeParticipant::new(|_| {
        Answer::Retry(Some(Duration::from_secs(60)))
    }))
    .await;
    let _shop = shop(&mut client).await;
    client
        .register_participant(as_(Some("admin"), register("orders", &slow.forward_url())))
        .await
        .unwrap();
    let saga = started(&client, "starter", "slow").await;
    client
        .cancel_saga(as_(
            Some("operator"),
            pb::CancelSagaRequest {
                id: saga.id.clone(),
                reason: "audit".into(),
            },
        ))
        .await
        .unwrap();

    // Across a restart: the principals are in the journal, not in memory.
    server.restart().await;
    let mut client = server.client().await;
    let got = client
        .get_saga(as_(
            Some("reader"),
            pb::GetSagaRequest {
                id: saga.id.clone(),
                all_attempts: false,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let audit: Vec<(String, String)> = got
        .audit
        .iter()
        .map(|a| (a.action.clone(), a.by.as_ref().unwrap().name.clone()))
        .collect();
    assert_eq!(
        audit,
        [
            ("started".into(), "starter".into()),
            ("cancel_requested".into(), "operator".into())
        ]
    );
    let participants = client
        .list_participants(as_(Some("reader"), pb::ListParticipantsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .participants;
    let orders = participants.iter().find(|p| p.name == "orders").unwrap();
    let by = orders.registered_by.as_ref().unwrap();
    assert_eq!(
        (by.kind, by.name.as_str()),
        (pb::PrincipalKind::Token as i32, "admin")
    );
    assert_eq!(orders.forward_endpoint, slow.forward_url());
}

#[tokio::test]
async fn without_a_tokens_file_callers_are_anonymous_with_their_address() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let served = serve(FakeParticipant::new(|_| Answer::Ok)).await;
    client
        .register_participant(register("orders", &served.forward_url()))
        .await
        .unwrap();
    let listed = client
        .list_participants(pb::ListParticipantsRequest {})
        .await
        .unwrap()
        .into_inner()
        .participants;
    let by = listed[0].registered_by.as_ref().unwrap();
    assert_eq!(by.kind, pb::PrincipalKind::Anonymous as i32);
    assert!(
        by.name.is_empty() && by.peer.starts_with("127.0.0.1:"),
        "{by:?}"
    );
}

#[tokio::test]
async fn a_token_removed_from_the_file_stops_working_once_the_timer_sees_the_change() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = line("ops", "admin") + &line("temp", "reader");
    let server = server_with(dir.path(), &tokens, Some(Duration::from_millis(50))).await;
    let client = server.client().await;
    let list = |who: &'static str| {
        let mut client = client.clone();
        async move {
            client
                .list_definitions(as_(Some(who), pb::ListDefinitionsRequest {}))
                .await
        }
    };
    assert!(list("temp").await.is_ok());
    std::fs::write(dir.path().join("tokens"), line("ops", "admin")).unwrap();
    poll_until("the revoked token to be refused", || async {
        match list("temp").await {
            Err(s) if s.code() == Code::Unauthenticated => Some(()),
            _ => None,
        }
    })
    .await;
    assert!(
        list("ops").await.is_ok(),
        "the tokens still in the file keep working"
    );
    // A broken file changes nothing: the last good one stays in force.
    std::fs::write(dir.path().join("tokens"), "ops admin not-a-hash\n").unwrap();
    for _ in 0..5 {
        assert!(list("ops").await.is_ok());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client of a `sagad` process.
async fn connect(proc: &SagadProcess) -> Client {
    CoordinatorClient::<Channel>::connect(format!("http://{}", proc.addr))
        .await
        .unwrap()
}

/// Waits out a fresh process's recovery (UNAVAILABLE until it is done).
async fn until_ready(client: &Client, who: &'static str) {
    poll_until("sagad to finish recovering", || {
        let mut client = client.clone();
        async move {
            match client
                .list_definitions(as_(Some(who), pb::ListDefinitionsRequest {}))
                .await
            {
                Err(s) if s.code() == Code::Unavailable => None,
                other => Some(other.map(drop)),
            }
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn sighup_reloads_the_tokens_file_of_a_running_sagad() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, line("ops", "admin") + &line("temp", "reader")).unwrap();
    let data = dir.path().join("data");
    let proc = SagadProcess::spawn_with(
        &data,
        &["--auth-tokens", tokens.to_str().unwrap()],
        &[("SAGAD_LOG", "info")],
    );
    let client = connect(&proc).await;
    until_ready(&client, "temp").await;
    std::fs::write(&tokens, line("ops", "admin")).unwrap();
    proc.signal("HUP");
    poll_until("SIGHUP to revoke the token", || {
        let mut client = client.clone();
        async move {
            match client
                .list_definitions(as_(Some("temp"), pb::ListDefinitionsRequest {}))
                .await
            {
                Err(s) if s.code() == Code::Unauthenticated => Some(()),
                _ => None,
            }
        }
    })
    .await;
    // Off the runtime: the client's connection must answer the server's
    // GOAWAY while the test waits for the exit.
    let (status, stderr) = tokio::task::spawn_blocking(move || proc.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("SIGHUP: reloaded the tokens file"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_attack_from_the_issue_fails_at_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, line("ops", "admin") + &line("checkout", "starter")).unwrap();
    let proc = SagadProcess::spawn_with(
        &dir.path().join("data"),
        &["--auth-tokens", tokens.to_str().unwrap()],
        &[],
    );
    let mut client = connect(&proc).await;
    until_ready(&client, "ops").await;
    let payments = serve(FakeParticipant::new(|_| Answer::Ok)).await;
    client
        .register_participant(as_(
            Some("ops"),
            register("payments", &payments.forward_url()),
        ))
        .await
        .unwrap();
    let attacker = "http://127.0.0.1:9/evil.Steal/Card";

    // No token: refused before anything is read or changed.
    let nobody = client
        .register_participant(as_(None, register("payments", attacker)))
        .await
        .unwrap_err();
    assert_eq!(nobody.code(), Code::Unauthenticated);
    // A starter's token: may start sagas, not re-point participants.
    let starter = client
        .register_participant(as_(Some("checkout"), register("payments", attacker)))
        .await
        .unwrap_err();
    assert_eq!(starter.code(), Code::PermissionDenied);
    assert!(
        starter.message().contains("needs role admin"),
        "{}",
        starter.message()
    );
    for who in [None, Some("checkout")] {
        let cancel = client
            .cancel_saga(as_(
                who,
                pb::CancelSagaRequest {
                    id: "x".into(),
                    reason: String::new(),
                },
            ))
            .await
            .unwrap_err();
        assert!(matches!(
            cancel.code(),
            Code::Unauthenticated | Code::PermissionDenied
        ));
        let feed = client
            .subscribe(as_(who, pb::SubscribeRequest::default()))
            .await;
        assert!(
            feed.is_err(),
            "the feed of every payload is closed to {who:?}"
        );
    }
    let listed = client
        .list_participants(as_(Some("ops"), pb::ListParticipantsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .participants;
    assert_eq!(
        listed[0].forward_endpoint,
        payments.forward_url(),
        "nothing changed"
    );

    // An admin's re-registration goes through: journaled with its principal,
    // and logged at WARN with the old and the new endpoint.
    client
        .register_participant(as_(Some("ops"), register("payments", attacker)))
        .await
        .unwrap();
    let listed = client
        .list_participants(as_(Some("ops"), pb::ListParticipantsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .participants;
    assert_eq!(listed[0].registered_by.as_ref().unwrap().name, "ops");
    let warned = poll_until("the re-registration warning", || {
        let so_far = proc.stderr_so_far();
        async move {
            so_far
                .lines()
                .find(|l| l.contains("participant re-registered to other endpoints"))
                .map(str::to_string)
        }
    })
    .await;
    assert!(warned.contains("WARN"), "{warned}");
    assert!(
        warned.contains(&payments.forward_url()) && warned.contains(attacker),
        "{warned}"
    );
    assert!(warned.contains("token:ops from 127.0.0.1:"), "{warned}");

    // The CLI shows who registered it, with the token from SAGAD_TOKEN.
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_sagad"))
        .args(["participants", "list", "--addr", &proc.addr.to_string()])
        .env("SAGAD_TOKEN", token("ops"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&cli.stdout);
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert!(
        out.contains("REGISTERED BY") && out.contains("token:ops from 127.0.0.1:"),
        "{out}"
    );
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_sagad"))
        .args(["participants", "list", "--addr", &proc.addr.to_string()])
        .env_remove("SAGAD_TOKEN")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("UNAUTHENTICATED"));
}

#[tokio::test]
async fn the_cli_makes_a_token_whose_line_the_server_takes() {
    let made = std::process::Command::new(env!("CARGO_BIN_EXE_sagad"))
        .args(["auth", "token", "deployer", "--role", "starter", "--json"])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let made: serde_json::Value = serde_json::from_slice(&made.stdout).unwrap();
    let (secret, file_line) = (
        made["token"].as_str().unwrap(),
        made["line"].as_str().unwrap(),
    );
    assert!(
        !file_line.contains(secret),
        "the file line holds a hash, not the token"
    );

    let dir = tempfile::tempdir().unwrap();
    let server = server_with(dir.path(), &format!("{file_line}\n"), None).await;
    let mut client = server.client().await;
    let mut request = Request::new(pb::StartSagaRequest {
        steps: vec![pb::StepDefinition {
            name: "only".into(),
            participant: "nobody".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {secret}").parse().unwrap());
    // Admitted as a starter: the server then says the participant is unknown.
    let status = client.start_saga(request).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_sagad"))
        .args(["auth", "token", "x", "--role", "root"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[tokio::test]
async fn a_non_loopback_listen_without_auth_and_tls_is_refused_unless_insecure() {
    let (code, stderr) = sagad_exit(&["--listen", "0.0.0.0:0"], &[]).await;
    assert_eq!(code, Some(2), "{stderr}");
    let line = stderr.trim();
    assert_eq!(line.lines().count(), 1, "{stderr}");
    assert!(
        line.contains("0.0.0.0:0") && line.contains("--auth-tokens"),
        "{line}"
    );
    assert!(line.contains("--insecure-no-auth"), "{line}");
    // Tokens alone are not enough: they would cross the network in clear text.
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, line_for_ops()).unwrap();
    let (code, stderr) = sagad_exit(
        &[
            "--listen",
            "0.0.0.0:0",
            "--auth-tokens",
            tokens.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("without TLS"), "{stderr}");
    // A bad tokens file stops the start too, naming the file and line.
    std::fs::write(&tokens, "ops admin sha256:nothex\n").unwrap();
    let (code, stderr) = sagad_exit(&["--auth-tokens", tokens.to_str().unwrap()], &[]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("line 1"), "{stderr}");

    // --insecure-no-auth serves anyway, and says so at start. (It listens on
    // every interface; the test talks to it over loopback only.)
    let proc = SagadProcess::spawn_with(
        &dir.path().join("data"),
        &["--listen", "0.0.0.0:0", "--insecure-no-auth"],
        &[],
    );
    let port = proc.addr.port();
    assert_ne!(port, 0, "sagad did not start: {}", proc.stderr_so_far());
    let client = CoordinatorClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    poll_until("the insecure server to answer", || {
        let mut client = client.clone();
        async move {
            client
                .list_definitions(pb::ListDefinitionsRequest {})
                .await
                .ok()
        }
    })
    .await;
    let (_, stderr) = tokio::task::spawn_blocking(move || proc.terminate())
        .await
        .unwrap();
    assert!(
        stderr.contains("WARN") && stderr.contains("--insecure-no-auth: serving on 0.0.0.0"),
        "{stderr}"
    );
}

fn line_for_ops() -> String {
    line("ops", "admin")
}

#[tokio::test]
async fn get_shows_who_started_a_saga_in_text_and_json() {
    let (_dir, server, client, _shop) = shop_server().await;
    let saga = started(&client, "starter", "shown").await;
    let reader = client.clone();
    poll_until("the saga to end", || {
        let mut reader = reader.clone();
        let id = saga.id.clone();
        async move {
            let got = reader
                .get_saga(as_(
                    Some("reader"),
                    pb::GetSagaRequest {
                        id,
                        all_attempts: false,
                    },
                ))
                .await
                .ok()?
                .into_inner();
            got.finished_at.map(|_| ())
        }
    })
    .await;
    // The CLI runs off the runtime: the server it calls is served on it.
    let addr = server.addr.to_string();
    let sagad = |args: Vec<String>| {
        let addr = addr.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_sagad"))
                .args(args)
                .args(["--addr", &addr])
                .env("SAGAD_TOKEN", token("reader"))
                .output()
                .unwrap()
        })
    };
    let text = sagad(vec!["get".into(), saga.id.clone()]).await.unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("by        token:starter from 127.0.0.1:"),
        "{text}"
    );
    let json = sagad(vec!["get".into(), saga.id.clone(), "--json".into()])
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["started_by"]["kind"], "token");
    assert_eq!(json["started_by"]["name"], "starter");
    assert_eq!(json["audit"][0]["action"], "started");
}
