//! File events of the shared directories, for the guest: notify (inotify) watches on the host
//! what containers bind-mount from the shares ([`super::bind_mounts`]), and what changed goes
//! to the agent as lines of a `file-events` stream ([`cairn_channel::file_events`]), which
//! makes the guest's own inotify see them.
//!
//! - Only changes of content and names are sent: created, written, renamed, removed. Changes
//!   of metadata alone are not, and that is what breaks the loop: the agent raises a guest
//!   event by setting a file's times to what they are, which virtiofsd does on the host too.
//! - Bursts are coalesced: the events of `GATHER` (50 ms) after the first go as one batch, one line a
//!   path, at most `MAX_BATCH` (4096) of them; more are dropped and counted.
//! - $CAIRN_HOME, hidden in the guest, says nothing of itself.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn_channel::file_events::{Change, SERVICE};
use cairn_channel::{Service, Session};
use notify::event::{EventKind, ModifyKind, RenameMode};
use notify::{RecursiveMode, Watcher};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};

/// How long a batch gathers after its first event.
const GATHER: Duration = Duration::from_millis(50);
/// The most paths in one batch.
const MAX_BATCH: usize = 4096;
/// Events waiting for the sender; the notify thread drops (and counts) beyond.
const QUEUE: usize = 65_536;

/// What the watcher has done, for `cairn status`.
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub dropped: AtomicU64,
}

/// The watch of one boot's shares. Dropping it stops the watch and the sender.
pub struct FileEvents {
    /// The directories watched now (the thread that owns the watcher ends with this sender).
    _roots: std::sync::mpsc::Sender<Vec<String>>,
    follower: tokio::task::JoinHandle<()>,
    sender: tokio::task::JoinHandle<()>,
    pub counters: Arc<Counters>,
    /// What is watched, for the status.
    pub watched: Arc<std::sync::Mutex<Vec<String>>>,
}

impl std::fmt::Debug for FileEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileEvents").field("counters", &self.counters).finish()
    }
}

impl Drop for FileEvents {
    fn drop(&mut self) {
        self.sender.abort();
        self.follower.abort();
    }
}

