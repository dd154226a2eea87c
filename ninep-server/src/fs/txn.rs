//! A transaction's working tree: what `rw/` shows, staged in memory until `commit`.
//!
//! `mkdir transactions/T` snapshots the branch head into this structure; writes under `rw/`
//! change it; `commit` turns the difference from the snapshot into one cairn-db transaction,
//! with the same compare-and-swap (and schema validation on master) as the CLI.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use cairn_db::ObjectId;

use crate::errno::*;

/// A file's content. Shared with the transaction's base (and with other transactions of the
/// same head) until written: a transaction costs memory for what it changes, not for the
/// tree it started from.
pub type Content = Arc<Vec<u8>>;

/// Largest file a transaction accepts: configuration values are small (the schema's largest
/// is 1 MiB), and the whole working tree lives in memory.
pub const MAX_FILE: usize = 8 << 20;
/// What one transaction may hold beyond the tree it started from.
pub const MAX_OWN_BYTES: usize = 16 << 20;
/// Files and directories in one working tree.
pub const MAX_PATHS: usize = 16_384;

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
    pub base_files: BTreeMap<String, Content>,
    pub base_links: BTreeSet<String>,
    pub files: BTreeMap<String, Content>,
    pub links: BTreeSet<String>,
    /// Directories made with mkdir (git keeps no empty directories; these live until commit).
    pub dirs: BTreeSet<String>,
    pub msg: Vec<u8>,
    /// Further parents for a merge commit.
    pub parents: Vec<ObjectId>,
    /// The result of the last command written to `ctl` (or `merge`), for humans.
    pub ctl: String,
    pub merge: Option<Merge>,
    /// The connection that made it; it goes when that connection does.
    pub owner: u64,
    /// Bytes of file content not shared with the base.
    own_bytes: usize,
    /// How many own bytes it may hold now: what the other transactions leave of the total.
    pub room: usize,
}

fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

