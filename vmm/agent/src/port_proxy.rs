//! cairn's userland proxy: what dockerd runs for each published port (its
//! `userland-proxy-path`), in place of docker-proxy, with docker-proxy's arguments
//! (`-proto tcp -host-ip 0.0.0.0 -host-port 8080 -container-ip 172.17.0.2 -container-port 80`)
//! and its way of saying it started (`0\n`, or `1\n` and the error, on descriptor 3).
//!
//! Before it says anything to dockerd it has the control plane publish the port on the host,
//! through the agent (its `ports` module): a port the host cannot bind fails `docker run -p`
//! with the host's reason. Then it serves the guest's side as docker-proxy would (the guest's
//! own and the containers' connections to the published address). It holds the publish
//! stream open while it runs, so its exit (dockerd stops it with SIGINT when the container
//! stops) closes the host's socket; when the control plane goes away and another adopts the
//! VM, it publishes again.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_channel::ports::{Answer, Binding, Proto};

/// The name dockerd runs the proxy by: a link to the agent's binary in the image.
pub const PATH: &str = "/sbin/cairn-port-proxy";

/// Pause before publishing again after the control plane went away, doubled after each
/// refusal (another process took the host's port meanwhile) up to [`REPUBLISH_AT_MOST`].
const REPUBLISH_AFTER: Duration = Duration::from_secs(1);
const REPUBLISH_AT_MOST: Duration = Duration::from_secs(30);
/// How long a UDP peer without traffic keeps its flow to the container.
const UDP_IDLE: Duration = Duration::from_secs(90);

/// Runs the proxy with dockerd's arguments (the program name first); returns the exit code.
pub fn run(args: &[String]) -> i32 {
    let stop = block_stop_signals();
    // SAFETY: dockerd passes the write end of its status pipe as descriptor 3 and nothing else
    // in this process uses that number; it is owned here from now on.
    let mut status = unsafe { std::fs::File::from_raw_fd(3) };
    let binding = match parse(args) {
        Ok(binding) => binding,
        Err(why) => return fail(&mut status, &why),
    };
    let publish = match publish(&binding) {
        Ok(published) => published,
        Err(why) => return fail(&mut status, &why),
    };
    let guest = match GuestSide::bind(&binding) {
        Ok(guest) => guest,
        Err(why) => return fail(&mut status, &why),
    };
    let _ = status.write_all(b"0\n");
    drop(status);
    let current = Arc::new(Mutex::new(publish.get_ref().try_clone().ok()));
    let (held, kept) = (binding.clone(), current.clone());
    std::thread::spawn(move || keep_published(publish, &held, &kept));
    std::thread::spawn(move || {
        wait_for(&stop);
        unpublish(&current);
        std::process::exit(0);
    });
    guest.serve(binding.container);
    0
}

/// SIGINT (dockerd's stop) and SIGTERM (its death signal), blocked here and in every thread
/// started after, for one thread to wait for.
fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset fill a set we own; pthread_sigmask blocks it in this
    // thread, and the threads it starts inherit the mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for(set: &libc::sigset_t) {
    let mut signal = 0;
    // SAFETY: `set` is initialised and `signal` is a valid out-pointer.
    while unsafe { libc::sigwait(set, &mut signal) } != 0 {}
}

/// How long the proxy waits, when stopped, for the host to close its socket.
const UNPUBLISH_WAIT: Duration = Duration::from_secs(2);

/// Ends the publish stream and waits until the host has closed its socket (it closes the
/// stream after), so that a port unpublished when `docker stop` returns can be published again
/// at once (`docker rm -f web && docker run -p 8080:80 ...`).
fn unpublish(current: &Mutex<Option<UnixStream>>) {
    let Some(mut stream) = current.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return;
    };
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(UNPUBLISH_WAIT));
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
}

fn fail(status: &mut std::fs::File, why: &str) -> i32 {
    let _ = status.write_all(format!("1\n{why}").as_bytes());
    1
}

