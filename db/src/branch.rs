//! Branches: listing, creating, deleting and fast-forwarding, under the same locks as commits.

use gix::ObjectId;

use crate::refs::{compare_and_swap, full_name, Swap, WriterLock};
use crate::{Db, Error};

impl Db {
    /// The local branches, by name, sorted.
    pub fn branches(&self) -> Result<Vec<String>, Error> {
        let repo = self.repo();
        let platform = repo.references().map_err(|e| Error::git("listing refs", e))?;
        let iter = platform.local_branches().map_err(|e| Error::git("listing branches", e))?;
        let mut names = Vec::new();
        for reference in iter {
            let reference = reference.map_err(|e| Error::git("listing branches", e))?;
            names.push(reference.name().shorten().to_string());
        }
        names.sort();
        Ok(names)
    }

    /// Creates `branch` at `at`; refused if it exists.
    pub fn create_branch(&self, branch: &str, at: ObjectId) -> Result<(), Error> {
        check_name(branch)?;
        let repo = self.repo();
        let _writer = WriterLock::acquire(self.git_dir())?;
        match compare_and_swap(&repo, branch, None, at)? {
            Swap::Done => {
                self.heads.clear();
                Ok(())
            }
            Swap::Moved(_) => Err(Error::BranchExists { branch: branch.to_owned() }),
        }
    }

    /// Deletes `branch` (loose and packed). The configuration branch cannot be deleted.
    pub fn delete_branch(&self, branch: &str) -> Result<(), Error> {
        if branch == crate::CONFIG_BRANCH {
            return Err(Error::Protected { branch: branch.to_owned() });
        }
        let repo = self.repo();
        let _writer = WriterLock::acquire(self.git_dir())?;
        let Some(current) = crate::refs::read(&repo, branch)? else {
            return Err(Error::NoBranch { branch: branch.to_owned() });
        };
        let name = gix::refs::FullName::try_from(full_name(branch))
            .map_err(|_| Error::NoBranch { branch: branch.to_owned() })?;
        use gix::refs::transaction::{Change, PreviousValue, RefEdit, RefLog};
        repo.edit_reference(RefEdit {
            change: Change::Delete {
                expected: PreviousValue::MustExistAndMatch(gix::refs::Target::Object(current)),
                log: RefLog::AndReference,
            },
            name,
            deref: false,
        })
        .map_err(|e| Error::git("deleting a branch", e))?;
        self.heads.clear();
        Ok(())
    }

    /// Moves `branch` to `to` if `to` descends from its head (or the branch has none).
    pub fn fast_forward(&self, branch: &str, to: ObjectId) -> Result<(), Error> {
        let repo = self.repo();
        repo.find_commit(to).map_err(|_| Error::UnknownRevision { rev: to.to_string() })?;
        let _writer = WriterLock::acquire(self.git_dir())?;
        let head = crate::refs::read(&repo, branch)?;
        if let Some(head) = head {
            if head == to {
                return Ok(());
            }
            if self.merge_base(head, to)? != Some(head) {
                return Err(Error::NotFastForward {
                    branch: branch.to_owned(),
                    to: to.to_string(),
                });
            }
        }
        match compare_and_swap(&repo, branch, head, to)? {
            Swap::Done => {
                self.heads.clear();
                Ok(())
            }
            Swap::Moved(found) => Err(Error::Moved {
                branch: branch.to_owned(),
                expected: head.map_or("(none)".into(), |h| h.to_string()),
                found: found.map_or("(none)".into(), |h| h.to_string()),
            }),
        }
    }

    /// The best common ancestor of two commits.
    pub fn merge_base(&self, a: ObjectId, b: ObjectId) -> Result<Option<ObjectId>, Error> {
        let repo = self.repo();
        let base = repo.merge_base(a, b).map_err(|e| Error::git("finding a merge base", e))?;
        Ok(base.map(|id| id.detach()))
    }
}

/// Branch names must be valid git ref names and single path components (they are directories
/// in the 9P tree).
fn check_name(branch: &str) -> Result<(), Error> {
    let valid = !branch.is_empty()
        && !branch.contains('/')
        && gix::refs::FullName::try_from(full_name(branch)).is_ok();
    if valid {
        Ok(())
    } else {
        Err(Error::BadBranchName { branch: branch.to_owned() })
    }
}
