//! cairn on a repository the git CLI has touched: plumbing commits, packed refs, gc'd packs.

use crate::util::Env;

#[test]
fn plumbing_commits_gc_and_packed_refs() {
    let env = Env::new();
    env.ok(&["set", "memory", "4096"]);
    let outside = env.git_set("memory", "1024");
    assert_eq!(env.ok(&["get", "memory"]), "1024\n");
    let log = env.ok(&["log", "memory", "-n", "1"]);
    assert!(log.starts_with(&outside), "{log}");
    assert!(log.contains("outside: memory=1024"), "{log}");

    env.git(&["gc", "--prune=now", "--quiet"]);
    env.git(&["pack-refs", "--all"]);
    assert!(!env.db().join("refs/heads/master").exists(), "master is packed now");
    assert_eq!(env.ok(&["get", "memory"]), "1024\n");
    env.ok(&["set", "hostname", "after-gc"]);
    assert_eq!(env.git(&["show", "master:etc/hostname"]), "after-gc\n");
    assert_eq!(env.git(&["rev-parse", "master~1"]).trim(), outside);

    env.git_set("ncpu", "1");
    env.git(&["gc", "--prune=now", "--quiet"]);
    env.ok(&["set", "mtu", "9000"]);
    assert_eq!(env.ok(&["log", "-n", "3"]).lines().count(), 3);
    assert_eq!(env.ok(&["get", "ncpu"]), "1\n");
    env.fsck();
}

#[test]
fn an_invalid_outside_value_does_not_block_other_keys() {
    let env = Env::new();
    env.git_set("memory", "lots");
    let out = env.run(&["list"]);
    let (list, warning) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(list.contains("memory=lots"), "{list}");
    assert!(warning.contains("warning: memory: \"lots\" is not a size in MiB"), "{warning}");
    let json: serde_json::Value = serde_json::from_str(&env.ok(&["list", "--json"])).expect("json");
    let memory =
        json.as_array().and_then(|rows| rows.iter().find(|r| r["key"] == "memory")).cloned();
    assert!(memory.is_some_and(|m| m["invalid"].as_str().is_some_and(|i| i.contains("lots"))));
    assert!(env.ok(&["status"]).contains("invalid:     memory: \"lots\""));
    // A write that keeps it says so.
    let out = env.run(&["set", "hostname", "still-works"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("memory") && stderr.contains("kept as it is"), "{stderr}");
    env.ok(&["set", "memory", "1024"]);
    assert_eq!(env.git(&["show", "master:memory"]), "1024\n");
    env.fsck();
}

#[test]
fn the_git_cli_and_cairn_share_the_ref_lock() {
    let env = Env::new();
    let lock = env.db().join("refs/heads/master.lock");
    std::fs::write(&lock, "").expect("take the lock as git would");
    let child = env.command(&["set", "memory", "4096"]).spawn().expect("spawn");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(env.ok(&["get", "memory"]), "2048\n", "no write while git holds the lock");
    std::fs::remove_file(&lock).expect("release");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    assert_eq!(env.ok(&["get", "memory"]), "4096\n");
    // A lock nobody recorded is git's (or was left by a git that died): never broken.
    std::fs::write(&lock, "").expect("a lock git left");
    let stderr = env.fails(&["set", "memory", "3072"], 1);
    assert!(stderr.contains("master.lock") && stderr.contains("never breaks"), "{stderr}");
    assert!(lock.exists());
    assert_eq!(env.ok(&["get", "memory"]), "4096\n", "nothing changed");
    std::fs::remove_file(&lock).expect("the user removes it");
    env.fsck();
}

/// A live git holding the ref's lock for seconds (a reference-transaction hook, a slow disk)
/// is waited for, never broken: both commits land, and each command reports what happened.
#[test]
fn a_slow_git_commit_is_waited_for_and_both_changes_land() {
    let env = Env::new();
    let db = env.db();
    let hook = db.join("hooks/reference-transaction");
    std::fs::create_dir_all(hook.parent().expect("hooks dir")).expect("mkdir");
    std::fs::write(&hook, "#!/bin/sh\n[ \"$1\" = prepared ] && sleep 3\nexit 0\n").expect("hook");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // git's commit: the tree of master with ncpu=1, committed with plumbing, moved by a slow
    // update-ref.
    let old = env.head();
    let ours = env.git_commit_tree_with("ncpu", "1");
    let git = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(&db)
        .args(["update-ref", "refs/heads/master", &ours, &old])
        .spawn()
        .expect("git runs");
    let lock = db.join("refs/heads/master.lock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !lock.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(lock.exists(), "git holds the lock");
    env.ok(&["set", "memory", "4096"]);
    let git = git.wait_with_output().expect("git ends");
    assert!(
        git.status.success(),
        "git's update succeeded: {}",
        String::from_utf8_lossy(&git.stderr)
    );
    assert_eq!(env.git(&["rev-parse", "master~1"]).trim(), ours, "cairn's commit is on git's");
    assert_eq!(env.git(&["show", "master:ncpu"]), "1\n");
    assert_eq!(env.git(&["show", "master:memory"]), "4096\n");
    std::fs::remove_file(&hook).expect("no hook");
    env.fsck();
}
