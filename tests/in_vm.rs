//! Working in the VM, end to end under QEMU TCG: `cairn shell` (a root shell in the VM's own
//! namespaces through the agent's channel: exit codes, binary-safe pipes, a real terminal),
//! arm64 containers through QEMU's user emulators (`binfmt`, live), `cairn diagnose` (checks
//! and a masked archive), `cairn vm pause` / `resume` (no CPU while paused, commits applied
//! after, the guest's clock set to the host's on resume).

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::docker::{engine, incompressible, Docker};
use crate::up::{applied, status, wait_for, Down};
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

/// An image of Debian 13's busybox-static for arm64 (through cairn's own apt state for that
/// architecture), imported as linux/arm64: `sh`, `uname`, `echo` and `cat`.
fn arm64_image(docker: &Docker, dir: &Path) -> &'static str {
    let deb = cairn::image::foreign_package(&crate::up::cache(), "arm64", "busybox-static")
        .expect("busybox-static:arm64 from Debian 13");
    let unpacked = dir.join("busybox-arm64");
    let out =
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked).output().expect("dpkg-deb");
    crate::util::succeeded(out, "dpkg-deb -x");
    let root = dir.join("arm64-root");
    std::fs::create_dir_all(root.join("bin")).expect("mkdir");
    std::fs::copy(unpacked.join("usr/bin/busybox"), root.join("bin/busybox")).expect("busybox");
    for applet in ["sh", "uname", "echo", "cat"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("symlink");
    }
    let tar = dir.join("arm64.tar");
    let out = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .output()
        .expect("tar");
    crate::util::succeeded(out, "tar");
    let image = "cairn-test/arm64:1";
    docker.ok(&["import", "--platform", "linux/arm64", &tar.to_string_lossy(), image]);
    image
}

