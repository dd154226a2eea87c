//! Guest networking: a user-space NAT on smoltcp, in the spirit of Docker for Mac's VPNKit.
//! The guest's ethernet frames end here; its TCP connections and UDP datagrams leave as
//! ordinary host sockets (tokio), so they work through whatever the host's own networking
//! does (VPNs, firewalls), and nothing needs privileges or a tap device.
//!
//! The guest sees one network, 10.0.2.0/24 by default: itself at .15 (handed out by the DHCP
//! server here), and the gateway at .2, which answers ARP and ping, serves DNS (the name
//! `host.cairn.internal` is the gateway; other names go to the host's resolvers or the `dns`
//! key's), and stands for the host: a connection to the gateway reaches the host's loopback.
//!
//! - [`stack`]: the frame loop: frames in, frames out, the smoltcp interface in between.
//! - `tcp`: TCP flows, terminated in smoltcp sockets and proxied through host connections.
//! - `udp`: UDP flows, handled on the wire (no smoltcp socket can send from any address).
//! - [`dhcp`], [`dns`]: the gateway's two services.
//! - [`forward`]: forwarded host ports, whose connections the NAT carries into the guest.
//! - [`published`]: ports containers publish, carried over the channel rather than the NAT.
//! - `frame`: building the frames the NAT writes by hand.
//! - Transports: [`stream`] for QEMU's `-netdev stream`, [`port`] for the native VMM's
//!   virtio-net.

pub mod dhcp;
pub mod dns;
pub mod forward;
mod frame;
pub mod port;
pub mod published;
pub mod stack;
pub mod stream;
mod tcp;
pub mod thread;
pub use tcp::HostConn;
mod udp;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_live;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

/// The network the guest sees, and the NAT's limits.
#[derive(Debug, Clone)]
pub struct Config {
    /// The gateway: DHCP, DNS, and the host's stand-in.
    pub gateway: Ipv4Addr,
    /// The address the DHCP server hands out.
    pub guest: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway_mac: [u8; 6],
    pub mtu: u16,
    /// Where DNS queries for other names go (the `dns` key, else the host's resolv.conf).
    pub resolvers: Vec<SocketAddr>,
    /// What a connection to the gateway reaches on the host.
    pub host: IpAddr,
    /// Whether the guest reaches beyond the gateway (`network=nat`); without it
    /// (`network=none`) only the host's services at the gateway answer, /Database's included.
    pub outbound: bool,
    pub limits: Limits,
}

/// Bounds on what the guest can make the NAT hold.
#[derive(Debug, Clone)]
pub struct Limits {
    pub tcp_flows: usize,
    pub udp_flows: usize,
    /// Each TCP flow's receive and send buffers in smoltcp.
    pub tcp_buffer: usize,
    /// A host connection that is not up by then makes the guest's connection reset.
    pub connect_timeout: Duration,
    /// A UDP flow without traffic for this long is closed.
    pub udp_idle: Duration,
}

/// The gateway's address on the guest's network: the host's loopback to the guest (slirp's too).
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

impl Default for Config {
    fn default() -> Config {
        Config {
            gateway: GATEWAY,
            guest: Ipv4Addr::new(10, 0, 2, 15),
            prefix_len: 24,
            gateway_mac: [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02],
            mtu: 1500,
            resolvers: host_resolvers(),
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            outbound: true,
            limits: Limits {
                tcp_flows: 512,
                udp_flows: 512,
                tcp_buffer: 256 * 1024,
                connect_timeout: Duration::from_secs(30),
                udp_idle: Duration::from_secs(60),
            },
        }
    }
}

impl Config {
    /// The network the configuration at `rev` describes: its mode, its MTU, and its resolvers
    /// (the `dns` key, one address per line; empty means the host's).
    pub fn from_db(db: &cairn_db::Db, rev: &str) -> Result<Config, cairn_db::Error> {
        let mut config = Config::default();
        let text = |path| -> Result<String, cairn_db::Error> {
            Ok(String::from_utf8_lossy(&db.read(rev, path)?.unwrap_or_default()).into_owned())
        };
        config.outbound = text("network")?.trim() != "none";
        if let Ok(mtu) = text("net/mtu")?.trim().parse() {
            config.mtu = mtu;
        }
        let resolvers: Vec<SocketAddr> = text("net/dns")?
            .lines()
            .filter_map(|line| line.trim().parse::<IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, 53))
            .collect();
        if !resolvers.is_empty() {
            config.resolvers = resolvers;
        }
        Ok(config)
    }
}

