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
    /// Symbolic links the guest needs and no package makes (Debian's alternatives, which
    /// dpkg's maintainer scripts would set up): (link, target).
    pub links: &'static [(&'static str, &'static str)],
    /// Directories of plugins a program loads with dlopen (iptables' extensions): every
    /// shared object in them is copied, and the libraries they name are checked like a
    /// program's.
    pub plugins: &'static [&'static str],
    /// Plain files the guest reads, copied as they are (QEMU's binfmt_misc registrations).
    pub data: &'static [&'static str],
}

/// The data disk's tools: mke2fs, e2fsck and resize2fs, and their libraries.
pub const DISK: Bundle = Bundle {
    packages: &["e2fsprogs", "libext2fs2t64", "libcom-err2", "libblkid1", "libuuid1", "libc6"],
    programs: &[
        ("usr/sbin/mke2fs", "usr/sbin/mke2fs"),
        ("usr/sbin/e2fsck", "usr/sbin/e2fsck"),
        ("usr/sbin/resize2fs", "usr/sbin/resize2fs"),
    ],
    links: &[],
    plugins: &[],
    data: &[],
};

/// The Docker engine: the programs, then every library their ELF headers name (dockerd:
/// libsystemd, which needs libcap; runc: libseccomp; containerd and docker-proxy only glibc)
/// and glibc itself. docker-init is tini-static (dockerd's `--init`); the CLI stays on the
/// host. [`entries`] checks the list: a library a program names and no package brought is a
/// build error, not a guest that cannot start dockerd.
pub const ENGINE: Bundle = Bundle {
    packages: &[
        "docker.io",
        // Debian 13 ships the CLI on its own; it stays on the host, next to the image.
        "docker-cli",
        "containerd",
        "runc",
        "tini",
        "libc6",
        "libseccomp2",
        "libsystemd0",
        "libcap2",
        // dockerd's default networking: iptables in its nf_tables flavour, its extensions and
        // their libraries.
        "iptables",
        "libxtables12",
        "libip4tc2",
        "libip6tc2",
        "libnftnl11",
        "libmnl0",
        "libnetfilter-conntrack3",
        "libnfnetlink0",
    ],
    programs: &[
        ("usr/sbin/dockerd", "usr/bin/dockerd"),
        ("usr/sbin/docker-proxy", "usr/bin/docker-proxy"),
        ("usr/bin/containerd", "usr/bin/containerd"),
        ("usr/bin/containerd-shim-runc-v2", "usr/bin/containerd-shim-runc-v2"),
        ("usr/sbin/runc", "usr/bin/runc"),
        ("usr/bin/tini-static", "usr/bin/docker-init"),
        ("usr/sbin/xtables-nft-multi", "usr/sbin/xtables-nft-multi"),
    ],
    // dockerd runs `iptables` and `ip6tables` from PATH; the multi-call binary acts by name.
    links: &[
        ("usr/sbin/iptables", "xtables-nft-multi"),
        ("usr/sbin/iptables-save", "xtables-nft-multi"),
        ("usr/sbin/iptables-restore", "xtables-nft-multi"),
        ("usr/sbin/ip6tables", "xtables-nft-multi"),
        ("usr/sbin/ip6tables-save", "xtables-nft-multi"),
        ("usr/sbin/ip6tables-restore", "xtables-nft-multi"),
    ],
    plugins: &[XTABLES],
    data: &[],
};

