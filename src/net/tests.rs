//! The NAT against a guest that is a second smoltcp stack (with smoltcp's DHCP client), and
//! host servers on loopback: every frame goes through the NAT's real loop and real sockets.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::{dhcpv4, icmp, tcp, udp};
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{
    EthernetAddress, HardwareAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr, Ipv4Address,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Config, Nat, Stats};

const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
pub(super) const GATEWAY: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);

/// The guest's device is the NAT's own kind, checking every checksum the NAT writes.
type Wire = super::stack::Queues;

/// The guest: a smoltcp interface whose wire is the NAT.
pub(super) struct Guest {
    pub(super) iface: Interface,
    wire: Wire,
    pub(super) sockets: SocketSet<'static>,
    started: std::time::Instant,
}

impl Guest {
    /// A guest with no address yet.
    fn bare() -> Guest {
        let mut wire = Wire { mtu: 1500, verify: true, ..Wire::default() };
        let config = IfaceConfig::new(HardwareAddress::Ethernet(EthernetAddress(GUEST_MAC)));
        let iface = Interface::new(config, &mut wire, SmolInstant::from_millis(0));
        Guest {
            iface,
            wire,
            sockets: SocketSet::new(Vec::new()),
            started: std::time::Instant::now(),
        }
    }

    /// A guest at 10.0.2.15/24 with the gateway as its default route.
    pub(super) fn configured() -> Guest {
        let mut guest = Guest::bare();
        guest.iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(IpAddress::v4(10, 0, 2, 15), 24));
        });
        guest.iface.routes_mut().add_default_ipv4_route(GATEWAY).expect("a route");
        guest
    }

    fn poll(&mut self) {
        let now = SmolInstant::from_millis(self.started.elapsed().as_millis() as i64);
        self.iface.poll(now, &mut self.wire, &mut self.sockets);
    }

    /// Moves frames both ways between the guest and the NAT.
    pub(super) async fn exchange(&mut self, nat: &mut Nat) {
        self.poll();
        for frame in self.wire.tx.drain(..) {
            trace("guest", &frame);
            nat.to_nat.send(frame).await.expect("the NAT runs");
        }
        while let Ok(frame) = nat.from_nat.try_recv() {
            trace("nat", &frame);
            self.wire.rx.push_back(frame);
        }
        self.poll();
    }

    /// Exchanges frames until `done` says so; panics after 20 s (a hang, not a slow host).
    pub(super) async fn until(
        &mut self,
        nat: &mut Nat,
        what: &str,
        mut done: impl FnMut(&mut Guest) -> bool,
    ) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !done(self) {
            let stats = &nat.stats;
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}: {stats:?}"
            );
            self.exchange(nat).await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// A TCP socket connecting from `local_port` to the gateway's `port`.
    pub(super) fn connect(&mut self, port: u16, local_port: u16) -> SocketHandle {
        let handle = self.tcp();
        let cx = self.iface.context();
        let socket = self.sockets.get_mut::<tcp::Socket>(handle);
        socket.connect(cx, (IpAddress::from(GATEWAY), port), local_port).expect("connects");
        handle
    }

    /// Sends a DNS query for `name` to the gateway from the UDP socket `handle`, and returns
    /// the answer.
    pub(super) async fn ask_dns(
        &mut self,
        nat: &mut Nat,
        handle: SocketHandle,
        name: &str,
    ) -> Vec<u8> {
        let dns = (IpAddress::from(GATEWAY), 53);
        self.sockets.get_mut::<udp::Socket>(handle).send_slice(&query(name), dns).expect("queued");
        let mut answer = None;
        self.until(nat, name, |g| {
            let mut buffer = [0; 512];
            if let Ok((n, _)) = g.sockets.get_mut::<udp::Socket>(handle).recv_slice(&mut buffer) {
                answer = Some(buffer[..n].to_vec());
            }
            answer.is_some()
        })
        .await;
        answer.expect("an answer")
    }

    pub(super) fn tcp(&mut self) -> SocketHandle {
        let buffer = || tcp::SocketBuffer::new(vec![0; 64 * 1024]);
        self.sockets.add(tcp::Socket::new(buffer(), buffer()))
    }

    pub(super) fn udp(&mut self, port: u16) -> SocketHandle {
        let buffer = || udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 8], vec![0; 8192]);
        let mut socket = udp::Socket::new(buffer(), buffer());
        socket.bind(port).expect("binds");
        self.sockets.add(socket)
    }
}

