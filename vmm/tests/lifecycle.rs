//! The embedded VMM's lifecycle with the smallest guest (tests/guests/tiny.S, assembled here
//! with binutils): PVH boot, the serial console, and the three ways a guest ends told apart
//! (ACPI poweroff, i8042 reset, triple fault), plus a stop from the VMM's side.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cairn_vmm::machine::{Config, Exit, Machine};

/// Assembles and links tiny.S with `MODE`.
fn tiny(dir: &Path, mode: u8) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guests/tiny.S");
    let (object, elf) = (dir.join(format!("tiny{mode}.o")), dir.join(format!("tiny{mode}.elf")));
    let run = |cmd: &mut Command| {
        let out = cmd.output().expect("binutils run");
        assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(Command::new("as")
        .args(["--64", "--defsym", &format!("MODE={mode}"), "-o"])
        .arg(&object)
        .arg(&source));
    run(Command::new("ld")
        .args(["-m", "elf_x86_64", "-Ttext=0x100000", "-z", "noseparate-code", "-o"])
        .arg(&elf)
        .arg(&object));
    elf
}

fn boot(dir: &Path, kernel: PathBuf) -> (Machine, PathBuf) {
    let console = dir.join(format!("{}.log", kernel.display().to_string().len()));
    let machine = Machine::start(Config {
        memory_mib: 64,
        ncpu: 1,
        kernel,
        initrd: None,
        cmdline: "console=ttyS0".into(),
        console: console.clone(),
        console_limit: 1 << 20,
        devices: Vec::new(),
        devices_on_cmdline: true,
    })
    .expect("the VM starts");
    (machine, console)
}

#[test]
#[ignore = "needs a usable /dev/kvm: tests/run.sh runs it where one opens"]
fn poweroff_reset_and_triple_fault_are_told_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (mode, expected) in [
        (0, Exit::PowerOff),
        (1, Exit::Reboot("i8042 reset".into())),
        (2, Exit::Reboot("triple fault".into())),
    ] {
        let (mut machine, console) = boot(dir.path(), tiny(dir.path(), mode));
        let exit = machine.wait();
        let text = std::fs::read_to_string(&console).expect("console log");
        assert_eq!(exit, expected, "mode {mode}");
        assert_eq!(text, "tiny: hello from PVH\n", "mode {mode}");
        assert!(!machine.running());
    }
}

#[test]
#[ignore = "needs a usable /dev/kvm: tests/run.sh runs it where one opens"]
fn the_vmm_stops_a_guest_that_never_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    // MODE 3 is not handled: the guest says hello and halts with interrupts off, for ever.
    let (mut machine, console) = boot(dir.path(), tiny(dir.path(), 3));
    std::thread::sleep(Duration::from_millis(200));
    assert!(machine.running());
    assert_eq!(machine.wait_timeout(Duration::from_millis(100)), None);
    // It ignores Ctrl-Alt-Del too, so a graceful shutdown ends in a forced stop.
    assert_eq!(machine.shutdown(Duration::from_millis(300)), Exit::Stopped);
    assert!(!machine.running());
    assert_eq!(std::fs::read_to_string(&console).expect("console"), "tiny: hello from PVH\n");
}
