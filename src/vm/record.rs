//! What a running VM needs to be found again: `run/vm.json`, written when the VM starts and
//! removed when it stops. A control plane that restarts (after a crash, a kill or an upgrade)
//! reads it and adopts the VM instead of rebooting it: the guest keeps its containers, and its
//! agent remounts /Database once the new control plane has connected to the channel.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The running VM as the control plane that started it left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRecord {
    pub pid: u32,
    /// The process's start time in clock ticks since boot (`/proc/PID/stat` field 22): a pid
    /// reused by another process does not match it.
    pub start_time: u64,
    pub qmp: PathBuf,
    /// The commit whose reboot-class values the VM was started with.
    pub booted: String,
    pub accel: super::Accel,
    pub memory_mib: u64,
    pub ncpu: u32,
}

impl VmRecord {
    pub fn load(path: &Path) -> Option<VmRecord> {
        crate::json_file::load(path)
    }

    /// Written whole or not at all.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        crate::json_file::save(path, self)
    }

    /// Whether the recorded process still runs (and is still the same process).
    pub fn alive(&self) -> bool {
        process_start_time(self.pid) == Some(self.start_time)
    }
}

/// The start time of a live process; `None` when it is gone or a zombie.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// Field 22 of a `/proc/PID/stat` line, unless the state (field 3) is zombie or dead. The
/// command name (field 2) may hold spaces and parentheses, so fields are counted after its
/// last `)`.
fn parse_stat(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // `fields` now starts at field 4; field 22 is 18 further on.
    fields.nth(18)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_from_a_stat_line() {
        let line =
            "4242 (qemu (x) y) S 1 4242 4242 0 -1 4194560 1 0 0 0 5 6 0 0 20 0 3 0 987654 100 200";
        assert_eq!(parse_stat(line), Some(987654));
        let zombie = line.replace(") S ", ") Z ");
        assert_eq!(parse_stat(&zombie), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_is_alive_and_its_record_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid = std::process::id();
        let record = VmRecord {
            pid,
            start_time: process_start_time(pid).expect("we run"),
            qmp: dir.path().join("qmp.sock"),
            booted: "0".repeat(40),
            accel: crate::vm::Accel::Tcg,
            memory_mib: 512,
            ncpu: 1,
        };
        assert!(record.alive());
        let path = dir.path().join("vm.json");
        record.save(&path).expect("saves");
        assert_eq!(VmRecord::load(&path), Some(record.clone()));
        let reused = VmRecord { start_time: record.start_time + 1, ..record };
        assert!(!reused.alive(), "a reused pid is another process");
    }
}
