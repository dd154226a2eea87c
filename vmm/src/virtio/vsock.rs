//! virtio-vsock with Firecracker's host-side convention: a guest connection to the host (CID
//! 2) on port P is a connection to the unix socket `PATH_P`; a host program that connects to
//! `PATH` and writes `CONNECT P\n` reaches the guest's port P (and reads `OK <port>\n` first).
//! Each stream has a thread that reads the host side and sends RW packets within the guest's
//! credit; the guest's packets are handled on the vCPU that notified.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::{DeviceQueue, VirtioDevice, VERSION_1};
use crate::machine::bus::lock;

const HOST_CID: u64 = 2;
const HEADER: usize = 44;
const TYPE_STREAM: u16 = 1;
const OP_REQUEST: u16 = 1;
const OP_RESPONSE: u16 = 2;
const OP_RST: u16 = 3;
const OP_SHUTDOWN: u16 = 4;
const OP_RW: u16 = 5;
const OP_CREDIT_UPDATE: u16 = 6;
const OP_CREDIT_REQUEST: u16 = 7;
/// What we tell the guest it may have in flight towards us per stream: we write to the host
/// socket before returning the buffer, so this is only a pacing figure.
const BUF_ALLOC: u32 = 256 * 1024;
const MAX_PAYLOAD: usize = 64 * 1024;
/// Packets waiting for receive buffers, beyond which host readers wait.
const MAX_OUTBOX: usize = 256;

/// A packet header (virtio 1.2, 5.10.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub type_: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

impl Header {
    pub fn parse(b: &[u8]) -> Option<Header> {
        let b = b.get(..HEADER)?;
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or_default());
        let u16_at = |i: usize| u16::from_le_bytes(b[i..i + 2].try_into().unwrap_or_default());
        Some(Header {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER);
        b.extend_from_slice(&self.src_cid.to_le_bytes());
        b.extend_from_slice(&self.dst_cid.to_le_bytes());
        b.extend_from_slice(&self.src_port.to_le_bytes());
        b.extend_from_slice(&self.dst_port.to_le_bytes());
        b.extend_from_slice(&self.len.to_le_bytes());
        b.extend_from_slice(&self.type_.to_le_bytes());
        b.extend_from_slice(&self.op.to_le_bytes());
        b.extend_from_slice(&self.flags.to_le_bytes());
        b.extend_from_slice(&self.buf_alloc.to_le_bytes());
        b.extend_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }
}

/// A stream, keyed by (host port, guest port).
#[derive(Debug)]
struct Stream {
    socket: UnixStream,
    /// Bytes we sent the guest, and the guest's last buffer space and count consumed.
    sent: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// Bytes from the guest written to the socket.
    forwarded: u32,
    /// Host-initiated, waiting for the guest's RESPONSE.
    connecting: bool,
}

impl Stream {
    fn credit(&self) -> u32 {
        self.peer_buf_alloc.saturating_sub(self.sent.wrapping_sub(self.peer_fwd_cnt))
    }
}

#[derive(Debug, Default)]
struct Shared {
    streams: Mutex<HashMap<(u32, u32), Stream>>,
    /// Credit or state changed: host readers re-check.
    changed: Condvar,
    outbox: Mutex<VecDeque<Vec<u8>>>,
    outbox_changed: Condvar,
    next_port: Mutex<u32>,
}

/// The vsock device for guest CID `cid`, with its host side at `path`.
#[derive(Debug)]
pub struct VsockDevice {
    cid: u64,
    path: PathBuf,
    shared: Arc<Shared>,
    queues: Vec<Arc<DeviceQueue>>,
    /// Bumped on every activation and reset: the receive thread of an older one stops.
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl VsockDevice {
    /// Listens at `path` for host-initiated connections.
    pub fn new(cid: u64, path: &Path) -> std::io::Result<VsockDevice> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        let shared = Arc::new(Shared { next_port: Mutex::new(1 << 30), ..Shared::default() });
        let device = VsockDevice {
            cid,
            path: path.to_owned(),
            shared: shared.clone(),
            queues: Vec::new(),
            generation: Arc::default(),
        };
        std::thread::Builder::new()
            .name("vsock-listen".into())
            .spawn(move || accept(listener, shared, cid))?;
        Ok(device)
    }

