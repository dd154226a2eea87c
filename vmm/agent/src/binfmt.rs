//! The `binfmt` key: programs of other architectures through QEMU's user-mode emulators.
//!
//! The image carries Debian's static emulators and their registration lines on the system disk
//! (cairn-image's EMULATORS bundle). Each commit's list is made true in binfmt_misc, live:
//! an architecture the list names and the kernel does not know is registered, one the kernel
//! knows and the list no longer names is removed. Debian's lines carry the F flag: the kernel
//! opens the emulator when it is registered and keeps it open, so a container whose image has
//! no emulator (every image) runs its arm64 programs all the same.

use std::path::Path;

use cairn_schema::catalogue::FOREIGN_ARCHITECTURES;

use crate::report::Outcome;

/// Where binfmt_misc is mounted.
const MISC: &str = "/proc/sys/fs/binfmt_misc";
/// Debian's registration lines, one file per emulator.
const LINES: &str = "/usr/share/qemu/binfmt.d";

/// QEMU's name for one of Debian's architecture names.
fn qemu_name(architecture: &str) -> &str {
    match architecture {
        "arm64" => "aarch64",
        other => other,
    }
}

/// Registers and removes emulators so that exactly the architectures of the commit `ro`'s
/// `binfmt` run.
pub fn apply(ro: &Path) -> Outcome {
    apply_in(ro, Path::new(MISC), Path::new(LINES))
}

fn apply_in(ro: &Path, misc: &Path, lines: &Path) -> Outcome {
    let wanted = std::fs::read_to_string(ro.join("binfmt")).unwrap_or_default();
    let wanted: Vec<&str> = wanted.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if !lines.is_dir() {
        // The base image: no engine, no containers, no emulators to register.
        return Outcome::Applied;
    }
    if let Err(e) = mount(misc) {
        return Outcome::Failed(format!("mounting binfmt_misc: {e}"));
    }
    let mut problems = Vec::new();
    for architecture in FOREIGN_ARCHITECTURES {
        let name = format!("qemu-{}", qemu_name(architecture));
        let entry = misc.join(&name);
        let result = match (wanted.contains(architecture), entry.exists()) {
            (true, false) => register(misc, &lines.join(format!("{name}.conf"))),
            // "-1" to an entry removes it.
            (false, true) => std::fs::write(&entry, "-1").map_err(|e| e.to_string()),
            _ => Ok(()),
        };
        if let Err(e) = result {
            problems.push(format!("{architecture}: {e}"));
        }
    }
    match problems.is_empty() {
        true => Outcome::Applied,
        false => Outcome::Failed(problems.join("; ")),
    }
}

/// Registers the emulator of Debian's line in `conf`.
fn register(misc: &Path, conf: &Path) -> Result<(), String> {
    let line = std::fs::read_to_string(conf)
        .map_err(|e| format!("no emulator in this image ({}: {e})", conf.display()))?;
    let line = line.lines().find(|l| l.starts_with(':')).ok_or("an empty registration line")?;
    std::fs::write(misc.join("register"), line).map_err(|e| format!("registering: {e}"))
}

/// Mounts binfmt_misc at `at` unless it is there already.
fn mount(at: &Path) -> Result<(), crate::Error> {
    if at.join("register").exists() {
        return Ok(());
    }
    crate::boot::mount("binfmt_misc", &at.to_string_lossy(), "binfmt_misc", "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A stand-in for binfmt_misc: `register` is a file, and entries appear by hand.
    fn fixture() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ro, misc, lines) =
            (dir.path().join("ro"), dir.path().join("misc"), dir.path().join("lines"));
        for d in [&ro, &misc, &lines] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        std::fs::write(misc.join("register"), "").expect("register");
        for name in ["aarch64", "arm", "riscv64", "ppc64le", "s390x"] {
            std::fs::write(
                lines.join(format!("qemu-{name}.conf")),
                format!(":qemu-{name}:M::x:y:/e:OPF\n"),
            )
            .expect("line");
        }
        (dir, ro, misc, lines)
    }

    #[test]
    fn registers_what_is_wanted_and_removes_what_is_not() {
        let (_dir, ro, misc, lines) = fixture();
        std::fs::write(ro.join("binfmt"), "arm64\n").expect("value");
        // s390x is registered and no longer wanted.
        std::fs::write(misc.join("qemu-s390x"), "enabled").expect("entry");
        assert_eq!(apply_in(&ro, &misc, &lines), Outcome::Applied);
        assert_eq!(
            std::fs::read_to_string(misc.join("register")).expect("read"),
            ":qemu-aarch64:M::x:y:/e:OPF"
        );
        assert_eq!(std::fs::read_to_string(misc.join("qemu-s390x")).expect("read"), "-1");
    }

    #[test]
    fn a_missing_emulator_is_named() {
        let (_dir, ro, misc, lines) = fixture();
        std::fs::remove_file(lines.join("qemu-riscv64.conf")).expect("rm");
        std::fs::write(ro.join("binfmt"), "riscv64\n").expect("value");
        match apply_in(&ro, &misc, &lines) {
            Outcome::Failed(why) => assert!(why.starts_with("riscv64: no emulator"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_image_without_emulators_has_nothing_to_do() {
        let (dir, ro, misc, _) = fixture();
        std::fs::write(ro.join("binfmt"), "arm64\n").expect("value");
        assert_eq!(apply_in(&ro, &misc, &dir.path().join("none")), Outcome::Applied);
    }
}
