//! The guest agent: PID 1 of the guest image. It runs in the guest only (the cairn binary is
//! the agent when the kernel starts it as PID 1), and speaks to the control plane through the
//! channel and /Database; [`report`] is the format of what it says on branch `state`.
//!
//! It mounts the kernel's filesystems, loads the image's modules, brings up the network, mounts
//! the database at `/Database`, then follows `branch/master/head.live`: for every head it
//! applies that commit's settings (from `/snapshots/C/ro`, so one commit is applied whole even
//! if master moves meanwhile) and reports on branch `state` through a 9P transaction. It must
//! never exit (the kernel panics when PID 1 does), so every failure is reported and retried.

mod apply;
mod binfmt;
mod boot;
mod channel;
mod children;
mod clock;
mod disk;
mod engine;
mod fd_stream;
mod file_events;
mod network;
pub mod port_proxy;
mod ports;
mod power;
pub mod report;
mod shares;
mod shell;
mod state;

use std::io::Read;
use std::path::Path;
use std::time::Duration;

pub use apply::{hex, DAEMON_JSON};
pub use boot::{MODULE_ORDER, SYSTEM_SERIAL};
pub use channel::DOCKER as DOCKER_SERVICE;

use crate::report::{Dockerd, Outcome, Report};

/// Why a step of the agent failed; printed on the console and retried.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("boot: {0}")]
    Boot(String),
    #[error("/Database: {0}")]
    Database(String),
    #[error("no session with the control plane")]
    NoSession,
    #[error("the channel's thread is gone")]
    ChannelGone,
    #[error("opening {service}: {source}")]
    OpenService {
        service: String,
        #[source]
        source: cairn_channel::Error,
    },
    #[error("no virtio-serial port named {0}")]
    NoPort(String),
    /// The channel's device (a virtio-serial port or a vsock port) would not open.
    #[error("{device}: {source}")]
    Device {
        device: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {path} from /Database: {source}")]
    ReadSetting {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting {program}: {source}")]
    Start {
        program: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// dockerd exited while starting: its last error line and its exit status.
    #[error("{why} (dockerd {status})")]
    DockerdExited { why: String, status: String },
    #[error("dockerd did not answer within {0:?}")]
    DockerdSilent(Duration),
    #[error("containerd did not open {socket}: {why}")]
    ContainerdSilent { socket: &'static str, why: String },
}

/// Where /Database comes from: a stream of the channel (qemu: nothing but the agent can open
/// the port it runs on) or the virtio-9p device with this tag (the native VMM). Never the
/// network: what a guest address serves, a container can reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbTransport {
    Channel,
    Virtio { tag: String },
}

pub use channel::Device as ChannelDevice;

/// What the kernel command line tells the agent (`cairn.db=channel` or `cairn.db=virtio:TAG`,
/// `cairn.channel=virtio-serial:NAME` or `cairn.channel=vsock:PORT`, `cairn.ip=ADDR/LEN`,
/// `cairn.gw=ADDR`, and the shared directories of [`cairn_channel::shares`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub db: DbTransport,
    pub channel: Option<ChannelDevice>,
    pub address: String,
    pub gateway: String,
    pub shares: cairn_channel::shares::Boot,
}

impl Config {
    /// Parses `/proc/cmdline`; unknown words are the kernel's.
    pub fn from_cmdline(cmdline: &str) -> Result<Config, Error> {
        let mut config = Config {
            db: DbTransport::Channel,
            channel: None,
            address: "10.0.2.15/24".into(),
            gateway: "10.0.2.2".into(),
            shares: cairn_channel::shares::Boot::default(),
        };
        for word in cmdline.split_whitespace() {
            if config.shares.take_word(word).map_err(Error::Boot)? {
                continue;
            }
            if let Some(db) = word.strip_prefix("cairn.db=") {
                let bad = || Error::Boot(format!("cairn.db={db}: expected channel or virtio:TAG"));
                config.db = match db.strip_prefix("virtio:") {
                    Some("") => return Err(bad()),
                    Some(tag) => DbTransport::Virtio { tag: tag.to_owned() },
                    None if db == "channel" => DbTransport::Channel,
                    None => return Err(bad()),
                };
            } else if let Some(device) = word.strip_prefix("cairn.channel=") {
                config.channel = Some(ChannelDevice::parse(device).ok_or_else(|| {
                    Error::Boot(format!(
                        "cairn.channel={device}: expected virtio-serial:NAME or vsock:PORT"
                    ))
                })?);
            } else if let Some(ip) = word.strip_prefix("cairn.ip=") {
                config.address = ip.to_owned();
            } else if let Some(gw) = word.strip_prefix("cairn.gw=") {
                config.gateway = gw.to_owned();
            }
        }
        if config.db == DbTransport::Channel && config.channel.is_none() {
            return Err(Error::Boot("cairn.db=channel needs cairn.channel=...".into()));
        }
        Ok(config)
    }
}

fn say(message: &str) {
    // The console is the serial port the control plane logs.
    println!("cairn-agent: {message}");
}

/// Runs the agent; never returns.
pub fn run() -> ! {
    power::watch_signals();
    children::start_reaper();
    if let Err(e) = boot::mount_kernel_filesystems() {
        say(&e.to_string());
    }
    let order = std::fs::read_to_string(MODULE_ORDER).unwrap_or_default();
    for problem in boot::load_modules(Path::new("/lib/modules"), &order) {
        say(&format!("module {problem}"));
    }
    match boot::mount_system() {
        Ok(Some(device)) => say(&format!("system disk {} mounted at /usr", device.display())),
        Ok(None) => {}
        Err(e) => say(&format!("system disk: {e}")),
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let config = match Config::from_cmdline(&cmdline) {
        Ok(config) => config,
        Err(e) => halt(&e.to_string()),
    };
    if let Err(e) = network::configure(&config.address, &config.gateway) {
        say(&e.to_string());
    }
    let channel = match config.channel.clone().map(channel::Channel::start).transpose() {
        Ok(channel) => channel,
        Err(e) => halt(&e.to_string()),
    };
    let disk = disk::prepare();
    match &disk {
        disk::Disk::Mounted { device, formatted } => {
            say(&format!(
                "data disk {} mounted at {}{}",
                device.display(),
                disk::MOUNT,
                if *formatted { " (formatted now)" } else { "" }
            ));
            if let Err(e) = disk::trim() {
                say(&format!("data disk: trimming: {e}"));
            }
            disk::trim_now_and_then();
        }
        disk::Disk::Refused(why) => say(&format!("data disk: {why}")),
    }
    let mounted = shares::mount_all(&config.shares);
    for line in &mounted.lines {
        say(&format!("share {line}"));
    }
    if let Err(e) = file_events::follow_guest_writes(&mounted.paths) {
        say(&format!("shares: the guest's own writes will come back as events: {e}"));
    }
    let shares = mounted.lines;
    // The engine runs on the data disk or not at all: on the VM's memory its images and
    // volumes would vanish at the next reboot.
    let engine = if disk.is_mounted() { engine::Engine::new() } else { None };
    if let Some(engine) = &engine {
        engine.start_containerd_early();
    }
    loop {
        mount_database(&config, channel.as_ref());
        if let Err(e) = follow(Path::new("/Database"), engine.as_ref(), &disk, &shares) {
            // The server went away (the control plane restarted) or the stream broke: a new
            // mount is a new stream, on the channel's next session.
            say(&format!("{e}; mounting /Database again"));
            boot::unmount_database();
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// Mounts /Database, retrying until the server answers.
fn mount_database(config: &Config, channel: Option<&channel::Channel>) {
    let mut delay = Duration::from_millis(200);
    while let Err(e) = boot::mount_database(&config.db, channel) {
        say(&format!("{e}; retrying"));
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    say("/Database mounted");
}

/// Powers the machine off after saying why: PID 1 may not exit.
fn halt(why: &str) -> ! {
    say(why);
    power::off(libc::RB_POWER_OFF)
}

/// Applies and reports every head of master as it comes, until the stream breaks.
fn follow(
    db: &Path,
    engine: Option<&engine::Engine>,
    disk: &disk::Disk,
    shares: &[String],
) -> Result<(), Error> {
    let live_path = db.join("branch/master/head.live");
    let mut live = std::fs::File::open(&live_path)
        .map_err(|e| Error::Database(format!("opening {}: {e}", live_path.display())))?;
    let mut buf = [0u8; 128];
    loop {
        // A stream gives each head in one read, then one empty read; the next read waits.
        let n = live.read(&mut buf).map_err(|e| Error::Database(format!("head.live: {e}")))?;
        if n == 0 {
            continue;
        }
        let head = String::from_utf8_lossy(&buf[..n]).trim().to_owned();
        if head.len() != 40 || !head.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Database(format!("head.live gave {head:?}")));
        }
        let mut report = apply_commit(db, &head, engine, disk);
        report.shares = shares.to_vec();
        if let Some((key, why)) = report.first_error() {
            say(&format!("{head}: {key}: {why}"));
        }
        // The console says so before the report does: whoever sees the report applied (a
        // test reading the console, a user) finds the line there already.
        say(&format!("applied {head}"));
        state::publish(db, &report)?;
    }
}

/// Applies one commit's settings and describes the result.
fn apply_commit(
    db: &Path,
    commit: &str,
    engine: Option<&engine::Engine>,
    disk: &disk::Disk,
) -> Report {
    let ro = db.join("snapshots").join(commit).join("ro");
    let mut report = Report { applied_commit: commit.to_owned(), ..Report::default() };
    report.results.insert("disk".into(), apply_disk(disk));
    report.disk = match disk {
        disk::Disk::Mounted { device, .. } => format!("mounted ({})", device.display()),
        disk::Disk::Refused(why) => format!("not used: {why}"),
    };
    if let Some(usage) = disk.is_mounted().then(disk::usage).flatten() {
        (report.disk_size_bytes, report.disk_used_bytes) = (usage.size_bytes, usage.used_bytes);
    }
    report.results.insert("hostname".into(), apply::hostname(&ro));
    report.results.insert("sysctl".into(), apply::sysctl(&ro, Path::new("/proc/sys")));
    report.results.insert("mtu".into(), network::mtu(&ro));
    report.results.insert("binfmt".into(), binfmt::apply(&ro));
    let (daemon, hash) = match engine {
        Some(engine) => {
            let outcome = match engine::Settings::from_commit(&ro) {
                Ok(settings) => engine.apply(settings, Path::new(DAEMON_JSON)),
                Err(e) => Outcome::Failed(e.to_string()),
            };
            (report.dockerd_pid, report.dockerd) = engine.describe();
            (outcome, apply::file_sha256(Path::new(DAEMON_JSON)))
        }
        None => {
            report.dockerd = match disk {
                disk::Disk::Refused(why) if Path::new(engine::DOCKERD).exists() => {
                    Dockerd::Stopped(format!("not started without its data disk: {why}"))
                }
                _ => Dockerd::Absent,
            };
            apply::daemon_json(&ro, Path::new(DAEMON_JSON))
        }
    };
    report.results.insert("daemon".into(), daemon);
    report.daemon_json_sha256 = hash;
    report.hostname = apply::current_hostname();
    report.boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap_or_default()
        .trim()
        .to_owned();
    report.memory_mib = memory_mib(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default());
    report.ncpu = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    report
}

/// The disk's part of a commit: grown when the disk grew under the running VM (the host
/// resizes it for a larger `disk`; on the embedded VMM that waits for the next boot).
fn apply_disk(disk: &disk::Disk) -> Outcome {
    match disk {
        disk::Disk::Refused(why) => Outcome::Failed(why.clone()),
        disk::Disk::Mounted { device, .. } => {
            // The host resizes the disk as it plans the commit, which may be a moment after
            // the guest sees it: a few looks before concluding it did not grow.
            for _ in 0..10 {
                match disk::grow(device) {
                    Ok(true) => return Outcome::Applied,
                    Ok(false) => std::thread::sleep(Duration::from_millis(200)),
                    Err(e) => return Outcome::Failed(e.to_string()),
                }
            }
            Outcome::Applied
        }
    }
}

/// MemTotal in MiB (what the kernel has after its own reservations: a bit under the VM's size).
fn memory_mib(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_configures_the_agent() {
        let c = Config::from_cmdline(
            "console=ttyS0 cairn.db=channel cairn.channel=virtio-serial:cairn.channel cairn.ip=10.0.2.9/24",
        )
        .expect("parses");
        assert_eq!(c.db, DbTransport::Channel);
        assert_eq!(c.channel, Some(ChannelDevice::Port("cairn.channel".into())));
        assert_eq!(c.address, "10.0.2.9/24");
        let c =
            Config::from_cmdline("cairn.db=virtio:db cairn.channel=vsock:1024").expect("parses");
        assert_eq!(c.db, DbTransport::Virtio { tag: "db".into() });
        assert_eq!(c.channel, Some(ChannelDevice::Vsock(1024)));
        assert!(Config::from_cmdline("cairn.db=virtio:").is_err());
        assert!(Config::from_cmdline("cairn.db=channel").is_err(), "a channel is needed");
        assert!(Config::from_cmdline("cairn.db=tcp:10.0.2.2:5640").is_err(), "no network");
        assert!(Config::from_cmdline("cairn.db=virtio:db cairn.channel=tcp:x").is_err());
    }

    #[test]
    fn memtotal_in_mib() {
        assert_eq!(memory_mib("MemTotal:         503612 kB\nMemFree: 1 kB\n"), 491);
        assert_eq!(memory_mib("nothing"), 0);
    }
}
