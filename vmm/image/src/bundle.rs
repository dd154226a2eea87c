//! What an image carries beyond busybox and the agent: programs from Debian packages, with
//! every shared library they link, in bundles. Every image has the data disk's tools
//! (e2fsprogs: the agent formats a blank disk, checks it at boot, grows it); the docker flavour
//! adds Debian's docker.io engine (dockerd, containerd, runc, tini as docker-init). The host
//! gets the docker.io package's `docker` CLI next to the image.

use std::collections::BTreeMap;
use std::path::Path;

use super::{debian, Entry, Error, Flavour};

/// Packages unpacked together, and the programs taken from them.
#[derive(Debug)]
pub struct Bundle {
    /// The programs' packages and the packages of every library their ELF headers name.
    pub packages: &'static [&'static str],
    /// Where a package puts a program, and where the guest finds it.
    pub programs: &'static [(&'static str, &'static str)],
}

/// The data disk's tools: mke2fs, e2fsck and resize2fs, and their libraries.
pub const DISK: Bundle = Bundle {
    packages: &[
        "e2fsprogs",
        "libext2fs2",
        "libcom-err2",
        "libss2",
        "libblkid1",
        "libuuid1",
        "libc6",
    ],
    programs: &[
        ("sbin/mke2fs", "usr/sbin/mke2fs"),
        ("sbin/e2fsck", "usr/sbin/e2fsck"),
        ("sbin/resize2fs", "usr/sbin/resize2fs"),
    ],
};

/// The Docker engine: the programs, then every library their ELF headers name (dockerd:
/// libsystemd, libdevmapper; runc: libseccomp; libsystemd's own lzma, zstd, lz4, gcrypt,
/// gpg-error, cap; libdevmapper's selinux, udev, pcre2) and glibc itself. docker-init is
/// tini-static (dockerd's `--init`); the CLI stays on the host.
pub const ENGINE: Bundle = Bundle {
    packages: &[
        "docker.io",
        "containerd",
        "runc",
        "tini",
        "libc6",
        "libseccomp2",
        "libsystemd0",
        "libdevmapper1.02.1",
        "libcap2",
        "libgcrypt20",
        "libgpg-error0",
        "liblzma5",
        "libzstd1",
        "liblz4-1",
        "libselinux1",
        "libpcre2-8-0",
        "libudev1",
    ],
    programs: &[
        ("usr/sbin/dockerd", "usr/bin/dockerd"),
        ("usr/sbin/docker-proxy", "usr/bin/docker-proxy"),
        ("usr/bin/containerd", "usr/bin/containerd"),
        ("usr/bin/containerd-shim-runc-v2", "usr/bin/containerd-shim-runc-v2"),
        ("usr/sbin/runc", "usr/bin/runc"),
        ("usr/bin/tini-static", "usr/bin/docker-init"),
    ],
};

/// The bundles of a flavour.
pub fn of(flavour: Flavour) -> &'static [&'static Bundle] {
    match flavour {
        Flavour::Base => &[&DISK],
        Flavour::Docker => &[&DISK, &ENGINE],
    }
}

/// Where the packages keep their libraries; all of them land in the guest's first one, where
/// the dynamic loader looks without a cache.
const LIBRARY_DIRS: &[&str] = &["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu"];

/// The CLI in the docker.io package, copied next to the image for the host.
pub const CLI: &str = "usr/bin/docker";

/// The versions apt would download of the bundles' packages, by package.
pub fn versions(bundles: &[&Bundle]) -> Result<BTreeMap<String, String>, Error> {
    let packages: std::collections::BTreeSet<&str> =
        bundles.iter().flat_map(|b| b.packages.iter().copied()).collect();
    packages.into_iter().map(|p| Ok((p.to_owned(), debian::version(p)?))).collect()
}

/// Downloads and unpacks every package into `root`.
pub fn unpack(
    versions: &BTreeMap<String, String>,
    cache: &Path,
    root: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<(), Error> {
    for (package, version) in versions {
        progress(&format!("guest image: fetching {package} {version}"));
        let deb = debian::fetch(package, version, cache)?;
        debian::unpack(&deb, root)?;
    }
    Ok(())
}

/// The initramfs entries of the bundles, read from the unpacked `root`.
pub fn entries(root: &Path, bundles: &[&Bundle]) -> Result<Vec<(String, Entry)>, Error> {
    let dirs = ["usr", "usr/bin", "usr/sbin", "lib/x86_64-linux-gnu", "lib64", "var"];
    let mut out: Vec<(String, Entry)> =
        dirs.iter().map(|d| ((*d).to_owned(), Entry::Dir)).collect();
    // dockerd and containerd keep their sockets and pid files under /var/run.
    out.push(("var/run".into(), Entry::Link("/run".into())));
    out.push((
        "lib64/ld-linux-x86-64.so.2".into(),
        Entry::Link("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2".into()),
    ));
    for (from, to) in bundles.iter().flat_map(|b| b.programs.iter()) {
        let path = root.join(from);
        let data = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        out.push(((*to).to_owned(), Entry::Exe(data)));
    }
    let mut libraries = BTreeMap::new();
    for dir in LIBRARY_DIRS {
        let dir = root.join(dir);
        let Ok(listing) = std::fs::read_dir(&dir) else { continue };
        for entry in listing.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.contains(".so") {
                continue;
            }
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
            let entry = if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).map_err(|e| Error::io(&path, e))?;
                Entry::Link(target.to_string_lossy().into_owned())
            } else if meta.is_file() {
                Entry::Exe(std::fs::read(&path).map_err(|e| Error::io(&path, e))?)
            } else {
                continue;
            };
            libraries.insert(format!("lib/x86_64-linux-gnu/{name}"), entry);
        }
    }
    if !libraries.contains_key("lib/x86_64-linux-gnu/libc.so.6") {
        return Err(Error::Missing("lib/x86_64-linux-gnu/libc.so.6 (libc6)".into()));
    }
    out.extend(libraries);
    Ok(out)
}
