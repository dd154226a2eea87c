//! The frame loop. Each frame from the guest is looked at once: ARP for the gateway, ping to
//! the gateway and TCP go to the smoltcp interface (TCP after `tcp` made a socket
//! listen for a new connection); DHCP, DNS and other UDP are answered or forwarded here;
//! anything else is counted and dropped, and nothing a guest sends can make the loop fail.

use std::collections::VecDeque;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use smoltcp::iface::{Config as IfaceConfig, Interface, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    HardwareAddress, IpCidr, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket,
};
use tokio::sync::{mpsc, Notify};

use super::{dhcp, dns, frame, tcp, udp, Command, Config, Stats};

/// The interface's device: frames queued for smoltcp, and the frames it wrote. (The NAT's
/// tests give their smoltcp guest one too, with `verify` on.)
#[derive(Debug, Default)]
pub(super) struct Queues {
    pub(super) rx: VecDeque<Vec<u8>>,
    pub(super) tx: Vec<Vec<u8>>,
    pub(super) mtu: usize,
    /// Whether received TCP and ICMP checksums are checked.
    pub(super) verify: bool,
}

pub(super) struct Rx(Vec<u8>);
pub(super) struct Tx<'a>(&'a mut Vec<Vec<u8>>);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let result = f(&mut frame);
        self.0.push(frame);
        result
    }
}

impl phy::Device for Queues {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: SmolInstant) -> Option<(Rx, Tx<'_>)> {
        let frame = self.rx.pop_front()?;
        Some((Rx(frame), Tx(&mut self.tx)))
    }

    fn transmit(&mut self, _: SmolInstant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu + 14;
        // The guest's frames come over a local channel, not a wire that could flip bits: TCP
        // and ICMP checksums are computed for the guest but not verified again (a pass over
        // every byte saved, as virtio's checksum offload would). IPv4 headers and UDP are
        // checked in `Stack::ipv4`.
        if !self.verify {
            caps.checksum.tcp = smoltcp::phy::Checksum::Tx;
            caps.checksum.icmpv4 = smoltcp::phy::Checksum::Tx;
        }
        caps
    }
}

