//! The host's shared directories: each mounted at its own path before the engine starts, so
//! that `docker run -v /host/path:/x` finds the host's files there (dockerd bind-mounts the
//! guest's path, recursively, so every container sees these mounts too).
//!
//! A directory the host hides inside a share ($CAIRN_HOME, whose repository and sockets no
//! container may reach) gets an empty read-only file system over it. Under virtiofs the host's
//! virtiofsd already sees it so; under 9p (qemu serves the host's real tree) this mount is the
//! only cover, and a privileged container could mount the share again under it.

use cairn_channel::shares::{Boot, Transport};

use crate::boot::mount_with;

/// The shares as mounted.
#[derive(Debug, Default)]
pub struct Mounted {
    /// One line per share for the report: `PATH: mounted (virtiofs)` or `PATH: not mounted:
    /// why`.
    pub lines: Vec<String>,
    /// The paths mounted.
    pub paths: Vec<String>,
}

/// Mounts every share and hides what the host hides.
pub fn mount_all(boot: &Boot) -> Mounted {
    let Some(transport) = boot.transport else { return Mounted::default() };
    let mut lines = Vec::new();
    let mut paths = Vec::new();
    for share in &boot.shares {
        let mounted = match transport {
            Transport::Virtiofs => mount_with(&share.tag, &share.path, "virtiofs", 0, ""),
            // cache=none: the host changes files under the guest. (cache=mmap, which lets
            // programs map files, lost data here: Debian 13's kernel, a 64 MiB `dd` over an
            // existing file came out short on the host and read back otherwise in the guest.)
            Transport::NineP => mount_with(
                &share.tag,
                &share.path,
                "9p",
                0,
                "trans=virtio,version=9p2000.L,msize=524288,cache=none",
            ),
        };
        let line = match mounted {
            Ok(()) => {
                paths.push(share.path.clone());
                format!("{}: mounted ({})", share.path, transport.as_str())
            }
            Err(e) => format!("{}: not mounted: {e}", share.path),
        };
        lines.push(line);
    }
    for hidden in &boot.hidden {
        let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        if let Err(e) = mount_with("cairn-hidden", hidden, "tmpfs", flags, "mode=0555,size=4k") {
            // Nothing of a share that should hide the database may stay open: unmount it.
            lines.push(format!("{hidden}: could not be hidden ({e}); its share is unmounted"));
            unmount_share_of(boot, hidden);
            paths.retain(|p| !cairn_schema::shares::inside(hidden, p));
        }
    }
    Mounted { lines, paths }
}

/// Detaches the share that holds `path`.
fn unmount_share_of(boot: &Boot, path: &str) {
    for share in boot.shares.iter().filter(|s| cairn_schema::shares::inside(path, &s.path)) {
        let Ok(target) = std::ffi::CString::new(share.path.as_str()) else { continue };
        // SAFETY: umount2 with a NUL-terminated path.
        unsafe {
            libc::umount2(target.as_ptr(), libc::MNT_DETACH);
        }
    }
}