/// docker-proxy's arguments, in any order.
fn parse(args: &[String]) -> Result<Binding, String> {
    let mut values: HashMap<&str, &str> = HashMap::new();
    let mut rest = args.iter().skip(1);
    while let Some(flag) = rest.next() {
        let name = flag.trim_start_matches('-');
        let value = rest.next().ok_or_else(|| format!("{flag} needs a value"))?;
        values.insert(name, value);
    }
    let get = |name: &str| values.get(name).copied().ok_or_else(|| format!("-{name} is missing"));
    let address = |ip: &str, port: &str| -> Result<SocketAddr, String> {
        let (ip, port) = (get(ip)?, get(port)?);
        let ip = ip.parse().map_err(|_| format!("-{ip}: not an IP address"))?;
        let port = port.parse().map_err(|_| format!("-{port}: not a port"))?;
        Ok(SocketAddr::new(ip, port))
    };
    let proto = get("proto")?;
    Ok(Binding {
        proto: Proto::parse(proto).ok_or_else(|| format!("-proto {proto}: only tcp and udp"))?,
        host: address("host-ip", "host-port")?,
        container: address("container-ip", "container-port")?,
    })
}

/// Asks the control plane, through the agent, to publish `binding` on the host; the stream
/// that keeps it published.
fn publish(binding: &Binding) -> Result<BufReader<UnixStream>, String> {
    let mut stream = UnixStream::connect(super::ports::LOCAL_SOCKET)
        .map_err(|e| format!("reaching the cairn agent at {}: {e}", super::ports::LOCAL_SOCKET))?;
    stream
        .write_all(binding.service().line().as_bytes())
        .map_err(|e| format!("asking the cairn agent: {e}"))?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| format!("reading the control plane's answer: {e}"))?;
    match Answer::parse(&line) {
        Answer::Listening(_) => Ok(reader),
        Answer::Refused(why) => Err(why),
    }
}

/// Holds the publish stream; when it ends (the control plane went away), publishes again as
/// soon as a control plane answers, for as long as the proxy runs. `current` is the stream
/// the stop signal's thread ends.
fn keep_published(
    mut publish: BufReader<UnixStream>,
    binding: &Binding,
    current: &Mutex<Option<UnixStream>>,
) {
    loop {
        let mut sink = Vec::new();
        let _ = publish.read_to_end(&mut sink);
        let mut pause = REPUBLISH_AFTER;
        loop {
            std::thread::sleep(pause);
            pause = (pause * 2).min(REPUBLISH_AT_MOST);
            // Stopping: [`unpublish`] took the stream.
            if current.lock().unwrap_or_else(|e| e.into_inner()).is_none() {
                return;
            }
            if let Ok(again) = self::publish(binding) {
                *current.lock().unwrap_or_else(|e| e.into_inner()) =
                    again.get_ref().try_clone().ok();
                publish = again;
                break;
            }
        }
    }
}

/// The guest's side of the published address.
enum GuestSide {
    Tcp(TcpListener),
    Udp(UdpSocket),
    /// The address is not the guest's (`-p 192.168.1.5:80:80` names a host address): only
    /// the host's side serves it.
    None,
}

impl GuestSide {
    fn bind(binding: &Binding) -> Result<GuestSide, String> {
        let socket = || -> std::io::Result<socket2::Socket> {
            let domain = socket2::Domain::for_address(binding.host);
            let kind = match binding.proto {
                Proto::Tcp => socket2::Type::STREAM,
                Proto::Udp => socket2::Type::DGRAM,
            };
            let socket = socket2::Socket::new(domain, kind, None)?;
            // As docker-proxy (Go's tcp6): `::` is IPv6 alone, beside dockerd's 0.0.0.0 proxy.
            if binding.host.is_ipv6() {
                socket.set_only_v6(true)?;
            }
            if binding.proto == Proto::Tcp {
                socket.set_reuse_address(true)?;
            }
            socket.bind(&binding.host.into())?;
            if binding.proto == Proto::Tcp {
                socket.listen(1024)?;
            }
            Ok(socket)
        };
        match socket() {
            Ok(socket) if binding.proto == Proto::Tcp => Ok(GuestSide::Tcp(socket.into())),
            Ok(socket) => Ok(GuestSide::Udp(socket.into())),
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => Ok(GuestSide::None),
            Err(e) => Err(format!("listen {} {}: {e}", binding.proto, binding.host)),
        }
    }

