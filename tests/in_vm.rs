//! Working in the VM, end to end under QEMU TCG: `cairn shell` (a root shell in the VM's own
//! namespaces through the agent's channel: exit codes, binary-safe pipes, a real terminal),
//! `cairn vm pause` / `resume` (no CPU while paused, commits applied after, the guest's clock
//! set to the host's on resume).

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::docker::incompressible;
use crate::up::{applied, status, up_detached, wait_for, Down};
use crate::util::Env;

/// `cairn shell -- ARGS` with `stdin`: its output (stdout, stderr, code).
fn shell(env: &Env, args: &[&str], stdin: &[u8]) -> (Vec<u8>, String, i32) {
    let mut command = env.command(&["shell", "--"]);
    command.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("cairn shell starts");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || input.write_all(&data));
    let out = child.wait_with_output().expect("cairn shell ends");
    writer.join().expect("joins").expect("stdin written");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.stdout, stderr, out.status.code().unwrap_or(-1))
}

/// The host's clock, in seconds since the epoch.
fn host_seconds() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after the epoch").as_secs_f64()
}

/// The guest's clock minus the host's, in seconds, through `cairn shell` (busybox's adjtimex
/// prints the time to the microsecond; its date has no %N): good to half the round trip.
fn guest_offset(env: &Env) -> (f64, f64) {
    let before = host_seconds();
    let (out, err, code) = shell(env, &["busybox", "adjtimex"], b"");
    let after = host_seconds();
    assert_eq!(code, 0, "adjtimex: {err}");
    let text = String::from_utf8_lossy(&out);
    let field = |name: &str| -> f64 {
        let line = text.lines().find(|l| l.contains(name)).expect("adjtimex prints the time");
        line.rsplit(':').next().and_then(|v| v.trim().parse().ok()).expect("a number")
    };
    let guest = field("time.tv_sec") + field("time.tv_usec") / 1e6;
    (guest - (before + after) / 2.0, after - before)
}

/// qemu's CPU time (user + system), from /proc.
fn cpu_seconds(pid: u64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("qemu's stat");
    let fields: Vec<&str> =
        stat.rsplit_once(')').expect("a stat line").1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// An interactive `cairn shell` on a pseudo-terminal of `rows` x `cols`: types each of `keys`
/// a second apart, returns what the terminal showed and the exit code.
fn interactive(env: &Env, rows: u16, cols: u16, keys: &[&str]) -> (String, i32) {
    let (mut master, mut slave) = (-1, -1);
    let size = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: openpty writes two descriptors; the size is read from `size`, alive for the call.
    let rc = unsafe {
        libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size)
    };
    assert_eq!(rc, 0, "openpty");
    // SAFETY: both were just opened by openpty and are ours alone.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut child = env
        .command(&["shell"])
        .env("TERM", "xterm")
        .stdin(Stdio::from(slave.try_clone().expect("dup")))
        .stdout(Stdio::from(slave.try_clone().expect("dup")))
        .stderr(Stdio::from(slave))
        .spawn()
        .expect("cairn shell starts");
    let mut terminal = std::fs::File::from(master);
    let mut reader = terminal.try_clone().expect("dup");
    let shown = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once the last process with the terminal open has gone.
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&all).into_owned()
    });
    for typed in keys {
        std::thread::sleep(Duration::from_secs(1));
        terminal.write_all(typed.as_bytes()).expect("typed");
    }
    let code = wait_child(&mut child, Duration::from_secs(60));
    drop(terminal);
    (shown.join().expect("joins"), code)
}

