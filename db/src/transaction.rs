//! Transactions: many changes, one commit.
//!
//! A transaction remembers the head it started from (its base). At commit it takes the writer
//! lock and reads the head again. If the head moved, its changes are re-applied on the new head
//! unless another commit changed one of the same keys (a conflict). On the configuration branch
//! the new tree is validated by the schema before the ref moves, so an invalid tree never
//! becomes the head; an old schema version is first migrated in a commit of its own.

use std::collections::BTreeMap;

use cairn_schema::{by_name, by_path, Key, Tree, Validation};
use gix::ObjectId;

use crate::error::short;
use crate::read::{entry_id, entry_in_tree, read_tree, read_tree_bounded, tree_of};
use crate::refs::{compare_and_swap, Swap, WriterLock};
use crate::{Db, Error, CONFIG_BRANCH};

/// A set of changes to one branch, committed at once by [`Transaction::commit`].
#[derive(Debug)]
pub struct Transaction<'db> {
    db: &'db Db,
    branch: String,
    base: Option<ObjectId>,
    changes: BTreeMap<String, Option<Vec<u8>>>,
    message: Option<String>,
    expect: Option<Option<ObjectId>>,
    validation: Validation,
    extra_parents: Vec<ObjectId>,
    links: std::collections::BTreeSet<String>,
}

/// What [`Transaction::commit`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The branch head afterwards.
    pub id: ObjectId,
    /// The head before; equal to `id` when nothing changed.
    pub parent: Option<ObjectId>,
    /// A commit was made (false when every change was already in place).
    pub created: bool,
    /// The head had moved since the transaction started and the changes were re-applied on it.
    pub rebased: bool,
    /// A schema migration commit made first, if the head was at an older schema version.
    pub migration: Option<ObjectId>,
    /// Values this commit did not touch that the schema refuses (written by hand with git,
    /// or by an older cairn): kept as they are, and said so.
    pub kept_invalid: Vec<String>,
}

impl<'db> Transaction<'db> {
    pub(crate) fn new(db: &'db Db, branch: &str, base: Option<ObjectId>) -> Self {
        Transaction {
            db,
            branch: branch.to_owned(),
            base,
            changes: BTreeMap::new(),
            message: None,
            expect: None,
            validation: Validation::default(),
            extra_parents: Vec::new(),
            links: Default::default(),
        }
    }

    /// The head this transaction started from.
    pub fn base(&self) -> Option<ObjectId> {
        self.base
    }

    /// Accept daemon.json keys the schema does not know. Set before [`Self::set_key`].
    pub fn force(&mut self, force: bool) -> &mut Self {
        self.validation.force = force;
        self
    }

    /// Treats `base` as the head this transaction started from (a 9P transaction snapshots the
    /// head at mkdir): if the branch moved since, the changes are re-applied or refused as a
    /// conflict.
    pub fn base_at(&mut self, base: Option<ObjectId>) -> &mut Self {
        self.base = base;
        self
    }

    /// Refuse to commit unless the branch is exactly at `head` (scripts' compare-and-swap).
    pub fn expect(&mut self, head: Option<ObjectId>) -> &mut Self {
        self.expect = Some(head);
        self.base = head;
        self
    }

    /// Makes the commit a merge: `parents` follow the branch head as further parents.
    pub fn merge_parents(&mut self, parents: Vec<ObjectId>) -> &mut Self {
        self.extra_parents = parents;
        self
    }

    /// Uses `message` instead of a generated one.
    pub fn message(&mut self, message: impl Into<String>) -> &mut Self {
        self.message = Some(message.into());
        self
    }

