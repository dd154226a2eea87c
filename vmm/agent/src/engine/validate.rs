//! dockerd's own check of a daemon.json (`dockerd --validate`, since Docker 23): the engine
//! in the image says whether it would take a file before the agent gives it one, so that a
//! file it refuses costs neither a restart nor a reload, and the user reads dockerd's words.
//! The schema's checks come first, on the host; this one knows what only the engine knows
//! (a default runtime that is not among the runtimes, a key this version dropped).

use std::path::Path;
use std::process::Command;

use super::{children, process::write_atomically, Settings, DOCKERD};
use crate::apply::DAEMON_JSON;

/// Where the file under test is written (dockerd reads a path, not stdin).
const CANDIDATE: &str = "/etc/docker/daemon.json.candidate";

/// Ok if dockerd would run with `settings`, else dockerd's message.
pub fn check(settings: &Settings) -> Result<(), String> {
    write_atomically(Path::new(CANDIDATE), &settings.json).map_err(|e| e.to_string())?;
    let mut command = Command::new(DOCKERD);
    command
        .args(["--validate", "--config-file", CANDIDATE])
        .args(settings.flags())
        .env_clear()
        .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
        .envs(&settings.env);
    let output = children::run_output(&mut command).map_err(|e| format!("{DOCKERD}: {e}"))?;
    let _ = std::fs::remove_file(CANDIDATE);
    if output.status.success() {
        return Ok(());
    }
    Err(message(&String::from_utf8_lossy(&output.stderr)))
}

/// dockerd's complaint, on one line, naming the file the user knows.
fn message(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let text = if lines.is_empty() { "dockerd refused it".to_owned() } else { lines.join("; ") };
    text.replace(CANDIDATE, DAEMON_JSON)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_the_daemon_json_on_one_line() {
        let stderr = "unable to configure the Docker daemon with file /etc/docker/daemon.json.candidate: the following directives don't match any configuration option: bogus\n\n";
        assert_eq!(
            message(stderr),
            "unable to configure the Docker daemon with file /etc/docker/daemon.json: the \
             following directives don't match any configuration option: bogus"
        );
        assert_eq!(message(""), "dockerd refused it");
    }
}
