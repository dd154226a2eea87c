//! UDP through the NAT. A flow is the guest's (address, port) and the destination it sent to;
//! each has a host socket connected to the real destination (the host itself for the
//! gateway, the resolver for DNS), and a task that hands what comes back to the frame loop,
//! which writes it to the guest as if it came from the destination the guest used.

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// A flow: the guest's end, and the destination as the guest sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub guest: SocketAddrV4,
    pub visible: SocketAddrV4,
}

/// A datagram from the host side of a flow.
#[derive(Debug)]
pub struct Reply {
    pub key: Key,
    pub payload: Vec<u8>,
}

#[derive(Debug)]
struct Flow {
    /// Sends go through the std socket: tokio's `try_send` says "would block" until its
    /// reactor has seen the socket writable once, which a fresh flow has not.
    sender: std::net::UdpSocket,
    last_used: Instant,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Why a datagram was not sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The flow limit is reached.
    Limit,
    /// The host socket could not be opened or would block.
    Host,
}

#[derive(Debug)]
pub struct Flows {
    flows: HashMap<Key, Flow>,
    limit: usize,
    replies: mpsc::Sender<Reply>,
}

/// The largest datagram read from a host socket.
const MAX_DATAGRAM: usize = 65535;

impl Flows {
    pub fn new(limit: usize, replies: mpsc::Sender<Reply>) -> Flows {
        Flows { flows: HashMap::new(), limit, replies }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    fn open(&self, key: Key, real: SocketAddr) -> std::io::Result<Flow> {
        let local: SocketAddr = match real {
            SocketAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
            SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = std::net::UdpSocket::bind(local)?;
        socket.connect(real)?;
        socket.set_nonblocking(true)?;
        let sender = socket.try_clone()?;
        let reading = UdpSocket::from_std(socket)?;
        let replies = self.replies.clone();
        let reader = tokio::spawn(async move {
            let mut buffer = vec![0u8; MAX_DATAGRAM];
            while let Ok(n) = reading.recv(&mut buffer).await {
                let reply = Reply { key, payload: buffer[..n].to_vec() };
                if replies.send(reply).await.is_err() {
                    return;
                }
            }
        });
        Ok(Flow { sender, last_used: Instant::now(), reader })
    }

    /// Sends the guest's datagram on its flow to `real`, opening the flow if needed.
    pub fn send(&mut self, key: Key, real: SocketAddr, payload: &[u8]) -> Result<(), Refused> {
        if !self.flows.contains_key(&key) {
            if self.flows.len() >= self.limit {
                return Err(Refused::Limit);
            }
            let flow = self.open(key, real).map_err(|e| {
                tracing::debug!(%real, error = %e, "opening a UDP flow");
                Refused::Host
            })?;
            self.flows.insert(key, flow);
        }
        let flow = self.flows.get_mut(&key).ok_or(Refused::Host)?;
        flow.last_used = Instant::now();
        flow.sender.send(payload).map(drop).map_err(|_| Refused::Host)
    }

    /// Marks the flow of a reply as used.
    pub fn touch(&mut self, key: &Key) -> bool {
        match self.flows.get_mut(key) {
            Some(flow) => {
                flow.last_used = Instant::now();
                true
            }
            None => false,
        }
    }

    /// Closes the flows `which` picks.
    pub fn close_where(&mut self, which: impl Fn(&Key) -> bool) {
        self.flows.retain(|key, _| !which(key));
    }

    /// Closes the flows idle for longer than `idle`.
    pub fn sweep(&mut self, idle: std::time::Duration) {
        self.flows.retain(|_, flow| flow.last_used.elapsed() < idle);
    }
}

/// The other direction: datagrams that arrived on a forwarded host port. Each host peer gets
/// a port of the gateway's, so that the guest's replies (to that port) go back to it.
#[derive(Debug, Default)]
pub struct Forwarded {
    by_peer: HashMap<(SocketAddr, SocketAddr), u16>,
    by_port: HashMap<u16, Peer>,
    next: u16,
}

#[derive(Debug)]
struct Peer {
    /// The forwarded port's socket (std, for sending, as for flows).
    socket: std::sync::Arc<std::net::UdpSocket>,
    peer: SocketAddr,
    last_used: Instant,
}

/// The gateway's ports for forwarded peers: the first, and how many.
const FORWARD_PORTS: (u16, u16) = (50000, 10000);

impl Forwarded {
    /// The gateway port that stands for `peer` of the forwarded `socket`; None when every
    /// port is taken (more live peers than ports).
    pub fn port_for(
        &mut self,
        socket: &std::sync::Arc<std::net::UdpSocket>,
        peer: SocketAddr,
    ) -> Option<u16> {
        let local = socket.local_addr().ok()?;
        if let Some(port) = self.by_peer.get(&(local, peer)) {
            if let Some(entry) = self.by_port.get_mut(port) {
                entry.last_used = Instant::now();
            }
            return Some(*port);
        }
        let by_port = &self.by_port;
        let port = super::next_port(&mut self.next, FORWARD_PORTS.0, FORWARD_PORTS.1, |port| {
            !by_port.contains_key(&port)
        })?;
        self.by_port.insert(port, Peer { socket: socket.clone(), peer, last_used: Instant::now() });
        self.by_peer.insert((local, peer), port);
        Some(port)
    }

    /// Sends the guest's datagram to the gateway's `port` back to its host peer; false when
    /// the port stands for nobody.
    pub fn reply(&mut self, port: u16, payload: &[u8]) -> bool {
        let Some(entry) = self.by_port.get_mut(&port) else { return false };
        entry.last_used = Instant::now();
        let _ = entry.socket.send_to(payload, entry.peer);
        true
    }

    /// Forgets the peers quiet for longer than `idle`.
    pub fn sweep(&mut self, idle: std::time::Duration) {
        self.by_port.retain(|_, entry| entry.last_used.elapsed() < idle);
        let by_port = &self.by_port;
        self.by_peer.retain(|_, port| by_port.contains_key(port));
    }
}
