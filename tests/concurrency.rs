//! Concurrent writers: no acknowledged change is ever lost.

use std::collections::BTreeMap;
use std::process::Child;

use crate::util::Env;

/// For each writer, a key of its own and the 50 values it writes, in order.
fn plan() -> Vec<(&'static str, Vec<String>)> {
    let n = 50;
    vec![
        ("memory", (0..n).map(|i| (1024 + i).to_string()).collect()),
        ("mtu", (0..n).map(|i| (1000 + i).to_string()).collect()),
        ("hostname", (0..n).map(|i| format!("host-{i}")).collect()),
        ("dns", (0..n).map(|i| format!("10.0.0.{}", i + 1)).collect()),
        ("port-forwarding", (0..n).map(|i| format!("{}:80", 8000 + i)).collect()),
        ("sysctl", (0..n).map(|i| format!("vm.swappiness = {i}")).collect()),
        ("proxy.http", (0..n).map(|i| format!("http://proxy-{i}.example:3128")).collect()),
        ("proxy.exclude", (0..n).map(|i| format!("host-{i}.example")).collect()),
    ]
}

#[test]
fn eight_writers_of_distinct_keys_lose_nothing() {
    let env = Env::new();
    let plan = plan();
    let script = |key: &str, values: &[String]| {
        let mut script = String::from("set -e\n");
        for value in values {
            script.push_str(&format!("\"$CAIRN\" set {key} '{value}' >/dev/null\n"));
        }
        script
    };
    let children: Vec<(&str, Child)> = plan
        .iter()
        .map(|(key, values)| {
            let child = std::process::Command::new("sh")
                .arg("-c")
                .arg(script(key, values))
                .env("CAIRN", crate::util::cairn_bin())
                .env("CAIRN_HOME", env.home())
                .env("GIT_AUTHOR_NAME", "w")
                .env("GIT_AUTHOR_EMAIL", "w@example.com")
                .spawn()
                .expect("spawn a writer");
            (*key, child)
        })
        .collect();
    for (key, child) in children {
        let out = child.wait_with_output().expect("writer finishes");
        assert!(out.status.success(), "writer of {key} failed");
    }
    assert_eq!(env.git(&["rev-list", "--count", "master"]).trim(), "401", "400 sets + init");
    for (key, values) in &plan {
        let key_info = cairn::schema::by_name(key).expect("key");
        let history = env.ok(&["log", key]);
        let mut seen: Vec<String> = history
            .lines()
            .map(|l| l.split('\t').nth(3).expect("new value column").to_owned())
            .collect();
        seen.pop(); // the init commit
        seen.reverse();
        let expected: Vec<String> = values
            .iter()
            .map(|v| {
                let host = cairn::schema::Host::UNLIMITED;
                let stored = cairn::schema::value::normalize(
                    key_info,
                    v.as_bytes(),
                    &host,
                    Default::default(),
                )
                .expect("test values are valid");
                cairn::schema::value::display(key_info, &stored)
            })
            .collect();
        assert_eq!(seen, expected, "history of {key}");
        assert_eq!(
            env.ok(&["list"])
                .lines()
                .find(|l| l.starts_with(&format!("{key}=")))
                .map(str::to_owned),
            Some(format!("{key}={}", expected.last().expect("50 values")))
        );
    }
    env.fsck();
}

#[test]
fn two_writers_of_one_key_never_lose_silently() {
    let env = Env::new();
    let writer = |base: u32| {
        let mut script = String::new();
        for i in 0..30 {
            script.push_str(&format!(
                "out=$(\"$CAIRN\" set memory {}); echo \"$? $out {}\"\n",
                base + i,
                base + i
            ));
        }
        std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("CAIRN", crate::util::cairn_bin())
            .env("CAIRN_HOME", env.home())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn")
    };
    let (a, b) = (writer(1000), writer(5000));
    let mut acked = BTreeMap::new();
    for child in [a, b] {
        let out = child.wait_with_output().expect("wait");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts.as_slice() {
                ["0", commit, value] => {
                    acked.insert((*commit).to_owned(), (*value).to_owned());
                }
                ["5", value] => eprintln!("conflict reported for {value}"),
                other => panic!("unexpected outcome {other:?}"),
            }
        }
    }
    assert!(!acked.is_empty());
    let history = env.ok(&["log", "memory"]);
    for (commit, value) in &acked {
        let row = history.lines().find(|l| l.starts_with(commit.as_str()));
        let row = row.unwrap_or_else(|| {
            panic!("acknowledged commit {commit} ({value}) missing from history")
        });
        assert_eq!(row.split('\t').nth(3), Some(value.as_str()));
    }
    env.fsck();
}
