//! A polling virtio-mmio (version 2) driver: feature negotiation, split queues in memory from
//! a bump arena, and buffers posted and collected one chain at a time.

use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{fence, AtomicUsize, Ordering};

const MAGIC: u32 = 0x7472_6976;
const ACKNOWLEDGE: u32 = 1;
const DRIVER: u32 = 2;
const DRIVER_OK: u32 = 4;
const FEATURES_OK: u32 = 8;
const NEEDS_RESET: u32 = 64;
const FAILED: u32 = 128;
pub const VERSION_1: u64 = 1 << 32;

const DESC_NEXT: u16 = 1;
const DESC_WRITE: u16 = 2;
/// The most descriptors a queue of this driver has.
const MAX_QUEUE: usize = 64;

/// Memory for rings and buffers, handed out once and never freed (the guest lives for one test).
#[repr(C, align(4096))]
struct Arena([u8; 1 << 20]);
static mut ARENA: Arena = Arena([0; 1 << 20]);
static USED: AtomicUsize = AtomicUsize::new(0);

/// `len` zeroed bytes aligned to a page, from the arena.
pub fn alloc(len: usize) -> &'static mut [u8] {
    let rounded = len.div_ceil(4096) * 4096;
    let start = USED.fetch_add(rounded, Ordering::SeqCst);
    assert!(start + rounded <= 1 << 20, "the arena is exhausted");
    // SAFETY: each range of the arena is handed out once.
    unsafe {
        let base = core::ptr::addr_of_mut!(ARENA) as *mut u8;
        core::slice::from_raw_parts_mut(base.add(start), len)
    }
}

/// One device's register window.
pub struct Device {
    base: usize,
    id: u32,
}

impl Device {
    /// The device at `base`, if a version 2 virtio-mmio device with a type is there.
    pub fn probe(base: usize) -> Option<Device> {
        let device = Device { base, id: 0 };
        if device.read(0x000) != MAGIC || device.read(0x004) != 2 {
            return None;
        }
        let id = device.read(0x008);
        (id != 0).then_some(Device { base, id })
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    fn read(&self, offset: usize) -> u32 {
        // SAFETY: the window is the device's, identity-mapped by entry.S.
        unsafe { read_volatile((self.base + offset) as *const u32) }
    }

    fn write(&self, offset: usize, value: u32) {
        // SAFETY: as for `read`.
        unsafe { write_volatile((self.base + offset) as *mut u32, value) }
    }

    /// A byte of the device-specific configuration.
    pub fn config(&self, offset: usize) -> u8 {
        // SAFETY: as for `read`.
        unsafe { read_volatile((self.base + 0x100 + offset) as *const u8) }
    }

    /// Resets the device and negotiates `wanted` features plus VERSION_1.
    pub fn start(&self, wanted: u64) -> Result<u64, &'static str> {
        self.write(0x070, 0);
        self.write(0x070, ACKNOWLEDGE);
        self.write(0x070, ACKNOWLEDGE | DRIVER);
        self.write(0x014, 0);
        let low = self.read(0x010);
        self.write(0x014, 1);
        let offered = u64::from(low) | (u64::from(self.read(0x010)) << 32);
        if offered & VERSION_1 == 0 {
            return Err("the device does not offer VERSION_1");
        }
        let accepted = offered & (wanted | VERSION_1);
        self.write(0x024, 0);
        self.write(0x020, accepted as u32);
        self.write(0x024, 1);
        self.write(0x020, (accepted >> 32) as u32);
        self.write(0x070, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        if self.read(0x070) & FEATURES_OK == 0 {
            return Err("the device refused the features");
        }
        Ok(accepted)
    }

    /// Sets up queue `index` with at most `size` entries.
    pub fn queue(&self, index: u32, size: u16) -> Result<Queue, &'static str> {
        self.write(0x030, index);
        let max = self.read(0x034);
        if max == 0 {
            return Err("the device has no such queue");
        }
        let size = (size as usize).min(max as usize).min(MAX_QUEUE) as u16;
        let n = size as usize;
        let desc = alloc(16 * n).as_mut_ptr();
        let avail = alloc(6 + 2 * n).as_mut_ptr();
        let used = alloc(6 + 8 * n).as_mut_ptr();
        self.write(0x038, u32::from(size));
        for (offset, address) in [(0x080, desc), (0x090, avail), (0x0a0, used)] {
            self.write(offset, address as u64 as u32);
            self.write(offset + 4, (address as u64 >> 32) as u32);
        }
        self.write(0x044, 1);
        let mut free = [0u16; MAX_QUEUE];
        for (i, slot) in free.iter_mut().enumerate() {
            *slot = i as u16;
        }
        Ok(Queue {
            index,
            size,
            desc,
            avail,
            used,
            free,
            free_count: n,
            next_avail: 0,
            last_used: 0,
        })
    }

