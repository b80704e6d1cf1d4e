//! A throwaway PostgreSQL server for tests and benchmarks: `initdb` into a
//! temporary directory, the server on a free loopback port, one database per
//! user, everything stopped and removed afterwards.
//!
//! The server binaries are found with `pg_config --bindir`, else in
//! `/usr/lib/postgresql/*/bin` (the newest). Without them, starting fails
//! with a message saying to install Debian's `postgresql` package: a test
//! that needs PostgreSQL fails, it never passes silently.
//!
//! PostgreSQL refuses to run as root. When this process is root, `initdb`
//! and the server run as the `postgres` user (the credentials are switched in
//! the child before it executes, as `runuser -u postgres --` would), and the
//! temporary directory is handed to that user.
//!
//! Nothing is left running, whatever happens to the process that started it:
//! - [`Cluster`]'s `Drop` stops the server (immediate shutdown) and removes
//!   the directory;
//! - the server is started directly (not daemonised by `pg_ctl`) with a
//!   parent-death signal, from a thread that lives as long as the process: a
//!   process that dies (a panic that aborts, SIGKILL) takes its server with
//!   it;
//! - [`Cluster::shared`], one server for a whole test binary (statics are
//!   never dropped), is stopped and removed by an `atexit` handler;
//! - [`Cluster::kill`] (a crash of the server: SIGKILL of the postmaster)
//!   waits until the server's other processes have noticed and exited,
//!   kills any that have not, and removes the shared memory segment a
//!   killed postmaster leaves behind.
//!
//! [`Cluster::start_with_tls`] starts one that speaks TLS, with the
//! certificates and `pg_hba.conf` lines a test gives it.
//!
//! [`Cluster::standby`] makes a synchronous streaming standby of a server
//! (`pg_basebackup -R` into a directory of its own, the same guarantees),
//! and [`Standby::promote`] turns it into a primary: a failover, for the
//! tests of what the coordinators do when their database moves.

use std::{
    fs,
    io::{self, Read},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

/// How long the server may take to accept connections (and a standby to
/// be in sync, a promotion to finish, a killed server's processes to exit).
const START_DEADLINE: Duration = Duration::from_secs(60);
/// The standby's `cluster_name`, which its WAL receiver gives the primary
/// as its `application_name`, which `synchronous_standby_names` names.
const STANDBY_NAME: &str = "sagad_standby";
/// Fresh ports tried when the one picked was taken meanwhile.
const PORT_TRIES: usize = 5;

/// Why a throwaway server could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ThrowawayError {
    #[error(
        "no PostgreSQL server binaries (initdb, postgres) found with pg_config --bindir or in /usr/lib/postgresql/*/bin: install Debian's postgresql package (apt-get install postgresql)"
    )]
    NoBinaries,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{what} failed: {output}")]
    Failed { what: String, output: String },
    #[error("creating database {name}: {source}")]
    Database {
        name: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> ThrowawayError {
    let what = what.into();
    move |source| ThrowawayError::Io { what, source }
}

/// What a throwaway server speaking TLS is given (PEM).
pub struct ServerTlsFiles {
    /// Its certificate and key.
    pub cert_pem: String,
    pub key_pem: String,
    /// The CAs client certificates are checked against (`cert`
    /// authentication in `hba`); none: no client certificates.
    pub client_ca_pem: Option<String>,
    /// `pg_hba.conf` lines put before initdb's, which let everyone in over
    /// 127.0.0.1 with or without TLS: `hostnossl all someone 127.0.0.1/32
    /// reject` makes `someone` use TLS.
    pub hba: Vec<String>,
}

/// A running throwaway server; see the module docs.
pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    /// The user the server runs as, when this process is root.
    run_as: Option<(u32, u32)>,
    /// Settings (`name=value`) given to the server beside the usual ones.
    settings: Vec<String>,
    /// The server process; `None` once stopped.
    server: Mutex<Option<Child>>,
    /// Removed with the directory by `Drop` (a shared cluster never drops:
    /// its `atexit` handler removes the directory).
    _dir: Option<tempfile::TempDir>,
}

impl Cluster {
    /// Initialises and starts a new server.
    pub fn start() -> Result<Self, ThrowawayError> {
        let mut cluster = Self::unstarted()?;
        cluster.initdb()?;
        cluster.start_server()?;
        Ok(cluster)
    }

