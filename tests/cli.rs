//! The CLI contract, scenario by scenario, with the git CLI as the referee.

use std::io::Write;
use std::process::Stdio;

use crate::util::Env;

#[test]
fn init_writes_every_default_in_one_commit_on_master() {
    let env = Env::new();
    assert_eq!(env.git(&["symbolic-ref", "HEAD"]).trim(), "refs/heads/master");
    assert_eq!(env.git(&["rev-parse", "--is-bare-repository"]).trim(), "true");
    assert_eq!(env.git(&["log", "--format=%s", "master"]).trim(), "init: defaults for schema v6");
    let files = env.git(&["ls-tree", "-r", "--name-only", "master"]);
    for key in cairn::schema::KEYS {
        assert!(files.lines().any(|f| f == key.path), "{} missing from {files}", key.path);
    }
    assert_eq!(env.git(&["show", "master:memory"]), "2048\n");
    assert_eq!(env.git(&["show", "master:etc/hostname"]), "cairn\n");
    env.fsck();
    // A second init changes nothing.
    let head = env.head();
    env.ok(&["init"]);
    assert_eq!(env.head(), head);
}

#[test]
fn set_get_and_git_agree() {
    let env = Env::new();
    let printed = env.ok(&["set", "memory", "4096"]);
    assert_eq!(printed.trim(), env.head(), "set prints the new commit");
    assert_eq!(env.ok(&["get", "memory"]), "4096\n");
    assert_eq!(env.git(&["show", "master:memory"]), "4096\n");
    assert_eq!(
        env.git(&["log", "-1", "--format=%s%n%an <%ae>", "master"]),
        "set memory=4096\nTest Author <author@example.com>\n"
    );
    assert_eq!(env.ok(&["--json", "get", "memory"]).trim(), "4096");
    env.fsck();
}

#[test]
fn several_keys_make_one_commit() {
    let env = Env::new();
    let before = env.git(&["rev-list", "--count", "master"]);
    env.ok(&["set", "memory=3G", "ncpu=1", "hostname=Build-Box"]);
    env.ok(&["set", "hypervisor", "qemu", "memory=1024"]);
    let after = env.git(&["rev-list", "--count", "master"]);
    assert_eq!(
        before.trim().parse::<u32>().unwrap_or(0) + 2,
        after.trim().parse::<u32>().unwrap_or(0)
    );
    assert_eq!(
        env.git(&["log", "-2", "--format=%s", "master"]),
        "set hypervisor=qemu memory=1024\nset hostname=build-box memory=3072 ncpu=1\n"
    );
    assert_eq!(env.ok(&["get", "hostname"]), "build-box\n");
    assert_eq!(env.ok(&["get", "hypervisor"]), "qemu\n");
    env.fsck();
}

#[test]
fn setting_the_current_value_makes_no_commit() {
    let env = Env::new();
    let head = env.head();
    let printed = env.ok(&["set", "memory", "2048"]);
    assert_eq!(printed.trim(), head);
    assert_eq!(env.head(), head);
}

#[test]
fn values_from_files_and_stdin() {
    let env = Env::new();
    let file = env.dir.path().join("daemon.json");
    std::fs::write(&file, r#"{"debug": true, "labels": ["team=infra"]}"#).expect("write");
    env.ok(&["set", "daemon", &format!("@{}", file.display())]);
    assert_eq!(
        env.git(&["show", "master:etc/docker/daemon.json"]),
        "{\n  \"debug\": true,\n  \"labels\": [\n    \"team=infra\"\n  ]\n}\n"
    );
    let mut child = env
        .command(&["set", "sysctl", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().expect("stdin").write_all(b"vm.max_map_count=262144\n").expect("write");
    assert!(child.wait_with_output().expect("wait").status.success());
    assert_eq!(env.ok(&["get", "sysctl"]), "vm.max_map_count = 262144\n");
    env.fsck();
}

#[test]
fn list_plain_json_and_defaults() {
    let env = Env::new();
    env.ok(&["set", "memory", "4096"]);
    let plain = env.ok(&["list"]);
    assert!(plain.lines().any(|l| l == "memory=4096"), "{plain}");
    assert!(plain.lines().any(|l| l == "hostname=cairn"), "{plain}");
    let json: serde_json::Value = serde_json::from_str(&env.ok(&["--json", "list"])).expect("json");
    let rows = json.as_array().expect("array");
    let memory = rows.iter().find(|r| r["key"] == "memory").expect("memory row");
    assert_eq!(memory["value"], 4096);
    assert_eq!(memory["default"], 2048);
    assert_eq!(memory["changed"], true);
    assert_eq!(memory["apply"], "reboot");
    let hypervisor = rows.iter().find(|r| r["key"] == "hypervisor").expect("row");
    assert_eq!(hypervisor["options"]["memory"], 4096);
    assert_eq!(rows.iter().find(|r| r["key"] == "hostname").expect("row")["changed"], false);
}

#[test]
fn log_of_the_branch_and_of_a_key() {
    let env = Env::new();
    env.ok(&["set", "memory", "4096"]);
    env.ok(&["set", "hostname", "one"]);
    env.ok(&["set", "memory", "3072", "-m", "smaller"]);
    let log = env.ok(&["log"]);
    let subjects: Vec<&str> = log.lines().map(|l| l.rsplit('\t').next().unwrap_or("")).collect();
    assert_eq!(
        subjects,
        ["smaller", "set hostname=one", "set memory=4096", "init: defaults for schema v6"]
    );
    let memory = env.ok(&["log", "memory"]);
    let rows: Vec<Vec<&str>> = memory.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 3, "{memory}");
    assert_eq!(rows[0][2..], ["4096", "3072", "smaller"]);
    assert_eq!(rows[1][2..], ["2048", "4096", "set memory=4096"]);
    assert_eq!(rows[2][2..], ["(absent)", "2048", "init: defaults for schema v6"]);
    let git: Vec<String> = env
        .git(&["log", "--format=%H", "master", "--", "memory"])
        .lines()
        .map(str::to_owned)
        .collect();
    let ours: Vec<String> = rows.iter().map(|r| r[0].to_owned()).collect();
    assert_eq!(ours, git, "cairn log KEY lists the commits git log -- PATH lists");
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["--json", "log", "memory", "-n", "1"])).expect("json");
    assert_eq!(json[0]["old"], 4096);
    assert_eq!(json[0]["new"], 3072);
}

