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
    let list = env.ok(&["list"]);
    assert!(list.contains("memory=lots"), "{list}");
    env.ok(&["set", "hostname", "still-works"]);
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
    // And git refuses while cairn's lock... is git's own: a stale one left by a dead process is
    // broken by cairn after a short wait.
    std::fs::write(&lock, "").expect("a stale lock");
    env.ok(&["set", "memory", "3072"]);
    assert!(!lock.exists());
    env.fsck();
}
