//! 9P for cairn: the database served as DataKit's filesystem, so that a guest mounts it at
//! `/Database` and scripts change settings by writing files.
//!
//! # Why our own codec
//! The crates available were measured against what this server needs (see the project's reference
//! notes): rs9p holds its fid-table lock while a handler runs, so one blocked `head.live` read
//! stalls every other request on the mount, has no Tflush, and drops the connection on a
//! non-UTF-8 name; its transports are only TCP and unix sockets with a private loop, while cairn
//! also needs a message-in/message-out entry point for the VMM's virtio-9p queue. The google `p9`
//! crate serves a real host directory synchronously. So the codec is written here: frames in,
//! frames out, no I/O, names as bytes, every length checked against the frame before anything is
//! allocated.
//!
//! # Layout
//! The modules depend on each other in one direction, from the bottom up:
//! - `dialect`: which of 9P2000.L, 9P2000.u and 9P2000 a connection speaks (re-exported as
//!   [`Dialect`]); the encodings below and above it differ by it.
//! - [`wire`]: the primitive encodings (integers, strings, qids, stat) with bounds checks.
//! - [`codec`]: every message of 9P2000.L, 9P2000.u and 9P2000, decoded from and encoded to
//!   frames, for both the server and the test client.
//! - [`errno`]: [`errno::Errno`], what every failing filesystem call and request answers.
//! - [`fs`]: the database as DataKit's filesystem (branches, ro/, streams, transactions,
//!   snapshots, trees).
//! - `state`: what a connection holds between requests (dialect, msize, its fids and what each
//!   has open), shared by the session that owns it and the handlers that change it.
//! - `handlers`: what each request does; `handlers/mod.rs` dispatches, and each message group
//!   has a file (`attach`, `walk`, `open`, `read`, `write`, `attr`, `remove`, `not_applicable`).
//! - [`session`]: one connection: version negotiation, requests in flight, Tflush; the
//!   message-in/message-out entry point that every transport (and the VMM's virtio-9p) uses.
//! - `log`: warnings a client can cause, rate-limited.
//! - [`transport`]: unix socket and TCP listeners.
//! - [`client`]: a small client for tests and benchmarks.

#![forbid(unsafe_code)]

pub mod client;
pub mod codec;
mod dialect;
pub mod errno;
pub mod fs;
mod handlers;
mod log;
pub mod session;
mod state;
pub mod transport;
pub mod wire;

pub use codec::{Dialect, Fcall, Frame};
pub use fs::Fs;
pub use session::Session;
pub use wire::{DecodeError, Qid, Stat};
