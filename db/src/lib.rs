//! The cairn configuration database: a git repository, on gix, whose branch `master` holds every
//! setting as a file.
//!
//! Every change is one commit. The ref moves by compare-and-swap under git's own lock file
//! (`refs/heads/master.lock`), so cairn processes, the 9P server and the git CLI exclude each
//! other, and objects are flushed to disk before the ref points at them, so a process killed at
//! any instant leaves the branch at a complete commit.
//!
//! # Layout
//! - [`Db`] (this file): opening and creating a database, reading at any revision.
//! - [`branch`]: listing, creating, deleting, fast-forwarding branches.
//! - [`transaction`]: a set of changes committed as one commit, rebased when the head moved.
//! - [`refs`]: the lock-file compare-and-swap on a ref, with fsync.
//! - `writer_lock`: the lock of cairn's writers, which tells a dead writer's git lock from git's.
//! - `durable`: flushing freshly written objects before the ref moves.
//! - [`history`]: the branch log, per-key history (through an index of changed keys), diffs
//!   and rollback.
//! - [`objects`]: trees, entries and blobs by id, for the 9P server.
//! - [`watch`]: a subscription to a branch's head, for this process's writes and everyone else's.
//! - `testing` (tests only): bare repositories made and inspected with the git CLI.
//!
//! The crate has no unsafe code: its one system call beyond std's, flock, goes through rustix.

#![forbid(unsafe_code)]

pub mod branch;
mod durable;
mod error;
mod head_cache;
pub mod history;
mod history_index;
pub mod objects;
pub mod read;
pub mod refs;
#[cfg(test)]
mod testing;
pub mod transaction;
pub mod watch;
mod writer_lock;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use cairn_schema as schema;
use cairn_schema::{Host, Tree};
pub use error::Error;
pub use gix::ObjectId;
pub use history::{CommitInfo, KeyChange, PathChange};
pub use read::{BoundedSnapshot, MAX_VALUE};
pub use transaction::{Committed, Transaction};
pub use watch::HeadWatch;

/// Size of the per-handle object cache.
const OBJECT_CACHE_BYTES: usize = 4 << 20;

/// The branch that holds the configuration.
pub const CONFIG_BRANCH: &str = "master";

/// An open configuration database.
#[derive(Debug)]
pub struct Db {
    repo: gix::ThreadSafeRepository,
    /// Handles returned after use, with their object caches warm: a server answers many small
    /// reads of the same trees, and a fresh handle would decompress them again every time.
    idle: Mutex<Vec<gix::Repository>>,
    heads: head_cache::HeadCache,
    git_dir: PathBuf,
    host: Host,
}

/// Idle handles kept; more than this many threads at once get fresh ones.
const IDLE_HANDLES: usize = 8;

/// A repository handle lent to one caller; it goes back to the database's pool when dropped.
pub(crate) struct Handle<'a> {
    repo: Option<gix::Repository>,
    db: &'a Db,
}

impl std::ops::Deref for Handle<'_> {
    type Target = gix::Repository;
    fn deref(&self) -> &gix::Repository {
        // Present from creation until drop.
        self.repo.as_ref().unwrap_or_else(|| unreachable!("a handle holds its repository"))
    }
}

impl Drop for Handle<'_> {
    fn drop(&mut self) {
        if let Some(repo) = self.repo.take() {
            let mut idle = self.db.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < IDLE_HANDLES {
                idle.push(repo);
            }
        }
    }
}

/// One commit and the whole tree it holds.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub commit: ObjectId,
    pub tree: Tree,
    /// The commit time, seconds since the epoch.
    pub time: i64,
}

impl Db {
    /// Creates a bare repository at `path` whose first commit holds every key at its default.
    /// `HEAD` points at `refs/heads/master`. Refuses a directory that already holds a repository.
    pub fn init(path: &Path, host: Host) -> Result<Db, Error> {
        if path.join("HEAD").exists() || path.join(".git").exists() {
            return Err(Error::AlreadyExists { path: path.to_owned() });
        }
        let occupied = std::fs::read_dir(path).map(|mut d| d.next().is_some()).unwrap_or(false);
        if occupied {
            return Err(Error::NotEmpty { path: path.to_owned() });
        }
        std::fs::create_dir_all(path).map_err(|source| Error::io(path, source))?;
        let repo = gix::init_bare(path).map_err(|e| Error::git("creating the repository", e))?;
        let git_dir = repo.git_dir().to_owned();
        let head = git_dir.join("HEAD");
        std::fs::write(&head, format!("ref: refs/heads/{CONFIG_BRANCH}\n"))
            .map_err(|source| Error::io(&head, source))?;
        let db = Db {
            repo: repo.into_sync(),
            idle: Mutex::default(),
            heads: Default::default(),
            git_dir,
            host,
        };
        let tree = cairn_schema::tree::defaults(&host);
        let message = format!("init: defaults for schema v{}", cairn_schema::CURRENT_VERSION);
        transaction::commit_tree(&db, CONFIG_BRANCH, None, &tree, &message)?;
        Ok(db)
    }

    /// Opens the database at `path` (a bare repository, or a work tree's `.git`).
    pub fn open(path: &Path, host: Host) -> Result<Db, Error> {
        if !path.exists() {
            return Err(Error::NotADatabase {
                path: path.to_owned(),
                reason: "it does not exist".into(),
            });
        }
        // git's own default delta-base cache; gix's is a 64-entry list, which thrashes on the
        // long delta chains of trees that history walks decode (measured: 2.5x slower `log KEY`).
        let options =
            gix::open::Options::default().config_overrides(["core.deltaBaseCacheLimit=96m"]);
        let repo = gix::ThreadSafeRepository::open_opts(path, options)
            .map_err(|e| Error::NotADatabase { path: path.to_owned(), reason: e.to_string() })?;
        let git_dir = repo.git_dir().to_owned();
        let db = Db { repo, idle: Mutex::default(), heads: Default::default(), git_dir, host };
        if db.head(CONFIG_BRANCH)?.is_none() {
            return Err(Error::NotADatabase {
                path: path.to_owned(),
                reason: format!("it has no branch {CONFIG_BRANCH}; run `cairn init`"),
            });
        }
        Ok(db)
    }

    /// The repository's git directory.
    pub fn git_dir(&self) -> &Path {
        &self.git_dir
    }

    /// The host the schema's limits are checked against.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// A repository handle with an object cache (history walks and 9P reads visit the same
    /// trees again and again), from the pool when one is idle.
    pub(crate) fn repo(&self) -> Handle<'_> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let repo = idle.unwrap_or_else(|| {
            let mut repo = self.repo.to_thread_local();
            repo.object_cache_size_if_unset(OBJECT_CACHE_BYTES);
            repo
        });
        Handle { repo: Some(repo), db: self }
    }

    /// Starts a transaction on `branch`, based on its current head. A name git would refuse
    /// is refused here, before anything is written.
    pub fn transaction(&self, branch: &str) -> Result<Transaction<'_>, Error> {
        branch::check_name(branch)?;
        let base = self.head(branch)?;
        Ok(Transaction::new(self, branch, base))
    }
}
