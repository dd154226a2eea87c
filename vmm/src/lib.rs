//! The embedded KVM monitor of cairn (the `native` backend), on the rust-vmm crates. It runs
//! inside the control plane's process; the guest's own programs are in cairn-agent, the image
//! it boots is cairn-image's.
//!
//! # Layout
//! - [`machine`]: memory, vCPUs, PVH and bzImage boot, ACPI, serial console, poweroff and
//!   reset, the KVM probe.
//! - [`virtio`]: its virtio-mmio devices: 9P (the database in-process), net, vsock, rng.

pub mod machine;
pub mod virtio;
