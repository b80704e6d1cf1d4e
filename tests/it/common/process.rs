//! The real `sagad` binary as a child process: spawned on a loopback port 0,
//! its address read from the line it prints, killed with SIGKILL or stopped with
//! SIGTERM. The child is always killed when the handle is dropped.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use super::DEADLINE;

/// A running `sagad serve`.
pub struct SagadProcess {
    child: Child,
    pub addr: SocketAddr,
    /// Lines the process wrote to stderr so far are collected here on exit.
    stderr: Option<std::thread::JoinHandle<String>>,
    /// The same lines as they come, for a test that waits for one.
    stderr_so_far: Arc<Mutex<String>>,
    /// Where `/metrics` is served, once the process said so (only with
    /// `--metrics-listen` or `SAGAD_METRICS_LISTEN`).
    metrics: Arc<Mutex<Option<SocketAddr>>>,
}

/// The repository's shipped definitions.
pub fn sagas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sagas")
}

impl SagadProcess {
    /// Starts `sagad serve` on `data_dir` with extra environment variables and
    /// waits for its address line. If the process dies before printing it, the
    /// address is `127.0.0.1:0` and `wait_exit` tells how it ended.
    pub fn spawn(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::spawn_with(data_dir, &[], env)
    }

    /// As [`SagadProcess::spawn`], with extra `serve` flags (a `--listen`
    /// among them replaces the free loopback port).
    pub fn spawn_with(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn_under_umask(data_dir, args, env, None)
    }

    /// As [`SagadProcess::spawn_with`], the process started under `umask`
    /// when given (else this process's).
    pub fn spawn_under_umask(
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        umask: Option<u32>,
    ) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sagad"));
        if let Some(mask) = umask {
            use std::os::unix::process::CommandExt;
            // SAFETY: umask is async-signal-safe, as code between fork and
            // exec must be.
            unsafe {
                command.pre_exec(move || {
                    libc::umask(mask as libc::mode_t);
                    Ok(())
                });
            }
        }
        command.arg("serve");
        if !args.contains(&"--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        command
            .args(["--shutdown-grace", "5s"])
            .args(args)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--sagas")
            .arg(sagas_dir())
            .env("SAGAD_LOG", "warn")
            .env_remove("FAILPOINTS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn sagad");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let stderr_so_far = Arc::new(Mutex::new(String::new()));
        let so_far = stderr_so_far.clone();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                text.push_str(&line);
                text.push('\n');
                let mut so_far = so_far.lock().unwrap();
                so_far.push_str(&line);
                so_far.push('\n');
            }
            text
        });
        let (tx, rx) = mpsc::channel();
        let metrics = Arc::new(Mutex::new(None));
        let metrics_at = metrics.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("sagad listening on ") {
                    let _ = tx.send(addr.trim().parse::<SocketAddr>().unwrap());
                }
                // `sagad metrics on http://127.0.0.1:PORT/metrics`
                if let Some(url) = line.strip_prefix("sagad metrics on ")
                    && let Some(addr) = url
                        .split("://")
                        .nth(1)
                        .and_then(|rest| rest.split('/').next())
                {
                    *metrics_at.lock().unwrap() = addr.parse().ok();
                }
            }
        });
        // Wait for the address line, or for the process to die first (a crash
        // point armed for recovery can fire before the line is printed).
        let start = Instant::now();
        let addr = loop {
            if let Ok(addr) = rx.recv_timeout(Duration::from_millis(10)) {
                break addr;
            }
            if child.try_wait().unwrap().is_some() {
                break "127.0.0.1:0".parse().unwrap();
            }
            if start.elapsed() > DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "sagad did not print its address; stderr:\n{}",
                    stderr.join().unwrap_or_default()
                );
            }
        };
        Self {
            child,
            addr,
            stderr: Some(stderr),
            stderr_so_far,
            metrics,
        }
    }

    /// Where the process serves `/metrics`, once it printed it.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        *self.metrics.lock().unwrap()
    }

    /// What the process wrote to stderr so far.
    pub fn stderr_so_far(&self) -> String {
        self.stderr_so_far.lock().unwrap().clone()
    }

    /// Sends signal `name` (`HUP`, `TERM`, …) with `kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM; returns the exit status and stderr once the process exited.
    pub fn terminate(mut self) -> (ExitStatus, String) {
        self.signal("TERM");
        self.wait_exit()
    }

    /// Waits (up to the deadline) for the process to exit by itself.
    pub fn wait_exit(&mut self) -> (ExitStatus, String) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let stderr = self
                    .stderr
                    .take()
                    .map(|h| h.join().unwrap_or_default())
                    .unwrap_or_default();
                return (status, stderr);
            }
            assert!(start.elapsed() < DEADLINE, "sagad did not exit in time");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for SagadProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a client verb of the real binary ended.
#[derive(Debug)]
pub struct ClientRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the client verb `args` of the real binary against the coordinator at
/// `addr` (`--addr http://ADDR` is added, and nothing inherited that sagad
/// reads configures it), to its end; killed if it outlives the deadline.
pub async fn sagad_client(addr: SocketAddr, args: &[&str]) -> ClientRun {
    use std::io::Read;

    let mut command = Command::new(env!("CARGO_BIN_EXE_sagad"));
    command
        .args(args)
        .args(["--addr", &format!("http://{addr}")])
        .env_remove("SAGAD_TOKEN")
        .env_remove("SAGAD_CA")
        .env_remove("SAGAD_CERT")
        .env_remove("SAGAD_KEY")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = super::KillOnDrop(command.spawn().expect("spawn sagad"));
    // Both pipes drained as the child writes, so a long answer cannot block it.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.0.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.0.stderr.take().unwrap()));
    let code = super::poll_until("the client verb to exit", || {
        let exited = child.0.try_wait().unwrap();
        async move { exited.map(|status| status.code()) }
    })
    .await;
    ClientRun {
        code,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}
