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
        let mut writer = WriterLock::acquire(self.git_dir())?;
        match compare_and_swap(&repo, &mut writer, branch, None, at)? {
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
        let mut writer = WriterLock::acquire(self.git_dir())?;
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
        match compare_and_swap(&repo, &mut writer, branch, head, to)? {
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
/// Refuses a branch name git would refuse (or find ambiguous), before any ref is written.
pub(crate) fn check_name(branch: &str) -> Result<(), Error> {
    if valid_branch_name(branch) {
        Ok(())
    } else {
        Err(Error::BadBranchName { branch: branch.to_owned() })
    }
}

/// Whether `name` is a branch name by git's rules (`git check-ref-format --branch`), as one
/// path component: no `/`; not starting with `.` or `-`; not ending with `.` or `.lock`; no
/// `..`, no `@{`, not `@`; no control characters, space, `~ ^ : ? * [ \`. `HEAD` and the
/// other all-capital `*HEAD` names are refused too: git accepts them as branches, then
/// warns that every use of them is ambiguous.
pub fn valid_branch_name(name: &str) -> bool {
    let forbidden = |c: char| c.is_ascii_control() || " ~^:?*[\\/".contains(c);
    !name.is_empty()
        && !name.starts_with('.')
        && !name.starts_with('-')
        && !name.ends_with('.')
        && !name.ends_with(".lock")
        && !name.contains("..")
        && !name.contains("@{")
        && name != "@"
        && !name.chars().any(forbidden)
        && !(name.ends_with("HEAD") && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
        && gix::refs::FullName::try_from(full_name(name)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_names_follow_git() {
        for good in ["master", "state", "feature-1", "a.b", "x_y", "v1.2.3", "héllo"] {
            assert!(valid_branch_name(good), "{good:?} refused");
        }
        for bad in [
            "",
            "a b",
            "a..b",
            "x~1",
            "x^",
            "x:y",
            "x?",
            "x*",
            "x[",
            "x\\y",
            "x.",
            "@",
            "x@{1}",
            "HEAD",
            "FETCH_HEAD",
            ".hidden",
            "x.lock",
            "a/b",
            "-x",
            "tab\there",
            "del\u{7f}",
        ] {
            assert!(!valid_branch_name(bad), "{bad:?} accepted");
        }
    }
}
