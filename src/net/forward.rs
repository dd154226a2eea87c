//! Port forwarding: each entry of `net/port-forwarding` (`ADDRESS:HOSTPORT:GUESTPORT/PROTO`,
//! as the schema stores them) is a host socket whose connections and datagrams are handed to
//! the NAT of the current boot, which carries them into the guest from the gateway.
//!
//! The listeners belong to the control plane, not to one NAT: a reboot starts a new NAT and
//! the forwarded ports stay open (connections made meanwhile wait in the backlog, or are
//! closed if no NAT is there). Entries are added and removed live; one whose port cannot be
//! bound (in use, not permitted) is reported in status and tried again on the next change or
//! [`Forwards::retry`], and the others work regardless.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use super::{Command, HostConn};

/// One forward.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Forward {
    pub host: SocketAddr,
    pub guest_port: u16,
    pub udp: bool,
}

impl Forward {
    /// Parses an entry in the stored form (`127.0.0.1:8080:80/tcp`, `[::1]:53:53/udp`).
    pub fn parse(entry: &str) -> Option<Forward> {
        let (spec, proto) = entry.trim().rsplit_once('/')?;
        let udp = match proto {
            "tcp" => false,
            "udp" => true,
            _ => return None,
        };
        let (host, guest) = spec.rsplit_once(':')?;
        Some(Forward { host: host.parse().ok()?, guest_port: guest.parse().ok()?, udp })
    }
}

impl Forward {
    /// The forward as qemu's user network takes it (`hostfwd=tcp:127.0.0.1:8080-:80`), for
    /// network=hostnet; None for an IPv6 host address, which it does not forward.
    pub fn hostfwd(&self) -> Option<String> {
        let SocketAddr::V4(host) = self.host else { return None };
        let proto = if self.udp { "udp" } else { "tcp" };
        Some(format!("{proto}:{}:{}-:{}", host.ip(), host.port(), self.guest_port))
    }
}

impl std::fmt::Display for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let proto = if self.udp { "udp" } else { "tcp" };
        write!(f, "{}:{}/{proto}", self.host, self.guest_port)
    }
}

/// How one forward is doing, for `cairn status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardStatus {
    pub forward: String,
    /// "listening", or why not.
    pub state: String,
}

#[derive(Debug)]
struct Listener {
    /// None when the port could not be bound.
    task: Option<tokio::task::JoinHandle<()>>,
    state: String,
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The forwarded ports of the control plane.
#[derive(Debug)]
pub struct Forwards {
    listeners: BTreeMap<Forward, Listener>,
    /// The current NAT's commands; None between boots.
    nat: watch::Sender<Option<mpsc::Sender<Command>>>,
    runtime: tokio::runtime::Handle,
}

impl Forwards {
    pub fn new(runtime: tokio::runtime::Handle) -> Forwards {
        Forwards { listeners: BTreeMap::new(), nat: watch::Sender::new(None), runtime }
    }

    /// Hands what arrives from now on to this NAT.
    pub fn attach(&self, nat: mpsc::Sender<Command>) {
        self.nat.send_replace(Some(nat));
    }

    /// Makes the forwards those of `text` (the value of `net/port-forwarding`): new entries
    /// start listening, removed ones stop, the others carry on undisturbed.
    pub fn apply(&mut self, text: &str) {
        let wanted: Vec<Forward> = text.lines().filter_map(Forward::parse).collect();
        self.listeners.retain(|forward, _| wanted.contains(forward));
        for forward in wanted {
            let failed = self.listeners.get(&forward).is_none_or(|l| l.task.is_none());
            if failed {
                let listener = self.listen(&forward);
                match &listener.task {
                    Some(_) => tracing::info!(%forward, "forwarding"),
                    None => tracing::warn!(%forward, why = %listener.state, "cannot forward"),
                }
                self.listeners.insert(forward, listener);
            }
        }
    }