    /// DRIVER_OK: the device goes live with the queues set up so far.
    pub fn ready(&self) -> Result<(), &'static str> {
        self.write(0x070, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
        let status = self.read(0x070);
        if status & (NEEDS_RESET | FAILED) != 0 || status & DRIVER_OK == 0 {
            return Err("the device did not accept DRIVER_OK");
        }
        Ok(())
    }

    pub fn notify(&self, queue: &Queue) {
        fence(Ordering::SeqCst);
        self.write(0x050, queue.index);
    }
}

/// A buffer of a descriptor chain.
pub struct Buffer {
    address: u64,
    len: u32,
    writable: bool,
}

impl Buffer {
    /// For the device to read.
    pub fn readable(data: &[u8]) -> Buffer {
        Buffer { address: data.as_ptr() as u64, len: data.len() as u32, writable: false }
    }
    /// For the device to fill.
    pub fn writable(data: &mut [u8]) -> Buffer {
        Buffer { address: data.as_mut_ptr() as u64, len: data.len() as u32, writable: true }
    }
}

/// A chain the device has used: its first buffer's address and how much it wrote.
pub struct Used {
    pub address: u64,
    pub len: u32,
}

impl Used {
    /// The bytes the device wrote into the first buffer.
    pub fn bytes(&self) -> &'static [u8] {
        // SAFETY: the address is one of our arena buffers, and the device wrote `len` bytes.
        unsafe { core::slice::from_raw_parts(self.address as *const u8, self.len as usize) }
    }
}

/// A split virtqueue (virtio 1.2, 2.7).
pub struct Queue {
    index: u32,
    size: u16,
    desc: *mut u8,
    avail: *mut u8,
    used: *mut u8,
    free: [u16; MAX_QUEUE],
    free_count: usize,
    next_avail: u16,
    last_used: u16,
}

impl Queue {
    /// Posts one chain of `buffers`.
    pub fn submit(&mut self, buffers: &[Buffer]) -> Result<(), &'static str> {
        if buffers.is_empty() || buffers.len() > self.free_count {
            return Err("no free descriptors");
        }
        let ids = &self.free[self.free_count - buffers.len()..self.free_count];
        for (i, buffer) in buffers.iter().enumerate() {
            let mut flags = if buffer.writable { DESC_WRITE } else { 0 };
            let next = ids.get(i + 1).copied().unwrap_or(0);
            if i + 1 < buffers.len() {
                flags |= DESC_NEXT;
            }
            // SAFETY: the descriptor is inside the table this queue allocated.
            unsafe {
                let d = self.desc.add(16 * ids[i] as usize);
                write_volatile(d as *mut u64, buffer.address);
                write_volatile(d.add(8) as *mut u32, buffer.len);
                write_volatile(d.add(12) as *mut u16, flags);
                write_volatile(d.add(14) as *mut u16, next);
            }
        }
        let head = ids[0];
        self.free_count -= buffers.len();
        let slot = 4 + 2 * (self.next_avail % self.size) as usize;
        self.next_avail = self.next_avail.wrapping_add(1);
        // SAFETY: inside the available ring; the index is published after the entry.
        unsafe {
            write_volatile(self.avail.add(slot) as *mut u16, head);
            fence(Ordering::SeqCst);
            write_volatile(self.avail.add(2) as *mut u16, self.next_avail);
        }
        Ok(())
    }

    /// The next chain the device used, if any; its descriptors become free.
    pub fn poll(&mut self) -> Option<Used> {
        // SAFETY: reads inside the used ring and the descriptor table of this queue.
        unsafe {
            let used_idx = read_volatile(self.used.add(2) as *const u16);
            if used_idx == self.last_used {
                return None;
            }
            fence(Ordering::SeqCst);
            let entry = self.used.add(4 + 8 * (self.last_used % self.size) as usize);
            self.last_used = self.last_used.wrapping_add(1);
            let head = read_volatile(entry as *const u32) as u16 % self.size;
            let len = read_volatile(entry.add(4) as *const u32);
            let address = read_volatile(self.desc.add(16 * head as usize) as *const u64);
            let mut id = head;
            loop {
                if self.free_count < self.size as usize {
                    self.free[self.free_count] = id;
                    self.free_count += 1;
                }
                let d = self.desc.add(16 * id as usize);
                if read_volatile(d.add(12) as *const u16) & DESC_NEXT == 0 {
                    break;
                }
                id = read_volatile(d.add(14) as *const u16) % self.size;
            }
            Some(Used { address, len })
        }
    }

    /// Waits for the next used chain; `what` names it if it never comes.
    pub fn wait(&mut self, what: &'static str) -> Result<Used, &'static str> {
        let start = crate::timestamp();
        loop {
            if let Some(used) = self.poll() {
                return Ok(used);
            }
            // Some 10 s on any machine that runs KVM.
            if crate::timestamp() - start > 30_000_000_000 {
                crate::println!("testguest: timed out waiting for {what}");
                return Err("timed out");
            }
            core::hint::spin_loop();
        }
    }
}
