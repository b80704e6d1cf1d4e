//! Files only sagad's own user can read: the data directory and everything in
//! it hold payloads (card numbers, addresses) and who did what.
//!
//! Directories are made `0700` and files `0600` by the code that makes them,
//! whatever the umask (`dir`, `file`), and `sagad` itself runs with umask
//! `077` (`restrict_umask`), which also covers the files sled makes on its
//! own. A data directory found open to its group or to others (made by an
//! older sagad, or by hand) is not changed behind the operator's back: it is
//! named in a warning at start (`warn_if_open`).

use std::{
    fs::{DirBuilder, OpenOptions},
    io,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::Path,
};

/// Mode of the directories sagad makes.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the files sagad makes.
pub const FILE_MODE: u32 = 0o600;

/// Makes `path` and its missing parents, each new one `0700`.
pub fn dir(path: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// Options that make a new file `0600` (the umask can only take away).
pub fn file() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(FILE_MODE);
    options
}

/// Creates (or truncates) the file at `path` for writing, `0600` when new:
/// `File::create`, private.
pub fn create(path: &Path) -> io::Result<std::fs::File> {
    file().write(true).create(true).truncate(true).open(path)
}

/// Sets the process umask to `077`: every file and directory made from now
/// on, by sagad or by a library (sled), is its user's alone.
pub fn restrict_umask() {
    // SAFETY: umask only sets the process's file mode creation mask; it
    // cannot fail and touches no memory.
    unsafe {
        libc::umask(0o077);
    }
}

/// Warns, naming it, when the data directory `path` can be read or entered
/// by its group or by others.
pub fn warn_if_open(path: &Path) {
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                data_dir = %path.display(),
                mode = format!("{mode:o}"),
                "the data directory is open to its group or to others, and holds saga payloads: chmod 700 it"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_made_is_private_whatever_the_umask() {
        let root = tempfile::tempdir().unwrap();
        // SAFETY: as in `restrict_umask`; set back below.
        let before = unsafe { libc::umask(0) };
        let nested = root.path().join("a/b");
        dir(&nested).unwrap();
        let path = nested.join("f");
        file().write(true).create_new(true).open(&path).unwrap();
        unsafe { libc::umask(before) };
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root.path().join("a")), DIR_MODE);
        assert_eq!(mode(&nested), DIR_MODE);
        assert_eq!(mode(&path), FILE_MODE);
    }
}
