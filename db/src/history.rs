//! History: the branch log, the commits where one key changed, diffs and rollback.
//!
//! Nothing here rewrites history: a rollback is a new commit whose tree is an old one.

use std::collections::BTreeSet;

use gix::ObjectId;

use crate::read::{entry_in_tree, read_blob, read_tree, resolve, tree_entries, tree_of};
use crate::{Committed, Db, Error, CONFIG_BRANCH};

/// One commit, as `log` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    pub id: ObjectId,
    pub parents: Vec<ObjectId>,
    /// `Name <email>`.
    pub author: String,
    /// Seconds since the epoch.
    pub time: i64,
    /// The message without its trailing newline.
    pub message: String,
}

impl CommitInfo {
    /// The first line of the message.
    pub fn summary(&self) -> &str {
        self.message.lines().next().unwrap_or("")
    }
}

/// A commit in which one key's value changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChange {
    pub commit: CommitInfo,
    /// The value before (`None`: absent, as in the first commit).
    pub old: Option<Vec<u8>>,
    pub new: Option<Vec<u8>>,
}

/// A path whose content differs between two commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathChange {
    pub path: String,
    pub old: Option<Vec<u8>>,
    pub new: Option<Vec<u8>>,
}

impl Db {
    /// The commits reachable from `rev`, newest first, at most `limit`.
    pub fn log(&self, rev: &str, limit: Option<usize>) -> Result<Vec<CommitInfo>, Error> {
        let repo = self.repo();
        let tip = resolve(&repo, rev)?;
        let walk = repo
            .rev_walk([tip])
            .sorting(gix::revision::walk::Sorting::ByCommitTime(Default::default()))
            .all()
            .map_err(|e| Error::git("walking history", e))?;
        let mut out = Vec::new();
        for info in walk.take(limit.unwrap_or(usize::MAX)) {
            let info = info.map_err(|e| Error::git("walking history", e))?;
            out.push(commit_info(&repo, info.id)?);
        }
        Ok(out)
    }

    /// The commits on `rev`'s first-parent line where the content of `path` changed, newest
    /// first, with the old and new values. Follows first parents, like `git log --first-parent`:
    /// a merge counts as changing what it brought in.
    pub fn key_history(
        &self,
        rev: &str,
        path: &str,
        limit: Option<usize>,
    ) -> Result<Vec<KeyChange>, Error> {
        match crate::history_index::bit_of(path) {
            Some(bit) => self.key_history_indexed(rev, path, bit, limit),
            None => self.key_history_walk(rev, path, limit),
        }
    }

    /// [`Self::key_history`] for a catalogue key, through the history index.
    fn key_history_indexed(
        &self,
        rev: &str,
        path: &str,
        bit: u32,
        limit: Option<usize>,
    ) -> Result<Vec<KeyChange>, Error> {
        let repo = self.repo();
        let mut index = crate::history_index::HistoryIndex::load(self.git_dir());
        let limit = limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        let mut current = Some(resolve(&repo, rev)?);
        while let Some(id) = current {
            if out.len() >= limit {
                break;
            }
            let record = index.record(&repo, id)?;
            if record.changed & bit != 0 {
                let value = |commit: Option<ObjectId>| -> Result<Option<Vec<u8>>, Error> {
                    match commit {
                        Some(c) => match crate::read::entry_id(&repo, c, path)? {
                            Some(blob) => read_blob(&repo, blob).map(Some),
                            None => Ok(None),
                        },
                        None => Ok(None),
                    }
                };
                out.push(KeyChange {
                    commit: commit_info(&repo, id)?,
                    old: value(record.parent)?,
                    new: value(Some(id))?,
                });
            }
            current = record.parent;
        }
        index.save();
        Ok(out)
    }

    /// [`Self::key_history`] for any path, by looking it up in every commit.
    fn key_history_walk(
        &self,
        rev: &str,
        path: &str,
        limit: Option<usize>,
    ) -> Result<Vec<KeyChange>, Error> {
        let repo = self.repo();
        let limit = limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        // Each commit is read once: its tree and first parent, then the entry at `path`.
        let mut id = resolve(&repo, rev)?;
        let (tree, mut parent) = tree_and_first_parent(&repo, id)?;
        let mut entry = entry_in_tree(&repo, tree, path)?;
        while out.len() < limit {
            let (parent_entry, grandparent) = match parent {
                Some(p) => {
                    let (parent_tree, grandparent) = tree_and_first_parent(&repo, p)?;
                    (entry_in_tree(&repo, parent_tree, path)?, grandparent)
                }
                None => (None, None),
            };
            if parent_entry != entry {
                let read = |e: Option<ObjectId>| e.map(|e| read_blob(&repo, e)).transpose();
                out.push(KeyChange {
                    commit: commit_info(&repo, id)?,
                    old: read(parent_entry)?,
                    new: read(entry)?,
                });
            }
            let Some(next) = parent else { break };
            (id, parent, entry) = (next, grandparent, parent_entry);
        }
        Ok(out)
    }

