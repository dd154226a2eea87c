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

    /// Closes the flows idle for longer than `idle`.
    pub fn sweep(&mut self, idle: std::time::Duration) {
        self.flows.retain(|_, flow| flow.last_used.elapsed() < idle);
    }
}
