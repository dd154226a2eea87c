//! `cairn up` on the native backend: the embedded VMM in the control plane's process, with
//! the VMM's own test guest (vmm/testguest) standing in for Linux, which this host's KVM cannot
//! run (CAIRN_NATIVE=force skips the probe that says so). The guest finds the devices `up`
//! gives it, reads the hostname from the live database over virtio-9p, talks to a host
//! listener over vsock, and waits; `cairn down` asks it to shut down with Ctrl-Alt-Del.

#[path = "../vmm/tests/support/testguest.rs"]
mod testguest;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use crate::util::Env;

/// Kills `cairn up` if the test ends before `cairn down` did.
struct Up(std::process::Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[ignore = "needs a usable /dev/kvm: tests/run.sh runs it where one opens"]
fn up_runs_the_vm_on_the_embedded_vmm_and_down_powers_it_off() {
    let _vm = crate::util::one_vm_at_a_time();
    let env = Env::new();
    env.ok(&["set", "hostname=native-guest", "hypervisor=native"]);
    let scratch = tempfile::tempdir().expect("tempdir");
    let kernel = testguest::build(scratch.path());
    let initrd = scratch.path().join("initrd");
    std::fs::write(&initrd, b"not read by the test guest").expect("initrd");

    // The guest dials host port 1234: `vsock.sock_1234` next to the VMM's socket.
    let run = env.home().join("run");
    std::fs::create_dir_all(&run).expect("run dir");
    let listener = UnixListener::bind(run.join("vsock.sock_1234")).expect("binds");
    let host_side = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("the guest connects");
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).expect("reads");
        (&stream).write_all(b"hello from the host\n").expect("writes");
        line
    });

    let up = env
        .command(&["up", "--kernel"])
        .arg(&kernel)
        .arg("--initrd")
        .arg(&initrd)
        .env("CAIRN_NATIVE", "force")
        .env("CAIRN_KERNEL_ARGS", "cairn.poweroff=0x3c0 cairn.await_ctrl_alt_del")
        .stderr(std::fs::File::create(scratch.path().join("up.log")).expect("log"))
        .spawn()
        .expect("cairn up starts");
    let mut up = Up(up);
    let console = run.join("console.log");
    let read = || std::fs::read_to_string(&console).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !read().contains("testguest: waiting for ctrl-alt-del") {
        let log = std::fs::read_to_string(scratch.path().join("up.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "the guest never got there:\n{}\nup:\n{log}", read());
        assert!(up.0.try_wait().expect("waits").is_none(), "cairn up ended:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = read();
    for line in [
        "cairn.db=virtio:db",
        "9p: tag db",
        "9p: hostname native-guest",
        "vsock: cid 3",
        "vsock: received hello from the host",
    ] {
        assert!(text.contains(line), "{line:?} missing from the console:\n{text}");
    }
    assert!(text.lines().any(|l| l.starts_with("rng: ")), "{text}");
    assert_eq!(host_side.join().expect("host side"), "hello from the guest\n");

    let status: serde_json::Value =
        serde_json::from_str(&env.ok(&["status", "--json"])).expect("status is JSON");
    assert_eq!(status["backend"], "native", "{status:#}");
    let reason = status["backend_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("CAIRN_NATIVE=force"), "{reason}");
    assert_eq!(status["vm_pid"], up.0.id(), "the VM runs inside cairn up: {status:#}");

    env.ok(&["down"]);
    let exit = up.0.wait().expect("cairn up ends");
    let log = std::fs::read_to_string(scratch.path().join("up.log")).unwrap_or_default();
    assert!(exit.success(), "{log}");
    assert!(log.contains("the guest powered off"), "a clean poweroff, not a forced stop:\n{log}");
    assert!(read().contains("testguest: ctrl-alt-del\ntestguest: poweroff\n"), "{}", read());
}

/// Linux on the embedded VMM dies in early boot on this host's nested KVM (the probe knows,
/// CAIRN_NATIVE=force skips it): `up` must still end with a working VM, on qemu, say why, and
/// remember it for this host until the user asks for the embedded VMM again.
#[test]
#[ignore = "needs a /dev/kvm that cannot run Linux (the probe fails): tests/run.sh runs it there"]
fn a_native_boot_that_fails_falls_back_to_qemu_and_is_remembered() {
    let _vm = crate::util::one_vm_at_a_time();
    assert!(
        cairn_vmm::machine::probe::can_run_linux().is_err(),
        "this host's KVM runs Linux: a native boot does not fail here"
    );
    let env = Env::new();
    let _down = crate::up::Down(&env);
    env.ok(&["set", "hypervisor", "native"]);
    let up = env
        .command(&["up", "--detach", "--flavour", "base"])
        .env("CAIRN_CACHE", crate::up::cache())
        .env("CAIRN_NATIVE", "force")
        .output()
        .expect("runs");
    assert!(up.status.success(), "cairn up: {}", String::from_utf8_lossy(&up.stderr));
    let s = crate::up::applied(&env, "the VM on qemu after the native boot failed");
    assert_eq!(s["backend"], "qemu", "{s:#}");
    let reason = s["backend_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("failed to boot the guest here"), "{reason}");
    let verdicts = std::fs::read_to_string(env.home().join("hypervisors.json")).expect("verdicts");
    assert!(verdicts.contains("native_boot_failed"), "{verdicts}");
    // The next `up` goes to qemu at once, and says why.
    env.ok(&["down"]);
    let up = env
        .command(&["up", "--detach", "--flavour", "base"])
        .env("CAIRN_CACHE", crate::up::cache())
        .env("CAIRN_NATIVE", "force")
        .output()
        .expect("runs");
    assert!(up.status.success());
    let s = crate::up::applied(&env, "the VM on qemu at once");
    assert_eq!((s["backend"].as_str(), s["restarts"].as_u64()), (Some("qemu"), Some(0)), "{s:#}");
    assert!(s["backend_reason"].as_str().is_some_and(|r| r.contains("before")), "{s:#}");
    // Asking for the embedded VMM again forgets it.
    let out = env.run(&["set", "hypervisor", "native"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("tries it again"));
    let verdicts = std::fs::read_to_string(env.home().join("hypervisors.json")).expect("verdicts");
    assert!(verdicts.contains("\"native_boot_failed\": null"), "{verdicts}");
}
