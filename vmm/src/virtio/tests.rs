//! The devices against virtio-queue's mock split queues: well-formed chains are served,
//! malformed ones are returned unused without harm.

use std::sync::mpsc;
use std::sync::Arc;

use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::*;

const BUFFERS: u64 = 0x10000;

thread_local! {
    /// Where the mock puts the used ring (the same for every 16-entry queue at 0).
    static USED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40000)]).expect("memory")
}

fn desc(addr: u64, len: u32, writable: bool) -> RawDescriptor {
    let flags = if writable { VRING_DESC_F_WRITE as u16 } else { 0 };
    RawDescriptor::from(SplitDescriptor::new(addr, len, flags, 0))
}

/// The same, continued by descriptor `next`.
fn linked(addr: u64, len: u32, writable: bool, next: u16) -> RawDescriptor {
    let flags = VRING_DESC_F_NEXT as u16 | if writable { VRING_DESC_F_WRITE as u16 } else { 0 };
    RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
}

/// A queue over `mem` holding one chain of `descs`.
fn queue_with(
    mem: &GuestMemoryMmap,
    descs: &[RawDescriptor],
) -> (Arc<DeviceQueue>, Arc<Interrupt>) {
    let mock = MockSplitQueue::create(mem, GuestAddress(0), 16);
    USED.with(|u| u.set(mock.used_addr().0));
    mock.add_desc_chains(descs, 0).expect("chain");
    let queue: Queue = mock.create_queue().expect("queue");
    let interrupt = Arc::new(Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).expect("eventfd")));
    (Arc::new(DeviceQueue::new(queue, mem.clone(), interrupt.clone())), interrupt)
}

/// The used ring's entries: (head, len).
fn used(mem: &GuestMemoryMmap) -> Vec<(u32, u32)> {
    let base = USED.with(|u| u.get());
    let idx: u16 = mem.read_obj(GuestAddress(base + 2)).expect("used idx");
    (0..u64::from(idx))
        .map(|i| {
            let at = base + 4 + i * 8;
            (
                mem.read_obj(GuestAddress(at)).expect("id"),
                mem.read_obj(GuestAddress(at + 4)).expect("len"),
            )
        })
        .collect()
}

#[test]
fn rng_fills_the_buffer_and_interrupts() {
    let mem = memory();
    let (queue, interrupt) = queue_with(&mem, &[desc(BUFFERS, 64, true)]);
    let mut rng = rng::Rng::default();
    rng.activate(VERSION_1, vec![queue]).expect("activates");
    rng.notify(0);
    assert_eq!(used(&mem), vec![(0, 64)]);
    assert_eq!(interrupt.status() & 1, 1);
    let mut bytes = [0u8; 64];
    mem.read_slice(&mut bytes, GuestAddress(BUFFERS)).expect("reads");
    assert_ne!(bytes, [0u8; 64], "random bytes were written");
}

#[test]
fn malformed_chains_are_returned_unused() {
    let mem = memory();
    // A buffer beyond guest memory.
    let (queue, _) = queue_with(&mem, &[desc(0x3_0000_0000, 64, true)]);
    assert_eq!(queue.pop_request(0), None);
    assert_eq!(used(&mem), vec![(0, 0)]);

    // A readable descriptor after a writable one.
    let mem = memory();
    let (queue, _) =
        queue_with(&mem, &[linked(BUFFERS, 16, true, 1), desc(BUFFERS + 16, 16, false)]);
    assert_eq!(queue.pop_request(64), None);
    assert_eq!(used(&mem), vec![(0, 0)]);

    // More to read than the device accepts.
    let mem = memory();
    let (queue, _) = queue_with(&mem, &[desc(BUFFERS, 4096, false)]);
    assert_eq!(queue.pop_request(1024), None);
    assert_eq!(used(&mem), vec![(0, 0)]);

    // A buffer that wraps around the address space.
    let mem = memory();
    let (queue, _) = queue_with(&mem, &[desc(u64::MAX - 8, 64, false)]);
    assert_eq!(queue.pop_request(1024), None);

    // A chain that loops on itself ends (virtio-queue bounds a chain by the queue size).
    let mem = memory();
    let (queue, _) = queue_with(&mem, &[linked(BUFFERS, 16, false, 0)]);
    assert!(queue.pop_request(1 << 20).is_none_or(|r| r.readable.len() <= 16 * 16));
}

