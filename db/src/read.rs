//! Reading the database at any branch or commit.

use std::collections::BTreeMap;

use cairn_schema::Tree;
use gix::ObjectId;

use crate::{Db, Error, Snapshot};

impl Db {
    /// The commit `branch` points at, or `None` when the branch does not exist.
    pub fn head(&self, branch: &str) -> Result<Option<ObjectId>, Error> {
        crate::refs::read(&self.repo(), branch)
    }

    /// [`Db::head`] for readers that ask again and again (the 9P server): one stat when the
    /// ref's file is unchanged since the last read. Writers take the head under the ref's
    /// lock instead.
    pub fn head_cached(&self, branch: &str) -> Result<Option<ObjectId>, Error> {
        let name = crate::refs::full_name(branch);
        self.heads.get(&self.git_dir, &name, || crate::refs::read(&self.repo(), branch))
    }

    /// Resolves a branch name, a full or abbreviated commit id, or any git revision
    /// (`master~2`) to a commit id.
    pub fn resolve(&self, rev: &str) -> Result<ObjectId, Error> {
        let repo = self.repo();
        resolve(&repo, rev)
    }

    /// The whole tree at `rev`.
    pub fn snapshot(&self, rev: &str) -> Result<Snapshot, Error> {
        let repo = self.repo();
        let commit = resolve(&repo, rev)?;
        snapshot_of(&repo, commit)
    }

    /// The whole tree at `rev`, reading no value larger than [`MAX_VALUE`]: those are left
    /// empty in the tree and listed, with their sizes, in `too_large`. For commands that show
    /// values (a 200 MB hand-made value must not take 200 MB to list).
    pub fn snapshot_bounded(&self, rev: &str) -> Result<BoundedSnapshot, Error> {
        let repo = self.repo();
        let commit = resolve(&repo, rev)?;
        let object = repo.find_commit(commit).map_err(|e| Error::git("reading a commit", e))?;
        let time = object.time().map_err(|e| Error::git("reading a commit time", e))?.seconds;
        let (tree, too_large) = read_tree_bounded(&repo, tree_of(&repo, commit)?, MAX_VALUE)?;
        Ok(BoundedSnapshot { snapshot: Snapshot { commit, tree, time }, too_large })
    }

    /// The content of `path` at `rev` if it is at most [`MAX_VALUE`] bytes; a larger one is
    /// [`Error::TooLarge`], and is not read.
    pub fn read_bounded(&self, rev: &str, path: &str) -> Result<Option<Vec<u8>>, Error> {
        let repo = self.repo();
        let commit = resolve(&repo, rev)?;
        let Some(id) = entry_id(&repo, commit, path)? else { return Ok(None) };
        let size = blob_size(&repo, id)?;
        if size > MAX_VALUE {
            return Err(Error::TooLarge { path: path.to_owned(), size, limit: MAX_VALUE });
        }
        read_blob(&repo, id).map(Some)
    }

    /// The content of `path` at `rev`, or `None` when the path is absent there.
    pub fn read(&self, rev: &str, path: &str) -> Result<Option<Vec<u8>>, Error> {
        let repo = self.repo();
        let commit = resolve(&repo, rev)?;
        match entry_id(&repo, commit, path)? {
            Some(id) => read_blob(&repo, id).map(Some),
            None => Ok(None),
        }
    }
}

pub(crate) fn resolve(repo: &gix::Repository, rev: &str) -> Result<ObjectId, Error> {
    let unknown = || Error::UnknownRevision { rev: rev.to_owned() };
    if let Some(id) = crate::refs::read(repo, rev)? {
        return Ok(id);
    }
    let id = repo.rev_parse_single(rev).map_err(|_| unknown())?;
    let object = id.object().map_err(|_| unknown())?;
    let commit = object.peel_to_commit().map_err(|_| unknown())?;
    Ok(commit.id)
}

pub(crate) fn snapshot_of(repo: &gix::Repository, commit: ObjectId) -> Result<Snapshot, Error> {
    let object = repo.find_commit(commit).map_err(|e| Error::git("reading a commit", e))?;
    let time = object.time().map_err(|e| Error::git("reading a commit time", e))?.seconds;
    let tree_id = object.tree_id().map_err(|e| Error::git("reading a commit's tree", e))?;
    let tree = read_tree(repo, tree_id.detach())?;
    Ok(Snapshot { commit, tree, time })
}

