//! Bad input: refused with exit 3 and a message naming the key, the value and what is allowed;
//! the head never moves.

use crate::util::Env;

/// Invalid values for every settable key: wrong type, out of range, malformed, empty.
const CASES: &[(&str, &[&str])] = &[
    ("hostname", &["", "-lead", "trail-", "has space", "dot.ted", "über"]),
    ("memory", &["lots", "", "255", "512", "767", "99999999", "-1", "4T", "1.5G"]),
    ("ncpu", &["0", "many", "", "1024", "-2"]),
    ("hypervisor", &["virtualbox", "", "QEMU"]),
    ("network", &["bridge", "", "nat hostnet"]),
    (
        "port-forwarding",
        &["80", "x:80", "80:0", "80:99999", "80:80/sctp", "1.2.3:80:80", "80:80 80:81"],
    ),
    (
        "dns",
        &["one.one.one.one", "1.1.1.256", "8.8.8.8;", "0.0.0.0", "255.255.255.255", "224.0.0.1"],
    ),
    ("mtu", &["575", "65536", "big", ""]),
    ("external-bind", &["yes", "", "TRUE", "1"]),
    (
        "file-sharing",
        &[
            "src",
            "/",
            "/tmp\n/tmp/x",
            "/tmp/x\n/tmp",
            "/usr/local/src",
            "/tmp/../etc",
            "/nonexistent-dir",
        ],
    ),
    ("filesystem", &["osxfs", "", "virtiofs 9p"]),
    (
        "proxy.http",
        &["proxy:3128", "ftp://proxy", "http://", "http://a b", "http://[::1", "http://proxy:0"],
    ),
    ("proxy.https", &["https//x", "http://host:port"]),
    ("proxy.exclude", &["a;b", "x|y"]),
    (
        "daemon",
        &[
            "",
            "[]",
            "{",
            "true",
            r#"{"debug":"yes"}"#,
            r#"{"labels":"a=b"}"#,
            r#"{"max-concurrent-downloads":-3}"#,
            r#"{"log-level":"chatty"}"#,
            r#"{"debgu":true}"#,
            r#"{"hosts":["tcp://0.0.0.0:2375"]}"#,
            r#"{"userland-proxy":false}"#,
            r#"{"userland-proxy-path":"/usr/bin/docker-proxy"}"#,
            r#"{"debug":true,"debug":false}"#,
            r#"{"default-address-pools":[{"base":"garbage","size":24}]}"#,
        ],
    ),
    (
        "sysctl",
        &[
            "swappiness",
            "vm.swappiness=",
            "=1",
            "vm.a=1\nvm.a=2",
            "/etc/shadow = root::0:0:99999:7:::",
            "../../../init = x",
            ".etc.passwd = x",
        ],
    ),
    ("disk", &["lots", "1G", "-1", "99T", ""]),
    ("binfmt", &["x86", "aarch64", "arm64;arm", "ARM64", "arm64 all", "s390"]),
    ("auto-pause", &["-1", "1441", "soon", "", "5m", "1.5"]),
];

#[test]
fn every_key_refuses_bad_values_and_changes_nothing() {
    let env = Env::new();
    let head = env.head();
    for (key, values) in CASES {
        for value in *values {
            // KEY=VALUE, so that values starting with a hyphen reach the schema as values.
            let err = env.fails(&["set", &format!("{key}={value}")], 3);
            assert!(err.starts_with(&format!("cairn: {key}: ")), "{key}={value:?}: {err}");
            assert!(err.contains("allowed:"), "{key}={value:?}: no allowed values in {err}");
            assert_eq!(env.head(), head, "{key}={value:?} moved the head");
        }
    }
    env.fsck();
}

#[test]
fn every_settable_key_has_bad_cases() {
    for key in cairn::schema::KEYS.iter().filter(|k| !k.internal) {
        assert!(
            CASES.iter().any(|(name, _)| *name == key.name),
            "no bad-input cases for {}",
            key.name
        );
    }
}

#[test]
fn messages_quote_the_value_and_the_range() {
    let env = Env::new();
    let err = env.fails(&["set", "memory", "lots"], 3);
    let max = cairn::host::detect(std::path::Path::new("/nonexistent")).expect("host").ram_mib;
    assert_eq!(
        err.trim(),
        format!("cairn: memory: \"lots\" is not a size in MiB (allowed: 768 to {max})")
    );
    // Less memory than the engine's image boots in: refused with why (it used to be accepted,
    // and `up` then waited for a guest that had filled its root file system).
    let head = env.head();
    let err = env.fails(&["set", "memory", "512"], 3);
    assert_eq!(
        err.trim(),
        format!(
            "cairn: memory: \"512\" is less than the 768 MiB the Docker engine's image needs \
             (allowed: 768 to {max})"
        )
    );
    assert_eq!(env.head(), head, "nothing committed");
    let err = env.fails(&["set", "binfmt", "arm64 mips"], 3);
    assert_eq!(
        err.trim(),
        "cairn: binfmt: \"mips\" is not one of the choices (allowed: any of arm64, arm, \
         riscv64, ppc64le, s390x separated by commas or spaces, or empty for none)"
    );
    let err = env.fails(&["set", "hypervisor", "vbox"], 3);
    assert_eq!(
        err.trim(),
        "cairn: hypervisor: \"vbox\" is not one of the choices (allowed: native, qemu)"
    );
}

