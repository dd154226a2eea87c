//! Ports published by containers (`docker run -p`), on the host: the guest's port proxy asks
//! through the channel (see cairn_channel::ports), this binds the host's socket and answers
//! before `docker run` goes on, so a port the host cannot bind fails the container's start
//! with the reason. Each connection (or UDP peer) accepted is a forward stream to the
//! container's address; the host's socket closes when the publish stream ends: the proxy
//! exited (the container stopped), the guest rebooted, or this control plane went away (the
//! next one binds again when the proxies, still running, publish again).
//!
//! A TCP connection to an IPv4 container goes through the NAT of the boot when there is one
//! (network=nat or none): the NAT connects to the container's address from the gateway, and
//! the guest routes it to its bridge. virtio-net carries it far faster than the channel's
//! virtio-serial port, whose reads the guest's driver cuts into pages. Without a NAT
//! (network=hostnet), over IPv6, and for UDP, the channel carries it.
//!
//! Addresses: dockerd's `0.0.0.0` and `::` mean the host's loopback (127.0.0.1, ::1) unless
//! the `external-bind` key is true; a specific address is bound as it is.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_channel::ports::{self, Answer, Binding, Proto};
use cairn_channel::{Service, Session, Stream};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tokio::sync::mpsc;

use super::forward::Forward;
use super::Command;

/// One published port, for `cairn status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStatus {
    /// The container's name, once the engine has said which container has the address.
    pub container: Option<String>,
    /// Where the container listens (`172.17.0.2:80/tcp`).
    pub target: String,
    /// The host's socket (`127.0.0.1:8080`).
    pub host: String,
    /// "listening", or why not.
    pub state: String,
}

/// The control plane's published ports, across boots and sessions.
#[derive(Debug, Clone, Default)]
pub struct Published(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    external_bind: AtomicBool,
    /// The `port-forwarding` key's entries: their ports are not the containers' to take.
    forwards: Mutex<Vec<Forward>>,
    ports: Mutex<BTreeMap<u64, PortStatus>>,
    next: AtomicU64,
    /// Bumped at every change, so that the control loop copies the list only when it moved.
    version: AtomicU64,
    /// The NAT of the current boot, if it has one.
    nat: Mutex<Option<mpsc::Sender<Command>>>,
}

impl Published {
    /// Whether `0.0.0.0` and `::` mean every host address (the `external-bind` key).
    pub fn set_external_bind(&self, external: bool) {
        self.0.external_bind.store(external, Ordering::Relaxed);
    }

    /// The NAT that carries the connections from now on (None: the channel does).
    pub fn attach_nat(&self, nat: Option<mpsc::Sender<Command>>) {
        *lock(&self.0.nat) = nat;
    }

    /// The forwards of the `port-forwarding` key, which a container may not take over.
    pub fn set_forwards(&self, forwards: Vec<Forward>) {
        *lock(&self.0.forwards) = forwards;
    }

    /// The list for the status, and a version that changes whenever the list does.
    pub fn status(&self) -> (u64, Vec<PortStatus>) {
        let ports = lock(&self.0.ports).values().cloned().collect();
        (self.0.version.load(Ordering::Acquire), ports)
    }

