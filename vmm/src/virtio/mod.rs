//! virtio devices on the virtio-mmio transport (version 2, "modern" only). The transport
//! ([`mmio`]) owns the registers and the queue set-up; a device implements [`VirtioDevice`] and
//! gets its queues, each with the guest memory and the interrupt, when the driver is ready.
//! Descriptor chains come from the guest and are checked before use: a malformed one (out of
//! guest memory, too long, wrong direction) is returned unused, never trusted.

pub mod blk;
pub mod mmio;
pub mod net;
pub mod ninep;
pub mod rng;
pub mod vsock;

#[cfg(test)]
mod tests;

use crate::machine::Error;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap, Permissions};
use vmm_sys_util::eventfd::EventFd;

/// VIRTIO_F_VERSION_1: every device here is a modern one.
pub const VERSION_1: u64 = 1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;

/// A device's interrupt: the status register the driver reads and acknowledges, and the
/// irqfd that raises its line.
#[derive(Debug)]
pub struct Interrupt {
    status: AtomicU32,
    line: EventFd,
}

impl Interrupt {
    pub fn new(line: EventFd) -> Interrupt {
        Interrupt { status: AtomicU32::new(0), line }
    }

    /// "The device used a buffer in at least one queue".
    pub fn used_buffer(&self) {
        self.status.fetch_or(1, Ordering::SeqCst);
        // A lost wake-up here is recovered by the driver's next poll of the used ring.
        let _ = self.line.write(1);
    }

    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    pub fn acknowledge(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }
}

/// One queue of an active device, shared by the threads that serve it.
#[derive(Debug)]
pub struct DeviceQueue {
    queue: Mutex<Queue>,
    pub mem: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
}

/// A chain taken apart: what the driver wrote, and where the device may write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub head: u16,
    pub readable: Vec<u8>,
    pub writable: Vec<(GuestAddress, u32)>,
}

/// Why a chain was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("descriptor at {addr:#x}+{len} is outside guest memory")]
    OutOfMemory { addr: u64, len: u32 },
    #[error("a readable descriptor after a writable one")]
    Order,
    #[error("{0} bytes to read is more than this device accepts")]
    TooLong(usize),
}

impl DeviceQueue {
    pub fn new(queue: Queue, mem: GuestMemoryMmap, interrupt: Arc<Interrupt>) -> DeviceQueue {
        DeviceQueue { queue: Mutex::new(queue), mem, interrupt }
    }

    /// The next chain the driver made available, if any.
    pub fn pop(&self) -> Option<DescriptorChain<&GuestMemoryMmap>> {
        crate::machine::bus::lock(&self.queue).pop_descriptor_chain(&self.mem)
    }

    /// The next chain, read into a [`Request`] (at most `max_read` readable bytes). A chain
    /// that is refused is returned to the driver with nothing written, and the next one is
    /// tried.
    pub fn pop_request(&self, max_read: usize) -> Option<Request> {
        loop {
            let chain = self.pop()?;
            let head = chain.head_index();
            match read_chain(&self.mem, chain, max_read) {
                Ok(request) => return Some(request),
                Err(e) => {
                    tracing::warn!(error = %e, "refusing a descriptor chain");
                    self.complete(head, 0);
                }
            }
        }
    }

    /// Puts the chain `head` on the used ring with `len` bytes written, and interrupts.
    pub fn complete(&self, head: u16, len: u32) {
        let mut queue = crate::machine::bus::lock(&self.queue);
        if let Err(e) = queue.add_used(&self.mem, head, len) {
            tracing::warn!(error = %e, "returning a descriptor chain");
            return;
        }
        if queue.needs_notification(&self.mem).unwrap_or(true) {
            self.interrupt.used_buffer();
        }
    }

    /// Writes `data` across `writable`; returns how much fitted.
    pub fn write(&self, writable: &[(GuestAddress, u32)], mut data: &[u8]) -> u32 {
        let mut written = 0;
        for (addr, len) in writable {
            if data.is_empty() {
                break;
            }
            let n = data.len().min(*len as usize);
            if self.mem.write_slice(&data[..n], *addr).is_err() {
                break;
            }
            written += n as u32;
            data = &data[n..];
        }
        written
    }
}

/// Reads a chain's readable part and lists its writable part, checking every descriptor.
pub fn read_chain(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    max_read: usize,
) -> Result<Request, ChainError> {
    let head = chain.head_index();
    let mut request = Request { head, readable: Vec::new(), writable: Vec::new() };
    for desc in chain {
        let (addr, len) = (desc.addr(), desc.len());
        let access = if desc.is_write_only() { Permissions::Write } else { Permissions::Read };
        if !mem.check_range(addr, len as usize, access) {
            return Err(ChainError::OutOfMemory { addr: addr.0, len });
        }
        if desc.is_write_only() {
            request.writable.push((addr, len));
        } else {
            if !request.writable.is_empty() {
                return Err(ChainError::Order);
            }
            let start = request.readable.len();
            if start + len as usize > max_read {
                return Err(ChainError::TooLong(start + len as usize));
            }
            request.readable.resize(start + len as usize, 0);
            mem.read_slice(&mut request.readable[start..], addr)
                .map_err(|_| ChainError::OutOfMemory { addr: addr.0, len })?;
        }
    }
    Ok(request)
}

/// What a virtio device tells the transport, and what the transport tells it.
pub trait VirtioDevice: Send {
    /// The virtio device id (1 net, 4 entropy, 9 9P, 19 vsock).
    fn device_type(&self) -> u32;
    /// Offered features, [`VERSION_1`] included.
    fn features(&self) -> u64;
    /// The maximum size of each queue.
    fn queue_sizes(&self) -> &[u16];
    /// The device-specific configuration space.
    fn config(&self) -> Vec<u8>;
    /// The driver is ready: the queues, in order, with memory and interrupt.
    fn activate(&mut self, features: u64, queues: Vec<Arc<DeviceQueue>>) -> Result<(), Error>;
    /// The driver made buffers available on `queue`.
    fn notify(&mut self, queue: usize);
    /// The driver reset the device: stop using the queues.
    fn reset(&mut self);
}