#[test]
fn diff_between_commits() {
    let env = Env::new();
    let init = env.head();
    env.ok(&["set", "memory=4096", "dns=1.1.1.1,9.9.9.9"]);
    assert_eq!(env.ok(&["diff"]), "memory: 2048 -> 4096\ndns: \"\" -> 1.1.1.1,9.9.9.9\n");
    env.ok(&["set", "hostname", "x"]);
    let all = env.ok(&["diff", &init]);
    assert_eq!(all.lines().count(), 3, "{all}");
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["--json", "diff", &init, "master"])).expect("json");
    let memory =
        json.as_array().expect("array").iter().find(|c| c["key"] == "memory").expect("memory");
    assert_eq!(
        (memory["old"].clone(), memory["new"].clone(), memory["apply"].clone()),
        (2048.into(), 4096.into(), "reboot".into())
    );
}

#[test]
fn rollback_is_a_new_commit_with_the_old_tree() {
    let env = Env::new();
    env.ok(&["set", "memory", "4096"]);
    let good = env.head();
    env.ok(&["set", "memory=8192", "hostname=broken"]);
    let count = env.git(&["rev-list", "--count", "master"]);
    env.ok(&["rollback", &good[..8]]);
    assert_eq!(
        env.git(&["rev-parse", "master^{tree}"]),
        env.git(&["rev-parse", &format!("{good}^{{tree}}")])
    );
    let after = env.git(&["rev-list", "--count", "master"]);
    assert_eq!(
        after.trim().parse::<u32>().ok(),
        count.trim().parse::<u32>().ok().map(|c| c + 1),
        "history is kept"
    );
    assert!(env
        .git(&["log", "-1", "--format=%s", "master"])
        .starts_with(&format!("rollback to {}", &good[..10])));
    env.fsck();
}

#[test]
fn reset_puts_defaults_back() {
    let env = Env::new();
    env.ok(&["set", "memory=4096", "hostname=x", "mtu=9000"]);
    env.ok(&["reset", "memory", "hostname"]);
    assert_eq!(env.ok(&["get", "memory"]), "2048\n");
    assert_eq!(env.ok(&["get", "mtu"]), "9000\n");
    assert_eq!(env.git(&["log", "-1", "--format=%s", "master"]).trim(), "reset memory hostname");
    env.ok(&["reset", "--all"]);
    assert_eq!(env.ok(&["get", "mtu"]), "1500\n");
}

#[test]
fn export_and_apply_round_trip() {
    let env = Env::new();
    env.ok(&["set", "memory=4096", "port-forwarding=8080:80,53:53/udp", "daemon={\"debug\":true}"]);
    let exported = env.ok(&["export"]);
    let file = env.dir.path().join("saved.json");
    std::fs::write(&file, &exported).expect("write");
    env.ok(&["reset", "--all"]);
    env.ok(&["apply", file.to_str().expect("utf-8 path")]);
    assert_eq!(env.ok(&["export"]), exported);
    assert_eq!(
        env.git(&["log", "-1", "--format=%s", "master"]).trim(),
        format!("apply {}", file.display())
    );
    let lines = env.dir.path().join("keys.txt");
    std::fs::write(&lines, "# tuning\nmemory=1024\nncpu = 1\n").expect("write");
    env.ok(&["apply", lines.to_str().expect("utf-8 path"), "-m", "from lines"]);
    assert_eq!(env.ok(&["get", "memory"]), "1024\n");
    assert_eq!(env.ok(&["get", "ncpu"]), "1\n");
    // An apply with one bad key changes nothing.
    std::fs::write(&lines, "memory=2048\nncpu=lots\n").expect("write");
    let head = env.head();
    env.fails(&["apply", lines.to_str().expect("utf-8 path")], 3);
    assert_eq!(env.head(), head);
    env.fsck();
}

