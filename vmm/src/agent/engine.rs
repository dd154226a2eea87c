//! The Docker engine in the guest: dockerd (which starts its own containerd) run with
//! /etc/docker/daemon.json and the proxy keys of the commit being applied.
//!
//! A change is applied the least disruptive way dockerd allows: SIGHUP when every changed
//! daemon.json key is one dockerd reloads (the schema's apply classes) and the environment is
//! the same, a restart otherwise. A file dockerd refuses is never fatal: a refused reload
//! leaves dockerd on the file it had, a failed start brings dockerd back with the last file it
//! ran with, and either way the file in /etc/docker is put back and the error is reported.

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cairn_schema::ApplyClass;
use serde_json::{Map, Value as Json};

use super::{children, say};
use crate::report::Outcome;

/// Where the image puts dockerd; a base image has none.
pub const DOCKERD: &str = "/usr/bin/dockerd";
/// The engine's API port on the guest's interface, where the control plane's docker.sock
/// forwards to.
pub const API_PORT: u16 = 2375;
const SOCKET: &str = "/var/run/docker.sock";
const LOG: &str = "/var/log/dockerd.log";

/// What the guest's kernel lacks for dockerd's defaults (no bridge or netfilter modules in
/// the image, no overlayfs on an initramfs root): given as flags for every key the user's
/// daemon.json leaves out (dockerd refuses a key given both ways).
const GUEST_DEFAULTS: &[(&str, &str)] =
    &[("storage-driver", "vfs"), ("iptables", "false"), ("bridge", "none")];

/// How long dockerd may take to answer its first ping (under TCG, seconds).
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a reload may take to announce its outcome before silence counts as success.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// What dockerd runs with: the daemon.json bytes and the environment from the proxy keys.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Settings {
    pub json: Vec<u8>,
    pub env: BTreeMap<String, String>,
}

impl Settings {
    /// The settings of the commit whose tree is `ro`.
    pub fn from_commit(ro: &Path) -> Result<Settings, String> {
        let read = |path: &str| {
            std::fs::read(ro.join(path)).map_err(|e| format!("reading {path} from /Database: {e}"))
        };
        let json = read("etc/docker/daemon.json")?;
        let mut env = BTreeMap::new();
        let text = |path: &str| read(path).map(|b| String::from_utf8_lossy(&b).trim().to_owned());
        for (path, name) in [("proxy/http", "HTTP_PROXY"), ("proxy/https", "HTTPS_PROXY")] {
            let value = text(path).unwrap_or_default();
            if !value.is_empty() {
                env.insert(name.to_owned(), value.clone());
                env.insert(name.to_lowercase(), value);
            }
        }
        let exclude = text("proxy/exclude").unwrap_or_default();
        let hosts: Vec<&str> = exclude
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|h| !h.is_empty())
            .collect();
        if !hosts.is_empty() {
            env.insert("NO_PROXY".into(), hosts.join(","));
            env.insert("no_proxy".into(), hosts.join(","));
        }
        Ok(Settings { json, env })
    }

    fn keys(&self) -> Map<String, Json> {
        serde_json::from_slice(&self.json).unwrap_or_default()
    }

    /// dockerd's flags: its API on the unix socket and the guest's TCP port, and the guest
    /// defaults for the keys the file leaves out.
    fn flags(&self) -> Vec<String> {
        let keys = self.keys();
        let mut flags = vec![
            format!("--host=unix://{SOCKET}"),
            format!("--host=tcp://0.0.0.0:{API_PORT}"),
            // Without it dockerd waits 15 s to warn about a plain-TCP API; the port is only
            // reachable through the control plane's socket on the host.
            "--tls=false".to_owned(),
        ];
        for (key, value) in GUEST_DEFAULTS {
            if !keys.contains_key(*key) {
                flags.push(format!("--{key}={value}"));
            }
        }
        flags
    }

    /// Whether going from `self` to `new` takes a restart rather than a reload.
    fn restart_for(&self, new: &Settings) -> bool {
        self.env != new.env
            || cairn_schema::daemon::change_class(&self.json, &new.json) > ApplyClass::DaemonReload
    }

    /// The top-level keys that differ, for saying which key dockerd refused.
    fn changed_keys(&self, new: &Settings) -> Vec<String> {
        let (old, new_keys) = (self.keys(), new.keys());
        let mut names: Vec<String> = old
            .keys()
            .chain(new_keys.keys())
            .filter(|k| old.get(*k) != new_keys.get(*k))
            .cloned()
            .collect();
        names.sort();
        names.dedup();
        if self.env != new.env {
            names.push("proxy".into());
        }
        names
    }
}

