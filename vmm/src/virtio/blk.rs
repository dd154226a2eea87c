//! virtio-blk on a raw file: the engine's data disk on the native VMM. Reads, writes, flush
//! (fdatasync), discard and write-zeroes (the file's blocks given back with a punched hole, as
//! qemu's `discard=unmap` does), and the disk's id. Every request is checked against the disk's
//! size before the file is touched: one past the end is an I/O error for the guest, never a
//! panic or a write beyond the disk.
//!
//! A read-only disk (the image's system disk) offers VIRTIO_BLK_F_RO and neither discard nor
//! write-zeroes, and answers every write with an I/O error: its file is opened read-only, so
//! not even a guest that ignores the flag can change it.
//!
//! Requests are served on a thread of the device's own: disk I/O may take milliseconds, and
//! the thread that delivers queue notifications serves every device.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX,
    VIRTIO_BLK_F_SIZE_MAX, VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK,
    VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID,
    VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES,
    VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
};
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;

use vm_memory::{Address, GuestAddress};

use super::{DeviceQueue, Request, VirtioDevice, VERSION_1};
use crate::machine::bus::lock;
use crate::machine::Error;

/// Bytes of a sector, the unit of every request.
const SECTOR: u64 = 512;
/// The header every request starts with: type, reserved, sector.
const HEADER: usize = 16;
/// The largest segment and the most segments a request may have (the guest is told).
const SIZE_MAX: u32 = 1 << 20;
const SEG_MAX: u32 = 128;
/// The most bytes a request may carry to the device, or ask it to read.
const MAX_READABLE: usize = HEADER + SIZE_MAX as usize * SEG_MAX as usize;
/// A discard or write-zeroes request carries one range of this many bytes.
const RANGE: usize = 16;
/// The disk's id, as VIRTIO_BLK_T_GET_ID answers (20 bytes, NUL-padded).
const ID_LEN: usize = 20;

/// The data disk of a VM.
#[derive(Debug)]
pub struct BlkDevice {
    shared: Arc<Shared>,
    queue_sizes: [u16; 1],
}

#[derive(Debug)]
struct Shared {
    file: File,
    read_only: bool,
    capacity: u64,
    id: [u8; ID_LEN],
    queue: Mutex<Option<Arc<DeviceQueue>>>,
    kicked: Condvar,
    /// Bumped on every activation and reset: an older worker stops.
    generation: AtomicU64,
}

impl BlkDevice {
    /// The disk at `path` (opened read-write), with `id` for VIRTIO_BLK_T_GET_ID (the guest
    /// finds the disk by it: /sys/block/vdX/serial).
    pub fn new(path: &Path, id: &str) -> std::io::Result<BlkDevice> {
        BlkDevice::open(path, id, false)
    }

    /// The disk at `path`, opened read-only and offered to the guest as read-only.
    pub fn read_only(path: &Path, id: &str) -> std::io::Result<BlkDevice> {
        BlkDevice::open(path, id, true)
    }

    fn open(path: &Path, id: &str, read_only: bool) -> std::io::Result<BlkDevice> {
        let file = std::fs::OpenOptions::new().read(true).write(!read_only).open(path)?;
        let capacity = file.metadata()?.len() / SECTOR * SECTOR;
        let mut padded = [0u8; ID_LEN];
        let n = id.len().min(ID_LEN);
        padded[..n].copy_from_slice(&id.as_bytes()[..n]);
        let shared = Shared {
            file,
            read_only,
            capacity,
            id: padded,
            queue: Mutex::new(None),
            kicked: Condvar::new(),
            generation: AtomicU64::new(0),
        };
        Ok(BlkDevice { shared: Arc::new(shared), queue_sizes: [256] })
    }
}

/// A range of a discard or write-zeroes request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    sector: u64,
    sectors: u32,
    flags: u32,
}

impl Shared {
    /// Whether `sector` + `bytes` lies on the disk.
    fn within(&self, sector: u64, bytes: u64) -> Option<u64> {
        let offset = sector.checked_mul(SECTOR)?;
        let end = offset.checked_add(bytes)?;
        (end <= self.capacity).then_some(offset)
    }

