//! Containers on the network, end to end under QEMU TCG: dockerd on its own defaults (docker0,
//! iptables through nf_tables, user networks, embedded DNS), ports published on the host's
//! loopback through cairn's port proxy before `docker run` returns, and nothing of the control
//! plane or the engine's API reachable from a container or by another user of the host.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::docker::{engine, Docker};
use crate::up::{status, up_detached, wait_for, Down};
use crate::util::Env;

/// A free port on the host's loopback (bound, then let go).
fn free_port() -> u16 {
    let socket = TcpListener::bind("127.0.0.1:0").expect("binds");
    let port = socket.local_addr().expect("address").port();
    // UDP too: the UDP test publishes the same number.
    drop(UdpSocket::bind(("127.0.0.1", port)));
    port
}

/// The test's image: busybox (its httpd, wget, nslookup, nc) with a page at /www, and a
/// static UDP echo server built here with rustc (busybox's nc has no UDP).
fn image(dir: &Path) -> PathBuf {
    let www = dir.join("rootfs/www");
    std::fs::create_dir_all(&www).expect("mkdir");
    std::fs::write(www.join("index.html"), "hello from a container\n").expect("page");
    let applets = ["sh", "httpd", "wget", "nslookup", "nc", "sleep", "cat", "echo", "wc"];
    crate::docker::busybox_tar_and(dir, &applets, 0, &["udp_echo"])
}

