//! The engine keeps its state on the persistent data disk: images, volumes and containers
//! survive a reboot cairn decides on, `down` and `up`, and a VM killed while a container
//! writes; space the guest frees goes back to the host; the disk grows live and never shrinks;
//! a disk that holds something else is never formatted.

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use serde_json::Value;

use crate::docker::{busybox_tar, Docker};
use crate::up::{applied, boot_id, status, up_detached, wait_for, Down};
use crate::util::Env;

fn allocated(env: &Env) -> u64 {
    std::fs::metadata(env.home().join("data.img")).expect("the data disk").blocks() * 512
}

fn engine(env: &Env, s: &Value) -> Docker {
    let cli = s["docker"]["cli"].as_str().expect("the CLI of the engine's package");
    let host = format!("unix://{}", env.home().join("run/docker.sock").display());
    Docker { cli: cli.into(), host }
}

/// What a user keeps: an image, a volume with a file, a stopped container.
fn everything_is_there(docker: &Docker, what: &str) {
    let images = docker.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(images.contains("cairn-test/busybox:1"), "{what}: images {images}");
    let file = docker.ok(&["run", "--rm", "-v", "keep:/v", "cairn-test/busybox:1", "cat", "/v/f"]);
    assert_eq!(file.trim(), "kept", "{what}: the volume's file");
    let all = docker.ok(&["ps", "-a", "--format", "{{.Names}}"]);
    assert!(all.lines().any(|n| n == "stopped-one"), "{what}: containers {all}");
}

#[test]
fn engine_state_survives_reboots_down_up_and_a_killed_vm() {
    let _vm = crate::util::one_vm_at_a_time();
    let env = Env::new();
    let _down = Down(&env);
    up_detached(&env, "docker");
    let s = wait_for(&env, "dockerd running", |s| s["guest"]["dockerd_pid"].as_u64() > Some(0));
    assert!(s["guest"]["disk"].as_str().is_some_and(|d| d.starts_with("mounted")), "{s:#}");
    let docker = engine(&env, &s);
    assert_eq!(docker.info("{{.Driver}}"), "overlay2", "overlay2 on the ext4 data disk");
    assert_eq!(docker.info("{{.DockerRootDir}}"), "/var/lib/docker");
    let dir = tempfile::tempdir().expect("tempdir");
    docker.ok(&[
        "import",
        &busybox_tar(dir.path(), 0).display().to_string(),
        "cairn-test/busybox:1",
    ]);
    docker.ok(&["volume", "create", "keep"]);
    docker.ok(&[
        "run",
        "--rm",
        "-v",
        "keep:/v",
        "cairn-test/busybox:1",
        "sh",
        "-c",
        "echo kept > /v/f",
    ]);
    docker.ok(&["create", "--name", "stopped-one", "cairn-test/busybox:1", "echo", "hi"]);

    // A reboot cairn decides on.
    let boot = boot_id(&s);
    env.ok(&["set", "memory", "1536", "--wait", "--timeout", "300"]);
    wait_for(&env, "dockerd after the reboot", |s| {
        boot_id(s) != boot && s["guest"]["dockerd_pid"].as_u64() > Some(0)
    });
    everything_is_there(&docker, "after a reboot");
    let console = std::fs::read_to_string(env.home().join("run/console.log")).unwrap_or_default();
    assert!(!console.contains("formatting"), "a used disk is never formatted again");

    // down and up.
    env.ok(&["down"]);
    up_detached(&env, "docker");
    wait_for(&env, "dockerd after up", |s| s["guest"]["dockerd_pid"].as_u64() > Some(0));
    everything_is_there(&docker, "after down and up");

    // qemu killed while a container writes: the VM comes back, e2fsck replays the journal.
    docker.ok(&[
        "run",
        "-d",
        "--name",
        "writer",
        "-v",
        "keep:/v",
        "cairn-test/busybox:1",
        "sh",
        "-c",
        "while true; do echo line >> /v/log; done",
    ]);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let s = status(&env);
    let vm = s["vm_pid"].as_u64().expect("vm pid");
    let boot = boot_id(&s);
    // SAFETY: kill(2) on the qemu process the control plane started.
    unsafe {
        libc::kill(vm as libc::pid_t, libc::SIGKILL);
    }
    wait_for(&env, "the VM back after the kill", |s| {
        s["restarts"].as_u64() == Some(1)
            && boot_id(s) != boot
            && s["guest"]["dockerd_pid"].as_u64() > Some(0)
    });
    let s = status(&env);
    assert!(s["guest"]["disk"].as_str().is_some_and(|d| d.starts_with("mounted")), "{s:#}");
    everything_is_there(&docker, "after qemu was killed");
    let console = std::fs::read_to_string(env.home().join("run/console.log")).unwrap_or_default();
    assert!(!console.contains("not used"), "{console}");
}

