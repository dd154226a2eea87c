//! The checks of `cairn diagnose`, in the order a problem shows itself: the database, the
//! control plane, the VM, its agent, what it applied, the engine, the guest's network, what
//! the host carries for it (published ports, shared directories), its clock and its disk. A
//! check that needs the guest is skipped, not failed, once the guest is known unreachable: the
//! failure that explains it is already on the list.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::up::status::{RunDir, Status, VmState};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Fail,
    /// Not applicable here, or not possible after an earlier failure.
    Skipped,
}

impl Verdict {
    /// The tag a line starts with.
    pub fn tag(self) -> &'static str {
        match self {
            Verdict::Ok => "[OK]",
            Verdict::Fail => "[FAIL]",
            Verdict::Skipped => "[--]",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub verdict: Verdict,
    /// What was found, or why it failed.
    pub detail: String,
}

/// What the checks look at.
#[derive(Debug)]
pub struct Probe<'a> {
    pub home: &'a Path,
    pub db: &'a Path,
    pub run: RunDir,
    pub status: Status,
    /// `cairn up` holds its lock.
    pub up: Option<u32>,
}

/// How long one command in the guest may take.
const GUEST_WITHIN: Duration = Duration::from_secs(20);
/// How long dockerd has to answer a ping.
const ENGINE_WITHIN: Duration = Duration::from_secs(5);
/// A guest clock further than this from the host's fails.
const CLOCK_LIMIT: f64 = 0.5;
/// A data disk fuller than this fails.
const DISK_FULL: f64 = 0.9;
/// The host must keep this much free for the data disk's file to grow.
const HOST_FREE_MIN: u64 = 1 << 30;

type Outcome = Result<String, String>;

/// Runs every check, telling `each` as each ends; all the results.
pub fn run(probe: &Probe<'_>, each: &mut dyn FnMut(&Check)) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut record = |name: &str, outcome: Option<Outcome>| -> bool {
        let (verdict, detail) = match outcome {
            Some(Ok(detail)) => (Verdict::Ok, detail),
            Some(Err(detail)) => (Verdict::Fail, detail),
            None => (Verdict::Skipped, "not checked: the guest cannot be reached".to_owned()),
        };
        let check = Check { name: name.to_owned(), verdict, detail };
        each(&check);
        checks.push(check);
        verdict == Verdict::Ok
    };
    record("database", Some(database(probe)));
    let up = record("control plane", Some(control_plane(probe)));
    let vm = up && record("VM", Some(vm(probe)));
    if !up {
        record("VM", None);
    }
    let guest = vm && record("agent", Some(agent(probe)));
    if !vm {
        record("agent", None);
    }
    let when = |check: fn(&Probe<'_>) -> Outcome| guest.then(|| check(probe));
    record("applied", when(applied));
    let engine = match (guest, &probe.status.docker) {
        (true, None) => Some(Ok("no engine in this image (the base flavour)".to_owned())),
        _ => when(engine),
    };
    record("engine", engine);
    record("DNS from the guest", when(dns));
    record("egress", when(egress));
    record("published ports", when(published_ports));
    record("shared directories", when(shares));
    record("clock", when(clock));
    record("disk", when(disk));
    checks
}

fn database(probe: &Probe<'_>) -> Outcome {
    let host = crate::host::detect(probe.home).map_err(|e| e.to_string())?;
    let db = cairn_db::Db::open(probe.db, host).map_err(|e| format!("cannot open it: {e}"))?;
    let head = db
        .head(cairn_db::CONFIG_BRANCH)
        .map_err(|e| e.to_string())?
        .ok_or("master has no commit (`cairn init` makes one)")?;
    let fsck = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(probe.db)
        .args(["fsck", "--strict", "--no-progress", "--no-dangling"])
        .output();
    let fsck = match fsck {
        Err(_) => "git is not installed: fsck skipped".to_owned(),
        Ok(out) if out.status.success() => "git fsck --strict clean".to_owned(),
        Ok(out) => {
            let why = String::from_utf8_lossy(&out.stderr);
            return Err(format!("git fsck --strict: {}", why.trim()));
        }
    };
    Ok(format!("master at {}, {fsck}", short(&head.to_string())))
}

fn control_plane(probe: &Probe<'_>) -> Outcome {
    match probe.up {
        Some(pid) => Ok(format!("cairn up runs (pid {pid})")),
        None => Err("cairn up is not running (`cairn up --detach` starts it)".into()),
    }
}