/// `cairn diagnose` with its lines, exit code and archive (unpacked into `into`).
fn diagnose(env: &Env, into: &Path) -> (String, i32, PathBuf) {
    let out = env.run(&["diagnose"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let archive = text.lines().find_map(|l| l.strip_prefix("archive: ")).expect("an archive line");
    let archive = PathBuf::from(archive);
    std::fs::create_dir_all(into).expect("mkdir");
    let unpacked =
        Command::new("tar").arg("-C").arg(into).arg("-xzf").arg(&archive).output().expect("tar");
    crate::util::succeeded(unpacked, "tar -xzf");
    (text, out.status.code().unwrap_or(-1), archive)
}

/// Every file under `dir`, as text.
fn all_text(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).expect("a directory").flatten() {
        let path = entry.path();
        if path.is_dir() {
            text.push_str(&all_text(&path));
        } else {
            text.push_str(&String::from_utf8_lossy(&std::fs::read(&path).expect("read")));
        }
    }
    text
}

#[test]
fn a_root_shell_other_architectures_diagnostics_and_a_pause_that_keeps_the_clock() {
    let _vm = crate::util::one_vm_at_a_time();
    let env = Env::new();
    let down = Down(&env);
    // Before `up`: a clear error, exit 1.
    let (_, err, code) = shell(&env, &["true"], b"");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cairn up is not running"), "{err}");

    let docker = engine(&env);

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

    // Other architectures: an arm64 image runs through the emulators the key registers, in a
    // container and in a build; taking arm64 out of the key stops it, live.
    let dir = tempfile::tempdir().expect("tempdir");
    let image = arm64_image(&docker, dir.path());
    let arm64 = ["run", "--rm", "--platform", "linux/arm64", image, "uname", "-m"];
    assert_eq!(docker.ok(&arm64).trim(), "aarch64");
    let context = dir.path().join("context");
    std::fs::create_dir_all(&context).expect("mkdir");
    std::fs::write(context.join("Dockerfile"), format!("FROM {image}\nRUN uname -m > /arch\n"))
        .expect("Dockerfile");
    docker.ok(&[
        "build",
        "--platform",
        "linux/arm64",
        "-t",
        "cairn-test/arm64-built:1",
        &context.to_string_lossy(),
    ]);
    let built =
        ["run", "--rm", "--platform", "linux/arm64", "cairn-test/arm64-built:1", "cat", "/arch"];
    assert_eq!(docker.ok(&built).trim(), "aarch64");
    let boot = status(&env)["guest"]["boot_id"].clone();
    env.ok(&["set", "binfmt", "arm riscv64", "--wait"]);
    let refused = docker.run(&arm64);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("exec format error"), "{err}");
    env.ok(&["reset", "binfmt"]);
    env.ok(&["wait"]);
    assert_eq!(docker.ok(&arm64).trim(), "aarch64");
    assert_eq!(status(&env)["guest"]["boot_id"], boot, "binfmt is live: no reboot");

    // Diagnose: a healthy VM passes every check, the archive is private and carries no
    // password; a dockerd that does not answer fails the engine's check.
    env.ok(&["set", "proxy.http", "http://bob:hunter2@proxy.example:3128", "--wait"]);
    let (text, code, archive) = diagnose(&env, &dir.path().join("healthy"));
    assert_eq!(code, 0, "{text}");
    for line in text.lines().filter(|l| !l.starts_with("archive: ")) {
        assert!(line.starts_with("[OK] "), "{line}\n{text}");
    }
    for check in [
        "database",
        "control plane",
        "VM",
        "agent",
        "applied",
        "engine",
        "DNS from the guest",
        "egress",
        "published ports",
        "shared directories",
        "clock",
        "disk",
    ] {
        assert!(text.contains(&format!("[OK] {check}: ")), "no {check} check: {text}");
    }
    let mode = std::fs::metadata(&archive).expect("the archive").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", archive.display());
    let unpacked = dir.path().join("healthy/cairn-diagnose");
    for file in [
        "checks.json",
        "status.json",
        "cairn.log",
        "console.log",
        "history.txt",
        "config.json",
        "guest/dmesg.txt",
        "guest/dockerd.log",
        "docker-info.json",
    ] {
        assert!(unpacked.join(file).is_file(), "the archive has no {file}");
    }
    let everything = all_text(&unpacked);
    assert!(everything.contains("proxy.example"), "the proxy is in the archive");
    assert!(!everything.contains("hunter2"), "a password reached the archive");
    let history = std::fs::read_to_string(unpacked.join("history.txt")).expect("history");
    assert!(history.contains("http://bob:****@proxy.example:3128"), "{history}");
    shell(&env, &["sh", "-c", "kill -STOP $(pidof dockerd)"], b"");
    let (text, code, _) = diagnose(&env, &dir.path().join("hung"));
    shell(&env, &["sh", "-c", "kill -CONT $(pidof dockerd)"], b"");
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("[FAIL] engine: "), "{text}");
    assert!(text.contains("[OK] agent: "), "{text}");
    let out = env.run(&["diagnose", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("diagnose --json");
    assert_eq!(json["passed"], true, "{json:#}");

    // auto-pause: no container runs, so the VM sleeps once the key allows it; a docker
    // command wakes it and is answered.
    env.ok(&["set", "auto-pause", "1"]);
    let slept = wait_for(&env, "auto-pause", |s| s["vm"] == "paused");
    assert_eq!(slept["paused"]["idle"], true, "{:#}", slept["paused"]);
    let started = Instant::now();
    assert_eq!(docker.ok(&["ps", "-q"]).trim(), "", "no container runs");
    eprintln!("a docker command to an auto-paused VM answered in {:?}", started.elapsed());
    wait_for(&env, "the VM awake", |s| s["vm"] == "running");
    env.ok(&["set", "auto-pause", "0"]);

    // The settings page shows the VM, and its pause as it happens.
    let page = crate::ui::Ui::start(&env);
    let vm = page.get("/api/settings").json()["vm"].clone();
    assert_eq!(
        (vm["state"].as_str(), vm["backend"].as_str()),
        (Some("running"), Some("qemu")),
        "{vm}"
    );
    let mut page_events = page.events();
    assert!(page_events.next("vm").contains("\"running\""));

    // Pause: qemu uses no CPU; the control plane still takes commits; resume applies them.
    let before = status(&env);
    let qemu = before["vm_pid"].as_u64().expect("qemu's pid");
    env.ok(&["vm", "pause"]);
    assert_eq!(status(&env)["vm"], "paused");
    let (_, err, code) = shell(&env, &["true"], b"");
    assert_eq!(code, 1, "a shell into a paused VM: {err}");
    assert!(err.contains("paused"), "{err}");
    let paused_vm: serde_json::Value = serde_json::from_str(&page_events.next("vm")).expect("JSON");
    assert_eq!(paused_vm["state"], "paused", "the page's live events");
    // The engine's clients are answered for the VM, not left hanging.
    let ps = docker.run(&["ps"]);
    let err = String::from_utf8_lossy(&ps.stderr);
    assert!(!ps.status.success() && err.contains("the VM is paused"), "docker ps: {err}");
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
    // Within 0.5 s of the host's within 5 s of the resume, without a reboot: sampled from the
    // moment `resume` returns (the first sample may still see the pause's 60 s).
    let mut offsets = Vec::new();
    while resumed.elapsed() < Duration::from_secs(5) {
        let (offset, trip) = guest_offset(&env);
        offsets.push((resumed.elapsed().as_secs_f64(), offset, trip));
        std::thread::sleep(Duration::from_millis(250));
    }
    let shown: Vec<String> = offsets
        .iter()
        .map(|(at, o, t)| format!("{at:.2}s: {:+.1}±{:.1}ms", o * 1e3, t * 5e2))
        .collect();
    eprintln!("guest - host after a 60 s pause, by time since the resume: {}", shown.join(", "));
    let (_, last, trip) = *offsets.last().expect("samples");
    assert!(last.abs() < 0.5 + trip / 2.0, "5 s after the resume the guest is {last} s off");
    let clock =
        wait_for(&env, "the clock set after the resume", |s| s["clock"]["reason"] == "resumed");
    assert_eq!(clock["clock"]["action"], "stepped", "{:#}", clock["clock"]);
    assert!(
        clock["clock"]["offset_us"].as_i64().expect("an offset") < -59_000_000,
        "{:#}",
        clock["clock"]
    );
    let s = applied(&env, "the commit made while paused");
    assert_eq!(s["guest"]["hostname"], "paused-host");
    assert_eq!(s["vm"], "running");
    assert_eq!(status(&env)["guest"]["boot_id"], before["guest"]["boot_id"], "no reboot");

    // A stopped VM: a clear error.
    env.ok(&["vm", "stop"]);
    let (_, err, code) = shell(&env, &["true"], b"");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("the VM is stopped"), "{err}");
    drop(down);
}
