//! `--participant-allow` on the real binary: a registration naming a host the
//! list does not allow is refused with `INVALID_ARGUMENT`, naming the host and
//! the flag, and stores nothing; an allowed one registers and is called; a
//! participant registered before the list was set is refused at connection
//! time, never called; a bad entry stops the start, naming it and where it came
//! from. All traffic stays on 127.0.0.1 (the refused hosts are never dialled).

use std::path::Path;

use sagad::proto::v1::{self as pb, coordinator_client::CoordinatorClient};
use tonic::Code;

use crate::common::{self, Answer, Client, FakeParticipant, ServingStatus, process::SagadProcess};

/// `sagad serve` on `data` with `args`, once its Coordinator serves, and a
/// client of it.
async fn serve(data: &Path, args: &[&str]) -> (SagadProcess, Client) {
    let (data, args): (_, Vec<String>) = (
        data.to_path_buf(),
        args.iter().map(ToString::to_string).collect(),
    );
    let sagad = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        SagadProcess::spawn_with(&data, &args, &[])
    })
    .await
    .unwrap();
    assert_ne!(
        sagad.addr.port(),
        0,
        "sagad started: {}",
        sagad.stderr_so_far()
    );
    common::until_health(sagad.addr, "sagad.v1.Coordinator", ServingStatus::Serving).await;
    let client = CoordinatorClient::connect(format!("http://{}", sagad.addr))
        .await
        .unwrap();
    (sagad, client)
}

fn registration(name: &str, forward: &str, compensate: &str) -> pb::RegisterParticipantRequest {
    pb::RegisterParticipantRequest {
        protocol: pb::Protocol::Grpc as i32,
        name: name.into(),
        forward_endpoint: forward.into(),
        compensate_endpoint: compensate.into(),
        retry: Some(common::quick_retry(2, 2)),
        timeout: Some(prost_types::Duration {
            seconds: 5,
            nanos: 0,
        }),
        ..Default::default()
    }
}

async fn registered(client: &mut Client) -> Vec<String> {
    let list = client
        .list_participants(pb::ListParticipantsRequest {})
        .await
        .unwrap()
        .into_inner();
    list.participants.into_iter().map(|p| p.name).collect()
}

