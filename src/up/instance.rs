//! The one `cairn up` of a data directory. It holds an advisory lock on `run/up.pid` for its
//! whole life, with its pid in the file: the lock, not the pid, says whether it runs. A pid
//! alone can be recycled by another process after a crash, and `cairn down` would have sent
//! its SIGTERM to a stranger.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::Error;

/// The running `cairn up`'s claim on its data directory; released when dropped or when the
/// process dies.
#[derive(Debug)]
pub struct Instance {
    _file: File,
}

fn try_lock(file: &File) -> bool {
    // SAFETY: flock on a descriptor `file` keeps open for the call.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

impl Instance {
    /// Claims the data directory whose pid file is `path`; refused when a `cairn up` runs.
    pub fn claim(path: &Path) -> Result<Instance, Error> {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        if !try_lock(&file) {
            return Err(Error::AlreadyUp { pid: pid_in(&mut file).unwrap_or(0) });
        }
        let written = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(std::process::id().to_string().as_bytes()));
        written.map_err(|e| Error::io(path, e))?;
        Ok(Instance { _file: file })
    }
}

fn pid_in(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// The pid of the `cairn up` that holds `path`, if one runs.
pub fn running(path: &Path) -> Option<u32> {
    let mut file = File::open(path).ok()?;
    if try_lock(&file) {
        // Nobody holds it: whatever pid it names is not a cairn up of ours.
        return None;
    }
    pid_in(&mut file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_not_the_pid_says_who_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("up.pid");
        // A stale file naming a live process (this one) is not a running `up`.
        std::fs::write(&path, std::process::id().to_string()).expect("write");
        assert_eq!(running(&path), None);
        let claim = Instance::claim(&path).expect("free");
        // flock is per open file: a second open in this process sees the lock as another's.
        assert_eq!(running(&path), Some(std::process::id()));
        assert!(matches!(Instance::claim(&path), Err(Error::AlreadyUp { .. })));
        drop(claim);
        assert_eq!(running(&path), None);
    }
}