impl Txn {
    pub fn new(
        base: Option<ObjectId>,
        files: BTreeMap<String, Content>,
        links: BTreeSet<String>,
        owner: u64,
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
            owner,
            own_bytes: 0,
            room: usize::MAX,
        }
    }

    /// Bytes this transaction holds beyond its base.
    pub fn own_bytes(&self) -> usize {
        self.own_bytes
    }

    /// What `path`'s content costs this transaction: nothing while it is the base's.
    fn cost(&self, path: &str) -> usize {
        match (self.files.get(path), self.base_files.get(path)) {
            (Some(ours), Some(base)) if Arc::ptr_eq(ours, base) => 0,
            (Some(ours), _) => ours.len(),
            (None, _) => 0,
        }
    }

    /// Runs a change of `path`'s content, keeping the count of own bytes; refused when the
    /// file would be `new_len` long: EFBIG past this transaction's bounds, ENOSPC past what
    /// all transactions together may hold.
    fn change(
        &mut self,
        path: &str,
        new_len: usize,
        f: impl FnOnce(&mut Txn) -> Result<(), Errno>,
    ) -> Result<(), Errno> {
        let before = self.cost(path);
        let after = self.own_bytes - before + new_len;
        if new_len > MAX_FILE || after > MAX_OWN_BYTES {
            return Err(EFBIG);
        }
        if new_len > before && after > self.room {
            return Err(ENOSPC);
        }
        f(self)?;
        self.own_bytes = self.own_bytes - before + self.cost(path);
        Ok(())
    }

    /// Refuses a name git cannot store (a NUL) or that would smuggle a repository in (`.git`),
    /// and a tree past [`MAX_PATHS`].
    fn check_new(&self, path: &str) -> Result<(), Errno> {
        if path.contains('\0') || path.split('/').any(|c| c.eq_ignore_ascii_case(".git")) {
            return Err(EINVAL);
        }
        if self.files.len() + self.dirs.len() >= MAX_PATHS {
            return Err(ENOSPC);
        }
        Ok(())
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

    fn need_parent_dir(&self, path: &str) -> Result<(), Errno> {
        match self.kind(parent_of(path)) {
            Some(WorkKind::Dir) => Ok(()),
            Some(_) => Err(ENOTDIR),
            None => Err(ENOENT),
        }
    }

    /// Creates an empty file. Over an existing file it truncates it and makes it a regular
    /// file, as DataKit's server does (its clients write a key by creating it), unless
    /// `exclusive` (O_EXCL) asks for EEXIST.
    pub fn create(&mut self, path: &str, exclusive: bool) -> Result<(), Errno> {
        self.need_parent_dir(path)?;
        match self.kind(path) {
            None => self.check_new(path)?,
            Some(WorkKind::Dir) => return Err(if exclusive { EEXIST } else { EISDIR }),
            Some(_) if exclusive => return Err(EEXIST),
            Some(_) => {}
        }
        self.change(path, 0, |t| {
            t.files.insert(path.to_owned(), Content::default());
            t.links.remove(path);
            Ok(())
        })?;
        self.resolve_conflict(path);
        Ok(())
    }

    pub fn symlink(&mut self, path: &str, target: Vec<u8>) -> Result<(), Errno> {
        self.create(path, true)?;
        self.change(path, target.len(), |t| {
            t.files.insert(path.to_owned(), Arc::new(target));
            t.links.insert(path.to_owned());
            Ok(())
        })
    }

    pub fn mkdir(&mut self, path: &str) -> Result<(), Errno> {
        self.need_parent_dir(path)?;
        if self.kind(path).is_some() {
            return Err(EEXIST);
        }
        self.check_new(path)?;
        self.dirs.insert(path.to_owned());
        Ok(())
    }

    pub fn write(&mut self, path: &str, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let len = self.files.get(path).ok_or(ENOENT)?.len();
        let offset = usize::try_from(offset).map_err(|_| EFBIG)?;
        let end = offset.checked_add(data.len()).ok_or(EFBIG)?;
        self.change(path, len.max(end), |t| {
            let file = Arc::make_mut(t.files.get_mut(path).ok_or(ENOENT)?);
            if file.len() < end {
                file.resize(end, 0);
            }
            file[offset..end].copy_from_slice(data);
            Ok(())
        })?;
        self.resolve_conflict(path);
        Ok(data.len() as u32)
    }

    pub fn truncate(&mut self, path: &str, size: u64) -> Result<(), Errno> {
        self.files.get(path).ok_or(ENOENT)?;
        let size = usize::try_from(size).map_err(|_| EFBIG)?;
        self.change(path, size, |t| {
            let file = Arc::make_mut(t.files.get_mut(path).ok_or(ENOENT)?);
            file.resize(size, 0);
            Ok(())
        })?;
        self.resolve_conflict(path);
        Ok(())
    }

    /// Removes a file, or a directory that must be empty unless `recursive`.
    pub fn remove(&mut self, path: &str, dir_expected: Option<bool>) -> Result<(), Errno> {
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
                self.own_bytes -= self.cost(path);
                self.files.remove(path);
                self.links.remove(path);
                self.resolve_conflict(path);
                Ok(())
            }
        }
    }

    /// Moves a file or a directory (with everything under it).
    pub fn rename(&mut self, from: &str, to: &str) -> Result<(), Errno> {
        let kind = self.kind(from).ok_or(ENOENT)?;
        if from.is_empty() || to.starts_with(&format!("{from}/")) {
            return Err(EINVAL);
        }
        self.need_parent_dir(to)?;
        if self.kind(to).is_none() {
            self.check_new(to)?;
        }
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
        self.recount();
        Ok(())
    }

    /// Counts the own bytes afresh (after a change of many paths at once).
    fn recount(&mut self) {
        self.own_bytes = self.files.keys().map(|p| self.cost(p)).sum();
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
        base: &BTreeMap<String, Content>,
        theirs: &BTreeMap<String, Content>,
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
        self.recount();
        conflicts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn() -> Txn {
        let files =
            [("memory", "2048\n"), ("etc/hostname", "cairn\n"), ("etc/docker/daemon.json", "{}\n")]
                .into_iter()
                .map(|(p, c)| (p.to_owned(), Arc::new(c.as_bytes().to_vec())))
                .collect();
        Txn::new(None, files, BTreeSet::new(), 0)
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
        assert_eq!(t.create("nodir/x", false), Err(ENOENT));
        assert_eq!(t.create("memory/x", false), Err(ENOTDIR));
        t.mkdir("net").expect("mkdir");
        assert_eq!(t.kind("net"), Some(WorkKind::Dir));
        t.create("net/mtu", false).expect("create");
        t.write("net/mtu", 0, b"1500\n").expect("write");
        t.write("net/mtu", 5, b"x").expect("append");
        assert_eq!(**t.files["net/mtu"], *b"1500\nx");
        t.truncate("net/mtu", 4).expect("truncate");
        assert_eq!(**t.files["net/mtu"], *b"1500");
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
        theirs.insert("memory".into(), Arc::new(b"4096\n".to_vec()));
        theirs.insert("etc/hostname".into(), Arc::new(b"theirs\n".to_vec()));
        t.files.insert("etc/hostname".into(), Arc::new(b"ours\n".to_vec()));
        let conflicts = t.merge(&base, &theirs);
        assert_eq!(**t.files["memory"], *b"4096\n");
        assert_eq!(**t.files["etc/hostname"], *b"ours\n");
        assert_eq!(conflicts.into_iter().collect::<Vec<_>>(), ["etc/hostname"]);
    }

    #[test]
    fn create_over_a_file_truncates_it_unless_exclusive() {
        let mut t = txn();
        t.create("memory", false).expect("DataKit's create over a file");
        assert!(t.files["memory"].is_empty());
        t.write("memory", 0, b"4096\n").expect("write");
        assert_eq!(t.create("memory", true), Err(EEXIST));
        assert_eq!(t.create("etc", false), Err(EISDIR));
    }

    #[test]
    fn names_git_cannot_store_are_refused() {
        let mut t = txn();
        assert_eq!(t.create("a\0b", false), Err(EINVAL));
        assert_eq!(t.mkdir(".git"), Err(EINVAL));
        assert_eq!(t.create("etc/.GIT", false), Err(EINVAL));
        assert_eq!(t.rename("memory", ".git"), Err(EINVAL));
    }

    #[test]
    fn a_transaction_pays_only_for_what_it_changes_and_is_bounded() {
        let mut t = txn();
        assert_eq!(t.own_bytes(), 0, "the base is shared");
        t.write("memory", 0, b"4096\n").expect("write");
        assert_eq!(t.own_bytes(), 5);
        t.create("big", false).expect("create");
        let chunk = vec![1u8; 1 << 20];
        let mut offset = 0u64;
        let refused = loop {
            match t.write("big", offset, &chunk) {
                Ok(_) => offset += chunk.len() as u64,
                Err(errno) => break errno,
            }
        };
        assert_eq!(refused, EFBIG);
        assert!(t.own_bytes() <= MAX_OWN_BYTES && offset as usize <= MAX_FILE);
        t.remove("big", None).expect("remove");
        assert_eq!(t.own_bytes(), 5);
    }
}
