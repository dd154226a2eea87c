//! TCP through the NAT. The guest's SYN to any destination starts a task that connects to the
//! real destination on the host, and the SYN is held until it is known: connected, a smoltcp
//! socket listens on exactly that destination and the SYN is replayed to it, so smoltcp
//! completes the handshake as that address; refused or timed out, the SYN is replayed with no
//! one listening and smoltcp answers it with a reset, so the guest's connect fails as it would
//! against the host itself (a port probe such as `nc -z host.docker.internal 5432` says closed;
//! slirp and VPNKit do the same). Bytes then flow through two bounded channels, and each side
//! waits when the other is full (smoltcp's window closes towards the guest, the task stops
//! reading towards the host). A FIN on either side is passed on as a FIN on the other.
//!
//! A forwarded port works the other way round: the host connection is already there, and a
//! smoltcp socket connects from the gateway into the guest; the copying is the same.

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::IpListenEndpoint;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, Notify};

/// A flow: the guest's end and the destination it dialled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub guest: SocketAddrV4,
    pub visible: SocketAddrV4,
}

/// Chunks in flight per direction, and their size.
const CHANNEL_CHUNKS: usize = 4;
const CHUNK: usize = 64 * 1024;
/// A listening socket whose SYN never arrived (it failed its checksum) is dropped after this.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Flow {
    socket: SocketHandle,
    /// The host connection's outcome, until it is known.
    connected: Option<oneshot::Receiver<bool>>,
    /// The guest's SYN, held until the host connection's outcome is known, and where its
    /// socket will listen.
    held: Option<(Vec<u8>, IpListenEndpoint)>,
    /// Towards the host; dropped when the guest has sent its FIN.
    to_host: Option<mpsc::Sender<Vec<u8>>>,
    /// From the host; gone when the host has closed its side.
    from_host: Option<mpsc::Receiver<Vec<u8>>>,
    /// Host bytes smoltcp has not taken yet.
    pending: Vec<u8>,
    established: bool,
    closing: bool,
    /// Ended cleanly: everything the guest sent is on its way to the host.
    finished: bool,
    opened: Instant,
    task: tokio::task::JoinHandle<()>,
}

/// How long the host side of a flow that ended cleanly may take to write out its last bytes.
const LINGER: Duration = Duration::from_secs(10);

impl Drop for Flow {
    fn drop(&mut self) {
        if !self.finished {
            return self.task.abort();
        }
        // Both FINs were exchanged: the host side finishes writing on its own, within bounds
        // (aborting a task that is already done does nothing).
        let abort = self.task.abort_handle();
        tokio::spawn(async move {
            tokio::time::sleep(LINGER).await;
            abort.abort();
        });
    }
}

/// What a pump of the flows saw.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pumped {
    pub refused: u64,
    /// Held SYNs whose outcome is known, for the interface to take now: a socket listens for
    /// each that connected, none for those refused (smoltcp resets them).
    pub replay: Vec<Vec<u8>>,
}

/// What became of a SYN from the guest.
#[derive(Debug, PartialEq, Eq)]
pub enum Syn {
    /// A new flow: held until the host connection's outcome is known.
    New,
    /// A retransmission while the host connection is on its way: dropped, the held one will do.
    Waiting,
    /// A retransmission after it connected: for the interface, whose socket listens.
    Pass(Vec<u8>),
    /// The flow limit is reached: dropped.
    OverLimit,
}

#[derive(Debug)]
pub struct Flows {
    flows: HashMap<Key, Flow>,
    limit: usize,
    buffer: usize,
    connect_timeout: Duration,
    /// Woken by the host tasks when there is something to move.
    wake: Arc<Notify>,
}

/// The host side of a flow the guest opened: connect, then copy both ways.
async fn dial(
    real: SocketAddr,
    timeout: Duration,
    connected: oneshot::Sender<bool>,
    to_host: mpsc::Receiver<Vec<u8>>,
    from_host: mpsc::Sender<Vec<u8>>,
    wake: Arc<Notify>,
) {
    let stream = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(real)).await {
        Ok(Ok(stream)) => stream,
        outcome => {
            if let Ok(Err(e)) = outcome {
                tracing::debug!(%real, error = %e, "the host refused a guest connection");
            }
            let _ = connected.send(false);
            wake.notify_one();
            return;
        }
    };
    let _ = connected.send(true);
    wake.notify_one();
    copy(HostConn::from(stream), to_host, from_host, wake).await;
}

/// The host end of a flow: its two halves.
pub struct HostConn {
    reader: Box<dyn AsyncRead + Send + Unpin>,
    writer: Box<dyn AsyncWrite + Send + Unpin>,
}

