use std::path::{Path, PathBuf};

use gix::ObjectId;

/// What went wrong in the database. Variants name the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path} already holds a git repository")]
    AlreadyExists { path: PathBuf },
    #[error("{path} is not empty and not a git repository; choose an empty or new directory")]
    NotEmpty { path: PathBuf },
    #[error("{path} is not a cairn database: {reason}")]
    NotADatabase { path: PathBuf, reason: String },
    #[error("{rev}: no such branch or commit")]
    UnknownRevision { rev: String },
    #[error("branch {branch} does not exist")]
    NoBranch { branch: String },
    #[error("branch {branch} already exists")]
    BranchExists { branch: String },
    #[error("branch {branch} holds the configuration and cannot be deleted")]
    Protected { branch: String },
    #[error("{branch:?} is not a valid branch name")]
    BadBranchName { branch: String },
    #[error("{to} does not descend from the head of {branch}: not a fast-forward")]
    NotFastForward { branch: String, to: String },
    /// A value or tree the schema refuses; nothing was committed.
    #[error(transparent)]
    Refused(#[from] cairn_schema::Error),
    /// The same key was changed since the transaction started.
    #[error("conflict on {key}: it changed to {theirs} in {head} since this change started from {base}; re-read and try again")]
    Conflict { key: String, base: String, head: String, theirs: String },
    /// `--expect` was given and the branch is elsewhere.
    #[error("{branch} is at {found}, not at the expected {expected}; nothing was changed")]
    Moved { branch: String, expected: String, found: String },
    #[error("{lock} is held by a git process, or was left by one that died, and was not released within {seconds} s; cairn never breaks git's lock: if no git command is running on this database, remove the file")]
    Locked { lock: PathBuf, seconds: u64 },
    #[error("{lock} is held by {holder}, and was not released within {seconds} s")]
    WriterBusy { lock: PathBuf, holder: String, seconds: f64 },
    #[error("{branch} kept moving under this commit ({attempts} attempts); is something rewriting it in a loop?")]
    Contended { branch: String, attempts: u32 },
    #[error("{path}: the value is {size} bytes, more than the {limit} any setting can hold; it was not read (set or reset the key to replace it)")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("{path:?}: not a path git can store (no NUL, no empty component, no .git)")]
    BadPath { path: String },
    #[error("{path}: {value} is not a valid commit id")]
    CorruptRef { path: PathBuf, value: String },
    #[error("{action}")]
    Git {
        action: &'static str,
        #[source]
        source: gix::Error,
    },
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("watching {path} for changes")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_owned(), source }
    }

    pub(crate) fn git(action: &'static str, source: impl Into<gix::Error>) -> Self {
        Error::Git { action, source: source.into() }
    }
}

/// A short id for messages.
pub(crate) fn short(id: &ObjectId) -> String {
    id.to_hex_with_len(10).to_string()
}
