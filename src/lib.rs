//! The cairn control plane.
//!
//! cairn is a git-backed configuration database and control plane for a managed Linux VM: every
//! setting is a file in a git tree ([`cairn_db`]), checked by a schema ([`cairn_schema`]). This
//! crate holds what the command-line front end and, later, the reconciler share.
//!
//! # Layout
//! - [`channel`]: the control plane's end of the private channel to the guest agent.
//! - [`diagnose`]: `cairn diagnose`'s checks and archive.
//! - [`home`]: where cairn keeps its data (`CAIRN_HOME`, `CAIRN_DB`).
//! - [`host`]: the machine's limits, which bound settings such as `memory` and `ncpu`.
//! - [`serve`]: the 9P server on its own (`cairn serve`), and for `cairn up`.
//! - [`net`]: the guest's network, a user-space NAT on smoltcp.
//! - [`process`]: the process-level system calls of the command line (signals, setsid).
//! - [`plan`]: what a change means for the VM (its apply classes).
//! - [`settings`]: every key of a commit as `list --json` and the web page show it.
//! - [`ui`]: `cairn ui`, the settings as a local web page.
//! - [`shell`]: `cairn shell`'s end: a process in the VM over the guest agent's channel.
//! - [`vm`]: VM backends (qemu today).
//! - [`up`]: the control loop of `cairn up`, and its status.

pub mod channel;
pub mod diagnose;
pub mod engine_api;
pub mod home;
pub mod host;
mod json_file;
pub mod net;
pub mod plan;
pub mod process;
pub mod serve;
pub mod settings;
pub mod shell;
pub mod ui;
pub mod up;
pub mod vm;

pub use cairn_agent as agent;
pub use cairn_channel as guest_channel;
pub use cairn_db as db;
pub use cairn_image as image;
pub use cairn_schema as schema;
pub use cairn_vmm as vmm;

/// Errors of the control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot find a data directory: set CAIRN_HOME (or HOME)")]
    NoHome,
    #[error("reading the host's memory size from {path}")]
    HostMemory {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} has no MemTotal line")]
    NoMemTotal { path: &'static str },
    #[error("starting the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("listening on {address}")]
    Listen {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Transport(#[from] cairn_9p::transport::Error),
    #[error(transparent)]
    Db(#[from] cairn_db::Error),
    #[error("building the guest image")]
    Image(#[from] cairn_image::Error),
    #[error(transparent)]
    Vm(#[from] vm::VmError),
    #[error("{path}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cairn up is already running (pid {pid}); `cairn down` stops it")]
    AlreadyUp { pid: u32 },
    #[error("the database has no configuration on master")]
    NoConfig,
    #[error("--listen {0}: only a loopback address (127.0.0.1, ::1) is allowed: the page changes your configuration")]
    NotLoopback(String),
    #[error("the VM is not running, so it cannot be {0}")]
    NotRunning(&'static str),
    #[error("the shell in the VM: {0}")]
    ShellFailed(String),
    #[error("the shell session was cut: {0}")]
    ShellCut(String),
    #[error("{key}: {value:?} in the database is not a number")]
    BadSetting { key: String, value: String },
}

/// `seconds` since the epoch as `YYYY-MM-DD HH:MM:SSZ` (UTC), for people: logs, history.
pub fn utc(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

impl Error {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Error {
        Error::Io { path: path.to_owned(), source }
    }
}