struct Channel {
    sent: mpsc::Sender<Vec<u8>>,
    incoming: Option<mpsc::Receiver<Vec<u8>>>,
}

impl net::NetBackend for Channel {
    fn send(&mut self, frame: &[u8]) {
        let _ = self.sent.send(frame.to_vec());
    }
    fn take_receiver(&mut self) -> Option<mpsc::Receiver<Vec<u8>>> {
        self.incoming.take()
    }
}

#[test]
fn net_sends_frames_without_their_header_and_receives_into_posted_buffers() {
    let (sent, from_guest) = mpsc::channel();
    let (to_guest, incoming) = mpsc::channel();
    let mut device = net::NetDevice::new(
        [2, 0, 0, 0, 0, 1],
        Box::new(Channel { sent, incoming: Some(incoming) }),
    );
    assert_eq!(device.config(), vec![2, 0, 0, 0, 0, 1]);

    let mem = memory();
    let frame: Vec<u8> = (0..60).collect();
    let mut packet = vec![0u8; 12];
    packet.extend_from_slice(&frame);
    mem.write_slice(&packet, GuestAddress(BUFFERS)).expect("writes");
    let (tx, _) = queue_with(&mem, &[desc(BUFFERS, packet.len() as u32, false)]);
    let rx_mem = memory();
    let (rx, _) = queue_with(&rx_mem, &[desc(BUFFERS, 1526, true)]);
    device.activate(VERSION_1, vec![rx, tx]).expect("activates");

    device.notify(1);
    assert_eq!(from_guest.recv_timeout(std::time::Duration::from_secs(5)).expect("a frame"), frame);
    assert_eq!(used(&mem), vec![(0, 0)]);

    to_guest.send(b"frame for the guest".to_vec()).expect("sends");
    device.notify(0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while used(&rx_mem).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(used(&rx_mem), vec![(0, 12 + 19)]);
    let mut got = vec![0u8; 12 + 19];
    rx_mem.read_slice(&mut got, GuestAddress(BUFFERS)).expect("reads");
    assert_eq!(&got[12..], b"frame for the guest");
    assert_eq!(got[10], 1, "num_buffers");
    device.reset();
}

#[test]
fn vsock_headers_round_trip() {
    let h = vsock::Header {
        src_cid: 3,
        dst_cid: 2,
        src_port: 5000,
        dst_port: 1234,
        len: 7,
        type_: 1,
        op: 5,
        flags: 0,
        buf_alloc: 65536,
        fwd_cnt: 9,
    };
    assert_eq!(vsock::Header::parse(&h.encode()), Some(h));
    assert_eq!(vsock::Header::parse(&[0u8; 10]), None, "a short header is refused");
}

#[test]
fn the_transport_refuses_a_driver_without_version_1() {
    use crate::machine::bus::BusDevice;
    let mem = memory();
    let interrupt = Arc::new(Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).expect("eventfd")));
    let mut t = mmio::MmioTransport::new(Box::new(rng::Rng::default()), mem, interrupt);
    let read = |t: &mut mmio::MmioTransport, offset: u64| {
        let mut b = [0u8; 4];
        t.read(offset, &mut b);
        u32::from_le_bytes(b)
    };
    assert_eq!(read(&mut t, 0), 0x7472_6976);
    assert_eq!(read(&mut t, 4), 2);
    assert_eq!(read(&mut t, 8), 4);
    t.write(0x70, &3u32.to_le_bytes()); // ACKNOWLEDGE | DRIVER
    t.write(0x70, &11u32.to_le_bytes()); // + FEATURES_OK, with no features accepted
    assert_eq!(read(&mut t, 0x70) & 8, 0, "FEATURES_OK is refused without VERSION_1");
    t.write(0x70, &0u32.to_le_bytes());
    assert_eq!(read(&mut t, 0x70), 0, "reset");
    t.write(0x70, &3u32.to_le_bytes());
    t.write(0x24, &1u32.to_le_bytes());
    t.write(0x20, &1u32.to_le_bytes()); // VERSION_1 (bit 32)
    t.write(0x70, &11u32.to_le_bytes());
    assert_eq!(read(&mut t, 0x70) & 8, 8);
    // DRIVER_OK with no queue set up: the device needs a reset, it is not activated.
    t.write(0x70, &15u32.to_le_bytes());
    assert_ne!(read(&mut t, 0x70) & 64, 0);
}

