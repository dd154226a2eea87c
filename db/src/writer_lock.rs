//! The advisory lock that serialises cairn's writers of one repository, and what it knows
//! about the git lock files they take.
//!
//! A cairn writer holds `cairn-writer.lock` (flock) for the whole of a commit. Besides sparing
//! writers retries, it tells whose a `refs/heads/B.lock` is. While we hold the writer lock, no
//! other cairn writer is running, so a `.lock` we find is either git's (the git CLI takes the
//! same lock file, and may hold it for seconds while a hook runs) or one that a cairn writer
//! left when it died. Which one is recorded: a cairn writer makes each git lock under a private
//! name, writes its path and inode into the writer lock file, and only then links it into
//! place; it clears the record when it lets the lock go. The next writer to get the writer
//! lock removes a lock file that the record names and that still has the recorded inode; any
//! other lock file is git's, and is waited for, never broken.
//! Breaking a live git process's lock made git fail after it had been told it could go on,
//! and lost its update.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{flock, FlockOperation};

use crate::Error;

/// How long a writer waits for another one before saying who holds the lock.
const WAIT: Duration = Duration::from_secs(10);

/// The writer lock; released when dropped or when the process dies.
#[derive(Debug)]
pub struct WriterLock {
    file: File,
    /// Where a git lock file is made before it is linked into place (see [`Self::stage`]).
    staged: PathBuf,
}

impl WriterLock {
    /// Waits (at most ten seconds) until this process is the only cairn writer of the repository
    /// at `git_dir`, then removes any git lock file a dead cairn writer left behind.
    pub fn acquire(git_dir: &Path) -> Result<WriterLock, Error> {
        Self::acquire_within(git_dir, WAIT)
    }

    fn acquire_within(git_dir: &Path, wait: Duration) -> Result<WriterLock, Error> {
        let path = git_dir.join("cairn-writer.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|source| Error::io(&path, source))?;
        let started = Instant::now();
        let mut pause = Duration::from_micros(200);
        loop {
            let err = match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(errno) => std::io::Error::from(errno),
            };
            match err.kind() {
                ErrorKind::WouldBlock | ErrorKind::Interrupted => {}
                _ => return Err(Error::io(&path, err)),
            }
            if started.elapsed() > wait {
                let holder = holder_of(&file).unwrap_or_else(|| "another process".into());
                let waited = wait.as_secs_f64();
                return Err(Error::WriterBusy { lock: path, holder, seconds: waited });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
        let mut lock = WriterLock { file, staged: git_dir.join("cairn-writer.staged") };
        lock.recover();
        Ok(lock)
    }

    /// Removes the git lock file a writer before us recorded and never released (it died).
    fn recover(&mut self) {
        let mut record = String::new();
        let read =
            self.file.seek(SeekFrom::Start(0)).and_then(|_| self.file.read_to_string(&mut record));
        if read.is_err() {
            return;
        }
        for line in record.lines() {
            let Some((path, ino)) = line.strip_prefix("lock ").and_then(|l| l.rsplit_once(' '))
            else {
                continue;
            };
            let path = Path::new(path);
            let still_ours = std::fs::metadata(path).is_ok_and(|m| ino.parse() == Ok(m.ino()));
            if still_ours {
                tracing::warn!(lock = %path.display(), "removing a lock left by a cairn writer that died");
                let _ = std::fs::remove_file(path);
            }
        }
        // Only now: while the staged file exists its inode cannot be reused by git's lock.
        let _ = std::fs::remove_file(&self.staged);
        self.clear();
    }

    /// Makes the file that is to become the git lock `lock`, and records it, before the lock
    /// exists. The caller links it into place ([`std::fs::hard_link`], exclusive as git's own
    /// `O_EXCL` create) and then calls [`Self::unstage`]. Recording first is what makes a
    /// writer killed at any moment recognisable: a lock file created first and recorded after
    /// would, killed in between, be a lock nobody can tell from git's.
    pub(crate) fn stage(&mut self, lock: &Path) -> Result<File, Error> {
        let _ = std::fs::remove_file(&self.staged);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&self.staged)
            .map_err(|source| Error::io(&self.staged, source))?;
        let ino = file.metadata().map_err(|source| Error::io(&self.staged, source))?.ino();
        self.record(lock, ino);
        Ok(file)
    }

    /// The staged file's own name goes (the lock, linked or not, keeps or drops its inode).
    pub(crate) fn unstage(&mut self) {
        let _ = std::fs::remove_file(&self.staged);
    }

    /// Puts the staged file in place as the git lock `lock`; fails with `AlreadyExists` while
    /// someone else holds it.
    pub(crate) fn link_staged(&self, lock: &Path) -> std::io::Result<()> {
        std::fs::hard_link(&self.staged, lock)
    }

    /// Notes that this writer created the git lock file `lock` (inode `ino`).
    pub(crate) fn record(&mut self, lock: &Path, ino: u64) {
        let line = format!("lock {} {ino}\n", lock.display());
        let written = self
            .file
            .set_len(0)
            .and_then(|()| self.file.seek(SeekFrom::Start(0)))
            .and_then(|_| self.file.write_all(line.as_bytes()));
        if let Err(e) = written {
            tracing::warn!(error = %e, "recording a git lock in the writer lock");
        }
    }

    /// This writer holds no git lock any more.
    pub(crate) fn clear(&mut self) {
        let _ = self.file.set_len(0);
    }
}

/// Who holds the flock on `file`, from /proc/locks: `pid N (command)`.
fn holder_of(file: &File) -> Option<String> {
    let ino = file.metadata().ok()?.ino();
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let pid = locks.lines().find_map(|line| {
        // "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"
        let fields: Vec<&str> = line.split_whitespace().collect();
        let inode = fields.get(5)?.rsplit(':').next()?;
        (fields.get(1) == Some(&"FLOCK") && inode.parse() == Ok(ino))
            .then(|| fields.get(4).copied())?
    })?;
    let command = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " ").trim().to_owned())
        .unwrap_or_default();
    Some(if command.is_empty() { format!("pid {pid}") } else { format!("pid {pid} ({command})") })
}