impl FileEvents {
    /// Watches what containers mount of `shares` (recursively) and sends its changes,
    /// outside `hidden`, to the agent of the current session.
    pub fn start(
        shares: &[String],
        hidden: &[String],
        sessions: watch::Receiver<Option<Session>>,
        runtime: &tokio::runtime::Handle,
    ) -> Result<FileEvents, String> {
        let counters = Arc::new(Counters::default());
        let (tx, rx) = mpsc::channel(QUEUE);
        let hidden = hidden.to_vec();
        let dropped = counters.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            for change in changes(event) {
                if hidden.iter().any(|h| cairn_schema::shares::inside(change.path(), h)) {
                    continue;
                }
                if tx.try_send(change).is_err() {
                    dropped.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .map_err(|e| format!("starting the watch: {e}"))?;
        let watched = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (roots, wanted) = std::sync::mpsc::channel::<Vec<String>>();
        let shown = watched.clone();
        std::thread::Builder::new()
            .name("file-watch".into())
            .spawn(move || keep_watching(watcher, wanted, &shown))
            .map_err(|e| format!("a thread: {e}"))?;
        let to_watch = roots.clone();
        let follower = runtime.spawn(super::bind_mounts::follow(
            sessions.clone(),
            shares.to_vec(),
            move |dirs| {
                let _ = to_watch.send(dirs);
            },
        ));
        let sender = runtime.spawn(send(rx, sessions, counters.clone()));
        Ok(FileEvents { _roots: roots, follower, sender, counters, watched })
    }
}

/// Owns the watcher: watches each set of directories it is sent (a recursive watch walks the
/// tree, which is no work for the async runtime), until the sender goes.
fn keep_watching(
    mut watcher: notify::RecommendedWatcher,
    wanted: std::sync::mpsc::Receiver<Vec<String>>,
    shown: &std::sync::Mutex<Vec<String>>,
) {
    let mut now: Vec<String> = Vec::new();
    for dirs in wanted {
        for gone in now.iter().filter(|d| !dirs.contains(d)) {
            let _ = watcher.unwatch(std::path::Path::new(gone));
        }
        let mut kept = Vec::new();
        for dir in &dirs {
            let ok = now.contains(dir)
                || watcher.watch(std::path::Path::new(dir), RecursiveMode::Recursive).is_ok();
            if ok {
                kept.push(dir.clone());
            } else {
                tracing::warn!(%dir, "no file events for it: the watch could not be set up (fs.inotify.max_user_watches?)");
            }
        }
        now = kept;
        if let Ok(mut shown) = shown.lock() {
            shown.clone_from(&now);
        }
    }
}

/// The changes one notify event says, if it says any the guest cares for.
fn changes(event: notify::Event) -> Vec<Change> {
    let path = |p: &PathBuf| p.to_string_lossy().into_owned();
    let all = |f: fn(String) -> Change| event.paths.iter().map(|p| f(path(p))).collect();
    match event.kind {
        EventKind::Create(_)
        | EventKind::Modify(ModifyKind::Data(_))
        | EventKind::Modify(ModifyKind::Any)
        | EventKind::Modify(ModifyKind::Name(RenameMode::To)) => all(Change::Changed),
        EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(RenameMode::From)) => {
            all(Change::Removed)
        }
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => match event.paths.as_slice() {
            [from, to] => vec![Change::Removed(path(from)), Change::Changed(path(to))],
            _ => Vec::new(),
        },
        EventKind::Modify(ModifyKind::Name(_)) => all(Change::Changed),
        // Metadata alone (the agent's own way of raising events), reads, opens and closes.
        _ => Vec::new(),
    }
}

/// Gathers batches and writes them to the agent, opening the stream on the session of the
/// moment; with no session a batch is dropped (no guest is there to watch).
async fn send(
    mut rx: mpsc::Receiver<Change>,
    sessions: watch::Receiver<Option<Session>>,
    counters: Arc<Counters>,
) {
    let mut stream: Option<cairn_channel::Stream> = None;
    while let Some(first) = rx.recv().await {
        let mut batch: BTreeMap<String, Change> = BTreeMap::new();
        let mut extra = 0u64;
        batch.insert(first.path().to_owned(), first);
        let until = tokio::time::Instant::now() + GATHER;
        while let Ok(Some(change)) = tokio::time::timeout_at(until, rx.recv()).await {
            if batch.len() < MAX_BATCH || batch.contains_key(change.path()) {
                batch.insert(change.path().to_owned(), change);
            } else {
                extra += 1;
            }
        }
        counters.dropped.fetch_add(extra, Ordering::Relaxed);
        let text: String = batch.values().map(Change::line).collect();
        if stream.is_none() {
            let session = sessions.borrow().clone().filter(|s| !s.is_closed());
            if let Some(session) = session {
                stream = session.open(&Service::new(SERVICE, &[])).await.ok();
            }
        }
        let Some(open) = &mut stream else {
            counters.dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
            continue;
        };
        match open.write_all(text.as_bytes()).await {
            Ok(()) => {
                let _ = open.flush().await;
                counters.sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            Err(_) => {
                stream = None;
                counters.dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, MetadataKind, RemoveKind};

    fn event(kind: EventKind, paths: &[&str]) -> notify::Event {
        let mut event = notify::Event::new(kind);
        event.paths = paths.iter().map(PathBuf::from).collect();
        event
    }

    #[test]
    fn content_and_names_count_metadata_does_not() {
        let changed = |p: &str| Change::Changed(p.into());
        let removed = |p: &str| Change::Removed(p.into());
        let create = event(EventKind::Create(CreateKind::File), &["/s/a"]);
        assert_eq!(changes(create), [changed("/s/a")]);
        let write = event(EventKind::Modify(ModifyKind::Data(DataChange::Content)), &["/s/a"]);
        assert_eq!(changes(write), [changed("/s/a")]);
        let gone = event(EventKind::Remove(RemoveKind::File), &["/s/a"]);
        assert_eq!(changes(gone), [removed("/s/a")]);
        let renamed =
            event(EventKind::Modify(ModifyKind::Name(RenameMode::Both)), &["/s/a", "/s/b"]);
        assert_eq!(changes(renamed), [removed("/s/a"), changed("/s/b")]);
        let times =
            event(EventKind::Modify(ModifyKind::Metadata(MetadataKind::WriteTime)), &["/s/a"]);
        assert!(changes(times).is_empty(), "the agent's own touch must not come back");
        let closed = event(EventKind::Access(notify::event::AccessKind::Any), &["/s/a"]);
        assert!(changes(closed).is_empty());
    }
}
