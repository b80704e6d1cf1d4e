//! The `sagad` command line end to end: the real binary against a real
//! coordinator (in-process, loopback gRPC, temp journal) and scripted loopback
//! participants. Every verb, its `--json` output parsed and checked, and the
//! exit code of every failure scripts rely on.

use std::{
    io::{BufRead, BufReader, Read},
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use sagad::proto::v1 as pb;
use serde_json::Value;
use tokio::sync::mpsc;
use tonic::Code;

use crate::common::*;

/// A saga id no server has issued.
const UNKNOWN_ID: &str = "0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b";
const POLL: Duration = Duration::from_millis(20);

/// How one run of the binary ended.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Fails the test, showing everything, unless the exit code is `code`.
    fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "unexpected exit: {self:#?}");
        self
    }

    fn ok(&self) -> &Self {
        self.expect_code(0)
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    /// The one line on stderr a failure must print.
    fn error_line(&self) -> &str {
        let text = self.stderr.trim_end();
        assert_eq!(
            text.lines().count(),
            1,
            "a failure prints exactly one line on stderr: {self:#?}"
        );
        assert!(text.starts_with("sagad: "), "{self:#?}");
        text
    }
}

/// A running `sagad`, killed on drop so a failing test never leaks it.
struct Proc {
    child: Child,
    stdout_rx: mpsc::UnboundedReceiver<String>,
    /// Every stdout line received so far.
    seen: Vec<String>,
    stderr: Option<JoinHandle<String>>,
}

impl Proc {
    /// Starts the binary with `args`; only `env` (and nothing inherited that
    /// sagad reads) configures it.
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sagad"));
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for var in [
            "SAGAD_ADDR",
            "SAGAD_CA",
            "SAGAD_CERT",
            "SAGAD_KEY",
            "SAGAD_CONFIG",
            "SAGAD_LISTEN",
            "SAGAD_DATA_DIR",
            "SAGAD_SAGAS",
            "SAGAD_MAX_PAYLOAD_BYTES",
            "SAGAD_SHUTDOWN_GRACE",
            "SAGAD_DEFAULT_TIMEOUT",
            "SAGAD_LOG",
            "RUST_LOG",
            "NO_COLOR",
        ] {
            command.env_remove(var);
        }
        command.envs(env.iter().copied());
        let mut child = command.spawn().expect("sagad starts");
        // Readers drain both pipes at once, so a chatty child never blocks.
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, stdout_rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child.stderr.take().expect("piped stderr");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Self {
            child,
            stdout_rx,
            seen: Vec::new(),
            stderr: Some(stderr),
        }
    }

    /// The next stdout line, or `None` once stdout is closed.
    async fn next_line(&mut self) -> Option<String> {
        let line = tokio::time::timeout(DEADLINE, self.stdout_rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no stdout line within {DEADLINE:?}; so far: {:#?}",
                    self.seen
                )
            })?;
        self.seen.push(line.clone());
        Some(line)
    }

    /// Reads stdout up to the first line containing `needle`.
    async fn line_containing(&mut self, needle: &str) -> String {
        loop {
            match self.next_line().await {
                Some(line) if line.contains(needle) => return line,
                Some(_) => {}
                None => panic!(
                    "stdout closed before a line containing {needle:?}: {:#?}",
                    self.seen
                ),
            }
        }
    }

    /// Waits for the exit (failing at `deadline`) and collects the output.
    async fn finish_within(mut self, deadline: Duration) -> Run {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                start.elapsed() < deadline,
                "sagad did not exit within {deadline:?}; stdout so far: {:#?}",
                self.seen
            );
            tokio::time::sleep(POLL).await;
        };
        while let Some(line) = self.next_line().await {
            let _ = line;
        }
        let stderr = self
            .stderr
            .take()
            .expect("stderr is collected once")
            .join()
            .expect("stderr reader");
        let mut stdout = self.seen.join("\n");
        if !stdout.is_empty() {
            stdout.push('\n');
        }
        Run {
            code: status.code(),
            stdout,
            stderr,
        }
    }

    async fn finish(self) -> Run {
        self.finish_within(DEADLINE).await
    }

    /// SIGTERM, as an init system (or Ctrl-C) would stop it.
    fn terminate(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {} failed", self.child.id());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `sagad args` to its end.
async fn sagad(args: &[&str]) -> Run {
    Proc::spawn(args, &[]).finish().await
}

/// Runs a client verb against `server`: `args` then `--addr`.
async fn client(server: &TestServer, args: &[&str]) -> Run {
    let addr = format!("http://{}", server.addr);
    let mut all = args.to_vec();
    all.extend(["--addr", &addr]);
    sagad(&all).await
}

/// An address nothing listens on: bound, then released.
fn dead_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

fn fwd(r: &pb::StepRequest) -> bool {
    r.action == pb::Action::Forward as i32
}

/// A shop whose `payments` step rejects when the payload says `"card":"declined"`.
async fn declining_shop(server: &TestServer) -> Served {
    let shop = serve(FakeParticipant::new(|r| {
        let payload: Value = serde_json::from_slice(&r.payload).unwrap_or_default();
        if fwd(r) && r.step == "charge-payment" && payload["card"] == "declined" {
            Answer::Reject("card declined by the issuer")
        } else {
            Answer::Ok
        }
    }))
    .await;
    let mut grpc = server.client().await;
    register_shop(&mut grpc, &shop, quick_retry(3, 3)).await;
    shop
}

fn names(values: &Value, field: &str) -> Vec<String> {
    values
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {values}"))
        .iter()
        .map(|v| v[field].as_str().unwrap_or_default().to_string())
        .collect()
}

/// A command line sagad must refuse, in a table of them.
struct Refusal<'a> {
    /// Names the case in every failure message.
    name: &'a str,
    args: Vec<&'a str>,
    env: Vec<(&'a str, &'a str)>,
    code: i32,
    /// Every one of these is on the error line.
    needles: Vec<&'a str>,
}