fn vm(probe: &Probe<'_>) -> Outcome {
    let s = &probe.status;
    let backend = s.backend.map_or("?", |b| b.as_str());
    let accel = s.accel.map_or("?", |a| a.as_str());
    match s.vm {
        VmState::Running => Ok(format!("running on {backend} ({accel})")),
        other => Err(format!("the VM is {other}")),
    }
}

fn agent(probe: &Probe<'_>) -> Outcome {
    let started = Instant::now();
    guest(probe, &["true"])?;
    Ok(format!(
        "answers on its channel (a command's round trip: {} ms)",
        started.elapsed().as_millis()
    ))
}

fn applied(probe: &Probe<'_>) -> Outcome {
    let s = &probe.status;
    match (&s.applied_commit, &s.config_head) {
        (Some(applied), Some(head)) if applied == head => Ok(format!("master {}", short(head))),
        (applied, head) => {
            let error = s.last_error.as_ref().map(|e| {
                let key = e.key.as_deref().map(|k| format!("{k}: ")).unwrap_or_default();
                format!("; last error: {key}{}", e.message)
            });
            Err(format!(
                "the guest applied {}, master is at {}{}",
                applied.as_deref().map_or("nothing", short),
                head.as_deref().map_or("nothing", short),
                error.unwrap_or_default()
            ))
        }
    }
}