/// Appends what a TCP socket has received to `into`.
pub(super) fn drain(socket: &mut tcp::Socket, into: &mut Vec<u8>) {
    while socket.can_recv() {
        let _ = socket.recv(|data| {
            into.extend_from_slice(data);
            (data.len(), ())
        });
    }
}

/// A server on a loopback port that runs `serve` for each connection.
pub(super) async fn loopback_server<F, Fut>(serve: F) -> u16
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    port
}

/// With NAT_TRACE set, prints each frame as it crosses the wire.
fn trace(from: &str, frame: &[u8]) {
    if std::env::var_os("NAT_TRACE").is_some() {
        use smoltcp::wire::{EthernetFrame, PrettyPrinter};
        eprintln!("{from}: {}", PrettyPrinter::<EthernetFrame<&[u8]>>::new("", &frame));
    }
}

pub(super) fn nat(config: Config) -> Nat {
    Nat::spawn(config, &tokio::runtime::Handle::current())
}

pub(super) fn config() -> Config {
    Config { resolvers: Vec::new(), ..Config::default() }
}

#[tokio::test]
async fn the_guest_gets_its_lease_by_dhcp() {
    let mut nat = nat(config());
    let mut guest = Guest::bare();
    let dhcp = guest.sockets.add(dhcpv4::Socket::new());
    let mut lease = None;
    guest
        .until(&mut nat, "a DHCP lease", |g| {
            if let Some(dhcpv4::Event::Configured(c)) =
                g.sockets.get_mut::<dhcpv4::Socket>(dhcp).poll()
            {
                lease = Some((c.address, c.router, c.dns_servers.to_vec()));
            }
            lease.is_some()
        })
        .await;
    let (address, router, dns) = lease.expect("a lease");
    assert_eq!(address.to_string(), "10.0.2.15/24");
    assert_eq!(router, Some(GATEWAY));
    assert_eq!(dns, vec![GATEWAY]);
    assert_eq!(Stats::get(&nat.stats.dhcp_replies), 2, "an offer and an ack");
}

fn echo_request(seq: u16) -> Vec<u8> {
    let repr = Icmpv4Repr::EchoRequest { ident: 0x22, seq_no: seq, data: b"ping" };
    let mut bytes = vec![0; repr.buffer_len()];
    repr.emit(&mut Icmpv4Packet::new_unchecked(&mut bytes), &ChecksumCapabilities::default());
    bytes
}

#[tokio::test]
async fn the_gateway_answers_arp_and_ping_and_nothing_beyond_it_does() {
    let mut nat = nat(config());
    let mut guest = Guest::configured();
    let buffer = || icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 1024]);
    let mut socket = icmp::Socket::new(buffer(), buffer());
    socket.bind(icmp::Endpoint::Ident(0x22)).expect("binds");
    let ping = guest.sockets.add(socket);
    let far = IpAddress::v4(192, 0, 2, 1);
    guest.sockets.get_mut::<icmp::Socket>(ping).send_slice(&echo_request(1), far).expect("queued");
    guest
        .sockets
        .get_mut::<icmp::Socket>(ping)
        .send_slice(&echo_request(2), GATEWAY.into())
        .expect("queued");
    let mut from = None;
    guest
        .until(&mut nat, "an echo reply", |g| {
            let mut buffer = [0; 64];
            if let Ok((_, source)) = g.sockets.get_mut::<icmp::Socket>(ping).recv_slice(&mut buffer)
            {
                from = Some(source);
            }
            from.is_some()
        })
        .await;
    assert_eq!(from, Some(GATEWAY.into()));
    assert!(Stats::get(&nat.stats.dropped) >= 1, "the ping to 192.0.2.1 was dropped");
}

