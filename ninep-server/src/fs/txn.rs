//! A transaction's working tree: what `rw/` shows, staged in memory until `commit`.
//!
//! `mkdir transactions/T` snapshots the branch head into this structure; writes under `rw/`
//! change it; `commit` turns the difference from the snapshot into one cairn-db transaction,
//! with the same compare-and-swap (and schema validation on master) as the CLI.

use std::collections::{BTreeMap, BTreeSet};

use cairn_db::ObjectId;

use crate::errno::*;

/// What a working-tree path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkKind {
    Dir,
    File,
    Link,
}

/// The merge in progress, if `merge` was written.
#[derive(Debug, Clone)]
pub struct Merge {
    /// The working tree before the merge, written as a git tree.
    pub ours: ObjectId,
    /// The tree of the commit merged in.
    pub theirs: ObjectId,
    /// The tree of the merge base (the empty tree when there is none).
    pub base: ObjectId,
    pub conflicts: BTreeSet<String>,
}

/// One open transaction.
#[derive(Debug, Clone)]
pub struct Txn {
    /// The head the transaction started from.
    pub base: Option<ObjectId>,
    /// The files at `base`, to compute what changed.
    pub base_files: BTreeMap<String, Vec<u8>>,
    pub base_links: BTreeSet<String>,
    pub files: BTreeMap<String, Vec<u8>>,
    pub links: BTreeSet<String>,
    /// Directories made with mkdir (git keeps no empty directories; these live until commit).
    pub dirs: BTreeSet<String>,
    pub msg: Vec<u8>,
    /// Further parents for a merge commit.
    pub parents: Vec<ObjectId>,
    /// The result of the last command written to `ctl` (or `merge`), for humans.
    pub ctl: String,
    pub merge: Option<Merge>,
}

fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

impl Txn {
    pub fn new(
        base: Option<ObjectId>,
        files: BTreeMap<String, Vec<u8>>,
        links: BTreeSet<String>,
    ) -> Txn {
        Txn {
            base,
            base_files: files.clone(),
            base_links: links.clone(),
            files,
            links,
            dirs: BTreeSet::new(),
            msg: Vec::new(),
            parents: Vec::new(),
            ctl: String::new(),
            merge: None,
        }
    }

    pub fn kind(&self, path: &str) -> Option<WorkKind> {
        if path.is_empty() || self.dirs.contains(path) {
            return Some(WorkKind::Dir);
        }
        if self.files.contains_key(path) {
            return Some(if self.links.contains(path) { WorkKind::Link } else { WorkKind::File });
        }
        let prefix = format!("{path}/");
        let under = |p: &String| p.starts_with(&prefix);
        let dir = self.files.range(prefix.clone()..).next().is_some_and(|(p, _)| under(p))
            || self.dirs.range(prefix.clone()..).next().is_some_and(under);
        dir.then_some(WorkKind::Dir)
    }

    /// The names directly under `dir`, sorted.
    pub fn list(&self, dir: &str) -> Vec<(String, WorkKind)> {
        let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
        let mut names = BTreeMap::new();
        let paths = self.files.keys().chain(self.dirs.iter());
        for path in paths.filter(|p| p.starts_with(&prefix)) {
            let rest = &path[prefix.len()..];
            let name = rest.split('/').next().unwrap_or(rest);
            if name.is_empty() {
                continue;
            }
            let child = format!("{prefix}{name}");
            if let Some(kind) = self.kind(&child) {
                names.insert(name.to_owned(), kind);
            }
        }
        names.into_iter().collect()
    }

    fn need_parent_dir(&self, path: &str) -> Result<(), u32> {
        match self.kind(parent_of(path)) {
            Some(WorkKind::Dir) => Ok(()),
            Some(_) => Err(ENOTDIR),
            None => Err(ENOENT),
        }
    }

    pub fn create(&mut self, path: &str) -> Result<(), u32> {
        self.need_parent_dir(path)?;
        if self.kind(path).is_some() {
            return Err(EEXIST);
        }
        self.files.insert(path.to_owned(), Vec::new());
        self.resolve_conflict(path);
        Ok(())
    }

