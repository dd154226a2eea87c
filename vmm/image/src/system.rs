//! The system disk: the engine and its libraries in a read-only erofs image that the guest
//! mounts at /usr, attached as a second virtio-blk disk.
//!
//! An initramfs is unpacked into RAM at every boot, all of it, before /init runs: with
//! Debian 13's engine that is ~250 MB of Go binaries copied by a TCG guest at each of the
//! reboots the control plane decides on, and held in the guest's memory (and so qemu's)
//! for as long as it runs. A filesystem on a disk is read page by page when a program runs,
//! and its pages are the page cache's to drop. erofs rather than squashfs: it is made for
//! exactly this (read-only system images, Android's), its uncompressed layout maps blocks
//! without a decompressor (under TCG every instruction of a decompressor counts), and both
//! Debian kernels have it as a module. Built with Debian's erofs-utils (mkfs.erofs).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Entry, Error};

/// The serial number the guest finds the system disk by (/sys/block/vdX/serial).
pub const SERIAL: &str = "cairn-system";

/// Where the guest mounts it; the entries under `usr/` are its contents.
pub const MOUNT: &str = "usr";

/// How the image lays out what its bundles carry.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// Everything in the initramfs (how images were built before the system disk; kept for
    /// the base image, which is small, and for the boot benchmark's comparison).
    Initramfs,
    /// The bundles on a read-only system disk; the initramfs keeps the agent, busybox and the
    /// modules that mount it.
    SystemDisk,
}

impl Layout {
    /// The docker flavour's layout: the system disk, unless `CAIRN_IMAGE_LAYOUT=initramfs`
    /// asks for the old one (tests/bench/docker.sh compares the two).
    pub fn for_flavour(flavour: super::Flavour) -> Layout {
        let initramfs = std::env::var("CAIRN_IMAGE_LAYOUT").is_ok_and(|v| v == "initramfs");
        match flavour {
            super::Flavour::Docker if !initramfs => Layout::SystemDisk,
            _ => Layout::Initramfs,
        }
    }

    /// The image's directory name for `flavour` in this layout: both layouts of a flavour
    /// stay built side by side.
    pub fn dir_name(self, flavour: super::Flavour) -> String {
        match (flavour, self) {
            (super::Flavour::Docker, Layout::Initramfs) => "guest-docker-initramfs".into(),
            _ => flavour.dir_name().into(),
        }
    }
}

/// Files by their path in the image.
pub type Entries = Vec<(String, Entry)>;

/// Splits the bundles' entries: what lies under /usr goes to the system disk (its path
/// relative to the mount), the rest stays in the initramfs. The libraries, kept under
/// lib/x86_64-linux-gnu in the initramfs layout, move to usr/lib/x86_64-linux-gnu, and the
/// initramfs points the old directory there (the dynamic loader looks in both; the link
/// keeps /lib64/ld-linux-x86-64.so.2 resolving).
pub fn split(entries: Entries) -> (Entries, Entries) {
    const LIBS: &str = "lib/x86_64-linux-gnu";
    let (mut initramfs, mut system) = (Vec::new(), Vec::new());
    for (name, entry) in entries {
        if let Some(rest) = name.strip_prefix("usr/") {
            system.push((rest.to_owned(), entry));
        } else if name == "usr" {
            initramfs.push((name, entry));
        } else if name == LIBS {
            initramfs.push((name, Entry::Link(format!("/usr/{LIBS}"))));
            system.push((LIBS.to_owned(), Entry::Dir));
        } else if name.starts_with(&format!("{LIBS}/")) {
            system.push((name, entry));
        } else {
            initramfs.push((name, entry));
        }
    }
    (initramfs, system)
}

/// Writes `entries` into `staging` and makes the erofs image `out` of it: every file owned by
/// root, one fixed timestamp and UUID, so that equal inputs give an equal image.
pub fn build(entries: &[(String, Entry)], staging: &Path, out: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_dir_all(staging);
    std::fs::create_dir_all(staging).map_err(|e| Error::io(staging, e))?;
    for (name, entry) in entries {
        let path = staging.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        match entry {
            Entry::Dir => std::fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?,
            Entry::Exe(data) | Entry::File(data) => {
                let mode = if matches!(entry, Entry::Exe(_)) { 0o755 } else { 0o644 };
                std::fs::write(&path, data).map_err(|e| Error::io(&path, e))?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| Error::io(&path, e))?;
            }
            Entry::Link(target) => {
                std::os::unix::fs::symlink(target, &path).map_err(|e| Error::io(&path, e))?
            }
        }
    }
    let tmp = PathBuf::from(format!("{}.tmp", out.display()));
    let _ = std::fs::remove_file(&tmp);
    let output = Command::new("mkfs.erofs")
        .args(["--quiet", "--all-root", "-x-1", "-T0"])
        .arg("-U00000000-0000-0000-0000-00000000ca12")
        .arg(&tmp)
        .arg(staging)
        .output()
        .map_err(|e| {
            Error::Tool(format!(
                "mkfs.erofs: {e} (install Debian's erofs-utils to build the system disk)"
            ))
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(Error::Tool(format!("mkfs.erofs {}: {}", out.display(), stderr.trim())));
    }
    std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))?;
    let _ = std::fs::remove_dir_all(staging);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_lies_under_usr_and_the_libraries_go_to_the_disk() {
        let entries = vec![
            ("usr".to_owned(), Entry::Dir),
            ("usr/bin/dockerd".to_owned(), Entry::Exe(b"elf".to_vec())),
            ("lib/x86_64-linux-gnu".to_owned(), Entry::Dir),
            ("lib/x86_64-linux-gnu/libc.so.6".to_owned(), Entry::Exe(b"elf".to_vec())),
            ("var/run".to_owned(), Entry::Link("/run".into())),
        ];
        let (initramfs, system) = split(entries);
        let names = |v: &[(String, Entry)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        assert_eq!(names(&initramfs), ["usr", "lib/x86_64-linux-gnu", "var/run"]);
        assert!(matches!(&initramfs[1].1, Entry::Link(t) if t == "/usr/lib/x86_64-linux-gnu"));
        assert_eq!(
            names(&system),
            ["bin/dockerd", "lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu/libc.so.6"]
        );
    }
}
