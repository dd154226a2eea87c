//! Upgrading a schema v1 database (to v4, in one step): a commit of its own that adds and converts keys and never
//! touches a value the user changed.

use std::process::Command;

use crate::util::{fixture, Env};

fn v1_env(changed_memory: bool) -> Env {
    let env = Env::empty();
    std::fs::create_dir_all(env.home()).expect("home");
    let out = Command::new("sh")
        .arg(fixture("v1-db.sh"))
        .arg(env.db())
        .env("CHANGED_MEMORY", if changed_memory { "1" } else { "0" })
        .env("GIT_AUTHOR_NAME", "Old Cairn")
        .env("GIT_AUTHOR_EMAIL", "old@example.com")
        .env("GIT_COMMITTER_NAME", "Old Cairn")
        .env("GIT_COMMITTER_EMAIL", "old@example.com")
        .output()
        .expect("sh runs");
    assert!(out.status.success(), "v1-db.sh: {}", String::from_utf8_lossy(&out.stderr));
    env
}

#[test]
fn first_write_migrates_v1_in_its_own_commit() {
    let env = v1_env(false);
    let old_head = env.head();
    env.ok(&["set", "hostname", "upgraded"]);
    let subjects = env.git(&["log", "--format=%s", "-2", "master"]);
    assert_eq!(subjects, "set hostname=upgraded\nschema: migrate v1 to v6\n");
    assert_eq!(env.git(&["rev-parse", "master~2"]).trim(), old_head);
    let body = env.git(&["log", "-1", "--format=%b", "master~1"]);
    assert!(
        body.contains("mtu: added")
            && body.contains("memory: default 1024 -> 2048")
            && body.contains("disk: added")
            && body.contains("binfmt: added"),
        "{body}"
    );
    assert_eq!(env.git(&["show", "master:schema-version"]), "6\n");
    assert_eq!(env.git(&["show", "master:net/mtu"]), "1500\n");
    assert_eq!(
        env.git(&["show", "master:net/dns"]),
        "1.1.1.1\n8.8.8.8\n",
        "the user's servers, converted"
    );
    assert_eq!(env.git(&["show", "master:memory"]), "2048\n", "never changed: new default");
    assert_eq!(env.git(&["show", "master:disk"]), "65536\n");
    assert_eq!(env.git(&["show", "master:binfmt"]), "arm64\narm\nriscv64\nppc64le\ns390x\n");
    assert_eq!(env.git(&["show", "master:auto-pause"]), "0\n");
    env.fsck();
}

#[test]
fn a_memory_value_the_user_set_survives_even_if_it_equals_the_old_default() {
    let env = v1_env(true);
    env.ok(&["init"]);
    assert_eq!(env.git(&["log", "-1", "--format=%s", "master"]).trim(), "schema: migrate v1 to v6");
    assert_eq!(env.git(&["show", "master:memory"]), "1024\n");
    assert_eq!(env.git(&["show", "master:net/mtu"]), "1500\n");
    // A second init has nothing left to do.
    let head = env.head();
    env.ok(&["init"]);
    assert_eq!(env.head(), head);
    env.fsck();
}

#[test]
fn reading_a_v1_database_works_before_any_write() {
    let env = v1_env(false);
    assert_eq!(env.ok(&["get", "memory"]), "1024\n");
    assert_eq!(env.ok(&["get", "dns"]), "1.1.1.1,8.8.8.8\n");
    let err = env.fails(&["get", "mtu"], 1);
    assert!(err.contains("mtu: not present"), "{err}");
}
