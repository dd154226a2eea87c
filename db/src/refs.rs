//! Moving a branch by compare-and-swap under git's own lock file.
//!
//! Written by hand rather than with gix's ref transactions because the ref must reach the disk
//! before a change is acknowledged: gix writes and renames the lock file without fsync. The
//! protocol is git's: create `refs/heads/B.lock` exclusively, check the current value, write the
//! new id into the lock, flush it, rename it over the ref, flush the directory. The git CLI uses
//! the same lock, so the two exclude each other.
//!
//! cairn writers additionally serialise on an advisory lock ([`WriterLock`]), which also tells
//! a git lock left by a dead cairn writer (removed) from git's own (waited for, never broken).

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use gix::ObjectId;

pub use crate::writer_lock::WriterLock;
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

/// How long a writer waits for git to let its lock go.
const GIVE_UP: Duration = Duration::from_secs(10);

/// The outcome of [`compare_and_swap`].
#[derive(Debug, PartialEq, Eq)]
pub enum Swap {
    /// The ref now points at the new commit.
    Done,
    /// The ref was not at the expected value; it is at this one.
    Moved(Option<ObjectId>),
}

/// Points `branch` at `new` if it is at `expected` (`None`: must not exist). The caller holds
/// `writer`. Objects must already be durable. What it returns is what is on disk: once the ref
/// file has been renamed into place, the swap is done, even if flushing the directory fails.
pub fn compare_and_swap(
    repo: &gix::Repository,
    writer: &mut WriterLock,
    branch: &str,
    expected: Option<ObjectId>,
    new: ObjectId,
) -> Result<Swap, Error> {
    let git_dir = repo.git_dir();
    let name = full_name(branch);
    let ref_path = git_dir.join(&name);
    let lock_path = crate::writer_lock::lock_path(&ref_path);
    let dir = ref_path.parent().expect("a ref path has a parent directory").to_owned();
    std::fs::create_dir_all(&dir).map_err(|source| Error::io(&dir, source))?;
    let mut lock = acquire_git_lock(&lock_path, writer)?;
    let result = (|| {
        let current = read(repo, branch)?;
        if current != expected {
            return Ok(Swap::Moved(current));
        }
        lock.write_all(format!("{new}\n").as_bytes())
            .and_then(|()| lock.sync_all())
            .map_err(|source| Error::io(&lock_path, source))?;
        std::fs::rename(&lock_path, &ref_path).map_err(|source| Error::io(&ref_path, source))?;
        Ok(Swap::Done)
    })();
    if !matches!(result, Ok(Swap::Done)) {
        // Ours to remove: we created it exclusively and did not rename it.
        let _ = std::fs::remove_file(&lock_path);
    }
    writer.clear();
    if matches!(result, Ok(Swap::Done)) {
        if let Err(e) = sync_dir(&dir) {
            // The ref moved (every reader sees it); only its durability across a power loss
            // is in doubt, which is not a reason to report a change that happened as failed.
            tracing::warn!(error = %e, "flushing the ref's directory");
        }
    }
    result
}

/// Creates `path` exclusively, waiting while someone else holds it. A lock a dead cairn writer
/// left was removed when `writer` was taken; what is left is git's, and is waited for (at most
/// [`GIVE_UP`]), never broken: a git process may hold it for seconds (a hook, a slow disk).
fn acquire_git_lock(path: &Path, writer: &mut WriterLock) -> Result<File, Error> {
    use std::os::unix::fs::MetadataExt;
    let started = Instant::now();
    let mut pause = Duration::from_micros(200);
    loop {
        match OpenOptions::new().write(true).create_new(true).open(path) {
            Ok(file) => {
                let ino = file.metadata().map_err(|source| Error::io(path, source))?.ino();
                writer.record(path, ino);
                return Ok(file);
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(source) => return Err(Error::io(path, source)),
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
