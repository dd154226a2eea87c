//! Applying one commit's settings inside the guest, each key all or nothing: a key that fails
//! keeps its previous value and is reported with the reason.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::report::Outcome;

/// Where dockerd reads its configuration.
pub const DAEMON_JSON: &str = "/etc/docker/daemon.json";

/// Reads a setting of the commit being applied (`ro` is its tree).
fn setting(ro: &Path, path: &str) -> Result<String, crate::Error> {
    std::fs::read(ro.join(path))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .map_err(|source| crate::Error::ReadSetting { path: path.to_owned(), source })
}

/// sethostname(2) with the first line of `etc/hostname`.
pub fn hostname(ro: &Path) -> Outcome {
    let wanted = match setting(ro, "etc/hostname") {
        Ok(v) => v.trim().to_owned(),
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    // SAFETY: the pointer and length describe `wanted`'s bytes, which outlive the call.
    let rc = unsafe { libc::sethostname(wanted.as_ptr().cast(), wanted.len()) };
    if rc != 0 {
        return Outcome::Failed(format!(
            "sethostname {wanted:?}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Outcome::Applied
}

/// The host name the kernel has now.
pub fn current_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_owned()
}

/// `name = value` lines from etc/sysctl.conf, written under /proc/sys. If one fails, those
/// already written get their old values back. Lines are read by the schema's own parser, so a
/// comment or a name means the same here as it did when the commit was checked; and whatever
/// the schema let through, nothing is written outside `proc_sys`.
pub fn sysctl(ro: &Path, proc_sys: &Path) -> Outcome {
    use cairn_schema::sysctl::{parse, Line};
    let text = match setting(ro, "etc/sysctl.conf") {
        Ok(v) => v,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let lines = match parse(&text) {
        Ok(lines) => lines,
        Err(e) => return Outcome::Failed(format!("{:?} {}", e.line, e.problem)),
    };
    let mut written: Vec<(std::path::PathBuf, String)> = Vec::new();
    for line in lines {
        let Line::Setting(s) = line else { continue };
        let (name, value) = (s.name(), s.value.as_str());
        let Some(path) = parameter_path(proc_sys, &s.components) else {
            return undo(written, format!("{name}: not a kernel parameter under /proc/sys"));
        };
        let old = match std::fs::read_to_string(&path) {
            Ok(old) => old,
            Err(_) if s.ignore_failure => continue,
            Err(e) => return undo(written, format!("{name}: {e}")),
        };
        match std::fs::write(&path, value) {
            Ok(()) => written.push((path, old)),
            Err(_) if s.ignore_failure => {}
            Err(e) => return undo(written, format!("{name} = {value}: {e}")),
        }
    }
    Outcome::Applied
}

/// The file of a parameter under `proc_sys`, refusing any component that could leave it.
fn parameter_path(proc_sys: &Path, components: &[String]) -> Option<std::path::PathBuf> {
    let mut path = proc_sys.to_path_buf();
    for c in components {
        let plain = !c.is_empty()
            && c != "."
            && c != ".."
            && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !plain {
            return None;
        }
        path.push(c);
    }
    path.starts_with(proc_sys).then_some(path)
}

fn undo(written: Vec<(std::path::PathBuf, String)>, why: String) -> Outcome {
    for (path, old) in written.into_iter().rev() {
        let _ = std::fs::write(path, old.trim());
    }
    Outcome::Failed(why)
}

/// Writes daemon.json atomically (a reader never sees half a file); returns the outcome and
/// the sha256 of the file in place afterwards.
pub fn daemon_json(ro: &Path, target: &Path) -> (Outcome, String) {
    let outcome = match setting(ro, "etc/docker/daemon.json") {
        Err(e) => Outcome::Failed(e.to_string()),
        Ok(content) => match super::engine::write_atomically(target, content.as_bytes()) {
            Ok(()) => Outcome::Applied,
            Err(e) => Outcome::Failed(e.to_string()),
        },
    };
    (outcome, file_sha256(target))
}

/// The sha256 of the file at `path` (empty when it cannot be read).
pub fn file_sha256(path: &Path) -> String {
    std::fs::read(path).map(|b| hex(&Sha256::digest(&b))).unwrap_or_default()
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_is_all_or_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ro, proc_sys) = (dir.path().join("ro"), dir.path().join("sys"));
        std::fs::create_dir_all(ro.join("etc")).expect("mkdir");
        std::fs::create_dir_all(proc_sys.join("vm")).expect("mkdir");
        std::fs::write(proc_sys.join("vm/swappiness"), "60\n").expect("write");
        std::fs::write(ro.join("etc/sysctl.conf"), "vm.swappiness = 10\n").expect("write");
        assert_eq!(sysctl(&ro, &proc_sys), Outcome::Applied);
        assert_eq!(std::fs::read_to_string(proc_sys.join("vm/swappiness")).expect("read"), "10");
        std::fs::write(ro.join("etc/sysctl.conf"), "vm.swappiness = 20\nvm.nope = 1\n")
            .expect("write");
        let Outcome::Failed(why) = sysctl(&ro, &proc_sys) else { panic!("vm.nope must fail") };
        assert!(why.starts_with("vm.nope"), "{why}");
        assert_eq!(std::fs::read_to_string(proc_sys.join("vm/swappiness")).expect("read"), "10");
        // `;` comments mean the same as for the schema, and `-` ignores a failure.
        std::fs::write(ro.join("etc/sysctl.conf"), "; note\n-vm.nope = 1\nvm.swappiness = 30\n")
            .expect("write");
        assert_eq!(sysctl(&ro, &proc_sys), Outcome::Applied);
        assert_eq!(std::fs::read_to_string(proc_sys.join("vm/swappiness")).expect("read"), "30");
    }

    #[test]
    fn sysctl_never_writes_outside_proc_sys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ro, proc_sys) = (dir.path().join("ro"), dir.path().join("sys"));
        std::fs::create_dir_all(ro.join("etc")).expect("mkdir");
        std::fs::create_dir_all(&proc_sys).expect("mkdir");
        let victim = dir.path().join("shadow");
        std::fs::write(&victim, "secret").expect("write");
        for line in [
            format!("{} = root::0:0:99999:7:::", victim.display()),
            "../shadow = x".to_owned(),
            ".shadow = x".to_owned(),
        ] {
            std::fs::write(ro.join("etc/sysctl.conf"), &line).expect("write");
            assert!(matches!(sysctl(&ro, &proc_sys), Outcome::Failed(_)), "{line} applied");
        }
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "secret");
        assert_eq!(parameter_path(&proc_sys, &["..".into(), "x".into()]), None);
    }

    #[test]
    fn daemon_json_is_replaced_whole_and_hashed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ro = dir.path().join("ro");
        std::fs::create_dir_all(ro.join("etc/docker")).expect("mkdir");
        std::fs::write(ro.join("etc/docker/daemon.json"), "{\"debug\": true}\n").expect("write");
        let target = dir.path().join("guest/etc/docker/daemon.json");
        let (outcome, hash) = daemon_json(&ro, &target);
        assert_eq!(outcome, Outcome::Applied);
        assert_eq!(hash, hex(&Sha256::digest(b"{\"debug\": true}\n")));
    }
}
