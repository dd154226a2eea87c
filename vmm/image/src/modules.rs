//! The kernel modules an image carries: the ones the guest needs, and every module they depend
//! on, in an order that loads each after its dependencies. Debian's kernel package has no
//! modules.dep (depmod makes it at install time), so the dependencies are read from each
//! module's own `.modinfo` (`depends=a,b`). A module the kernel has built in is not in the
//! tree and is left out, as are its dependencies.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::Error;

/// What the guest needs, by module name; dependencies come by themselves. Those whose device
/// a backend lacks load and stay idle.
pub const WANTED: &[&str] = &[
    // /Database: 9P over the fd transport (qemu's channel) or virtio (the native VMM).
    "9p",
    "9pnet_fd",
    "9pnet_virtio",
    // The devices of both backends.
    "virtio_mmio",
    "virtio_pci",
    "virtio_net",
    "virtio_console",
    "virtio_blk",
    "virtio-rng",
    "vmw_vsock_virtio_transport",
    // The data disk: ext4 (its metadata checksums need a crc32c the kernel can find), and
    // overlayfs for the engine's overlay2 driver.
    "ext4",
    "crc32c_generic",
    "overlay",
    // The read-only system disk.
    "erofs",
    // dockerd's default networking: the docker0 bridge and its veth pairs, bridged traffic
    // through netfilter, and the nf_tables rules iptables-nft writes (NAT for egress and
    // published ports, the extensions dockerd's rules use, the embedded DNS's redirects).
    "bridge",
    "br_netfilter",
    "veth",
    "nf_tables",
    "nft_compat",
    "nft_chain_nat",
    "nft_ct",
    "nft_masq",
    "nft_nat",
    "nft_redir",
    "nft_reject_inet",
    "nft_fib_inet",
    "nf_nat",
    "nf_conntrack",
    "nf_conntrack_netlink",
    "xt_addrtype",
    "xt_conntrack",
    "xt_MASQUERADE",
    "xt_nat",
    "xt_tcpudp",
    "xt_mark",
    "xt_comment",
    "xt_multiport",
    "xt_set",
    "ipt_REJECT",
    "ip6t_REJECT",
    // Foreign architectures: QEMU's user-mode emulators registered with binfmt_misc.
    "binfmt_misc",
];

/// A module file name's canonical form: `-` and `_` are the same to the kernel.
fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// Every module file under `dir` by canonical name (`ext4` -> .../ext4.ko.xz).
fn index(dir: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let Some(file) = path.file_name().and_then(|n| n.to_str()) else { continue };
            let stem = file.strip_suffix(".ko.xz").or_else(|| file.strip_suffix(".ko"));
            if let Some(stem) = stem {
                out.insert(canonical(stem), path.clone());
            }
        }
    }
    out
}

/// A module's bytes (decompressed when it is .ko.xz).
fn read(path: &Path, name: &str) -> Result<Vec<u8>, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if path.extension().is_some_and(|e| e == "xz") {
        let mut out = Vec::new();
        lzma_rs::xz_decompress(&mut bytes.as_slice(), &mut out)
            .map_err(|e| Error::Module { module: name.to_owned(), reason: e.to_string() })?;
        return Ok(out);
    }
    Ok(bytes)
}

/// The `depends=` entry of a module's `.modinfo` (NUL-separated `key=value` strings).
fn depends(module: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(at) = module.windows(KEY.len()).position(|w| w == KEY) else { return Vec::new() };
    let rest = &module[at + KEY.len()..];
    let value = &rest[..rest.iter().position(|b| *b == 0).unwrap_or(rest.len())];
    String::from_utf8_lossy(value).split(',').filter(|d| !d.is_empty()).map(canonical).collect()
}

/// The modules `wanted` needs from the tree at `dir`, each after its dependencies: (file name
/// in the image, bytes).
pub fn resolve(dir: &Path, wanted: &[&str]) -> Result<Vec<(String, Vec<u8>)>, Error> {
    let index = index(dir);
    let mut out = Vec::new();
    let mut done = BTreeSet::new();
    for name in wanted {
        visit(&canonical(name), &index, &mut done, &mut out, 0)?;
    }
    Ok(out)
}

fn visit(
    name: &str,
    index: &BTreeMap<String, PathBuf>,
    done: &mut BTreeSet<String>,
    out: &mut Vec<(String, Vec<u8>)>,
    depth: usize,
) -> Result<(), Error> {
    if done.contains(name) {
        return Ok(());
    }
    // Built in, or not in this kernel: nothing to load.
    let Some(path) = index.get(name) else { return Ok(()) };
    if depth > 32 {
        return Err(Error::Module { module: name.to_owned(), reason: "dependency loop".into() });
    }
    done.insert(name.to_owned());
    let bytes = read(path, name)?;
    for dependency in depends(&bytes) {
        visit(&dependency, index, done, out, depth + 1)?;
    }
    out.push((format!("{name}.ko"), bytes));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(depends: &str) -> Vec<u8> {
        format!("\x7fELF junk\0license=GPL\0depends={depends}\0vermagic=6.1\0").into_bytes()
    }

    #[test]
    fn dependencies_come_first_once_and_builtins_are_left_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = dir.path().join("kernel/fs");
        std::fs::create_dir_all(&fs).expect("mkdir");
        std::fs::write(fs.join("ext4.ko"), module("jbd2,mbcache,crc16")).expect("write");
        std::fs::write(fs.join("jbd2.ko"), module("")).expect("write");
        std::fs::write(fs.join("mbcache.ko"), module("")).expect("write");
        // crc16 is built in: not in the tree.
        std::fs::write(fs.join("virtio-rng.ko"), module("")).expect("write");
        std::fs::write(fs.join("overlay.ko"), module("")).expect("write");
        let names: Vec<String> = resolve(dir.path(), &["ext4", "overlay", "virtio_rng", "jbd2"])
            .expect("resolves")
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["jbd2.ko", "mbcache.ko", "ext4.ko", "overlay.ko", "virtio_rng.ko"]);
        assert_eq!(depends(&module("a,b-c")), ["a", "b_c"]);
        assert!(depends(b"no modinfo").is_empty());
    }
}
