//! The tokens file as the server holds it: read at start, read again on
//! SIGHUP and when its modification time changes (`crate::reload`).
//!
//! Invariants:
//! - Every call is checked against one whole, parsed file: a reload swaps
//!   one `Arc`, and a file that does not parse changes nothing.
//! - Calls never wait for a reload: the file is read and parsed before the
//!   write lock is taken, which is held only to swap the `Arc`.
//! - The timer reads a file again only after its modification time or size
//!   changed, so a broken file is reported once, not every interval.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::SystemTime,
};

use super::credentials::{Credentials, CredentialsError};
use crate::reload::{Reload, ReloadError};

/// What the timer compares to notice a rewritten file.
type Stamp = Option<(SystemTime, u64)>;

/// The reloadable tokens file.
pub struct TokensFile {
    path: PathBuf,
    /// A std lock: held only to clone or swap the `Arc`, never across an await.
    current: RwLock<Arc<Credentials>>,
    /// The file's stamp when it was last read (std mutex, only compared or stored).
    seen: Mutex<Stamp>,
}

impl TokensFile {
    /// Reads the file; its error is a start-up error.
    pub fn open(path: &Path) -> Result<Self, CredentialsError> {
        let seen = stamp(path);
        let credentials = Credentials::read(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            current: RwLock::new(Arc::new(credentials)),
            seen: Mutex::new(seen),
        })
    }

    /// The table to check the next call against.
    pub fn current(&self) -> Arc<Credentials> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Reload for TokensFile {
    fn what(&self) -> String {
        format!("the tokens file {}", self.path.display())
    }

    fn reload(&self) -> Result<String, ReloadError> {
        // Taken first: a change made while the file is read is seen next time.
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = stamp(&self.path);
        let next = Credentials::read(&self.path)?;
        let holds = next.describe();
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        Ok(holds)
    }

    fn changed(&self) -> bool {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) != stamp(&self.path)
    }
}

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::tokens::TokenHash;

    #[test]
    fn a_reload_swaps_the_whole_file_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let line = |name: &str, token: &str| format!("{name} reader {}\n", TokenHash::of(token));
        std::fs::write(&path, line("a", "ta") + &line("b", "tb")).unwrap();
        let file = TokensFile::open(&path).unwrap();
        assert!(!file.changed());
        assert!(file.current().by_token("tb").is_some());

        std::fs::write(&path, line("a", "ta")).unwrap();
        assert!(file.changed());
        assert_eq!(
            file.reload().unwrap(),
            "1 entries (1 tokens, 0 certificate identities)"
        );
        assert!(file.current().by_token("tb").is_none());
        assert!(!file.changed());

        std::fs::write(&path, "a reader not-a-hash\n").unwrap();
        let err = file.reload().unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
        assert!(
            file.current().by_token("ta").is_some(),
            "the old file stays"
        );
        // Reported once: the timer sees no change until the file changes again.
        assert!(!file.changed());
    }
}