/// A loopback server that echoes what it reads.
async fn tcp_echo_server() -> u16 {
    loopback_server(|mut stream| async move {
        let mut buffer = vec![0; 8192];
        while let Ok(n) = stream.read(&mut buffer).await {
            if n == 0 || stream.write_all(&buffer[..n]).await.is_err() {
                break;
            }
        }
    })
    .await
}

#[tokio::test]
async fn tcp_reaches_a_host_server_through_the_gateway_both_ways_and_closes() {
    let port = tcp_echo_server().await;
    let mut nat = nat(config());
    let mut guest = Guest::configured();
    let handle = guest.connect(port, 49152);

    // A megabyte, more than every buffer on the way: both sides wait for each other.
    let sent: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let (mut offset, mut received) = (0, Vec::new());
    guest
        .until(&mut nat, "the echo of a megabyte", |g| {
            let socket = g.sockets.get_mut::<tcp::Socket>(handle);
            if socket.can_send() && offset < sent.len() {
                offset += socket.send_slice(&sent[offset..]).unwrap_or(0);
            }
            drain(socket, &mut received);
            received.len() == sent.len()
        })
        .await;
    assert!(received == sent, "the bytes came back unchanged");
    assert_eq!(Stats::get(&nat.stats.tcp_opened), 1);

    guest.sockets.get_mut::<tcp::Socket>(handle).close();
    guest
        .until(&mut nat, "both FINs", |g| {
            let state = g.sockets.get_mut::<tcp::Socket>(handle).state();
            matches!(state, tcp::State::TimeWait | tcp::State::Closed)
        })
        .await;
    let stats = nat.stats.clone();
    guest.until(&mut nat, "the flow to be forgotten", |_| Stats::get(&stats.tcp_flows) == 0).await;
}

#[tokio::test]
async fn a_refused_host_connection_resets_the_guests() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let port = closed.local_addr().expect("address").port();
    drop(closed);
    let mut nat = nat(config());
    let mut guest = Guest::configured();
    let handle = guest.connect(port, 49153);
    // Refused as the host refused it: a reset for the SYN, never a handshake first (a port
    // probe would take that for an open port).
    let established = std::cell::Cell::new(false);
    guest
        .until(&mut nat, "a reset", |g| {
            let state = g.sockets.get_mut::<tcp::Socket>(handle).state();
            established.set(established.get() || state == tcp::State::Established);
            state == tcp::State::Closed
        })
        .await;
    assert!(!established.get(), "the guest saw the connection established before the reset");
    assert_eq!(Stats::get(&nat.stats.tcp_refused), 1);
}

#[tokio::test]
async fn udp_round_trip_to_a_host_server() {
    let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("binds");
    let port = server.local_addr().expect("address").port();
    tokio::spawn(async move {
        let mut buffer = [0; 2048];
        while let Ok((n, from)) = server.recv_from(&mut buffer).await {
            let _ = server.send_to(&buffer[..n], from).await;
        }
    });
    let mut nat = nat(config());
    let mut guest = Guest::configured();
    let handle = guest.udp(5000);
    let to = (IpAddress::from(GATEWAY), port);
    guest.sockets.get_mut::<udp::Socket>(handle).send_slice(b"datagram", to).expect("queued");
    let mut got = None;
    guest
        .until(&mut nat, "the datagram back", |g| {
            let mut buffer = [0; 64];
            if let Ok((n, meta)) = g.sockets.get_mut::<udp::Socket>(handle).recv_slice(&mut buffer)
            {
                got = Some((buffer[..n].to_vec(), meta.endpoint));
            }
            got.is_some()
        })
        .await;
    let (data, from) = got.expect("a reply");
    assert_eq!(data, b"datagram");
    assert_eq!(from, smoltcp::wire::IpEndpoint::new(GATEWAY.into(), port));
}

/// A DNS query for `name` (type A), id 7.
pub(super) fn query(name: &str) -> Vec<u8> {
    let mut q = vec![0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// A resolver on loopback that answers every A query with 192.0.2.7.
pub(super) async fn test_resolver() -> SocketAddr {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("binds");
    let address = socket.local_addr().expect("address");
    tokio::spawn(async move {
        let mut buffer = [0; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buffer).await {
            let mut reply = buffer[..n].to_vec();
            reply[2] = 0x81;
            reply[3] = 0x80;
            reply[7] = 1; // one answer
            reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7]);
            let _ = socket.send_to(&reply, from).await;
        }
    });
    address
}