    fn header(&self, host_port: u32, guest_port: u32, op: u16, forwarded: u32) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: self.cid,
            src_port: host_port,
            dst_port: guest_port,
            type_: TYPE_STREAM,
            op,
            buf_alloc: BUF_ALLOC,
            fwd_cnt: forwarded,
            ..Header::default()
        }
    }

    fn handle(&mut self, packet: &[u8]) {
        let Some(h) = Header::parse(packet) else { return };
        if h.type_ != TYPE_STREAM || h.src_cid != self.cid || h.dst_cid != HOST_CID {
            return;
        }
        let payload = packet.get(HEADER..).unwrap_or_default();
        let payload = &payload[..payload.len().min(h.len as usize)];
        let key = (h.dst_port, h.src_port);
        let mut streams = lock(&self.shared.streams);
        if let Some(stream) = streams.get_mut(&key) {
            stream.peer_buf_alloc = h.buf_alloc;
            stream.peer_fwd_cnt = h.fwd_cnt;
        }
        match h.op {
            OP_REQUEST if !streams.contains_key(&key) => {
                let target = format!("{}_{}", self.path.display(), h.dst_port);
                match UnixStream::connect(&target) {
                    Ok(socket) => {
                        let stream = Stream {
                            socket,
                            sent: 0,
                            peer_buf_alloc: h.buf_alloc,
                            peer_fwd_cnt: h.fwd_cnt,
                            forwarded: 0,
                            connecting: false,
                        };
                        if let Ok(reader) = stream.socket.try_clone() {
                            streams.insert(key, stream);
                            push(&self.shared, self.header(key.0, key.1, OP_RESPONSE, 0).encode());
                            spawn_reader(self.shared.clone(), self.cid, key, reader);
                        }
                    }
                    Err(_) => push(&self.shared, self.header(key.0, key.1, OP_RST, 0).encode()),
                }
            }
            OP_RESPONSE => {
                if let Some(stream) = streams.get_mut(&key) {
                    if stream.connecting {
                        stream.connecting = false;
                        let ok = format!("OK {}\n", key.0);
                        let reader = stream.socket.try_clone();
                        if stream.socket.write_all(ok.as_bytes()).is_ok() {
                            if let Ok(reader) = reader {
                                spawn_reader(self.shared.clone(), self.cid, key, reader);
                            }
                        }
                    }
                }
            }
            OP_RW => {
                let forwarded = streams.get_mut(&key).map(|stream| {
                    if stream.socket.write_all(payload).is_ok() {
                        stream.forwarded = stream.forwarded.wrapping_add(payload.len() as u32);
                    }
                    stream.forwarded
                });
                if let Some(forwarded) = forwarded {
                    // Tell the guest its data is consumed, so its credit never runs dry.
                    push(
                        &self.shared,
                        self.header(key.0, key.1, OP_CREDIT_UPDATE, forwarded).encode(),
                    );
                }
            }
            OP_CREDIT_REQUEST => {
                let forwarded = streams.get(&key).map(|s| s.forwarded);
                if let Some(forwarded) = forwarded {
                    push(
                        &self.shared,
                        self.header(key.0, key.1, OP_CREDIT_UPDATE, forwarded).encode(),
                    );
                }
            }
            OP_SHUTDOWN | OP_RST => {
                if let Some(stream) = streams.remove(&key) {
                    let _ = stream.socket.shutdown(std::net::Shutdown::Both);
                    if h.op == OP_SHUTDOWN {
                        push(&self.shared, self.header(key.0, key.1, OP_RST, 0).encode());
                    }
                }
            }
            _ => {}
        }
        drop(streams);
        self.shared.changed.notify_all();
    }
}

/// Queues a packet for the guest.
fn push(shared: &Shared, packet: Vec<u8>) {
    lock(&shared.outbox).push_back(packet);
    shared.outbox_changed.notify_all();
}

/// Host-initiated streams: `CONNECT <port>\n`, then a REQUEST to the guest.
fn accept(listener: UnixListener, shared: Arc<Shared>, cid: u64) {
    for socket in listener.incoming().flatten() {
        let _ = socket.set_read_timeout(Some(Duration::from_secs(5)));
        let mut line = String::new();
        let read = socket.try_clone().map(|s| BufReader::new(s).take(64).read_line(&mut line));
        let _ = socket.set_read_timeout(None);
        let port = line.trim().strip_prefix("CONNECT ").and_then(|p| p.parse::<u32>().ok());
        let (Ok(Ok(_)), Some(guest_port)) = (read, port) else {
            let _ = (&socket).write_all(b"error: expected CONNECT <port>\n");
            continue;
        };
        let host_port = {
            let mut next = lock(&shared.next_port);
            *next = next.wrapping_add(1).max(1 << 30);
            *next
        };
        let stream = Stream {
            socket,
            sent: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            forwarded: 0,
            connecting: true,
        };
        lock(&shared.streams).insert((host_port, guest_port), stream);
        let request = Header {
            src_cid: HOST_CID,
            dst_cid: cid,
            src_port: host_port,
            dst_port: guest_port,
            type_: TYPE_STREAM,
            op: OP_REQUEST,
            buf_alloc: BUF_ALLOC,
            ..Header::default()
        };
        push(&shared, request.encode());
    }
}

