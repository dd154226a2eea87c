//! The database as DataKit's filesystem.
//!
//! ```text
//! /branch/B/head            commit id of B
//! /branch/B/head.live       stream: the head, then each new head
//! /branch/B/ro/...          the head's tree, read-only
//! /branch/B/watch/X.node/.../tree.live   stream: the hash at path X each time it changes
//! /branch/B/fast-forward    write a commit id to move B forward
//! /branch/B/transactions/T/ rw/ msg parents ctl merge ours/ theirs/ base/ conflicts diff/C
//! /snapshots/C/             ro/ hash msg parents
//! /trees/H                  a tree or blob by hash
//! ```
//!
//! Operations here are synchronous (gix is); the session runs them on blocking threads and
//! only waits asynchronously for streams.

mod node;
mod ops;
pub mod txn;
pub mod txns;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use cairn_db::{Db, ObjectId};
use tokio::sync::watch;

pub use node::{Dir, File, GitRoot, Node};
use txn::Txn;

use crate::errno::*;

/// The filesystem shared by every session of a server.
#[derive(Debug)]
pub struct Fs {
    db: Arc<Db>,
    /// Open transactions by (branch, name).
    txns: Mutex<HashMap<(String, String), Txn>>,
    /// Branches made with mkdir that have no commit yet (git cannot store an empty ref).
    pending: Mutex<BTreeSet<String>>,
    /// One head subscription per watched branch, shared by every stream reader.
    hubs: Mutex<HashMap<String, watch::Receiver<Option<ObjectId>>>>,
    /// Blob contents shared by the working trees of transactions.
    blobs: Mutex<HashMap<ObjectId, std::sync::Weak<Vec<u8>>>>,
    /// Result of the last write to each branch's fast-forward file.
    ff_results: Mutex<HashMap<String, String>>,
    /// mtime of synthetic files.
    started: i64,
}

/// What getattr reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub qid: crate::Qid,
    /// File type and permission bits (S_IFDIR | 0o555, ...).
    pub mode: u32,
    pub size: u64,
    pub mtime: i64,
}

