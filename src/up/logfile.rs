//! The detached control plane's log, `run/cairn.log`, kept to a bounded size: once it passes
//! [`LIMIT`] it becomes `cairn.log.1` (replacing the one before) and a new `cairn.log` starts.
//! `up --detach` hands the log to the control plane as its stdout and stderr, so the new file
//! is put in their place (dup2): everything written to them, panics included, goes there.

use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Largest size of the log before it is rotated.
pub const LIMIT: u64 = 8 << 20;

/// Rotates `log` if it is this process's stderr and larger than `limit`. Returns whether it
/// rotated.
pub fn rotate_if_large(log: &Path, limit: u64) -> bool {
    let Ok(meta) = std::fs::metadata(log) else { return false };
    if meta.len() <= limit || !is_stderr(&meta) {
        return false;
    }
    let old = log.with_extension("log.1");
    if std::fs::rename(log, &old).is_err() {
        return false;
    }
    let Ok(fresh) = std::fs::OpenOptions::new().create(true).append(true).open(log) else {
        return false;
    };
    use std::os::unix::fs::PermissionsExt;
    let _ = fresh.set_permissions(std::fs::Permissions::from_mode(0o600));
    for fd in [1, 2] {
        // SAFETY: dup2 onto the standard descriptors of this process with a descriptor we own;
        // both stay valid (the old file is closed by dup2 itself).
        unsafe {
            libc::dup2(fresh.as_raw_fd(), fd);
        }
    }
    tracing::info!(previous = %old.display(), "log rotated");
    true
}

/// Whether stderr is the file `meta` describes.
fn is_stderr(meta: &std::fs::Metadata) -> bool {
    // SAFETY: fstat on fd 2 into a zeroed stat buffer we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::fstat(2, &mut st) };
    rc == 0 && st.st_dev == meta.dev() && st.st_ino == meta.ino()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_stderr_is_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("cairn.log");
        std::fs::write(&log, vec![b'x'; 100]).expect("write");
        assert!(!rotate_if_large(&log, 10));
        assert!(log.exists() && !dir.path().join("cairn.log.1").exists());
    }
}