    /// Serves until the process is stopped.
    fn serve(self, container: SocketAddr) {
        match self {
            GuestSide::Tcp(listener) => serve_tcp(&listener, container),
            GuestSide::Udp(socket) => serve_udp(socket, container),
            GuestSide::None => loop {
                std::thread::park();
            },
        }
    }
}

fn serve_tcp(listener: &TcpListener, container: SocketAddr) {
    for client in listener.incoming() {
        let Ok(client) = client else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        std::thread::spawn(move || {
            if let Ok(upstream) = TcpStream::connect(container) {
                splice(client, upstream);
            }
        });
    }
}

/// Copies both ways until both directions are done, passing each half-close on.
fn splice(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else { return };
    let one_way = |mut from: TcpStream, to: TcpStream| {
        let mut to_writer = &to;
        let _ = std::io::copy(&mut from, &mut to_writer);
        let _ = to.shutdown(std::net::Shutdown::Write);
    };
    let back = std::thread::spawn(move || one_way(b2, a2));
    one_way(a, b);
    let _ = back.join();
}

fn serve_udp(socket: UdpSocket, container: SocketAddr) {
    let socket = Arc::new(socket);
    let flows: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buffer = vec![0u8; cairn_channel::ports::MAX_DATAGRAM];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buffer) else { continue };
        let existing = flows.lock().unwrap_or_else(|e| e.into_inner()).get(&peer).cloned();
        let flow = match existing {
            Some(flow) => flow,
            None => match open_flow(&socket, &flows, peer, container) {
                Ok(flow) => flow,
                Err(_) => continue,
            },
        };
        let _ = flow.send(&buffer[..n]);
    }
}

/// A socket connected to the container for `peer`, whose replies a thread sends back until
/// the flow is idle.
fn open_flow(
    socket: &Arc<UdpSocket>,
    flows: &Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>,
    peer: SocketAddr,
    container: SocketAddr,
) -> std::io::Result<Arc<UdpSocket>> {
    let any: SocketAddr = if container.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let flow = Arc::new(UdpSocket::bind(any)?);
    flow.connect(container)?;
    flow.set_read_timeout(Some(UDP_IDLE))?;
    flows.lock().unwrap_or_else(|e| e.into_inner()).insert(peer, flow.clone());
    let (socket, flows, replies) = (socket.clone(), flows.clone(), flow.clone());
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; cairn_channel::ports::MAX_DATAGRAM];
        loop {
            match replies.recv(&mut buffer) {
                Ok(n) => {
                    let _ = socket.send_to(&buffer[..n], peer);
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                // Idle (the read timed out) or broken: the flow ends.
                Err(_) => break,
            }
        }
        flows.lock().unwrap_or_else(|e| e.into_inner()).remove(&peer);
    });
    Ok(flow)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        std::iter::once("cairn-port-proxy").chain(text.split(' ')).map(str::to_owned).collect()
    }

    #[test]
    fn dockerd_arguments_parse() {
        let binding = parse(&args(
            "-proto tcp -host-ip 0.0.0.0 -host-port 8080 -container-ip 172.17.0.2 -container-port 80",
        ))
        .expect("parses");
        assert_eq!(binding.proto, Proto::Tcp);
        assert_eq!(binding.host, "0.0.0.0:8080".parse().expect("addr"));
        assert_eq!(binding.container, "172.17.0.2:80".parse().expect("addr"));
        let v6 = parse(&args(
            "-container-port 53 -proto udp -host-ip :: -host-port 5353 -container-ip 172.17.0.2",
        ))
        .expect("parses");
        assert_eq!(v6.host, "[::]:5353".parse().expect("addr"));
        for bad in [
            "-proto sctp -host-ip 0.0.0.0 -host-port 1 -container-ip 172.17.0.2 -container-port 1",
            "-proto tcp -host-ip 0.0.0.0 -host-port 99999 -container-ip 172.17.0.2 -container-port 1",
            "-proto tcp -host-ip 0.0.0.0 -host-port 1 -container-ip 172.17.0.2",
            "-proto",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad}");
        }
    }
}
