//! The guest's running containers, as its dockerd says (its API over the channel), followed
//! through its events as containers start and end: the file events' watch follows the
//! directories they bind-mount ([`super::bind_mounts`]), auto-pause whether any runs.

use std::time::Duration;

use cairn_channel::Session;
use tokio::io::AsyncBufReadExt;
use tokio::sync::watch;

/// dockerd's events of containers starting and ending (`filters` JSON, URL-encoded).
const EVENTS: &str = "/events?filters=%7B%22type%22%3A%5B%22container%22%5D%2C%22event%22%3A%5B%22start%22%2C%22die%22%5D%7D";
/// Pause before asking again when the engine or the session is away.
const RETRY: Duration = Duration::from_secs(1);

/// Calls `running` with the running containers (`/containers/json`) now, and whenever one
/// starts or ends, for ever (across sessions: the guest reboots, the control plane adopts it).
pub async fn follow(
    mut sessions: watch::Receiver<Option<Session>>,
    running: impl Fn(&[serde_json::Value]),
) {
    loop {
        let session = sessions.borrow_and_update().clone().filter(|s| !s.is_closed());
        let Some(session) = session else {
            if sessions.changed().await.is_err() {
                return;
            }
            continue;
        };
        if let Some(mut events) = crate::engine_api::get_lines(&session, EVENTS).await {
            if let Some(list) = list(&session).await {
                running(&list);
            }
            let mut line = String::new();
            while events.read_line(&mut line).await.is_ok_and(|n| n > 0) {
                line.clear();
                if let Some(list) = list(&session).await {
                    running(&list);
                }
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

async fn list(session: &Session) -> Option<Vec<serde_json::Value>> {
    crate::engine_api::get_json(session, "/containers/json").await?.as_array().cloned()
}