    /// Tries again to bind the ports that could not be bound.
    pub fn retry(&mut self) {
        let failed: Vec<Forward> = self
            .listeners
            .iter()
            .filter(|(_, l)| l.task.is_none())
            .map(|(f, _)| f.clone())
            .collect();
        for forward in failed {
            let listener = self.listen(&forward);
            self.listeners.insert(forward, listener);
        }
    }

    pub fn status(&self) -> Vec<ForwardStatus> {
        self.listeners
            .iter()
            .map(|(forward, l)| ForwardStatus {
                forward: forward.to_string(),
                state: l.state.clone(),
            })
            .collect()
    }

    fn listen(&self, forward: &Forward) -> Listener {
        let _entered = self.runtime.enter();
        let nat = self.nat.subscribe();
        let started = if forward.udp {
            bind_udp(forward.host)
                .map(|socket| self.runtime.spawn(udp(socket, forward.guest_port, nat)))
        } else {
            bind_tcp(forward.host)
                .map(|listener| self.runtime.spawn(streams(listener, forward.guest_port, nat)))
        };
        match started {
            Ok(task) => Listener { task: Some(task), state: "listening".into() },
            Err(e) => {
                Listener { task: None, state: format!("cannot listen on {}: {e}", forward.host) }
            }
        }
    }
}

fn bind_tcp(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let listener = std::net::TcpListener::bind(address)?;
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}

/// The socket twice: tokio's for receiving, std's for the NAT to send replies with.
fn bind_udp(
    address: SocketAddr,
) -> std::io::Result<(tokio::net::UdpSocket, Arc<std::net::UdpSocket>)> {
    let socket = std::net::UdpSocket::bind(address)?;
    socket.set_nonblocking(true)?;
    let sender = Arc::new(socket.try_clone()?);
    Ok((tokio::net::UdpSocket::from_std(socket)?, sender))
}

/// Hands each connection accepted on `listener` to the current NAT, for the guest's `port`.
async fn streams(
    listener: tokio::net::TcpListener,
    port: u16,
    nat: watch::Receiver<Option<mpsc::Sender<Command>>>,
) {
    loop {
        let stream: HostConn = match listener.accept().await {
            Ok((stream, _)) => stream.into(),
            Err(e) => {
                // Out of descriptors, most likely: wait rather than spin.
                tracing::debug!(error = %e, port, "accepting on a forwarded socket");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let target = nat.borrow().clone();
        // No VM to connect to: the peer sees the connection closed (`stream` dropped).
        if let Some(nat) = target {
            if nat.send(Command::TcpIn { stream, port }).await.is_err() {
                tracing::debug!(port, "no NAT for a forwarded connection");
            }
        }
    }
}

async fn udp(
    (socket, sender): (tokio::net::UdpSocket, Arc<std::net::UdpSocket>),
    port: u16,
    nat: watch::Receiver<Option<mpsc::Sender<Command>>>,
) {
    let mut buffer = vec![0u8; 65535];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buffer).await else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let target = nat.borrow().clone();
        if let Some(nat) = target {
            let payload = buffer[..n].to_vec();
            let _ = nat.try_send(Command::UdpIn { socket: sender.clone(), peer, port, payload });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_entries_parse() {
        let f = Forward::parse("127.0.0.1:8080:80/tcp").expect("parses");
        assert_eq!(
            (f.host, f.guest_port, f.udp),
            ("127.0.0.1:8080".parse().expect("addr"), 80, false)
        );
        let f = Forward::parse("[::1]:5353:53/udp").expect("parses");
        assert_eq!((f.host.port(), f.guest_port, f.udp), (5353, 53, true));
        assert_eq!(f.to_string(), "[::1]:5353:53/udp");
        assert_eq!(f.hostfwd(), None, "qemu's user network forwards IPv4 only");
        let f = Forward::parse("0.0.0.0:5353:53/udp").expect("parses");
        assert_eq!(f.hostfwd().as_deref(), Some("udp:0.0.0.0:5353-:53"));
        for bad in ["", "8080:80", "x:1:2/tcp", "127.0.0.1:1:2/sctp", "127.0.0.1:1:99999/tcp"] {
            assert!(Forward::parse(bad).is_none(), "{bad}");
        }
    }
}