    /// Sets a key by friendly name from what a user typed, checked by the schema now.
    pub fn set_key(&mut self, name: &str, input: &[u8]) -> Result<&'static Key, Error> {
        let key = by_name(name)?;
        if key.internal {
            return Err(cairn_schema::Error::Internal { key: key.name.into() }.into());
        }
        let canonical =
            cairn_schema::value::normalize(key, input, self.db.host(), self.validation)?;
        self.changes.insert(key.path.to_owned(), Some(canonical));
        Ok(key)
    }

    /// Puts a key back to its default.
    pub fn reset_key(&mut self, name: &str) -> Result<&'static Key, Error> {
        let key = by_name(name)?;
        if key.internal {
            return Err(cairn_schema::Error::Internal { key: key.name.into() }.into());
        }
        self.changes.insert(key.path.to_owned(), Some(key.default_bytes(self.db.host())));
        Ok(key)
    }

    /// Writes `content` at `path` as it is; on the configuration branch it is validated at commit.
    pub fn set_path(&mut self, path: &str, content: Vec<u8>) -> &mut Self {
        self.changes.insert(path.to_owned(), Some(content));
        self
    }

    /// Writes a symbolic link at `path` pointing at `target`.
    pub fn set_link(&mut self, path: &str, target: Vec<u8>) -> &mut Self {
        self.links.insert(path.to_owned());
        self.changes.insert(path.to_owned(), Some(target));
        self
    }

    /// Removes `path` (a file).
    pub fn remove_path(&mut self, path: &str) -> &mut Self {
        self.changes.insert(path.to_owned(), None);
        self
    }

    /// The staged changes, path to new content (`None`: removed).
    pub fn changes(&self) -> &BTreeMap<String, Option<Vec<u8>>> {
        &self.changes
    }

    /// Commits the changes as one commit and moves the branch to it.
    pub fn commit(self) -> Result<Committed, Error> {
        self.check_paths()?;
        let repo = self.db.repo();
        let mut writer = WriterLock::acquire(self.db.git_dir())?;
        // Only an outside writer (the git CLI) can move the branch while we hold the writer lock;
        // give up rather than spin if one does so without pause.
        const ATTEMPTS: u32 = 50;
        for _ in 0..ATTEMPTS {
            let head = crate::refs::read(&repo, &self.branch)?;
            if let Some(expected) = self.expect {
                if head != expected {
                    return Err(Error::Moved {
                        branch: self.branch.clone(),
                        expected: expected.map_or("(none)".into(), |id| id.to_string()),
                        found: head.map_or("(none)".into(), |id| id.to_string()),
                    });
                }
            }
            let rebased = head != self.base;
            if rebased {
                self.check_conflicts(&repo, head)?;
            }
            let validated = self.branch == CONFIG_BRANCH;
            let migration = match head {
                Some(head) if validated => migrate_if_needed(self.db, &repo, head)?,
                _ => None,
            };
            let parent = migration.or(head);
            let parent_tree = match parent {
                Some(commit) => tree_of(&repo, commit)?,
                None => ObjectId::empty_tree(repo.object_hash()),
            };
            let mut editor =
                repo.edit_tree(parent_tree).map_err(|e| Error::git("editing a tree", e))?;
            let mut written = Vec::new();
            for (path, change) in &self.changes {
                match change {
                    Some(content) => {
                        let blob = repo
                            .write_blob(content)
                            .map_err(|e| Error::git("writing a blob", e))?;
                        written.push(blob.detach());
                        let kind = if self.links.contains(path) {
                            gix::object::tree::EntryKind::Link
                        } else {
                            gix::object::tree::EntryKind::Blob
                        };
                        editor
                            .upsert(path.as_str(), kind, blob.detach())
                            .map_err(|e| Error::git("editing a tree", e))?;
                    }
                    None => {
                        editor
                            .remove(path.as_str())
                            .map_err(|e| Error::git("editing a tree", e))?;
                    }
                }
            }
            let tree = editor.write().map_err(|e| Error::git("writing a tree", e))?.detach();
            if tree == parent_tree && self.extra_parents.is_empty() {
                let Some(id) = parent else {
                    return Err(Error::NoBranch { branch: self.branch.clone() });
                };
                if migration.is_none() {
                    return Ok(Committed {
                        id,
                        parent: head,
                        created: false,
                        rebased,
                        migration,
                        kept_invalid: Vec::new(),
                    });
                }
                // Nothing but the migration: it becomes the head.
                match compare_and_swap(&repo, &mut writer, &self.branch, head, id)? {
                    Swap::Done => {
                        self.db.heads.clear();
                        return Ok(Committed {
                            id,
                            parent: head,
                            created: true,
                            rebased,
                            migration,
                            kept_invalid: Vec::new(),
                        });
                    }
                    Swap::Moved(_) => continue,
                }
            }
            let mut kept_invalid = Vec::new();
            if validated {
                let (full, too_large) = read_tree_bounded(&repo, tree, crate::MAX_VALUE)?;
                let changed = |path: &str| self.changes.contains_key(path);
                if let Some((path, size)) = too_large.iter().find(|(p, _)| changed(p)) {
                    let key = by_path(path).map_or(path.as_str(), |k| k.name);
                    return Err(cairn_schema::Error::refused_too_long(key, *size).into());
                }
                cairn_schema::validate_tree(&full, &changed, self.db.host(), self.validation)?;
                if self.changes.keys().any(|p| cairn_schema::tree::GROWS_ONLY.contains(&p.as_str()))
                {
                    let (before, _) = read_tree_bounded(&repo, parent_tree, crate::MAX_VALUE)?;
                    cairn_schema::tree::check_change(&before, &full, self.db.host())?;
                }
                kept_invalid = invalid_unchanged(&full, &too_large, &changed, self.db.host());
            }
            let message = match &self.message {
                Some(message) => message.clone(),
                None => generated_message(&repo, &self.changes, parent_tree)?,
            };
            let parents = parent.into_iter().chain(self.extra_parents.iter().copied()).collect();
            let commit = write_commit(&repo, tree, parents, &message)?;
            written.push(commit);
            written.push(tree);
            for path in self.changes.keys() {
                written.extend(trees_along(&repo, tree, path)?);
            }
            crate::durable::sync_objects(&repo, written)?;
            match compare_and_swap(&repo, &mut writer, &self.branch, head, commit)? {
                Swap::Done => {
                    self.db.heads.clear();
                    return Ok(Committed {
                        id: commit,
                        parent: head,
                        created: true,
                        rebased,
                        migration,
                        kept_invalid,
                    });
                }
                // The git CLI moved the branch between our read and our lock: start over on it.
                Swap::Moved(_) => continue,
            }
        }
        Err(Error::Contended { branch: self.branch.clone(), attempts: ATTEMPTS })
    }

    /// Refuses paths git cannot store or must not hold (a NUL, an empty component, `.git`),
    /// and, on the configuration branch, a key that is not a regular file: the schema checks
    /// a link's target as if it were the value, and the guest would follow it.
    fn check_paths(&self) -> Result<(), Error> {
        for path in self.changes.keys() {
            let bad = path.is_empty()
                || path.contains('\0')
                || path.split('/').any(|c| c.is_empty() || c.eq_ignore_ascii_case(".git"));
            if bad {
                return Err(Error::BadPath { path: path.clone() });
            }
        }
        if self.branch == CONFIG_BRANCH {
            if let Some(key) = self.links.iter().find_map(|p| by_path(p)) {
                return Err(cairn_schema::Error::NotAFile { key: key.name.into() }.into());
            }
        }
        Ok(())
    }

    /// Refuses the commit if `head` changed any path this transaction changes since its base,
    /// to a value other than ours.
    fn check_conflicts(&self, repo: &gix::Repository, head: Option<ObjectId>) -> Result<(), Error> {
        let Some(head) = head else {
            return Err(Error::NoBranch { branch: self.branch.clone() });
        };
        for (path, change) in &self.changes {
            let at_base = match self.base {
                Some(base) => entry_id(repo, base, path)?,
                None => None,
            };
            let at_head = entry_id(repo, head, path)?;
            if at_base == at_head {
                continue;
            }
            let ours = change.as_ref().map(|content| blob_id(repo, content));
            if ours == at_head {
                continue;
            }
            let theirs = match at_head {
                Some(id) => describe(path, &crate::read::read_blob(repo, id)?),
                None => "(removed)".into(),
            };
            return Err(Error::Conflict {
                key: by_path(path).map_or(path.clone(), |k| k.name.to_owned()),
                base: self.base.map_or("(none)".into(), |b| short(&b)),
                head: short(&head),
                theirs,
            });
        }
        Ok(())
    }
}