    /// Serves one request; the status byte and what is written before it.
    fn serve(&self, request: &Request) -> (u32, Vec<u8>) {
        let Some(header) = request.readable.get(..HEADER) else {
            return (VIRTIO_BLK_S_IOERR, Vec::new());
        };
        let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let sector = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
        let data = &request.readable[HEADER..];
        // What the guest gave to write into: all of it but the last byte, the status.
        let room = request.writable.iter().map(|(_, len)| u64::from(*len)).sum::<u64>();
        let room = room.saturating_sub(1);
        let writes =
            matches!(kind, VIRTIO_BLK_T_OUT | VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES);
        if writes && self.read_only {
            return (VIRTIO_BLK_S_IOERR, Vec::new());
        }
        match kind {
            VIRTIO_BLK_T_IN => {
                if room % SECTOR != 0 || room > (MAX_READABLE - HEADER) as u64 {
                    return (VIRTIO_BLK_S_IOERR, Vec::new());
                }
                let Some(offset) = self.within(sector, room) else {
                    return (VIRTIO_BLK_S_IOERR, Vec::new());
                };
                let mut buf = vec![0u8; room as usize];
                match self.file.read_exact_at(&mut buf, offset) {
                    Ok(()) => (VIRTIO_BLK_S_OK, buf),
                    Err(_) => (VIRTIO_BLK_S_IOERR, Vec::new()),
                }
            }
            VIRTIO_BLK_T_OUT => {
                let Some(offset) = self.within(sector, data.len() as u64) else {
                    return (VIRTIO_BLK_S_IOERR, Vec::new());
                };
                if !(data.len() as u64).is_multiple_of(SECTOR) {
                    return (VIRTIO_BLK_S_IOERR, Vec::new());
                }
                match self.file.write_all_at(data, offset) {
                    Ok(()) => (VIRTIO_BLK_S_OK, Vec::new()),
                    Err(_) => (VIRTIO_BLK_S_IOERR, Vec::new()),
                }
            }
            VIRTIO_BLK_T_FLUSH => match self.file.sync_data() {
                Ok(()) => (VIRTIO_BLK_S_OK, Vec::new()),
                Err(_) => (VIRTIO_BLK_S_IOERR, Vec::new()),
            },
            VIRTIO_BLK_T_GET_ID => {
                (VIRTIO_BLK_S_OK, self.id[..(room as usize).min(ID_LEN)].to_vec())
            }
            VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES => {
                let status = ranges(data)
                    .and_then(|ranges| {
                        ranges.iter().try_for_each(|r| self.zero(r, kind == VIRTIO_BLK_T_DISCARD))
                    })
                    .map_or(VIRTIO_BLK_S_IOERR, |()| VIRTIO_BLK_S_OK);
                (status, Vec::new())
            }
            _ => (VIRTIO_BLK_S_UNSUPP, Vec::new()),
        }
    }

    /// Discards a range (punches a hole: the host gets the space back), or zeroes it (a hole
    /// too when the guest allows unmapping, else the range is zeroed in place).
    fn zero(&self, range: &Range, discard: bool) -> Option<()> {
        let bytes = u64::from(range.sectors) * SECTOR;
        let offset = self.within(range.sector, bytes)?;
        let unmap = discard || range.flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0;
        let mode = if unmap {
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE
        } else {
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE
        };
        let (offset, len) =
            (libc::off_t::try_from(offset).ok()?, libc::off_t::try_from(bytes).ok()?);
        use std::os::fd::AsRawFd;
        // SAFETY: fallocate(2) on the disk's open descriptor, with a range checked to lie within
        // the disk; KEEP_SIZE keeps the file's length.
        let rc = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, offset, len) };
        (rc == 0).then_some(())
    }
}

/// The ranges of a discard or write-zeroes request.
fn ranges(data: &[u8]) -> Option<Vec<Range>> {
    if data.is_empty() || !data.len().is_multiple_of(RANGE) {
        return None;
    }
    let ranges = data
        .chunks_exact(RANGE)
        .map(|c| Range {
            sector: u64::from_le_bytes(c[0..8].try_into().unwrap_or_default()),
            sectors: u32::from_le_bytes(c[8..12].try_into().unwrap_or_default()),
            flags: u32::from_le_bytes(c[12..16].try_into().unwrap_or_default()),
        })
        .collect();
    Some(ranges)
}

/// Where byte `offset` of the chain's writable buffers lies in guest memory.
fn byte_at(writable: &[(GuestAddress, u32)], mut offset: u64) -> Option<GuestAddress> {
    for (addr, len) in writable {
        if offset < u64::from(*len) {
            return addr.checked_add(offset);
        }
        offset -= u64::from(*len);
    }
    None
}