/// The largest value read for showing or checking: twice the schema's largest document, so
/// that every value the schema could accept is read, and anything far beyond is not.
pub const MAX_VALUE: u64 = 2 << 20;

/// A snapshot whose oversized values were not read.
#[derive(Debug, Clone)]
pub struct BoundedSnapshot {
    pub snapshot: Snapshot,
    /// Paths whose values are larger than [`MAX_VALUE`] (empty in the tree), with their sizes.
    pub too_large: BTreeMap<String, u64>,
}

fn blob_size(repo: &gix::Repository, id: ObjectId) -> Result<u64, Error> {
    Ok(repo.find_header(id).map_err(|e| Error::git("reading an object's header", e))?.size())
}

/// [`read_tree`], leaving values larger than `limit` empty and listing them with their sizes.
pub(crate) fn read_tree_bounded(
    repo: &gix::Repository,
    id: ObjectId,
    limit: u64,
) -> Result<(Tree, BTreeMap<String, u64>), Error> {
    let mut tree = Tree::new();
    let mut too_large = BTreeMap::new();
    for (path, blob) in tree_entries(repo, id)? {
        let size = blob_size(repo, blob)?;
        if size > limit {
            too_large.insert(path.clone(), size);
            tree.insert(path, Vec::new());
        } else {
            tree.insert(path, read_blob(repo, blob)?);
        }
    }
    Ok((tree, too_large))
}

/// Every file under the tree `id`, recursively, with its content.
pub(crate) fn read_tree(repo: &gix::Repository, id: ObjectId) -> Result<Tree, Error> {
    tree_entries(repo, id)?
        .into_iter()
        .map(|(path, blob)| Ok((path, read_blob(repo, blob)?)))
        .collect()
}

/// Every file (blob or symlink) under the tree `root`, recursively, with its object id.
pub(crate) fn tree_entries(
    repo: &gix::Repository,
    root: ObjectId,
) -> Result<BTreeMap<String, ObjectId>, Error> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(String::new(), root)];
    while let Some((prefix, id)) = stack.pop() {
        let tree = repo.find_tree(id).map_err(|e| Error::git("reading a tree", e))?;
        for entry in tree.iter() {
            let entry = entry.map_err(|e| Error::git("decoding a tree", e))?;
            let path = format!("{prefix}{}", entry.filename());
            if entry.mode().is_tree() {
                stack.push((format!("{path}/"), entry.object_id()));
            } else if entry.mode().is_blob() || entry.mode().is_link() {
                out.insert(path, entry.object_id());
            }
        }
    }
    Ok(out)
}

pub(crate) fn read_blob(repo: &gix::Repository, id: ObjectId) -> Result<Vec<u8>, Error> {
    let mut blob = repo.find_blob(id).map_err(|e| Error::git("reading a blob", e))?;
    Ok(blob.take_data())
}

/// The tree id of `commit`.
pub(crate) fn tree_of(repo: &gix::Repository, commit: ObjectId) -> Result<ObjectId, Error> {
    let object = repo.find_commit(commit).map_err(|e| Error::git("reading a commit", e))?;
    let tree = object.tree_id().map_err(|e| Error::git("reading a commit's tree", e))?;
    Ok(tree.detach())
}

/// The object id at `path` in `commit`'s tree, without reading anything else.
pub(crate) fn entry_id(
    repo: &gix::Repository,
    commit: ObjectId,
    path: &str,
) -> Result<Option<ObjectId>, Error> {
    let tree = tree_of(repo, commit)?;
    entry_in_tree(repo, tree, path)
}

pub(crate) fn entry_in_tree(
    repo: &gix::Repository,
    tree: ObjectId,
    path: &str,
) -> Result<Option<ObjectId>, Error> {
    let tree = repo.find_tree(tree).map_err(|e| Error::git("reading a tree", e))?;
    let entry =
        tree.lookup_entry(path.split('/')).map_err(|e| Error::git("looking up a path", e))?;
    Ok(entry.map(|e| e.object_id()))
}
