//! The channel between the control plane and the guest agent.
//!
//! One byte stream that only the agent reaches, a virtio-serial port on qemu (the agent, PID 1,
//! opens its device node; no container sees it) or one vsock connection on the native VMM,
//! carries every conversation between host and guest: the 9P of /Database first, then whatever
//! else needs a private way in. Nothing of it is a TCP port, so no other user of the host and
//! nothing inside a container can reach it.
//!
//! A virtio-serial port outlives both ends: the control plane can restart (and adopt the running
//! VM) while the guest keeps its end open, and bytes of the old conversation may still sit in a
//! buffer. So each conversation starts with a handshake that skips anything stale, and then
//! runs yamux, which gives many independent streams with flow control over the one byte stream.
//!
//! # Layout
//! - [`handshake`]: both ends agree that a fresh session starts at this byte.
//! - [`session`]: yamux over the handshaken stream; streams opened and accepted by service.
//! - [`service`]: the line that names the service a stream is for.
//! - [`clock`]: the guest's clock, read and corrected from the host's.
//! - [`file_events`]: changes the host sees in the shared directories, for the guest.
//! - [`ports`]: published ports: the proxy's request, the host's answer, forwarded traffic.
//! - [`shares`]: the host directories a boot shares, on the guest's kernel command line.
//! - [`shell`]: `cairn shell`'s process in the guest: its request, streams and exit code.

pub mod clock;
pub mod file_events;
pub mod handshake;
pub mod ports;
pub mod service;
pub mod session;
pub mod shares;
pub mod shell;

pub use service::Service;
pub use session::{Inbound, Session, Stream};

/// Why the channel failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the channel's byte stream")]
    Io(#[from] std::io::Error),
    #[error("the channel closed")]
    Closed,
    #[error("the channel's multiplexer")]
    Mux(#[from] yamux::ConnectionError),
    #[error("a stream's header: {0}")]
    Header(String),
}
