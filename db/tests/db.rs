//! The database API against real repositories: rebase and conflicts, watch, other branches.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cairn_db::{Db, Error, CONFIG_BRANCH};
use cairn_schema::Host;

const HOST: Host = Host { ram_mib: 8192, cores: 4, disk_mib: 0 };

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").arg("--git-dir").arg(dir).args(args).output().expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fresh() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::init(&dir.path().join("db"), HOST).expect("init");
    (dir, db)
}

#[test]
fn a_moved_head_is_rebased_when_keys_differ() {
    let (_dir, db) = fresh();
    let mut slow = db.transaction(CONFIG_BRANCH).expect("tx");
    slow.set_key("hostname", b"slow").expect("valid");
    let mut fast = db.transaction(CONFIG_BRANCH).expect("tx");
    fast.set_key("memory", b"4096").expect("valid");
    let first = fast.commit().expect("commit");
    let second = slow.commit().expect("rebased commit");
    assert!(second.rebased && !first.rebased);
    assert_eq!(second.parent, Some(first.id));
    assert_eq!(db.read(CONFIG_BRANCH, "memory").expect("read"), Some(b"4096\n".to_vec()));
    assert_eq!(db.read(CONFIG_BRANCH, "etc/hostname").expect("read"), Some(b"slow\n".to_vec()));
}

#[test]
fn the_same_key_changed_underneath_is_a_conflict() {
    let (_dir, db) = fresh();
    let head = db.head(CONFIG_BRANCH).expect("head");
    let mut slow = db.transaction(CONFIG_BRANCH).expect("tx");
    slow.set_key("memory", b"1024").expect("valid");
    let mut fast = db.transaction(CONFIG_BRANCH).expect("tx");
    fast.set_key("memory", b"4096").expect("valid");
    let winner = fast.commit().expect("commit");
    let err = slow.commit().expect_err("conflict");
    assert!(matches!(err, Error::Conflict { ref key, .. } if key == "memory"), "{err}");
    assert!(err.to_string().contains("changed to 4096"), "{err}");
    assert_ne!(Some(winner.id), head);
    assert_eq!(db.head(CONFIG_BRANCH).expect("head"), Some(winner.id));
}

#[test]
fn an_invalid_tree_never_becomes_the_head() {
    let (_dir, db) = fresh();
    let head = db.head(CONFIG_BRANCH).expect("head");
    let mut tx = db.transaction(CONFIG_BRANCH).expect("tx");
    tx.set_path("memory", b"lots".to_vec());
    assert!(matches!(tx.commit(), Err(Error::Refused(_))));
    let mut tx = db.transaction(CONFIG_BRANCH).expect("tx");
    tx.remove_path("ncpu");
    assert!(matches!(tx.commit(), Err(Error::Refused(_))));
    let mut tx = db.transaction(CONFIG_BRANCH).expect("tx");
    tx.set_path("etc/motd", b"hello\n".to_vec());
    assert!(matches!(tx.commit(), Err(Error::Refused(_))));
    assert_eq!(db.head(CONFIG_BRANCH).expect("head"), head);
}

#[test]
fn other_branches_hold_free_form_state() {
    let (dir, db) = fresh();
    let mut tx = db.transaction("state").expect("tx");
    tx.set_path("applied-commit", b"abc\n".to_vec()).message("guest: applied abc");
    let done = tx.commit().expect("a new branch");
    assert_eq!(done.parent, None);
    assert_eq!(git(&dir.path().join("db"), &["show", "state:applied-commit"]), "abc\n");
}

#[test]
fn watch_sees_own_writes_and_the_git_cli() {
    let (dir, db) = fresh();
    let git_dir = dir.path().join("db");
    let watch = db.watch(CONFIG_BRANCH).expect("watch");
    assert_eq!(watch.initial(), db.head(CONFIG_BRANCH).expect("head"));
    let mut tx = db.transaction(CONFIG_BRANCH).expect("tx");
    tx.set_key("memory", b"1024").expect("valid");
    let ours = tx.commit().expect("commit").id;
    assert_eq!(watch.recv_timeout(Duration::from_secs(5)), Ok(Some(ours)));
    // Another process: the git CLI resets master to its parent.
    let parent = git(&git_dir, &["rev-parse", "master~1"]).trim().to_owned();
    git(&git_dir, &["update-ref", "refs/heads/master", &parent]);
    let seen = watch.recv_timeout(Duration::from_secs(5)).expect("an event").expect("a head");
    assert_eq!(seen.to_string(), parent);
    // And packing refs changes nothing a watcher would report.
    git(&git_dir, &["pack-refs", "--all"]);
    assert_eq!(watch.recv_timeout(Duration::from_millis(1200)), Err(true));
}