impl std::fmt::Debug for HostConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostConn")
    }
}

impl From<tokio::net::TcpStream> for HostConn {
    fn from(stream: tokio::net::TcpStream) -> HostConn {
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.into_split();
        HostConn { reader: Box::new(reader), writer: Box::new(writer) }
    }
}

/// Copies between a host connection and a flow's channels until both directions are done.
async fn copy(
    stream: HostConn,
    mut to_host: mpsc::Receiver<Vec<u8>>,
    from_host: mpsc::Sender<Vec<u8>>,
    wake: Arc<Notify>,
) {
    let HostConn { mut reader, mut writer } = stream;
    let reading = async {
        let mut buffer = vec![0u8; CHUNK];
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if from_host.send(buffer[..n].to_vec()).await.is_err() {
                        break;
                    }
                    wake.notify_one();
                }
            }
        }
        drop(from_host);
        wake.notify_one();
    };
    let writing = async {
        while let Some(chunk) = to_host.recv().await {
            if writer.write_all(&chunk).await.is_err() {
                break;
            }
            wake.notify_one();
        }
        let _ = writer.shutdown().await;
    };
    tokio::join!(reading, writing);
}

impl Flows {
    pub fn new(limits: &super::Limits, wake: Arc<Notify>) -> Flows {
        Flows {
            flows: HashMap::new(),
            limit: limits.tcp_flows,
            buffer: limits.tcp_buffer,
            connect_timeout: limits.connect_timeout,
            wake,
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    fn socket(&self) -> tcp::Socket<'static> {
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; self.buffer]),
            tcp::SocketBuffer::new(vec![0; self.buffer]),
        );
        socket.set_nagle_enabled(false);
        socket
    }

    /// Tracks a flow whose socket is `handle`; `host` runs its host side on the channels.
    fn insert<F, Fut>(
        &mut self,
        key: Key,
        handle: SocketHandle,
        connected: Option<oneshot::Receiver<bool>>,
        host: F,
    ) where
        F: FnOnce(mpsc::Receiver<Vec<u8>>, mpsc::Sender<Vec<u8>>, Arc<Notify>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (to_host, to_host_rx) = mpsc::channel(CHANNEL_CHUNKS);
        let (from_host_tx, from_host) = mpsc::channel(CHANNEL_CHUNKS);
        let task = tokio::spawn(host(to_host_rx, from_host_tx, self.wake.clone()));
        let flow = Flow {
            socket: handle,
            connected,
            held: None,
            to_host: Some(to_host),
            from_host: Some(from_host),
            pending: Vec::new(),
            established: false,
            closing: false,
            finished: false,
            opened: Instant::now(),
            task,
        };
        self.flows.insert(key, flow);
    }

    /// A SYN from the guest (`frame`): starts the host connection and holds the SYN until it
    /// is known, unless the flow exists (a retransmitted SYN).
    pub fn on_syn(
        &mut self,
        key: Key,
        real: SocketAddr,
        frame: Vec<u8>,
        sockets: &mut SocketSet<'static>,
    ) -> Syn {
        if let Some(flow) = self.flows.get(&key) {
            return if flow.held.is_some() { Syn::Waiting } else { Syn::Pass(frame) };
        }
        if self.flows.len() >= self.limit {
            return Syn::OverLimit;
        }
        let endpoint =
            IpListenEndpoint { addr: Some((*key.visible.ip()).into()), port: key.visible.port() };
        let handle = sockets.add(self.socket());
        let (connected_tx, connected) = oneshot::channel();
        let timeout = self.connect_timeout;
        self.insert(key, handle, Some(connected), move |to_host, from_host, wake| {
            dial(real, timeout, connected_tx, to_host, from_host, wake)
        });
        if let Some(flow) = self.flows.get_mut(&key) {
            flow.held = Some((frame, endpoint));
        }
        Syn::New
    }

    /// A connection to a forwarded port: `stream` (accepted on the host) is joined to a new
    /// connection from `from` (the gateway, a port of its own) to `guest`. False when the
    /// flow limit is reached or the socket cannot connect.
    pub fn inbound(
        &mut self,
        stream: HostConn,
        from: SocketAddrV4,
        guest: SocketAddrV4,
        iface: &mut smoltcp::iface::Interface,
        sockets: &mut SocketSet<'static>,
    ) -> bool {
        let key = Key { guest, visible: from };
        if self.flows.len() >= self.limit || self.flows.contains_key(&key) {
            return false;
        }
        let mut socket = self.socket();
        let remote = (smoltcp::wire::IpAddress::from(*guest.ip()), guest.port());
        let local = (smoltcp::wire::IpAddress::from(*from.ip()), from.port());
        if let Err(e) = socket.connect(iface.context(), remote, local) {
            tracing::debug!(%guest, error = %e, "connecting a forwarded port into the guest");
            return false;
        }
        let handle = sockets.add(socket);
        self.insert(key, handle, None, move |to_host, from_host, wake| {
            copy(stream, to_host, from_host, wake)
        });
        true
    }

    /// Resets the flows `which` picks (their sockets close; the next pump forgets them).
    pub fn abort_where(&mut self, which: impl Fn(&Key) -> bool, sockets: &mut SocketSet<'static>) {
        for (key, flow) in &self.flows {
            if which(key) {
                sockets.get_mut::<tcp::Socket>(flow.socket).abort();
            }
        }
    }

    /// Whether a flow uses the gateway's port `port` (for choosing a free one).
    pub fn uses(&self, from: SocketAddrV4) -> bool {
        self.flows.keys().any(|key| key.visible == from)
    }

    /// Moves bytes between the sockets and the host tasks, passes on FINs and resets, and
    /// forgets the flows that are over.
    pub fn pump(&mut self, sockets: &mut SocketSet<'static>) -> Pumped {
        let mut pumped = Pumped::default();
        let timeout = self.connect_timeout;
        self.flows.retain(|_, flow| {
            let socket = sockets.get_mut::<tcp::Socket>(flow.socket);
            let keep = pump_one(flow, socket, timeout, &mut pumped);
            if !keep {
                sockets.remove(flow.socket);
            }
            keep
        });
        pumped
    }
}

