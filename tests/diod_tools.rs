//! diod's client tools (Debian package diod), a 9P2000.L implementation that is not ours, list
//! and read through `cairn serve`.

use std::process::Command;

use crate::util::Env;

/// Runs a diod tool against the server; its stdout.
fn diod(tool: &str, port: u16, args: &[&str]) -> String {
    let server = format!("127.0.0.1:{port}");
    let out = Command::new(tool)
        .args(["-s", &server, "-a", "/", "-t", "30"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} runs (package diod): {e}"));
    assert!(out.status.success(), "{tool} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn diodls_lists_and_diodcat_reads_keys_and_values_larger_than_msize() {
    let env = Env::new();
    // A daemon.json of ~300 KiB: several reads at the default msize, one at 512 KiB.
    let labels: Vec<String> = (0..12_000).map(|i| format!("\"team=cairn-{i:05}\"")).collect();
    let daemon = format!("{{\"labels\": [{}]}}", labels.join(", "));
    let file = env.dir.path().join("daemon.json");
    std::fs::write(&file, &daemon).expect("write");
    env.ok(&["set", "daemon", &format!("@{}", file.display())]);
    let (_serve, port) = env.serve_tcp();

    let root = diod("diodls", port, &[""]);
    assert_eq!(root.split_whitespace().collect::<Vec<_>>(), ["branch", "snapshots", "trees"]);
    let ro = diod("diodls", port, &["branch/master/ro"]);
    for name in ["etc", "memory", "ncpu", "net", "schema-version"] {
        assert!(ro.split_whitespace().any(|n| n == name), "{name} in {ro}");
    }
    let long = diod("diodls", port, &["-l", "branch/master/ro/etc/docker"]);
    assert!(long.contains("daemon.json"), "{long}");

    let values =
        diod("diodcat", port, &["branch/master/ro/memory", "branch/master/ro/etc/hostname"]);
    assert_eq!(values, "2048\ncairn\n");
    let stored = env.ok(&["get", "daemon"]);
    for msize in ["8192", "65536", "524288"] {
        let read = diod("diodcat", port, &["-m", msize, "branch/master/ro/etc/docker/daemon.json"]);
        assert!(read.len() > 2 * 65536, "{} bytes", read.len());
        assert_eq!(read.trim_end(), stored.trim_end(), "daemon.json read at msize {msize}");
    }
    let head = diod("diodcat", port, &["branch/master/head"]);
    assert_eq!(head.trim(), env.head());
}