fn engine(probe: &Probe<'_>) -> Outcome {
    let socket = probe.run.docker();
    let ping = http_get(&socket, "/_ping", ENGINE_WITHIN)
        .map_err(|e| format!("no answer on {} within {ENGINE_WITHIN:?}: {e}", socket.display()))?;
    if ping.trim() != "OK" {
        return Err(format!("dockerd answered its ping with {:?}", ping.trim()));
    }
    let version = http_get(&socket, "/version", ENGINE_WITHIN)
        .ok()
        .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
        .and_then(|v| v["Version"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    Ok(format!("dockerd {version} answers"))
}

fn dns(probe: &Probe<'_>) -> Outcome {
    if probe.status.network.as_ref().is_some_and(|n| n.mode == "hostnet") {
        return Ok("not checked under network=hostnet (qemu's own DNS)".into());
    }
    let out = guest(probe, &["nslookup", "host.docker.internal"])?;
    let gateway = crate::net::GATEWAY.to_string();
    match out.lines().any(|l| l.contains("Address") && l.contains(&gateway)) {
        true => Ok(format!("host.docker.internal is {gateway}")),
        false => Err(format!("nslookup host.docker.internal gave: {}", out.trim())),
    }
}

fn egress(probe: &Probe<'_>) -> Outcome {
    // A server of our own on the host's loopback, which the gateway stands for on either
    // network (cairn's NAT, qemu's slirp): the guest's traffic out, through whatever carries it.
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("a test server: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let token = format!("cairn-diagnose-{}", std::process::id());
    let served = token.clone();
    std::thread::spawn(move || {
        if let Ok((mut peer, _)) = listener.accept() {
            let _ = peer.write_all(format!("{served}\n").as_bytes());
        }
    });
    let gateway = crate::net::GATEWAY.to_string();
    let out = guest(probe, &["nc", "-w", "5", &gateway, &port.to_string()])?;
    match out.contains(&token) {
        true => Ok(format!("the guest reached a server on the host's loopback through {gateway}")),
        false => Err(format!("nothing came back from {gateway}:{port} ({:?})", out.trim())),
    }
}

fn published_ports(probe: &Probe<'_>) -> Outcome {
    let ports = probe.status.docker.as_ref().map(|d| d.ports.as_slice()).unwrap_or_default();
    let bad: Vec<String> = ports
        .iter()
        .filter(|p| !p.state.starts_with("listening"))
        .map(|p| format!("{} -> {}: {}", p.host, p.target, p.state))
        .collect();
    match (ports.len(), bad.is_empty()) {
        (0, _) => Ok("none published".into()),
        (n, true) => Ok(format!("{n} listening on the host")),
        (_, false) => Err(bad.join("; ")),
    }
}

fn shares(probe: &Probe<'_>) -> Outcome {
    let Some(sharing) = &probe.status.sharing else { return Ok("nothing shared".into()) };
    let bad: Vec<String> = sharing
        .shares
        .iter()
        .filter(|s| !s.state.starts_with("mounted"))
        .map(|s| format!("{}: {}", s.path, s.state))
        .collect();
    match bad.is_empty() {
        true => Ok(format!("{} mounted ({})", sharing.shares.len(), sharing.mode)),
        false => Err(bad.join("; ")),
    }
}

fn clock(probe: &Probe<'_>) -> Outcome {
    let (offset, trip) = guest_clock_offset(probe)?;
    let text = format!(
        "the guest is {:.1} ms {} the host (round trip {:.1} ms)",
        offset.abs() * 1000.0,
        if offset < 0.0 { "behind" } else { "ahead of" },
        trip * 1000.0
    );
    match offset.abs() <= CLOCK_LIMIT + trip / 2.0 {
        true => Ok(text),
        false => Err(text),
    }
}

/// The guest's clock minus the host's, and the round trip it was measured over, in seconds
/// (busybox's adjtimex prints the time to the microsecond).
pub fn guest_clock_offset(probe: &Probe<'_>) -> Result<(f64, f64), String> {
    let now = || SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let before = now();
    let out = guest(probe, &["adjtimex"])?;
    let after = now();
    let field = |name: &str| -> Option<f64> {
        let line = out.lines().find(|l| l.contains(name))?;
        line.rsplit(':').next()?.trim().parse().ok()
    };
    let (Some(seconds), Some(micros)) = (field("time.tv_sec"), field("time.tv_usec")) else {
        return Err(format!("adjtimex gave no time: {}", out.trim()));
    };
    Ok((seconds + micros / 1e6 - (before + after) / 2.0, after - before))
}

fn disk(probe: &Probe<'_>) -> Outcome {
    let Some(guest) = probe.status.guest.as_ref() else {
        return Err("the guest has not reported its disk".into());
    };
    if guest.disk_size_bytes == 0 {
        return Err(format!("the data disk is not in use: {}", guest.disk));
    }
    // Now, not as the last report said (images pulled since do not make a report).
    let (used, size) = guest_df(probe, "/var/lib/docker")
        .unwrap_or((guest.disk_used_bytes, guest.disk_size_bytes));
    let share = used as f64 / size.max(1) as f64;
    let guest_line =
        format!("data disk {} MiB of {} MiB used ({:.0}%)", used >> 20, size >> 20, share * 100.0);
    if share > DISK_FULL {
        return Err(format!("{guest_line}: prune images or grow `disk`"));
    }
    let free = rustix::fs::statvfs(probe.home)
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
        .map_err(|e| format!("the host's free space at {}: {e}", probe.home.display()))?;
    let line = format!("{guest_line}; {} MiB free on the host", free >> 20);
    match free >= HOST_FREE_MIN {
        true => Ok(line),
        false => Err(format!("{line}: the data disk's file cannot grow")),
    }
}

/// Bytes used and in all of the file system holding `path` in the guest (busybox `df -k`).
fn guest_df(probe: &Probe<'_>, path: &str) -> Option<(u64, u64)> {
    let out = guest(probe, &["df", "-k", path]).ok()?;
    let fields: Vec<&str> = out.lines().nth(1)?.split_whitespace().collect();
    let kib = |i: usize| fields.get(i)?.parse::<u64>().ok().map(|k| k * 1024);
    Some((kib(2)?, kib(1)?))
}

/// Runs `argv` in the guest; its standard output, or why it failed.
pub fn guest(probe: &Probe<'_>, argv: &[&str]) -> Result<String, String> {
    let done = crate::shell::capture(&probe.run.shell(), argv, GUEST_WITHIN)
        .map_err(|e| format!("{}: {e}", argv.join(" ")))?;
    let out = String::from_utf8_lossy(&done.stdout).into_owned();
    match done.code {
        0 => Ok(out),
        code => Err(format!(
            "{} exited {code}: {}",
            argv.join(" "),
            String::from_utf8_lossy(&done.stderr).trim()
        )),
    }
}

/// `GET path` on the docker socket in HTTP/1.0 (the reply ends with the connection); the body.
pub fn http_get(socket: &Path, path: &str, within: Duration) -> std::io::Result<String> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(within))?;
    stream.set_write_timeout(Some(within))?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n").as_bytes())?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    let text = String::from_utf8_lossy(&reply);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if !head.starts_with("HTTP/1.") {
        return Err(std::io::Error::other("not an HTTP reply"));
    }
    Ok(body.to_owned())
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}
