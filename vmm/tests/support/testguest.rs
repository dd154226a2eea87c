//! Builds the freestanding test guest (vmm/testguest) with the toolchain that builds the tests:
//! rustc compiles it as a `no_std` static library, ld links it at 1 MiB with its PVH note
//! (testguest/link.ld).
//!
//! The guest must not contain SSE instructions (testguest/main.rs says why). The bare-metal
//! target x86_64-unknown-none has none (tests/run.sh installs it with rustup); where it is
//! missing, the host target is used with SSE turned off and fat LTO, so that `core` is
//! compiled again without it (rustc warns that this mix is being phased out).

use std::path::{Path, PathBuf};
use std::process::Command;

const BARE_METAL: &str = "x86_64-unknown-none";

fn run(command: &mut Command) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn rustc() -> Command {
    Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
}

/// Whether rustup installed the bare-metal target's `core`.
fn bare_metal_installed() -> bool {
    let libdir = run(rustc().args(["--print", "target-libdir", "--target", BARE_METAL]));
    std::fs::read_dir(libdir.trim())
        .map(|entries| {
            entries.flatten().any(|e| e.file_name().to_string_lossy().starts_with("libcore-"))
        })
        .unwrap_or(false)
}

/// Compiles and links the guest into `out_dir`; returns the ELF's path.
pub fn build(out_dir: &Path) -> PathBuf {
    // Included by cairn-vmm's tests (vmm/) and by the end-to-end tests (tests/native.rs, built
    // as the cli package's, whose manifest is in cli/).
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = [crate_dir.join("testguest"), crate_dir.join("../vmm/testguest")]
        .into_iter()
        .find(|dir| dir.join("main.rs").is_file())
        .expect("vmm/testguest is in the source tree");
    let library = out_dir.join("libtestguest.a");
    let elf = out_dir.join("testguest.elf");
    let mut compile = rustc();
    compile
        .args(["--edition", "2021", "--crate-type", "staticlib", "--crate-name", "testguest"])
        .args(["-C", "panic=abort", "-C", "opt-level=2", "-C", "relocation-model=static"]);
    if bare_metal_installed() {
        compile.args(["--target", BARE_METAL]);
    } else {
        eprintln!(
            "{BARE_METAL} is not installed: building the test guest without SSE for the host"
        );
        compile.args(["-C", "lto=fat", "-C", "target-feature=-sse,-sse2,+soft-float"]);
    }
    run(compile.arg("-o").arg(&library).arg(source.join("main.rs")));
    run(Command::new("ld")
        .args(["-m", "elf_x86_64", "--gc-sections", "--no-warn-rwx-segments", "-u", "pvh_start"])
        .arg("-T")
        .arg(source.join("link.ld"))
        .arg("-o")
        .arg(&elf)
        .arg(&library));
    elf
}