#[test]
fn freed_space_goes_back_to_the_host_and_the_disk_grows_but_never_shrinks() {
    let _vm = crate::util::one_vm_at_a_time();
    let env = Env::new();
    let _down = Down(&env);
    up_detached(&env, "docker");
    let s = wait_for(&env, "dockerd running", |s| s["guest"]["dockerd_pid"].as_u64() > Some(0));
    let docker = engine(&env, &s);
    let dir = tempfile::tempdir().expect("tempdir");
    let big = busybox_tar(dir.path(), 96 << 20);
    docker.ok(&["import", &big.display().to_string(), "cairn-test/big:1"]);
    // The guest's writes reach the file; a restart trims (at shutdown and at boot).
    env.ok(&["vm", "restart"]);
    let before = allocated(&env);
    docker.ok(&["rmi", "cairn-test/big:1"]);
    env.ok(&["vm", "restart"]);
    wait_for(&env, "dockerd again", |s| s["guest"]["dockerd_pid"].as_u64() > Some(0));
    let after = allocated(&env);
    assert!(
        before.saturating_sub(after) > 64 << 20,
        "the host got back {} MiB of the image's 96 (allocated {} -> {} MiB)",
        before.saturating_sub(after) >> 20,
        before >> 20,
        after >> 20
    );

    // Growing applies live (qemu resizes, the guest grows its filesystem); shrinking is
    // refused, whatever asks for it.
    let size = |s: &Value| s["guest"]["disk_size_bytes"].as_u64().unwrap_or(0);
    let was = size(&status(&env));
    assert_eq!(env.ok(&["plan", "disk", "80G"]).trim(), "disk-grow: disk (disk-grow)");
    env.ok(&["set", "disk", "80G", "--wait", "--timeout", "240"]);
    let s = wait_for(&env, "the filesystem grown", |s| size(s) > was + (10 << 30));
    assert_eq!(std::fs::metadata(env.home().join("data.img")).expect("disk").len(), 80 << 30);
    assert!(size(&s) > 78 << 30, "{s:#}");
    let err = env.fails(&["set", "disk", "64G"], 3);
    assert!(err.contains("disk") && err.contains("81920 MiB"), "{err}");
    let first = env.git(&["rev-list", "--max-parents=0", "master"]).trim().to_owned();
    env.ok(&["rollback", &first]);
    assert_eq!(env.ok(&["get", "disk"]), "81920\n", "a rollback keeps the larger disk");
    let out = env.run(&["disk", "--json"]);
    let disk: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(disk["size_bytes"], 80u64 << 30, "{disk:#}");
}

#[test]
fn a_disk_holding_something_else_is_never_formatted() {
    let _vm = crate::util::one_vm_at_a_time();
    let env = Env::new();
    let _down = Down(&env);
    env.ok(&["set", "disk", "4G"]);
    // Not a filesystem cairn knows: garbage where a superblock would be.
    let disk = env.home().join("data.img");
    let file = std::fs::File::create(&disk).expect("create");
    file.set_len(4 << 30).expect("size");
    let garbage: Vec<u8> = (0..65536u32).map(|i| (i * 7919 % 251) as u8).collect();
    use std::os::unix::fs::FileExt;
    file.write_all_at(&garbage, 0).expect("write");
    drop(file);
    // The guest cannot apply the commit without its disk: `up --detach` says so and fails,
    // and the control plane keeps running to show it.
    let out = env.command(&["up", "--detach", "--flavour", "docker"]).output().expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not an ext4 filesystem") && stderr.contains("disk wipe"), "{stderr}");
    let s = wait_for(&env, "the guest's report", |s| s["guest"]["disk"].as_str().is_some());
    let state = s["guest"]["disk"].as_str().unwrap_or_default();
    assert!(state.starts_with("not used") && state.contains("disk wipe"), "{s:#}");
    assert_eq!(s["last_error"]["key"], "disk", "{s:#}");
    let dockerd = s["guest"]["dockerd"].as_str().unwrap_or_default();
    assert!(dockerd.contains("not started without its data disk"), "{s:#}");
    let text = env.ok(&["status"]);
    assert!(text.contains("disk:") && text.contains("not used"), "{text}");
    env.ok(&["down"]);
    let mut back = vec![0u8; garbage.len()];
    std::fs::File::open(&disk).expect("open").read_exact_at(&mut back, 0).expect("read");
    assert_eq!(back, garbage, "nothing was written to it");
    // `cairn disk wipe` starts over; the next boot formats it.
    let out = Command::new(crate::util::cairn_bin())
        .args(["disk", "wipe"])
        .env("CAIRN_HOME", env.home())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "no terminal, no --yes: refused");
    env.ok(&["disk", "wipe", "--yes"]);
    up_detached(&env, "docker");
    let s = applied(&env, "the engine on the new disk");
    assert!(s["guest"]["disk"].as_str().is_some_and(|d| d.starts_with("mounted")), "{s:#}");
}