    pub fn symlink(&mut self, path: &str, target: Vec<u8>) -> Result<(), u32> {
        self.create(path)?;
        self.files.insert(path.to_owned(), target);
        self.links.insert(path.to_owned());
        Ok(())
    }

    pub fn mkdir(&mut self, path: &str) -> Result<(), u32> {
        self.need_parent_dir(path)?;
        if self.kind(path).is_some() {
            return Err(EEXIST);
        }
        self.dirs.insert(path.to_owned());
        Ok(())
    }

    pub fn write(&mut self, path: &str, offset: u64, data: &[u8]) -> Result<u32, u32> {
        let file = self.files.get_mut(path).ok_or(ENOENT)?;
        let offset = usize::try_from(offset).map_err(|_| EFBIG)?;
        let end = offset.checked_add(data.len()).ok_or(EFBIG)?;
        if end > MAX_FILE {
            return Err(EFBIG);
        }
        if file.len() < end {
            file.resize(end, 0);
        }
        file[offset..end].copy_from_slice(data);
        self.resolve_conflict(path);
        Ok(data.len() as u32)
    }

    pub fn truncate(&mut self, path: &str, size: u64) -> Result<(), u32> {
        let file = self.files.get_mut(path).ok_or(ENOENT)?;
        let size = usize::try_from(size).ok().filter(|s| *s <= MAX_FILE).ok_or(EFBIG)?;
        file.resize(size, 0);
        self.resolve_conflict(path);
        Ok(())
    }

    /// Removes a file, or a directory that must be empty unless `recursive`.
    pub fn remove(&mut self, path: &str, dir_expected: Option<bool>) -> Result<(), u32> {
        match (self.kind(path), dir_expected) {
            (None, _) => Err(ENOENT),
            (Some(WorkKind::Dir), _) if path.is_empty() => Err(EBUSY),
            (Some(WorkKind::Dir), Some(false)) => Err(EISDIR),
            (Some(WorkKind::Dir), _) => {
                if !self.list(path).is_empty() {
                    return Err(ENOTEMPTY);
                }
                self.dirs.remove(path);
                Ok(())
            }
            (Some(_), Some(true)) => Err(ENOTDIR),
            (Some(_), _) => {
                self.files.remove(path);
                self.links.remove(path);
                self.resolve_conflict(path);
                Ok(())
            }
        }
    }

    /// Moves a file or a directory (with everything under it).
    pub fn rename(&mut self, from: &str, to: &str) -> Result<(), u32> {
        let kind = self.kind(from).ok_or(ENOENT)?;
        if from.is_empty() || to.starts_with(&format!("{from}/")) {
            return Err(EINVAL);
        }
        self.need_parent_dir(to)?;
        match (kind, self.kind(to)) {
            (_, None) => {}
            (WorkKind::Dir, Some(WorkKind::Dir)) if self.list(to).is_empty() => {
                self.dirs.remove(to);
            }
            (WorkKind::Dir, Some(WorkKind::Dir)) => return Err(ENOTEMPTY),
            (WorkKind::Dir, Some(_)) => return Err(ENOTDIR),
            (_, Some(WorkKind::Dir)) => return Err(EISDIR),
            (_, Some(_)) => {
                self.files.remove(to);
                self.links.remove(to);
            }
        }
        let moved = |p: &str| -> Option<String> {
            if p == from {
                Some(to.to_owned())
            } else {
                p.strip_prefix(&format!("{from}/")).map(|rest| format!("{to}/{rest}"))
            }
        };
        let files: Vec<String> =
            self.files.keys().filter(|p| moved(p).is_some()).cloned().collect();
        for old in files {
            let new = moved(&old).expect("filtered above");
            let content = self.files.remove(&old).expect("listed above");
            if self.links.remove(&old) {
                self.links.insert(new.clone());
            }
            self.files.insert(new.clone(), content);
            self.resolve_conflict(&old);
            self.resolve_conflict(&new);
        }
        let dirs: Vec<String> = self.dirs.iter().filter(|p| moved(p).is_some()).cloned().collect();
        for old in dirs {
            self.dirs.remove(&old);
            self.dirs.insert(moved(&old).expect("filtered above"));
        }
        Ok(())
    }

