//! Host file events for the guest: the host watches the shared directories and tells the
//! agent what changed, one line a change (`changed PATH`, `removed PATH`, paths encoded as on
//! the kernel command line), on one stream the control plane opens per session. The guest
//! cannot see these by itself: inotify in the guest reports only what the guest's own kernel
//! does, and a change made on the host goes around it.

use crate::shares::{decode, encode};

/// The stream's service name.
pub const SERVICE: &str = "file-events";

/// One change under a shared directory, at its path (the same on both sides).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Change {
    /// Created, written or renamed to.
    Changed(String),
    /// Deleted or renamed away.
    Removed(String),
}

impl Change {
    /// The line for the stream, newline included.
    pub fn line(&self) -> String {
        match self {
            Change::Changed(path) => format!("changed {}\n", encode(path)),
            Change::Removed(path) => format!("removed {}\n", encode(path)),
        }
    }

    /// Reads a line back (without its newline); `None` for anything else.
    pub fn parse(line: &str) -> Option<Change> {
        let (kind, path) = line.split_once(' ')?;
        let path = decode(path).filter(|p| p.starts_with('/'))?;
        match kind {
            "changed" => Some(Change::Changed(path)),
            "removed" => Some(Change::Removed(path)),
            _ => None,
        }
    }

    pub fn path(&self) -> &str {
        match self {
            Change::Changed(path) | Change::Removed(path) => path,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_round_trip_and_garbage_is_refused() {
        for change in [Change::Changed("/s/a b\nc".into()), Change::Removed("/s/ü".into())] {
            let line = change.line();
            assert_eq!(line.matches('\n').count(), 1, "{line:?}");
            assert_eq!(Change::parse(line.trim_end_matches('\n')), Some(change));
        }
        assert_eq!(Change::parse("changed relative"), None);
        assert_eq!(Change::parse("moved /s/a"), None);
        assert_eq!(Change::parse("changed"), None);
    }
}
