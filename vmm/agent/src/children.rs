//! The agent's children and everyone else's orphans.
//!
//! PID 1 inherits every process whose parent dies (containerd after a killed dockerd, a
//! daemonised udhcpc); left unreaped they stay zombies for the life of the VM. A reaper that
//! simply called `waitpid(-1)` would also take the exit status of the agent's own children
//! from under `Child::wait`, so the agent registers what it spawns here and the reaper only
//! reaps zombies it does not know. Spawning and scanning hold the same lock: a child is
//! registered before the reaper can look at it.

use std::collections::BTreeSet;
use std::process::{Child, Command, ExitStatus};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

static KNOWN: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

fn known() -> std::sync::MutexGuard<'static, BTreeSet<u32>> {
    KNOWN.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Spawns `command` as a child the reaper leaves alone.
pub fn spawn(command: &mut Command) -> std::io::Result<Child> {
    let mut known = known();
    let child = command.spawn()?;
    known.insert(child.id());
    Ok(child)
}

/// Waits for a child of [`spawn`] and forgets it.
pub fn wait(child: &mut Child) -> std::io::Result<ExitStatus> {
    let status = child.wait();
    known().remove(&child.id());
    status
}

/// Whether a child of [`spawn`] has ended (and then forgets it).
pub fn try_wait(child: &mut Child) -> std::io::Result<Option<ExitStatus>> {
    let status = child.try_wait();
    if !matches!(status, Ok(None)) {
        known().remove(&child.id());
    }
    status
}

/// Runs `command` to completion.
pub fn run(command: &mut Command) -> std::io::Result<ExitStatus> {
    let mut child = spawn(command)?;
    wait(&mut child)
}

/// Runs `command` to completion with its standard output and error captured.
pub fn run_output(command: &mut Command) -> std::io::Result<std::process::Output> {
    command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let child = spawn(command)?;
    let id = child.id();
    let output = child.wait_with_output();
    known().remove(&id);
    output
}

/// Reaps orphaned zombies every second, on a thread of its own.
pub fn start_reaper() {
    let spawned = std::thread::Builder::new().name("reaper".into()).spawn(|| loop {
        std::thread::sleep(Duration::from_secs(1));
        reap_orphans();
    });
    if let Err(e) = spawned {
        super::say(&format!("no reaper for orphaned processes: {e}"));
    }
}

/// The pid, state and parent of a `/proc/PID/stat` line (the name may hold spaces and
/// parentheses, so the fields are read after its last ')').
fn stat_fields(stat: &str) -> Option<(char, u32)> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some((state, parent))
}

fn reap_orphans() {
    let me = std::process::id();
    let known = known();
    let Ok(listing) = std::fs::read_dir("/proc") else { return };
    for entry in listing.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if known.contains(&pid) {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if stat_fields(&stat) == Some(('Z', me)) {
            let Ok(pid) = libc::pid_t::try_from(pid) else { continue };
            // SAFETY: waitpid on one zombie child, status not wanted.
            unsafe {
                libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names() {
        assert_eq!(stat_fields("42 (a) b) Z 1 42 42 0"), Some(('Z', 1)));
        assert_eq!(stat_fields("7 (sh) S 3 7"), Some(('S', 3)));
        assert_eq!(stat_fields("garbage"), None);
    }

    #[test]
    fn a_registered_child_keeps_its_status() {
        let mut child =
            spawn(Command::new("true").stdout(std::process::Stdio::null())).expect("spawns true");
        assert!(known().contains(&child.id()));
        assert!(wait(&mut child).expect("waits").success());
        assert!(!known().contains(&child.id()));
    }
}