/// Why each value of `tree` that this commit did not change is invalid, if it is.
fn invalid_unchanged(
    tree: &cairn_schema::Tree,
    too_large: &std::collections::BTreeMap<String, u64>,
    changed: &dyn Fn(&str) -> bool,
    host: &cairn_schema::Host,
) -> Vec<String> {
    cairn_schema::tree::invalid_values(tree, too_large, host)
        .into_iter()
        .filter(|(key, _)| !changed(key.path))
        .map(|(_, error)| error.to_string())
        .collect()
}

/// Writes `tree` as a commit on `branch` whose parent must be `expected`, as `init` and
/// `rollback` do. Validated on the configuration branch like any transaction.
pub(crate) fn commit_tree(
    db: &Db,
    branch: &str,
    expected: Option<ObjectId>,
    tree: &Tree,
    message: &str,
) -> Result<ObjectId, Error> {
    if branch == CONFIG_BRANCH {
        cairn_schema::validate_tree(tree, &|_| true, db.host(), Validation { force: true })?;
    }
    let repo = db.repo();
    let mut writer = WriterLock::acquire(db.git_dir())?;
    let (root, written) = write_tree(&repo, tree)?;
    let commit = write_commit(&repo, root, expected.into_iter().collect(), message)?;
    crate::durable::sync_objects(&repo, written.into_iter().chain([root, commit]))?;
    match compare_and_swap(&repo, &mut writer, branch, expected, commit)? {
        Swap::Done => {
            db.heads.clear();
            Ok(commit)
        }
        Swap::Moved(found) => Err(Error::Moved {
            branch: branch.to_owned(),
            expected: expected.map_or("(none)".into(), |id| id.to_string()),
            found: found.map_or("(none)".into(), |id| id.to_string()),
        }),
    }
}

