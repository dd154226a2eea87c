//! Where a fid points: DataKit's layout, parsed from path components.

use cairn_db::objects::EntryKind;
use cairn_db::ObjectId;

use super::txn::WorkKind;

/// The git data a `ro/`-like view shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitRoot {
    /// The head of a branch, read afresh at each operation.
    Branch(String),
    /// A commit's tree (`/snapshots/C/ro`).
    Commit(ObjectId),
    /// A tree or blob by id (`/trees/H`, a transaction's `ours/`, `theirs/`, `base/`).
    Object(ObjectId),
}

/// A synthetic directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dir {
    Root,
    Branches,
    Branch(String),
    /// `watch/` and its `NAME.node` children: the path watched so far.
    Watch(String, String),
    Transactions(String),
    Txn(String, String),
    Diff(String, String),
    Snapshots,
    Snapshot(ObjectId),
    Trees,
}

/// A synthetic file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum File {
    Head(String),
    HeadLive(String),
    FastForward(String),
    /// A stream of the hash at a path.
    TreeLive(String, String),
    TxnMsg(String, String),
    TxnParents(String, String),
    TxnCtl(String, String),
    TxnMerge(String, String),
    TxnConflicts(String, String),
    TxnDiff(String, String, ObjectId),
    SnapHash(ObjectId),
    SnapMsg(ObjectId),
    SnapParents(ObjectId),
}

/// A resolved node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir(Dir),
    File(File),
    /// A path in git data, with what it is now.
    Git {
        root: GitRoot,
        path: String,
        id: ObjectId,
        kind: EntryKind,
    },
    /// `ro/` of a branch that has no commit yet: an empty directory.
    EmptyRo(String),
    /// A path in a transaction's working tree.
    Work {
        branch: String,
        txn: String,
        path: String,
        kind: WorkKind,
    },
}

impl Node {
    pub fn is_dir(&self) -> bool {
        match self {
            Node::Dir(_) | Node::EmptyRo(_) => true,
            Node::Git { kind, .. } => *kind == EntryKind::Dir,
            Node::Work { kind, .. } => *kind == WorkKind::Dir,
            Node::File(_) => false,
        }
    }

    pub fn is_stream(&self) -> bool {
        matches!(self, Node::File(File::HeadLive(_) | File::TreeLive(..)))
    }

    pub fn is_symlink(&self) -> bool {
        matches!(
            self,
            Node::Git { kind: EntryKind::Link, .. } | Node::Work { kind: WorkKind::Link, .. }
        )
    }
}

/// Joins path components below a view root.
pub fn join(parts: &[&str]) -> String {
    parts.join("/")
}