/// The NAT's state, driven by [`run`].
pub struct Stack {
    config: Config,
    iface: Interface,
    device: Queues,
    sockets: SocketSet<'static>,
    tcp: tcp::Flows,
    udp: udp::Flows,
    /// Peers of forwarded UDP ports.
    forwarded: udp::Forwarded,
    /// The next of the gateway's ports for a forwarded TCP connection.
    next_port: u16,
    /// The guest's MAC, from its frames.
    guest_mac: Option<[u8; 6]>,
    /// Frames written here rather than by smoltcp.
    out: Vec<Vec<u8>>,
    stats: Arc<Stats>,
    started: std::time::Instant,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Stack {
    fn new(
        config: Config,
        stats: Arc<Stats>,
        wake: Arc<Notify>,
        replies: mpsc::Sender<udp::Reply>,
    ) -> Stack {
        let mut device = Queues { mtu: usize::from(config.mtu), ..Queues::default() };
        let mac = HardwareAddress::Ethernet(EthernetAddress(config.gateway_mac));
        let mut iface_config = IfaceConfig::new(mac);
        iface_config.random_seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut iface = Interface::new(iface_config, &mut device, SmolInstant::from_millis(0));
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(config.gateway.into(), config.prefix_len));
        });
        // Accept TCP for every destination: the listening sockets decide which.
        iface.set_any_ip(true);
        // What is beyond the guest (its containers' bridges) is reached through it.
        let _ = iface.routes_mut().add_default_ipv4_route(config.guest);
        let tcp = tcp::Flows::new(&config.limits, wake);
        let udp = udp::Flows::new(config.limits.udp_flows, replies);
        Stack {
            config,
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
            tcp,
            udp,
            forwarded: udp::Forwarded::default(),
            next_port: 0,
            guest_mac: None,
            out: Vec::new(),
            stats,
            started: std::time::Instant::now(),
        }
    }

    fn now(&self) -> SmolInstant {
        SmolInstant::from_millis(self.started.elapsed().as_millis() as i64)
    }

    /// Where a destination the guest dialled really is: the gateway stands for the host.
    fn real(&self, visible: SocketAddrV4) -> SocketAddr {
        if *visible.ip() == self.config.gateway {
            SocketAddr::new(self.config.host, visible.port())
        } else {
            SocketAddr::V4(visible)
        }
    }

    fn malformed(&self) {
        Stats::add(&self.stats.malformed, 1);
    }

    fn dropped(&self) {
        Stats::add(&self.stats.dropped, 1);
    }

    /// Takes one frame from the guest.
    pub fn from_guest(&mut self, bytes: Vec<u8>) {
        Stats::add(&self.stats.frames_in, 1);
        let Ok(ethernet) = EthernetFrame::new_checked(&bytes[..]) else {
            return self.malformed();
        };
        let source = ethernet.src_addr();
        match ethernet.ethertype() {
            EthernetProtocol::Arp => {
                let Ok(repr) =
                    ArpPacket::new_checked(ethernet.payload()).and_then(|p| ArpRepr::parse(&p))
                else {
                    return self.malformed();
                };
                // Only the gateway answers: an ARP probe for the guest's own address (or any
                // other) must go unanswered.
                let ArpRepr::EthernetIpv4 { operation, target_protocol_addr, .. } = repr else {
                    return self.dropped();
                };
                if operation == ArpOperation::Request && target_protocol_addr != self.config.gateway
                {
                    return self.dropped();
                }
                self.guest_mac = Some(source.0);
                self.device.rx.push_back(bytes);
            }
            EthernetProtocol::Ipv4 => self.ipv4(source.0, bytes),
            _ => self.dropped(),
        }
    }

    fn ipv4(&mut self, source: [u8; 6], bytes: Vec<u8>) {
        let ethernet = EthernetFrame::new_unchecked(&bytes[..]);
        let Ok(packet) = Ipv4Packet::new_checked(ethernet.payload()) else {
            return self.malformed();
        };
        if !packet.verify_checksum() {
            return self.malformed();
        }
        if packet.more_frags() || packet.frag_offset() != 0 {
            return self.dropped();
        }
        let (src, dst) = (packet.src_addr(), packet.dst_addr());
        if src == self.config.guest || src.is_unspecified() {
            self.guest_mac = Some(source);
        }
        match packet.next_header() {
            IpProtocol::Udp => {
                let Ok(datagram) = UdpPacket::new_checked(packet.payload()) else {
                    return self.malformed();
                };
                if !datagram.verify_checksum(&src.into(), &dst.into()) {
                    return self.malformed();
                }
                let guest = SocketAddrV4::new(src, datagram.src_port());
                let visible = SocketAddrV4::new(dst, datagram.dst_port());
                let payload = datagram.payload().to_vec();
                self.udp(source, guest, visible, &payload);
            }
            IpProtocol::Tcp => {
                let Ok(segment) = TcpPacket::new_checked(packet.payload()) else {
                    return self.malformed();
                };
                let allowed = self.config.outbound || dst == self.config.gateway;
                // A SYN waits for the host's connection (see tcp); smoltcp answers one that
                // nobody listens for with a reset.
                if segment.syn() && !segment.ack() && allowed {
                    let key = tcp::Key {
                        guest: SocketAddrV4::new(src, segment.src_port()),
                        visible: SocketAddrV4::new(dst, segment.dst_port()),
                    };
                    let real = self.real(key.visible);
                    match self.tcp.on_syn(key, real, bytes, &mut self.sockets) {
                        tcp::Syn::New => Stats::add(&self.stats.tcp_opened, 1),
                        tcp::Syn::Waiting => {}
                        tcp::Syn::Pass(bytes) => self.device.rx.push_back(bytes),
                        tcp::Syn::OverLimit => Stats::add(&self.stats.over_limit, 1),
                    }
                    return;
                }
                self.device.rx.push_back(bytes);
            }
            IpProtocol::Icmp if dst == self.config.gateway => self.device.rx.push_back(bytes),
            _ => self.dropped(),
        }
    }

    fn udp(&mut self, mac: [u8; 6], guest: SocketAddrV4, visible: SocketAddrV4, payload: &[u8]) {
        let gateway = SocketAddrV4::new(self.config.gateway, visible.port());
        if visible.port() == dhcp::SERVER_PORT {
            match dhcp::answer(&self.config, payload) {
                Ok(dhcp::Answer::Reply { payload, client }) => {
                    let to = SocketAddrV4::new(frame::BROADCAST, dhcp::CLIENT_PORT);
                    let from = SocketAddrV4::new(self.config.gateway, dhcp::SERVER_PORT);
                    self.out.push(frame::udp(self.config.gateway_mac, client, from, to, &payload));
                    Stats::add(&self.stats.dhcp_replies, 1);
                }
                Ok(dhcp::Answer::Silent) => {}
                Err(dhcp::Malformed) => self.malformed(),
            }
            return;
        }
        if *visible.ip() == self.config.gateway && self.forwarded.reply(visible.port(), payload) {
            return;
        }
        let real = if visible == SocketAddrV4::new(self.config.gateway, dns::PORT) {
            let Some(question) = dns::question(payload) else { return self.malformed() };
            let resolver = self.config.resolvers.first().copied().filter(|_| self.config.outbound);
            match resolver.filter(|_| !dns::is_host_name(&question)) {
                Some(resolver) => resolver,
                None => {
                    let answer = match dns::is_host_name(&question) {
                        true => dns::local_answer(payload, &question, self.config.gateway),
                        false => dns::server_failure(payload, &question),
                    };
                    Stats::add(&self.stats.dns_local, 1);
                    let reply = frame::udp(self.config.gateway_mac, mac, gateway, guest, &answer);
                    return self.out.push(reply);
                }
            }
        } else if self.config.outbound || *visible.ip() == self.config.gateway {
            self.real(visible)
        } else {
            return self.dropped();
        };
        match self.udp.send(udp::Key { guest, visible }, real, payload) {
            Ok(()) => {}
            Err(udp::Refused::Limit) => Stats::add(&self.stats.over_limit, 1),
            Err(udp::Refused::Host) => self.dropped(),
        }
    }

    /// A datagram from the host for a flow: to the guest, from the address it sent to.
    pub fn from_host(&mut self, reply: udp::Reply) {
        let (Some(mac), true) = (self.guest_mac, self.udp.touch(&reply.key)) else { return };
        if reply.payload.len() > frame::udp_room(self.config.mtu) {
            return self.dropped();
        }
        let udp::Key { guest, visible } = reply.key;
        self.out.push(frame::udp(self.config.gateway_mac, mac, visible, guest, &reply.payload));
    }

    /// A host connection into the guest (or through it, to a container's address), from the
    /// gateway.
    fn tcp_in(&mut self, stream: super::HostConn, to: SocketAddrV4) {
        let Some(from) = self.free_port() else {
            return Stats::add(&self.stats.over_limit, 1);
        };
        if self.tcp.inbound(stream, from, to, &mut self.iface, &mut self.sockets) {
            Stats::add(&self.stats.forwarded_in, 1);
        } else {
            Stats::add(&self.stats.over_limit, 1);
        }
    }

    /// Carries out a command of the control plane.
    pub fn command(&mut self, command: Command) {
        match command {
            Command::Reconfigure(config) => self.reconfigure(config),
            Command::TcpIn { stream, port } => {
                self.tcp_in(stream, SocketAddrV4::new(self.config.guest, port));
            }
            Command::TcpTo { stream, to } => self.tcp_in(stream, to),
            Command::UdpIn { socket, peer, port, payload } => {
                let Some(mac) = self.guest_mac else { return self.dropped() };
                if payload.len() > frame::udp_room(self.config.mtu) {
                    return self.dropped();
                }
                let Some(from) = self.forwarded.port_for(&socket, peer) else {
                    return Stats::add(&self.stats.over_limit, 1);
                };
                let from = SocketAddrV4::new(self.config.gateway, from);
                let to = SocketAddrV4::new(self.config.guest, port);
                self.out.push(frame::udp(self.config.gateway_mac, mac, from, to, &payload));
                Stats::add(&self.stats.forwarded_in, 1);
            }
        }
    }

    /// Takes a new commit's mode, MTU and resolvers. Turning outbound traffic off cuts the
    /// flows that go beyond the gateway.
    fn reconfigure(&mut self, new: Config) {
        self.config.mtu = new.mtu;
        self.device.mtu = usize::from(new.mtu);
        self.config.resolvers = new.resolvers;
        self.config.outbound = new.outbound;
        if !self.config.outbound {
            let gateway = self.config.gateway;
            self.tcp.abort_where(|key| *key.visible.ip() != gateway, &mut self.sockets);
            self.udp.close_where(|key| *key.visible.ip() != gateway);
        }
    }

    /// A port of the gateway's for a forwarded TCP connection that no flow uses.
    fn free_port(&mut self) -> Option<SocketAddrV4> {
        let gateway = self.config.gateway;
        let tcp = &self.tcp;
        let port = super::next_port(&mut self.next_port, 40000, 10000, |port| {
            !tcp.uses(SocketAddrV4::new(gateway, port))
        })?;
        Some(SocketAddrV4::new(gateway, port))
    }

    /// Runs the interface and the flows; returns the frames for the guest.
    pub fn poll(&mut self) -> Vec<Vec<u8>> {
        let now = self.now();
        self.iface.poll(now, &mut self.device, &mut self.sockets);
        let pumped = self.tcp.pump(&mut self.sockets);
        Stats::add(&self.stats.tcp_refused, pumped.refused);
        self.device.rx.extend(pumped.replay);
        self.iface.poll(now, &mut self.device, &mut self.sockets);
        self.udp.sweep(self.config.limits.udp_idle);
        self.forwarded.sweep(self.config.limits.udp_idle);
        Stats::set(&self.stats.tcp_flows, self.tcp.len() as u64);
        Stats::set(&self.stats.udp_flows, self.udp.len() as u64);
        let mut frames = std::mem::take(&mut self.out);
        frames.append(&mut self.device.tx);
        Stats::add(&self.stats.frames_out, frames.len() as u64);
        frames
    }

    /// How long the loop may sleep before the interface needs another poll.
    fn delay(&mut self) -> Duration {
        let now = self.now();
        let delay = self.iface.poll_delay(now, &self.sockets);
        let delay =
            delay.map_or(Duration::from_secs(1), |d| Duration::from_micros(d.total_micros()));
        delay.min(Duration::from_secs(1))
    }
}