impl<'a> Refusal<'a> {
    /// A failure sagad reports: exit `code` and one error line saying `needles`.
    fn line(name: &'a str, args: &[&'a str], code: i32, needles: &[&'a str]) -> Self {
        Self {
            name,
            args: args.to_vec(),
            env: Vec::new(),
            code,
            needles: needles.to_vec(),
        }
    }

    fn with_env(self, env: &[(&'a str, &'a str)]) -> Self {
        Self {
            env: env.to_vec(),
            ..self
        }
    }

    /// Runs `sagad` with the case's arguments, then `extra`, and its environment.
    async fn run(&self, extra: &[&str]) -> Run {
        let mut args = self.args.clone();
        args.extend(extra);
        Proc::spawn(&args, &self.env).finish().await
    }

    /// Asserts `run` is this case's refusal.
    #[track_caller]
    fn check(&self, run: &Run) {
        let name = self.name;
        assert_eq!(
            run.code,
            Some(self.code),
            "{name}: unexpected exit: {run:#?}"
        );
        let said = run.stderr.trim_end();
        assert_eq!(
            said.lines().count(),
            1,
            "{name}: a failure prints exactly one line on stderr: {run:#?}"
        );
        assert!(said.starts_with("sagad: "), "{name}: {run:#?}");
        for needle in &self.needles {
            assert!(
                said.contains(needle),
                "{name}: stderr does not say {needle:?}: {run:#?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_register_and_list_and_definitions_list() {
    let server = TestServer::start().await;
    let shop = serve(FakeParticipant::new(|_| Answer::Ok)).await;
    let (forward, compensate) = (shop.forward_url(), shop.compensate_url());

    let run = client(
        &server,
        &[
            "participants",
            "register",
            "payments",
            "--forward",
            &forward,
            "--compensate",
            &compensate,
            "--timeout",
            "5s",
            "--max-attempts",
            "3",
            "--json",
        ],
    )
    .await;
    let registered = run.ok().json();
    assert_eq!(registered["name"], "payments");
    assert_eq!(registered["forward_endpoint"], forward.as_str());
    assert_eq!(registered["compensate_endpoint"], compensate.as_str());
    assert_eq!(registered["timeout"], "5s");
    assert_eq!(registered["retry"]["max_attempts"], 3);
    assert!(registered["registered_at"].as_str().unwrap().ends_with('Z'));

    // Without --compensate: a participant nothing can undo.
    let carrier = client(
        &server,
        &[
            "participants",
            "register",
            "carrier",
            "--forward",
            &forward,
            "--json",
        ],
    )
    .await;
    assert_eq!(carrier.ok().json()["compensate_endpoint"], "");

    let listed = client(&server, &["participants", "list", "--output", "json"])
        .await
        .ok()
        .json();
    assert_eq!(names(&listed, "name"), vec!["carrier", "payments"]);

    // The human table: a header, aligned, with no colour codes into a pipe.
    let human = client(&server, &["participants", "list"]).await;
    let lines: Vec<&str> = human.ok().stdout.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{human:#?}");
    assert!(lines[1].starts_with("carrier"), "{human:#?}");
    assert!(lines[1].contains("cannot be undone"), "{human:#?}");
    assert!(lines[2].starts_with("payments"), "{human:#?}");
    assert_eq!(
        lines[0].find("FORWARD"),
        lines[2].find(&forward),
        "columns align: {human:#?}"
    );
    assert!(!human.stdout.contains('\x1b'), "no colour into a pipe");

    let definitions = client(&server, &["definitions", "list", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(names(&definitions, "name"), vec!["order-fulfillment"]);
    assert_eq!(
        names(&definitions[0]["steps"], "name"),
        vec!["validate-order", "charge-payment", "ship-order"]
    );
    let human = client(&server, &["definitions", "list"]).await;
    assert!(
        human
            .ok()
            .stdout
            .contains("validate-order (orders) → charge-payment (payments)"),
        "{human:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_register_says_which_protocol_and_refuses_a_wrong_one() {
    let server = TestServer::start().await;
    let addr = format!("http://{}", server.addr);
    let registered = client(
        &server,
        &[
            "participants",
            "register",
            "payments",
            "--protocol",
            "http",
            "--forward",
            "http://127.0.0.1:7003/charge",
            "--compensate",
            "http://127.0.0.1:7003/refund",
            "--json",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(registered["protocol"], "http");
    assert_eq!(
        registered["forward_endpoint"],
        "http://127.0.0.1:7003/charge"
    );
    let human = client(&server, &["participants", "list"]).await;
    let lines: Vec<&str> = human.ok().stdout.lines().collect();
    assert!(lines[0].contains("PROTOCOL"), "{lines:?}");
    assert!(lines[1].contains(" http "), "{lines:?}");

    let cases = [
        Refusal::line(
            "an unknown protocol",
            &[
                "participants",
                "register",
                "p",
                "--protocol",
                "rest",
                "--forward",
                "http://h:1/a",
                "--compensate",
                "http://h:1/b",
            ],
            2,
            &["unknown protocol 'rest'", "grpc, http"],
        ),
        Refusal::line(
            "https for an h2c endpoint (h2c is plaintext HTTP/2)",
            &[
                "participants",
                "register",
                "p",
                "--protocol",
                "h2c",
                "--forward",
                "https://127.0.0.1:7003/charge",
                "--compensate",
                "http://127.0.0.1:7003/refund",
            ],
            1,
            &["INVALID_ARGUMENT", "forward_endpoint", "write http://"],
        ),
        Refusal::line(
            "an HTTP path registered as gRPC",
            &[
                "participants",
                "register",
                "p",
                "--forward",
                "http://127.0.0.1:7003/api/v1/charge",
                "--compensate",
                "http://127.0.0.1:7003/api/v1/refund",
            ],
            1,
            &["INVALID_ARGUMENT", "registered with protocol http"],
        ),
    ];
    for case in &cases {
        let run = case.run(&["--addr", &addr]).await;
        case.check(&run);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_wait_exit_codes_and_get_timeline() {
    let server = TestServer::start().await;
    let _shop = declining_shop(&server).await;

    // A saga that completes: exit 0, JSON of the response.
    let run = client(
        &server,
        &[
            "start",
            "order-fulfillment",
            "--payload",
            r#"{"order_id":"o-1"}"#,
            "--idempotency-key",
            "order-o-1",
            "--wait",
            "--json",
        ],
    )
    .await;
    let started = run.ok().json();
    assert_eq!(started["created"], true);
    assert_eq!(started["saga"]["state"], "COMPLETED");
    assert_eq!(started["saga"]["payload"]["order_id"], "o-1");
    assert_eq!(started["saga"]["idempotency_key"], "order-o-1");
    let completed_id = started["saga"]["id"].as_str().unwrap().to_string();
    // Started without a traceparent: the saga's own trace, named by its id.
    assert_eq!(started["saga"]["trace_id"], completed_id.replace('-', ""));

    // The same key and the same JSON, typed otherwise: the same saga, not a
    // second run (nor a conflict: the CLI sends JSON minified).
    let again = client(
        &server,
        &[
            "start",
            "order-fulfillment",
            "--payload",
            "{ \"order_id\" : \"o-1\" }\n",
            "--idempotency-key",
            "order-o-1",
            "--json",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(again["created"], false);
    assert_eq!(again["saga"]["id"], completed_id.as_str());

    // A payload that is not text (sent by another client): `--json` keeps
    // every byte, marked as base64.
    let binary = server
        .client()
        .await
        .start_saga(pb::StartSagaRequest {
            definition: "order-fulfillment".into(),
            payload: vec![0xff, 0x00, 0x7b],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .saga
        .unwrap();
    let shown = client(&server, &["get", &binary.id, "--json"])
        .await
        .ok()
        .json();
    assert_eq!(shown["payload"], serde_json::json!({"$base64": "/wB7"}));

    // A declined card: the saga is COMPENSATED, so --wait exits 4, prints the
    // saga on stdout and one line on stderr saying how it ended.
    let payload_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        payload_file.path(),
        r#"{"order_id":"o-2","card":"declined"}"#,
    )
    .unwrap();
    let run = client(
        &server,
        &[
            "start",
            "order-fulfillment",
            "--payload-file",
            payload_file.path().to_str().unwrap(),
            "--wait",
            "--json",
        ],
    )
    .await;
    let declined = run.expect_code(4).json();
    assert_eq!(declined["saga"]["state"], "COMPENSATED");
    let line = run.error_line();
    assert!(line.contains("COMPENSATED"), "{line}");
    assert!(line.contains("card declined by the issuer"), "{line}");
    let declined_id = declined["saga"]["id"].as_str().unwrap().to_string();

    // get --json: every step and attempt, with where and why it failed.
    let saga = client(&server, &["get", &declined_id, "--json"])
        .await
        .ok()
        .json();
    assert_eq!(saga["id"], declined_id.as_str());
    assert_eq!(saga["state"], "COMPENSATED");
    let states: Vec<_> = saga["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["COMPENSATED", "FAILED", "SKIPPED"]);
    let charge = &saga["steps"][1];
    assert_eq!(charge["last_error"], "card declined by the issuer");
    assert_eq!(charge["attempts"][0]["action"], "forward");
    assert_eq!(charge["attempts"][0]["outcome"], "REJECTED");
    assert_eq!(
        charge["attempts"][0]["error"],
        "card declined by the issuer"
    );
    assert!(charge["attempts"][0]["duration_ms"].as_f64().unwrap() >= 0.0);
    let undo = &saga["steps"][0]["attempts"][1];
    assert_eq!(undo["action"], "compensate");
    assert_eq!(undo["outcome"], "SUCCEEDED");
    assert!(
        undo["started_at"].as_str().unwrap()
            >= charge["attempts"][0]["started_at"].as_str().unwrap()
    );

    // get (human): the timeline marks the attempt that failed, and says why.
    let human = client(&server, &["get", &declined_id]).await;
    let text = &human.ok().stdout;
    assert!(text.contains(&declined_id), "{text}");
    let why = text
        .lines()
        .find(|l| l.trim_start().starts_with("why"))
        .unwrap_or_else(|| panic!("no why line: {text}"));
    assert!(why.contains("charge-payment"), "{why}");
    let marked = text
        .lines()
        .find(|l| l.contains("◀ failed here"))
        .unwrap_or_else(|| panic!("no failure marker: {text}"));
    assert!(
        marked.contains("charge-payment")
            && marked.contains("forward #1")
            && marked.contains("REJECTED"),
        "{marked}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("validate-order") && l.contains("compensate #1")),
        "{text}"
    );

    // --output json is the same document as --json.
    let same = client(&server, &["get", &completed_id, "--output", "json"])
        .await
        .ok()
        .json();
    assert_eq!(same["state"], "COMPLETED");
    assert_eq!(same["steps"].as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_and_pages_through_the_server() {
    let server = TestServer::start().await;
    let _shop = declining_shop(&server).await;
    let mut grpc = server.client().await;
    for i in 0..5 {
        let card = if i % 2 == 0 { "ok" } else { "declined" };
        start_order(
            &mut grpc,
            &format!(r#"{{"order_id":"o-{i}","card":"{card}"}}"#),
            true,
        )
        .await;
    }
    let expected: Vec<String> = grpc
        .list_sagas(pb::ListSagasRequest::default())
        .await
        .unwrap()
        .into_inner()
        .summaries
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(expected.len(), 5);

    let all = client(&server, &["list", "--json"]).await.ok().json();
    assert_eq!(
        names(&all, "id"),
        expected,
        "newest first, as the server orders"
    );
    // Summaries: where each saga is, no payload and no attempts. The newest
    // (card ok) completed at its last step; the one before (declined) undid
    // its first step last.
    assert!(
        all[0].get("payload").is_none() && all[0].get("steps").is_none(),
        "{all:#}"
    );
    assert_eq!(all[0]["step_count"], 3);
    assert_eq!(all[0]["current_step"]["name"], "ship-order");
    assert_eq!(all[1]["current_step"]["name"], "validate-order");
    assert_eq!(all[1]["current_step"]["state"], "COMPENSATED");

    // Pages of 2 until the limit of 3: the first three, no duplicates.
    let paged = client(
        &server,
        &["list", "--limit", "3", "--page-size", "2", "--json"],
    )
    .await
    .ok()
    .json();
    assert_eq!(names(&paged, "id"), expected[..3].to_vec());
    let paged_all = client(
        &server,
        &["list", "--limit", "100", "--page-size", "2", "--json"],
    )
    .await
    .ok()
    .json();
    assert_eq!(names(&paged_all, "id"), expected);

    let completed = client(&server, &["list", "--state", "completed", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(completed.as_array().unwrap().len(), 3);
    assert!(
        completed
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "COMPLETED")
    );
    let compensated = client(&server, &["list", "--state", "COMPENSATED", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(compensated.as_array().unwrap().len(), 2);
    let none = client(&server, &["list", "--definition", "no-such", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(none, serde_json::json!([]));

    let human = client(&server, &["list", "--limit", "2"]).await;
    let lines: Vec<&str> = human.ok().stdout.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two rows: {human:#?}");
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("STATE") && lines[0].contains("STEP"),
        "{human:#?}"
    );
    assert!(lines[1].starts_with(&expected[0]), "{human:#?}");
    assert!(lines[1].contains("ship-order (3/3)"), "{human:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_events_live_until_the_terminal_one() {
    let server = TestServer::start().await;
    let carrier_up = Arc::new(AtomicBool::new(false));
    let shop = {
        let carrier_up = carrier_up.clone();
        serve(FakeParticipant::new(move |r| {
            if fwd(r) && r.step == "ship-order" && !carrier_up.load(Ordering::SeqCst) {
                Answer::Status(Code::Unavailable)
            } else {
                Answer::Ok
            }
        }))
        .await
    };
    let mut grpc = server.client().await;
    // Enough attempts that the saga waits for the test (capped 1 s apart).
    register_shop(&mut grpc, &shop, quick_retry(60, 3)).await;
    let saga = start_order(&mut grpc, r#"{"order_id":"w-1"}"#, false).await;

    let addr = format!("http://{}", server.addr);
    let mut watch = Proc::spawn(&["watch", &saga.id, "--json", "--addr", &addr], &[]);
    // The saga cannot finish before this line is seen: it is live, not a replay.
    let failed = watch.line_containing("attempt_failed").await;
    let failed: Value = serde_json::from_str(&failed).unwrap();
    assert_eq!(failed["step"], "ship-order");
    assert_eq!(failed["outcome"], "TRANSIENT");
    assert!(failed["next_attempt_at"].is_string(), "{failed}");
    carrier_up.store(true, Ordering::SeqCst);
    let run = watch.finish().await;
    run.ok();

    let events: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(events[0]["event"], "saga_started");
    assert_eq!(
        events[0]["steps"],
        serde_json::json!(["validate-order", "charge-payment", "ship-order"])
    );
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=events.len() as u64).collect::<Vec<_>>(),
        "gap-free"
    );
    let last = events.last().unwrap();
    assert_eq!(last["event"], "saga_completed");
    assert_eq!(last["state"], "COMPLETED");
    assert!(events.iter().all(|e| e["saga_id"] == saga.id.as_str()));

    // Human watch of a finished saga replays it and ends at once.
    let human = client(&server, &["watch", &saga.id]).await;
    let text = &human.ok().stdout;
    assert!(text.contains("saga started: order-fulfillment"), "{text}");
    assert!(
        text.contains("ship-order") && text.contains("retry in"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("saga COMPLETED"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_compensates_a_running_saga() {
    let server = TestServer::start().await;
    let shop = serve(FakeParticipant::new(|r| {
        if fwd(r) && r.step == "ship-order" {
            Answer::Status(Code::Unavailable)
        } else {
            Answer::Ok
        }
    }))
    .await;
    let mut grpc = server.client().await;
    register_shop(&mut grpc, &shop, quick_retry(60, 3)).await;
    let saga = start_order(&mut grpc, r#"{"order_id":"c-1"}"#, false).await;
    poll_until("ship-order to be retrying", || {
        let shop = &shop;
        let id = saga.id.clone();
        async move {
            shop.fake
                .trace(&id)
                .iter()
                .any(|c| c.starts_with("F:ship-order"))
                .then_some(())
        }
    })
    .await;

    let run = client(
        &server,
        &[
            "cancel",
            &saga.id,
            "--reason",
            "customer changed their mind",
            "--json",
        ],
    )
    .await;
    let cancelled = run.ok().json();
    assert_eq!(cancelled["id"], saga.id.as_str());
    assert_eq!(cancelled["cancel_reason"], "customer changed their mind");
    // The cancel is journaled at once; compensation starts once the forward
    // call in flight (if any) returns, so the state may still read RUNNING.
    assert!(
        ["RUNNING", "COMPENSATING", "COMPENSATED"].contains(&cancelled["state"].as_str().unwrap()),
        "{cancelled}"
    );
    let done = until_terminal(&mut grpc, &saga.id).await;
    assert_eq!(state(&done), pb::SagaState::Compensated);

    // Human get of a cancelled saga says so.
    let human = client(&server, &["get", &saga.id]).await;
    assert!(
        human
            .ok()
            .stdout
            .lines()
            .any(|l| l.contains("cancelled") && l.contains("customer changed their mind")),
        "{human:#?}"
    );
}

/// `start --delay` schedules a saga (`get` shows when it starts and its
/// deadline, `list --state scheduled` finds it) and `cancel` ends it having
/// called no one; a bad time is a usage error naming the flag.
#[tokio::test]
async fn start_later_with_a_deadline_list_scheduled_and_cancel() {
    let server = TestServer::start().await;
    let shop = declining_shop(&server).await;
    let run = client(
        &server,
        &[
            "start",
            "order-fulfillment",
            "--delay",
            "1h",
            "--deadline",
            "10m",
            "--json",
        ],
    )
    .await;
    let started = run.ok().json();
    let saga = &started["saga"];
    let id = saga["id"].as_str().unwrap().to_string();
    assert_eq!(saga["state"], "SCHEDULED");
    let start_at = humantime::parse_rfc3339(saga["start_at"].as_str().unwrap()).unwrap();
    let deadline = humantime::parse_rfc3339(saga["deadline"].as_str().unwrap()).unwrap();
    assert_eq!(
        deadline.duration_since(start_at).unwrap(),
        Duration::from_secs(600)
    );

    let human = client(&server, &["get", &id]).await.ok().stdout.clone();
    assert!(
        human.lines().any(|l| l.trim_start().starts_with("starts")),
        "{human}"
    );
    assert!(
        human
            .lines()
            .any(|l| l.trim_start().starts_with("deadline")),
        "{human}"
    );
    let listed = client(&server, &["list", "--state", "scheduled", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(names(&listed, "id"), vec![id.clone()]);

    client(&server, &["cancel", &id, "--reason", "not needed"])
        .await
        .ok();
    let mut grpc = server.client().await;
    let done = until_terminal(&mut grpc, &id).await;
    assert_eq!(state(&done), pb::SagaState::Compensated);
    assert!(shop.fake.trace(&id).is_empty());

    let bad = client(&server, &["start", "order-fulfillment", "--at", "tomorrow"]).await;
    bad.expect_code(2);
    assert!(bad.stderr.contains("--at"), "{}", bad.stderr);
}

/// `participants register payments` with short retries, by the command line.
async fn register_payments(server: &TestServer, forward: &str, compensate: &str) {
    let args = [
        "participants",
        "register",
        "payments",
        "--forward",
        forward,
        "--compensate",
        compensate,
        "--max-attempts",
        "3",
        "--max-compensate-attempts",
        "3",
        "--initial-interval",
        "20ms",
        "--max-duration",
        "1m",
    ];
    client(server, &args).await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_refresh_endpoints_repairs_a_saga_whose_participant_moved() {
    let server = TestServer::start().await;
    let shop = serve(FakeParticipant::new(|r| match (fwd(r), r.step.as_str()) {
        (true, "ship-order") => Answer::Reject("no carrier serves this address"),
        _ => Answer::Ok,
    }))
    .await;
    let mut grpc = server.client().await;
    register_shop(&mut grpc, &shop, quick_retry(3, 3)).await;
    // Payments refunds at an address that went away.
    let gone = format!("{}/sagad.v1.ParticipantService/Compensate", dead_addr());
    register_payments(&server, &shop.forward_url(), &gone).await;
    let run = client(
        &server,
        &[
            "start",
            "order-fulfillment",
            "--payload",
            "{}",
            "--wait",
            "--json",
        ],
    )
    .await;
    run.expect_code(5);
    let id = run.json()["saga"]["id"].as_str().unwrap().to_string();

    // It moved back home: registered again, and the saga retried with it.
    register_payments(&server, &shop.forward_url(), &shop.compensate_url()).await;
    let retried = client(&server, &["retry", &id, "--refresh-endpoints"]).await;
    retried.ok();
    assert!(
        retried
            .stdout
            .contains("retry requested with the participants' current endpoints"),
        "{retried:#?}"
    );
    let done = until_terminal(&mut grpc, &id).await;
    assert_eq!(state(&done), pb::SagaState::Compensated);

    let human = client(&server, &["get", &id]).await;
    human.ok();
    let row = human
        .stdout
        .lines()
        .find(|l| l.contains("REFRESHED"))
        .unwrap_or_else(|| panic!("no refresh in the timeline: {human:#?}"));
    assert!(
        row.contains("charge-payment")
            && row.contains(&format!("endpoint {gone} → {}", shop.compensate_url())),
        "{row}"
    );
    let json = client(&server, &["get", &id, "--json"]).await.ok().json();
    let change = &json["steps"][1]["endpoint_changes"][0];
    assert_eq!(change["action"], "compensate", "{json:#}");
    assert_eq!(change["old_endpoint"], gone.as_str());
    assert_eq!(change["new_endpoint"], shop.compensate_url().as_str());
    assert_eq!(
        json["steps"][1]["compensate_endpoint"],
        shop.compensate_url().as_str()
    );
    assert_eq!(json["steps"][1]["retry"]["max_duration"], "1m");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_exits_5_on_failed_and_retry_resumes_compensation() {
    let server = TestServer::start().await;
    let refunds_work = Arc::new(AtomicBool::new(false));
    let shop = {
        let refunds_work = refunds_work.clone();
        serve(FakeParticipant::new(move |r| {
            match (fwd(r), r.step.as_str()) {
                (true, "ship-order") => Answer::Reject("no carrier serves this address"),
                (false, "charge-payment") if !refunds_work.load(Ordering::SeqCst) => {
                    Answer::Reject("refunds are disabled")
                }
                _ => Answer::Ok,
            }
        }))
        .await
    };
    let mut grpc = server.client().await;
    register_shop(&mut grpc, &shop, quick_retry(3, 3)).await;

    let run = client(
        &server,
        &["start", "order-fulfillment", "--payload", "{}", "--wait"],
    )
    .await;
    run.expect_code(5);
    let line = run.error_line();
    assert!(line.contains("FAILED"), "{line}");
    assert!(
        run.stdout.contains("◀ compensation gave up here"),
        "{run:#?}"
    );
    let failed = client(&server, &["list", "--state", "failed", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(failed.as_array().unwrap().len(), 1);
    let id = failed[0]["id"].as_str().unwrap().to_string();

    // The operator fixes the cause, then retries.
    refunds_work.store(true, Ordering::SeqCst);
    let retried = client(&server, &["retry", &id, "--json"]).await.ok().json();
    assert_eq!(retried["id"], id.as_str());
    assert_ne!(retried["state"], "FAILED", "{retried}");
    let done = until_terminal(&mut grpc, &id).await;
    assert_eq!(state(&done), pb::SagaState::Compensated);

    // Retrying a saga that is not FAILED is refused by the server: exit 1.
    let again = client(&server, &["retry", &id]).await;
    again.expect_code(1);
    assert!(
        again.error_line().contains("FAILED_PRECONDITION"),
        "{again:#?}"
    );
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_exit_1_with_the_status_and_message() {
    let server = TestServer::start().await;
    let mut grpc = server.client().await;
    let addr = format!("http://{}", server.addr);

    let cases = [
        Refusal::line(
            "get of an unknown id",
            &["get", UNKNOWN_ID],
            1,
            &["NOT_FOUND", UNKNOWN_ID],
        ),
        Refusal::line(
            "cancel of an unknown id",
            &["cancel", UNKNOWN_ID, "--json"],
            1,
            &["NOT_FOUND"],
        ),
        Refusal::line(
            "watch of an unknown id",
            &["watch", UNKNOWN_ID],
            1,
            &["NOT_FOUND"],
        ),
        Refusal::line(
            "get of a malformed id",
            &["get", "not-an-id"],
            1,
            &["INVALID_ARGUMENT"],
        ),
        Refusal::line(
            "start of an unknown definition",
            &["start", "no-such-definition", "--wait"],
            1,
            &["NOT_FOUND", "no-such-definition"],
        ),
        Refusal::line(
            "register with a malformed forward URL",
            &[
                "participants",
                "register",
                "payments",
                "--forward",
                "not a url",
                "--compensate",
                "http://127.0.0.1:1/x.Y/Z",
            ],
            1,
            &["INVALID_ARGUMENT"],
        ),
    ];

    // A refused command prints nothing on stdout and changes nothing on the server.
    for case in &cases {
        let run = case.run(&["--addr", &addr]).await;
        case.check(&run);
        assert!(
            run.stdout.is_empty(),
            "{}: something on stdout: {run:#?}",
            case.name
        );
        let sagas = grpc
            .list_sagas(pb::ListSagasRequest::default())
            .await
            .unwrap()
            .into_inner()
            .summaries;
        assert!(sagas.is_empty(), "{}: a saga was started", case.name);
        let participants = grpc
            .list_participants(pb::ListParticipantsRequest {})
            .await
            .unwrap()
            .into_inner()
            .participants;
        assert!(
            participants.is_empty(),
            "{}: a participant was registered",
            case.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_exits_3_naming_the_address() {
    let addr = dead_addr();
    for verb in [
        vec!["get", UNKNOWN_ID],
        vec!["list", "--json"],
        vec!["watch", UNKNOWN_ID],
        vec!["start", "order-fulfillment", "--payload", "{}"],
        vec!["cancel", UNKNOWN_ID],
        vec!["retry", UNKNOWN_ID],
        vec!["participants", "list"],
        vec!["definitions", "list"],
    ] {
        let mut args = verb.clone();
        args.extend(["--addr", &addr]);
        let run = sagad(&args).await;
        run.expect_code(3);
        let line = run.error_line();
        assert!(
            line.contains(&format!("is `sagad serve` running at {addr}?")),
            "{verb:?}: {line}"
        );
    }
    // SAGAD_ADDR is the default for --addr, and `host:port` works without a scheme.
    let bare = addr.trim_start_matches("http://").to_string();
    let run = Proc::spawn(&["list"], &[("SAGAD_ADDR", &bare)])
        .finish()
        .await;
    run.expect_code(3);
    assert!(run.error_line().contains(&addr), "{run:#?}");
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_flags_and_bad_payloads_exit_2_before_any_call() {
    // The address is dead: these must fail on their input, not on the connection.
    let addr = dead_addr();
    let cases = [
        Refusal::line(
            "an unknown flag",
            &["list", "--bogus"],
            2,
            &["'--bogus'", "see 'sagad list --help'"],
        ),
        Refusal::line(
            "an unknown state",
            &["list", "--state", "sideways"],
            2,
            &["sideways", "see 'sagad list --help'"],
        ),
        Refusal::line(
            "a limit that is no number",
            &["list", "--limit", "many"],
            2,
            &[],
        ),
        Refusal::line(
            "start without a definition",
            &["start"],
            2,
            &["<DEFINITION>", "see 'sagad start --help'"],
        ),
        Refusal::line("get without an id", &["get"], 2, &["<ID>"]),
        Refusal::line(
            "register without --forward",
            &[
                "participants",
                "register",
                "p",
                "--compensate",
                "http://h:1/a.B/C",
            ],
            2,
            &["--forward"],
        ),
        Refusal::line(
            "register with a timeout that is no duration",
            &[
                "participants",
                "register",
                "p",
                "--forward",
                "u",
                "--compensate",
                "u",
                "--timeout",
                "soon",
            ],
            2,
            &[],
        ),
        Refusal::line(
            "both --payload and --payload-file",
            &["start", "d", "--payload", "{}", "--payload-file", "f"],
            2,
            &[],
        ),
        Refusal::line(
            "an unknown verb",
            &["nonsense-verb"],
            2,
            &["nonsense-verb", "see 'sagad --help'"],
        ),
        Refusal::line(
            "a --payload that is not JSON",
            &["start", "order-fulfillment", "--payload", "{bad"],
            2,
            &["--payload is not valid JSON"],
        ),
        Refusal::line(
            "a --payload-file that does not exist",
            &[
                "start",
                "order-fulfillment",
                "--payload-file",
                "/nonexistent/payload.json",
            ],
            2,
            &["/nonexistent/payload.json"],
        ),
    ];
    for case in &cases {
        let run = case.run(&["--addr", &addr]).await;
        case.check(&run);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_to_completion_and_names_the_three_outcomes() {
    // A debug build under a loaded machine: generous, never a speed assertion.
    let run = Proc::spawn(&["demo"], &[])
        .finish_within(Duration::from_secs(120))
        .await;
    run.ok();
    let out = &run.stdout;
    for outcome in [
        "completed",
        "card declined → compensated",
        "shipping retries exhausted → compensated",
    ] {
        assert!(
            out.lines().any(|l| l.contains('✓') && l.contains(outcome)),
            "the summary names {outcome:?}: {out}"
        );
    }
    // Live progress: the retries and the compensation as they happened.
    assert!(out.contains("ship-order      forward #2 started"), "{out}");
    assert!(out.contains("compensate #1 succeeded"), "{out}");
    assert!(out.contains("◀ failed here"), "{out}");
    assert!(!out.contains('\x1b'), "no colour into a pipe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_over_http_ends_the_three_orders_as_over_grpc() {
    let run = Proc::spawn(&["demo", "--http"], &[])
        .finish_within(Duration::from_secs(120))
        .await;
    run.ok();
    let out = &run.stdout;
    assert!(
        out.contains("registered participant payments  at 127.0.0.1:")
            && out.contains("(HTTP/JSON)"),
        "{out}"
    );
    for outcome in [
        "completed",
        "card declined → compensated",
        "shipping retries exhausted → compensated",
    ] {
        assert!(
            out.lines().any(|l| l.contains('✓') && l.contains(outcome)),
            "the summary names {outcome:?}: {out}"
        );
    }
    // The HTTP answers, as the timeline shows them.
    assert!(out.contains("HTTP 409 Conflict: card declined"), "{out}");
    assert!(out.contains("HTTP 503 Service Unavailable"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serve_keeps_running_prints_commands_and_stops_on_sigterm() {
    let mut demo = Proc::spawn(&["demo", "--serve"], &[]);
    let line = demo.line_containing("coordinator at http://").await;
    let addr = line
        .split_whitespace()
        .last()
        .expect("the line ends in the address")
        .to_string();
    demo.line_containing("Press Ctrl-C").await;
    assert!(
        demo.seen
            .iter()
            .any(|l| l.trim_end().ends_with(&format!("list --addr {addr}"))),
        "the exact list command is printed: {:#?}",
        demo.seen
    );

    let run = sagad(&["list", "--json", "--addr", &addr]).await;
    let mut states = names(&run.ok().json(), "state");
    states.sort();
    assert_eq!(states, vec!["COMPENSATED", "COMPENSATED", "COMPLETED"]);
    let run = sagad(&[
        "start",
        "order-fulfillment",
        "--payload",
        r#"{"order_id":"B-1"}"#,
        "--wait",
        "--addr",
        &addr,
    ])
    .await;
    run.ok();

    demo.terminate();
    let run = demo.finish().await;
    run.ok();
}

/// Starts `sagad serve` with `args` and `env`, and returns it once it listens.
async fn serve_with(args: &[&str], env: &[(&str, &str)]) -> (Proc, SocketAddr) {
    let mut all = vec!["serve"];
    all.extend(args);
    let mut proc = Proc::spawn(&all, env);
    let line = proc.line_containing("sagad listening on ").await;
    let addr = line["sagad listening on ".len()..].trim().parse().unwrap();
    (proc, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_config_file_env_and_flags_apply_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let sagas = Path::new(env!("CARGO_MANIFEST_DIR")).join("sagas");
    let config = dir.path().join("sagad.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \":0\"\ndata_dir = \"from-file\"\nsagas = {:?}\ndefault_timeout = \"3s\"\n",
            sagas.display().to_string()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let from_env = dir.path().join("from-env");
    let from_flag = dir.path().join("from-flag");

    // File, then env on top: the env's data dir wins; the file's listen and sagas hold.
    let (server, addr) = serve_with(
        &["--config", config],
        &[("SAGAD_DATA_DIR", from_env.to_str().unwrap())],
    )
    .await;
    assert!(
        from_env.is_dir(),
        "the journal is where SAGAD_DATA_DIR says"
    );
    assert!(
        !dir.path().join("from-file").exists(),
        "the file's data_dir lost to env"
    );
    let definitions = sagad(&["definitions", "list", "--json", "--addr", &addr.to_string()])
        .await
        .ok()
        .json();
    assert_eq!(names(&definitions, "name"), vec!["order-fulfillment"]);
    server.terminate();
    server.finish().await.ok();

    // A flag beats both; SAGAD_CONFIG names the file as --config does.
    let (server, _) = serve_with(
        &["--data-dir", from_flag.to_str().unwrap()],
        &[
            ("SAGAD_CONFIG", config),
            ("SAGAD_DATA_DIR", from_env.to_str().unwrap()),
        ],
    )
    .await;
    assert!(from_flag.is_dir(), "the journal is where --data-dir says");
    server.terminate();
    server.finish().await.ok();

    // No env, no flag: the file's data dir, relative to the file.
    let (server, _) = serve_with(&["--config", config], &[]).await;
    assert!(dir.path().join("from-file").is_dir());
    server.terminate();
    server.finish().await.ok();
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_bad_configuration_naming_where_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sagad.toml");
    std::fs::write(&config, "listen = \":0\"\nshutdown_grace_period = \"5s\"\n").unwrap();
    let config = config.to_str().unwrap();
    let data_dir = dir.path().join("d");
    // A definition whose step's retry policy is refused: a usage error naming
    // the file (and its line), like a bad config file.
    let sagas = dir.path().join("sagas");
    std::fs::create_dir(&sagas).unwrap();
    let bad_definition = sagas.join("bad.toml");
    std::fs::write(
        &bad_definition,
        "name = \"bad\"\n[[steps]]\nname = \"s\"\nparticipant = \"p\"\nretry = { multiplier = 0.5 }\n",
    )
    .unwrap();
    let bad_definition = bad_definition.to_str().unwrap();
    let cases = [
        Refusal::line(
            "a definition file that does not validate",
            &[
                "serve",
                "--listen",
                ":0",
                "--data-dir",
                data_dir.to_str().unwrap(),
                "--sagas",
                sagas.to_str().unwrap(),
            ],
            2,
            &[bad_definition, "multiplier"],
        ),
        // Names the file and the key.
        Refusal::line(
            "a config file with an unknown key",
            &["serve", "--config", config],
            2,
            &[config, "shutdown_grace_period"],
        ),
        Refusal::line(
            "a SAGAD_DEFAULT_TIMEOUT that is no duration",
            &[
                "serve",
                "--listen",
                ":0",
                "--data-dir",
                data_dir.to_str().unwrap(),
            ],
            2,
            &["SAGAD_DEFAULT_TIMEOUT", "soonish"],
        )
        .with_env(&[("SAGAD_DEFAULT_TIMEOUT", "soonish")]),
        Refusal::line(
            "--max-payload-bytes 0",
            &["serve", "--max-payload-bytes", "0"],
            2,
            &["--max-payload-bytes"],
        ),
    ];
    for case in &cases {
        let run = case.run(&[]).await;
        case.check(&run);
    }
}

/// Texts from participants and callers reach the operator's terminal only
/// escaped: a participant whose refusal holds terminal control sequences
/// (retitle, clear the screen, recolour) cannot act on the terminal through
/// `get`, `list` or `watch`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_from_outside_are_escaped_in_human_output() {
    const HOSTILE: &str = "\u{1b}]0;owned\u{7}\u{1b}[2J\u{1b}[32mCOMPLETED\r";
    let server = TestServer::start().await;
    let shop = serve(FakeParticipant::new(|r| {
        if fwd(r) && r.step == "ship-order" {
            Answer::Reject(HOSTILE)
        } else {
            Answer::Ok
        }
    }))
    .await;
    let mut grpc = server.client().await;
    register_shop(&mut grpc, &shop, quick_retry(3, 3)).await;
    let saga = start_order(&mut grpc, r#"{"order_id":"esc-1"}"#, true).await;
    assert_eq!(state(&saga), pb::SagaState::Compensated);
    for args in [
        vec!["get", saga.id.as_str()],
        vec!["list"],
        vec!["watch", saga.id.as_str()],
    ] {
        let run = client(&server, &args).await;
        run.ok();
        assert!(
            !run.stdout.contains(['\u{1b}', '\u{7}', '\r']),
            "{args:?} printed a control character: {:?}",
            run.stdout
        );
        if args[0] != "list" || run.stdout.contains("owned") {
            assert!(run.stdout.contains("\\u{1b}"), "{args:?}: {}", run.stdout);
        }
    }
}
