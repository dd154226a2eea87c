//! Branch heads for readers that ask very often: the 9P server resolves a head for nearly
//! every request, and reading a ref through gix costs an open, a read and a close, plus stats
//! of packed-refs. The last value read is kept while the file that holds it is unchanged, which
//! one stat tells: git and cairn both replace a ref file by renaming a new one over it, so its
//! inode, size or times change with every update, whoever makes it.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;

use gix::ObjectId;

/// What identifies one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        let m = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// Where a branch's value came from: its loose file, or (when there is none) packed-refs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stamp {
    Loose(FileStamp),
    Packed(Option<FileStamp>),
}

/// Heads by full ref name, each with the stamp of the file it was read from.
#[derive(Debug, Default)]
pub(crate) struct HeadCache {
    entries: Mutex<HashMap<String, (Stamp, Option<ObjectId>)>>,
}

impl HeadCache {
    /// The head of `name` (a full ref name): the cached value when its file is unchanged, else
    /// `read()`'s, which is then cached. The stamp is taken before reading, so a change that
    /// races with the read is seen next time.
    pub(crate) fn get<E>(
        &self,
        git_dir: &Path,
        name: &str,
        read: impl FnOnce() -> Result<Option<ObjectId>, E>,
    ) -> Result<Option<ObjectId>, E> {
        let stamp = match FileStamp::of(&git_dir.join(name)) {
            Some(loose) => Stamp::Loose(loose),
            None => Stamp::Packed(FileStamp::of(&git_dir.join("packed-refs"))),
        };
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((cached, head)) = entries.get(name) {
            if *cached == stamp {
                return Ok(*head);
            }
        }
        drop(entries);
        let head = read()?;
        entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.insert(name.to_owned(), (stamp, head));
        Ok(head)
    }

    /// Forgets everything: this process just moved a ref.
    pub(crate) fn clear(&self) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::convert::Infallible;

    use super::*;
    use crate::refs::{compare_and_swap, WriterLock};
    use crate::testing::{bare_repo, commit, git};

    const MASTER: &str = "refs/heads/master";

    /// Reads `MASTER` through the cache, counting the reads that reach the repository.
    fn get(cache: &HeadCache, repo: &gix::Repository, reads: &Cell<u32>) -> Option<ObjectId> {
        let read = || {
            reads.set(reads.get() + 1);
            crate::refs::read(repo, MASTER)
        };
        cache.get(repo.git_dir(), MASTER, read).expect("the ref reads")
    }

    #[test]
    fn an_unchanged_ref_is_not_read_again() {
        let (_dir, repo) = bare_repo();
        let head = commit(repo.git_dir(), "head");
        git(repo.git_dir(), &["update-ref", MASTER, &head.to_string()]);
        let (cache, reads) = (HeadCache::default(), Cell::new(0));
        assert_eq!(get(&cache, &repo, &reads), Some(head));
        assert_eq!(get(&cache, &repo, &reads), Some(head));
        let unread = cache.get(repo.git_dir(), MASTER, || -> Result<_, Infallible> {
            panic!("the reader is not called while the ref file is unchanged")
        });
        assert_eq!(unread, Ok(Some(head)));
        assert_eq!(reads.get(), 1);
    }

    #[test]
    fn a_rename_over_the_ref_is_seen_whoever_makes_it() {
        let (_dir, repo) = bare_repo();
        let [first, by_git, by_cairn] =
            ["first", "git", "cairn"].map(|m| commit(repo.git_dir(), m));
        git(repo.git_dir(), &["update-ref", MASTER, &first.to_string()]);
        let (cache, reads) = (HeadCache::default(), Cell::new(0));
        assert_eq!(get(&cache, &repo, &reads), Some(first));
        // git writes master.lock and renames it over the ref.
        git(repo.git_dir(), &["update-ref", MASTER, &by_git.to_string()]);
        assert_eq!(get(&cache, &repo, &reads), Some(by_git));
        assert_eq!(reads.get(), 2);
        // So does cairn, without telling this cache.
        let mut writer = WriterLock::acquire(repo.git_dir()).expect("free");
        compare_and_swap(&repo, &mut writer, "master", Some(by_git), by_cairn).expect("swap");
        assert_eq!(get(&cache, &repo, &reads), Some(by_cairn));
        assert_eq!(reads.get(), 3);
    }

    #[test]
    fn a_change_of_packed_refs_is_seen_for_a_ref_only_packed() {
        let (_dir, repo) = bare_repo();
        let [first, second] = ["first", "second"].map(|m| commit(repo.git_dir(), m));
        git(repo.git_dir(), &["update-ref", MASTER, &first.to_string()]);
        git(repo.git_dir(), &["pack-refs", "--all"]);
        assert!(!repo.git_dir().join(MASTER).exists(), "only packed");
        let (cache, reads) = (HeadCache::default(), Cell::new(0));
        assert_eq!(get(&cache, &repo, &reads), Some(first));
        assert_eq!(get(&cache, &repo, &reads), Some(first));
        assert_eq!(reads.get(), 1, "unchanged packed-refs: cached");
        // Moved and packed again: no loose file before or after, only packed-refs changed.
        git(repo.git_dir(), &["update-ref", MASTER, &second.to_string()]);
        git(repo.git_dir(), &["pack-refs", "--all"]);
        assert!(!repo.git_dir().join(MASTER).exists(), "only packed");
        assert_eq!(get(&cache, &repo, &reads), Some(second));
        assert_eq!(reads.get(), 2);
    }

    #[test]
    fn clear_forgets_every_head() {
        let (_dir, repo) = bare_repo();
        let head = commit(repo.git_dir(), "head");
        git(repo.git_dir(), &["update-ref", MASTER, &head.to_string()]);
        let (cache, reads) = (HeadCache::default(), Cell::new(0));
        assert_eq!(get(&cache, &repo, &reads), Some(head));
        cache.clear();
        assert_eq!(get(&cache, &repo, &reads), Some(head));
        assert_eq!(reads.get(), 2);
    }

    #[test]
    fn a_missing_ref_is_cached_as_missing() {
        let (_dir, repo) = bare_repo();
        let (cache, reads) = (HeadCache::default(), Cell::new(0));
        assert_eq!(get(&cache, &repo, &reads), None);
        assert_eq!(get(&cache, &repo, &reads), None);
        assert_eq!(reads.get(), 1);
        let head = commit(repo.git_dir(), "head");
        git(repo.git_dir(), &["update-ref", MASTER, &head.to_string()]);
        assert_eq!(get(&cache, &repo, &reads), Some(head), "the new loose file is seen");
    }

    #[test]
    fn a_read_error_is_passed_through_and_not_cached() {
        let (_dir, repo) = bare_repo();
        let head = commit(repo.git_dir(), "head");
        git(repo.git_dir(), &["update-ref", MASTER, &head.to_string()]);
        let cache = HeadCache::default();
        let failed = cache.get(repo.git_dir(), MASTER, || Err("the disk said no"));
        assert_eq!(failed, Err("the disk said no"));
        let reads = Cell::new(0);
        assert_eq!(get(&cache, &repo, &reads), Some(head));
        assert_eq!(reads.get(), 1, "the failure was not cached");
    }
}