    /// Initialises and starts a new server that speaks TLS (see
    /// [`ServerTlsFiles`]).
    pub fn start_with_tls(tls: &ServerTlsFiles) -> Result<Self, ThrowawayError> {
        let mut cluster = Self::unstarted()?;
        cluster.initdb()?;
        let data = cluster.data();
        let mut files = vec![("server.crt", &tls.cert_pem), ("server.key", &tls.key_pem)];
        cluster.settings.extend([
            "ssl=on".to_string(),
            "ssl_cert_file=server.crt".to_string(),
            "ssl_key_file=server.key".to_string(),
        ]);
        if let Some(ca) = &tls.client_ca_pem {
            files.push(("root.crt", ca));
            cluster.settings.push("ssl_ca_file=root.crt".to_string());
        }
        for (name, pem) in files {
            let path = data.join(name);
            fs::write(&path, pem).map_err(io_error(format!("writing {}", path.display())))?;
            // The server refuses a key others may read.
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
                .map_err(io_error(format!("restricting {}", path.display())))?;
            if let Some((uid, gid)) = cluster.run_as {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .map_err(io_error(format!("handing {} to postgres", path.display())))?;
            }
        }
        // Read top down, first match wins: the caller's lines come first.
        let hba = data.join("pg_hba.conf");
        let initdb_lines = fs::read_to_string(&hba).map_err(io_error("reading pg_hba.conf"))?;
        let lines = format!("{}\n{initdb_lines}", tls.hba.join("\n"));
        fs::write(&hba, lines).map_err(io_error("writing pg_hba.conf"))?;
        cluster.start_server()?;
        Ok(cluster)
    }

