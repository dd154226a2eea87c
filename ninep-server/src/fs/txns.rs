//! The transactions of a filesystem: making one (`mkdir transactions/T`), committing it
//! (`echo commit > ctl`), merging into it (`echo C > merge`), and the bounds that keep a client
//! from filling the server's memory with them.
//!
//! A transaction belongs to the connection that made it and goes when that connection does,
//! as in DataKit's server. Its working tree shares the base's contents (one copy per blob for
//! every transaction of the same head), so a transaction costs what it changes; that, the
//! number of transactions per connection and in all, and each one's own bytes are bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};

use cairn_db::objects::EntryKind;
use cairn_db::ObjectId;

use super::txn::{Content, Merge, Txn, MAX_PATHS};
use super::{errno_of, lock, Fs};
use crate::errno::*;

/// A tree's files (path to content) and which of them are symbolic links.
pub(super) type Files = (BTreeMap<String, Content>, BTreeSet<String>);

/// Open transactions, in all.
pub const MAX_TXNS: usize = 64;
/// Open transactions per connection.
pub const MAX_TXNS_PER_CONNECTION: usize = 16;
/// Bytes all transactions together may hold beyond their bases.
pub const MAX_TXN_BYTES: usize = 128 << 20;

impl Fs {
    /// `mkdir transactions/T` by connection `owner`: a snapshot of the branch head. Checking
    /// the name and inserting happen under one lock, so of two racing mkdirs one gets EEXIST.
    pub(super) fn create_txn(&self, branch: &str, name: &str, owner: u64) -> Result<(), Errno> {
        if name.contains('\0') {
            return Err(EINVAL);
        }
        let base = self.head(branch)?;
        let (files, links) = match base {
            Some(head) => self.files_at(head)?,
            None => Default::default(),
        };
        let key = (branch.to_owned(), name.to_owned());
        let mut txns = lock(&self.txns);
        if txns.contains_key(&key) {
            return Err(EEXIST);
        }
        let mine = txns.values().filter(|t| t.owner == owner).count();
        if txns.len() >= MAX_TXNS || mine >= MAX_TXNS_PER_CONNECTION {
            return Err(ENOSPC);
        }
        txns.insert(key, Txn::new(base, files, links, owner));
        Ok(())
    }

    /// Runs `f` on a transaction, which may grow only as far as all transactions together
    /// stay within [`MAX_TXN_BYTES`] (beyond: ENOSPC).
    pub(super) fn with_txn<R>(
        &self,
        b: &str,
        t: &str,
        f: impl FnOnce(&mut Txn) -> Result<R, Errno>,
    ) -> Result<R, Errno> {
        let mut txns = lock(&self.txns);
        let key = (b.to_owned(), t.to_owned());
        let others: usize =
            txns.iter().filter(|(k, _)| **k != key).map(|(_, txn)| txn.own_bytes()).sum();
        let txn = txns.get_mut(&key).ok_or(ENOENT)?;
        txn.room = MAX_TXN_BYTES.saturating_sub(others);
        f(txn)
    }

    /// The memory the working trees of all transactions hold: each distinct content once.
    pub fn transaction_memory(&self) -> usize {
        let txns = lock(&self.txns);
        let mut seen = std::collections::HashSet::new();
        txns.values()
            .flat_map(|t| t.files.values())
            .filter(|c| seen.insert(Arc::as_ptr(c)))
            .map(|c| c.len())
            .sum()
    }

    /// The connection `owner` is gone: so are its transactions.
    pub fn drop_connection(&self, owner: u64) {
        lock(&self.txns).retain(|_, txn| txn.owner != owner);
    }

    /// The files and symlinks of a commit, with content.
    fn files_at(&self, commit: ObjectId) -> Result<Files, Errno> {
        let tree = self.db.commit_tree(commit).map_err(|e| errno_of(&e))?;
        self.files_of_tree(tree)
    }

    pub(super) fn files_of_tree(&self, tree: ObjectId) -> Result<Files, Errno> {
        let mut files = BTreeMap::new();
        let mut links = BTreeSet::new();
        let mut stack = vec![(String::new(), tree)];
        while let Some((prefix, id)) = stack.pop() {
            for entry in self.db.list_tree(id).map_err(|e| errno_of(&e))? {
                let path = format!("{prefix}{}", entry.name);
                match entry.kind {
                    EntryKind::Dir => stack.push((format!("{path}/"), entry.id)),
                    kind => {
                        if files.len() >= MAX_PATHS {
                            return Err(ENOSPC);
                        }
                        files.insert(path.clone(), self.shared_blob(entry.id)?);
                        if kind == EntryKind::Link {
                            links.insert(path);
                        }
                    }
                }
            }
        }
        Ok((files, links))
    }

