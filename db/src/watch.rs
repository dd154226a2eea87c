//! A subscription to a branch's head.
//!
//! File-system events (notify) on the refs directory and on `packed-refs` wake a thread that
//! re-reads the head; every change is delivered, whoever made it: this process, another cairn,
//! or the git CLI. A slow poll backs the events up, for file systems that do not report them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use gix::ObjectId;
use notify::{RecursiveMode, Watcher};

use crate::{Db, Error};

/// How often the head is re-read when no event arrived.
const POLL: Duration = Duration::from_millis(500);

/// Delivers each new head of a branch. Dropping it stops the watching thread.
#[derive(Debug)]
pub struct HeadWatch {
    heads: Receiver<Option<ObjectId>>,
    initial: Option<ObjectId>,
    /// Tells the thread to stop; it checks at least every [`POLL`].
    closed: Arc<AtomicBool>,
}

impl Drop for HeadWatch {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Relaxed);
    }
}

impl HeadWatch {
    /// The head when the subscription started.
    pub fn initial(&self) -> Option<ObjectId> {
        self.initial
    }

    /// Waits for the next head (`None` inside: the branch was deleted). `None` when the watching
    /// thread stopped.
    pub fn recv(&self) -> Option<Option<ObjectId>> {
        self.heads.recv().ok()
    }

    /// Like [`Self::recv`], giving up after `timeout` (`Err(true)`: timed out, `Err(false)`:
    /// the watcher stopped).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<ObjectId>, bool> {
        self.heads.recv_timeout(timeout).map_err(|e| e == RecvTimeoutError::Timeout)
    }
}

impl Db {
    /// Subscribes to `branch`'s head.
    pub fn watch(&self, branch: &str) -> Result<HeadWatch, Error> {
        let refs_dir = self.git_dir().join("refs");
        let git_dir = self.git_dir().to_owned();
        let (event_tx, event_rx) = mpsc::channel::<()>();
        let mut watcher =
            notify::recommended_watcher(move |_event: notify::Result<notify::Event>| {
                let _ = event_tx.send(());
            })
            .map_err(|source| Error::Watch { path: refs_dir.clone(), source })?;
        watcher
            .watch(&refs_dir, RecursiveMode::Recursive)
            .map_err(|source| Error::Watch { path: refs_dir.clone(), source })?;
        watcher
            .watch(&git_dir, RecursiveMode::NonRecursive)
            .map_err(|source| Error::Watch { path: git_dir.clone(), source })?;
        let initial = self.head(branch)?;
        let (head_tx, heads) = mpsc::channel();
        let repo = self.repo.clone();
        let branch = branch.to_owned();
        let name = format!("watch {branch}");
        let closed = Arc::new(AtomicBool::new(false));
        let stop = closed.clone();
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let _watcher = watcher;
                let repo = repo.to_thread_local();
                let mut last = initial;
                while !stop.load(Ordering::Relaxed) {
                    match event_rx.recv_timeout(POLL) {
                        Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                    // Coalesce a burst of events into one read.
                    while event_rx.try_recv().is_ok() {}
                    let read = || crate::refs::read(&repo, &branch);
                    let mut head = match read() {
                        Ok(head) => head,
                        Err(e) => {
                            tracing::debug!(error = %e, "re-reading a watched head");
                            continue;
                        }
                    };
                    if head.is_none() && last.is_some() {
                        // `git pack-refs` moves a loose ref into packed-refs and deletes it: a
                        // read in between may find neither. A deleted branch stays deleted.
                        std::thread::sleep(Duration::from_millis(50));
                        head = read().unwrap_or(head);
                    }
                    if head != last {
                        last = head;
                        if head_tx.send(head).is_err() {
                            return;
                        }
                    }
                }
            })
            .map_err(|source| Error::io(&PathBuf::from("watch thread"), source))?;
        Ok(HeadWatch { heads, initial, closed })
    }
}
