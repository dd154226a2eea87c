//! The VM side of cairn.
//!
//! # Layout
//! - [`image`]: builds the guest image (kernel + initramfs) from Debian packages and the cairn
//!   binary, cached with a manifest of its inputs.
//! - [`agent`]: the guest agent, PID 1 of that image: loads modules, mounts `/Database`, applies
//!   the configuration, follows `head.live` and reports on branch `state`.
//! - [`report`]: what the agent reports, shared by the agent (writer) and the control plane
//!   (reader).
//!
//! The embedded KVM monitor (the `native` backend) is its own issue and will live here too.

pub mod agent;
pub mod image;
pub mod report;