    /// A blob's content, shared with every transaction that holds it already.
    fn shared_blob(&self, id: ObjectId) -> Result<Content, Errno> {
        let mut blobs = lock(&self.blobs);
        if let Some(content) = blobs.get(&id).and_then(Weak::upgrade) {
            return Ok(content);
        }
        let content = Arc::new(self.db.blob(id).map_err(|e| errno_of(&e))?);
        if blobs.len() >= 4 * MAX_PATHS {
            blobs.retain(|_, weak| weak.strong_count() > 0);
        }
        blobs.insert(id, Arc::downgrade(&content));
        Ok(content)
    }

    /// `echo commit > ctl`: one commit with what the working tree changed, by the same
    /// compare-and-swap as the CLI; schema-checked on master. The reason of a failure is left
    /// in `ctl`.
    pub(super) fn commit_txn(&self, b: &str, t: &str) -> Result<(), Errno> {
        let key = (b.to_owned(), t.to_owned());
        let txn = lock(&self.txns).get(&key).cloned().ok_or(ENOENT)?;
        if let Some(merge) = &txn.merge {
            if !merge.conflicts.is_empty() {
                let list: Vec<&str> = merge.conflicts.iter().map(String::as_str).collect();
                let message = format!(
                    "unresolved conflicts: {} (write each path to resolve it)\n",
                    list.join(", ")
                );
                return self.with_txn(b, t, |txn| {
                    txn.ctl = message;
                    Err(EBUSY)
                });
            }
        }
        let result = (|| -> Result<ObjectId, cairn_db::Error> {
            let mut tx = self.db.transaction(b)?;
            tx.base_at(txn.base);
            for (path, content) in &txn.files {
                let was_link = txn.base_links.contains(path);
                let is_link = txn.links.contains(path);
                if txn.base_files.get(path) == Some(content) && was_link == is_link {
                    continue;
                }
                if is_link {
                    tx.set_link(path, content.to_vec());
                } else {
                    tx.set_path(path, content.to_vec());
                }
            }
            for path in txn.base_files.keys().filter(|p| !txn.files.contains_key(*p)) {
                tx.remove_path(path);
            }
            if !txn.msg.is_empty() {
                tx.message(String::from_utf8_lossy(&txn.msg).into_owned());
            }
            if !txn.parents.is_empty() {
                tx.merge_parents(txn.parents.clone());
            }
            Ok(tx.commit()?.id)
        })();
        match result {
            Ok(id) => {
                lock(&self.txns).remove(&key);
                lock(&self.pending).remove(b);
                tracing::info!(branch = b, transaction = t, commit = %id, "committed through 9P");
                Ok(())
            }
            Err(e) => {
                let errno = errno_of(&e);
                let message = format!("{e}\n");
                self.with_txn(b, t, |txn| {
                    txn.ctl = message;
                    Err(errno)
                })
            }
        }
    }

    /// `echo C > merge`: three-way merge of commit C into the working tree.
    pub(super) fn merge_txn(&self, b: &str, t: &str, theirs: ObjectId) -> Result<(), Errno> {
        let theirs_tree = self.db.commit_tree(theirs).map_err(|_| EINVAL)?;
        let (theirs_files, _) = self.files_of_tree(theirs_tree)?;
        let base_commit = {
            let txns = lock(&self.txns);
            txns.get(&(b.to_owned(), t.to_owned())).ok_or(ENOENT)?.base
        };
        let base_commit = match base_commit {
            Some(ours) => self.db.merge_base(ours, theirs).map_err(|e| errno_of(&e))?,
            None => None,
        };
        let empty = self.db.empty_tree();
        let base_tree = match base_commit {
            Some(c) => self.db.commit_tree(c).map_err(|e| errno_of(&e))?,
            None => empty,
        };
        let (base_files, _) =
            if base_tree == empty { Default::default() } else { self.files_of_tree(base_tree)? };
        let ours_files: BTreeMap<String, Vec<u8>> = {
            let txns = lock(&self.txns);
            let txn = txns.get(&(b.to_owned(), t.to_owned())).ok_or(ENOENT)?;
            txn.files.iter().map(|(p, c)| (p.clone(), c.to_vec())).collect()
        };
        let ours = self.db.write_tree(&ours_files).map_err(|e| errno_of(&e))?;
        self.with_txn(b, t, |txn| {
            let conflicts = txn.merge(&base_files, &theirs_files);
            txn.ctl = if conflicts.is_empty() {
                format!("merged {theirs}\n")
            } else {
                format!("merged {theirs} with {} conflicts\n", conflicts.len())
            };
            txn.parents.push(theirs);
            txn.merge = Some(Merge { ours, theirs: theirs_tree, base: base_tree, conflicts });
            Ok(())
        })
    }
}
