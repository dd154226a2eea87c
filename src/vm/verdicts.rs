//! What this host's hypervisors can do, probed once and remembered: whether the embedded VMM
//! can run Linux (its KVM probe), whether qemu's KVM boots the guest kernel, and whether a
//! native boot has failed here. Probing took seconds on every `cairn up`; the verdicts hold
//! until the host changes (kernel release, CPU model) or cairn does, or the user asks again
//! (`cairn up --reprobe`; `cairn set hypervisor native` forgets a failed native boot).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a verdict depends on: a different kernel, CPU or cairn may answer differently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostId {
    pub kernel_release: String,
    pub cpu_model: String,
    /// This cairn: its version and its binary's size and modification time.
    pub cairn: String,
}

impl HostId {
    pub fn current() -> HostId {
        let kernel_release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned();
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
            .map(|(_, model)| model.trim().to_owned())
            .unwrap_or_default();
        let binary = std::env::current_exe().ok().and_then(|p| std::fs::metadata(p).ok());
        let stamp = binary.map_or(String::new(), |m| {
            let mtime =
                m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
            format!("{} {}", m.len(), mtime.map_or(0, |d| d.as_nanos()))
        });
        HostId {
            kernel_release,
            cpu_model,
            cairn: format!("{} {stamp}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// The remembered verdicts of one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdicts {
    pub host: HostId,
    /// The embedded VMM's KVM probe: how it can run Linux, or why not.
    pub native: Option<Result<String, String>>,
    /// qemu's KVM, by the sha256 of the kernel it was tried with: whether it boots, and why.
    pub qemu_kvm: Option<(String, bool, String)>,
    /// A native boot that failed here, and why; qemu runs the VM until the user asks again.
    pub native_boot_failed: Option<String>,
}

impl Verdicts {
    /// The verdicts in `path` if they were made on this host by this cairn, else none.
    pub fn load(path: &Path) -> Verdicts {
        let host = HostId::current();
        match crate::json_file::load::<Verdicts>(path) {
            Some(v) if v.host == host => v,
            _ => Verdicts { host, native: None, qemu_kvm: None, native_boot_failed: None },
        }
    }

    /// Writes them whole or not at all.
    pub fn save(&self, path: &Path) {
        if let Err(e) = crate::json_file::save(path, self) {
            tracing::warn!(error = %e, path = %path.display(), "saving the hypervisor verdicts");
        }
    }

    /// Forgets a failed native boot, so that the next boot tries the embedded VMM again.
    pub fn forget_native_failure(path: &Path) -> bool {
        let mut verdicts = Verdicts::load(path);
        if verdicts.native_boot_failed.take().is_none() {
            return false;
        }
        verdicts.save(path);
        true
    }
}

/// Where a data directory keeps them.
pub fn path(home: &Path) -> PathBuf {
    home.join("hypervisors.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_hold_for_the_same_host_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = path(dir.path());
        let mut v = Verdicts::load(&path);
        assert_eq!(v.native, None);
        v.native = Some(Err("KVM cannot emulate lock cmpxchg16b".into()));
        v.native_boot_failed = Some("died in early boot".into());
        v.save(&path);
        assert_eq!(Verdicts::load(&path), v);
        assert!(Verdicts::forget_native_failure(&path));
        assert_eq!(Verdicts::load(&path).native_boot_failed, None);
        assert!(!Verdicts::forget_native_failure(&path));
        // Another host (here: another kernel release) probes again.
        let mut other = Verdicts::load(&path);
        other.host.kernel_release = "0.0.0-other".into();
        other.save(&path);
        assert_eq!(Verdicts::load(&path).native, None);
    }
}