    /// A cluster with a directory of its own (handed to the postgres user
    /// when root), and neither data nor a server yet.
    fn unstarted() -> Result<Self, ThrowawayError> {
        let bin = find_binaries()?;
        let temp = tempfile::Builder::new()
            .prefix("sagad-pg-")
            .tempdir()
            .map_err(io_error("creating a directory for PostgreSQL"))?;
        let dir = temp.path().to_path_buf();
        let run_as = postgres_user_if_root()?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(io_error(format!(
                "handing {} to the postgres user",
                dir.display()
            )))?;
        }
        Ok(Self {
            bin,
            dir,
            port: 0,
            run_as,
            settings: Vec::new(),
            server: Mutex::new(None),
            _dir: Some(temp),
        })
    }

    /// A streaming standby of this server, on a port of its own, and
    /// synchronous: once this returns, a commit on this server answers only
    /// after the standby has its WAL on disk (`synchronous_commit` is on,
    /// the default), so what was acknowledged survives a [`Cluster::kill`]
    /// and a [`Standby::promote`]. One standby per server.
    pub fn standby(&self) -> Result<Standby, ThrowawayError> {
        let mut standby = Self::unstarted()?;
        standby
            .settings
            .push(format!("cluster_name={STANDBY_NAME}"));
        // A copy of the data directory with standby.signal and a
        // primary_conninfo naming this server (-R), the WAL written
        // meanwhile streamed beside it (-X stream), after a checkpoint
        // taken at once (-c fast) rather than spread over minutes. initdb's
        // pg_hba.conf already lets replication in over 127.0.0.1 (trust),
        // and wal_level=replica and max_wal_senders=10 are the defaults.
        let output = standby
            .command("pg_basebackup")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-D"])
            .arg(standby.data())
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"])
            .stdin(Stdio::null())
            .output()
            .map_err(io_error("running pg_basebackup"))?;
        if !output.status.success() {
            return Err(ThrowawayError::Failed {
                what: format!("pg_basebackup of the server on port {}", self.port),
                output: format!(
                    "{}\nthe primary's log:\n{}",
                    String::from_utf8_lossy(&output.stderr),
                    self.log()
                ),
            });
        }
        standby.start_server()?;
        // Only now, after the copy: a standby that carried the setting would,
        // once promoted, wait at every commit for a standby of its own.
        self.psql(&format!(
            "ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'"
        ))?;
        self.psql("SELECT pg_reload_conf()")?;
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let state = self.psql(&format!(
                "SELECT sync_state FROM pg_stat_replication
                 WHERE application_name = '{STANDBY_NAME}' AND state = 'streaming'"
            ))?;
            if state == "sync" {
                return Ok(Standby { server: standby });
            }
            if Instant::now() > deadline {
                return Err(ThrowawayError::Failed {
                    what: format!("making the standby on port {} synchronous", standby.port),
                    output: format!(
                        "not in sync within {START_DEADLINE:?} (sync_state '{state}')\nthe primary's log:\n{}\nthe standby's log:\n{}",
                        self.log(),
                        standby.log()
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One server for the whole process, started by the first caller; the
    /// same error for every caller when it cannot start.
    pub fn shared() -> Result<&'static Cluster, &'static str> {
        static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();
        extern "C" fn stop_shared() {
            if let Some(Ok(cluster)) = SHARED.get() {
                cluster.stop();
                let _ = fs::remove_dir_all(&cluster.dir);
            }
        }
        SHARED
            .get_or_init(|| {
                let cluster = Cluster::start().map_err(|e| e.to_string())?;
                // SAFETY: registering a plain extern "C" function has no
                // preconditions; it runs at exit, when only this static is read.
                unsafe { libc::atexit(stop_shared) };
                Ok(cluster)
            })
            .as_ref()
            .map_err(String::as_str)
    }

    /// The port the server listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` (the superuser `postgres`, no password).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A fresh, empty database; returns its URL.
    pub async fn database(&self) -> Result<String, ThrowawayError> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let name = format!(
            "sagad_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let failed = |source| ThrowawayError::Database {
            name: name.clone(),
            source,
        };
        let (client, connection) =
            tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
                .await
                .map_err(failed)?;
        let connection = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .map_err(failed)?;
        drop(client);
        let _ = connection.await;
        Ok(self.url(&name))
    }

    /// Stops the server at once (immediate shutdown: what a crash of the
    /// database leaves behind), and waits for it to be gone.
    pub fn stop(&self) {
        let server = self.server.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut server) = server {
            // SIGQUIT: the postmaster tells its backends to quit and exits.
            // SAFETY: kill with a pid we own (not yet waited on) and a signal number.
            unsafe { libc::kill(server.id() as i32, libc::SIGQUIT) };
            let deadline = Instant::now() + START_DEADLINE;
            while matches!(server.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = server.kill();
            let _ = server.wait();
        }
    }

    /// Kills the server as a crash of it does: SIGKILL of the postmaster,
    /// nothing shut down in order, nothing written on the way out.
    ///
    /// Its other processes (backends, WAL senders, the checkpointer…) are
    /// not signalled: on PostgreSQL 15 each one notices the postmaster's
    /// death at its next wait and exits (a backend waiting for its
    /// synchronous standby stops waiting and exits without answering), so
    /// every connection to the server ends within milliseconds. This waits
    /// until they are gone, SIGKILLs any left after a deadline, and removes
    /// the System V shared memory segment that only an orderly exit of the
    /// postmaster would have removed.
    pub fn kill(&self) {
        let server = self.server.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(mut server) = server else {
            return;
        };
        // Line 7 of postmaster.pid: the segment's key and id.
        let segment = fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()
            .and_then(|text| {
                let line = text.lines().nth(6)?.to_string();
                let mut fields = line.split_whitespace().map(str::parse::<i64>);
                Some((fields.next()?.ok()?, fields.next()?.ok()?))
            });
        let _ = server.kill();
        let _ = server.wait();
        let mut deadline = Instant::now() + START_DEADLINE;
        let mut killed = false;
        loop {
            let left = processes_in(&self.data());
            if left.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                if killed {
                    // Beyond what a signal can do (stuck in the kernel).
                    break;
                }
                for pid in left {
                    // SAFETY: kill with a pid and a signal number; the pid
                    // was a process of this server a moment ago.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                killed = true;
                deadline = Instant::now() + START_DEADLINE;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some((key, id)) = segment {
            remove_segment(key, id as libc::c_int);
        }
    }

    /// Starts the server again after [`Cluster::stop`], on the same port.
    pub fn restart(&self) -> Result<(), ThrowawayError> {
        self.run_server(self.port)
    }

    /// What the server wrote to its log so far (for errors).
    fn log(&self) -> String {
        let mut log = String::new();
        let _ = fs::File::open(self.dir.join(format!("server-{}.log", self.port)))
            .and_then(|mut f| f.read_to_string(&mut log));
        log
    }

    /// Runs one statement with psql as the superuser; its output, trimmed.
    fn psql(&self, statement: &str) -> Result<String, ThrowawayError> {
        let output = self
            .command("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres"])
            // No psqlrc, unaligned rows without headers, errors as failures.
            .args([
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                statement,
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(io_error("running psql"))?;
        if !output.status.success() {
            return Err(ThrowawayError::Failed {
                what: format!("psql -c \"{statement}\""),
                output: format!(
                    "{}\nthe server's log:\n{}",
                    String::from_utf8_lossy(&output.stderr),
                    self.log()
                ),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        // A working directory the postgres user may enter.
        command.current_dir(&self.dir).env_remove("PGDATA");
        command
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn initdb(&self) -> Result<(), ThrowawayError> {
        let output = self
            .command("initdb")
            .arg("-D")
            .arg(self.data())
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"])
            // The cluster is thrown away: its creation need not reach the disk.
            .arg("--no-sync")
            .stdin(Stdio::null())
            .output()
            .map_err(io_error("running initdb"))?;
        if !output.status.success() {
            return Err(ThrowawayError::Failed {
                what: "initdb".into(),
                output: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        Ok(())
    }

    fn start_server(&mut self) -> Result<(), ThrowawayError> {
        let mut last = None;
        for _ in 0..PORT_TRIES {
            let port = free_port()?;
            match self.run_server(port) {
                Ok(()) => {
                    self.port = port;
                    return Ok(());
                }
                // Another process took the port between the pick and the bind.
                Err(ThrowawayError::Failed { output, .. }) if output.contains("could not bind") => {
                    last = Some(output);
                }
                Err(e) => return Err(e),
            }
        }
        Err(ThrowawayError::Failed {
            what: format!("starting PostgreSQL ({PORT_TRIES} ports tried)"),
            output: last.unwrap_or_default(),
        })
    }

    /// Runs the server on `port` and waits until it accepts connections.
    fn run_server(&self, port: u16) -> Result<(), ThrowawayError> {
        let log_path = self.dir.join(format!("server-{port}.log"));
        let log = fs::File::create(&log_path).map_err(io_error("creating the server log"))?;
        let mut command = self.command("postgres");
        command
            .arg("-D")
            .arg(self.data())
            .args(["-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.dir.display()))
            .args(["-c", "max_connections=200", "-c", "logging_collector=off"])
            .args(self.settings.iter().flat_map(|setting| ["-c", setting]))
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(io_error("opening the server log"))?,
            )
            .stderr(log);
        // SAFETY: the closure only calls async-signal-safe functions (prctl,
        // getppid) between fork and exec.
        unsafe {
            command.pre_exec(|| {
                // Runs after the switch to the postgres user, which would
                // clear it; kept across the exec of a plain binary.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() == 1 {
                    return Err(io::Error::other("the starting process is gone"));
                }
                Ok(())
            });
        }
        let mut server = spawn_tied(command).map_err(io_error("starting postgres"))?;
        let pid_file = self.data().join("postmaster.pid");
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = server.try_wait().map_err(io_error("watching postgres"))? {
                let mut output = String::new();
                let _ = fs::File::open(&log_path).and_then(|mut f| f.read_to_string(&mut output));
                return Err(ThrowawayError::Failed {
                    what: format!("postgres ({status})"),
                    output,
                });
            }
            // The eighth line of postmaster.pid says "ready" once the server
            // accepts connections.
            let ready = fs::read_to_string(&pid_file)
                .is_ok_and(|text| text.lines().nth(7).is_some_and(|l| l.trim() == "ready"));
            if ready {
                break;
            }
            if Instant::now() > deadline {
                let _ = server.kill();
                let _ = server.wait();
                return Err(ThrowawayError::Failed {
                    what: "postgres".into(),
                    output: format!("not ready within {START_DEADLINE:?}"),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        *self.server.lock().unwrap_or_else(|p| p.into_inner()) = Some(server);
        Ok(())
    }
}

/// A streaming standby of a [`Cluster`], made by [`Cluster::standby`]:
/// read-only until promoted. Dropping it stops it and removes its directory.
pub struct Standby {
    server: Cluster,
}

impl Standby {
    /// The port the standby listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// The URL of database `db` on the standby.
    pub fn url(&self, db: &str) -> String {
        self.server.url(db)
    }

    /// Promotes the standby (`pg_ctl promote`, which waits until it is
    /// done): the server it returns takes writes, on the same port. It has
    /// no standby of its own, and commits without waiting for one.
    pub fn promote(self) -> Result<Cluster, ThrowawayError> {
        let output = self
            .server
            .command("pg_ctl")
            .args(["promote", "-w", "-t", &START_DEADLINE.as_secs().to_string()])
            .arg("-D")
            .arg(self.server.data())
            .stdin(Stdio::null())
            .output()
            .map_err(io_error("running pg_ctl promote"))?;
        if !output.status.success() {
            return Err(ThrowawayError::Failed {
                what: format!("promoting the standby on port {}", self.server.port),
                output: format!(
                    "{}{}\nthe standby's log:\n{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr),
                    self.server.log()
                ),
            });
        }
        Ok(self.server)
    }
}

/// A fresh database on the [`Cluster::shared`] server; its URL. The error
/// says why there is no server (no binaries: install `postgresql`).
pub async fn shared_database() -> Result<String, String> {
    let cluster = tokio::task::spawn_blocking(Cluster::shared)
        .await
        .map_err(|e| format!("starting PostgreSQL: {e}"))?
        .map_err(str::to_string)?;
    cluster.database().await.map_err(|e| e.to_string())
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Spawns `command` from a thread that lives as long as the process: a
/// parent-death signal fires when the spawning *thread* ends, so it must not
/// be a test's thread.
fn spawn_tied(command: Command) -> io::Result<Child> {
    type Job = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("throwaway-postgres".into())
            .spawn(move || {
                for (mut command, reply) in job_rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("spawning the thread that starts PostgreSQL servers");
        Mutex::new(job_tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((command, reply_tx))
        .map_err(|_| io::Error::other("the spawning thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("the spawning thread is gone"))?
}

/// The directory holding `initdb` and `postgres`.
fn find_binaries() -> Result<PathBuf, ThrowawayError> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if output.status.success() && has_both(&dir) {
            return Ok(dir);
        }
    }
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_both(&bin).then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .ok_or(ThrowawayError::NoBinaries)
}

/// The `postgres` user's uid and gid when this process runs as root.
fn postgres_user_if_root() -> Result<Option<(u32, u32)>, ThrowawayError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    // SAFETY: the name is a NUL-terminated literal; the returned record is
    // read at once, before any other call that could reuse it.
    let user = unsafe { libc::getpwnam(c"postgres".as_ptr()) };
    if user.is_null() {
        return Err(ThrowawayError::Failed {
            what: "finding the postgres user (PostgreSQL refuses to run as root)".into(),
            output: "no such user: install Debian's postgresql package, which creates it".into(),
        });
    }
    // SAFETY: checked non-null above.
    let (uid, gid) = unsafe { ((*user).pw_uid, (*user).pw_gid) };
    Ok(Some((uid, gid)))
}

/// The processes whose working directory is `data`: a server's postmaster
/// and every process it started (they inherit it; no other process has a
/// throwaway data directory as its working directory). Zombies have none.
fn processes_in(data: &Path) -> Vec<i32> {
    let Ok(data) = data.canonicalize() else {
        return Vec::new();
    };
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<i32>().ok()?;
            (fs::read_link(entry.path().join("cwd")).ok()? == data).then_some(pid)
        })
        .collect()
}

/// Removes the System V shared memory segment `id` if it is still the one
/// of `key` and nothing is attached to it.
fn remove_segment(key: i64, id: libc::c_int) {
    // SAFETY: shmid_ds is plain data; all zeroes is a valid value.
    let mut stat: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: IPC_STAT writes into the shmid_ds passed, which lives here.
    let found = unsafe { libc::shmctl(id, libc::IPC_STAT, &mut stat) } == 0;
    if found && i64::from(stat.shm_perm.__key) == key && stat.shm_nattch == 0 {
        // SAFETY: IPC_RMID on a segment nothing is attached to; the buffer
        // argument is ignored.
        unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
    }
}

/// A loopback port free right now.
fn free_port() -> Result<u16, ThrowawayError> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(io_error("finding a free port"))?;
    Ok(listener
        .local_addr()
        .map_err(io_error("finding a free port"))?
        .port())
}
