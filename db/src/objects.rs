//! Object-level access for the 9P server: trees by id, entries by path, blobs, commits.

use gix::ObjectId;

use crate::read::{entry_in_tree, read_blob, tree_of};
use crate::{CommitInfo, Db, Error};

/// What a tree entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    /// A symbolic link; the blob holds its target.
    Link,
}

/// One entry of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub id: ObjectId,
    pub kind: EntryKind,
}

impl Db {
    /// The tree of a commit.
    pub fn commit_tree(&self, commit: ObjectId) -> Result<ObjectId, Error> {
        tree_of(&self.repo(), commit)
    }

    /// A commit's log information.
    pub fn commit_info(&self, commit: ObjectId) -> Result<CommitInfo, Error> {
        crate::history::commit_info(&self.repo(), commit)
    }

    /// The entry at `path` (`/`-separated, relative) under `tree`; the root itself for "".
    pub fn lookup(
        &self,
        tree: ObjectId,
        path: &str,
    ) -> Result<Option<(ObjectId, EntryKind)>, Error> {
        if path.is_empty() {
            return Ok(Some((tree, EntryKind::Dir)));
        }
        let repo = self.repo();
        let tree_obj = repo.find_tree(tree).map_err(|e| Error::git("reading a tree", e))?;
        let entry = tree_obj
            .lookup_entry(path.split('/'))
            .map_err(|e| Error::git("looking up a path", e))?;
        Ok(entry.map(|e| (e.object_id(), kind_of(e.mode()))))
    }

    /// The entries of a tree, in git's order.
    pub fn list_tree(&self, tree: ObjectId) -> Result<Vec<Entry>, Error> {
        let repo = self.repo();
        let tree = repo.find_tree(tree).map_err(|e| Error::git("reading a tree", e))?;
        let mut out = Vec::new();
        for entry in tree.iter() {
            let entry = entry.map_err(|e| Error::git("decoding a tree", e))?;
            if entry.mode().is_commit() {
                continue;
            }
            out.push(Entry {
                name: entry.filename().to_string(),
                id: entry.object_id(),
                kind: kind_of(entry.mode()),
            });
        }
        Ok(out)
    }

    /// A blob's content.
    pub fn blob(&self, id: ObjectId) -> Result<Vec<u8>, Error> {
        read_blob(&self.repo(), id)
    }

    /// The size of a blob, without reading it.
    pub fn blob_size(&self, id: ObjectId) -> Result<u64, Error> {
        let header =
            self.repo().find_header(id).map_err(|e| Error::git("reading an object header", e))?;
        Ok(header.size())
    }

    /// What kind of object `id` is (for `/trees/H`): `Some(Dir)` for a tree, `Some(File)` for a
    /// blob, `None` when absent or another kind.
    pub fn object_kind(&self, id: ObjectId) -> Option<EntryKind> {
        let header = self.repo().try_find_header(id).ok().flatten()?;
        match header.kind() {
            gix::object::Kind::Tree => Some(EntryKind::Dir),
            gix::object::Kind::Blob => Some(EntryKind::File),
            _ => None,
        }
    }

    /// Writes `files` (path to content) as a tree, without a commit; returns its id.
    pub fn write_tree(
        &self,
        files: &std::collections::BTreeMap<String, Vec<u8>>,
    ) -> Result<ObjectId, Error> {
        let repo = self.repo();
        let (root, written) = crate::transaction::write_tree(&repo, files)?;
        crate::durable::sync_objects(&repo, written.into_iter().chain([root]))?;
        Ok(root)
    }

    /// The id of the empty tree.
    pub fn empty_tree(&self) -> ObjectId {
        ObjectId::empty_tree(self.repo().object_hash())
    }

    /// The id at `path` in `commit`'s tree, if any.
    pub fn path_id(&self, commit: ObjectId, path: &str) -> Result<Option<ObjectId>, Error> {
        let repo = self.repo();
        if path.is_empty() {
            return tree_of(&repo, commit).map(Some);
        }
        entry_in_tree(&repo, tree_of(&repo, commit)?, path)
    }
}

fn kind_of(mode: gix::object::tree::EntryMode) -> EntryKind {
    if mode.is_tree() {
        EntryKind::Dir
    } else if mode.is_link() {
        EntryKind::Link
    } else {
        EntryKind::File
    }
}