/// The path of a git lock file for `path`.
pub(crate) fn lock_path(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.lock", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_writers_lock_is_removed_and_nobody_elses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let git_dir = dir.path();
        let ours = git_dir.join("ours.lock");
        let gits = git_dir.join("gits.lock");
        std::fs::write(&ours, "").expect("write");
        std::fs::write(&gits, "").expect("write");
        {
            let mut writer = WriterLock::acquire(git_dir).expect("free");
            let ino = std::fs::metadata(&ours).expect("exists").ino();
            writer.record(&ours, ino);
            // Dropped without clearing: the writer "died" holding `ours`.
        }
        let _next = WriterLock::acquire(git_dir).expect("free again");
        assert!(!ours.exists(), "the dead writer's lock is removed");
        assert!(gits.exists(), "a lock nobody recorded is git's and stays");
    }

    #[test]
    fn a_writer_killed_at_any_step_of_taking_a_git_lock_is_recognised() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lock = dir.path().join("master.lock");
        // Killed after staging, before the link: the lock that appears next is git's.
        {
            let mut writer = WriterLock::acquire(dir.path()).expect("free");
            writer.stage(&lock).expect("staged");
        }
        std::fs::write(&lock, "git").expect("git takes the lock");
        {
            let _next = WriterLock::acquire(dir.path()).expect("free");
            assert_eq!(std::fs::read_to_string(&lock).expect("kept"), "git", "never broken");
            assert!(!dir.path().join("cairn-writer.staged").exists(), "the staged file goes");
        }
        std::fs::remove_file(&lock).expect("git lets go");
        // Killed after the link, before the staged name went: the lock is ours.
        {
            let mut writer = WriterLock::acquire(dir.path()).expect("free");
            writer.stage(&lock).expect("staged");
            writer.link_staged(&lock).expect("linked");
        }
        let _next = WriterLock::acquire(dir.path()).expect("free");
        assert!(!lock.exists(), "the dead writer's lock is removed");
        assert!(!dir.path().join("cairn-writer.staged").exists());
    }

    #[test]
    fn a_recorded_path_that_is_now_someone_elses_stays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lock = dir.path().join("master.lock");
        std::fs::write(&lock, "").expect("write");
        {
            let mut writer = WriterLock::acquire(dir.path()).expect("free");
            writer.record(&lock, std::fs::metadata(&lock).expect("exists").ino());
        }
        // The dead writer's lock went away and git took the name: another inode.
        std::fs::remove_file(&lock).expect("remove");
        std::fs::write(dir.path().join("spacer"), "").expect("write");
        std::fs::write(&lock, "git").expect("write");
        let _next = WriterLock::acquire(dir.path()).expect("free");
        assert!(lock.exists(), "git's lock is never broken");
    }

    #[test]
    fn a_held_writer_lock_names_its_holder_after_the_wait() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cairn-writer.lock");
        std::fs::write(&path, "").expect("write");
        let mut holder = std::process::Command::new("flock")
            .arg(&path)
            .args(["sleep", "30"])
            .spawn()
            .expect("flock runs");
        // Wait until flock holds it.
        let file = File::open(&path).expect("open");
        let deadline = Instant::now() + Duration::from_secs(10);
        while holder_of(&file).is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let err =
            WriterLock::acquire_within(dir.path(), Duration::from_millis(300)).expect_err("held");
        let _ = holder.kill();
        let _ = holder.wait();
        let text = err.to_string();
        assert!(text.contains("flock") || text.contains("sleep"), "{text}");
        assert!(text.contains("cairn-writer.lock"), "{text}");
    }
}