/// The last lines dockerd wrote, numbered, for telling what a reload or a start did.
#[derive(Debug, Default)]
struct Log {
    lines: Mutex<(u64, std::collections::VecDeque<String>)>,
    grew: Condvar,
}

const LOG_LINES: usize = 200;

impl Log {
    fn push(&self, line: String) {
        let mut guard = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        guard.0 += 1;
        guard.1.push_back(line);
        if guard.1.len() > LOG_LINES {
            guard.1.pop_front();
        }
        self.grew.notify_all();
    }

    fn seq(&self) -> u64 {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner).0
    }

    /// Lines after number `since` (as many as are kept).
    fn since(&self, since: u64) -> Vec<String> {
        let guard = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        let new = usize::try_from(guard.0.saturating_sub(since)).unwrap_or(usize::MAX);
        guard.1.iter().rev().take(new).rev().cloned().collect()
    }

    fn wait(&self, timeout: Duration) {
        let guard = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = self.grew.wait_timeout(guard, timeout);
    }
}

/// The value of `field="..."` (or `field=word`) in a logfmt line, unescaped.
fn logfmt(line: &str, field: &str) -> Option<String> {
    let start = line.find(&format!("{field}="))? + field.len() + 1;
    let rest = &line[start..];
    let Some(quoted) = rest.strip_prefix('"') else {
        return rest.split_whitespace().next().map(str::to_owned);
    };
    let mut value = String::new();
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => value.extend(chars.next()),
            '"' => return Some(value),
            c => value.push(c),
        }
    }
    Some(value)
}

/// What dockerd said went wrong: its last fatal line, else its last error line (message and
/// error), else its last line.
fn failure(lines: &[String]) -> String {
    let last = |level: &str| lines.iter().rev().find(|l| l.contains(&format!("level={level}")));
    let Some(line) = last("fatal").or_else(|| last("error")).or(lines.last()) else {
        return "no output".into();
    };
    match (logfmt(line, "msg"), logfmt(line, "error")) {
        (Some(msg), Some(error)) => format!("{msg}: {error}"),
        (Some(msg), None) => msg,
        _ => line.clone(),
    }
}

#[derive(Debug, Default)]
struct Running {
    child: Option<Child>,
    /// What the running dockerd was started or last reloaded with.
    settings: Option<Settings>,
    /// The last settings dockerd ran with.
    good: Option<Settings>,
    /// For the report: running, on the previous file, or why not.
    state: String,
}

/// The engine, shared by the apply loop and the watchdog that restarts a crashed dockerd.
#[derive(Debug, Clone)]
pub struct Engine {
    running: Arc<Mutex<Running>>,
    log: Arc<Log>,
}

