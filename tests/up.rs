//! `cairn up` end to end under QEMU TCG: the guest image is built from Debian packages, the VM
//! boots, the guest agent mounts /Database and reports on branch `state`; live changes apply
//! without a reboot, reboot-class changes reboot once, a killed VM comes back, `down` cleans up.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::Env;

/// Packages downloaded for the guest image, shared by test runs.
pub fn cache() -> std::path::PathBuf {
    crate::util::repo().join("target/test-cache/debs")
}

pub fn status(env: &Env) -> Value {
    let out = env.ok(&["status", "--json"]);
    serde_json::from_str(&out).expect("status --json is JSON")
}

/// Waits until the status satisfies `ready`; panics with the status and the logs otherwise.
pub fn wait_for(env: &Env, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let s = status(env);
        if ready(&s) {
            return s;
        }
        if Instant::now() > deadline {
            let run = env.home().join("run");
            let log = std::fs::read_to_string(run.join("cairn.log")).unwrap_or_default();
            let console = std::fs::read_to_string(run.join("console.log")).unwrap_or_default();
            panic!("waiting for {what}; status: {s:#}\nlog:\n{log}\nconsole:\n{console}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `cairn up --detach` with the image `flavour` (base or docker); its standard output.
pub fn up_detached(env: &Env, flavour: &str) -> String {
    let up = env
        .command(&["up", "--detach", "--flavour", flavour])
        .env("CAIRN_CACHE", cache())
        .output()
        .expect("runs");
    assert!(up.status.success(), "cairn up: {}", String::from_utf8_lossy(&up.stderr));
    String::from_utf8_lossy(&up.stdout).into_owned()
}

pub fn applied(env: &Env, what: &str) -> Value {
    let head = env.head();
    wait_for(env, what, |s| s["applied_commit"] == head.as_str())
}

pub fn boot_id(s: &Value) -> String {
    s["guest"]["boot_id"].as_str().unwrap_or_default().to_owned()
}

fn sha256(data: &[u8]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("f");
    std::fs::write(&file, data).expect("write");
    let out = std::process::Command::new("sha256sum").arg(&file).output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_owned()
}

/// Whether `pid` runs (a zombie that nobody reaped yet does not).
fn pid_alive(pid: u64) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    state.is_some_and(|s| s != "Z" && s != "X")
}

/// Runs `cairn down` when the test ends, also by a panic: nothing is left running.
pub struct Down<'a>(pub &'a Env);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["down"]);
    }
}