#[test]
fn expect_is_compare_and_swap() {
    let env = Env::new();
    let head = env.head();
    env.ok(&["set", "memory", "4096", "--expect", &head]);
    let err = env.fails(&["set", "memory", "3072", "--expect", &head], 5);
    assert!(err.contains("not at the expected"), "{err}");
    assert_eq!(env.ok(&["get", "memory"]), "4096\n");
}

#[test]
fn edit_validates_on_save() {
    let env = Env::new();
    let editor = |script: &str| {
        let path = env.dir.path().join("editor.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).expect("write");
        path.display().to_string()
    };
    let good = editor(r#"printf '{"debug": true}\n' > "$1""#);
    let out = env
        .command(&["edit", "daemon"])
        .env("EDITOR", format!("sh {good}"))
        .env_remove("VISUAL")
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(env.ok(&["get", "daemon"]), "{\n  \"debug\": true\n}\n");
    let head = env.head();
    let bad = editor(r#"printf '{"debug": "very"}\n' > "$1""#);
    // The refused edit is kept for the user; here it is kept inside the test's directory,
    // which goes with the test, instead of the host's /tmp.
    let tmp = env.dir.path().join("tmp");
    std::fs::create_dir(&tmp).expect("a temporary directory");
    let out = env
        .command(&["edit", "daemon"])
        .env("EDITOR", format!("sh {bad}"))
        .env_remove("VISUAL")
        .env("TMPDIR", &tmp)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("your edit is kept in") && stderr.contains("wrong type for debug"),
        "{stderr}"
    );
    let kept: Vec<_> = std::fs::read_dir(&tmp).expect("read").flatten().map(|e| e.path()).collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(stderr.contains(&kept[0].display().to_string()), "{stderr}");
    assert_eq!(std::fs::read_to_string(&kept[0]).expect("read"), "{\"debug\": \"very\"}\n");
    assert_eq!(env.head(), head);
}

#[test]
fn usage_errors_exit_2() {
    let env = Env::new();
    env.fails(&["set", "memory"], 2);
    env.fails(&["set", "memory=1", "ncpu"], 2);
    env.fails(&["frobnicate"], 2);
}

#[test]
fn an_uninitialised_database_is_a_clear_runtime_error() {
    let env = Env::empty();
    let err = env.fails(&["get", "memory"], 1);
    assert!(err.contains("is not a cairn database"), "{err}");
}

#[test]
fn db_flag_and_env_choose_the_database() {
    let env = Env::empty();
    let other = env.dir.path().join("elsewhere");
    let other = other.to_str().expect("utf-8 path");
    env.ok(&["--db", other, "init"]);
    env.ok(&["--db", other, "set", "memory", "1536"]);
    let out = env.command(&["get", "memory"]).env("CAIRN_DB", other).output().expect("run");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1536\n");
    assert_eq!(env.ok(&["--db", other, "path"]).trim(), other);
}

#[test]
fn schema_and_completions() {
    let env = Env::new();
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["--json", "schema"])).expect("json");
    assert_eq!(json["schema-version"], cairn::schema::CURRENT_VERSION);
    assert!(json["keys"].as_array().is_some_and(|k| k.len() == cairn::schema::KEYS.len()));
    let daemon = env.ok(&["schema", "daemon.json"]);
    assert!(daemon.lines().any(|l| l.starts_with("debug\t")), "{daemon}");
    let bash = env.ok(&["completions", "bash"]);
    assert!(bash.contains("_cairn"), "completion script");
    let help = env.ok(&["--help"]);
    assert!(help.contains("Examples:") && help.contains("Exit codes"), "{help}");
}

#[test]
fn init_refuses_a_directory_that_holds_other_files() {
    let env = Env::empty();
    std::fs::create_dir_all(env.db()).expect("mkdir");
    std::fs::write(env.db().join("notes.txt"), "mine").expect("write");
    let err = env.fails(&["init"], 1);
    assert!(err.contains("is not empty and not a git repository"), "{err}");
    assert!(env.db().join("notes.txt").exists());
    assert!(!env.db().join("HEAD").exists());
}