/// A directory entry as readdir shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    pub name: String,
    pub qid: crate::Qid,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these maps leaves it consistent (every update is a single
    // insert or remove), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Maps database errors to errnos: refusals and conflicts are the client's to fix.
pub fn errno_of(err: &cairn_db::Error) -> Errno {
    use cairn_db::Error as E;
    match err {
        E::Refused(_) | E::BadBranchName { .. } | E::NotFastForward { .. } | E::BadPath { .. } => {
            EINVAL
        }
        E::Conflict { .. }
        | E::Moved { .. }
        | E::Locked { .. }
        | E::WriterBusy { .. }
        | E::Contended { .. } => EBUSY,
        E::UnknownRevision { .. } | E::NoBranch { .. } => ENOENT,
        E::BranchExists { .. } => EEXIST,
        E::Protected { .. } => EPERM,
        _ => EIO,
    }
}

impl Fs {
    pub fn new(db: Arc<Db>) -> Fs {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        Fs {
            db,
            txns: Mutex::default(),
            pending: Mutex::default(),
            hubs: Mutex::default(),
            blobs: Mutex::default(),
            ff_results: Mutex::default(),
            started,
        }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The head of `branch`, `None` when it has no commit (or does not exist).
    pub fn head(&self, branch: &str) -> Result<Option<ObjectId>, Errno> {
        self.db.head_cached(branch).map_err(|e| errno_of(&e))
    }

    /// A receiver that sees every new head of `branch`, shared with other readers.
    pub fn subscribe(&self, branch: &str) -> Result<watch::Receiver<Option<ObjectId>>, Errno> {
        let mut hubs = lock(&self.hubs);
        if let Some(rx) = hubs.get(branch) {
            return Ok(rx.clone());
        }
        let heads = self.db.watch(branch).map_err(|e| errno_of(&e))?;
        let (tx, rx) = watch::channel(heads.initial());
        let name = format!("9p hub {branch}");
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                while let Some(head) = heads.recv() {
                    if tx.send(head).is_err() {
                        return;
                    }
                }
            })
            .map_err(|_| EIO)?;
        hubs.insert(branch.to_owned(), rx.clone());
        Ok(rx)
    }

    /// Resolves a path (components from the root) to a node, or ENOENT.
    pub fn classify(&self, comps: &[String]) -> Result<Node, Errno> {
        let c: Vec<&str> = comps.iter().map(String::as_str).collect();
        let node = match c.as_slice() {
            [] => Node::Dir(Dir::Root),
            ["branch"] => Node::Dir(Dir::Branches),
            ["snapshots"] => Node::Dir(Dir::Snapshots),
            ["trees"] => Node::Dir(Dir::Trees),
            ["branch", b, rest @ ..] => {
                // The head is read once per path: it is the one thing here that can change.
                let head = self.head(b)?;
                if head.is_none() && !lock(&self.pending).contains(*b) {
                    return Err(ENOENT);
                }
                self.classify_branch(b, head, rest)?
            }
            ["snapshots", c, rest @ ..] => {
                let id = self.commit_id(c)?;
                match rest {
                    [] => Node::Dir(Dir::Snapshot(id)),
                    ["hash"] => Node::File(File::SnapHash(id)),
                    ["msg"] => Node::File(File::SnapMsg(id)),
                    ["parents"] => Node::File(File::SnapParents(id)),
                    ["ro", path @ ..] => self.git_node(GitRoot::Commit(id), path)?,
                    _ => return Err(ENOENT),
                }
            }
            ["trees", h, path @ ..] => {
                let id = ObjectId::from_hex(h.as_bytes()).map_err(|_| ENOENT)?;
                self.db.object_kind(id).ok_or(ENOENT)?;
                self.git_node(GitRoot::Object(id), path)?
            }
            _ => return Err(ENOENT),
        };
        Ok(node)
    }

    fn classify_branch(
        &self,
        b: &str,
        head: Option<ObjectId>,
        rest: &[&str],
    ) -> Result<Node, Errno> {
        let b = b.to_owned();
        Ok(match rest {
            [] => Node::Dir(Dir::Branch(b)),
            ["head"] => Node::File(File::Head(b)),
            ["head.live"] => Node::File(File::HeadLive(b)),
            ["fast-forward"] => Node::File(File::FastForward(b)),
            ["ro", path @ ..] => {
                let Some(head) = head else {
                    return if path.is_empty() { Ok(Node::EmptyRo(b)) } else { Err(ENOENT) };
                };
                let top = self.db.commit_tree(head).map_err(|e| errno_of(&e))?;
                self.git_node_at(GitRoot::Branch(b), top, path)?
            }
            ["watch", path @ ..] => match path.split_last() {
                Some((&"tree.live", dirs)) => Node::File(File::TreeLive(b, watched_path(dirs)?)),
                _ => Node::Dir(Dir::Watch(b, watched_path(path)?)),
            },
            ["transactions"] => Node::Dir(Dir::Transactions(b)),
            ["transactions", t, more @ ..] => {
                let key = (b.clone(), (*t).to_owned());
                let txns = lock(&self.txns);
                let txn = txns.get(&key).ok_or(ENOENT)?;
                let t = (*t).to_owned();
                match more {
                    [] => Node::Dir(Dir::Txn(b, t)),
                    ["msg"] => Node::File(File::TxnMsg(b, t)),
                    ["parents"] => Node::File(File::TxnParents(b, t)),
                    ["ctl"] => Node::File(File::TxnCtl(b, t)),
                    ["merge"] => Node::File(File::TxnMerge(b, t)),
                    ["conflicts"] if txn.merge.is_some() => Node::File(File::TxnConflicts(b, t)),
                    ["diff"] => Node::Dir(Dir::Diff(b, t)),
                    ["diff", c] => {
                        drop(txns);
                        let id = self.commit_id(c)?;
                        Node::File(File::TxnDiff(b, t, id))
                    }
                    ["rw", path @ ..] => {
                        let path = node::join(path);
                        let kind = txn.kind(&path).ok_or(ENOENT)?;
                        Node::Work { branch: b, txn: t, path, kind }
                    }
                    [side @ ("ours" | "theirs" | "base"), path @ ..] => {
                        let merge = txn.merge.as_ref().ok_or(ENOENT)?;
                        let tree = match *side {
                            "ours" => merge.ours,
                            "theirs" => merge.theirs,
                            _ => merge.base,
                        };
                        drop(txns);
                        self.git_node(GitRoot::Object(tree), path)?
                    }
                    _ => return Err(ENOENT),
                }
            }
            _ => return Err(ENOENT),
        })
    }

    /// A full 40-digit commit id naming an existing commit.
    fn commit_id(&self, hex: &str) -> Result<ObjectId, Errno> {
        let id = ObjectId::from_hex(hex.as_bytes()).map_err(|_| ENOENT)?;
        self.db.commit_tree(id).map_err(|_| ENOENT)?;
        Ok(id)
    }

    /// The tree (or blob) a git view shows.
    pub fn git_root(&self, root: &GitRoot) -> Result<ObjectId, Errno> {
        match root {
            GitRoot::Branch(b) => {
                let head = self.head(b)?.ok_or(ENOENT)?;
                self.db.commit_tree(head).map_err(|e| errno_of(&e))
            }
            GitRoot::Commit(c) => self.db.commit_tree(*c).map_err(|e| errno_of(&e)),
            GitRoot::Object(id) => Ok(*id),
        }
    }

    fn git_node(&self, root: GitRoot, path: &[&str]) -> Result<Node, Errno> {
        let top = self.git_root(&root)?;
        self.git_node_at(root, top, path)
    }

    /// The node at `path` under `top`, the tree (or blob) that `root` shows.
    fn git_node_at(&self, root: GitRoot, top: ObjectId, path: &[&str]) -> Result<Node, Errno> {
        let path = node::join(path);
        if path.is_empty() {
            let kind = match root {
                GitRoot::Object(id) => self.db.object_kind(id).ok_or(ENOENT)?,
                _ => cairn_db::objects::EntryKind::Dir,
            };
            return Ok(Node::Git { root, path, id: top, kind });
        }
        if self.db.object_kind(top) != Some(cairn_db::objects::EntryKind::Dir) {
            return Err(ENOTDIR);
        }
        let (id, kind) = self.db.lookup(top, &path).map_err(|e| errno_of(&e))?.ok_or(ENOENT)?;
        Ok(Node::Git { root, path, id, kind })
    }
}

/// `a.node/b.node` -> `a/b`; anything else under `watch/` does not exist.
fn watched_path(dirs: &[&str]) -> Result<String, Errno> {
    let names: Option<Vec<&str>> = dirs.iter().map(|d| d.strip_suffix(".node")).collect();
    match names {
        Some(names) if names.iter().all(|n| !n.is_empty()) => Ok(names.join("/")),
        _ => Err(ENOENT),
    }
}

/// A stable 64-bit id for a path: the qid.path (inode) of everything cairn serves. Git object
/// ids repeat across paths (identical files and subtrees), so they would make false hard links
/// and directory loops; the path does not.
pub fn path_id(comps: &[String]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, comp) in comps.iter().enumerate() {
        if i > 0 {
            hash = (hash ^ u64::from(b'/')).wrapping_mul(0x0100_0000_01b3);
        }
        for byte in comp.bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}
