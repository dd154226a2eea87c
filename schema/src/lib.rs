//! The catalogue of cairn settings.
//!
//! Every setting is a file in a git tree. This crate knows, for each one, its friendly name (what
//! a user types), its path in the tree, its type, its default, a description, the related keys
//! shown as its options, and its apply class (what the VM has to do when it changes). It turns
//! what a user types into the canonical bytes stored in the tree, and refuses anything else with a
//! message that names the key, the value and what is allowed.
//!
//! # Layout
//! - [`catalogue`]: the table of keys ([`KEYS`]) and look-ups by name or path.
//! - [`value`]: parsing and validation of each value type, and the typed (JSON) view of a value.
//! - [`daemon`]: the typed subset of Docker's `daemon.json` and its per-key apply classes.
//! - [`sysctl`]: sysctl.conf lines, parsed alike by the schema and by the guest agent.
//! - [`json`]: JSON as users write it: no key twice, values' text kept for messages.
//! - [`apply`]: the apply classes, ordered from least to most disruptive.
//! - [`tree`]: validation of a whole configuration tree, as the database does before a commit.
//! - [`mod@migrate`]: schema versions and the migrations between them.
//! - `version`: the [`Tree`] type and the schema version a tree declares, below both `tree` and
//!   `migrate` (which uses `tree`), so that their dependencies go one way.
//!
//! The crate is pure: no I/O. What depends on the machine (its RAM and cores) comes in as a
//! [`Host`].

#![forbid(unsafe_code)]

pub mod apply;
pub mod catalogue;
pub mod daemon;
mod error;
pub mod json;
pub mod migrate;
pub mod shares;
pub mod sysctl;
pub mod tree;
pub mod value;
mod version;

pub use apply::ApplyClass;
pub use catalogue::{by_name, by_path, Key, KEYS};
pub use error::Error;
pub use migrate::migrate;
pub use tree::validate_tree;
pub use value::{Kind, Validation};
pub use version::{Tree, CURRENT_VERSION};

/// The machine a configuration is validated for: limits such as `memory` and `ncpu` depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host {
    /// Physical memory in MiB.
    pub ram_mib: u64,
    /// Logical CPUs.
    pub cores: u64,
    /// The size of the engine's data disk as it is on this host, in MiB, or 0 when there is
    /// none yet: the `disk` key may not go below it (a smaller disk would cut off the data).
    pub disk_mib: u64,
}

impl Host {
    /// A host that accepts any value the types allow; for tools that inspect a database copied
    /// from elsewhere.
    pub const UNLIMITED: Host = Host { ram_mib: u64::MAX / 2, cores: 1024, disk_mib: 0 };
}
