//! A full disk, for real: the data directory on a small tmpfs, filled while
//! sagas run, then freed. sagad must stop taking work while it cannot journal
//! it, and carry on by itself, without a restart, once there is space again;
//! the freed space must not be eaten by retries, and nothing acknowledged is
//! lost.
//!
//! Mounting needs root (the suite's CI runs as root); elsewhere these tests
//! print why they did not run. The same logic, with an injected fault instead
//! of a real disk, always runs (`disk_faults`, the journal's own tests).

use std::{
    ffi::CString,
    fs::File,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use sagad::proto::v1 as pb;
use tonic::Code;

use crate::common::{process::SagadProcess, *};

/// How long the whole recovery may take: checkpoints retry with a capped
/// backoff, so this is generous, never a speed assertion.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(240);

/// Sagas of [`big_order`] run before the disk fills: about 30 MB of log, so
/// the log has moved to a zero-filled segment and the store has taken
/// checkpoints.
const WARM_UP: usize = 150;

/// A tmpfs of a given size, unmounted (lazily) when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts one, or says why it cannot (and the test does not run).
    fn mount(megabytes: u64) -> Option<Self> {
        // SAFETY: geteuid has no preconditions and touches no memory.
        if unsafe { libc::geteuid() } != 0 {
            println!(
                "skipped: mounting a tmpfs needs root; run the suite as root to test a real full disk"
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .status();
        match status {
            Ok(s) if s.success() => Some(Self { dir }),
            other => {
                println!("skipped: cannot mount a tmpfs here ({other:?})");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Bytes free for an ordinary process on the filesystem of `path`.
fn free_bytes(path: &Path) -> u64 {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a valid C string; `stat` is written by statvfs and read after.
    unsafe {
        let mut stat: libc::statvfs = std::mem::zeroed();
        assert_eq!(libc::statvfs(c.as_ptr(), &mut stat), 0, "statvfs");
        stat.f_bavail as u64 * stat.f_frsize as u64
    }
}

/// Takes every free byte of `dir`'s filesystem but `leave`, in a file.
fn fill(dir: &Path, leave: u64) -> PathBuf {
    use std::os::fd::AsRawFd;
    let path = dir.join("filler");
    let file = File::create(&path).unwrap();
    // What statvfs counts as free is a little more than a file can take: try
    // it, then a little less, until it fits.
    let mut size = free_bytes(dir).saturating_sub(leave) as libc::off_t;
    while size > 0 {
        // SAFETY: a plain system call on a file this function owns.
        match unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, size) } {
            0 => break,
            libc::ENOSPC => size -= size.min(256 * 1024),
            rc => panic!("posix_fallocate of {size} bytes: error {rc}"),
        }
    }
    path
}

fn dir_bytes(dir: &Path) -> u64 {
    walk(dir)
        .iter()
        .map(|p| p.metadata().map_or(0, |m| m.len()))
        .sum()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

async fn connect(sagad: &SagadProcess) -> Client {
    Client::connect(format!("http://{}", sagad.addr))
        .await
        .unwrap()
}

/// An order with a payload large enough that a few hundred of them fill a
/// log segment.
fn big_order(n: usize) -> pb::StartSagaRequest {
    let filler = "x".repeat(200 * 1024);
    pb::StartSagaRequest {
        definition: "order-fulfillment".into(),
        payload: format!(r#"{{"order_id":"full-{n}","filler":"{filler}"}}"#).into_bytes(),
        idempotency_key: format!("full-{n}"),
        ..Default::default()
    }
}

/// Starts big orders until the journal refuses one with UNAVAILABLE (the
/// disk is full); returns the ids of those it took, and the refusal.
async fn take_until_refused(client: &mut Client) -> (Vec<String>, tonic::Status) {
    let mut acknowledged = Vec::new();
    let started = Instant::now();
    for n in 0.. {
        match client.start_saga(big_order(n)).await {
            Ok(r) => acknowledged.push(r.into_inner().saga.unwrap().id),
            Err(s) if s.code() == Code::Unavailable => return (acknowledged, s),
            Err(s) => panic!("unexpected refusal: {s}"),
        }
        assert!(
            started.elapsed() < RECOVERY_DEADLINE,
            "intake never stopped on a full disk ({} sagas taken)",
            acknowledged.len()
        );
    }
    unreachable!("the loop only ends by returning")
}

/// Polls until the saga is terminal, within the recovery deadline.
async fn until_done(client: &mut Client, id: &str, since: Instant) -> Result<pb::Saga, String> {
    loop {
        match client
            .get_saga(pb::GetSagaRequest {
                id: id.into(),
                ..Default::default()
            })
            .await
        {
            Ok(saga) => {
                let saga = saga.into_inner();
                if matches!(
                    state(&saga),
                    pb::SagaState::Completed | pb::SagaState::Compensated | pb::SagaState::Failed
                ) {
                    return Ok(saga);
                }
            }
            Err(s) => assert_eq!(s.code(), Code::Unavailable, "GetSaga {id}: {s}"),
        }
        if since.elapsed() > RECOVERY_DEADLINE {
            return Err(format!(
                "saga {id} did not finish after the disk had space again"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Fails the test with `why` and the end of sagad's log.
fn fail_with_log(sagad: SagadProcess, why: String) -> ! {
    let (_, stderr) = sagad.terminate();
    let lines: Vec<&str> = stderr.lines().collect();
    let tail = lines[lines.len().saturating_sub(60)..].join("\n");
    panic!("{why}\nsagad's log ends:\n{tail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_then_space_again_carries_on_by_itself() {
    let _heavy = heavy().await;
    // Room for what the full disk held back to reach the store afterwards
    // (sled takes about twice the bytes it holds), and then some.
    let Some(fs) = Tmpfs::mount(400) else {
        return;
    };
    let data = fs.path().join("data");
    let shop = serve(FakeParticipant::new(|_| Answer::Ok)).await;
    let sagad = SagadProcess::spawn(&data, &[("SAGAD_LOG", "info")]);
    let mut client = connect(&sagad).await;
    register_shop(&mut client, &shop, quick_retry(3, 3)).await;

    // Enough sagas first that the log runs in a zero-filled segment and the
    // store holds checkpoints: then the disk fills up while sagas keep
    // coming; the log's preallocated segment takes them for a while, the
    // store's checkpoints fail, and at last intake must stop.
    for n in 0..WARM_UP {
        let saga = client
            .start_saga(pb::StartSagaRequest {
                wait: true,
                ..big_order(1_000_000 + n)
            })
            .await
            .unwrap()
            .into_inner()
            .saga
            .unwrap();
        assert_eq!(state(&saga), pb::SagaState::Completed);
    }
    let filler = fill(fs.path(), 0);
    let (mut acknowledged, refused) = take_until_refused(&mut client).await;
    assert!(
        refused.message().contains("journal"),
        "the refusal names the journal: {refused}"
    );

    println!(
        "{} sagas taken, then refused: {}",
        acknowledged.len(),
        refused.message()
    );
    until_health(sagad.addr, "", ServingStatus::NotServing).await;
    let register = client
        .register_participant(pb::RegisterParticipantRequest {
            name: "late".into(),
            forward_endpoint: shop.forward_url(),
            compensate_endpoint: shop.compensate_url(),
            ..Default::default()
        })
        .await
        .expect_err("no registration while the journal refuses writes");
    assert_eq!(register.code(), Code::Unavailable, "{register}");
    // The disk stays full for a while: checkpoints of the store fail and are
    // retried meanwhile (the time is the fault's length, not a speed bound).
    let refused_at = acknowledged.len();
    let full_until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < full_until {
        if let Ok(r) = client.start_saga(big_order(acknowledged.len() + 1)).await {
            acknowledged.push(r.into_inner().saga.unwrap().id);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let taken_while_full = acknowledged.len() - refused_at;

    // Space again: everything acknowledged finishes, new work is taken, and
    // all without a restart.
    std::fs::remove_file(&filler).unwrap();
    let freed = free_bytes(fs.path());
    let since = Instant::now();
    for id in &acknowledged {
        let saga = match until_done(&mut client, id, since).await {
            Ok(saga) => saga,
            Err(why) => fail_with_log(sagad, why),
        };
        assert_eq!(state(&saga), pb::SagaState::Completed, "saga {id}");
    }
    let after = loop {
        match client
            .start_saga(pb::StartSagaRequest {
                wait: true,
                ..big_order(2_000_000)
            })
            .await
        {
            Ok(r) => break r.into_inner().saga.unwrap(),
            Err(s) if s.code() == Code::Unavailable => {
                assert!(
                    since.elapsed() < RECOVERY_DEADLINE,
                    "no new saga taken after the disk had space again: {s}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(s) => panic!("unexpected refusal after recovery: {s}"),
        }
    };
    assert_eq!(state(&after), pb::SagaState::Completed);
    until_health(sagad.addr, "", ServingStatus::Serving).await;
    // The store behind the log works again too: checkpoints go through and
    // delete the log segments they cover (the log would grow without end).
    let wal = data.join("wal");
    loop {
        let segments: Vec<PathBuf> = walk(&wal)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|x| x == "wal"))
            .collect();
        if segments.len() <= 2 {
            break;
        }
        assert!(
            since.elapsed() < RECOVERY_DEADLINE,
            "no store checkpoint since the disk had space again: {segments:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The freed space was not eaten by retries while the store was failing.
    let used = dir_bytes(&data);
    assert!(
        free_bytes(fs.path()) > freed / 4,
        "the freed space is gone again: {used} bytes in the data directory, {} free",
        free_bytes(fs.path())
    );

    let (status, stderr) = sagad.terminate();
    assert!(status.success(), "{stderr}");
    println!(
        "{} sagas taken while the disk was full; the journal took writes again {} times",
        taken_while_full,
        stderr.matches("journal writes work again").count()
    );
    // Whether the store's checkpoints failed depends on how far they got
    // before the disk filled; when they did, they came back by themselves.
    if stderr.contains("store checkpoint failed") {
        assert!(stderr.contains("store checkpoints work again"), "{stderr}");
        println!("store checkpoints failed while the disk was full, and came back");
    }
    let stopping = &stderr[stderr.rfind("shutting down").unwrap_or(0)..];
    assert!(
        !stopping.contains("checkpoint failed") && stopping.contains("stopped cleanly"),
        "the stop: {stopping}"
    );
    drop(shop);
}

/// Stopped while the disk is full (a rollover to the next log segment failed
/// meanwhile), then space again: the next start begins where the journal
/// ended, and finishes every saga that was acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_a_full_disk_is_not_told_the_journal_is_damaged() {
    let _heavy = heavy().await;
    let Some(fs) = Tmpfs::mount(200) else {
        return;
    };
    let data = fs.path().join("data");
    let shop = serve(FakeParticipant::new(|_| Answer::Ok)).await;
    let sagad = SagadProcess::spawn(&data, &[("SAGAD_LOG", "info")]);
    let mut client = connect(&sagad).await;
    register_shop(&mut client, &shop, quick_retry(3, 3)).await;
    let filler = fill(fs.path(), 0);
    let (acknowledged, _) = take_until_refused(&mut client).await;
    // A stop on the full disk cannot take its last checkpoint: it must say
    // so, not that it stopped cleanly (the next start replays the log).
    let (status, stderr) = sagad.terminate();
    let stopping = &stderr[stderr.rfind("shutting down").unwrap_or(0)..];
    if stopping.contains("closing the journal failed") {
        assert!(!status.success(), "{stopping}");
        assert!(!stopping.contains("stopped cleanly"), "{stopping}");
        println!("the last checkpoint failed on the full disk, and the stop said so");
    } else {
        assert!(
            status.success() && stopping.contains("stopped cleanly"),
            "{status}: {stopping}"
        );
    }
    std::fs::remove_file(&filler).unwrap();

    let sagad = SagadProcess::spawn(&data, &[("SAGAD_LOG", "info")]);
    assert_ne!(sagad.addr.port(), 0, "sagad did not start again");
    let mut client = connect(&sagad).await;
    let since = Instant::now();
    for id in &acknowledged {
        let saga = match until_done(&mut client, id, since).await {
            Ok(saga) => saga,
            Err(why) => fail_with_log(sagad, why),
        };
        assert_eq!(state(&saga), pb::SagaState::Completed, "saga {id}");
    }
    let (status, stderr) = sagad.terminate();
    assert!(status.success(), "{stderr}");
    assert!(!stderr.contains("damaged"), "{stderr}");
}

/// A volume too small for the reserve is refused at start, saying so; with a
/// reserve it can hold, sagad works on it without preparing a segment that
/// would fill it, and starts again after a stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_disk_keeps_its_reserve_and_starts_again() {
    let _heavy = heavy().await;
    let Some(fs) = Tmpfs::mount(20) else {
        return;
    };
    let data = fs.path().join("data");
    let mut refused = SagadProcess::spawn(&data, &[]);
    let (status, stderr) = refused.wait_exit();
    assert!(!status.success());
    assert!(
        stderr.contains(&data.display().to_string())
            && stderr.contains("--disk-reserve")
            && stderr.contains("free"),
        "{stderr}"
    );

    let shop = serve(FakeParticipant::new(|_| Answer::Ok)).await;
    for round in 0..2 {
        let sagad = SagadProcess::spawn_with(&data, &["--disk-reserve", "4MiB"], &[]);
        assert_ne!(sagad.addr.port(), 0, "round {round}: sagad did not start");
        let mut client = connect(&sagad).await;
        register_shop(&mut client, &shop, quick_retry(3, 3)).await;
        for n in 0..20 {
            let saga = start_order(
                &mut client,
                &format!(r#"{{"order_id":"{round}-{n}"}}"#),
                true,
            )
            .await;
            assert_eq!(state(&saga), pb::SagaState::Completed);
        }
        assert!(
            free_bytes(fs.path()) >= 4 << 20,
            "round {round}: the reserve was taken ({} bytes free)",
            free_bytes(fs.path())
        );
        let (status, stderr) = sagad.terminate();
        assert!(status.success(), "round {round}: {stderr}");
    }
}
