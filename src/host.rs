//! The machine's limits: RAM and logical CPUs, which bound `memory` and `ncpu`, and the data
//! disk as it is, below which `disk` may not go.

use std::path::Path;

use cairn_schema::Host;

use crate::Error;

const MEMINFO: &str = "/proc/meminfo";

/// Reads this machine's RAM and CPU count, and the size of the data disk of the data
/// directory `home` (none when it has no disk yet).
pub fn detect(home: &Path) -> Result<Host, Error> {
    let meminfo = std::fs::read_to_string(MEMINFO)
        .map_err(|source| Error::HostMemory { path: MEMINFO, source })?;
    let ram_mib = mem_total_mib(&meminfo).ok_or(Error::NoMemTotal { path: MEMINFO })?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let disk_mib = crate::vm::disk::host_view(&crate::vm::disk::path(home))
        .map_or(0, |disk| disk.size_bytes.div_ceil(1 << 20));
    Ok(Host { ram_mib, cores, disk_mib })
}

/// MemTotal in MiB, rounded down to a whole GiB so that the limit reads like the machine's size
/// ("768 to 23552" on a 24 GiB machine whose kernel keeps some memory for itself).
fn mem_total_mib(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    let mib = kib / 1024;
    Some(if mib >= 2048 { mib / 1024 * 1024 } else { mib })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mem_total() {
        assert_eq!(mem_total_mib("MemTotal:       24674304 kB\nMemFree: 1 kB\n"), Some(23552));
        assert_eq!(mem_total_mib("MemTotal: 1048576 kB\n"), Some(1024));
        assert_eq!(mem_total_mib("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn detects_this_machine() {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = detect(dir.path()).expect("a Linux host has /proc/meminfo");
        assert!(host.ram_mib >= 256 && host.cores >= 1 && host.disk_mib == 0, "{host:?}");
        crate::vm::disk::ensure(&crate::vm::disk::path(dir.path()), 5000).expect("a disk");
        assert_eq!(detect(dir.path()).expect("detects").disk_mib, 5000);
    }
}
