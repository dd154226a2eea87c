//! Host directories in containers, end to end under QEMU TCG: `file-sharing` over virtiofs
//! (virtiofsd) and over qemu's 9P, `docker run -v HOSTDIR:/s` reading and writing both ways,
//! ownership on the host, and $CAIRN_HOME empty and read-only inside a share.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::docker::{busybox_tar_and, engine, Docker};
use crate::up::{wait_for, Down};
use crate::util::Env;

const IMAGE: &str = "cairn-test/share:1";

const APPLETS: &[&str] =
    &["sh", "cat", "echo", "ls", "mkdir", "mv", "rm", "ln", "readlink", "touch", "dd", "sha256sum"];

/// `sh -c script` in a container with `dir` at /s; its output, or the failure's.
fn in_container(
    docker: &Docker,
    dir: &Path,
    user: Option<&str>,
    script: &str,
) -> std::process::Output {
    let volume = format!("{}:/s", dir.display());
    let mut args = vec!["run", "--rm", "-v", &volume];
    if let Some(user) = user {
        args.extend(["--user", user]);
    }
    args.extend([IMAGE, "sh", "-c", script]);
    docker.run(&args)
}

fn sh(docker: &Docker, dir: &Path, script: &str) -> String {
    crate::util::succeeded(in_container(docker, dir, None, script), script)
}

/// sha256 of a host file, by the coreutils the host has.
fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().expect("sha256sum runs");
    let out = crate::util::succeeded(out, "sha256sum");
    out.split_whitespace().next().expect("a hash").to_owned()
}

/// Files, directories and links both ways through the share at `dir`.
fn files_both_ways(docker: &Docker, dir: &Path, what: &str) {
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(dir.join("from-host"), "host\n").expect("write");
    let host_uid = std::fs::metadata(dir.join("from-host")).expect("stat").uid();
    assert_eq!(sh(docker, dir, "cat /s/from-host"), "host\n", "{what}: a host file read");

    sh(docker, dir, "echo guest > /s/from-guest && mkdir -p /s/deep/a/b/c/d/e/f/g && ln -s from-guest /s/link-guest");
    let written = dir.join("from-guest");
    assert_eq!(std::fs::read_to_string(&written).expect("read"), "guest\n", "{what}");
    assert_eq!(std::fs::metadata(&written).expect("stat").uid(), host_uid, "{what}: owner");
    assert!(dir.join("deep/a/b/c/d/e/f/g").is_dir(), "{what}: mkdir -p");
    assert_eq!(
        std::fs::read_link(dir.join("link-guest")).expect("a link"),
        Path::new("from-guest")
    );
    std::os::unix::fs::symlink("from-host", dir.join("link-host")).expect("symlink");
    assert_eq!(sh(docker, dir, "readlink /s/link-host; cat /s/link-host"), "from-host\nhost\n");

    // Renames and deletes, each side seeing the other's.
    std::fs::rename(dir.join("from-host"), dir.join("renamed-host")).expect("rename");
    let listing = sh(docker, dir, "mv /s/from-guest /s/renamed-guest && ls -1 /s");
    assert!(listing.lines().any(|l| l == "renamed-host"), "{what}: {listing}");
    assert!(!listing.lines().any(|l| l == "from-host"), "{what}: {listing}");
    assert!(dir.join("renamed-guest").is_file() && !written.exists(), "{what}: the guest's rename");
    std::fs::remove_file(dir.join("renamed-guest")).expect("rm");
    let listing = sh(docker, dir, "rm /s/renamed-host && ls -1 /s");
    assert!(!listing.lines().any(|l| l.starts_with("renamed-")), "{what}: {listing}");
    assert!(!dir.join("renamed-host").exists(), "{what}: the guest's delete");

    // 64 MiB each way, the same bytes on both sides.
    std::fs::write(dir.join("big-host"), crate::docker::incompressible(64 << 20)).expect("write");
    let theirs = sh(docker, dir, "sha256sum /s/big-host");
    assert!(theirs.starts_with(&sha256(&dir.join("big-host"))), "{what}: {theirs}");
    // Twice: the second writes over the first (9p with cache=mmap once lost data so).
    for round in ["new", "over"] {
        let script = "dd if=/dev/urandom of=/s/big-guest bs=1M count=64 iflag=fullblock 2>/dev/null && sha256sum /s/big-guest";
        let theirs = sh(docker, dir, script);
        let size = std::fs::metadata(dir.join("big-guest")).expect("stat").len();
        assert_eq!(size, 64 << 20, "{what}: {round}");
        assert!(theirs.starts_with(&sha256(&dir.join("big-guest"))), "{what} {round}: {theirs}");
    }
}

