//! Which shared directories containers use: the sources of their bind mounts, as the guest's
//! dockerd tells them (its API over the channel), followed through its events as containers
//! start and stop.
//!
//! The host watches only these for file events, not every share: a home directory holds tens
//! of thousands of directories (and inotify needs a watch for each), of which a container
//! mounts one project.

use std::time::Duration;

use cairn_channel::Session;
use tokio::io::AsyncBufReadExt;
use tokio::sync::watch;

/// dockerd's events of containers starting and ending (`filters` JSON, URL-encoded).
const EVENTS: &str = "/events?filters=%7B%22type%22%3A%5B%22container%22%5D%2C%22event%22%3A%5B%22start%22%2C%22die%22%5D%7D";
/// Pause before asking again when the engine or the session is away.
const RETRY: Duration = Duration::from_secs(1);

/// Calls `roots` with the directories containers bind-mount from inside `shares` (the
/// smallest set that covers them) now, and whenever a container starts or ends, for ever.
pub async fn follow(
    mut sessions: watch::Receiver<Option<Session>>,
    shares: Vec<String>,
    roots: impl Fn(Vec<String>),
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
            if let Some(sources) = bind_sources(&session).await {
                roots(covering(&sources, &shares));
            }
            let mut line = String::new();
            while events.read_line(&mut line).await.is_ok_and(|n| n > 0) {
                line.clear();
                if let Some(sources) = bind_sources(&session).await {
                    roots(covering(&sources, &shares));
                }
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// The bind mounts' sources of the running containers.
async fn bind_sources(session: &Session) -> Option<Vec<String>> {
    let containers = crate::engine_api::get_json(session, "/containers/json").await?;
    let sources = containers
        .as_array()?
        .iter()
        .flat_map(|c| c["Mounts"].as_array().cloned().unwrap_or_default())
        .filter(|m| m["Type"] == "bind")
        .filter_map(|m| m["Source"].as_str().map(str::to_owned))
        .collect();
    Some(sources)
}

/// The sources inside a share, without those inside another, sorted.
pub fn covering(sources: &[String], shares: &[String]) -> Vec<String> {
    let inside = cairn_schema::shares::inside;
    let mut wanted: Vec<String> = sources
        .iter()
        .map(|s| s.trim_end_matches('/').to_owned())
        .filter(|s| shares.iter().any(|share| inside(s, share)))
        .collect();
    wanted.sort();
    wanted.dedup();
    let all = wanted.clone();
    wanted.retain(|s| !all.iter().any(|other| other != s && inside(s, other)));
    wanted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smallest_cover_inside_the_shares() {
        let shares = vec!["/home/me".to_owned(), "/tmp".to_owned()];
        let sources: Vec<String> =
            ["/home/me/src/app", "/home/me/src/app/web", "/tmp/x/", "/var/lib/thing", "/home/mex"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
        assert_eq!(covering(&sources, &shares), ["/home/me/src/app", "/tmp/x"]);
    }
}