#[test]
fn up_applies_live_changes_reboots_for_memory_survives_a_crash_and_goes_down() {
    let _vm = crate::util::one_vm_at_a_time();
    let env = Env::new();
    let _down = Down(&env);
    up_detached(&env, "base");

    // The guest mounted /Database and reported the init commit on branch `state`.
    let first = applied(&env, "the first report");
    let init = env.head();
    assert_eq!(env.git(&["show", "state:applied-commit"]).trim(), init);
    let boot = boot_id(&first);
    let up_pid = first["pid"].as_u64().expect("pid");
    assert!(first["backend_reason"].as_str().is_some_and(|r| r.contains("qemu")), "{first:#}");
    // No other user reaches it: no TCP port, nothing under CAIRN_HOME (/Database goes to the
    // guest through the channel, a socket in the private run directory).
    let vm = first["vm_pid"].as_u64().expect("vm pid");
    crate::hostile::closed_to_other_users(&env.home(), up_pid, vm);
    assert_eq!(first["channel"], true, "{first:#}");

    // A live key: `plan` says so, `set --wait` returns once the guest applied it, no reboot.
    assert_eq!(env.ok(&["plan", "hostname", "web1"]).trim(), "guest-live: hostname (guest-live)");
    env.ok(&["set", "hostname", "web1", "--wait", "--timeout", "240"]);
    let s = status(&env);
    assert_eq!(s["applied_commit"], env.head().as_str());
    assert_eq!(s["guest"]["hostname"], "web1");
    assert_eq!(boot_id(&s), boot, "no reboot for a live key");

    // daemon.json reaches the guest byte for byte.
    env.ok(&["set", "daemon", r#"{"debug": true, "labels": ["team=cairn"]}"#]);
    let s = applied(&env, "daemon.json");
    let stored = env.git(&["show", "master:etc/docker/daemon.json"]);
    assert_eq!(s["guest"]["daemon_json_sha256"], sha256(stored.as_bytes()).as_str());
    assert_eq!(boot_id(&s), boot);

    // A refused value never becomes a commit, so it never reaches the guest.
    let before = env.head();
    env.fails(&["set", "memory", "lots"], 3);
    assert_eq!(env.head(), before);

    // A value the guest cannot apply: the error and its key in status, `--wait` fails with it,
    // the VM keeps running on the last good values, and rollback restores them.
    let good = env.head();
    let failed = env.run(&["set", "sysctl", "vm.no_such_sysctl = 1", "--wait", "--timeout", "240"]);
    assert_eq!(failed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("sysctl: vm.no_such_sysctl"), "{stderr}");
    let s = status(&env);
    assert_eq!(s["last_error"]["key"], "sysctl", "{s:#}");
    assert_eq!(s["applied_commit"], good.as_str());
    assert_eq!(s["vm"], "running");
    env.ok(&["rollback", &good]);
    env.ok(&["wait", "--timeout", "240"]);
    assert!(status(&env)["last_error"].is_null());

    // A reboot key: one reboot, the guest sees about 1024 MiB.
    assert_eq!(env.ok(&["plan", "memory=1024"]).trim(), "reboot: memory (reboot)");
    env.ok(&["set", "memory", "1024"]);
    let s = applied(&env, "memory 1024");
    let rebooted = boot_id(&s);
    assert_ne!(rebooted, boot, "memory needs a reboot");
    let memory = s["guest"]["memory_mib"].as_u64().expect("memory");
    assert!((900..=1024).contains(&memory), "the guest sees {memory} MiB");
    let reboots = s["reboots"].as_u64().expect("reboots");

    // Five quick memory changes: at most one reboot, ending at the last value.
    for mib in ["1100", "1150", "1200", "1250", "1280"] {
        env.ok(&["set", "memory", mib]);
    }
    let s = applied(&env, "memory 1280");
    assert!(s["reboots"].as_u64().expect("reboots") <= reboots + 1, "{s:#}");
    let memory = s["guest"]["memory_mib"].as_u64().expect("memory");
    assert!((1150..=1280).contains(&memory), "the guest sees {memory} MiB");

    // The console and the control plane's log.
    let console = env.ok(&["logs", "--console"]);
    assert!(console.contains("cairn-agent: applied"), "{console}");
    assert!(!console.contains("cairn-agent: module"), "every module loads: {console}");
    assert!(env.ok(&["logs", "--control"]).contains("plan"));

    // vm stop keeps it stopped (no restart), vm start boots it again on master.
    env.ok(&["vm", "stop"]);
    let console = env.ok(&["logs", "--console"]);
    assert!(console.contains("cairn-agent: powering off"), "a clean poweroff: {console}");
    assert!(env.ok(&["logs", "--control"]).contains("the guest powered off"));
    std::thread::sleep(Duration::from_secs(2));
    let s = status(&env);
    assert_eq!(s["vm"], "stopped", "{s:#}");
    assert!(s["vm_pid"].is_null());
    env.ok(&["vm", "start"]);
    let s = applied(&env, "the configuration after vm start");
    assert_eq!(s["restarts"], 0);

    // The VM dies: the control plane brings it back and says so.
    let vm = s["vm_pid"].as_u64().expect("vm pid");
    // SAFETY: kill(2) on the qemu process the control plane started.
    unsafe {
        libc::kill(vm as libc::pid_t, libc::SIGKILL);
    }
    let s = wait_for(&env, "the VM back after a crash", |s| {
        s["restarts"].as_u64() == Some(1) && s["vm"] == "running"
    });
    assert!(s["last_error"]["message"].as_str().is_some_and(|m| m.contains("stopped")), "{s:#}");
    let s = applied(&env, "the configuration after the restart");
    let vm_after = s["vm_pid"].as_u64().expect("vm pid");
    assert_ne!(vm_after, vm);

    // down leaves nothing running.
    env.ok(&["down"]);
    assert!(!pid_alive(up_pid), "cairn up still runs");
    assert!(!pid_alive(vm_after), "qemu still runs");
    assert_eq!(status(&env)["vm"], "stopped");

    // A killed control plane leaves its VM running; the next `up` adopts it (no reboot), the
    // guest remounts /Database from the new server, and changes keep flowing.
    up_detached(&env, "base");
    let s = applied(&env, "the configuration after up again");
    let (up_pid, vm, boot) =
        (s["pid"].as_u64().expect("pid"), s["vm_pid"].as_u64().expect("vm"), boot_id(&s));
    // SAFETY: kill(2) on the cairn up process this test started.
    unsafe {
        libc::kill(up_pid as libc::pid_t, libc::SIGKILL);
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(pid_alive(vm), "the VM outlives its control plane");
    env.ok(&["set", "hostname", "while-away"]);
    up_detached(&env, "base");
    let s = applied(&env, "the change made while the control plane was away");
    assert_eq!((s["vm_pid"].as_u64(), s["adopted"].as_bool()), (Some(vm), Some(true)), "{s:#}");
    assert_eq!(boot_id(&s), boot, "adopting does not reboot");
    assert_eq!(s["guest"]["hostname"], "while-away");
    env.ok(&["set", "hostname", "adopted", "--wait", "--timeout", "240"]);
    assert_eq!(boot_id(&status(&env)), boot);

    // Killed again, `down` alone stops the VM it left.
    let up_pid = status(&env)["pid"].as_u64().expect("pid");
    // SAFETY: as above.
    unsafe {
        libc::kill(up_pid as libc::pid_t, libc::SIGKILL);
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(env.run(&["down"]).status.success());
    assert!(!pid_alive(vm), "down stops a VM left running");
    assert!(env.ok(&["logs", "--console"]).contains("cairn-agent: powering off"));
    env.fsck();
}

/// A configuration the guest cannot apply at its first boot: `up --detach` says so and ends
/// (exit 1) as soon as the guest reports, instead of waiting for ever; the VM keeps running.
#[test]
fn up_detach_stops_waiting_when_the_guest_cannot_apply_the_configuration() {
    let _vm = crate::util::one_vm_at_a_time();
    let env = Env::new();
    let _down = Down(&env);
    env.ok(&["set", "sysctl", "vm.no_such_parameter = 1"]);
    let up = env
        .command(&["up", "--detach", "--flavour", "base"])
        .env("CAIRN_CACHE", cache())
        .output()
        .expect("runs");
    assert_eq!(up.status.code(), Some(1), "{}", String::from_utf8_lossy(&up.stderr));
    let stderr = String::from_utf8_lossy(&up.stderr);
    assert!(stderr.contains("could not apply") && stderr.contains("sysctl"), "{stderr}");
    let s = status(&env);
    assert_eq!(s["vm"], "running", "the VM stays up for logs and status: {s:#}");
    assert_eq!(s["last_error"]["key"], "sysctl");
}