/// Writes a whole tree from a map; returns the root and every object written.
pub(crate) fn write_tree(
    repo: &gix::Repository,
    tree: &Tree,
) -> Result<(ObjectId, Vec<ObjectId>), Error> {
    let empty = ObjectId::empty_tree(repo.object_hash());
    let mut editor = repo.edit_tree(empty).map_err(|e| Error::git("editing a tree", e))?;
    let mut written = Vec::new();
    for (path, content) in tree {
        let blob = repo.write_blob(content).map_err(|e| Error::git("writing a blob", e))?.detach();
        written.push(blob);
        editor
            .upsert(path.as_str(), gix::object::tree::EntryKind::Blob, blob)
            .map_err(|e| Error::git("editing a tree", e))?;
    }
    let root = editor.write().map_err(|e| Error::git("writing a tree", e))?.detach();
    for path in tree.keys() {
        written.extend(trees_along(repo, root, path)?);
    }
    Ok((root, written))
}

/// The subtrees on the way from `root` to `path` (excluding the root itself).
fn trees_along(repo: &gix::Repository, root: ObjectId, path: &str) -> Result<Vec<ObjectId>, Error> {
    let mut out = Vec::new();
    let mut prefix = String::new();
    let parts: Vec<&str> = path.split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(part);
        if let Some(id) = entry_in_tree(repo, root, &prefix)? {
            out.push(id);
        }
    }
    Ok(out)
}

