//! The engine's persistent data disk: one sparse raw file per data directory
//! (`$CAIRN_HOME/data.img`). Raw, not qcow2: a raw file gives back the space the guest
//! discards (a hole is punched), a qcow2 file never shrinks. The guest agent formats it (ext4)
//! the first time, when it holds no filesystem. cairn never deletes it except when asked
//! (`cairn disk wipe`): not `down`, not a reboot, not a rollback, not a change of hypervisor.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The disk's file in a data directory.
pub fn path(home: &Path) -> PathBuf {
    home.join("data.img")
}

/// What the host knows of the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostView {
    /// The size the guest sees.
    pub size_bytes: u64,
    /// What it takes on the host's file system (sparse: only what was written and kept).
    pub allocated_bytes: u64,
}

/// The disk at `path`, if there is one.
pub fn host_view(path: &Path) -> Option<HostView> {
    let meta = std::fs::metadata(path).ok()?;
    Some(HostView { size_bytes: meta.len(), allocated_bytes: meta.blocks() * 512 })
}

/// What [`ensure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    /// A new, empty (all holes) disk of the size asked for.
    Created,
    /// The disk was there and is now `to` bytes (it was `from`).
    Grown { from: u64, to: u64 },
    /// The disk was there, at least as large as asked.
    Unchanged,
}

/// Makes the disk at `path` exist and be at least `size_mib` MiB, never smaller than it was:
/// the schema refuses a shrink, and a file that is larger than the setting (an older, larger
/// value put back by hand) keeps its size and its data.
pub fn ensure(path: &Path, size_mib: u64) -> std::io::Result<Ensured> {
    let wanted = size_mib.saturating_mul(1 << 20);
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() >= wanted => Ok(Ensured::Unchanged),
        Ok(meta) => {
            let file = std::fs::OpenOptions::new().write(true).open(path)?;
            file.set_len(wanted)?;
            file.sync_all()?;
            Ok(Ensured::Grown { from: meta.len(), to: wanted })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let file = std::fs::OpenOptions::new().write(true).create_new(true).open(path)?;
            file.set_len(wanted)?;
            file.sync_all()?;
            Ok(Ensured::Created)
        }
        Err(e) => Err(e),
    }
}

/// Replaces the disk with a new, empty one of `size_mib` MiB (`cairn disk wipe`). The VM must
/// not be running.
pub fn wipe(path: &Path, size_mib: u64) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    ensure(path, size_mib).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disk_is_sparse_grows_and_never_shrinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = path(dir.path());
        assert_eq!(ensure(&disk, 1024).expect("creates"), Ensured::Created);
        let view = host_view(&disk).expect("exists");
        assert_eq!(view.size_bytes, 1 << 30);
        assert!(view.allocated_bytes < 1 << 20, "sparse: {view:?}");
        std::fs::write(dir.path().join("marker"), "x").expect("write");
        assert_eq!(
            ensure(&disk, 2048).expect("grows"),
            Ensured::Grown { from: 1 << 30, to: 2 << 30 }
        );
        assert_eq!(ensure(&disk, 512).expect("kept"), Ensured::Unchanged);
        assert_eq!(host_view(&disk).expect("exists").size_bytes, 2 << 30);
        wipe(&disk, 1024).expect("wipes");
        assert_eq!(host_view(&disk).expect("exists").size_bytes, 1 << 30);
    }
}
