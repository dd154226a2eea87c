//! The Linux kernel's own 9P client: a Debian kernel under QEMU TCG mounts `cairn serve` over
//! trans=tcp and drives it from a shell script; its serial console comes back and is checked.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::util::{fixture, Env, Killed};

/// The guest's script. `@PORT@` is the 9P port the guest reaches at 10.0.2.2.
const INIT: &str = r#"#!/bin/sh
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in netfs fscache 9pnet 9p 9pnet_fd virtio_ring virtio failover net_failover virtio_net virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci; do
  [ -f /lib/modules/$m.ko ] && insmod /lib/modules/$m.ko 2>/dev/null
done
ip link set lo up; ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0
mkdir /Database
mount -t 9p -o trans=tcp,port=@PORT@,version=9p2000.L,msize=524288,cache=none 10.0.2.2 /Database && echo MOUNT-OK
M=/Database/branch/master
echo "== ls -R"; ls -R $M/ro
echo "== cat"; for f in $(find $M/ro -type f); do echo "KEY ${f#$M/ro/}=$(head -n 1 $f)"; done
mkdir $M/transactions/guest && echo TX-MKDIR-OK
echo 3072 > $M/transactions/guest/rw/memory
echo "from the guest" > $M/transactions/guest/msg
echo commit > $M/transactions/guest/ctl && echo TX-COMMIT-OK
echo "MEMORY-AFTER=$(cat $M/ro/memory)"
mkdir $M/transactions/bad
echo lots > $M/transactions/bad/rw/memory
echo commit 2>/tmp/err > $M/transactions/bad/ctl; echo "BAD-RC=$?"
echo "BAD-ERR=$(cat /tmp/err)"
echo "BAD-REASON=$(cat $M/transactions/bad/ctl)"
echo x 2>/tmp/err > $M/ro/memory; echo "RO-ERR=$(cat /tmp/err)"
cat $M/ro/no-such-key 2>/tmp/err; echo "NOENT-ERR=$(cat /tmp/err)"
mkdir /u /p
mount -t 9p -o trans=tcp,port=@PORT@,version=9p2000.u,cache=none 10.0.2.2 /u && echo U-MOUNT-OK
U=/u/branch/master
mkdir $U/transactions/u && echo 4096 > $U/transactions/u/rw/memory && echo commit > $U/transactions/u/ctl && echo U-COMMIT-OK
echo "U-MEMORY=$(cat $U/ro/memory)"
echo x 2>/tmp/err > $U/ro/memory; echo "U-RO-ERR=$(cat /tmp/err)"
mount -t 9p -o trans=tcp,port=@PORT@,version=9p2000,cache=none 10.0.2.2 /p && echo P-MOUNT-OK
echo "P-LS=$(ls /p/branch/master | tr '\n' ' ')"
echo "P-HOSTNAME=$(cat /p/branch/master/ro/etc/hostname)"
exec 3< $M/head.live
read -r h1 <&3; echo "HEAD1 $h1"
read -r eof <&3 || echo HEAD-EOF
echo WAITING-HEAD
read -r h2 <&3; echo "HEAD2 $h2"
echo GUEST-DONE
poweroff -f
"#;

#[test]
fn the_linux_client_mounts_reads_commits_and_streams() {
    let _vm = crate::util::one_vm_at_a_time();
    let env = Env::new();
    let (serve, port) = env.serve_tcp();
    let init = env.dir.path().join("init");
    std::fs::write(&init, INIT.replace("@PORT@", &port.to_string())).expect("write init");
    let initrd = env.dir.path().join("initrd.img");
    let cache = crate::util::repo().join("target/test-cache/linux");
    let built = Command::new("sh")
        .arg(fixture("linux-guest.sh"))
        .args([cache.as_os_str(), init.as_os_str(), initrd.as_os_str()])
        .output()
        .expect("sh runs");
    assert!(
        built.status.success(),
        "building the guest: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let kernel = String::from_utf8_lossy(&built.stdout).trim().to_owned();

    // Slirp's gateway 10.0.2.2 is the host's loopback, where `cairn serve` listens.
    let mut qemu = Killed(
        Command::new("qemu-system-x86_64")
            .args(["-accel", "tcg", "-m", "512", "-nographic", "-no-reboot", "-monitor", "none"])
            .args(["-kernel", &kernel, "-initrd"])
            .arg(&initrd)
            .args(["-append", "console=ttyS0 quiet panic=-1 rdinit=/init"])
            .args(["-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("qemu-system-x86_64 starts"),
    );
    let stderr = qemu.0.stderr.take().expect("stderr");
    let qemu_errors =
        std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let (tx, rx) = mpsc::channel();
    let stdout = qemu.0.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let before = env.head();
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut console = Vec::new();
    let mut after = String::new();
    while !console.iter().any(|l: &String| l.contains("GUEST-DONE")) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            let _ = qemu.0.kill();
            let errors = qemu_errors.join().unwrap_or_default();
            panic!("the guest did not finish; qemu: {errors}\nconsole:\n{}", console.join("\n"));
        };
        let line = line.trim_end_matches('\r').to_owned();
        if line.contains("WAITING-HEAD") {
            env.ok(&["set", "hostname", "from-host"]);
            after = env.head();
        }
        console.push(line);
    }
    let text = console.join("\n");
    let has = |needle: &str| text.contains(needle);
    assert!(has("MOUNT-OK"), "{text}");
    for name in ["memory", "hostname", "daemon.json", "port-forwarding", "schema-version"] {
        let listed = console.iter().flat_map(|l| l.split_whitespace()).any(|word| word == name);
        assert!(listed, "ls -R lists {name}:\n{text}");
    }
    assert!(
        has("KEY memory=2048") && has("KEY etc/hostname=cairn") && has("KEY net/mtu=1500"),
        "{text}"
    );
    assert!(has("TX-MKDIR-OK") && has("TX-COMMIT-OK") && has("MEMORY-AFTER=3072"), "{text}");
    assert!(has("BAD-RC=1") && has("Invalid argument"), "EINVAL for a refused value:\n{text}");
    assert!(has(r#"BAD-REASON=memory: "lots" is not a size in MiB"#), "{text}");
    assert!(has("RO-ERR=") && has("Read-only file system"), "{text}");
    assert!(has("No such file or directory"), "{text}");
    // 9P2000.u and plain 9P2000, the dialects of DataKit-era clients, through the same kernel.
    assert!(has("U-MOUNT-OK") && has("U-COMMIT-OK") && has("U-MEMORY=4096"), "{text}");
    assert!(has("U-RO-ERR=") && text.matches("Read-only file system").count() >= 2, "{text}");
    assert!(has("P-MOUNT-OK") && has("P-HOSTNAME=cairn"), "{text}");
    assert!(has("P-LS=fast-forward head head.live ro transactions watch"), "{text}");
    assert!(has("HEAD-EOF"), "a stream value is followed by an empty read:\n{text}");
    assert!(
        has(&format!("HEAD2 {after}")),
        "head.live delivered the host's commit {after}:\n{text}"
    );
    // The guest's commit is an ordinary commit with its message.
    let log = env.git(&["log", "--format=%s", "master"]);
    assert!(log.lines().any(|l| l == "from the guest"), "{log}");
    assert_ne!(before, after);
    env.fsck();
    let _ = qemu.0.wait();
    drop(serve);
}