/// $CAIRN_HOME inside a share: empty and read-only in a container, untouched on the host.
fn cairn_home_is_hidden(docker: &Docker, env: &Env, what: &str) {
    let top = env.dir.path();
    let listing = sh(docker, top, "ls -A /s/home");
    assert_eq!(listing, "", "{what}: $CAIRN_HOME seen through a share");
    let touched = in_container(docker, top, None, "touch /s/home/evil");
    let said = String::from_utf8_lossy(&touched.stderr);
    assert!(!touched.status.success() && said.contains("Read-only"), "{what}: {said}");
    assert!(!env.home().join("evil").exists());
    assert!(env.db().exists(), "the database is there");
}

/// The output of container `name` once `seen` accepts it (within a generous bound: the
/// latency is printed, not asserted).
fn logs_until(docker: &Docker, name: &str, what: &str, seen: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    loop {
        let logs = docker.ok(&["logs", name]);
        if seen(&logs) {
            eprintln!("{what}: seen after {:?}", started.elapsed());
            return logs;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what}: never seen; the watcher said:\n{logs}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Host changes reach an inotify watch in a container; the guest's own writes do not come
/// back from the host as events.
fn events_reach_the_guest(docker: &Docker, env: &Env, dir: &Path, what: &str) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let name = format!("watch-{what}");
    let volume = format!("{}:/s", dir.display());
    docker.ok(&["run", "-d", "--name", &name, "-v", &volume, IMAGE, "/bin/inotify_watch", "/s"]);
    logs_until(docker, &name, &format!("{what}: the watcher"), |l| l.contains("watching"));
    // The host watches what containers mount, once dockerd says the container started.
    let dir_text = dir.display().to_string();
    wait_for(env, &format!("{what}: the host watching {dir_text}"), |s| {
        s["sharing"]["watched"].as_array().is_some_and(|w| w.iter().any(|d| d == dir_text.as_str()))
    });
    let lines_about =
        |logs: &str, file: &str| logs.lines().filter(|l| l.ends_with(&format!(" {file}"))).count();

    std::fs::write(dir.join("host-made"), "one\n").expect("write");
    let logs = logs_until(docker, &name, &format!("{what}: a file created on the host"), |l| {
        lines_about(l, "host-made") >= 1
    });
    let before = lines_about(&logs, "host-made");
    std::fs::write(dir.join("host-made"), "two\n").expect("write");
    logs_until(docker, &name, &format!("{what}: a file changed on the host"), |l| {
        lines_about(l, "host-made") > before
    });
    // A removal raises an event on the directory itself (a line with no name).
    let on_dir =
        |logs: &str| logs.lines().filter(|l| l.ends_with(' ') && l.contains("ISDIR")).count();
    let before = on_dir(&docker.ok(&["logs", &name]));
    std::fs::remove_file(dir.join("host-made")).expect("rm");
    logs_until(docker, &name, &format!("{what}: a file removed on the host"), |l| {
        on_dir(l) > before
    });

    // The guest's own write: the watcher sees the guest kernel's events, and no echo after.
    sh(docker, dir, "echo g > /s/guest-made");
    logs_until(docker, &name, &format!("{what}: the guest's own write"), |l| {
        l.contains("CLOSE_WRITE guest-made")
    });
    std::thread::sleep(Duration::from_secs(3));
    let logs = docker.ok(&["logs", &name]);
    assert!(!logs.contains("ATTRIB guest-made"), "{what}: the guest's write came back:\n{logs}");
    docker.ok(&["rm", "-f", &name]);
}

#[test]
fn host_directories_are_shared_both_ways_over_virtiofs_and_9p() {
    let _vm = crate::util::one_vm_at_a_time();
    let env = Env::new();
    let _down = Down(&env);
    let shared = tempfile::tempdir().expect("tempdir");
    let gone = tempfile::tempdir().expect("tempdir");
    let lines = format!(
        "{}\n{}\n{}\n",
        env.dir.path().display(),
        shared.path().display(),
        gone.path().display()
    );
    env.ok(&["set", &format!("file-sharing={lines}")]);
    let gone_path = gone.path().display().to_string();
    drop(gone);
    let docker = engine(&env);
    let dir = tempfile::tempdir().expect("tempdir");
    let tar = busybox_tar_and(dir.path(), APPLETS, 0, &["inotify_watch"]);
    docker.ok(&["import", &tar.display().to_string(), IMAGE]);

    let s = wait_for(&env, "the shares mounted", |s| {
        s["sharing"]["shares"][1]["state"] == "mounted (virtiofs)"
    });
    let shares = &s["sharing"];
    assert_eq!(shares["mode"], "virtiofs", "{shares:#}");
    assert_eq!(shares["shares"][0]["state"], "mounted (virtiofs)", "{shares:#}");
    assert_eq!(shares["shares"][2]["path"], gone_path.as_str(), "{shares:#}");
    let missing = shares["shares"][2]["state"].as_str().unwrap_or_default();
    assert!(missing.contains("not a directory"), "a missing directory is reported: {shares:#}");
    assert_eq!(shares["hidden"][0], env.home().display().to_string().as_str(), "{shares:#}");
    let text = env.ok(&["status"]);
    assert!(
        text.contains(&format!("  shared:    {} mounted (virtiofs)", shared.path().display())),
        "{text}"
    );

    files_both_ways(&docker, &shared.path().join("virtiofs"), "virtiofs");
    cairn_home_is_hidden(&docker, &env, "virtiofs");
    events_reach_the_guest(&docker, &env, &shared.path().join("events-virtiofs"), "virtiofs");
    // Whatever user a container runs as, its files belong on the host to cairn's user.
    let open = shared.path().join("open");
    std::fs::create_dir(&open).expect("mkdir");
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("chmod");
    let out = in_container(&docker, &open, Some("1000:1000"), "echo u > /s/by-1000");
    crate::util::succeeded(out, "a container as uid 1000");
    let host_uid = std::fs::metadata(&open).expect("stat").uid();
    assert_eq!(std::fs::metadata(open.join("by-1000")).expect("stat").uid(), host_uid);

    // The fallback: qemu's own 9P server, after the reboot the change asks for.
    env.ok(&["set", "filesystem", "9p", "--wait", "--timeout", "300"]);
    wait_for(&env, "the shares over 9p", |s| s["sharing"]["shares"][1]["state"] == "mounted (9p)");
    files_both_ways(&docker, &shared.path().join("9p"), "9p");
    cairn_home_is_hidden(&docker, &env, "9p");
    events_reach_the_guest(&docker, &env, &shared.path().join("events-9p"), "9p");

    // Nothing shared: the container sees the guest's own empty directory.
    env.ok(&["set", "filesystem", "none", "--wait", "--timeout", "300"]);
    let s = wait_for(&env, "nothing shared", |s| s["sharing"]["mode"] == "none");
    assert!(s["sharing"]["shares"][1]["state"]
        .as_str()
        .unwrap_or_default()
        .starts_with("not shared"));
    assert_eq!(sh(&docker, &shared.path().join("virtiofs"), "ls -A /s"), "");
}