/// One flow's step; false when it is over.
fn pump_one(
    flow: &mut Flow,
    socket: &mut tcp::Socket,
    timeout: Duration,
    pumped: &mut Pumped,
) -> bool {
    use tcp::State;
    if let Some(connected) = &mut flow.connected {
        let outcome = match connected.try_recv() {
            Ok(up) => Some(up),
            Err(oneshot::error::TryRecvError::Empty) => {
                (flow.opened.elapsed() > timeout).then_some(false)
            }
            Err(oneshot::error::TryRecvError::Closed) => Some(false),
        };
        match outcome {
            Some(true) => {
                flow.connected = None;
                if let Some((syn, endpoint)) = flow.held.take() {
                    if socket.listen(endpoint).is_err() {
                        return false;
                    }
                    pumped.replay.push(syn);
                }
            }
            Some(false) => {
                pumped.refused += 1;
                // Replayed with no one listening: smoltcp resets it.
                pumped.replay.extend(flow.held.take().map(|(syn, _)| syn));
                socket.abort();
                return false;
            }
            // Still connecting: the socket does not listen yet.
            None if flow.held.is_some() => return true,
            None => {}
        }
    }
    match socket.state() {
        State::Listen if flow.opened.elapsed() > LISTEN_TIMEOUT => return false,
        // A forwarded connection the guest never answered.
        State::SynSent if flow.opened.elapsed() > timeout => return false,
        State::Closed => return false,
        // Synchronized, whatever came since: a burst can take a flow past Established (to
        // CloseWait, with the guest's data and FIN) between two looks.
        State::Listen | State::SynSent | State::SynReceived => {}
        _ => flow.established = true,
    }
    let over = socket.state() == State::TimeWait;
    // Guest to host, while the host side has room.
    if let Some(to_host) = &flow.to_host {
        while socket.can_recv() && to_host.capacity() > 0 {
            let chunk = socket.recv(|data| {
                let n = data.len().min(CHUNK);
                (n, data[..n].to_vec())
            });
            match chunk {
                Ok(chunk) if !chunk.is_empty() => {
                    if to_host.try_send(chunk).is_err() {
                        break;
                    }
                }
                _ => break,
            }
        }
        if flow.established && !socket.may_recv() && !socket.can_recv() {
            // The guest's FIN: the host connection's write side shuts down.
            flow.to_host = None;
        }
    }
    if over {
        // The guest's last bytes can arrive with its FIN after ours: they go first.
        if socket.can_recv() {
            return true;
        }
        flow.finished = true;
        return false;
    }
    // Host to guest, while smoltcp has room.
    while socket.can_send() {
        if flow.pending.is_empty() {
            let Some(from_host) = &mut flow.from_host else { break };
            match from_host.try_recv() {
                Ok(chunk) => flow.pending = chunk,
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    flow.from_host = None;
                    break;
                }
            }
        }
        match socket.send_slice(&flow.pending) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                flow.pending.drain(..n);
            }
        }
    }
    if flow.from_host.is_none() && flow.pending.is_empty() && !flow.closing && flow.established {
        socket.close();
        flow.closing = true;
    }
    true
}