/// The next of `count` ports from `first` that `free` accepts, going round from `*next` (so
/// that a port just given up is not handed out again at once); None when none is free.
fn next_port(
    next: &mut u16,
    first: u16,
    count: u16,
    mut free: impl FnMut(u16) -> bool,
) -> Option<u16> {
    for _ in 0..count {
        let port = first + *next % count;
        *next = next.wrapping_add(1);
        if free(port) {
            return Some(port);
        }
    }
    None
}

/// The nameservers of the host's /etc/resolv.conf, port 53.
pub fn host_resolvers() -> Vec<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|address| address.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// What the NAT has seen, for `cairn status`: traffic, and what it refused or dropped.
#[derive(Debug, Default)]
pub struct Stats {
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    /// Frames that do not parse (truncated, bad checksums, nonsense lengths).
    pub malformed: AtomicU64,
    /// Well-formed frames the NAT does not forward (IPv6, fragments, ARP for other hosts,
    /// ping beyond the gateway, oversized replies).
    pub dropped: AtomicU64,
    pub tcp_flows: AtomicU64,
    pub tcp_opened: AtomicU64,
    /// Connections the host refused or that timed out.
    pub tcp_refused: AtomicU64,
    pub udp_flows: AtomicU64,
    /// New flows refused because a limit was reached (a SYN flood lands here).
    pub over_limit: AtomicU64,
    pub dhcp_replies: AtomicU64,
    pub dns_local: AtomicU64,
    /// Connections and datagrams carried in through forwarded ports.
    pub forwarded_in: AtomicU64,
}

/// The counters at one moment, as `cairn status` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    pub frames_in: u64,
    pub frames_out: u64,
    pub malformed: u64,
    pub dropped: u64,
    pub tcp_flows: u64,
    pub tcp_opened: u64,
    pub tcp_refused: u64,
    pub udp_flows: u64,
    pub over_limit: u64,
    pub dhcp_replies: u64,
    pub dns_local: u64,
    pub forwarded_in: u64,
}

impl Stats {
    pub fn snapshot(&self) -> Counters {
        let get = Stats::get;
        Counters {
            frames_in: get(&self.frames_in),
            frames_out: get(&self.frames_out),
            malformed: get(&self.malformed),
            dropped: get(&self.dropped),
            tcp_flows: get(&self.tcp_flows),
            tcp_opened: get(&self.tcp_opened),
            tcp_refused: get(&self.tcp_refused),
            udp_flows: get(&self.udp_flows),
            over_limit: get(&self.over_limit),
            dhcp_replies: get(&self.dhcp_replies),
            dns_local: get(&self.dns_local),
            forwarded_in: get(&self.forwarded_in),
        }
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
    fn set(counter: &AtomicU64, n: u64) {
        counter.store(n, Ordering::Relaxed);
    }
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// What the control plane tells a running NAT.
#[derive(Debug)]
pub enum Command {
    /// The settings of a new commit: mode, MTU (for the next DHCP lease) and resolvers. The
    /// addresses and limits stay as they are.
    Reconfigure(Config),
    /// A connection accepted on a forwarded TCP port, for the
    /// guest's `port`.
    TcpIn { stream: HostConn, port: u16 },
    /// A connection accepted on a port a container published, for the container's address
    /// behind the guest (`172.17.0.2:80`): the NAT connects to it from the gateway through
    /// the guest, which routes it to its bridge (dockerd's rules accept published ports).
    TcpTo { stream: HostConn, to: SocketAddrV4 },
    /// A datagram from `peer` on a forwarded UDP port (`socket`), for the guest's `port`.
    UdpIn { socket: Arc<std::net::UdpSocket>, peer: SocketAddr, port: u16, payload: Vec<u8> },
}

/// A running NAT: frames for it, frames from it, its commands and counters. It runs until
/// every sender of frames is gone.
#[derive(Debug)]
pub struct Nat {
    pub to_nat: mpsc::Sender<Vec<u8>>,
    pub from_nat: mpsc::Receiver<Vec<u8>>,
    pub control: mpsc::Sender<Command>,
    pub stats: Arc<Stats>,
}

/// Frames waiting in either direction before the sender waits.
const FRAME_QUEUE: usize = 1024;

impl Nat {
    /// Starts the NAT on `runtime`.
    pub fn spawn(config: Config, runtime: &tokio::runtime::Handle) -> Nat {
        let (to_nat, frames_in) = mpsc::channel(FRAME_QUEUE);
        let (frames_out, from_nat) = mpsc::channel(FRAME_QUEUE);
        let (control, commands) = mpsc::channel(FRAME_QUEUE);
        let stats = Arc::new(Stats::default());
        runtime.spawn(stack::run(config, frames_in, frames_out, commands, stats.clone()));
        Nat { to_nat, from_nat, control, stats }
    }
}
