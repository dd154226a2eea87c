//! What each node reads as, what writing to it does, and its attributes.

use cairn_db::objects::EntryKind;
use cairn_db::ObjectId;

use super::node::{Dir, File, GitRoot, Node};
use super::txn::{Txn, WorkKind};
use super::{errno_of, lock, path_id, Attr, Child, Fs};
use crate::errno::*;
use crate::Qid;

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

fn version_of(id: &ObjectId) -> u32 {
    let b = id.as_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn content_version(bytes: &[u8]) -> u32 {
    path_id(&[String::from_utf8_lossy(bytes).into_owned()]) as u32
}

fn hex_line(id: Option<ObjectId>) -> Vec<u8> {
    id.map_or_else(Vec::new, |id| format!("{id}\n").into_bytes())
}

impl Fs {
    /// The qid of `node` found at `comps`.
    pub fn qid(&self, comps: &[String], node: &Node) -> Qid {
        let kind = if node.is_dir() {
            Qid::DIR
        } else if node.is_symlink() {
            Qid::SYMLINK
        } else {
            Qid::FILE
        };
        let version = match node {
            Node::Git { id, .. } => version_of(id),
            Node::File(File::Head(b)) => self.head(b).ok().flatten().as_ref().map_or(0, version_of),
            Node::Work { branch, txn, path, .. } => {
                let txns = lock(&self.txns);
                txns.get(&(branch.clone(), txn.clone()))
                    .and_then(|t| t.files.get(path))
                    .map_or(0, |c| content_version(c))
            }
            _ => 0,
        };
        Qid { kind, version, path: path_id(comps) }
    }

    pub fn attr(&self, comps: &[String], node: &Node) -> Result<Attr, Errno> {
        let qid = self.qid(comps, node);
        let mtime = self.mtime(node);
        let (mode, size) = match node {
            Node::Dir(Dir::Branches | Dir::Transactions(_) | Dir::Txn(..)) => (S_IFDIR | 0o755, 0),
            Node::Dir(_) | Node::EmptyRo(_) => (S_IFDIR | 0o555, 0),
            Node::Git { kind: EntryKind::Dir, .. } => (S_IFDIR | 0o555, 0),
            Node::Git { kind, id, .. } => {
                let size = self.db.blob_size(*id).map_err(|e| errno_of(&e))?;
                (if *kind == EntryKind::Link { S_IFLNK | 0o777 } else { S_IFREG | 0o444 }, size)
            }
            Node::Work { kind: WorkKind::Dir, .. } => (S_IFDIR | 0o755, 0),
            Node::Work { kind, branch, txn, path } => {
                let txns = lock(&self.txns);
                let size = txns
                    .get(&(branch.clone(), txn.clone()))
                    .and_then(|t| t.files.get(path))
                    .map_or(0, |c| c.len() as u64);
                (if *kind == WorkKind::Link { S_IFLNK | 0o777 } else { S_IFREG | 0o644 }, size)
            }
            Node::File(f) if node.is_stream() => {
                let _ = f;
                (S_IFREG | 0o444, 0)
            }
            Node::File(f) => {
                let writable = matches!(
                    f,
                    File::FastForward(_)
                        | File::TxnMsg(..)
                        | File::TxnParents(..)
                        | File::TxnCtl(..)
                        | File::TxnMerge(..)
                );
                let size = self.read_file(node)?.len() as u64;
                (S_IFREG | if writable { 0o644 } else { 0o444 }, size)
            }
        };
        Ok(Attr { qid, mode, size, mtime })
    }

    fn mtime(&self, node: &Node) -> i64 {
        let commit = match node {
            Node::Git { root: GitRoot::Branch(b), .. } | Node::File(File::Head(b)) => {
                self.head(b).ok().flatten()
            }
            Node::Git { root: GitRoot::Commit(c), .. }
            | Node::Dir(Dir::Snapshot(c))
            | Node::File(File::SnapHash(c) | File::SnapMsg(c) | File::SnapParents(c)) => Some(*c),
            _ => None,
        };
        commit.and_then(|c| self.db.commit_info(c).ok()).map_or(self.started, |info| info.time)
    }

    /// The children of a directory node, sorted by name.
    pub fn list(&self, comps: &[String], node: &Node) -> Result<Vec<Child>, Errno> {
        if let Node::Git { kind: EntryKind::Dir, id, .. } = node {
            return self.git_children(comps, *id);
        }
        let names: Vec<String> = match node {
            Node::Dir(Dir::Root) => vec!["branch".into(), "snapshots".into(), "trees".into()],
            Node::Dir(Dir::Branches) => {
                let mut names = self.db.branches().map_err(|e| errno_of(&e))?;
                names.extend(lock(&self.pending).iter().cloned());
                names.sort();
                names.dedup();
                names
            }
            Node::Dir(Dir::Branch(_)) => {
                ["fast-forward", "head", "head.live", "ro", "transactions", "watch"]
                    .map(String::from)
                    .to_vec()
            }
            Node::Dir(Dir::Watch(b, path)) => {
                let mut names = vec!["tree.live".to_owned()];
                if let Some(head) = self.head(b)? {
                    let tree = self.db.commit_tree(head).map_err(|e| errno_of(&e))?;
                    if let Some((id, EntryKind::Dir)) =
                        self.db.lookup(tree, path).map_err(|e| errno_of(&e))?
                    {
                        let entries = self.db.list_tree(id).map_err(|e| errno_of(&e))?;
                        names.extend(entries.into_iter().map(|e| format!("{}.node", e.name)));
                    }
                }
                names
            }
            Node::Dir(Dir::Transactions(b)) => lock(&self.txns)
                .keys()
                .filter(|(branch, _)| branch == b)
                .map(|(_, t)| t.clone())
                .collect(),
            Node::Dir(Dir::Txn(b, t)) => {
                let merging = lock(&self.txns)
                    .get(&(b.clone(), t.clone()))
                    .is_some_and(|t| t.merge.is_some());
                let mut names: Vec<String> =
                    ["ctl", "diff", "merge", "msg", "parents", "rw"].map(String::from).to_vec();
                if merging {
                    names.extend(["base", "conflicts", "ours", "theirs"].map(String::from));
                }
                names
            }
            Node::Dir(Dir::Diff(..) | Dir::Snapshots | Dir::Trees) | Node::EmptyRo(_) => Vec::new(),
            Node::Dir(Dir::Snapshot(_)) => {
                ["hash", "msg", "parents", "ro"].map(String::from).to_vec()
            }
            Node::Work { branch, txn, path, kind: WorkKind::Dir } => {
                let txns = lock(&self.txns);
                let t = txns.get(&(branch.clone(), txn.clone())).ok_or(ENOENT)?;
                t.list(path).into_iter().map(|(name, _)| name).collect()
            }
            _ => return Err(ENOTDIR),
        };
        let mut names = names;
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let mut child = comps.to_vec();
            child.push(name.clone());
            // A child can vanish between listing and classifying (a concurrent commit): skip it.
            if let Ok(node) = self.classify(&child) {
                out.push(Child { qid: self.qid(&child, &node), name });
            }
        }
        Ok(out)
    }

    /// A git tree's children, with qids made from its entries: the same qids `qid` gives each
    /// child, without resolving every child again from the root.
    fn git_children(&self, comps: &[String], tree: ObjectId) -> Result<Vec<Child>, Errno> {
        let mut entries = self.db.list_tree(tree).map_err(|e| errno_of(&e))?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let mut child = comps.to_vec();
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let kind = match entry.kind {
                EntryKind::Dir => Qid::DIR,
                EntryKind::Link => Qid::SYMLINK,
                EntryKind::File => Qid::FILE,
            };
            child.push(entry.name);
            let qid = Qid { kind, version: version_of(&entry.id), path: path_id(&child) };
            out.push(Child { name: child.pop().unwrap_or_default(), qid });
        }
        Ok(out)
    }

    /// The whole content of a readable, non-stream file.
    pub fn read_file(&self, node: &Node) -> Result<Vec<u8>, Errno> {
        let txn_field =
            |b: &String, t: &String, f: &dyn Fn(&Txn) -> Vec<u8>| -> Result<Vec<u8>, Errno> {
                let txns = lock(&self.txns);
                txns.get(&(b.clone(), t.clone())).map(f).ok_or(ENOENT)
            };
        match node {
            Node::Git { kind: EntryKind::Dir, .. } | Node::Dir(_) | Node::EmptyRo(_) => Err(EISDIR),
            Node::Git { id, .. } => self.db.blob(*id).map_err(|e| errno_of(&e)),
            Node::Work { branch, txn, path, .. } => txn_field(branch, txn, &|t| {
                t.files.get(path).map(|c| c.to_vec()).unwrap_or_default()
            }),
            Node::File(file) => match file {
                File::Head(b) => Ok(hex_line(self.head(b)?)),
                File::HeadLive(b) => Ok(hex_line(self.head(b)?)),
                File::TreeLive(b, path) => self.tree_live_value(b, path),
                File::FastForward(b) => {
                    Ok(lock(&self.ff_results).get(b).cloned().unwrap_or_default().into_bytes())
                }
                File::TxnMsg(b, t) => txn_field(b, t, &|t| t.msg.clone()),
                File::TxnParents(b, t) => txn_field(b, t, &|t| {
                    t.base
                        .iter()
                        .chain(&t.parents)
                        .map(|p| format!("{p}\n"))
                        .collect::<String>()
                        .into_bytes()
                }),
                File::TxnCtl(b, t) => txn_field(b, t, &|t| t.ctl.clone().into_bytes()),
                File::TxnMerge(..) => Ok(Vec::new()),
                File::TxnConflicts(b, t) => txn_field(b, t, &|t| {
                    t.merge.as_ref().map_or_else(Vec::new, |m| {
                        m.conflicts
                            .iter()
                            .map(|c| format!("{c}\n"))
                            .collect::<String>()
                            .into_bytes()
                    })
                }),
                File::TxnDiff(b, t, c) => self.txn_diff(b, t, *c),
                File::SnapHash(c) => Ok(hex_line(Some(*c))),
                File::SnapMsg(c) => {
                    let info = self.db.commit_info(*c).map_err(|e| errno_of(&e))?;
                    Ok(format!("{}\n", info.message).into_bytes())
                }
                File::SnapParents(c) => {
                    let info = self.db.commit_info(*c).map_err(|e| errno_of(&e))?;
                    Ok(info
                        .parents
                        .iter()
                        .map(|p| format!("{p}\n"))
                        .collect::<String>()
                        .into_bytes())
                }
            },
        }
    }

    /// The current value of a tree.live stream: the hash at the path and a newline, or a bare
    /// newline while the path does not exist.
    pub fn tree_live_value(&self, branch: &str, path: &str) -> Result<Vec<u8>, Errno> {
        let Some(head) = self.head(branch)? else { return Ok(b"\n".to_vec()) };
        let id = self.db.path_id(head, path).map_err(|e| errno_of(&e))?;
        Ok(id.map_or_else(|| b"\n".to_vec(), |id| format!("{id}\n").into_bytes()))
    }

    /// `diff/C`: what the working tree changes relative to commit C, one path a line.
    fn txn_diff(&self, b: &str, t: &str, c: ObjectId) -> Result<Vec<u8>, Errno> {
        let snapshot = self.db.snapshot(&c.to_string()).map_err(|e| errno_of(&e))?;
        let txns = lock(&self.txns);
        let txn = txns.get(&(b.to_owned(), t.to_owned())).ok_or(ENOENT)?;
        let mut out = String::new();
        let paths: std::collections::BTreeSet<&String> =
            snapshot.tree.keys().chain(txn.files.keys()).collect();
        for path in paths {
            match (snapshot.tree.get(path), txn.files.get(path)) {
                (None, Some(_)) => out.push_str(&format!("added {path}\n")),
                (Some(_), None) => out.push_str(&format!("removed {path}\n")),
                (Some(a), Some(b)) if a != &***b => out.push_str(&format!("updated {path}\n")),
                _ => {}
            }
        }
        Ok(out.into_bytes())
    }

    pub fn readlink(&self, node: &Node) -> Result<Vec<u8>, Errno> {
        if !node.is_symlink() {
            return Err(EINVAL);
        }
        self.read_file(node)
    }

    /// Writes `data` at `offset`; control files act on what is written.
    pub fn write(&self, node: &Node, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let count = data.len() as u32;
        match node {
            Node::Work { branch, txn, path, kind: WorkKind::File } => {
                let mut txns = lock(&self.txns);
                let t = txns.get_mut(&(branch.clone(), txn.clone())).ok_or(ENOENT)?;
                t.write(path, offset, data)
            }
            Node::File(File::TxnMsg(b, t)) => self.with_txn(b, t, |txn| {
                let at = usize::try_from(offset).map_err(|_| EINVAL)?.min(txn.msg.len());
                txn.msg.truncate(at);
                txn.msg.extend_from_slice(data);
                Ok(count)
            }),
            Node::File(File::TxnParents(b, t)) => {
                let ids = parse_ids(data)?;
                for id in &ids {
                    self.db.commit_tree(*id).map_err(|_| EINVAL)?;
                }
                self.with_txn(b, t, |txn| {
                    // The first line is the base the transaction commits on; the rest merge in.
                    txn.parents =
                        ids.iter().skip(usize::from(txn.base.is_some())).copied().collect();
                    Ok(count)
                })
            }
            Node::File(File::TxnCtl(b, t)) => {
                let command = String::from_utf8_lossy(data).trim().to_owned();
                match command.as_str() {
                    "commit" => self.commit_txn(b, t).map(|()| count),
                    "close" => {
                        lock(&self.txns).remove(&(b.clone(), t.clone()));
                        Ok(count)
                    }
                    "" => Ok(count),
                    other => {
                        let message = format!("unknown command {other:?} (commit or close)\n");
                        self.with_txn(b, t, |txn| {
                            txn.ctl = message;
                            Err(EINVAL)
                        })
                    }
                }
            }
            Node::File(File::TxnMerge(b, t)) => {
                let id = *parse_ids(data)?.first().ok_or(EINVAL)?;
                self.merge_txn(b, t, id).map(|()| count)
            }
            Node::File(File::FastForward(b)) => {
                let result = match parse_ids(data).map(|ids| ids.first().copied()) {
                    Ok(Some(id)) => {
                        self.db.fast_forward(b, id).map_err(|e| (errno_of(&e), e.to_string()))
                    }
                    _ => Err((EINVAL, "write a commit id".to_owned())),
                };
                let (ret, text) = match result {
                    Ok(()) => {
                        lock(&self.pending).remove(b);
                        (Ok(count), "ok\n".to_owned())
                    }
                    Err((errno, text)) => (Err(errno), format!("{text}\n")),
                };
                lock(&self.ff_results).insert(b.clone(), text);
                ret
            }
            Node::Git { .. } | Node::EmptyRo(_) => Err(EROFS),
            Node::Dir(_) | Node::Work { kind: WorkKind::Dir, .. } => Err(EISDIR),
            _ => Err(EACCES),
        }
    }

    /// Truncates a file (setattr size, O_TRUNC).
    pub fn truncate(&self, node: &Node, size: u64) -> Result<(), Errno> {
        match node {
            Node::Work { branch, txn, path, kind: WorkKind::File } => {
                self.with_txn(branch, txn, |t| t.truncate(path, size))
            }
            Node::File(File::TxnMsg(b, t)) => self.with_txn(b, t, |txn| {
                txn.msg.truncate(usize::try_from(size).unwrap_or(usize::MAX));
                Ok(())
            }),
            // Control files are rewritten whole by each command; truncating them is a no-op.
            Node::File(
                File::TxnParents(..) | File::TxnCtl(..) | File::TxnMerge(..) | File::FastForward(_),
            ) => Ok(()),
            Node::Git { .. } | Node::EmptyRo(_) => Err(EROFS),
            n if n.is_dir() => Err(EISDIR),
            _ => Err(EACCES),
        }
    }

    /// Creates a regular file `name` in the directory `dir`; over an existing file it
    /// empties it (DataKit's semantics) unless `exclusive`.
    pub fn create(&self, dir: &Node, name: &str, exclusive: bool) -> Result<(), Errno> {
        match dir {
            Node::Work { branch, txn, path, kind: WorkKind::Dir } => {
                self.with_txn(branch, txn, |t| t.create(&child_path(path, name), exclusive))
            }
            Node::Git { .. } | Node::EmptyRo(_) => Err(EROFS),
            _ => Err(EACCES),
        }
    }

    pub fn symlink(&self, dir: &Node, name: &str, target: &[u8]) -> Result<(), Errno> {
        match dir {
            Node::Work { branch, txn, path, kind: WorkKind::Dir } => {
                self.with_txn(branch, txn, |t| t.symlink(&child_path(path, name), target.to_vec()))
            }
            Node::Git { .. } | Node::EmptyRo(_) => Err(EROFS),
            _ => Err(EACCES),
        }
    }

    /// mkdir: a branch under `/branch`, a transaction under `transactions/` (belonging to
    /// connection `owner`), a directory in `rw/`.
    pub fn mkdir(&self, dir: &Node, name: &str, owner: u64) -> Result<(), Errno> {
        match dir {
            Node::Dir(Dir::Branches) => {
                // git's own rules: a name it refuses would break fsck and gc for good.
                if !cairn_db::branch::valid_branch_name(name) {
                    return Err(EINVAL);
                }
                if self.head(name)?.is_some() || !lock(&self.pending).insert(name.to_owned()) {
                    return Err(EEXIST);
                }
                Ok(())
            }
            Node::Dir(Dir::Transactions(b)) => self.create_txn(b, name, owner),
            Node::Work { branch, txn, path, kind: WorkKind::Dir } => {
                self.with_txn(branch, txn, |t| t.mkdir(&child_path(path, name)))
            }
            Node::Git { .. } | Node::EmptyRo(_) => Err(EROFS),
            _ => Err(EACCES),
        }
    }

    /// Removes `name` from `dir` (unlinkat / remove). `dir_expected`: Some(true) for rmdir.
    pub fn remove(&self, dir: &Node, name: &str, dir_expected: Option<bool>) -> Result<(), Errno> {
        match dir {
            Node::Dir(Dir::Branches) => {
                if lock(&self.pending).remove(name) {
                    return Ok(());
                }
                self.db.delete_branch(name).map_err(|e| errno_of(&e))?;
                lock(&self.txns).retain(|(b, _), _| b != name);
                Ok(())
            }
            Node::Dir(Dir::Transactions(b)) => {
                lock(&self.txns).remove(&(b.clone(), name.to_owned())).map(drop).ok_or(ENOENT)
            }
            Node::Work { branch, txn, path, kind: WorkKind::Dir } => {
                self.with_txn(branch, txn, |t| t.remove(&child_path(path, name), dir_expected))
            }
            Node::Git { .. } | Node::EmptyRo(_) => Err(EROFS),
            _ => Err(EACCES),
        }
    }

    /// Renames within one transaction's working tree.
    pub fn rename(
        &self,
        from_dir: &Node,
        from: &str,
        to_dir: &Node,
        to: &str,
    ) -> Result<(), Errno> {
        match (from_dir, to_dir) {
            (
                Node::Work { branch, txn, path: a, kind: WorkKind::Dir },
                Node::Work { branch: b2, txn: t2, path: b, kind: WorkKind::Dir },
            ) if branch == b2 && txn == t2 => {
                self.with_txn(branch, txn, |t| t.rename(&child_path(a, from), &child_path(b, to)))
            }
            (Node::Work { .. }, Node::Work { .. }) => Err(EINVAL),
            (Node::Git { .. } | Node::EmptyRo(_), _) | (_, Node::Git { .. } | Node::EmptyRo(_)) => {
                Err(EROFS)
            }
            _ => Err(EACCES),
        }
    }
}

fn child_path(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// Commit ids, one per line (or separated by spaces).
fn parse_ids(data: &[u8]) -> Result<Vec<ObjectId>, Errno> {
    let text = std::str::from_utf8(data).map_err(|_| EINVAL)?;
    text.split_whitespace().map(|h| ObjectId::from_hex(h.as_bytes()).map_err(|_| EINVAL)).collect()
}