/// Reads the host side of a stream into RW packets, within the guest's credit.
fn spawn_reader(shared: Arc<Shared>, cid: u64, key: (u32, u32), mut socket: UnixStream) {
    let spawned = std::thread::Builder::new().name("vsock-stream".into()).spawn(move || {
        let mut buf = vec![0u8; MAX_PAYLOAD];
        loop {
            let credit = {
                let mut streams = lock(&shared.streams);
                loop {
                    match streams.get(&key) {
                        None => return,
                        Some(s) if s.credit() > 0 && lock(&shared.outbox).len() < MAX_OUTBOX => {
                            break s.credit()
                        }
                        Some(_) => {
                            streams = shared
                                .changed
                                .wait_timeout(streams, Duration::from_millis(200))
                                .map_or_else(|e| e.into_inner().0, |r| r.0);
                        }
                    }
                }
            };
            let want = (credit as usize).min(buf.len());
            let n = match socket.read(&mut buf[..want]) {
                Ok(0) | Err(_) => {
                    // The host side closed: the guest hears a shutdown of both directions.
                    if lock(&shared.streams).contains_key(&key) {
                        let h = Header {
                            src_cid: HOST_CID,
                            dst_cid: cid,
                            src_port: key.0,
                            dst_port: key.1,
                            type_: TYPE_STREAM,
                            op: OP_SHUTDOWN,
                            flags: 3,
                            buf_alloc: BUF_ALLOC,
                            ..Header::default()
                        };
                        push(&shared, h.encode());
                    }
                    return;
                }
                Ok(n) => n,
            };
            let mut streams = lock(&shared.streams);
            let Some(stream) = streams.get_mut(&key) else { return };
            stream.sent = stream.sent.wrapping_add(n as u32);
            let h = Header {
                src_cid: HOST_CID,
                dst_cid: cid,
                src_port: key.0,
                dst_port: key.1,
                len: n as u32,
                type_: TYPE_STREAM,
                op: OP_RW,
                buf_alloc: BUF_ALLOC,
                fwd_cnt: stream.forwarded,
                ..Header::default()
            };
            let mut packet = h.encode();
            packet.extend_from_slice(&buf[..n]);
            push(&shared, packet);
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "starting a vsock stream thread");
    }
}

/// Moves queued packets into the guest's receive buffers.
fn deliver(
    shared: Arc<Shared>,
    rx: Arc<DeviceQueue>,
    generation: Arc<std::sync::atomic::AtomicU64>,
) {
    use std::sync::atomic::Ordering;
    let mine = generation.load(Ordering::SeqCst);
    while generation.load(Ordering::SeqCst) == mine {
        let mut outbox = lock(&shared.outbox);
        if outbox.is_empty() {
            let _ = shared.outbox_changed.wait_timeout(outbox, Duration::from_millis(200));
            continue;
        }
        let Some(request) = rx.pop_request(0) else {
            drop(outbox);
            // No buffer posted: wait for the guest's notify (which wakes outbox_changed).
            let outbox = lock(&shared.outbox);
            let _ = shared.outbox_changed.wait_timeout(outbox, Duration::from_millis(50));
            continue;
        };
        let Some(packet) = outbox.pop_front() else { continue };
        drop(outbox);
        let len = rx.write(&request.writable, &packet);
        rx.complete(request.head, len);
        shared.changed.notify_all();
    }
}

impl VirtioDevice for VsockDevice {
    fn device_type(&self) -> u32 {
        19
    }
    fn features(&self) -> u64 {
        VERSION_1
    }
    fn queue_sizes(&self) -> &[u16] {
        &[256, 256, 16]
    }
    fn config(&self) -> Vec<u8> {
        self.cid.to_le_bytes().to_vec()
    }
    fn activate(&mut self, _features: u64, queues: Vec<Arc<DeviceQueue>>) -> Result<(), String> {
        if queues.len() != 3 {
            return Err("vsock has receive, transmit and event queues".into());
        }
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let generation = self.generation.clone();
        let (shared, rx) = (self.shared.clone(), queues[0].clone());
        std::thread::Builder::new()
            .name("vsock-rx".into())
            .spawn(move || deliver(shared, rx, generation))
            .map_err(|e| format!("starting the vsock receive thread: {e}"))?;
        self.queues = queues;
        Ok(())
    }
    fn notify(&mut self, queue: usize) {
        match queue {
            0 => self.shared.outbox_changed.notify_all(),
            1 => {
                let Some(tx) = self.queues.get(1).cloned() else { return };
                while let Some(request) = tx.pop_request(HEADER + MAX_PAYLOAD) {
                    self.handle(&request.readable);
                    tx.complete(request.head, 0);
                }
            }
            _ => {}
        }
    }
    fn reset(&mut self) {
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.queues.clear();
        let mut streams = lock(&self.shared.streams);
        for (_, stream) in streams.drain() {
            let _ = stream.socket.shutdown(std::net::Shutdown::Both);
        }
    }
}
