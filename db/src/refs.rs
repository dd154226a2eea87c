//! Moving a branch by compare-and-swap under git's own lock file.
//!
//! Written by hand rather than with gix's ref transactions because the ref must reach the disk
//! before a change is acknowledged: gix writes and renames the lock file without fsync. The
//! protocol is git's: create `refs/heads/B.lock` exclusively, check the current value, write the
//! new id into the lock, flush it, rename it over the ref, flush the directory. The git CLI uses
//! the same lock, so the two exclude each other.
//!
//! cairn writers additionally serialise on an advisory lock ([`WriterLock`]). Besides sparing
//! them retries, it makes stale git locks detectable: a `.lock` that outlives a short wait while
//! we hold the writer lock belongs to a process that died (a killed cairn or git), and is removed.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gix::ObjectId;

use crate::Error;

/// The full ref name of a branch; names already starting with `refs/` are taken as they are.
pub fn full_name(branch: &str) -> String {
    if branch.starts_with("refs/") {
        branch.to_owned()
    } else {
        format!("refs/heads/{branch}")
    }
}

/// Reads a branch (loose or packed) and peels it to a commit id.
pub(crate) fn read(repo: &gix::Repository, branch: &str) -> Result<Option<ObjectId>, Error> {
    let name = full_name(branch);
    if gix::refs::FullName::try_from(name.as_str()).is_err() {
        return Ok(None);
    }
    let Some(reference) =
        repo.try_find_reference(name.as_str()).map_err(|e| Error::git("reading a ref", e))?
    else {
        return Ok(None);
    };
    let id = reference.into_fully_peeled_id().map_err(|e| Error::git("peeling a ref", e))?;
    Ok(Some(id.detach()))
}

/// An advisory lock that serialises cairn's writers of one repository. Released when dropped or
/// when the process dies.
#[derive(Debug)]
pub struct WriterLock {
    _file: File,
}

impl WriterLock {
    /// Blocks until this process is the only cairn writer of the repository at `git_dir`.
    pub fn acquire(git_dir: &Path) -> Result<WriterLock, Error> {
        let path = git_dir.join("cairn-writer.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| Error::io(&path, source))?;
        loop {
            // SAFETY: flock only reads the descriptor, which `file` keeps open for the call.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(WriterLock { _file: file });
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != ErrorKind::Interrupted {
                return Err(Error::io(&path, err));
            }
        }
    }
}

/// How long a git lock may persist before, with the writer lock held, it is taken to be stale.
const STALE_AFTER: Duration = Duration::from_secs(2);

/// The outcome of [`compare_and_swap`].
#[derive(Debug, PartialEq, Eq)]
pub enum Swap {
    /// The ref now points at the new commit.
    Done,
    /// The ref was not at the expected value; it is at this one.
    Moved(Option<ObjectId>),
}

/// Points `branch` at `new` if it is at `expected` (`None`: must not exist). The caller holds the
/// [`WriterLock`]. Objects must already be durable.
pub fn compare_and_swap(
    repo: &gix::Repository,
    branch: &str,
    expected: Option<ObjectId>,
    new: ObjectId,
) -> Result<Swap, Error> {
    let git_dir = repo.git_dir();
    let name = full_name(branch);
    let ref_path = git_dir.join(&name);
    let lock_path = PathBuf::from(format!("{}.lock", ref_path.display()));
    let dir = ref_path.parent().expect("a ref path has a parent directory").to_owned();
    std::fs::create_dir_all(&dir).map_err(|source| Error::io(&dir, source))?;
    let mut lock = acquire_git_lock(&lock_path)?;
    let result = (|| {
        let current = read(repo, branch)?;
        if current != expected {
            return Ok(Swap::Moved(current));
        }
        lock.write_all(format!("{new}\n").as_bytes())
            .and_then(|()| lock.sync_all())
            .map_err(|source| Error::io(&lock_path, source))?;
        std::fs::rename(&lock_path, &ref_path).map_err(|source| Error::io(&ref_path, source))?;
        sync_dir(&dir)?;
        Ok(Swap::Done)
    })();
    if !matches!(result, Ok(Swap::Done)) {
        // Ours to remove: we created it exclusively and did not rename it.
        let _ = std::fs::remove_file(&lock_path);
    }
    result
}

/// Creates `path` exclusively, waiting while someone else holds it, and breaking it once it is
/// clearly stale (unchanged for [`STALE_AFTER`] while we hold the writer lock).
fn acquire_git_lock(path: &Path) -> Result<File, Error> {
    use std::os::unix::fs::MetadataExt;
    const GIVE_UP: Duration = Duration::from_secs(10);
    let started = Instant::now();
    let mut seen: Option<((u64, std::time::SystemTime), Instant)> = None;
    let mut pause = Duration::from_micros(200);
    loop {
        match OpenOptions::new().write(true).create_new(true).open(path) {
            Ok(file) => return Ok(file),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(source) => return Err(Error::io(path, source)),
        }
        let identity = std::fs::metadata(path)
            .ok()
            .map(|m| (m.ino(), m.modified().unwrap_or(std::time::UNIX_EPOCH)));
        match (identity, &seen) {
            (None, _) => {
                seen = None;
                continue;
            }
            (Some(id), Some((old, since))) if id == *old => {
                if since.elapsed() >= STALE_AFTER {
                    tracing::warn!(lock = %path.display(), "removing a stale lock left by a process that died");
                    let _ = std::fs::remove_file(path);
                    seen = None;
                    continue;
                }
            }
            (Some(id), _) => seen = Some((id, Instant::now())),
        }
        if started.elapsed() > GIVE_UP {
            return Err(Error::Locked { lock: path.to_owned(), seconds: GIVE_UP.as_secs() });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Flushes a directory so that a rename in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|source| Error::io(dir, source))
}