    /// Writing a conflicted path resolves its conflict.
    fn resolve_conflict(&mut self, path: &str) {
        if let Some(merge) = &mut self.merge {
            merge.conflicts.remove(path);
        }
    }

    /// Three-way merge of `theirs` into the working tree: a path only one side changed takes
    /// that side; a path both changed differently is a conflict and keeps ours.
    pub fn merge(
        &mut self,
        base: &BTreeMap<String, Vec<u8>>,
        theirs: &BTreeMap<String, Vec<u8>>,
    ) -> BTreeSet<String> {
        let mut conflicts = BTreeSet::new();
        let paths: BTreeSet<String> =
            base.keys().chain(theirs.keys()).chain(self.files.keys()).cloned().collect();
        for path in paths {
            let (b, t, o) = (base.get(&path), theirs.get(&path), self.files.get(&path).cloned());
            if t == b || t == o.as_ref() {
                continue;
            }
            if o.as_ref() == b {
                match t {
                    Some(content) => self.files.insert(path.clone(), content.clone()),
                    None => self.files.remove(&path),
                };
            } else {
                conflicts.insert(path);
            }
        }
        conflicts
    }
}

/// Largest file a transaction accepts: configuration values are small, and the whole working
/// tree lives in memory.
pub const MAX_FILE: usize = 64 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    fn txn() -> Txn {
        let files =
            [("memory", "2048\n"), ("etc/hostname", "cairn\n"), ("etc/docker/daemon.json", "{}\n")]
                .into_iter()
                .map(|(p, c)| (p.to_owned(), c.as_bytes().to_vec()))
                .collect();
        Txn::new(None, files, BTreeSet::new())
    }

    #[test]
    fn paths_and_listing() {
        let t = txn();
        assert_eq!(t.kind("etc"), Some(WorkKind::Dir));
        assert_eq!(t.kind("etc/docker"), Some(WorkKind::Dir));
        assert_eq!(t.kind("et"), None);
        assert_eq!(t.kind("memory"), Some(WorkKind::File));
        let root: Vec<String> = t.list("").into_iter().map(|(n, _)| n).collect();
        assert_eq!(root, ["etc", "memory"]);
    }

    #[test]
    fn create_write_truncate_remove_rename() {
        let mut t = txn();
        assert_eq!(t.create("nodir/x"), Err(ENOENT));
        assert_eq!(t.create("memory/x"), Err(ENOTDIR));
        t.mkdir("net").expect("mkdir");
        assert_eq!(t.kind("net"), Some(WorkKind::Dir));
        t.create("net/mtu").expect("create");
        t.write("net/mtu", 0, b"1500\n").expect("write");
        t.write("net/mtu", 5, b"x").expect("append");
        assert_eq!(t.files["net/mtu"], b"1500\nx");
        t.truncate("net/mtu", 4).expect("truncate");
        assert_eq!(t.files["net/mtu"], b"1500");
        assert_eq!(t.remove("net", None), Err(ENOTEMPTY));
        t.rename("etc", "conf").expect("rename dir");
        assert_eq!(t.kind("conf/docker/daemon.json"), Some(WorkKind::File));
        assert_eq!(t.kind("etc"), None);
        assert_eq!(t.rename("conf", "conf/inside"), Err(EINVAL));
        t.remove("net/mtu", Some(false)).expect("unlink");
        t.remove("net", Some(true)).expect("rmdir");
        assert_eq!(t.kind("net"), None);
    }

    #[test]
    fn three_way_merge() {
        let mut t = txn();
        let base = t.files.clone();
        let mut theirs = base.clone();
        theirs.insert("memory".into(), b"4096\n".to_vec());
        theirs.insert("etc/hostname".into(), b"theirs\n".to_vec());
        t.files.insert("etc/hostname".into(), b"ours\n".to_vec());
        let conflicts = t.merge(&base, &theirs);
        assert_eq!(t.files["memory"], b"4096\n");
        assert_eq!(t.files["etc/hostname"], b"ours\n");
        assert_eq!(conflicts.into_iter().collect::<Vec<_>>(), ["etc/hostname"]);
    }
}