/// Serves the queue until the device is reset or activated again.
fn work(shared: Arc<Shared>, mine: u64) {
    loop {
        let queue = {
            let mut slot = lock(&shared.queue);
            loop {
                if shared.generation.load(Ordering::SeqCst) != mine {
                    return;
                }
                if let Some(queue) = slot.clone() {
                    break queue;
                }
                slot = shared
                    .kicked
                    .wait_timeout(slot, Duration::from_millis(500))
                    .map_or_else(|e| e.into_inner().0, |r| r.0);
            }
        };
        while let Some(request) = queue.pop_request(MAX_READABLE) {
            let (status, mut reply) = shared.serve(&request);
            if request.writable.is_empty() {
                // No room even for the status: a broken chain, returned untouched.
                queue.complete(request.head, 0);
                continue;
            }
            // The status is the chain's last byte, wherever the data ended.
            let room = request.writable.iter().map(|(_, len)| u64::from(*len)).sum::<u64>() - 1;
            reply.truncate(room as usize);
            let mut written = queue.write(&request.writable, &reply);
            if let Some(at) = byte_at(&request.writable, room) {
                written += queue.write(&[(at, 1)], &[status as u8]);
            }
            queue.complete(request.head, written);
        }
        // Wait for the next notification.
        let slot = lock(&shared.queue);
        let _ = shared.kicked.wait_timeout(slot, Duration::from_millis(500));
    }
}