#[test]
fn history_and_rollback() {
    let (dir, db) = fresh();
    let init = db.head(CONFIG_BRANCH).expect("head").expect("exists");
    for value in ["1024", "4096", "1024"] {
        let mut tx = db.transaction(CONFIG_BRANCH).expect("tx");
        tx.set_key("memory", value.as_bytes()).expect("valid");
        tx.commit().expect("commit");
    }
    let history = db.key_history(CONFIG_BRANCH, "memory", None).expect("history");
    let values: Vec<_> = history
        .iter()
        .map(|c| String::from_utf8_lossy(c.new.as_deref().unwrap_or(b"-")).trim().to_owned())
        .collect();
    assert_eq!(values, ["1024", "4096", "1024", "2048"]);
    let done = db.rollback(&init.to_string(), None, None).expect("rollback");
    let tree = |rev: &str| git(&dir.path().join("db"), &["rev-parse", &format!("{rev}^{{tree}}")]);
    assert_eq!(tree(&done.id.to_string()), tree(&init.to_string()));
    assert_eq!(db.log(CONFIG_BRANCH, None).expect("log").len(), 5);
    let diff = db.diff(&init.to_string(), "master~1").expect("diff");
    assert_eq!(diff.len(), 1);
    assert_eq!(diff[0].path, "memory");
}

#[test]
fn an_idle_watch_does_not_read_the_ref_over_and_over() {
    let (dir, db) = fresh();
    let git_dir = dir.path().join("db");
    let watch = db.watch(CONFIG_BRANCH).expect("watch");
    // Readers of the ref (this process and the git CLI) raise open and close events.
    for _ in 0..20 {
        db.head(CONFIG_BRANCH).expect("head");
        git(&git_dir, &["rev-parse", "master"]);
    }
    assert_eq!(watch.recv_timeout(Duration::from_secs(5)), Err(true), "nothing changed");
    assert!(watch.reads() <= 3, "an idle watch read the ref {} times in 5 s", watch.reads());
    // A commit is still seen at once.
    let mut tx = db.transaction(CONFIG_BRANCH).expect("tx");
    tx.set_key("memory", b"1024").expect("valid");
    let ours = tx.commit().expect("commit").id;
    assert_eq!(watch.recv_timeout(Duration::from_secs(2)), Ok(Some(ours)));
}

#[test]
fn watch_sees_a_packed_ref_move_and_a_branch_deleted_and_recreated() {
    let (dir, db) = fresh();
    let git_dir = dir.path().join("db");
    let first = git(&git_dir, &["rev-parse", "master"]).trim().to_owned();
    git(&git_dir, &["branch", "side", "master"]);
    let watch = db.watch("side").expect("watch");
    // A packed ref moved by the git CLI: pack, then update the packed value only.
    git(&git_dir, &["pack-refs", "--all"]);
    assert_eq!(watch.recv_timeout(Duration::from_millis(600)), Err(true), "packing moves nothing");
    let mut tx = db.transaction(CONFIG_BRANCH).expect("tx");
    tx.set_key("memory", b"1024").expect("valid");
    let second = tx.commit().expect("commit").id.to_string();
    git(&git_dir, &["update-ref", "refs/heads/side", &second]);
    let seen = watch.recv_timeout(Duration::from_secs(5)).expect("seen").expect("a head");
    assert_eq!(seen.to_string(), second);
    git(&git_dir, &["pack-refs", "--all"]);
    git(&git_dir, &["update-ref", "-d", "refs/heads/side"]);
    assert_eq!(watch.recv_timeout(Duration::from_secs(5)), Ok(None), "deleted");
    git(&git_dir, &["update-ref", "refs/heads/side", &first]);
    let seen = watch.recv_timeout(Duration::from_secs(5)).expect("seen").expect("re-created");
    assert_eq!(seen.to_string(), first);
}