impl Engine {
    /// The image's engine, or None in an image without dockerd.
    pub fn new() -> Option<Engine> {
        if !Path::new(DOCKERD).exists() {
            return None;
        }
        let engine = Engine {
            running: Arc::new(Mutex::new(Running::default())),
            log: Arc::new(Log::default()),
        };
        let watched = engine.clone();
        let spawned =
            std::thread::Builder::new().name("dockerd-watch".into()).spawn(move || watched.watch());
        if let Err(e) = spawned {
            say(&format!("dockerd is not watched: {e}"));
        }
        Some(engine)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// dockerd's pid and state, for the report.
    pub fn describe(&self) -> (u32, String) {
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
            current => {
                if alive {
                    self.stop(&mut running);
                }
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
            return Outcome::Failed(e);
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
            if reloaded_since(signalled) {
                break;
            }
            if lines.iter().any(|l| l.contains("level=error") || l.contains("level=fatal")) {
                let why = failure(&lines);
                let _ = write_atomically(file, &current.json);
                running.state = format!("running on the previous daemon.json: {why}");
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
        running.state = "running (reloaded)".into();
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
            return Outcome::Failed(e);
        }
        let why = match self.start(running, &wanted) {
            Ok(()) => {
                running.state =
                    if running.good.is_some() { "running (restarted)" } else { "running" }.into();
                running.settings = Some(wanted.clone());
                running.good = Some(wanted);
                return Outcome::Applied;
            }
            Err(why) => why,
        };
        // The last file dockerd ran with, or an empty one (only the guest defaults).
        let fallback =
            previous.unwrap_or(Settings { json: b"{}\n".to_vec(), env: wanted.env.clone() });
        let keys = fallback.changed_keys(&wanted).join(", ");
        let _ = write_atomically(file, &fallback.json);
        match self.start(running, &fallback) {
            Ok(()) => {
                running.state = format!("running on the previous daemon.json: {why}");
                running.settings = Some(fallback.clone());
                running.good = Some(fallback);
                Outcome::Failed(format!(
                    "dockerd did not start with it (changed: {keys}): {why}; it runs on the \
                     previous daemon.json"
                ))
            }
            Err(again) => {
                running.state = format!("stopped: {why}");
                running.settings = None;
                Outcome::Failed(format!(
                    "dockerd did not start with it (changed: {keys}): {why}; nor with the \
                     previous daemon.json: {again}"
                ))
            }
        }
    }

    /// Starts dockerd with `settings` and waits until it answers a ping.
    fn start(&self, running: &mut Running, settings: &Settings) -> Result<(), String> {
        let _ = std::fs::remove_file(SOCKET);
        let mut command = Command::new(DOCKERD);
        command
            .args(settings.flags())
            .env_clear()
            .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
            // runc cannot pivot_root out of an initramfs: it moves the root and chroots.
            .env("DOCKER_RAMDISK", "1")
            .envs(&settings.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        super::power::default_signals(&mut command);
        let since = self.log.seq();
        let mut child =
            children::spawn(&mut command).map_err(|e| format!("starting {DOCKERD}: {e}"))?;
        let (done, drained) = std::sync::mpsc::channel();
        let pipes: [Option<Box<dyn Read + Send>>; 2] = [
            child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
            child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
        ];
        for pipe in pipes.into_iter().flatten() {
            let (log, done) = (self.log.clone(), done.clone());
            let _ = std::thread::Builder::new().name("dockerd-log".into()).spawn(move || {
                copy_log(pipe, &log);
                let _ = done.send(());
            });
        }
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = children::try_wait(&mut child) {
                // Its last lines, unless a child it left behind still holds the pipes.
                for _ in 0..2 {
                    let _ = drained.recv_timeout(Duration::from_secs(2));
                }
                return Err(format!("{} (dockerd {status})", failure(&self.log.since(since))));
            }
            if ping() {
                say(&format!("dockerd {} answers", child.id()));
                running.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                signal(&child, libc::SIGKILL);
                let _ = children::wait(&mut child);
                return Err(format!("dockerd did not answer within {START_TIMEOUT:?}"));
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

    /// Restarts a dockerd that died on its own, with the last settings it ran with.
    fn watch(&self) {
        loop {
            std::thread::sleep(Duration::from_secs(2));
            let mut running = self.lock();
            let Some(child) = running.child.as_mut() else { continue };
            let Ok(Some(status)) = children::try_wait(child) else { continue };
            running.child = None;
            running.settings = None;
            let why = failure(&self.log.since(self.log.seq().saturating_sub(20)));
            say(&format!("dockerd stopped on its own ({status}): {why}; starting it again"));
            if let Some(good) = running.good.clone() {
                match self.start(&mut running, &good) {
                    Ok(()) => {
                        running.settings = Some(good);
                        running.state = format!("running (restarted after it stopped: {why})");
                    }
                    Err(e) => running.state = format!("stopped: {e}"),
                }
            }
        }
    }
}

/// Copies one of dockerd's pipes into the log file and the kept lines; errors reach the console.
fn copy_log(pipe: Box<dyn Read + Send>, log: &Log) {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(LOG).ok();
    for line in std::io::BufReader::new(pipe).lines() {
        let Ok(line) = line else { break };
        if let Some(file) = &mut file {
            let _ = writeln!(file, "{line}");
        }
        if line.contains("level=error") || line.contains("level=fatal") {
            say(&format!("dockerd: {line}"));
        }
        log.push(line);
    }
}

fn signal(child: &Child, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else { return };
    // SAFETY: kill(2) on our own child, which has not been reaped.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// `GET path` on dockerd's unix socket (HTTP/1.0: the reply ends when the connection does);
/// the status line and the body.
fn get(path: &str) -> Option<(String, String)> {
    let mut stream = std::os::unix::net::UnixStream::connect(SOCKET).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n").ok()?;
    let mut reply = Vec::new();
    let _ = stream.take(1 << 20).read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    let (head, body) = reply.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_owned(), body.to_owned()))
}

/// Whether dockerd answers its ping.
fn ping() -> bool {
    get("/_ping").is_some_and(|(status, _)| status.contains(" 200 "))
}

/// Whether dockerd announced a successful reload since `since` (its `daemon reload` event,
/// published whatever the log level).
fn reloaded_since(since: std::time::SystemTime) -> bool {
    let seconds = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
    };
    let now = std::time::SystemTime::now();
    // filters={"type":["daemon"]}
    let path = format!(
        "/events?since={:.3}&until={:.3}&filters=%7B%22type%22%3A%5B%22daemon%22%5D%7D",
        seconds(since),
        seconds(now)
    );
    get(&path).is_some_and(|(_, body)| body.contains("\"Action\":\"reload\""))
}

/// Replaces `path` with `data` so that a reader sees the old file or the new one.
pub fn write_atomically(path: &Path, data: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("json.tmp");
    path.parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&tmp, data))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(json: &str) -> Settings {
        Settings { json: json.as_bytes().to_vec(), env: BTreeMap::new() }
    }

    #[test]
    fn reloadable_keys_reload_and_the_rest_restart() {
        let base = settings("{}");
        assert!(!base.restart_for(&settings(r#"{"debug": true}"#)));
        assert!(!base
            .restart_for(&settings(r#"{"labels": ["a=b"], "insecure-registries": ["r:5000"]}"#)));
        assert!(base.restart_for(&settings(r#"{"debug": true, "log-level": "warn"}"#)));
        let mut proxied = base.clone();
        proxied.env.insert("HTTP_PROXY".into(), "http://p:3128".into());
        assert!(base.restart_for(&proxied), "the environment only changes with a restart");
        assert_eq!(base.changed_keys(&proxied), vec!["proxy".to_owned()]);
    }

    #[test]
    fn guest_defaults_yield_to_the_file() {
        let flags = settings(r#"{"storage-driver": "overlay2"}"#).flags();
        assert!(flags.contains(&"--iptables=false".to_owned()), "{flags:?}");
        assert!(flags.contains(&"--bridge=none".to_owned()), "{flags:?}");
        assert!(!flags.iter().any(|f| f.starts_with("--storage-driver")), "{flags:?}");
    }

    #[test]
    fn proxy_keys_become_the_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ro = dir.path();
        std::fs::create_dir_all(ro.join("etc/docker")).expect("mkdir");
        std::fs::create_dir_all(ro.join("proxy")).expect("mkdir");
        std::fs::write(ro.join("etc/docker/daemon.json"), "{}\n").expect("write");
        std::fs::write(ro.join("proxy/http"), "http://proxy.example:3128\n").expect("write");
        std::fs::write(ro.join("proxy/https"), "").expect("write");
        std::fs::write(ro.join("proxy/exclude"), "localhost, .corp\n10.0.0.0/8\n").expect("write");
        let s = Settings::from_commit(ro).expect("reads");
        assert_eq!(s.env["HTTP_PROXY"], "http://proxy.example:3128");
        assert_eq!(s.env["no_proxy"], "localhost,.corp,10.0.0.0/8");
        assert!(!s.env.contains_key("HTTPS_PROXY"));
    }

    #[test]
    fn the_failure_is_dockerds_own_message() {
        let lines = vec![
            r#"time="t" level=info msg="Starting up""#.to_owned(),
            r#"time="t" level=error msg="Failed to GetDriver graph" driver=bogus error="graphdriver plugins are only supported with experimental mode""#.to_owned(),
        ];
        assert_eq!(
            failure(&lines),
            "Failed to GetDriver graph: graphdriver plugins are only supported with experimental mode"
        );
        let mut lines = lines;
        lines.push(r#"time="t" level=fatal msg="failed to start daemon: error initializing graphdriver: driver \"bogus\" not supported""#.to_owned());
        lines.push(r#"time="t" level=info msg="stopping""#.to_owned());
        assert_eq!(
            failure(&lines),
            r#"failed to start daemon: error initializing graphdriver: driver "bogus" not supported"#
        );
        assert_eq!(
            failure(&["unable to configure the Docker daemon".to_owned()]),
            "unable to configure the Docker daemon"
        );
        assert_eq!(failure(&[]), "no output");
    }
}
