//! The Docker engine in the guest: containerd, then dockerd on it, run with
//! /etc/docker/daemon.json and the proxy keys of the commit being applied.
//!
//! A change is applied the least disruptive way dockerd allows: SIGHUP when every changed
//! daemon.json key is one dockerd reloads (the schema's apply classes) and the environment is
//! the same, a restart otherwise; containerd runs on its own, so a restart of dockerd leaves
//! it (and the containers it runs) alone. A file dockerd refuses is never fatal: a refused
//! reload leaves dockerd on the file it had, a failed start brings dockerd back with the last
//! file it ran with, and either way the file in /etc/docker is put back and the error is
//! reported. Before a running dockerd is restarted, dockerd itself checks the file (`dockerd
//! --validate`): the running daemon is not stopped for a file the new one would refuse. A
//! daemon that dies on its own is started again by a watchdog.

mod process;
mod settings;
mod validate;

use std::path::Path;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub use process::write_atomically;
use process::{failure, signal, Log};
pub use settings::Settings;

use super::{children, say};
use crate::report::{Dockerd, Outcome};

/// Where the image puts dockerd; a base image has none.
pub const DOCKERD: &str = "/usr/bin/dockerd";
const CONTAINERD: &str = "/usr/bin/containerd";
/// dockerd's API, which the control plane's docker.sock reaches through the channel: the
/// engine listens on no network address, where any container could reach it.
pub const SOCKET: &str = "/var/run/docker.sock";
const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
const CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";
/// containerd's own defaults, less the CRI plugin (Kubernetes' API: dockerd does not use it,
/// and without CNI configuration it only logs errors).
const CONTAINERD_SETTINGS: &str =
    "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n";

/// How long dockerd may take to answer its first ping (under TCG, seconds).
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(180);
/// How long containerd may take to open its socket.
const CONTAINERD_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a reload may take to announce its outcome before silence counts as success.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct Running {
    containerd: Option<Child>,
    child: Option<Child>,
    /// What the running dockerd was started or last reloaded with.
    settings: Option<Settings>,
    /// The last settings dockerd ran with.
    good: Option<Settings>,
    /// For the report: running, on the previous file, or why not.
    state: Dockerd,
}

/// The engine, shared by the apply loop and the watchdog that restarts a crashed daemon.
#[derive(Debug, Clone)]
pub struct Engine {
    running: Arc<Mutex<Running>>,
    /// dockerd's lines, and containerd's.
    log: Arc<Log>,
    containerd_log: Arc<Log>,
}

/// Whether this boot runs an engine: set once one is made, and never unset (a crashed dockerd
/// is started again by the watchdog). Connections to dockerd's socket that arrive before it
/// listens wait for it rather than fail.
static EXPECTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether dockerd runs in this boot or is on its way (see [`EXPECTED`]).
pub fn expected() -> bool {
    EXPECTED.load(std::sync::atomic::Ordering::Relaxed)
}

impl Engine {
    /// The image's engine, or None in an image without dockerd.
    pub fn new() -> Option<Engine> {
        if !Path::new(DOCKERD).exists() {
            return None;
        }
        EXPECTED.store(true, std::sync::atomic::Ordering::Relaxed);
        let engine = Engine {
            running: Arc::new(Mutex::new(Running::default())),
            log: Arc::new(Log::default()),
            containerd_log: Arc::new(Log::default()),
        };
        let watched = engine.clone();
        let spawned =
            std::thread::Builder::new().name("dockerd-watch".into()).spawn(move || watched.watch());
        if let Err(e) = spawned {
            say(&format!("dockerd is not watched: {e}"));
        }
        Some(engine)
    }

