//! The guest's network end to end under QEMU TCG, through cairn's NAT on `-netdev stream`:
//! the real guest image and agent, plus a test harness in the initramfs (an httpd with a CGI
//! script that probes the network from inside the guest). The guest gets its lease by DHCP,
//! fetches a page from a loopback HTTP server at the gateway (busybox nc: the static busybox's
//! wget crashes in glibc's resolver), resolves a name through the DNS
//! forwarder (pointed at a test resolver on loopback by `cairn set dns`), and the host reaches
//! the guest's httpd through a port forward added by `cairn set port-forwarding` while the VM
//! runs. An MTU change is applied by a DHCP renew, without a reboot; `none` switches live;
//! hostnet (qemu's own network) reboots.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::up::{applied, boot_id, cache, status, wait_for, Down};
use crate::util::{cairn_bin, Env};

/// The harness's /init: starts busybox's httpd on port 8080 (its CGI runs the probes when
/// the host asks) and hands PID 1 to the real agent.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /www/cgi-bin
/bin/busybox cat > /www/cgi-bin/probe <<'SCRIPT'
#!/bin/busybox sh
B=/bin/busybox
echo "Content-Type: text/plain"
echo
echo "PAGE=$(printf 'GET /page HTTP/1.0\r\n\r\n' | $B nc 10.0.2.2 @HTTP@ 2>&1 | $B tr '\r\n' '  ')"
echo "DNS=$($B nslookup probe.cairn.test 2>&1 | $B tr '\n' ' ')"
echo "HOST=$($B nslookup host.cairn.internal 2>&1 | $B tr '\n' ' ')"
echo "LEASE=$($B cat /run/cairn-lease)"
echo "MTU=$($B cat /sys/class/net/eth0/mtu)"
echo "RESOLV=$($B cat /etc/resolv.conf | $B tr '\n' ' ')"
SCRIPT
/bin/busybox chmod 755 /www/cgi-bin/probe
/bin/busybox httpd -p 8080 -h /www
exec /cairn-agent
"#;

/// A page server on loopback: every request gets `body`.
pub fn page_server(body: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let reply = format!(
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    port
}

/// A resolver on `address`:53 that answers A queries with 192.0.2.53 and others with no
/// records. Port 53 is what the `dns` key means, so this needs root (as the test command has).
pub fn test_resolver(address: &str) {
    let socket = UdpSocket::bind((address, 53))
        .unwrap_or_else(|e| panic!("the test resolver needs {address}:53 (run as root): {e}"));
    std::thread::spawn(move || {
        let mut buffer = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buffer) {
            if n < 17 {
                continue;
            }
            let mut reply = buffer[..n].to_vec();
            reply[2] = 0x81;
            reply[3] = 0x80;
            if buffer[n - 4..n - 2] == [0, 1] {
                reply[7] = 1;
                reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 53]);
            }
            let _ = socket.send_to(&reply, from);
        }
    });
}

/// GET `path` from the host's end of a forwarded port; None until it answers.
fn get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: guest\r\n\r\n").ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    reply.starts_with("HTTP/1.").then_some(reply)
}