/// Frames from the guest taken per turn of the loop.
const BURST: usize = 64;

/// The NAT: frames in from the guest, frames out to it, host sockets in between, until the
/// frames' channel closes.
pub async fn run(
    config: Config,
    mut frames_in: mpsc::Receiver<Vec<u8>>,
    frames_out: mpsc::Sender<Vec<u8>>,
    mut commands: mpsc::Receiver<Command>,
    stats: Arc<Stats>,
) {
    let wake = Arc::new(Notify::new());
    let (replies_tx, mut replies) = mpsc::channel(1024);
    let mut stack = Stack::new(config, stats, wake.clone(), replies_tx);
    loop {
        for frame in stack.poll() {
            if frames_out.send(frame).await.is_err() {
                return;
            }
        }
        let delay = stack.delay();
        tokio::select! {
            frame = frames_in.recv() => match frame {
                Some(frame) => {
                    // What the control plane said before this frame came applies to it.
                    while let Ok(command) = commands.try_recv() {
                        stack.command(command);
                    }
                    stack.from_guest(frame);
                    // A burst is taken whole before the interface runs: one poll for many.
                    for _ in 1..BURST {
                        let Ok(frame) = frames_in.try_recv() else { break };
                        stack.from_guest(frame);
                    }
                }
                None => return,
            },
            Some(reply) = replies.recv() => stack.from_host(reply),
            Some(command) = commands.recv() => stack.command(command),
            () = wake.notified() => {}
            () = tokio::time::sleep(delay) => {}
        }
    }
}