    /// Starts containerd on a thread of its own, so that it comes up while the agent mounts
    /// /Database and reads the commit; the first [`Engine::apply`] waits for it.
    pub fn start_containerd_early(&self) {
        let engine = self.clone();
        let spawned =
            std::thread::Builder::new().name("containerd-start".into()).spawn(move || {
                let mut running = engine.lock();
                if let Err(e) = engine.ensure_containerd(&mut running) {
                    say(&e.to_string());
                }
            });
        if let Err(e) = spawned {
            say(&format!("containerd starts with dockerd: {e}"));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// dockerd's pid and state, for the report.
    pub fn describe(&self) -> (u32, Dockerd) {
        let running = self.lock();
        (running.child.as_ref().map_or(0, Child::id), running.state.clone())
    }

    /// Makes dockerd run with `wanted`, writing it to `file`.
    pub fn apply(&self, wanted: Settings, file: &Path) -> Outcome {
        let mut running = self.lock();
        let alive =
            running.child.as_mut().is_some_and(|c| matches!(children::try_wait(c), Ok(None)));
        if !alive {
            // Ended (and reaped just now), or never started.
            running.child = None;
        }
        let outcome = match running.settings.clone() {
            Some(current) if alive && current == wanted => return Outcome::Applied,
            Some(current) if alive && !current.restart_for(&wanted) => {
                self.reload(&mut running, &current, wanted, file)
            }
            // A restart: dockerd checks the file before the running one is stopped for it. Not
            // before a first start nor a reload: dockerd's start and its (all or nothing)
            // reload make the same check and say the same, and under TCG another start of an
            // 80 MB Go program costs seconds.
            Some(current) if alive => match validate::check(&wanted) {
                Err(why) => {
                    running.state = Dockerd::OnPrevious(why.clone());
                    Outcome::Failed(format!(
                        "dockerd --validate refused it (changed: {}): {why}; it runs on the \
                         previous daemon.json",
                        current.changed_keys(&wanted).join(", ")
                    ))
                }
                Ok(()) => {
                    self.stop(&mut running);
                    self.start_or_fall_back(&mut running, Some(current), wanted, file)
                }
            },
            current => {
                let previous = current.or_else(|| running.good.clone());
                self.start_or_fall_back(&mut running, previous, wanted, file)
            }
        };
        if let Outcome::Failed(why) = &outcome {
            say(&format!("dockerd: {why}"));
        }
        outcome
    }

    fn reload(
        &self,
        running: &mut Running,
        current: &Settings,
        wanted: Settings,
        file: &Path,
    ) -> Outcome {
        if let Err(e) = write_atomically(file, &wanted.json) {
            return Outcome::Failed(e.to_string());
        }
        let since = self.log.seq();
        // dockerd stamps its events with the same (guest) clock.
        let signalled = std::time::SystemTime::now();
        if let Some(child) = &running.child {
            signal(child, libc::SIGHUP);
        }
        let deadline = Instant::now() + RELOAD_TIMEOUT;
        while Instant::now() < deadline {
            let lines = self.log.since(since);
            if process::reloaded_since(signalled) {
                break;
            }
            if lines.iter().any(|l| reload_failed(l)) {
                let why = failure(&lines);
                let _ = write_atomically(file, &current.json);
                running.state = Dockerd::OnPrevious(why.clone());
                return Outcome::Failed(format!(
                    "dockerd refused to reload it (changed: {}): {why}; it runs on the previous \
                     daemon.json",
                    current.changed_keys(&wanted).join(", ")
                ));
            }
            self.log.wait(Duration::from_millis(200));
        }
        running.settings = Some(wanted.clone());
        running.good = Some(wanted);
        running.state = Dockerd::Reloaded;
        Outcome::Applied
    }

    fn start_or_fall_back(
        &self,
        running: &mut Running,
        previous: Option<Settings>,
        wanted: Settings,
        file: &Path,
    ) -> Outcome {
        if let Err(e) = write_atomically(file, &wanted.json) {
            return Outcome::Failed(e.to_string());
        }
        let why = match self.start(running, &wanted) {
            Ok(()) => {
                running.state =
                    if running.good.is_some() { Dockerd::Restarted } else { Dockerd::Running };
                running.settings = Some(wanted.clone());
                running.good = Some(wanted);
                return Outcome::Applied;
            }
            Err(why) => why.to_string(),
        };
        // The last file dockerd ran with, or an empty one (only the guest defaults).
        let fallback =
            previous.unwrap_or(Settings { json: b"{}\n".to_vec(), env: wanted.env.clone() });
        let keys = fallback.changed_keys(&wanted).join(", ");
        let _ = write_atomically(file, &fallback.json);
        match self.start(running, &fallback) {
            Ok(()) => {
                running.state = Dockerd::OnPrevious(why.clone());
                running.settings = Some(fallback.clone());
                running.good = Some(fallback);
                Outcome::Failed(format!(
                    "dockerd did not start with it (changed: {keys}): {why}; it runs on the \
                     previous daemon.json"
                ))
            }
            Err(again) => {
                running.state = Dockerd::Stopped(why.clone());
                running.settings = None;
                Outcome::Failed(format!(
                    "dockerd did not start with it (changed: {keys}): {why}; nor with the \
                     previous daemon.json: {again}"
                ))
            }
        }
    }

    /// Starts dockerd with `settings` (and containerd first, unless it runs) and waits until
    /// dockerd answers a ping.
    fn start(&self, running: &mut Running, settings: &Settings) -> Result<(), crate::Error> {
        self.ensure_containerd(running)?;
        let _ = std::fs::remove_file(SOCKET);
        let mut command = Command::new(DOCKERD);
        command
            .args(settings.flags())
            .env_clear()
            .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
            // runc cannot pivot_root out of an initramfs: it moves the root and chroots.
            .env("DOCKER_RAMDISK", "1")
            .envs(&settings.env);
        let since = self.log.seq();
        let (mut child, drained) =
            process::spawn_logged(&mut command, "dockerd", &self.log, "/var/log/dockerd.log")?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = children::try_wait(&mut child) {
                // Its last lines, unless a child it left behind still holds the pipes.
                for _ in 0..2 {
                    let _ = drained.recv_timeout(Duration::from_secs(2));
                }
                let why = failure(&self.log.since(since));
                return Err(crate::Error::DockerdExited { why, status: status.to_string() });
            }
            if process::ping() {
                say(&format!("dockerd {} answers", child.id()));
                running.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                signal(&child, libc::SIGKILL);
                let _ = children::wait(&mut child);
                return Err(crate::Error::DockerdSilent(START_TIMEOUT));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Stops dockerd (SIGTERM, then SIGKILL after its shutdown timeout and some).
    fn stop(&self, running: &mut Running) {
        let Some(mut child) = running.child.take() else { return };
        signal(&child, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(40);
        while matches!(children::try_wait(&mut child), Ok(None)) {
            if Instant::now() > deadline {
                signal(&child, libc::SIGKILL);
                let _ = children::wait(&mut child);
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        running.settings = None;
    }

    /// Starts containerd unless it runs, and waits for its socket.
    fn ensure_containerd(&self, running: &mut Running) -> Result<(), crate::Error> {
        if let Some(child) = running.containerd.as_mut() {
            if matches!(children::try_wait(child), Ok(None)) {
                return Ok(());
            }
            running.containerd = None;
        }
        write_atomically(Path::new(CONTAINERD_CONFIG), CONTAINERD_SETTINGS.as_bytes())?;
        let _ = std::fs::remove_file(CONTAINERD_SOCKET);
        let mut command = Command::new(CONTAINERD);
        command
            .args(["--config", CONTAINERD_CONFIG])
            .env_clear()
            .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin");
        let since = self.containerd_log.seq();
        let (mut child, _) = process::spawn_logged(
            &mut command,
            "containerd",
            &self.containerd_log,
            "/var/log/containerd.log",
        )?;
        if !process::wait_for_path(CONTAINERD_SOCKET, CONTAINERD_TIMEOUT) {
            signal(&child, libc::SIGKILL);
            let _ = children::wait(&mut child);
            let why = failure(&self.containerd_log.since(since));
            return Err(crate::Error::ContainerdSilent { socket: CONTAINERD_SOCKET, why });
        }
        say(&format!("containerd {} listens", child.id()));
        running.containerd = Some(child);
        Ok(())
    }

    /// Starts again a daemon that died on its own: containerd, and dockerd with the last
    /// settings it ran with.
    fn watch(&self) {
        loop {
            std::thread::sleep(Duration::from_secs(2));
            let mut running = self.lock();
            let containerd_died = running
                .containerd
                .as_mut()
                .is_some_and(|c| !matches!(children::try_wait(c), Ok(None)));
            if containerd_died {
                running.containerd = None;
                let why = failure(&self.containerd_log.last(20));
                say(&format!("containerd stopped on its own: {why}; starting it again"));
                if let Err(e) = self.ensure_containerd(&mut running) {
                    say(&e.to_string());
                }
            }
            let Some(child) = running.child.as_mut() else { continue };
            let Ok(Some(status)) = children::try_wait(child) else { continue };
            running.child = None;
            running.settings = None;
            let why = failure(&self.log.last(20));
            say(&format!("dockerd stopped on its own ({status}): {why}; starting it again"));
            if let Some(good) = running.good.clone() {
                match self.start(&mut running, &good) {
                    Ok(()) => {
                        running.settings = Some(good);
                        running.state = Dockerd::Recovered(why);
                    }
                    Err(e) => running.state = Dockerd::Stopped(e.to_string()),
                }
            }
        }
    }
}

/// Whether a line of dockerd's says a reload failed: its errors about the configuration
/// ("unable to configure the Docker daemon with file ...", "file configuration validation
/// failed: ...", "Error reconfiguring the daemon: ..."), not whatever else it logs meanwhile.
fn reload_failed(line: &str) -> bool {
    (line.contains("level=error") || line.contains("level=fatal"))
        && ["configur", "validat", "reload"].iter().any(|word| line.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configuration_errors_fail_a_reload() {
        assert!(reload_failed(
            r#"level=error msg="file configuration validation failed: specified default runtime 'x' does not exist""#
        ));
        assert!(reload_failed(r#"level=error msg="Error reconfiguring the daemon: ...""#));
        assert!(!reload_failed(
            r#"level=error msg="stream copy error: reading from a closed fifo""#
        ));
        assert!(!reload_failed(r#"level=info msg="Reloaded configuration: {}""#));
    }
}