/// Waits (on the device's own thread) until `n` chains are used.
fn used_at_least(mem: &GuestMemoryMmap, n: usize) -> Vec<(u32, u32)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while used(mem).len() < n && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    used(mem)
}

/// A block request's 16-byte header at `at`.
fn blk_header(mem: &GuestMemoryMmap, at: u64, kind: u32, sector: u64) {
    let mut header = [0u8; 16];
    header[0..4].copy_from_slice(&kind.to_le_bytes());
    header[8..16].copy_from_slice(&sector.to_le_bytes());
    mem.write_slice(&header, GuestAddress(at)).expect("header");
}

#[test]
fn blk_serves_chains_from_the_queue_and_returns_broken_ones_unused() {
    use virtio_bindings::virtio_blk::{VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("disk.img");
    std::fs::File::create(&path).and_then(|f| f.set_len(64 << 10)).expect("disk");
    let mem = memory();
    // Chain 0 (descriptors 0-2): write 512 bytes of 0x5a at sector 3.
    blk_header(&mem, BUFFERS, VIRTIO_BLK_T_OUT, 3);
    mem.write_slice(&[0x5a; 512], GuestAddress(BUFFERS + 0x1000)).expect("data");
    // Chain 1 (3-5): read them back into another buffer.
    blk_header(&mem, BUFFERS + 0x3000, VIRTIO_BLK_T_IN, 3);
    // Chain 2 (6): a header and no room for the status: used, nothing written.
    blk_header(&mem, BUFFERS + 0x5000, VIRTIO_BLK_T_IN, 0);
    // Chain 3 (7-8): a read one sector past the end: an I/O error in the status byte.
    blk_header(&mem, BUFFERS + 0x6000, VIRTIO_BLK_T_IN, 128);
    // Chain 4 (9-10): a header cut short (8 bytes): an I/O error too.
    // Chain 5 (11): a buffer outside guest memory: returned unused.
    let (queue, interrupt) = queue_with(
        &mem,
        &[
            linked(BUFFERS, 16, false, 1),
            linked(BUFFERS + 0x1000, 512, false, 2),
            desc(BUFFERS + 0x2000, 1, true),
            linked(BUFFERS + 0x3000, 16, false, 4),
            linked(BUFFERS + 0x4000, 512, true, 5),
            desc(BUFFERS + 0x4200, 1, true),
            desc(BUFFERS + 0x5000, 16, false),
            linked(BUFFERS + 0x6000, 16, false, 8),
            desc(BUFFERS + 0x7000, 513, true),
            linked(BUFFERS + 0x8000, 8, false, 10),
            desc(BUFFERS + 0x8100, 1, true),
            desc(0x4_0000_0000, 16, false),
        ],
    );
    let mut blk = blk::BlkDevice::new(&path, "cairn-data").expect("device");
    blk.activate(VERSION_1, vec![queue]).expect("activates");
    blk.notify(0);
    let used = used_at_least(&mem, 6);
    assert_eq!(used, vec![(0, 1), (3, 513), (6, 0), (7, 1), (9, 1), (11, 0)]);
    assert_eq!(interrupt.status() & 1, 1);
    let byte = |at: u64| mem.read_obj::<u8>(GuestAddress(at)).expect("reads");
    assert_eq!(byte(BUFFERS + 0x2000), 0, "the write's status is OK");
    let mut back = [0u8; 512];
    mem.read_slice(&mut back, GuestAddress(BUFFERS + 0x4000)).expect("reads");
    assert_eq!(back, [0x5a; 512], "what was written reads back");
    assert_eq!(byte(BUFFERS + 0x4200), 0, "the read's status is OK");
    assert_eq!(byte(BUFFERS + 0x7000 + 512), 1, "past the end: VIRTIO_BLK_S_IOERR");
    assert_eq!(byte(BUFFERS + 0x8100), 1, "a short header: VIRTIO_BLK_S_IOERR");
    let file = std::fs::read(&path).expect("the disk");
    assert_eq!(&file[3 * 512..4 * 512], &[0x5a; 512][..]);
    blk.reset();
}
