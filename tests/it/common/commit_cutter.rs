//! A TCP proxy in front of PostgreSQL that loses the answers of COMMITs on
//! demand: the one fault a database client can meet that no error code
//! describes, where the transaction may or may not have committed.
//!
//! It forwards bytes both ways, looking at each connection's traffic for
//! PostgreSQL's simple-query `COMMIT` (the journal's writer sends its
//! commits so: `Q`, length 11, `COMMIT\0`). Once armed ([`CommitCutter::cut`])
//! the next COMMIT of any connection is cut, in one of two ways:
//! - [`Cut::AfterCommit`]: the COMMIT reaches the server, the server's
//!   answer (up to its `ReadyForQuery`) is read and thrown away, and only then
//!   is the client's connection closed: the transaction committed, the
//!   client never heard;
//! - [`Cut::BeforeCommit`]: the COMMIT is not forwarded, and both sides are
//!   closed: the server rolls the transaction back, the client never heard.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Notify,
};

/// The simple-query message `COMMIT`.
const COMMIT_QUERY: &[u8] = b"Q\0\0\0\x0bCOMMIT\0";
/// The server's ReadyForQuery: it finished with the COMMIT (committed, or
/// refused it).
const READY: &[u8] = b"Z\0\0\0\x05";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    AfterCommit,
    BeforeCommit,
}

pub struct CommitCutter {
    addr: SocketAddr,
    armed: Arc<Mutex<Vec<Cut>>>,
    cuts: Arc<AtomicUsize>,
    stop: Arc<Notify>,
}

impl CommitCutter {
    /// A proxy on a free loopback port to the server at `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let armed = Arc::new(Mutex::new(Vec::new()));
        let cuts = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(Notify::new());
        let (a, c, s) = (armed.clone(), cuts.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = s.notified() => return,
                };
                let Ok((client, _)) = accepted else { return };
                let (armed, cuts) = (a.clone(), c.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        relay(client, server, armed, cuts).await;
                    }
                });
            }
        });
        Self {
            addr,
            armed,
            cuts,
            stop,
        }
    }

    /// `url` (a throwaway database's) with its host and port replaced by the
    /// proxy's.
    pub fn url(&self, url: &str) -> String {
        let rest = url.split_once('@').expect("a URL with a user").1;
        let path = rest.split_once('/').expect("a URL with a database").1;
        let user = url.split_once('@').unwrap().0;
        format!("{user}@{}/{path}", self.addr)
    }

    /// Cuts the next COMMIT (after those armed before) as `cut` says.
    pub fn cut(&self, cut: Cut) {
        self.armed.lock().unwrap().push(cut);
    }

    /// How many COMMITs were cut so far.
    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }

    /// Whether every armed cut happened.
    pub fn idle(&self) -> bool {
        self.armed.lock().unwrap().is_empty()
    }
}

impl Drop for CommitCutter {
    fn drop(&mut self) {
        self.stop.notify_one();
    }
}

/// The address of the server a throwaway database's `url` names.
pub fn upstream(url: &str) -> SocketAddr {
    let rest = url.split_once('@').expect("a URL with a user").1;
    let host = rest.split_once('/').expect("a URL with a database").0;
    host.parse().expect("a loopback address and port")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    armed: Arc<Mutex<Vec<Cut>>>,
    cuts: Arc<AtomicUsize>,
) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    // Set once a COMMIT of this connection was cut after it reached the
    // server: from then on the server's answers are thrown away.
    let cut_after = Arc::new(Notify::new());
    let (heard_cut, waiting) = (cut_after.clone(), cut_after.clone());
    let upward = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = match client_rx.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let chunk = &buffer[..n];
            if contains(chunk, COMMIT_QUERY) {
                let cut = {
                    let mut armed = armed.lock().unwrap();
                    (!armed.is_empty()).then(|| armed.remove(0))
                };
                match cut {
                    Some(Cut::BeforeCommit) => {
                        cuts.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    Some(Cut::AfterCommit) => {
                        heard_cut.notify_one();
                        if server_tx.write_all(chunk).await.is_err() {
                            return;
                        }
                        cuts.fetch_add(1, Ordering::SeqCst);
                        // Keep the server's side open until it answered.
                        std::future::pending::<()>().await;
                    }
                    None => {}
                }
            }
            if server_tx.write_all(chunk).await.is_err() {
                return;
            }
        }
    };
    let downward = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        let mut cut = false;
        let mut told = std::pin::pin!(waiting.notified());
        loop {
            let n = tokio::select! {
                biased;
                _ = &mut told, if !cut => { cut = true; continue; }
                read = server_rx.read(&mut buffer) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                },
            };
            if cut {
                if contains(&buffer[..n], READY) {
                    return;
                }
                continue;
            }
            if client_tx.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    };
    // Either side ending ends the connection: both halves are dropped.
    tokio::select! {
        _ = upward => {}
        _ = downward => {}
    }
}
