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

/// CPU time of this whole process (user and system), from getrusage.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the rusage it is given, zeroed and alive for the call.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// CPU time used over `period`.
fn cpu_over(period: Duration) -> Duration {
    let before = cpu_time();
    std::thread::sleep(period);
    cpu_time().saturating_sub(before)
}

#[test]
#[ignore = "needs a usable /dev/kvm: tests/run.sh runs it where one opens"]
fn a_paused_vm_uses_no_cpu_and_runs_again_when_resumed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut machine, _) = boot(dir.path(), tiny(dir.path(), 4));
    let period = Duration::from_millis(1000);
    let running = cpu_over(period);
    machine.pause();
    assert!(machine.paused() && machine.running());
    let paused = cpu_over(period);
    machine.resume();
    let resumed = cpu_over(period);
    eprintln!("CPU over {period:?}: running {running:?}, paused {paused:?}, resumed {resumed:?}");
    assert!(running > period / 2, "the spinning guest used {running:?}");
    assert!(paused < Duration::from_millis(50), "paused, the VM used {paused:?}");
    assert!(resumed > period / 2, "resumed, the guest used {resumed:?}");
    // A paused VM stops too.
    machine.pause();
    assert_eq!(machine.stop(), Exit::Stopped);
    assert!(!machine.running());
}
