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

use std::fs::File;
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
    acquire_git_lock_within(path, writer, GIVE_UP)
}

/// [`acquire_git_lock`], giving up after `give_up`; tests wait less than [`GIVE_UP`].
fn acquire_git_lock_within(
    path: &Path,
    writer: &mut WriterLock,
    give_up: Duration,
) -> Result<File, Error> {
    let file = writer.stage(path)?;
    let started = Instant::now();
    let mut pause = Duration::from_micros(200);
    let result = loop {
        match writer.link_staged(path) {
            Ok(()) => break Ok(file),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(source) => break Err(Error::io(path, source)),
        }
        if started.elapsed() > give_up {
            break Err(Error::Locked { lock: path.to_owned(), seconds: give_up.as_secs() });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    writer.unstage();
    if result.is_err() {
        writer.clear();
    }
    result
}

/// Flushes a directory so that a rename in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|source| Error::io(dir, source))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::testing::{bare_repo, commit, git, rev_parse};

    /// No `.lock` is left next to the ref, and the writer's record of git locks is clear.
    fn assert_unlocked(git_dir: &Path, branch: &str) {
        let lock = crate::writer_lock::lock_path(&git_dir.join(full_name(branch)));
        assert!(!lock.exists(), "{} is left behind", lock.display());
        let record = std::fs::read_to_string(git_dir.join("cairn-writer.lock")).expect("read");
        assert!(record.is_empty(), "the writer still records a git lock: {record:?}");
    }

    #[test]
    fn swaps_a_ref_at_the_expected_value() {
        let (_dir, repo) = bare_repo();
        let git_dir = repo.git_dir().to_owned();
        let (old, new) = (commit(&git_dir, "old"), commit(&git_dir, "new"));
        git(&git_dir, &["update-ref", "refs/heads/master", &old.to_string()]);
        let mut writer = WriterLock::acquire(&git_dir).expect("free");
        let swap = compare_and_swap(&repo, &mut writer, "master", Some(old), new).expect("swap");
        assert_eq!(swap, Swap::Done);
        assert_eq!(rev_parse(&git_dir, "refs/heads/master"), Some(new));
        assert_unlocked(&git_dir, "master");
    }

    #[test]
    fn a_ref_elsewhere_is_left_and_reported() {
        let (_dir, repo) = bare_repo();
        let git_dir = repo.git_dir().to_owned();
        let [at, expected, new] = ["at", "expected", "new"].map(|m| commit(&git_dir, m));
        git(&git_dir, &["update-ref", "refs/heads/master", &at.to_string()]);
        let mut writer = WriterLock::acquire(&git_dir).expect("free");
        let swap = compare_and_swap(&repo, &mut writer, "master", Some(expected), new);
        assert_eq!(swap.expect("no error"), Swap::Moved(Some(at)));
        // Expecting it absent is also expecting it elsewhere.
        let swap = compare_and_swap(&repo, &mut writer, "master", None, new);
        assert_eq!(swap.expect("no error"), Swap::Moved(Some(at)));
        assert_eq!(rev_parse(&git_dir, "refs/heads/master"), Some(at));
        assert_unlocked(&git_dir, "master");
    }

    #[test]
    fn a_missing_ref_is_created_when_none_is_expected_and_only_then() {
        let (_dir, repo) = bare_repo();
        let git_dir = repo.git_dir().to_owned();
        let new = commit(&git_dir, "new");
        let mut writer = WriterLock::acquire(&git_dir).expect("free");
        let swap = compare_and_swap(&repo, &mut writer, "topic", Some(new), new);
        assert_eq!(swap.expect("no error"), Swap::Moved(None));
        assert_eq!(rev_parse(&git_dir, "refs/heads/topic"), None);
        assert_unlocked(&git_dir, "topic");
        // The second name's directories do not exist yet.
        for branch in ["topic", "feature/deep/x"] {
            let swap = compare_and_swap(&repo, &mut writer, branch, None, new).expect("swap");
            assert_eq!(swap, Swap::Done);
            assert_eq!(rev_parse(&git_dir, &full_name(branch)), Some(new));
            assert_unlocked(&git_dir, branch);
        }
    }

    #[test]
    fn the_ref_file_is_one_git_reads() {
        let (_dir, repo) = bare_repo();
        let git_dir = repo.git_dir().to_owned();
        let new = commit(&git_dir, "new");
        let mut writer = WriterLock::acquire(&git_dir).expect("free");
        compare_and_swap(&repo, &mut writer, "master", None, new).expect("swap");
        let file = std::fs::read_to_string(git_dir.join("refs/heads/master")).expect("loose ref");
        assert_eq!(file, format!("{new}\n"), "git's loose ref format");
        assert_eq!(git(&git_dir, &["rev-parse", "master"]), new.to_string());
        assert_eq!(
            git(&git_dir, &["for-each-ref", "--format=%(refname) %(objectname)"]),
            format!("refs/heads/master {new}")
        );
        git(&git_dir, &["fsck", "--no-progress"]);
    }

    #[test]
    fn a_packed_ref_is_swapped_and_compared() {
        let (_dir, repo) = bare_repo();
        let git_dir = repo.git_dir().to_owned();
        let [old, other, new] = ["old", "other", "new"].map(|m| commit(&git_dir, m));
        git(&git_dir, &["update-ref", "refs/heads/master", &old.to_string()]);
        git(&git_dir, &["pack-refs", "--all"]);
        assert!(!git_dir.join("refs/heads/master").exists(), "only packed");
        let mut writer = WriterLock::acquire(&git_dir).expect("free");
        let swap = compare_and_swap(&repo, &mut writer, "master", Some(other), new);
        assert_eq!(swap.expect("no error"), Swap::Moved(Some(old)), "the packed value is read");
        assert_unlocked(&git_dir, "master");
        let swap = compare_and_swap(&repo, &mut writer, "master", Some(old), new).expect("swap");
        assert_eq!(swap, Swap::Done);
        // The loose ref now shadows the stale packed one, for git and for gix.
        assert_eq!(rev_parse(&git_dir, "refs/heads/master"), Some(new));
        assert_eq!(read(&repo, "master").expect("read"), Some(new));
        assert_unlocked(&git_dir, "master");
    }

    #[test]
    fn a_git_lock_is_waited_for_until_it_goes() {
        let (_dir, repo) = bare_repo();
        let lock = repo.git_dir().join("refs/heads/master.lock");
        std::fs::write(&lock, "").expect("git holds the lock");
        let mut writer = WriterLock::acquire(repo.git_dir()).expect("free");
        let started = Instant::now();
        let git = std::thread::spawn({
            let lock = lock.clone();
            move || {
                std::thread::sleep(Duration::from_millis(200));
                std::fs::remove_file(&lock).expect("git lets go");
            }
        });
        let file = acquire_git_lock(&lock, &mut writer).expect("acquired once git let go");
        git.join().expect("the git thread finishes");
        assert!(started.elapsed() >= Duration::from_millis(200), "it waited");
        let ino = file.metadata().expect("metadata").ino();
        assert_eq!(std::fs::metadata(&lock).expect("ours now").ino(), ino);
        let record = std::fs::read_to_string(repo.git_dir().join("cairn-writer.lock"));
        assert_eq!(record.expect("read"), format!("lock {} {ino}\n", lock.display()));
    }

    #[test]
    fn a_git_lock_that_stays_is_never_broken() {
        let (_dir, repo) = bare_repo();
        let lock = repo.git_dir().join("refs/heads/master.lock");
        std::fs::write(&lock, "git").expect("git holds the lock");
        let mut writer = WriterLock::acquire(repo.git_dir()).expect("free");
        let started = Instant::now();
        let give_up = Duration::from_millis(300);
        let err = acquire_git_lock_within(&lock, &mut writer, give_up).expect_err("held");
        assert!(started.elapsed() >= give_up, "it waited the whole bound");
        assert!(matches!(err, Error::Locked { lock: ref l, .. } if *l == lock), "{err}");
        assert_eq!(std::fs::read_to_string(&lock).expect("still there"), "git");
    }
}
