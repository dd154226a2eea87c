//! VM backends. The qemu backend runs today; the native VMM (vmm/) plugs in here when it can
//! boot the guest, and until then `up` says why it uses qemu.

pub mod qemu;
pub mod qmp;
pub mod record;

use std::path::{Path, PathBuf};

/// What to boot: the image, the size, and where the guest finds the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub memory_mib: u64,
    pub ncpu: u32,
    /// The loopback TCP port of the 9P server (the guest dials 10.0.2.2 at this port).
    pub ninep_port: u16,
    /// The serial console's log file.
    pub console: PathBuf,
    /// qemu's QMP socket, through which the guest is asked to power off.
    pub qmp: PathBuf,
}

/// How qemu runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Why a VM could not be started.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("starting the VM: {0}")]
    Start(String),
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl VmError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> VmError {
        VmError::Io { path: path.to_owned(), source }
    }
}
