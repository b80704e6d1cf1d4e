//! Child processes (the coordinator, the participants) that announce where they
//! listen on stdout and never outlive the bench.
//!
//! Guarantees:
//! - A [`ChildGuard`] that is dropped without [`ChildGuard::stop`] (an error, a
//!   panic) stops its process: SIGTERM, a grace period, then SIGKILL, and waits.
//! - When `setpriv` (util-linux) is installed, the child is started through it
//!   with `--pdeathsig TERM`, so it is also stopped if the bench itself is killed
//!   (SIGKILL runs no destructor). The parent-death signal fires when the *thread*
//!   that spawned the child exits, so children must be spawned from the main
//!   thread (the future given to `block_on`), never from a tokio blocking thread,
//!   which exits after a while idle.
//! - The child's stdout is drained by a thread (its lines go to a channel) and its
//!   stderr goes to a log file, so a chatty child never blocks on a full pipe.

use std::{
    ffi::OsStr,
    fs::File,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// How long a child may take to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// How often a stopping child is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Lines of a child's log shown when it fails.
const LOG_TAIL_LINES: usize = 20;

/// A running child process, stopped on drop.
pub struct ChildGuard {
    /// What the child is, for messages.
    name: String,
    child: Child,
    /// The child's stdout, line by line.
    stdout_rx: mpsc::Receiver<String>,
    /// Where its stderr goes.
    log: PathBuf,
    /// Set once the child has been waited for.
    exited: Option<ExitStatus>,
}

impl ChildGuard {
    /// Starts `program` with `args`, its stderr written to `log`.
    pub fn spawn(name: &str, program: &Path, args: &[&OsStr], log: &Path) -> anyhow::Result<Self> {
        let mut command = if which("setpriv") {
            let mut command = Command::new("setpriv");
            command.args(["--pdeathsig", "TERM", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        let stderr = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting the {name} ({})", program.display()))?;
        let stdout = child.stdout.take().context("child stdout is piped")?;
        let (line_tx, stdout_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line_tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            name: name.to_string(),
            child,
            stdout_rx,
            log: log.to_path_buf(),
            exited: None,
        })
    }

    /// The process id (the same through `setpriv`, which execs the program).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first stdout line that starts with `prefix`, within `timeout`.
    pub fn line_starting_with(
        &mut self,
        prefix: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout_rx.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return Ok(line),
                Ok(_) => {}
                Err(e) => {
                    let status = self.child.try_wait().ok().flatten();
                    bail!(
                        "the {} printed no line starting with {prefix:?} ({e}; exit status {status:?}); its log ends:\n{}",
                        self.name,
                        self.log_tail()
                    );
                }
            }
        }
    }

    /// Fails if the child has exited.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            self.exited = Some(status);
            bail!(
                "the {} exited ({status}); its log ends:\n{}",
                self.name,
                self.log_tail()
            );
        }
        Ok(())
    }

    /// SIGKILL, and waits for the process to be gone: a crash, for the
    /// failover measurement.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if self.exited.is_none() {
            self.child.kill()?;
            self.exited = Some(self.child.wait()?);
        }
        Ok(())
    }

    /// SIGTERM, then waits up to the grace period (then SIGKILL). Returns how it exited.
    pub fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.exited {
            return Ok(status);
        }
        if self.child.try_wait()?.is_none() {
            // `kill` is the portable way to send SIGTERM without unsafe code.
            let sent = Command::new("kill")
                .args(["-TERM", &self.pid().to_string()])
                .stderr(Stdio::null())
                .status();
            if !sent.is_ok_and(|s| s.success()) {
                self.child.kill()?;
            }
            let deadline = Instant::now() + STOP_GRACE;
            while self.child.try_wait()?.is_none() && Instant::now() < deadline {
                std::thread::sleep(POLL_INTERVAL);
            }
        }
        if self.child.try_wait()?.is_none() {
            eprintln!(
                "sagad-bench: the {} ignored SIGTERM for {STOP_GRACE:?}: killing it",
                self.name
            );
            self.child.kill()?;
        }
        let status = self.child.wait()?;
        self.exited = Some(status);
        Ok(status)
    }

    /// The last lines of the child's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.exited.is_none()
            && let Err(e) = self.stop()
        {
            eprintln!("sagad-bench: stopping the {}: {e:#}", self.name);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether `program` is on the PATH.
fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}
