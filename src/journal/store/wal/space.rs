//! Free space on the log's disk, and the reserve the log leaves on it.
//!
//! A zero-filled spare segment takes 32 MiB at once. On a disk that is nearly
//! full, preparing one would take the last free space by itself, and the
//! store's next checkpoint (or the next start) would find none. So the log
//! keeps a reserve: it prepares a spare only when the spare and the reserve
//! both fit, and it does not start at all on a disk with less than the
//! reserve free, saying so.

use std::{ffi::CString, io, os::unix::ffi::OsStrExt, path::Path};

/// The reserve when none is configured: two segments' worth.
pub const DEFAULT_DISK_RESERVE: u64 = 64 * 1024 * 1024;

/// Bytes an unprivileged process may still allocate on the filesystem of `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))?;
    // SAFETY: `c` is a valid C string and `stat` a plain struct statvfs fills.
    let (rc, stat) = unsafe {
        let mut stat: libc::statvfs = std::mem::zeroed();
        (libc::statvfs(c.as_ptr(), &mut stat), stat)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // Both fields are u64 on Linux, but not on every libc target.
    #[allow(clippy::unnecessary_cast)]
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// `bytes` in MiB, for messages.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_is_read_and_a_missing_path_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).unwrap() > 0);
        assert!(free_bytes(&dir.path().join("absent")).is_err());
        assert_eq!(mib(3 * 1024 * 1024 / 2), "1.5 MiB");
    }
}
