//! virtio-vsock with Firecracker's host-side convention: a guest connection to the host (CID
//! 2) on port P is a connection to the unix socket `PATH_P`; a host program that connects to
//! `PATH` and writes `CONNECT P\n` reaches the guest's port P (and reads `OK <port>\n` first).
//!
//! The guest's packets are handled on the thread that serves queue notifications, which every
//! device shares, so nothing there may wait on a host peer: a connection to the host is made
//! on a thread of its own, and each stream has a reader (host side into RW packets, within the
//! guest's credit) and a writer (the guest's bytes onto the host socket, from a queue that the
//! guest's credit bounds). A host peer that stops reading stalls its own stream, nothing else.

mod header;

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

pub use header::Header;
use header::*;

use super::{DeviceQueue, VirtioDevice, VERSION_1};
use crate::machine::bus::lock;
use crate::machine::Error;

/// What we tell the guest it may have in flight towards us per stream: its bytes wait in the
/// stream's queue until the stream's writer has written them to the host socket, and only
/// then count as forwarded, so this bounds the queue.
const BUF_ALLOC: u32 = 256 * 1024;
const MAX_PAYLOAD: usize = 64 * 1024;
/// Packets waiting for receive buffers, beyond which host readers wait.
const MAX_OUTBOX: usize = 256;
/// Streams at once; a request beyond is reset.
pub const MAX_STREAMS: usize = 256;

/// A stream, keyed by (host port, guest port).
#[derive(Debug)]
struct Stream {
    /// None while the connection to the host is being made.
    socket: Option<UnixStream>,
    /// Bytes we sent the guest, and the guest's last buffer space and count consumed.
    sent: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// Bytes from the guest written to the socket.
    forwarded: u32,
    /// Host-initiated, waiting for the guest's RESPONSE.
    connecting: bool,
    /// Bytes for the host socket, written by the stream's writer: the guest's, within its
    /// credit, and the `OK` line of a host-initiated stream.
    pending: VecDeque<u8>,
    /// How many of the first pending bytes are that `OK` line (not the guest's to count).
    ok_line: usize,
}

impl Stream {
    fn new(socket: Option<UnixStream>, connecting: bool) -> Stream {
        Stream {
            socket,
            sent: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            forwarded: 0,
            connecting,
            pending: VecDeque::new(),
            ok_line: 0,
        }
    }

