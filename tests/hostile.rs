//! What another user of the machine, or a client that misbehaves, can do to cairn: nothing.
//! Another user reaches no socket or port of a running `cairn up` and reads nothing under
//! CAIRN_HOME; a 9P server out of file descriptors recovers instead of ending for good.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::util::Env;

/// Runs `script` with sh as the user nobody; its output and whether it succeeded.
fn as_nobody(script: &str) -> (bool, String) {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--", "sh", "-c", script])
        .output()
        .expect("setpriv runs");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The TCP ports in LISTEN state that belong to any of `pids`.
fn listening_ports(pids: &[u64]) -> Vec<u16> {
    let mut inodes = std::collections::BTreeSet::new();
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        for fd in fds.flatten() {
            let target = std::fs::read_link(fd.path()).unwrap_or_default();
            let target = target.to_string_lossy();
            if let Some(inode) = target.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')) {
                inodes.insert(inode.to_owned());
            }
        }
    }
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            if *state == "0A" && inodes.contains(*inode) {
                let port = local.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
                ports.extend(port);
            }
        }
    }
    ports
}

/// Checks that a running `cairn up` (pid `up`, VM pid `vm`) with data in `home` is closed to
/// every other user: no TCP port, no file or socket under CAIRN_HOME.
pub fn closed_to_other_users(home: &Path, up: u64, vm: u64) {
    assert_eq!(listening_ports(&[up, vm]), Vec::<u16>::new(), "a cairn process listens on TCP");
    let mode = std::fs::metadata(home).expect("home").permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "CAIRN_HOME is private");
    // Let other users reach CAIRN_HOME's parent, so that only CAIRN_HOME's own mode stands in
    // their way.
    let parent = home.parent().expect("a parent");
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let home = home.display();
    for attempt in [
        format!("ls {home}"),
        format!("cat {home}/db/HEAD"),
        format!("cat {home}/db/refs/heads/master"),
        format!("cat {home}/run/status.json"),
        format!("test -e {home}/run/9p.sock"),
        format!("test -e {home}/run/channel.sock"),
        format!("test -e {home}/run/qmp.sock"),
        format!("cat {home}/run/console.log"),
    ] {
        let (ok, out) = as_nobody(&attempt);
        assert!(!ok, "as nobody, `{attempt}` worked: {out}");
    }
}

#[test]
fn a_loose_cairn_home_is_tightened_with_a_message() {
    let env = Env::new();
    std::fs::set_permissions(env.home(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = env.run(&["get", "memory"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("was 0755") && stderr.contains("0700"), "{stderr}");
    let mode = std::fs::metadata(env.home()).expect("home").permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    // What cairn writes is its owner's alone.
    env.ok(&["set", "memory", "1024"]);
    let head = env.db().join("refs/heads/master");
    assert_eq!(std::fs::metadata(head).expect("ref").permissions().mode() & 0o077, 0);
}

#[test]
fn a_9p_server_out_of_descriptors_recovers() {
    use std::io::BufRead;
    let env = Env::new();
    let log = env.home().join("serve.log");
    // Few descriptors: the clients below exhaust them, and accept() fails with EMFILE.
    let script = format!(
        "ulimit -n 48; exec {} serve --tcp 127.0.0.1:0",
        crate::util::cairn_bin().display()
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .env("CAIRN_HOME", env.home())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("a log file"))
        .spawn()
        .expect("serve runs");
    let stdout = child.stdout.take().expect("stdout");
    let mut serve = crate::util::Killed(child);
    let mut address = String::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.expect("a line");
        if let Some(a) = line.strip_prefix("tcp ") {
            address = a.to_owned();
            break;
        }
    }
    assert!(
        !address.is_empty(),
        "serve announced no TCP address:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let mut held = Vec::new();
    for _ in 0..80 {
        if let Ok(stream) = std::net::TcpStream::connect(&address) {
            held.push(stream);
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    drop(held);
    // Once the descriptors are back, the server answers a real client again: however long
    // that takes on a loaded machine (a count of tries was a wall-clock limit of ~12 s, which
    // a CI run with two TCG guests beside it once exceeded), within a generous bound.
    let mut answered = false;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    while std::time::Instant::now() < deadline {
        // A server that ended (it once did, when the clients came before its unix socket
        // was bound) fails here with its log, not after the whole deadline.
        if let Ok(Some(status)) = serve.0.try_wait() {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("the server ended ({status}) after running out of descriptors:\n{log}");
        }
        let out = Command::new("diodcat")
            .args(["-s", &address, "-a", "/", "-t", "5", "branch/master/ro/memory"])
            .output()
            .expect("diodcat runs");
        if out.status.success() && out.stdout == b"2048\n" {
            answered = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(answered, "the server never answered again after running out of descriptors");
}
