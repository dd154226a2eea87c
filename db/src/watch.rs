//! A subscription to a branch's head.
//!
//! File-system events (notify) on the refs directory and on `packed-refs` wake a thread that
//! re-reads the head; every change is delivered, whoever made it: this process, another cairn,
//! or the git CLI. A slow poll backs the events up, for file systems that do not report them.
//!
//! Only events that can change a ref wake the thread: a file created, written, renamed or
//! removed under `refs/`, or `packed-refs` replaced. Reads raise events too (inotify reports
//! every open and close), and the thread's own read of the ref is one: waking on those made the
//! watcher read the ref, see its own read, and read again, forever (a core burnt while idle).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

use gix::ObjectId;
use notify::event::{EventKind, MetadataKind, ModifyKind};
use notify::{RecursiveMode, Watcher};

use crate::{Db, Error};

/// How often the head is re-read when no event arrived: a safety net for file systems that do
/// not report changes (network mounts), slow enough to cost nothing while idle.
const POLL: Duration = Duration::from_secs(30);

/// What wakes the watching thread.
#[derive(Debug)]
enum Wake {
    /// Something that may have moved a ref.
    Changed,
    /// The subscription was dropped.
    Stop,
}

/// Delivers each new head of a branch. Dropping it stops the watching thread.
#[derive(Debug)]
pub struct HeadWatch {
    heads: Receiver<Option<ObjectId>>,
    initial: Option<ObjectId>,
    wake: Sender<Wake>,
    reads: Arc<AtomicU64>,
}

impl Drop for HeadWatch {
    fn drop(&mut self) {
        let _ = self.wake.send(Wake::Stop);
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

    /// How many times the watching thread has read the ref so far (for tests and diagnostics:
    /// an idle watch should not be reading).
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
}

/// Whether a notify event can have moved a ref of the repository at `git_dir`.
fn moves_a_ref(event: &notify::Event, git_dir: &Path) -> bool {
    let kind_counts = match event.kind {
        EventKind::Access(_) => false,
        EventKind::Modify(ModifyKind::Metadata(
            MetadataKind::AccessTime | MetadataKind::Permissions | MetadataKind::Ownership,
        )) => false,
        EventKind::Create(_) | EventKind::Remove(_) | EventKind::Modify(_) => true,
        // Unknown kinds (and rescans after an overflow) may hide anything.
        EventKind::Any | EventKind::Other => true,
    };
    if !kind_counts {
        return false;
    }
    // An overflowed queue reports no paths: re-read to be sure.
    if event.paths.is_empty() || event.need_rescan() {
        return true;
    }
    let refs = git_dir.join("refs");
    let packed = git_dir.join("packed-refs");
    event.paths.iter().any(|p| p.starts_with(&refs) || *p == packed)
}

impl Db {
    /// Subscribes to `branch`'s head.
    pub fn watch(&self, branch: &str) -> Result<HeadWatch, Error> {
        let refs_dir = self.git_dir().join("refs");
        let git_dir = self.git_dir().to_owned();
        let (wake, woken) = mpsc::channel::<Wake>();
        let events = wake.clone();
        let filter_dir = git_dir.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let counts = match &event {
                    Ok(event) => moves_a_ref(event, &filter_dir),
                    // An error (a queue overflow) may have hidden a change.
                    Err(_) => true,
                };
                if counts {
                    let _ = events.send(Wake::Changed);
                }
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
        let reads = Arc::new(AtomicU64::new(0));
        let counter = reads.clone();
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let _watcher = watcher;
                let repo = repo.to_thread_local();
                let mut last = initial;
                loop {
                    match woken.recv_timeout(POLL) {
                        Ok(Wake::Changed) | Err(RecvTimeoutError::Timeout) => {}
                        Ok(Wake::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                    }
                    // Coalesce a burst of events into one read.
                    while let Ok(wake) = woken.try_recv() {
                        if matches!(wake, Wake::Stop) {
                            return;
                        }
                    }
                    let read = || {
                        counter.fetch_add(1, Ordering::Relaxed);
                        crate::refs::read(&repo, &branch)
                    };
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
        Ok(HeadWatch { heads, initial, wake, reads })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, AccessMode, CreateKind, RemoveKind, RenameMode};

    fn event(kind: EventKind, path: &str) -> notify::Event {
        notify::Event::new(kind).add_path(PathBuf::from(path))
    }

    #[test]
    fn only_changes_under_refs_or_packed_refs_count() {
        let git = Path::new("/db");
        let open = EventKind::Access(AccessKind::Open(AccessMode::Read));
        assert!(!moves_a_ref(&event(open, "/db/refs/heads/master"), git));
        let close = EventKind::Access(AccessKind::Close(AccessMode::Read));
        assert!(!moves_a_ref(&event(close, "/db/refs/heads/master"), git));
        let renamed = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        assert!(moves_a_ref(&event(renamed, "/db/refs/heads/master"), git));
        assert!(moves_a_ref(&event(renamed, "/db/packed-refs"), git));
        assert!(!moves_a_ref(&event(renamed, "/db/index"), git));
        assert!(!moves_a_ref(&event(EventKind::Create(CreateKind::File), "/db/objects/ab"), git));
        assert!(moves_a_ref(&event(EventKind::Remove(RemoveKind::File), "/db/refs/heads/x"), git));
        let atime = EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime));
        assert!(!moves_a_ref(&event(atime, "/db/refs/heads/master"), git));
        assert!(moves_a_ref(&notify::Event::new(EventKind::Any), git), "no paths: re-read");
    }
}