#[test]
fn non_utf8_huge_and_unknown_are_refused() {
    let env = Env::new();
    let head = env.head();
    let binary = env.dir.path().join("binary");
    std::fs::write(&binary, b"\xff\xfe\x00garbage").expect("write");
    let err = env.fails(&["set", "hostname", &format!("@{}", binary.display())], 3);
    assert!(err.contains("is not UTF-8 text"), "{err}");
    let huge = env.dir.path().join("huge.json");
    let mut text = String::from("{\"labels\": [");
    while text.len() < 2 << 20 {
        text.push_str("\"k=vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv\",");
    }
    text.push_str("\"k=v\"]}");
    std::fs::write(&huge, text).expect("write");
    let err = env.fails(&["set", "daemon", &format!("@{}", huge.display())], 3);
    assert!(err.contains("is too long"), "{err}");
    assert!(err.len() < 400, "the message stays short: {err}");
    let err = env.fails(&["set", "memroy", "4096"], 3);
    assert!(err.contains("no such key") && err.contains("memory"), "{err}");
    let err = env.fails(&["set", "schema-version", "3"], 3);
    assert!(err.contains("managed by cairn"), "{err}");
    assert_eq!(env.head(), head);
}

#[test]
fn force_accepts_unknown_daemon_keys_and_later_sets_still_work() {
    let env = Env::new();
    env.ok(&["set", "daemon", r#"{"experimental-thing": 1}"#, "--force"]);
    env.ok(&["set", "memory", "1024"]);
    assert!(env.ok(&["get", "daemon"]).contains("experimental-thing"));
    // Wrong types of known keys stay refused even with --force.
    env.fails(&["set", "daemon", r#"{"debug": 1}"#, "--force"], 3);
}

#[test]
fn a_key_twice_an_empty_message_and_blank_values_are_refused() {
    let env = Env::new();
    let head = env.head();
    let err = env.fails(&["set", "memory=4096", "memory=8192"], 2);
    assert!(err.contains("memory is given twice"), "{err}");
    let err = env.fails(&["set", "memory", "4096", "-m", ""], 2);
    assert!(err.contains("the message is empty"), "{err}");
    let err = env.fails(&["set", "hostname", " "], 3);
    assert!(err.starts_with("cairn: hostname: \" \" is not a host name"), "{err}");
    let err = env.fails(&["set", "daemon", r#"{"mtu": 99999999999999999999999}"#], 3);
    assert!(err.contains("\"99999999999999999999999\""), "the value as written: {err}");
    let err = env.fails(&["set", "daemon", r#"{"max-concurrent-downloads": -1}"#], 3);
    assert!(err.contains("is negative"), "{err}");
    assert_eq!(env.head(), head);
}

#[test]
fn apply_refuses_values_of_the_wrong_json_type() {
    let env = Env::new();
    let head = env.head();
    for bad in [r#"{"hostname": null}"#, r#"{"memory": [4096]}"#, r#"{"dns": [1]}"#] {
        let file = env.dir.path().join("bad.json");
        std::fs::write(&file, bad).expect("write");
        let err = env.fails(&["apply", &file.display().to_string()], 3);
        assert!(err.contains("allowed:"), "{bad}: {err}");
    }
    assert_eq!(env.head(), head);
}

#[test]
fn export_then_apply_round_trips_a_forced_daemon_json() {
    let env = Env::new();
    env.ok(&["set", "daemon", r#"{"foo": 1}"#, "--force"]);
    let exported = env.ok(&["export"]);
    assert!(exported.contains("forced-keys"), "{exported}");
    let file = env.dir.path().join("saved.json");
    std::fs::write(&file, &exported).expect("write");
    env.ok(&["set", "daemon", "{}"]);
    env.ok(&["apply", &file.display().to_string()]);
    assert!(env.ok(&["get", "daemon"]).contains("foo"));
}

#[test]
fn a_huge_value_written_around_cairn_is_never_read_whole() {
    let env = Env::new();
    let huge = "h".repeat(3 << 20);
    let file = env.dir.path().join("huge");
    std::fs::write(&file, format!("{huge}\n")).expect("write");
    env.git_set("etc/hostname", &format!("@{}", file.display()));
    let out = env.run(&["list"]);
    assert!(out.status.success());
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.contains(&format!("hostname=({} bytes, not read)", huge.len() + 1)), "{list}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("hostname"));
    let err = env.fails(&["get", "hostname"], 1);
    assert!(err.contains("was not read"), "{err}");
    // A write of another key keeps it and says so; a write of the key replaces it.
    let out = env.run(&["set", "memory", "1024"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("kept as it is"));
    env.ok(&["set", "hostname", "fixed"]);
    assert_eq!(env.ok(&["get", "hostname"]), "fixed\n");
}