    fn shut(&self) {
        if let Some(socket) = &self.socket {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
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
                if streams.len() >= MAX_STREAMS {
                    push(&self.shared, self.header(key.0, key.1, OP_RST, 0).encode());
                } else {
                    let mut stream = Stream::new(None, false);
                    (stream.peer_buf_alloc, stream.peer_fwd_cnt) = (h.buf_alloc, h.fwd_cnt);
                    streams.insert(key, stream);
                    let target = PathBuf::from(format!("{}_{}", self.path.display(), h.dst_port));
                    connect_to_host(self.shared.clone(), self.cid, key, target);
                }
            }
            OP_RESPONSE => {
                if let Some(stream) = streams.get_mut(&key) {
                    if stream.connecting {
                        stream.connecting = false;
                        let ok = format!("OK {}\n", key.0);
                        stream.ok_line = ok.len();
                        stream.pending.extend(ok.bytes());
                        let socket = stream.socket.as_ref().map(UnixStream::try_clone);
                        if let Some(Ok(socket)) = socket {
                            start_stream(self.shared.clone(), self.cid, key, socket);
                        }
                    }
                }
            }
            OP_RW => {
                let fits = streams.get_mut(&key).map(|stream| {
                    let fits = stream.pending.len() + payload.len() <= BUF_ALLOC as usize + 64;
                    if fits {
                        stream.pending.extend(payload);
                    }
                    fits
                });
                if fits == Some(false) {
                    // More than the credit we gave: the guest broke the protocol.
                    if let Some(stream) = streams.remove(&key) {
                        stream.shut();
                    }
                    push(&self.shared, self.header(key.0, key.1, OP_RST, 0).encode());
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
                    stream.shut();
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
        {
            let mut streams = lock(&shared.streams);
            if streams.len() >= MAX_STREAMS {
                let _ = (&socket).write_all(b"error: too many streams\n");
                continue;
            }
            streams.insert((host_port, guest_port), Stream::new(Some(socket), true));
        }
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

/// Connects a guest-initiated stream to the host's socket `target`, on a thread of its own
/// (a listener with a full backlog would block); answers the guest when it is done.
fn connect_to_host(shared: Arc<Shared>, cid: u64, key: (u32, u32), target: PathBuf) {
    let thread_shared = shared.clone();
    let spawned = std::thread::Builder::new().name("vsock-connect".into()).spawn(move || {
        let shared = thread_shared;
        let reply = |op| Header {
            src_cid: HOST_CID,
            dst_cid: cid,
            src_port: key.0,
            dst_port: key.1,
            type_: TYPE_STREAM,
            op,
            buf_alloc: BUF_ALLOC,
            ..Header::default()
        };
        let connected = UnixStream::connect(&target).and_then(|s| Ok((s.try_clone()?, s)));
        let mut streams = lock(&shared.streams);
        match (connected, streams.get_mut(&key)) {
            (Ok((reader, socket)), Some(stream)) => {
                stream.socket = Some(socket);
                drop(streams);
                push(&shared, reply(OP_RESPONSE).encode());
                start_stream(shared.clone(), cid, key, reader);
            }
            // The guest gave up meanwhile: nothing to answer.
            (Ok(_), None) => {}
            (Err(_), _) => {
                streams.remove(&key);
                drop(streams);
                push(&shared, reply(OP_RST).encode());
            }
        }
        shared.changed.notify_all();
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "starting a vsock connection thread");
        lock(&shared.streams).remove(&key);
    }
}

/// Starts a stream's reader and writer threads.
fn start_stream(shared: Arc<Shared>, cid: u64, key: (u32, u32), socket: UnixStream) {
    match socket.try_clone() {
        Ok(writer) => spawn_writer(shared.clone(), cid, key, writer),
        Err(e) => tracing::warn!(error = %e, "cloning a vsock stream's socket"),
    }
    spawn_reader(shared, cid, key, socket);
}

/// Writes what the guest sent on a stream to its host socket, outside any lock, and tells the
/// guest how much has been consumed (its credit comes back only as the host peer reads).
fn spawn_writer(shared: Arc<Shared>, cid: u64, key: (u32, u32), mut socket: UnixStream) {
    let spawned = std::thread::Builder::new().name("vsock-write".into()).spawn(move || loop {
        let (chunk, ours) = {
            let mut streams = lock(&shared.streams);
            loop {
                match streams.get_mut(&key) {
                    None => return,
                    Some(s) if !s.pending.is_empty() => {
                        let n = s.pending.len().min(MAX_PAYLOAD);
                        // The OK line of a host-initiated stream is ours, not the guest's.
                        let ours = std::mem::take(&mut s.ok_line);
                        break (s.pending.drain(..n).collect::<Vec<u8>>(), ours);
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
        let written = socket.write_all(&chunk);
        let mut streams = lock(&shared.streams);
        let Some(stream) = streams.get_mut(&key) else { return };
        let mut h = Header {
            src_cid: HOST_CID,
            dst_cid: cid,
            src_port: key.0,
            dst_port: key.1,
            type_: TYPE_STREAM,
            buf_alloc: BUF_ALLOC,
            ..Header::default()
        };
        if written.is_err() {
            streams.remove(&key);
            drop(streams);
            h.op = OP_RST;
            push(&shared, h.encode());
            return;
        }
        let guest_bytes = chunk.len().saturating_sub(ours);
        stream.forwarded = stream.forwarded.wrapping_add(guest_bytes as u32);
        h.op = OP_CREDIT_UPDATE;
        h.fwd_cnt = stream.forwarded;
        drop(streams);
        push(&shared, h.encode());
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "starting a vsock stream's writer");
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
        virtio_bindings::virtio_ids::VIRTIO_ID_VSOCK
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
    fn activate(&mut self, _features: u64, queues: Vec<Arc<DeviceQueue>>) -> Result<(), Error> {
        if queues.len() != 3 {
            return Err(Error::Queues { device: "virtio-vsock", wanted: 3, got: queues.len() });
        }
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let generation = self.generation.clone();
        let (shared, rx) = (self.shared.clone(), queues[0].clone());
        std::thread::Builder::new()
            .name("vsock-rx".into())
            .spawn(move || deliver(shared, rx, generation))
            .map_err(|source| Error::Thread { thread: "the vsock receive thread", source })?;
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
            stream.shut();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const GUEST: u64 = 3;

    fn packet(op: u16, src_port: u32, dst_port: u32, payload: &[u8]) -> Vec<u8> {
        let h = Header {
            src_cid: GUEST,
            dst_cid: HOST_CID,
            src_port,
            dst_port,
            len: payload.len() as u32,
            type_: TYPE_STREAM,
            op,
            buf_alloc: BUF_ALLOC,
            ..Header::default()
        };
        let mut p = h.encode();
        p.extend_from_slice(payload);
        p
    }

    /// Waits for a packet to the guest's `port` with `op` in the outbox.
    fn sent(device: &VsockDevice, port: u32, op: u16) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let found = lock(&device.shared.outbox)
                .iter()
                .filter_map(|p| Header::parse(p))
                .any(|h| h.dst_port == port && h.op == op);
            if found {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn a_host_peer_that_never_reads_stalls_only_its_own_stream() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("v.sock");
        let mut device = VsockDevice::new(GUEST, &path).expect("device");
        let stuck = UnixListener::bind(format!("{}_5000", path.display())).expect("bind");
        let live = UnixListener::bind(format!("{}_6000", path.display())).expect("bind");
        device.handle(&packet(OP_REQUEST, 100, 5000, &[]));
        assert!(sent(&device, 100, OP_RESPONSE), "connected to the stuck peer");
        let (_held, _) = stuck.accept().expect("accepted");
        // The guest fills its whole credit; the stuck peer reads none of it. Every packet is
        // handled at once: the bytes wait in the stream's queue, not on this thread.
        let started = Instant::now();
        for _ in 0..(BUF_ALLOC as usize / MAX_PAYLOAD) {
            device.handle(&packet(OP_RW, 100, 5000, &vec![1u8; MAX_PAYLOAD]));
        }
        assert!(started.elapsed() < Duration::from_secs(2), "the notifier thread waited");
        // Another stream still works.
        device.handle(&packet(OP_REQUEST, 200, 6000, &[]));
        assert!(sent(&device, 200, OP_RESPONSE));
        let (mut peer, _) = live.accept().expect("accepted");
        device.handle(&packet(OP_RW, 200, 6000, b"hello"));
        let mut got = [0u8; 5];
        peer.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        peer.read_exact(&mut got).expect("the other stream's bytes arrive");
        assert_eq!(&got, b"hello");
        assert!(sent(&device, 200, OP_CREDIT_UPDATE), "its credit comes back as the peer reads");
        // A guest that goes on writing past its credit (the stuck peer's socket buffer full,
        // the stream's queue full) gets its stream reset, however fast it writes.
        for _ in 0..64 {
            device.handle(&packet(OP_RW, 100, 5000, &vec![1u8; MAX_PAYLOAD]));
        }
        assert!(sent(&device, 100, OP_RST));
    }

    #[test]
    fn a_refused_host_connection_is_a_reset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("v.sock");
        let mut device = VsockDevice::new(GUEST, &path).expect("device");
        device.handle(&packet(OP_REQUEST, 100, 7000, &[]));
        assert!(sent(&device, 100, OP_RST));
        assert!(lock(&device.shared.streams).is_empty());
    }
}
