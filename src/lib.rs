//! The cairn control plane.
//!
//! cairn is a git-backed configuration database and control plane for a managed Linux VM: every
//! setting is a file in a git tree ([`cairn_db`]), checked by a schema ([`cairn_schema`]). This
//! crate holds what the command-line front end and, later, the reconciler share.
//!
//! # Layout
//! - [`home`]: where cairn keeps its data (`CAIRN_HOME`, `CAIRN_DB`).
//! - [`host`]: the machine's limits, which bound settings such as `memory` and `ncpu`.
//! - [`serve`]: the 9P server on its own (`cairn serve`).

pub mod home;
pub mod host;
pub mod serve;

pub use cairn_db as db;
pub use cairn_schema as schema;

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
}