/// Foreign architectures: Debian 13's static QEMU user-mode emulators (package qemu-user, which
/// is static since QEMU 10 in Debian; qemu-user-static is its transitional name) for the
/// architectures the `binfmt` key offers, the links binfmt_misc names as their interpreters,
/// and Debian's registration lines (magic, mask and the OPF flags: F opens the emulator when it
/// is registered, so that it works in containers whose image has none). The agent registers
/// what the key asks for.
pub const EMULATORS: Bundle = Bundle {
    packages: &["qemu-user"],
    programs: &[
        ("usr/bin/qemu-aarch64", "usr/bin/qemu-aarch64"),
        ("usr/bin/qemu-arm", "usr/bin/qemu-arm"),
        ("usr/bin/qemu-riscv64", "usr/bin/qemu-riscv64"),
        ("usr/bin/qemu-ppc64le", "usr/bin/qemu-ppc64le"),
        ("usr/bin/qemu-s390x", "usr/bin/qemu-s390x"),
    ],
    links: &[
        ("usr/libexec/qemu-binfmt/aarch64-binfmt-P", "../../bin/qemu-aarch64"),
        ("usr/libexec/qemu-binfmt/arm-binfmt-P", "../../bin/qemu-arm"),
        ("usr/libexec/qemu-binfmt/riscv64-binfmt-P", "../../bin/qemu-riscv64"),
        ("usr/libexec/qemu-binfmt/ppc64le-binfmt-P", "../../bin/qemu-ppc64le"),
        ("usr/libexec/qemu-binfmt/s390x-binfmt-P", "../../bin/qemu-s390x"),
    ],
    plugins: &[],
    data: &[
        "usr/share/qemu/binfmt.d/qemu-aarch64.conf",
        "usr/share/qemu/binfmt.d/qemu-arm.conf",
        "usr/share/qemu/binfmt.d/qemu-riscv64.conf",
        "usr/share/qemu/binfmt.d/qemu-ppc64le.conf",
        "usr/share/qemu/binfmt.d/qemu-s390x.conf",
    ],
};

/// Where iptables looks for its extensions (its compiled-in XTABLES_LIBDIR).
pub const XTABLES: &str = "usr/lib/x86_64-linux-gnu/xtables";

/// The bundles of a flavour.
pub fn of(flavour: Flavour) -> &'static [&'static Bundle] {
    match flavour {
        Flavour::Base => &[&DISK],
        Flavour::Docker => &[&DISK, &ENGINE, &EMULATORS],
    }
}

/// Where the packages keep their libraries; all of them land in the guest's first one, where
/// the dynamic loader looks without a cache.
const LIBRARY_DIRS: &[&str] = &["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu"];

/// The CLI in the docker.io package, copied next to the image for the host.
pub const CLI: &str = "usr/bin/docker";

/// The versions apt would download of the bundles' packages, by package.
pub fn versions(apt: &debian::Apt, bundles: &[&Bundle]) -> Result<BTreeMap<String, String>, Error> {
    let packages: std::collections::BTreeSet<&str> =
        bundles.iter().flat_map(|b| b.packages.iter().copied()).collect();
    packages.into_iter().map(|p| Ok((p.to_owned(), apt.version(p)?))).collect()
}

/// Downloads and unpacks every package into `root`.
pub fn unpack(
    apt: &debian::Apt,
    versions: &BTreeMap<String, String>,
    cache: &Path,
    root: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<(), Error> {
    for (package, version) in versions {
        progress(&format!("guest image: fetching {package} {version}"));
        let deb = apt.fetch(package, version, cache)?;
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
    let mut needed = BTreeMap::new();
    for (from, to) in bundles.iter().flat_map(|b| b.programs.iter()) {
        let path = root.join(from);
        let data = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        for library in libraries_needed(&data, from)? {
            needed.entry(library).or_insert(*from);
        }
        out.push(((*to).to_owned(), Entry::Exe(data)));
    }
    for (link, target) in bundles.iter().flat_map(|b| b.links.iter()) {
        add_parents(&mut out, link);
        out.push(((*link).to_owned(), Entry::Link((*target).to_owned())));
    }
    for file in bundles.iter().flat_map(|b| b.data.iter()) {
        let path = root.join(file);
        let data = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        add_parents(&mut out, file);
        out.push(((*file).to_owned(), Entry::File(data)));
    }
    for dir in bundles.iter().flat_map(|b| b.plugins.iter()) {
        add_parents(&mut out, &format!("{dir}/"));
        let path = root.join(dir);
        let listing = std::fs::read_dir(&path).map_err(|e| Error::io(&path, e))?;
        let mut names: Vec<_> = listing.flatten().map(|e| e.path()).collect();
        names.sort();
        for path in names {
            let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
                continue;
            };
            let meta = std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
            let entry = format!("{dir}/{name}");
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).map_err(|e| Error::io(&path, e))?;
                out.push((entry, Entry::Link(target.to_string_lossy().into_owned())));
            } else if meta.is_file() && name.ends_with(".so") {
                let data = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
                for library in libraries_needed(&data, &entry)? {
                    needed.entry(library).or_insert(*dir);
                }
                out.push((entry, Entry::Exe(data)));
            }
        }
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
    // The libraries' own dependencies, until nothing new turns up.
    let mut seen = std::collections::BTreeSet::new();
    while let Some((library, by)) = needed.iter().find(|(l, _)| !seen.contains(*l)) {
        let (library, by) = (library.clone(), *by);
        seen.insert(library.clone());
        match libraries.get(&format!("lib/x86_64-linux-gnu/{library}")) {
            None => return Err(Error::Library { program: by.to_owned(), library }),
            Some(Entry::Exe(data)) => {
                for next in libraries_needed(data, &library)? {
                    needed.entry(next).or_insert(by);
                }
            }
            // A link to the file that is itself a key of `libraries`; checked under its name.
            Some(Entry::Link(target)) => {
                let target = target.rsplit('/').next().unwrap_or(target).to_owned();
                needed.entry(target).or_insert(by);
            }
            Some(Entry::Dir | Entry::File(_)) => {}
        }
    }
    out.extend(libraries);
    Ok(out)
}

