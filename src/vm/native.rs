//! The native backend: the embedded VMM (cairn-vmm's `Machine`) in this process. The guest
//! finds its devices in the ACPI tables (virtio-mmio, as under Firecracker): virtio-9p with
//! tag `db` served in-process by the control plane's 9P filesystem (the agent mounts it with
//! `cairn.db=virtio:db`), virtio-rng, vsock with its host side at `run/vsock.sock` (the
//! agent's channel connects to port [`crate::channel::VSOCK_PORT`]), and virtio-net on the NAT
//! (src/net).
//!
//! The VM lives and dies with the control plane: unlike qemu, there is nothing to adopt after
//! a restart, so no VM record is written.

use std::sync::Arc;
use std::time::Duration;

use cairn_vmm::machine::{Config, Exit, Machine};
use cairn_vmm::virtio::net::NetDevice;
use cairn_vmm::virtio::{
    blk::BlkDevice, ninep::NinePDevice, rng::Rng, vsock::VsockDevice, VirtioDevice,
};

use crate::net::port::NatPort;

use super::{VmError, VmSpec};

/// The guest's MAC on the NAT's network.
const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/// The guest's vsock context id (the host is 2).
const GUEST_CID: u64 = 3;
/// The console log keeps its newest 16 MiB.
const CONSOLE_LIMIT: u64 = 16 << 20;

/// The kernel command line. Linux needs the i8042 options to take the VMM's controller
/// (Ctrl-Alt-Del is how the guest is asked to shut down); `reboot=k` resets through it.
pub fn cmdline() -> String {
    [
        "console=ttyS0 quiet panic=-1 rdinit=/init reboot=k",
        "i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd",
        "cairn.db=virtio:db",
        &format!("cairn.channel=vsock:{}", crate::channel::VSOCK_PORT),
    ]
    .join(" ")
}

/// A VM of the embedded VMM.
#[derive(Debug)]
pub struct Native {
    machine: Machine,
}

impl Native {
    /// Boots `spec` with the database served from `fs` on `runtime`.
    pub fn start(
        spec: &VmSpec,
        fs: Arc<cairn_9p::Fs>,
        runtime: tokio::runtime::Handle,
        vsock: &std::path::Path,
        net: Option<NatPort>,
    ) -> Result<Native, VmError> {
        let vsock = VsockDevice::new(GUEST_CID, vsock).map_err(|e| VmError::io(vsock, e))?;
        let disk = BlkDevice::new(&spec.data_disk, super::qemu::DATA_SERIAL)
            .map_err(|e| VmError::io(&spec.data_disk, e))?;
        let mut devices: Vec<Box<dyn VirtioDevice>> = vec![
            Box::new(NinePDevice::new("db", fs, runtime)),
            Box::new(disk),
            Box::new(Rng::default()),
            Box::new(vsock),
        ];
        if let Some(path) = &spec.system_disk {
            let system = BlkDevice::read_only(path, cairn_image::system::SERIAL)
                .map_err(|e| VmError::io(path, e))?;
            devices.push(Box::new(system));
        }
        let mut cmdline = cmdline();
        if let Some(port) = net {
            devices.push(Box::new(NetDevice::new(GUEST_MAC, Box::new(port))));
            cmdline.push_str(" cairn.ip=10.0.2.15/24 cairn.gw=10.0.2.2");
        }
        let config = Config {
            memory_mib: spec.memory_mib,
            ncpu: u8::try_from(spec.ncpu).unwrap_or(u8::MAX),
            kernel: spec.kernel.clone(),
            initrd: Some(spec.initrd.clone()),
            cmdline: cmdline + &super::extra_kernel_args(),
            console: spec.console.clone(),
            console_limit: CONSOLE_LIMIT,
            devices,
            devices_on_cmdline: false,
        };
        let machine = Machine::start(config)?;
        Ok(Native { machine })
    }

    /// What says when the VM ends.
    pub fn end_signal(&self) -> cairn_vmm::machine::EndSignal {
        self.machine.end_signal()
    }

    /// How the VM ended, if it has.
    pub fn exited(&mut self) -> Option<String> {
        self.machine.wait_timeout(Duration::ZERO).map(|exit| exit.to_string())
    }

    /// Parks (`true`) or releases the vCPU threads.
    pub fn pause(&self, pause: bool) {
        match pause {
            true => self.machine.pause(),
            false => self.machine.resume(),
        }
    }

    /// Asks the guest to shut down (Ctrl-Alt-Del), stops the VM after `grace`. Returns
    /// whether the guest powered off by itself.
    pub fn stop(mut self, grace: Duration) -> bool {
        // A paused guest would never see the keys.
        self.machine.resume();
        self.machine.shutdown(grace) == Exit::PowerOff
    }
}