impl VirtioDevice for BlkDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn features(&self) -> u64 {
        let bit = |b: u32| 1u64 << b;
        let always = VERSION_1 | bit(VIRTIO_BLK_F_SIZE_MAX) | bit(VIRTIO_BLK_F_SEG_MAX);
        if self.shared.read_only {
            always | bit(VIRTIO_BLK_F_RO)
        } else {
            always
                | bit(VIRTIO_BLK_F_FLUSH)
                | bit(VIRTIO_BLK_F_DISCARD)
                | bit(VIRTIO_BLK_F_WRITE_ZEROES)
        }
    }

    fn queue_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    /// virtio_blk_config, as far as the features above need it.
    fn config(&self) -> Vec<u8> {
        let mut c = vec![0u8; 60];
        c[0..8].copy_from_slice(&(self.shared.capacity / SECTOR).to_le_bytes());
        c[8..12].copy_from_slice(&SIZE_MAX.to_le_bytes());
        c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        // max_discard_sectors, max_discard_seg, discard_sector_alignment (4 KiB)
        c[36..40].copy_from_slice(&(u32::MAX >> 1).to_le_bytes());
        c[40..44].copy_from_slice(&1u32.to_le_bytes());
        c[44..48].copy_from_slice(&8u32.to_le_bytes());
        // max_write_zeroes_sectors, max_write_zeroes_seg, write_zeroes_may_unmap
        c[48..52].copy_from_slice(&(u32::MAX >> 1).to_le_bytes());
        c[52..56].copy_from_slice(&1u32.to_le_bytes());
        c[56] = 1;
        c
    }

    fn activate(&mut self, _features: u64, queues: Vec<Arc<DeviceQueue>>) -> Result<(), Error> {
        let queue = queues.into_iter().next().ok_or(Error::Queues {
            device: "virtio-blk",
            wanted: 1,
            got: 0,
        })?;
        let mine = self.shared.generation.fetch_add(1, Ordering::SeqCst) + 1;
        *lock(&self.shared.queue) = Some(queue);
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name("virtio-blk".into())
            .spawn(move || work(shared, mine))
            .map_err(|source| Error::Thread { thread: "the virtio-blk thread", source })?;
        Ok(())
    }

    fn notify(&mut self, _queue: usize) {
        self.shared.kicked.notify_all();
    }

    fn reset(&mut self) {
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        *lock(&self.shared.queue) = None;
        self.shared.kicked.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(dir: &Path, bytes: u64) -> BlkDevice {
        let path = dir.join("disk.img");
        let file = File::create(&path).expect("create");
        file.set_len(bytes).expect("size");
        BlkDevice::new(&path, "cairn-data").expect("device")
    }

    fn request(kind: u32, sector: u64, data: &[u8], room: u32) -> Request {
        let mut readable = Vec::new();
        readable.extend_from_slice(&kind.to_le_bytes());
        readable.extend_from_slice(&0u32.to_le_bytes());
        readable.extend_from_slice(&sector.to_le_bytes());
        readable.extend_from_slice(data);
        Request { head: 0, readable, writable: vec![(GuestAddress(0), room)] }
    }

    #[test]
    fn writes_read_back_and_a_request_past_the_end_is_an_io_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dev = disk(dir.path(), 1 << 20);
        let s = &dev.shared;
        let data = vec![0xab; 1024];
        assert_eq!(s.serve(&request(VIRTIO_BLK_T_OUT, 10, &data, 1)).0, VIRTIO_BLK_S_OK);
        let (status, read) = s.serve(&request(VIRTIO_BLK_T_IN, 10, &[], 1024 + 1));
        assert_eq!((status, &read), (VIRTIO_BLK_S_OK, &data));
        // The last sector is fine, one past it is not, nor one that wraps around.
        assert_eq!(s.serve(&request(VIRTIO_BLK_T_IN, 2047, &[], 513)).0, VIRTIO_BLK_S_OK);
        assert_eq!(s.serve(&request(VIRTIO_BLK_T_IN, 2048, &[], 513)).0, VIRTIO_BLK_S_IOERR);
        assert_eq!(
            s.serve(&request(VIRTIO_BLK_T_OUT, u64::MAX / 2, &data, 1)).0,
            VIRTIO_BLK_S_IOERR
        );
        assert_eq!(s.serve(&request(VIRTIO_BLK_T_OUT, 0, &[1, 2, 3], 1)).0, VIRTIO_BLK_S_IOERR);
        assert_eq!(s.serve(&request(VIRTIO_BLK_T_FLUSH, 0, &[], 1)).0, VIRTIO_BLK_S_OK);
        assert_eq!(s.serve(&request(99, 0, &[], 1)).0, VIRTIO_BLK_S_UNSUPP);
        let (status, id) = s.serve(&request(VIRTIO_BLK_T_GET_ID, 0, &[], 21));
        assert_eq!(status, VIRTIO_BLK_S_OK);
        assert!(id.starts_with(b"cairn-data"));
        // A header cut short.
        let short = Request { head: 0, readable: vec![0; 8], writable: vec![(GuestAddress(0), 1)] };
        assert_eq!(s.serve(&short).0, VIRTIO_BLK_S_IOERR);
    }

    #[test]
    fn a_read_only_disk_reads_refuses_every_write_and_says_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("system.img");
        std::fs::write(&path, vec![5u8; 1 << 20]).expect("write");
        let dev = BlkDevice::read_only(&path, "cairn-system").expect("device");
        assert_ne!(dev.features() & (1 << VIRTIO_BLK_F_RO), 0);
        assert_eq!(dev.features() & (1 << VIRTIO_BLK_F_DISCARD), 0);
        let s = &dev.shared;
        let (status, read) = s.serve(&request(VIRTIO_BLK_T_IN, 0, &[], 513));
        assert_eq!((status, read), (VIRTIO_BLK_S_OK, vec![5u8; 512]));
        let data = vec![0u8; 512];
        assert_eq!(s.serve(&request(VIRTIO_BLK_T_OUT, 0, &data, 1)).0, VIRTIO_BLK_S_IOERR);
        let mut range = Vec::new();
        range.extend_from_slice(&0u64.to_le_bytes());
        range.extend_from_slice(&8u32.to_le_bytes());
        range.extend_from_slice(&0u32.to_le_bytes());
        for kind in [VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES] {
            assert_eq!(s.serve(&request(kind, 0, &range, 1)).0, VIRTIO_BLK_S_IOERR);
        }
        assert_eq!(std::fs::read(&path).expect("read"), vec![5u8; 1 << 20], "unchanged");
    }

    #[test]
    fn discard_gives_the_space_back() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let dev = disk(dir.path(), 8 << 20);
        let s = &dev.shared;
        let data = vec![7u8; 4 << 20];
        assert_eq!(s.serve(&request(VIRTIO_BLK_T_OUT, 0, &data, 1)).0, VIRTIO_BLK_S_OK);
        s.file.sync_all().expect("sync");
        let allocated = |s: &Shared| s.file.metadata().expect("stat").blocks() * 512;
        assert!(allocated(s) >= 4 << 20);
        let mut range = Vec::new();
        range.extend_from_slice(&0u64.to_le_bytes());
        range.extend_from_slice(&((4u32 << 20) / 512).to_le_bytes());
        range.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(s.serve(&request(VIRTIO_BLK_T_DISCARD, 0, &range, 1)).0, VIRTIO_BLK_S_OK);
        assert!(allocated(s) < 1 << 20, "the hole was punched: {}", allocated(s));
        let (_, read) = s.serve(&request(VIRTIO_BLK_T_IN, 0, &[], 4097));
        assert!(read.iter().all(|b| *b == 0));
        // A range past the end, or a malformed one, is refused.
        let mut past = Vec::new();
        past.extend_from_slice(&(16u64 << 10).to_le_bytes());
        past.extend_from_slice(&1u32.to_le_bytes());
        past.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(s.serve(&request(VIRTIO_BLK_T_DISCARD, 0, &past, 1)).0, VIRTIO_BLK_S_IOERR);
        assert_eq!(
            s.serve(&request(VIRTIO_BLK_T_WRITE_ZEROES, 0, &[1, 2], 1)).0,
            VIRTIO_BLK_S_IOERR
        );
    }
}