fn wait_child(child: &mut std::process::Child, within: Duration) -> i32 {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("waits") {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("cairn shell did not end within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_root_shell_and_a_pause_that_keeps_the_clock() {
    let _vm = crate::util::one_vm_at_a_time();
    let env = Env::new();
    let down = Down(&env);
    // Before `up`: a clear error, exit 1.
    let (_, err, code) = shell(&env, &["true"], b"");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cairn up is not running"), "{err}");

    up_detached(&env, "docker");
    wait_for(&env, "the guest", |s| s["vm"] == "running");

    // Exit codes, stderr apart from stdout, the VM's own namespaces as root.
    let (out, err, code) = shell(&env, &["sh", "-c", "echo out; echo err >&2; exit 7"], b"");
    assert_eq!((out.as_slice(), err.as_str(), code), (&b"out\n"[..], "err\n", 7));
    let (out, _, _) = shell(
        &env,
        &["sh", "-c", "id -u; readlink /proc/1/ns/pid; readlink /proc/self/ns/pid"],
        b"",
    );
    let text = String::from_utf8_lossy(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first(), Some(&"0"), "{text}");
    assert_eq!(lines.get(1), lines.get(2), "not in PID 1's namespace: {text}");
    // Busybox's applets are programs of their own.
    let (out, _, code) = shell(&env, &["uname", "-m"], b"");
    assert_eq!((String::from_utf8_lossy(&out).trim(), code), ("x86_64", 0));

    // A MiB of binary through `cat`, byte for byte.
    let data = incompressible(1 << 20);
    let started = Instant::now();
    let (out, err, code) = shell(&env, &["cat"], &data);
    eprintln!("1 MiB through cairn shell -- cat: {:?}", started.elapsed());
    assert_eq!(code, 0, "{err}");
    assert!(out == data, "the bytes came back changed ({} of {})", out.len(), data.len());

    // A terminal: its size, Ctrl-C to the foreground job, the exit code of `exit`.
    let keys = ["stty size\r", "sleep 60\r", "\x03", "echo after-$((40+2))\r", "exit 3\r"];
    let (shown, code) = interactive(&env, 37, 111, &keys);
    assert_eq!(code, 3, "the terminal showed: {shown}");
    assert!(shown.contains("37 111"), "the terminal showed: {shown}");
    assert!(shown.contains("after-42"), "Ctrl-C did not end sleep: {shown}");

    // Pause: qemu uses no CPU; the control plane still takes commits; resume applies them.
    let before = status(&env);
    let qemu = before["vm_pid"].as_u64().expect("qemu's pid");
    env.ok(&["vm", "pause"]);
    assert_eq!(status(&env)["vm"], "paused");
    let (_, err, code) = shell(&env, &["true"], b"");
    assert_eq!(code, 1, "a shell into a paused VM: {err}");
    assert!(err.contains("paused"), "{err}");
    let cpu = cpu_seconds(qemu);
    let paused_at = Instant::now();
    env.ok(&["set", "hostname", "paused-host"]);
    std::thread::sleep(Duration::from_secs(10));
    let used = cpu_seconds(qemu) - cpu;
    eprintln!("qemu's CPU over 10 s paused: {used:.3} s");
    assert!(used < 0.1, "a paused VM used {used} s of CPU in 10 s");
    // 60 s in all, the pause the issue measures the clock after.
    std::thread::sleep(Duration::from_secs(60).saturating_sub(paused_at.elapsed()));
    env.ok(&["vm", "resume"]);
    let resumed = Instant::now();
    let s = applied(&env, "the commit made while paused");
    assert_eq!(s["guest"]["hostname"], "paused-host");
    assert_eq!(s["vm"], "running");
    // Within 0.5 s of the host's within 5 s of the resume, without a reboot.
    let clock =
        wait_for(&env, "the clock set after the resume", |s| s["clock"]["reason"] == "resumed");
    assert_eq!(clock["clock"]["action"], "stepped", "{:#}", clock["clock"]);
    assert!(
        clock["clock"]["offset_us"].as_i64().expect("an offset") < -59_000_000,
        "{:#}",
        clock["clock"]
    );
    let mut offsets = Vec::new();
    while resumed.elapsed() < Duration::from_secs(5) || offsets.is_empty() {
        offsets.push(guest_offset(&env));
    }
    eprintln!("guest - host after a 60 s pause (offset s, round trip s): {offsets:?}");
    for (offset, trip) in &offsets {
        assert!(offset.abs() < 0.5 + trip / 2.0, "the guest is {offset} s off the host's");
    }
    assert_eq!(status(&env)["guest"]["boot_id"], before["guest"]["boot_id"], "no reboot");

    // A stopped VM: a clear error.
    env.ok(&["vm", "stop"]);
    let (_, err, code) = shell(&env, &["true"], b"");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("the VM is stopped"), "{err}");
    drop(down);
}