/// Writes a commit object with the configured identity (or `cairn <cairn@localhost>`) and the
/// current time.
pub(crate) fn write_commit(
    repo: &gix::Repository,
    tree: ObjectId,
    parents: Vec<ObjectId>,
    message: &str,
) -> Result<ObjectId, Error> {
    let now = gix::date::Time::now_local_or_utc();
    let identity = |sig: Option<gix::Result<gix::actor::SignatureRef<'_>>>| {
        let (name, email) = match sig.and_then(Result::ok) {
            Some(sig) => (sig.name.to_owned(), sig.email.to_owned()),
            None => ("cairn".into(), "cairn@localhost".into()),
        };
        gix::actor::Signature { name, email, time: now }
    };
    let mut message = message.trim_end().to_owned();
    message.push('\n');
    let commit = gix::objs::Commit {
        tree,
        parents: parents.into(),
        author: identity(repo.author()),
        committer: identity(repo.committer()),
        encoding: None,
        message: message.into(),
        extra_headers: Vec::new(),
    };
    let id = repo.write_object(&commit).map_err(|e| Error::git("writing a commit", e))?;
    Ok(id.detach())
}

/// Migrates the tree at `head` to the current schema version, as a commit of its own whose
/// parent is `head`. Returns `None` when the tree is current.
fn migrate_if_needed(
    db: &Db,
    repo: &gix::Repository,
    head: ObjectId,
) -> Result<Option<ObjectId>, Error> {
    let mut tree = read_tree(repo, tree_of(repo, head)?)?;
    if cairn_schema::migrate::version_of(&tree)? == cairn_schema::CURRENT_VERSION {
        return Ok(None);
    }
    let from = cairn_schema::migrate::version_of(&tree)?;
    let history = crate::history::changed_paths_after_root(repo, head)?;
    let user_changed = |path: &str| history.contains(path);
    let notes = cairn_schema::migrate(&mut tree, &user_changed, db.host())?;
    let message = format!(
        "schema: migrate v{from} to v{}\n\n{}",
        cairn_schema::CURRENT_VERSION,
        notes.iter().map(|n| format!("- {n}\n")).collect::<String>()
    );
    let (root, written) = write_tree(repo, &tree)?;
    let commit = write_commit(repo, root, vec![head], &message)?;
    crate::durable::sync_objects(repo, written.into_iter().chain([root, commit]))?;
    Ok(Some(commit))
}

/// "set memory=4096 ncpu=4": friendly names and one-line values, long values cut; only the
/// changes that differ from the parent.
fn generated_message(
    repo: &gix::Repository,
    changes: &BTreeMap<String, Option<Vec<u8>>>,
    parent_tree: ObjectId,
) -> Result<String, Error> {
    let mut effective = Vec::new();
    for (path, change) in changes {
        let before = entry_in_tree(repo, parent_tree, path)?;
        let after = change.as_ref().map(|content| blob_id(repo, content));
        if before != after {
            effective.push((path, change));
        }
    }
    let parts: Vec<String> = effective
        .into_iter()
        .map(|(path, change)| {
            let name = by_path(path).map_or(path.as_str(), |k| k.name);
            match change {
                Some(content) => format!("{name}={}", describe(path, content)),
                None => format!("{name}=(removed)"),
            }
        })
        .collect();
    Ok(format!("set {}", parts.join(" ")))
}

/// A value on one line, at most 48 characters, for messages.
fn describe(path: &str, content: &[u8]) -> String {
    let text = match by_path(path) {
        Some(key) => cairn_schema::value::display(key, content),
        None => String::from_utf8_lossy(content).trim().replace('\n', ","),
    };
    if text.chars().count() > 48 {
        format!("{}...", text.chars().take(45).collect::<String>())
    } else if text.is_empty() {
        "\"\"".into()
    } else {
        text
    }
}

/// The id `content` has as a blob, without writing it.
fn blob_id(repo: &gix::Repository, content: &[u8]) -> ObjectId {
    gix::objs::compute_hash(repo.object_hash(), gix::objs::Kind::Blob, content)
        .expect("hashing an in-memory buffer cannot fail")
}