/// GET / from the host's `port`, retried until `deadline` (the container's httpd starts after
/// `docker run` returns); the body.
fn page(port: u16, deadline: Duration) -> String {
    let until = Instant::now() + deadline;
    loop {
        let reply = (|| {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
            stream.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
            stream.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
            let mut reply = String::new();
            stream.read_to_string(&mut reply).ok()?;
            reply.starts_with("HTTP/1.").then_some(reply)
        })();
        if let Some(reply) = reply {
            return reply.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
        }
        assert!(Instant::now() < until, "nothing answered on 127.0.0.1:{port}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `docker run -d` of the image's httpd serving /www as `name`, published as `publish`; the
/// container's id.
fn web_server(docker: &Docker, name: &str, publish: &str) -> String {
    let image = "cairn-test/net:1";
    docker.ok(&["run", "-d", "--name", name, "-p", publish, image, "httpd", "-f", "-h", "/www"])
}

/// The published ports in the status.
fn published(s: &Value) -> Vec<Value> {
    s["docker"]["ports"].as_array().cloned().unwrap_or_default()
}

/// `docker run` that must fail: its standard error.
fn run_fails(docker: &Docker, args: &[&str]) -> String {
    let out = docker.run(args);
    assert!(!out.status.success(), "docker {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn containers_reach_out_and_publish_ports_on_the_host_and_reach_nothing_of_cairn() {
    let _vm = crate::util::one_vm_at_a_time();
    let env = Env::new();
    let _down = Down(&env);
    let host_page = crate::network::page_server("hello from the host");
    let resolver = "127.53.0.2";
    crate::network::test_resolver(resolver);
    env.ok(&["set", "dns", resolver]);
    let docker = engine(&env);
    let dir = tempfile::tempdir().expect("tempdir");
    docker.ok(&["import", &image(dir.path()).display().to_string(), "cairn-test/net:1"]);
    let networks = docker.ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(networks.lines().any(|n| n == "bridge"), "dockerd's default bridge: {networks}");

    // A published port is open on the host when `docker run` returns: no retry before the
    // first connect.
    let web = free_port();
    let publish = format!("127.0.0.1:{web}:80");
    web_server(&docker, "web", &publish);
    TcpStream::connect(("127.0.0.1", web)).expect("the port is open as docker run returns");
    assert_eq!(page(web, Duration::from_secs(60)), "hello from a container\n");
    // It came through the NAT (virtio-net), from the gateway to the container's address.
    wait_for(&env, "the NAT's count of connections in", |s| {
        s["network"]["counters"]["forwarded_in"].as_u64() >= Some(1)
    });
    let ps = docker.ok(&["ps", "--format", "{{.Ports}}", "--filter", "name=web"]);
    assert!(ps.contains(&format!("127.0.0.1:{web}->80/tcp")), "{ps}");
    let s = wait_for(&env, "the port in status", |s| {
        published(s).iter().any(|p| p["container"] == "web")
    });
    let entry = published(&s).into_iter().find(|p| p["container"] == "web").expect("listed");
    assert_eq!(entry["host"], format!("127.0.0.1:{web}"), "{s:#}");
    assert_eq!(entry["state"], "listening");
    let text = env.ok(&["status"]);
    assert!(text.contains(&format!("published: 127.0.0.1:{web} -> web")), "{text}");
    // Stopped: the host's port refuses as `docker stop` returns.
    docker.ok(&["stop", "-t", "1", "web"]);
    assert!(TcpStream::connect(("127.0.0.1", web)).is_err(), "the port closed with its container");
    docker.ok(&["rm", "web"]);
    // And the same port at once for the next container.
    web_server(&docker, "web", &publish);
    assert_eq!(page(web, Duration::from_secs(60)), "hello from a container\n");
    docker.ok(&["rm", "-f", "web"]);

    // Without an address: the host's loopback, not every address.
    let plain = free_port();
    let spec = format!("{plain}:80");
    web_server(&docker, "plain", &spec);
    assert_eq!(page(plain, Duration::from_secs(60)), "hello from a container\n");
    let s = wait_for(&env, "the plain port", |s| {
        published(s).iter().any(|p| {
            p["container"] == "plain"
                && p["host"].as_str().is_some_and(|h| h.starts_with("127.0.0.1:"))
        })
    });
    assert!(
        !published(&s).iter().any(|p| p["host"] == format!("0.0.0.0:{plain}")),
        "not every address without external-bind: {s:#}"
    );
    // external-bind: every address, for ports published from then on.
    assert_eq!(
        env.ok(&["plan", "external-bind", "true"]).trim(),
        "network-live: external-bind (network-live)"
    );
    env.ok(&["set", "external-bind", "true", "--wait", "--timeout", "240"]);
    let wide = free_port();
    let spec = format!("{wide}:80");
    web_server(&docker, "wide", &spec);
    wait_for(&env, "the port on every address", |s| {
        published(s).iter().any(|p| p["host"] == format!("0.0.0.0:{wide}"))
    });
    env.ok(&["set", "external-bind", "false", "--wait", "--timeout", "240"]);
    docker.ok(&["rm", "-f", "plain", "wide"]);

    // UDP: published and echoed.
    let udp = free_port();
    let spec = format!("127.0.0.1:{udp}:5353/udp");
    docker.ok(&[
        "run",
        "-d",
        "--name",
        "echo",
        "-p",
        &spec,
        "cairn-test/net:1",
        "udp_echo",
        "5353",
    ]);
    let socket = UdpSocket::bind("127.0.0.1:0").expect("binds");
    socket.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(60);
    let echoed = loop {
        socket.send_to(b"ping", ("127.0.0.1", udp)).expect("sends");
        let mut reply = [0u8; 64];
        if let Ok((n, _)) = socket.recv_from(&mut reply) {
            break reply[..n].to_vec();
        }
        assert!(Instant::now() < deadline, "no echo from the container's UDP port");
    };
    assert_eq!(echoed, b"echo:ping");
    docker.ok(&["rm", "-f", "echo"]);

    // A host port already taken: `docker run -p` fails naming it, and nothing is left open.
    let taken = TcpListener::bind("127.0.0.1:0").expect("binds");
    let port = taken.local_addr().expect("address").port();
    let spec = format!("127.0.0.1:{port}:80");
    let stderr = run_fails(
        &docker,
        &["run", "-d", "--name", "taken", "-p", &spec, "cairn-test/net:1", "httpd", "-f"],
    );
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "names the address and port: {stderr}");
    assert!(stderr.contains("in use"), "{stderr}");
    let state = docker.ok(&["ps", "-a", "--format", "{{.State}}", "--filter", "name=taken"]);
    assert_eq!(state.trim(), "created", "the container did not start");
    assert!(!published(&status(&env)).iter().any(|p| p["host"] == format!("127.0.0.1:{port}")));
    drop(taken);
    docker.ok(&["rm", "taken"]);
    // A port of the port-forwarding key is the key's: the clash is reported.
    let forwarded = free_port();
    env.ok(&["set", "port-forwarding", &format!("{forwarded}:8080"), "--wait", "--timeout", "240"]);
    let spec = format!("{forwarded}:80");
    let stderr = run_fails(
        &docker,
        &["run", "-d", "--name", "clash", "-p", &spec, "cairn-test/net:1", "httpd", "-f"],
    );
    assert!(stderr.contains("port-forwarding"), "the clash is named: {stderr}");
    docker.ok(&["rm", "clash"]);

    // Out through the NAT, from the default bridge and from a user network: the host's page as
    // host.docker.internal, a name from the `dns` key's resolver.
    docker.ok(&["network", "create", "mine"]);
    for network in ["bridge", "mine"] {
        let url = format!("http://host.docker.internal:{host_page}/");
        let got = docker.ok(&[
            "run",
            "--rm",
            "--network",
            network,
            "cairn-test/net:1",
            "wget",
            "-qO-",
            &url,
        ]);
        assert_eq!(got, "hello from the host", "from {network}");
        let got = docker.ok(&[
            "run",
            "--rm",
            "--network",
            network,
            "cairn-test/net:1",
            "nslookup",
            "probe.cairn.test",
        ]);
        assert!(got.contains("192.0.2.53"), "the test resolver's answer, from {network}: {got}");
    }

    // Nothing of cairn from a container: no engine API, no 9P, on any address the guest has.
    // A port counts as reached when it answers the engine's ping or a 9P Tversion, not when
    // it merely accepts. The host's page server is the probe's own check: it must be found, at
    // the gateway. And a closed host port is closed through the gateway too: the NAT refuses
    // the SYN itself (a port probe must not take it for an open port).
    let probe = r#"for a in 10.0.2.15 172.17.0.1 10.0.2.2; do for p in 2375 2376 564 5640 @PAGE@; do
        n=$(printf 'GET /_ping HTTP/1.0\r\n\r\n' | nc -w 3 $a $p 2>/dev/null | wc -c)
        [ "$n" -gt 0 ] && echo "engine API at $a:$p"
        n=$(printf '\025\000\000\000\144\377\377\000\040\000\000\010\0009P2000.L' | nc -w 3 $a $p 2>/dev/null | wc -c)
        [ "$n" -gt 0 ] && echo "9P at $a:$p"
    done; done; echo done"#;
    let probe = probe.replace("@PAGE@", &host_page.to_string());
    let open = docker.ok(&["run", "--rm", "cairn-test/net:1", "sh", "-c", &probe]);
    // (The page server answers whatever it is sent, a Tversion too.)
    let expected = format!("engine API at 10.0.2.2:{host_page}\n9P at 10.0.2.2:{host_page}\ndone");
    assert_eq!(open.trim(), expected, "a container reached more than the host's page: {open}");
    let closed = free_port();
    let probe =
        format!("nc -w 5 host.docker.internal {closed} </dev/null && echo open || echo closed");
    let said = docker.ok(&["run", "--rm", "cairn-test/net:1", "sh", "-c", &probe]);
    assert_eq!(said.trim(), "closed", "a closed host port through the gateway");
    // Nor as another user of the host: the run directory, where every socket is, is the
    // owner's alone (root can check as nobody; the mode is checked either way).
    let run = env.home().join("run");
    let metadata = std::fs::metadata(&run).expect("run dir");
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&metadata.permissions()) & 0o077, 0);
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        for socket in ["docker.sock", "control.sock"] {
            let path = run.join(socket);
            let as_nobody = Command::new("setpriv")
                .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", "ls", "-l"])
                .arg(&path)
                .output()
                .expect("setpriv runs");
            let stderr = String::from_utf8_lossy(&as_nobody.stderr);
            assert!(
                stderr.contains("Permission denied"),
                "nobody reached {}: {stderr}",
                path.display()
            );
        }
    }

    // Under qemu's own network (no NAT) the channel carries a published port's connections.
    env.ok(&["set", "network", "hostnet", "--wait", "--timeout", "240"]);
    let hostnet = free_port();
    let spec = format!("127.0.0.1:{hostnet}:80");
    web_server(&docker, "hostnet", &spec);
    assert_eq!(page(hostnet, Duration::from_secs(60)), "hello from a container\n");

    // The control plane killed and started again: the published port answers again, from the
    // same container, without restarting it.
    let kept = free_port();
    let spec = format!("127.0.0.1:{kept}:80");
    let id = web_server(&docker, "kept", &spec);
    assert_eq!(page(kept, Duration::from_secs(60)), "hello from a container\n");
    let started = docker.ok(&["inspect", "--format", "{{.State.StartedAt}}", "kept"]);
    let up_pid = status(&env)["pid"].as_u64().expect("pid");
    // SAFETY: kill(2) on the cairn up process this test started.
    unsafe {
        libc::kill(up_pid as libc::pid_t, libc::SIGKILL);
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        TcpStream::connect(("127.0.0.1", kept)).is_err(),
        "the port went with the control plane"
    );
    up_detached(&env, "docker");
    assert_eq!(page(kept, Duration::from_secs(120)), "hello from a container\n");
    assert_eq!(docker.ok(&["inspect", "--format", "{{.State.StartedAt}}", "kept"]), started);
    assert!(docker.ok(&["ps", "-q", "--no-trunc"]).contains(id.trim()));

    env.ok(&["down"]);
}
