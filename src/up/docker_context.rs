//! The Docker CLI's own way to a remote engine: a context named `cairn` whose endpoint is the
//! control plane's docker.sock, created or updated when the VM first reports an engine, as
//! Colima and Docker Desktop do (`docker --context cairn ps`, or `docker context use cairn`
//! once). Only when the host has a docker CLI on PATH; `cairn docker-env` stays for
//! DOCKER_HOST. `cairn down` leaves the context: it then points at a socket that refuses, which
//! the CLI reports as an engine that is not running.

use std::path::Path;
use std::process::{Command, Stdio};

/// The context's name.
pub const NAME: &str = "cairn";

/// What became of the context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Updated,
    Current,
    /// No docker CLI on PATH: nothing to configure.
    NoCli,
    Failed(String),
}

impl Outcome {
    /// Whether the context now points at the socket.
    pub fn points_here(&self) -> bool {
        matches!(self, Outcome::Created | Outcome::Updated | Outcome::Current)
    }

    /// One line for `cairn up`'s progress.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Created => format!("docker context {NAME} created (docker --context {NAME})"),
            Outcome::Updated => format!("docker context {NAME} updated (docker --context {NAME})"),
            Outcome::Current => {
                format!("docker context {NAME} is current (docker --context {NAME})")
            }
            Outcome::NoCli => format!("no docker CLI on PATH: no docker context {NAME}"),
            Outcome::Failed(why) => format!("docker context {NAME}: {why}"),
        }
    }
}

fn docker(args: &[&str]) -> std::io::Result<std::process::Output> {
    Command::new("docker")
        .args(args)
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .stdin(Stdio::null())
        .output()
}

/// Makes the `cairn` context point at `socket`.
pub fn ensure(socket: &Path, home: &Path) -> Outcome {
    let host = format!("unix://{}", socket.display());
    let inspected =
        match docker(&["context", "inspect", NAME, "--format", "{{.Endpoints.docker.Host}}"]) {
            Ok(out) => out,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Outcome::NoCli,
            Err(e) => return Outcome::Failed(format!("docker: {e}")),
        };
    let current = String::from_utf8_lossy(&inspected.stdout).trim().to_owned();
    if inspected.status.success() && current == host {
        return Outcome::Current;
    }
    let description = format!("cairn's VM ({})", home.display());
    let endpoint = format!("host={host}");
    let (verb, outcome) = if inspected.status.success() {
        ("update", Outcome::Updated)
    } else {
        ("create", Outcome::Created)
    };
    match docker(&["context", verb, NAME, "--description", &description, "--docker", &endpoint]) {
        Ok(out) if out.status.success() => outcome,
        Ok(out) => Outcome::Failed(format!(
            "docker context {verb}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Outcome::Failed(format!("docker: {e}")),
    }
}
