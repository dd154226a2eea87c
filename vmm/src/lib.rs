//! The VM side of cairn.
//!
//! # Layout
//! - [`image`]: builds the guest image (kernel + initramfs) from Debian packages and the cairn
//!   binary, cached with a manifest of its inputs.
//! - [`agent`]: the guest agent, PID 1 of that image: loads modules, mounts `/Database`, applies
//!   the configuration, follows `head.live` and reports on branch `state`.
//! - [`report`]: what the agent reports, shared by the agent (writer) and the control plane
//!   (reader).
//! - [`machine`]: the embedded KVM monitor (the `native` backend): memory, vCPUs, PVH boot,
//!   serial console, poweroff and reset, on the rust-vmm crates.
//! - [`virtio`]: its virtio-mmio devices: 9P (the database in-process), net, vsock, rng.

pub mod agent;
pub mod image;
pub mod machine;
pub mod report;
pub mod virtio;
