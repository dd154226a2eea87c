//! What changes while the page is open, as server-sent events: master's head (the same watch
//! of the repository that `cairn up` follows: a commit by the CLI, by plain git or from
//! /Database in the guest shows within a second), and the VM (its state, backend, the commit
//! it applied, a commit it attempted and refused with the error), from `cairn up`'s status
//! file, watched with inotify and looked at every few seconds (a killed `cairn up` writes
//! nothing on its way out).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use cairn_db::{Db, CONFIG_BRANCH};
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::AppState;
use crate::up::status::{RunDir, Status, VmState};
use crate::Error;

/// One change for the page.
#[derive(Debug, Clone)]
pub enum Live {
    /// master's new head (empty: the branch is gone).
    Head(String),
    /// The VM as [`vm`] describes it.
    Vm(Value),
}

/// How often the VM's state is looked at without an event.
const VM_LOOK: Duration = Duration::from_secs(2);

/// The VM as the page shows it: `stopped` whenever `cairn up` does not run.
pub fn vm(run: &RunDir) -> Value {
    let up = crate::up::instance::running(&run.pid());
    let mut status = Status::load(&run.status()).unwrap_or_default();
    if up.is_none() {
        status.vm = VmState::Stopped;
    }
    let running = up.is_some();
    let error = status
        .last_error
        .as_ref()
        .map(|e| json!({ "key": e.key, "message": e.message, "commit": e.commit }));
    json!({
        "up": running,
        "state": status.vm.as_str(),
        "backend": running.then(|| status.backend.map(|b| b.as_str())).flatten(),
        "accel": running.then(|| status.accel.map(|a| a.as_str())).flatten(),
        "applied": running.then_some(status.applied_commit.clone()).flatten(),
        "attempted": running.then_some(status.attempted_commit.clone()).flatten(),
        "error": running.then_some(error).flatten(),
    })
}

/// Starts the watches that feed `live` for as long as the process runs.
pub fn watch(db: &Arc<Db>, run: &RunDir, live: broadcast::Sender<Live>) -> Result<(), Error> {
    let heads = db.watch(CONFIG_BRANCH)?;
    let to_page = live.clone();
    let thread = |e| Error::io(std::path::Path::new("a watch thread"), e);
    std::thread::Builder::new()
        .name("ui heads".into())
        .spawn(move || {
            while let Some(head) = heads.recv() {
                let _ = to_page.send(Live::Head(head.map(|h| h.to_string()).unwrap_or_default()));
            }
        })
        .map_err(thread)?;
    let run = run.clone();
    std::fs::create_dir_all(&run.0).map_err(|e| Error::io(&run.0, e))?;
    let (woken, wake) = std::sync::mpsc::channel::<()>();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = woken.send(());
        }
    });
    std::thread::Builder::new()
        .name("ui vm".into())
        .spawn(move || {
            // Kept alive with the thread; without inotify the periodic look still works.
            let _watcher = watcher.ok().and_then(|mut w| {
                use notify::Watcher;
                w.watch(&run.0, notify::RecursiveMode::NonRecursive).ok().map(|()| w)
            });
            let mut last = vm(&run);
            loop {
                let _ = wake.recv_timeout(VM_LOOK);
                while wake.try_recv().is_ok() {}
                let now = vm(&run);
                if now != last {
                    last = now.clone();
                    if live.send(Live::Vm(now)).is_err() && live.receiver_count() == 0 {
                        // Nobody listens now; someone may later.
                    }
                }
            }
        })
        .map_err(thread)?;
    Ok(())
}

fn event(live: &Live) -> Event {
    match live {
        Live::Head(head) => Event::default().event("head").data(head),
        Live::Vm(vm) => Event::default().event("vm").data(vm.to_string()),
    }
}

/// `GET /api/events`: the head and the VM now, then every change.
pub async fn events(
    State(state): State<AppState>,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let receiver = state.live.subscribe();
    let now = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || {
            let head = state.db.head(CONFIG_BRANCH).ok().flatten().map(|h| h.to_string());
            vec![Live::Head(head.unwrap_or_default()), Live::Vm(vm(&state.run))]
        })
        .await
        .unwrap_or_default()
    };
    let stream = futures::stream::unfold(
        (now.into_iter(), receiver),
        |(mut first, mut receiver)| async move {
            if let Some(live) = first.next() {
                return Some((Ok(event(&live)), (first, receiver)));
            }
            loop {
                match receiver.recv().await {
                    Ok(live) => return Some((Ok(event(&live)), (first, receiver))),
                    // Fell behind: the page reloads what it shows on the next event anyway.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}
