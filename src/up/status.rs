//! The control plane's status: written by `cairn up` as JSON in the run directory after every
//! change, read by `cairn status`, `cairn wait` and tests.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where `cairn up` keeps its runtime files.
#[derive(Debug, Clone)]
pub struct RunDir(pub PathBuf);

impl RunDir {
    pub fn status(&self) -> PathBuf {
        self.0.join("status.json")
    }
    pub fn pid(&self) -> PathBuf {
        self.0.join("up.pid")
    }
    pub fn console(&self) -> PathBuf {
        self.0.join("console.log")
    }
    pub fn qemu_errors(&self) -> PathBuf {
        self.0.join("qemu.err")
    }
    pub fn log(&self) -> PathBuf {
        self.0.join("cairn.log")
    }
    /// Where `cairn vm start|stop|restart` asks the control loop ([`super::control`]).
    pub fn control(&self) -> PathBuf {
        self.0.join("control.sock")
    }
    /// The running VM, for a control plane that restarts (see [`crate::vm::record`]).
    pub fn vm_record(&self) -> PathBuf {
        self.0.join("vm.json")
    }
    pub fn qmp(&self) -> PathBuf {
        self.0.join("qmp.sock")
    }
    pub fn socket(&self) -> PathBuf {
        self.0.join("9p.sock")
    }
    /// qemu's end of the guest's network, where the NAT connects (`-netdev stream`).
    pub fn net(&self) -> PathBuf {
        self.0.join("net.sock")
    }
    /// qemu's end of the channel to the guest agent (a virtio-serial port's chardev).
    pub fn channel(&self) -> PathBuf {
        self.0.join("channel.sock")
    }
    /// The host side of the native VMM's vsock (Firecracker's convention: connect, then
    /// `CONNECT <port>`; the guest's connections to port P arrive at `vsock.sock_P`).
    pub fn vsock(&self) -> PathBuf {
        self.0.join("vsock.sock")
    }
    /// `cairn shell`: each connection is a shell stream of the guest agent's channel.
    pub fn shell(&self) -> PathBuf {
        self.0.join("shell.sock")
    }
    /// The guest's Docker engine, for the host's Docker CLI.
    pub fn docker(&self) -> PathBuf {
        self.0.join("docker.sock")
    }
}

/// What the VM is doing, as `cairn status` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    /// `cairn up` is starting: serving, probing.
    #[default]
    Starting,
    /// The guest image is being built.
    Building,
    /// The VM was started; the guest has not reported yet.
    Booting,
    /// The guest reported from this boot.
    Running,
    /// Started again for a configuration change.
    Rebooting,
    /// Its vCPUs are stopped (`cairn vm pause`): it uses no CPU until `cairn vm resume`.
    Paused,
    /// It stopped on its own and is started again after a pause.
    Restarting,
    Stopped,
}

impl VmState {
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Starting => "starting",
            VmState::Building => "building",
            VmState::Booting => "booting",
            VmState::Running => "running",
            VmState::Rebooting => "rebooting",
            VmState::Paused => "paused",
            VmState::Restarting => "restarting",
            VmState::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which hypervisor runs the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The embedded VMM, in the control plane's process.
    Native,
    /// qemu-system-x86_64 as a child process.
    #[default]
    Qemu,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Native => "native",
            Backend::Qemu => "qemu",
        }
    }
}

/// The last error, with the key at fault when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    pub key: Option<String>,
    pub message: String,
    pub commit: Option<String>,
}

/// What the guest last said about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guest {
    pub boot_id: String,
    pub memory_mib: u64,
    pub ncpu: u32,
    pub hostname: String,
    pub daemon_json_sha256: String,
    /// dockerd's state in the guest, and its pid (0: not running).
    #[serde(default)]
    pub dockerd: cairn_agent::report::Dockerd,
    #[serde(default)]
    pub dockerd_pid: u32,
    /// The data disk as the guest sees it: mounted (and where), or not used and why.
    #[serde(default)]
    pub disk: String,
    /// Its filesystem's size and what is used of it.
    #[serde(default)]
    pub disk_size_bytes: u64,
    #[serde(default)]
    pub disk_used_bytes: u64,
}

/// The guest's Docker engine as the host reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Docker {
    /// The unix socket forwarded to dockerd's API (DOCKER_HOST=unix://SOCKET).
    pub socket: String,
    /// "listening", or why the socket does not reach the engine.
    pub forward: String,
    /// The Docker CLI that came with the engine's package, when the image was built here.
    pub cli: Option<String>,
    /// The host docker CLI's context for this socket (`cairn`), when there is a CLI.
    #[serde(default)]
    pub context: Option<String>,
    /// The ports the containers publish, on the host.
    #[serde(default)]
    pub ports: Vec<crate::net::published::PortStatus>,
}

/// The guest's network as the NAT sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Network {
    /// nat, none, or hostnet (qemu's own network: no NAT, no forwards).
    pub mode: String,
    pub mtu: u16,
    /// Where the gateway's DNS forwards to.
    pub resolvers: Vec<String>,
    pub forwards: Vec<crate::net::forward::ForwardStatus>,
    pub counters: crate::net::Counters,
}

/// Everything `cairn status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Status {
    /// The `cairn up` process.
    pub pid: u32,
    pub vm: VmState,
    /// None until it is chosen.
    pub backend: Option<Backend>,
    /// Why this backend (and accelerator).
    pub backend_reason: String,
    pub accel: Option<crate::vm::Accel>,
    pub vm_pid: Option<u32>,
    /// master's head as the control plane last saw it.
    pub config_head: Option<String>,
    /// The commit the guest has applied (with the VM booted for it).
    pub applied_commit: Option<String>,
    /// The commit being applied now, when it differs from `applied_commit`.
    pub attempted_commit: Option<String>,
    /// The plan being carried out: its action and keys.
    pub plan: Option<crate::plan::Plan>,
    pub last_error: Option<LastError>,
    pub guest: Option<Guest>,
    /// Times the VM was started again after it stopped on its own.
    pub restarts: u32,
    /// Times the VM was rebooted for a configuration change.
    pub reboots: u32,
    /// Whether the guest agent's channel is up (its session with this control plane).
    #[serde(default)]
    pub channel: bool,
    /// The VM was started by an earlier control plane and taken over by this one.
    #[serde(default)]
    pub adopted: bool,
    #[serde(default)]
    pub network: Option<Network>,
    /// Present when the guest runs the Docker engine.
    #[serde(default)]
    pub docker: Option<Docker>,
    /// The host directories the VM shares, and how each fares.
    #[serde(default)]
    pub sharing: Option<crate::vm::shares::Sharing>,
    /// The last check of the guest's clock against the host's.
    #[serde(default)]
    pub clock: Option<super::clock::ClockStatus>,
    /// Why the VM is paused, while it is.
    #[serde(default)]
    pub paused: Option<PauseInfo>,
}

/// Who paused the VM and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseInfo {
    /// auto-pause: the next docker command or `cairn shell` resumes it.
    pub idle: bool,
    pub why: String,
}

impl Status {
    /// Writes the status atomically (readers never see half a file).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        crate::json_file::save(path, self)
    }

    /// The status in `path`, if `cairn up` ever wrote one.
    pub fn load(path: &Path) -> Option<Status> {
        crate::json_file::load(path)
    }
}

/// Whether process `pid` is alive.
pub fn alive(pid: u32) -> bool {
    // A zombie (killed, not yet reaped by whoever inherited it) no longer runs.
    pid != 0 && crate::vm::record::process_start_time(pid).is_some()
}