    /// Serves one publish stream from the guest (on `session`) until it ends.
    pub async fn serve(&self, service: Service, mut stream: Stream, session: Session) {
        let Some(binding) = Binding::from_service(&service) else {
            let why = format!("a publish request with bad arguments {:?}", service.args);
            let _ = stream.write_all(Answer::Refused(why).line().as_bytes()).await;
            return;
        };
        let host = host_address(binding.host, self.0.external_bind.load(Ordering::Relaxed));
        let bound = match self.clash(&binding, host) {
            Some(why) => Err(why),
            None => bind(binding.proto, host),
        };
        let socket = match bound {
            Ok(socket) => socket,
            // No IPv6 on this host: dockerd's `::` twin of an IPv4 binding has nothing to bind.
            Err(_) if host.ip() == IpAddr::V6(Ipv6Addr::LOCALHOST) && !ipv6_loopback() => {
                let answer = Answer::Listening("none (the host has no IPv6 loopback)".into());
                let _ = stream.write_all(answer.line().as_bytes()).await;
                return hold(&mut stream).await;
            }
            Err(why) => {
                tracing::info!(%why, "refused a published port");
                let _ = stream.write_all(Answer::Refused(why).line().as_bytes()).await;
                return;
            }
        };
        if stream.write_all(Answer::Listening(host.to_string()).line().as_bytes()).await.is_err() {
            return;
        }
        let id = self.0.next.fetch_add(1, Ordering::Relaxed);
        let target = format!("{}/{}", binding.container, binding.proto);
        tracing::info!(%host, %target, "published");
        self.update(id, |entry| {
            *entry = Some(PortStatus {
                container: None,
                target,
                host: host.to_string(),
                state: "listening".into(),
            })
        });
        let name = tokio::spawn(self.clone().name_container(id, session.clone(), binding.clone()));
        match socket {
            Socket::Tcp(listener) => {
                tokio::select! {
                    () = self.accept_tcp(listener, &session, &binding) => {}
                    () = hold(&mut stream) => {}
                }
            }
            Socket::Udp(socket) => {
                tokio::select! {
                    () = relay_udp(socket, &session, &binding) => {}
                    () = hold(&mut stream) => {}
                }
            }
        }
        name.abort();
        self.update(id, |entry| *entry = None);
        tracing::info!(%host, "unpublished");
    }

    /// A reason to refuse `binding` on `host`: a `port-forwarding` entry has that port.
    fn clash(&self, binding: &Binding, host: SocketAddr) -> Option<String> {
        let forwards = lock(&self.0.forwards);
        let taken = forwards.iter().find(|f| {
            f.udp == (binding.proto == Proto::Udp)
                && f.host.port() == host.port()
                && overlap(f.host.ip(), host.ip())
        })?;
        Some(format!(
            "cannot publish {host}/{}: the port-forwarding key's entry {taken} has it",
            binding.proto
        ))
    }

    fn update(&self, id: u64, change: impl FnOnce(&mut Option<PortStatus>)) {
        let mut ports = lock(&self.0.ports);
        let mut entry = ports.remove(&id);
        change(&mut entry);
        if let Some(entry) = entry {
            ports.insert(id, entry);
        }
        self.0.version.fetch_add(1, Ordering::Release);
    }