/// The guest's probe through the forwarded port, retried while the guest's httpd starts.
fn probe(env: &Env, port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(reply) = get(port, "/cgi-bin/probe").filter(|r| r.contains("MTU=")) {
            return reply;
        }
        if Instant::now() > deadline {
            let console = env.ok(&["logs", "--console"]);
            panic!(
                "the guest's probe never answered on port {port}; status {:#}\n{console}",
                status(env)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn line<'a>(reply: &'a str, key: &str) -> &'a str {
    reply.lines().find_map(|l| l.strip_prefix(key)).unwrap_or_default()
}

/// The built image with the harness appended (a second cpio archive overrides /init).
fn harness_image(env: &Env, http_port: u16) -> (std::path::PathBuf, std::path::PathBuf) {
    let built = env
        .command(&["guest", "build", "--flavour", "base"])
        .env("CAIRN_CACHE", cache())
        .output()
        .expect("runs");
    assert!(built.status.success(), "guest build: {}", String::from_utf8_lossy(&built.stderr));
    let guest = env.home().join("guest");
    let extra = env.dir.path().join("harness");
    std::fs::create_dir_all(&extra).expect("mkdir");
    std::fs::write(extra.join("init"), INIT.replace("@HTTP@", &http_port.to_string()))
        .expect("init");
    std::fs::copy(cairn_bin(), extra.join("cairn-agent")).expect("agent");
    let packed = std::process::Command::new("sh")
        .arg("-c")
        .arg("chmod 755 init cairn-agent && printf 'init\\ncairn-agent\\n' | cpio -o -H newc --quiet")
        .current_dir(&extra)
        .output()
        .expect("cpio runs");
    assert!(packed.status.success(), "cpio: {}", String::from_utf8_lossy(&packed.stderr));
    let mut initrd = std::fs::read(guest.join("initrd.img")).expect("the image's initramfs");
    initrd.extend_from_slice(&packed.stdout);
    let path = env.dir.path().join("initrd-harness.img");
    std::fs::write(&path, initrd).expect("write");
    (guest.join("vmlinuz"), path)
}

#[test]
fn the_guest_network_goes_through_the_nat_with_dhcp_dns_and_live_forwards() {
    let _vm = crate::util::one_vm_at_a_time();
    let env = Env::new();
    let _down = Down(&env);
    let http_port = page_server("hello from the host");
    let resolver = "127.53.0.1";
    test_resolver(resolver);
    let (kernel, initrd) = harness_image(&env, http_port);
    let up = env
        .command(&["up", "--detach", "--kernel"])
        .arg(&kernel)
        .arg("--initrd")
        .arg(&initrd)
        .env("CAIRN_ACCEL", "tcg")
        .output()
        .expect("runs");
    assert!(up.status.success(), "cairn up: {}", String::from_utf8_lossy(&up.stderr));
    let first = applied(&env, "the first report");
    let boot = boot_id(&first);
    assert_eq!(first["network"]["mode"], "nat", "{first:#}");

    // Live network changes: the resolvers and a forward into the guest's httpd.
    let forward = {
        let socket = TcpListener::bind("127.0.0.1:0").expect("binds");
        socket.local_addr().expect("address").port()
    };
    let plan = env.ok(&["plan", "port-forwarding", &format!("{forward}:8080")]);
    assert_eq!(plan.trim(), "network-live: port-forwarding (network-live)");
    env.ok(&[
        "set",
        "dns",
        resolver,
        &format!("port-forwarding={forward}:8080"),
        "--wait",
        "--timeout",
        "240",
    ]);
    let s = wait_for(&env, "the forward listening", |s| {
        s["network"]["forwards"][0]["state"] == "listening"
    });
    assert_eq!(s["network"]["resolvers"][0], resolver, "{s:#}");

    let reply = probe(&env, forward);
    let page = line(&reply, "PAGE=");
    assert!(
        page.starts_with("HTTP/1.0 200 OK") && page.ends_with("hello from the host"),
        "{reply}"
    );
    assert!(line(&reply, "DNS=").contains("192.0.2.53"), "the test resolver answered: {reply}");
    assert!(line(&reply, "HOST=").contains("10.0.2.2"), "host.cairn.internal: {reply}");
    let lease = line(&reply, "LEASE=");
    assert!(lease.starts_with("bound ip=10.0.2.15/24 router=10.0.2.2 dns=10.0.2.2"), "{reply}");
    assert!(lease.contains("mtu=1500"), "{reply}");
    assert!(line(&reply, "RESOLV=").contains("nameserver 10.0.2.2"), "{reply}");

    // The MTU: no reboot, the guest renews its lease and takes the new value.
    assert_eq!(env.ok(&["plan", "mtu", "1400"]).trim(), "network: mtu (network)");
    env.ok(&["set", "mtu", "1400", "--wait", "--timeout", "240"]);
    let reply = probe(&env, forward);
    assert_eq!(line(&reply, "MTU="), "1400", "{reply}");
    assert!(line(&reply, "LEASE=").contains("mtu=1400"), "a DHCP renew brought it: {reply}");
    // The counters reach the status every 2 s: an offer and two acks, the two probes.
    let s = wait_for(&env, "the NAT's counters", |s| {
        let counters = &s["network"]["counters"];
        counters["dhcp_replies"].as_u64() >= Some(3) && counters["forwarded_in"].as_u64() >= Some(2)
    });
    assert_eq!(boot_id(&s), boot, "no reboot for the network: {s:#}");
    let text = env.ok(&["status"]);
    assert!(text.contains("network:     nat, mtu 1400") && text.contains("listening"), "{text}");

    // network=none: live, and the guest no longer reaches the resolver (only the gateway).
    env.ok(&["set", "network", "none", "--wait", "--timeout", "240"]);
    let reply = probe(&env, forward);
    assert!(line(&reply, "PAGE=").ends_with("hello from the host"), "the gateway answers: {reply}");
    assert!(!line(&reply, "DNS=").contains("192.0.2.53"), "{reply}");
    assert_eq!(boot_id(&status(&env)), boot);

    // Removed while running: the host port closes.
    env.ok(&["set", "port-forwarding", "", "--wait", "--timeout", "240"]);
    wait_for(&env, "the forward gone", |s| {
        s["network"]["forwards"].as_array().is_some_and(Vec::is_empty)
    });
    assert!(TcpStream::connect(("127.0.0.1", forward)).is_err(), "the forward was removed");

    // hostnet is qemu's own network, chosen at boot: one reboot, the guest reports through
    // slirp, the forwards of the boot are qemu's hostfwd, and one added later says it waits
    // for the next boot.
    assert_eq!(env.ok(&["plan", "network", "hostnet"]).trim(), "reboot: network (reboot)");
    let forwards = format!("port-forwarding={forward}:8080");
    env.ok(&["set", "network", "hostnet", &forwards, "--wait", "--timeout", "240"]);
    let s = status(&env);
    assert_ne!(boot_id(&s), boot, "hostnet reboots: {s:#}");
    assert_eq!(s["network"]["mode"], "hostnet", "{s:#}");
    assert_eq!(s["network"]["forwards"][0]["state"], "listening (qemu's hostfwd)", "{s:#}");
    let reply = probe(&env, forward);
    assert!(line(&reply, "RESOLV=").contains("nameserver 10.0.2.3"), "slirp's DNS: {reply}");
    let later = {
        let socket = TcpListener::bind("127.0.0.1:0").expect("binds");
        socket.local_addr().expect("address").port()
    };
    let both = format!("{forward}:8080 {later}:8080");
    env.ok(&["set", "port-forwarding", &both, "--wait", "--timeout", "240"]);
    let s = wait_for(&env, "the later forward's state", |s| {
        s["network"]["forwards"].as_array().is_some_and(|f| f.len() == 2)
    });
    let state = s["network"]["forwards"][1]["state"].as_str().unwrap_or_default();
    assert!(state.starts_with("not forwarded until the next boot"), "{s:#}");
    env.ok(&["down"]);
    env.fsck();
}