/// Starts an inline saga of one step on `participant` and waits for its end.
async fn run_one_step(client: &mut Client, participant: &str) -> pb::Saga {
    let started = client
        .start_saga(pb::StartSagaRequest {
            steps: vec![pb::StepDefinition {
                name: "only".into(),
                participant: participant.into(),
                ..Default::default()
            }],
            payload: b"{}".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .saga
        .unwrap();
    common::until_terminal(client, &started.id).await
}

#[tokio::test]
async fn registrations_outside_the_allow_list_are_refused_and_inside_it_work() {
    let data = tempfile::tempdir().unwrap();
    let served = common::serve(FakeParticipant::new(|_| Answer::Ok)).await;
    let (sagad, mut client) = serve(data.path(), &["--participant-allow", "127.0.0.1/32"]).await;
    let port = served.addr.port();
    let allowed = served.forward_url();
    for (url, host) in [
        (format!("http://127.0.0.2:{port}/p.S/Do"), "127.0.0.2"),
        (format!("http://[::1]:{port}/p.S/Do"), "::1"),
        (
            "http://169.254.169.254/latest.Meta/Data".to_string(),
            "169.254.169.254",
        ),
    ] {
        for (forward, compensate, field) in [
            (url.as_str(), allowed.as_str(), "forward_endpoint"),
            (allowed.as_str(), url.as_str(), "compensate_endpoint"),
        ] {
            let status = client
                .register_participant(registration("pay", forward, compensate))
                .await
                .expect_err(url.as_str());
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            let expected = format!(
                "participant 'pay': {field} {url}: host {host} is not in --participant-allow"
            );
            assert_eq!(status.message(), expected);
        }
    }
    assert!(
        registered(&mut client).await.is_empty(),
        "nothing was stored"
    );
    assert!(served.fake.calls().is_empty(), "no refused host was called");

    client
        .register_participant(registration("pay", &allowed, &served.compensate_url()))
        .await
        .expect("a participant on 127.0.0.1 registers");
    assert_eq!(registered(&mut client).await, ["pay"]);
    // And is called: the connection-time check lets 127.0.0.1 through.
    let saga = run_one_step(&mut client, "pay").await;
    assert_eq!(saga.state, pb::SagaState::Completed as i32, "{saga:?}");
    assert_eq!(served.fake.calls().len(), 1);
    sagad.kill();
}

#[tokio::test]
async fn a_participant_registered_before_the_list_is_refused_when_it_would_be_called() {
    let data = tempfile::tempdir().unwrap();
    let served = common::serve(FakeParticipant::new(|_| Answer::Ok)).await;
    let (sagad, mut client) = serve(data.path(), &[]).await;
    client
        .register_participant(registration(
            "pay",
            &served.forward_url(),
            &served.compensate_url(),
        ))
        .await
        .expect("without a list, any host registers");
    // The client goes first: a graceful stop waits for its connection.
    drop(client);
    let (status, stderr) = tokio::task::spawn_blocking(move || sagad.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{status}: {stderr}");

    // The same journal, now with a list 127.0.0.1 is not in.
    let (sagad, mut client) = serve(data.path(), &["--participant-allow", "127.0.0.2"]).await;
    let warned = sagad.stderr_so_far();
    assert!(
        warned.contains("host 127.0.0.1 is not in --participant-allow"),
        "the start warns of the registered participant: {warned}"
    );
    let saga = run_one_step(&mut client, "pay").await;
    assert_ne!(saga.state, pb::SagaState::Completed as i32, "{saga:?}");
    let step = &saga.steps[0];
    assert!(!step.attempts.is_empty(), "{saga:?}");
    for attempt in &step.attempts {
        assert_eq!(
            attempt.outcome,
            pb::AttemptOutcome::NotDelivered as i32,
            "{attempt:?}"
        );
        assert!(
            attempt
                .error
                .contains("host 127.0.0.1 is not in --participant-allow"),
            "{attempt:?}"
        );
    }
    assert!(
        served.fake.calls().is_empty(),
        "the participant was never called"
    );
    sagad.kill();
}

/// Runs `sagad serve` on `data` with `args` and `env`, which must fail to
/// start; returns its one line of error.
async fn refused_start(data: &Path, args: Vec<String>, env: Vec<(&'static str, String)>) -> String {
    let data = data.to_path_buf();
    let (status, stderr) = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut sagad = SagadProcess::spawn_with(&data, &args, &env);
        sagad.wait_exit()
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    let lines: Vec<_> = stderr
        .lines()
        .filter(|l| l.starts_with("sagad: "))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    lines[0].to_string()
}

#[tokio::test]
async fn a_bad_entry_stops_the_start_naming_it_and_where_it_came_from() {
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("sagad.toml");
    std::fs::write(
        &file,
        "participant_allow = [\"10.0.0.0/8\", \"fd00::/200\"]\n",
    )
    .unwrap();
    let flags = [
        "--participant-allow",
        "127.0.0.1/32",
        "--participant-allow",
        "10.0.0.0/33",
    ];
    let line = refused_start(data.path(), flags.map(String::from).to_vec(), vec![]).await;
    for named in ["--participant-allow", "'10.0.0.0/33' is not a CIDR"] {
        assert!(line.contains(named), "{named:?} in {line}");
    }

    let config = vec!["--config".to_string(), file.to_str().unwrap().to_string()];
    let line = refused_start(data.path(), config, vec![]).await;
    for named in [
        "sagad.toml: participant_allow",
        "'fd00::/200' is not a CIDR",
    ] {
        assert!(line.contains(named), "{named:?} in {line}");
    }

    let env = vec![(
        "SAGAD_PARTICIPANT_ALLOW",
        "127.0.0.1,http://127.0.0.1:1".to_string(),
    )];
    let line = refused_start(data.path(), vec![], env).await;
    for named in ["SAGAD_PARTICIPANT_ALLOW", "'http://127.0.0.1:1' is a URL"] {
        assert!(line.contains(named), "{named:?} in {line}");
    }
}