    /// Asks the engine which container has the binding's address, for the status; dockerd
    /// starts the proxy before the container runs, so it asks again a few times.
    async fn name_container(self, id: u64, session: Session, binding: Binding) {
        let mut wait = Duration::from_millis(300);
        for _ in 0..8 {
            tokio::time::sleep(wait).await;
            if let Some(name) = container_with(&session, binding.container.ip()).await {
                self.update(id, |entry| {
                    if let Some(entry) = entry {
                        entry.container = Some(name);
                    }
                });
                return;
            }
            wait *= 2;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where the host listens for dockerd's `requested` address.
pub fn host_address(requested: SocketAddr, external_bind: bool) -> SocketAddr {
    let ip = match requested.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() && !external_bind => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() && !external_bind => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, requested.port())
}

/// Whether two listening addresses would take the same port.
fn overlap(a: IpAddr, b: IpAddr) -> bool {
    a == b || (a.is_ipv4() == b.is_ipv4() && (a.is_unspecified() || b.is_unspecified()))
}

fn ipv6_loopback() -> bool {
    std::net::UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).is_ok()
}

enum Socket {
    Tcp(tokio::net::TcpListener),
    Udp(tokio::net::UdpSocket),
}

/// The host's socket for `host`; the error names the address, the port and the reason.
fn bind(proto: Proto, host: SocketAddr) -> Result<Socket, String> {
    let make = || -> std::io::Result<Socket> {
        let kind = match proto {
            Proto::Tcp => socket2::Type::STREAM,
            Proto::Udp => socket2::Type::DGRAM,
        };
        let socket = socket2::Socket::new(socket2::Domain::for_address(host), kind, None)?;
        if host.is_ipv6() {
            // `::` beside `0.0.0.0` (dockerd publishes both): each family its own socket.
            socket.set_only_v6(true)?;
        }
        socket.set_nonblocking(true)?;
        if proto == Proto::Tcp {
            socket.set_reuse_address(true)?;
        }
        socket.bind(&host.into())?;
        Ok(match proto {
            Proto::Tcp => {
                socket.listen(1024)?;
                Socket::Tcp(tokio::net::TcpListener::from_std(socket.into())?)
            }
            Proto::Udp => Socket::Udp(tokio::net::UdpSocket::from_std(socket.into())?),
        })
    };
    make().map_err(|e| format!("cannot publish {host}/{proto} on the host: {e}"))
}

/// Reads the publish stream until it ends (nothing more is sent on it).
async fn hold(stream: &mut Stream) {
    let mut buffer = [0u8; 64];
    while matches!(stream.read(&mut buffer).await, Ok(n) if n > 0) {}
}

impl Published {
    async fn accept_tcp(
        &self,
        listener: tokio::net::TcpListener,
        session: &Session,
        binding: &Binding,
    ) {
        loop {
            let mut client = match listener.accept().await {
                Ok((client, _)) => client,
                Err(e) => {
                    // Out of descriptors, most likely: wait rather than spin.
                    tracing::debug!(error = %e, "accepting on a published port");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = client.set_nodelay(true);
            let nat = lock(&self.0.nat).clone();
            if let (Some(nat), SocketAddr::V4(to)) = (nat, binding.container) {
                if nat.send(Command::TcpTo { stream: client.into(), to }).await.is_err() {
                    tracing::debug!("no NAT for a published port's connection");
                }
                continue;
            }
            let (session, service) = (session.clone(), binding.forward());
            tokio::spawn(async move {
                match session.open(&service).await {
                    Ok(mut stream) => {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut stream).await;
                    }
                    // The client sees its connection closed.
                    Err(e) => tracing::debug!(error = %e, "opening a forward stream"),
                }
            });
        }
    }
}

/// How long a UDP peer without traffic keeps its stream.
const UDP_IDLE: Duration = Duration::from_secs(120);

/// Each peer's datagrams on a forward stream of its own; replies go back from the same socket.
/// The flows are this future's (a JoinSet): when the port is unpublished, they end with it
/// and the socket closes at once.
async fn relay_udp(socket: tokio::net::UdpSocket, session: &Session, binding: &Binding) {
    let socket = Arc::new(socket);
    let mut flows: BTreeMap<SocketAddr, tokio::sync::mpsc::Sender<Vec<u8>>> = BTreeMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut buffer = vec![0u8; ports::MAX_DATAGRAM];
    loop {
        let (n, peer) = tokio::select! {
            received = socket.recv_from(&mut buffer) => match received {
                Ok(received) => received,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            // A flow ended (idle, or the guest closed it): forget the peers that are gone.
            Some(_) = tasks.join_next() => {
                flows.retain(|_, flow| !flow.is_closed());
                continue;
            }
        };
        let flow = match flows.get(&peer) {
            Some(flow) if !flow.is_closed() => flow.clone(),
            _ => {
                let (tx, rx) = tokio::sync::mpsc::channel(64);
                flows.insert(peer, tx.clone());
                let (socket, session, service) =
                    (socket.clone(), session.clone(), binding.forward());
                tasks.spawn(async move { udp_flow(&socket, &session, &service, peer, rx).await });
                tx
            }
        };
        // A peer that sends faster than the guest takes loses datagrams, as UDP may.
        let _ = flow.try_send(buffer[..n].to_vec());
    }
}

async fn udp_flow(
    socket: &tokio::net::UdpSocket,
    session: &Session,
    service: &Service,
    peer: SocketAddr,
    mut datagrams: tokio::sync::mpsc::Receiver<Vec<u8>>,
) {
    let Ok(stream) = session.open(service).await else { return };
    let (mut from_guest, mut to_guest) = tokio::io::split(stream);
    let mut buffer = Vec::new();
    loop {
        tokio::select! {
            datagram = datagrams.recv() => {
                let Some(datagram) = datagram else { return };
                if ports::write_datagram(&mut to_guest, &datagram).await.is_err() {
                    return;
                }
            }
            reply = ports::read_datagram(&mut from_guest, &mut buffer) => {
                let Ok(Some(n)) = reply else { return };
                let _ = socket.send_to(&buffer[..n], peer).await;
            }
            () = tokio::time::sleep(UDP_IDLE) => return,
        }
    }
}

/// The name of the running container with address `ip`, from the engine's container list.
async fn container_with(session: &Session, ip: IpAddr) -> Option<String> {
    let containers = crate::engine_api::get_json(session, "/containers/json").await?;
    let containers = containers.as_array()?;
    let ip = ip.to_string();
    containers.iter().find_map(|c| {
        let networks = c.pointer("/NetworkSettings/Networks")?.as_object()?;
        networks.values().any(|n| n["IPAddress"] == ip.as_str()).then(|| {
            let name = c.pointer("/Names/0")?.as_str()?;
            Some(name.trim_start_matches('/').to_owned())
        })?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn wildcards_are_the_loopback_unless_external_bind() {
        assert_eq!(host_address(addr("0.0.0.0:8080"), false), addr("127.0.0.1:8080"));
        assert_eq!(host_address(addr("[::]:8080"), false), addr("[::1]:8080"));
        assert_eq!(host_address(addr("0.0.0.0:8080"), true), addr("0.0.0.0:8080"));
        assert_eq!(host_address(addr("127.0.0.1:8080"), true), addr("127.0.0.1:8080"));
        assert_eq!(host_address(addr("192.168.1.5:80"), false), addr("192.168.1.5:80"));
    }

    #[test]
    fn a_port_forwarding_entry_keeps_its_port() {
        let published = Published::default();
        published.set_forwards(vec![Forward::parse("127.0.0.1:8080:80/tcp").expect("entry")]);
        let binding = |proto, host: &str| Binding {
            proto,
            host: addr(host),
            container: addr("172.17.0.2:80"),
        };
        let why = published
            .clash(&binding(Proto::Tcp, "0.0.0.0:8080"), addr("127.0.0.1:8080"))
            .expect("a clash");
        assert!(why.contains("127.0.0.1:8080") && why.contains("port-forwarding"), "{why}");
        assert!(published
            .clash(&binding(Proto::Udp, "0.0.0.0:8080"), addr("127.0.0.1:8080"))
            .is_none());
        assert!(published
            .clash(&binding(Proto::Tcp, "0.0.0.0:8081"), addr("127.0.0.1:8081"))
            .is_none());
        assert!(published
            .clash(&binding(Proto::Tcp, "0.0.0.0:8080"), addr("0.0.0.0:8080"))
            .is_some());
        assert!(published.clash(&binding(Proto::Tcp, "[::]:8080"), addr("[::1]:8080")).is_none());
    }

    #[test]
    fn a_taken_port_is_refused_with_its_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let host = taken.local_addr().expect("addr");
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        let _entered = runtime.enter();
        let why = bind(Proto::Tcp, host).err().expect("refused");
        assert!(why.contains(&host.to_string()), "{why}");
        assert!(bind(Proto::Udp, host).is_ok(), "UDP has its own ports");
    }
}