/// A directory entry for each directory above `path` that `out` has none for yet (an
/// initramfs creates no directory by itself).
fn add_parents(out: &mut Vec<(String, Entry)>, path: &str) {
    let mut parent = String::new();
    let Some((dirs, _)) = path.rsplit_once('/') else { return };
    for part in dirs.split('/') {
        parent = if parent.is_empty() { part.to_owned() } else { format!("{parent}/{part}") };
        if !out.iter().any(|(name, _)| *name == parent) {
            out.push((parent.clone(), Entry::Dir));
        }
    }
}

/// The libraries an ELF file names in its dynamic section (none for a static program).
fn libraries_needed(data: &[u8], name: &str) -> Result<Vec<String>, Error> {
    let elf = goblin::elf::Elf::parse(data)
        .map_err(|e| Error::Elf { path: name.to_owned(), reason: e.to_string() })?;
    Ok(elf.libraries.iter().map(|l| (*l).to_owned()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host's `true` (glibc only) and `ls` (glibc and libselinux, on Debian).
    const HOST: Bundle = Bundle {
        packages: &[],
        programs: &[("usr/bin/true", "usr/bin/true"), ("usr/bin/ls", "usr/bin/ls")],
        links: &[],
        plugins: &[],
        data: &[],
    };

    fn root_with(dir: &Path, libraries: &[&str]) {
        std::fs::create_dir_all(dir.join("usr/bin")).expect("mkdir");
        std::fs::create_dir_all(dir.join("usr/lib/x86_64-linux-gnu")).expect("mkdir");
        for program in ["true", "ls"] {
            std::fs::copy(format!("/usr/bin/{program}"), dir.join("usr/bin").join(program))
                .expect("copy");
        }
        for library in libraries {
            let from = Path::new("/lib/x86_64-linux-gnu").join(library);
            std::fs::copy(&from, dir.join("usr/lib/x86_64-linux-gnu").join(library)).expect("copy");
        }
    }

    #[test]
    fn a_library_that_a_program_loads_and_no_package_brings_is_a_build_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        root_with(dir.path(), &["libc.so.6", "ld-linux-x86-64.so.2"]);
        match entries(dir.path(), &[&HOST]) {
            Err(Error::Library { program, library }) => {
                assert_eq!(program, "usr/bin/ls");
                assert!(library.starts_with("lib"), "{library}");
            }
            other => panic!("expected a missing library, got {:?}", other.map(|e| e.len())),
        }
    }

    #[test]
    fn every_library_named_is_found_through_the_libraries_own_dependencies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ls = std::fs::read("/usr/bin/ls").expect("ls");
        let mut all = vec!["libc.so.6".to_owned(), "ld-linux-x86-64.so.2".to_owned()];
        let mut i = 0;
        let mut pending: Vec<Vec<u8>> = vec![ls];
        while let Some(data) = pending.pop() {
            for library in libraries_needed(&data, "host").expect("elf") {
                if !all.contains(&library) {
                    let bytes = std::fs::read(Path::new("/lib/x86_64-linux-gnu").join(&library))
                        .expect("host library");
                    pending.push(bytes);
                    all.push(library);
                }
            }
            i += 1;
            assert!(i < 100);
        }
        let names: Vec<&str> = all.iter().map(String::as_str).collect();
        root_with(dir.path(), &names);
        let out = entries(dir.path(), &[&HOST]).expect("complete");
        assert!(out.iter().any(|(n, _)| n == "lib/x86_64-linux-gnu/libc.so.6"));
        assert!(out.iter().any(|(n, _)| n == "usr/bin/ls"));
    }
}
