//! VM backends: qemu as a child process, and the embedded VMM (vmm/) where the host's KVM can
//! run Linux (`up` says why it uses qemu otherwise).

pub mod bind_mounts;
pub mod containers;
pub mod disk;
pub mod file_events;
pub mod native;
pub mod qemu;
pub mod qmp;
pub mod record;
pub mod shares;
pub mod verdicts;
pub mod virtiofsd;

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The VM a control plane runs, on either backend.
#[derive(Debug)]
pub enum Running {
    Qemu(qemu::Qemu),
    Native(native::Native),
}

impl Running {
    /// The process that runs the VM: qemu's, or the control plane's own for the native VMM.
    pub fn pid(&self) -> u32 {
        match self {
            Running::Qemu(vm) => vm.pid(),
            Running::Native(_) => std::process::id(),
        }
    }

    /// How the VM ended, if it has.
    pub fn exited(&mut self) -> Option<String> {
        match self {
            Running::Qemu(vm) => vm.exited(),
            Running::Native(vm) => vm.exited(),
        }
    }

    /// Stops (`true`) or resumes the vCPUs: a paused VM runs no instruction and uses no CPU.
    pub fn pause(&self, pause: bool) -> Result<(), VmError> {
        match self {
            Running::Qemu(vm) => vm.pause(pause).map_err(VmError::Qmp),
            Running::Native(vm) => {
                vm.pause(pause);
                Ok(())
            }
        }
    }

    /// Asks the guest to power off, forces the VM down after `grace`; whether the guest
    /// powered off by itself.
    pub fn stop(self, grace: Duration) -> bool {
        match self {
            Running::Qemu(vm) => vm.stop(grace),
            Running::Native(vm) => vm.stop(grace),
        }
    }
}

/// Extra words for the guest kernel's command line (`CAIRN_KERNEL_ARGS`), on either backend:
/// for debugging a guest (`debug`, `earlyprintk=ttyS0`) or options of your own kernel.
pub fn extra_kernel_args() -> String {
    std::env::var("CAIRN_KERNEL_ARGS").map(|args| format!(" {}", args.trim())).unwrap_or_default()
}

/// What to boot: the image, the size, and the host ends of its devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub memory_mib: u64,
    pub ncpu: u32,
    /// Where qemu's chardev for the channel's virtio-serial port listens.
    pub channel: PathBuf,
    /// The engine's persistent data disk (a sparse raw file), the guest's first virtio disk.
    pub data_disk: PathBuf,
    /// The image's read-only system disk (erofs, mounted at /usr), if it has one.
    pub system_disk: Option<PathBuf>,
    /// The serial console's log file.
    pub console: PathBuf,
    /// qemu's QMP socket, through which the guest is asked to power off.
    pub qmp: PathBuf,
    /// Where qemu listens for the NAT (`-netdev stream`); without one, qemu's own user network.
    pub net: Option<PathBuf>,
    /// qemu's own user network's forwards (`hostfwd=` values, `tcp:127.0.0.1:8080-:80`), from
    /// the `port-forwarding` key; unused with the NAT, which forwards live.
    pub hostfwd: Vec<String>,
    /// The devices of the host directories the guest mounts (qemu only).
    pub shares: Vec<SharedDevice>,
    /// The kernel command line's words that tell the guest where to mount them
    /// ([`cairn_channel::shares::Boot::kernel_args`]).
    pub share_args: String,
}

/// One shared directory as a device of the VM, found by the guest by its tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedDevice {
    pub tag: String,
    pub via: SharedVia,
}

/// What serves a shared directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedVia {
    /// virtiofsd, listening on this socket.
    Virtiofs(PathBuf),
    /// qemu's own 9P server, on this directory.
    NineP(PathBuf),
}

/// How qemu runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    #[error("starting qemu-system-x86_64 (install qemu-system-x86)")]
    SpawnQemu(#[source] std::io::Error),
    #[error("asking qemu through QMP")]
    Qmp(#[source] std::io::Error),
    #[error("starting the VM on the embedded VMM")]
    Native(#[from] cairn_vmm::machine::Error),
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
