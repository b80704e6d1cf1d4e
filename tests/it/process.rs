//! The real `sagad` binary: `serve` announces its port, answers gRPC, refuses a
//! second process on the same data directory, stops cleanly on SIGTERM, and
//! refuses bad configuration with a message that names the culprit.

use std::{
    io::{BufRead, BufReader, Read},
    net::SocketAddr,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use sagad::proto::v1::{self as pb, coordinator_client::CoordinatorClient};

/// How long anything may take before the test fails: generous, never a speed assertion.
const DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

fn shipped_sagas() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/sagas"))
}

/// A running `sagad`, killed on drop so a failing test never leaks it.
struct Sagad {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: Option<JoinHandle<String>>,
}

impl Sagad {
    /// Starts `sagad` with `args`, stdout and stderr captured (and drained, so a
    /// chatty process never blocks on a full pipe).
    fn spawn(args: &[&std::ffi::OsStr]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sagad"));
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Only the arguments configure the process under test.
        for var in [
            "SAGAD_LISTEN",
            "SAGAD_DATA_DIR",
            "SAGAD_SAGAS",
            "SAGAD_MAX_PAYLOAD_BYTES",
            "SAGAD_SHUTDOWN_GRACE",
            "SAGAD_DEFAULT_TIMEOUT",
        ] {
            command.env_remove(var);
        }
        command.env("SAGAD_LOG", "info");
        let mut child = command.spawn().expect("sagad starts");
        let out = child.stdout.take().unwrap();
        let (tx, stdout) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        });
        Self {
            child,
            stdout,
            stderr: Some(stderr),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first stdout line that starts with `prefix`, within the deadline.
    fn line_starting_with(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(e) => {
                    let status = self.child.try_wait().ok().flatten();
                    panic!("no stdout line starting with {prefix:?} ({e}; exit status {status:?})");
                }
            }
        }
    }

    /// Waits for the process to exit, failing the test at the deadline.
    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "sagad (pid {}) did not exit within {DEADLINE:?}",
                self.pid()
            );
            std::thread::sleep(POLL);
        }
    }

    /// Everything written to stderr; call once the process has exited.
    fn stderr(&mut self) -> String {
        self.stderr
            .take()
            .expect("stderr is read once")
            .join()
            .expect("stderr reader")
    }

    /// Sends SIGTERM the way an init system would.
    fn terminate(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }
}

impl Drop for Sagad {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn os(text: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(text)
}

/// Lists the definitions over gRPC, retrying while the server is still
/// recovering (UNAVAILABLE) or not yet accepting.
fn list_definitions(addr: SocketAddr) -> Vec<pb::SagaDefinition> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let last = match CoordinatorClient::connect(format!("http://{addr}")).await {
                Ok(mut client) => {
                    match client.list_definitions(pb::ListDefinitionsRequest {}).await {
                        Ok(response) => return response.into_inner().definitions,
                        Err(status) if status.code() == tonic::Code::Unavailable => {
                            status.to_string()
                        }
                        Err(status) => panic!("ListDefinitions failed: {status}"),
                    }
                }
                Err(e) => e.to_string(),
            };
            assert!(
                Instant::now() < deadline,
                "ListDefinitions did not answer within {DEADLINE:?}: {last}"
            );
            tokio::time::sleep(POLL).await;
        }
    })
}

#[test]
fn serve_announces_its_port_refuses_a_second_owner_and_stops_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let mut first = Sagad::spawn(&[
        os("serve"),
        os("--listen"),
        os("127.0.0.1:0"),
        os("--data-dir"),
        data.path().as_os_str(),
        os("--sagas"),
        shipped_sagas().as_os_str(),
    ]);
    let line = first.line_starting_with("sagad listening on ");
    let addr: SocketAddr = line["sagad listening on ".len()..]
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{line:?} does not end in an address: {e}"));
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0, "the real port is printed, not 0");

    let definitions = list_definitions(addr);
    let names: Vec<_> = definitions.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, vec!["order-fulfillment"]);
    assert_eq!(definitions[0].steps.len(), 3);

    let mut second = Sagad::spawn(&[
        os("serve"),
        os("--listen"),
        os("127.0.0.1:0"),
        os("--data-dir"),
        data.path().as_os_str(),
        os("--sagas"),
        shipped_sagas().as_os_str(),
    ]);
    let status = second.wait_exit();
    let stderr = second.stderr();
    assert!(
        !status.success(),
        "a second sagad on the same data dir must fail: {status}; stderr: {stderr}"
    );
    assert!(
        stderr.contains(&data.path().display().to_string()),
        "stderr names the data directory: {stderr}"
    );
    assert!(
        stderr.contains("already in use"),
        "stderr says it is in use: {stderr}"
    );
    assert!(
        stderr.contains(&format!("pid {}", first.pid())),
        "stderr names the holder: {stderr}"
    );

    // The refused second process left the first one working.
    assert_eq!(list_definitions(addr).len(), 1);

    first.terminate();
    let status = first.wait_exit();
    let stderr = first.stderr();
    assert!(
        status.success(),
        "SIGTERM stops sagad cleanly with status 0, got {status}; stderr: {stderr}"
    );
    assert!(
        stderr.contains("stopped cleanly"),
        "it logs the clean stop: {stderr}"
    );
    assert!(
        !stderr.contains('\x1b'),
        "no colour codes into a pipe: {stderr:?}"
    );
}

#[test]
fn a_malformed_definition_stops_the_start_with_its_path_and_line() {
    let sagas = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(
        sagas.path().join("bad.toml"),
        "name = \"bad\"\n\n[[steps]]\ncolour = \"red\"\nname = \"a\"\nparticipant = \"p\"\n",
    )
    .unwrap();
    let mut sagad = Sagad::spawn(&[
        os("serve"),
        os("--listen"),
        os("127.0.0.1:0"),
        os("--data-dir"),
        data.path().as_os_str(),
        os("--sagas"),
        sagas.path().as_os_str(),
    ]);
    let status = sagad.wait_exit();
    let stderr = sagad.stderr();
    assert!(
        !status.success(),
        "a bad definition stops the start; stderr: {stderr}"
    );
    assert!(
        stderr.contains("bad.toml:4"),
        "stderr names file and line: {stderr}"
    );
    assert!(
        stderr.contains("colour"),
        "stderr names the unknown field: {stderr}"
    );
}

#[test]
fn a_malformed_listen_address_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let mut sagad = Sagad::spawn(&[
        os("serve"),
        os("--listen"),
        os("nonsense"),
        os("--data-dir"),
        data.path().as_os_str(),
        os("--sagas"),
        shipped_sagas().as_os_str(),
    ]);
    let status = sagad.wait_exit();
    let stderr = sagad.stderr();
    assert!(
        !status.success(),
        "--listen nonsense must fail; stderr: {stderr}"
    );
    assert!(
        stderr.contains("--listen"),
        "stderr names the flag: {stderr}"
    );
    assert!(
        stderr.contains("nonsense"),
        "stderr quotes the value: {stderr}"
    );
}
