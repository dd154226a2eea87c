//! Which shared directories containers use: the sources of their bind mounts, as the guest's
//! dockerd tells them (its API over the channel), followed through its events as containers
//! start and stop.
//!
//! The host watches only these for file events, not every share: a home directory holds tens
//! of thousands of directories (and inotify needs a watch for each), of which a container
//! mounts one project.

use cairn_channel::Session;
use tokio::sync::watch;

/// Calls `roots` with the directories containers bind-mount from inside `shares` (the
/// smallest set that covers them) now, and whenever a container starts or ends, for ever.
pub async fn follow(
    sessions: watch::Receiver<Option<Session>>,
    shares: Vec<String>,
    roots: impl Fn(Vec<String>),
) {
    super::containers::follow(sessions, move |running| {
        roots(covering(&bind_sources(running), &shares));
    })
    .await
}

/// The bind mounts' sources of the running containers (dockerd's `/containers/json`).
fn bind_sources(running: &[serde_json::Value]) -> Vec<String> {
    running
        .iter()
        .flat_map(|c| c["Mounts"].as_array().cloned().unwrap_or_default())
        .filter(|m| m["Type"] == "bind")
        .filter_map(|m| m["Source"].as_str().map(str::to_owned))
        .collect()
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