#[tokio::test]
async fn dns_answers_the_host_name_and_forwards_the_rest() {
    let resolver = test_resolver().await;
    let mut nat = nat(Config { resolvers: vec![resolver], ..Config::default() });
    let mut guest = Guest::configured();
    let handle = guest.udp(5353);
    for name in ["host.cairn.internal", "example.test"] {
        let answer = guest.ask_dns(&mut nat, handle, name).await;
        let address = Ipv4Addr::new(
            answer[answer.len() - 4],
            answer[answer.len() - 3],
            answer[answer.len() - 2],
            answer[answer.len() - 1],
        );
        let expected = if name == "example.test" {
            Ipv4Addr::new(192, 0, 2, 7)
        } else {
            Ipv4Addr::new(10, 0, 2, 2)
        };
        assert_eq!(address, expected, "{name}");
    }
    assert_eq!(Stats::get(&nat.stats.dns_local), 1, "only the host's name is answered locally");
}

#[tokio::test]
async fn malformed_frames_are_counted_and_change_nothing() {
    let mut nat = nat(config());
    let mut garbage = vec![vec![1, 2, 3], vec![0xff; 14]];
    // An IPv4 frame cut short, and one whose header checksum is wrong.
    let mut frame = vec![0x52, 0x55, 0x0a, 0, 2, 2];
    frame.extend_from_slice(&GUEST_MAC);
    frame.extend_from_slice(&[8, 0, 0x45, 0, 0, 40]);
    garbage.push(frame.clone());
    frame.extend_from_slice(&[0; 34]);
    garbage.push(frame);
    let count = garbage.len() as u64;
    for frame in garbage {
        nat.to_nat.send(frame).await.expect("the NAT runs");
    }
    // The NAT still works: a ping to the gateway is answered.
    let mut guest = Guest::configured();
    let buffer = || icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 1024]);
    let mut socket = icmp::Socket::new(buffer(), buffer());
    socket.bind(icmp::Endpoint::Ident(0x22)).expect("binds");
    let ping = guest.sockets.add(socket);
    guest
        .sockets
        .get_mut::<icmp::Socket>(ping)
        .send_slice(&echo_request(1), GATEWAY.into())
        .expect("queued");
    guest
        .until(&mut nat, "an echo reply", |g| g.sockets.get_mut::<icmp::Socket>(ping).can_recv())
        .await;
    // 3 bytes and the 0xff frame do not parse as ethernet+IPv4; the last two fail IPv4.
    assert_eq!(Stats::get(&nat.stats.malformed) + Stats::get(&nat.stats.dropped), count);
    assert!(Stats::get(&nat.stats.malformed) >= 3);
}

#[tokio::test]
async fn a_syn_flood_costs_at_most_the_flow_limit() {
    let port = tcp_echo_server().await;
    let mut config = config();
    config.limits.tcp_flows = 4;
    let mut nat = nat(config);
    let mut guest = Guest::configured();
    let handles: Vec<_> = (0..10u16)
        .map(|i| {
            let handle = guest.tcp();
            let cx = guest.iface.context();
            let socket = guest.sockets.get_mut::<tcp::Socket>(handle);
            socket.connect(cx, (IpAddress::from(GATEWAY), port), 50000 + i).expect("connects");
            handle
        })
        .collect();
    let established = |g: &mut Guest| {
        handles
            .iter()
            .filter(|h| g.sockets.get_mut::<tcp::Socket>(**h).state() == tcp::State::Established)
            .count()
    };
    guest.until(&mut nat, "four connections", |g| established(g) == 4).await;
    for _ in 0..50 {
        guest.exchange(&mut nat).await;
    }
    assert_eq!(established(&mut guest), 4, "no more than the limit");
    assert_eq!(Stats::get(&nat.stats.tcp_flows), 4);
    assert!(Stats::get(&nat.stats.over_limit) >= 6, "{:?}", nat.stats);
}