    /// The paths whose content differs from `a` to `b`, in path order.
    pub fn diff(&self, a: &str, b: &str) -> Result<Vec<PathChange>, Error> {
        let repo = self.repo();
        let old = read_tree(&repo, tree_of(&repo, resolve(&repo, a)?)?)?;
        let new = read_tree(&repo, tree_of(&repo, resolve(&repo, b)?)?)?;
        let paths: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
        Ok(paths
            .into_iter()
            .filter(|p| old.get(*p) != new.get(*p))
            .map(|p| PathChange {
                path: p.clone(),
                old: old.get(p).cloned(),
                new: new.get(p).cloned(),
            })
            .collect())
    }

    /// Makes a new commit on the configuration branch whose tree is `rev`'s (migrated to the
    /// current schema if it is older). History is never rewritten. With `expect`, refused unless
    /// the branch is at that commit.
    pub fn rollback(
        &self,
        rev: &str,
        message: Option<&str>,
        expect: Option<ObjectId>,
    ) -> Result<Committed, Error> {
        let repo = self.repo();
        let target = resolve(&repo, rev)?;
        let mut tree = read_tree(&repo, tree_of(&repo, target)?)?;
        let changed = changed_paths_after_root(&repo, target)?;
        cairn_schema::migrate(&mut tree, &|p| changed.contains(p), self.host())?;
        let mut tx = self.transaction(CONFIG_BRANCH)?;
        tx.force(true);
        if expect.is_some() {
            tx.expect(expect);
        }
        let head = tx.base().ok_or_else(|| Error::NoBranch { branch: CONFIG_BRANCH.into() })?;
        let current = read_tree(&repo, tree_of(&repo, head)?)?;
        let kept = cairn_schema::tree::keep_growing_values(&current, &mut tree, self.host());
        for (path, content) in &tree {
            if current.get(path) != Some(content) {
                tx.set_path(path, content.clone());
            }
        }
        for path in current.keys().filter(|p| !tree.contains_key(*p)) {
            tx.remove_path(path);
        }
        let summary = commit_info(&repo, target)?.summary().to_owned();
        let mut default = format!("rollback to {} ({summary})", crate::error::short(&target));
        if !kept.is_empty() {
            default.push_str("\n\n");
            default.push_str(&kept.iter().map(|n| format!("- {n}\n")).collect::<String>());
        }
        tx.message(message.unwrap_or(&default));
        tx.commit()
    }
}

pub(crate) fn commit_info(repo: &gix::Repository, id: ObjectId) -> Result<CommitInfo, Error> {
    let commit = repo.find_commit(id).map_err(|e| Error::git("reading a commit", e))?;
    let decoded = commit.decode().map_err(|e| Error::git("decoding a commit", e))?;
    let author = decoded.author().map_err(|e| Error::git("decoding a commit's author", e))?;
    let time = author.time().map(|t| t.seconds).unwrap_or(0);
    Ok(CommitInfo {
        id,
        parents: decoded.parents().collect(),
        author: format!("{} <{}>", author.name, author.email),
        time,
        message: decoded.message.to_string().trim_end().to_owned(),
    })
}

/// Every path some commit after the root changed on `head`'s first-parent line, except schema
/// migrations: the values a user (or a script, or the git CLI) set explicitly.
pub(crate) fn changed_paths_after_root(
    repo: &gix::Repository,
    head: ObjectId,
) -> Result<BTreeSet<String>, Error> {
    let mut changed = BTreeSet::new();
    let mut current = Some(head);
    let mut entries = tree_entries(repo, tree_of(repo, head)?)?;
    while let Some(id) = current {
        let info = commit_info(repo, id)?;
        let Some(parent) = info.parents.first().copied() else {
            break;
        };
        let parent_entries = tree_entries(repo, tree_of(repo, parent)?)?;
        if !info.message.starts_with("schema: migrate") {
            for path in entries.keys().chain(parent_entries.keys()) {
                if entries.get(path) != parent_entries.get(path) {
                    changed.insert(path.clone());
                }
            }
        }
        current = Some(parent);
        entries = parent_entries;
    }
    Ok(changed)
}

/// A commit's tree and first parent, from one read of the commit.
fn tree_and_first_parent(
    repo: &gix::Repository,
    id: ObjectId,
) -> Result<(ObjectId, Option<ObjectId>), Error> {
    let commit = repo.find_commit(id).map_err(|e| Error::git("reading a commit", e))?;
    let decoded = commit.decode().map_err(|e| Error::git("decoding a commit", e))?;
    let parent = decoded.parents().next();
    Ok((decoded.tree(), parent))
}
