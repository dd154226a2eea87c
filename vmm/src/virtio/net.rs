//! virtio-net: ethernet frames between the guest and a [`NetBackend`] (the user-space NAT of
//! the networking issue; the tests' own backend here). Transmitted frames go to the backend on
//! the vCPU that notified; received frames wait in the backend's channel until the guest has
//! posted a buffer, on a thread of the device.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::{DeviceQueue, VirtioDevice, VERSION_1};
use crate::machine::bus::lock;
use crate::machine::Error;

/// VIRTIO_NET_F_MAC: the MAC address is in the configuration space.
const F_MAC: u64 = 1 << 5;
/// virtio_net_hdr_v1, in front of every frame both ways.
const HEADER: usize = 12;
/// The largest frame with its header (no offloads are offered, so no larger ones come).
const MAX_FRAME: usize = HEADER + 1514 + 4;

/// Where frames go and come from.
pub trait NetBackend: Send {
    /// A frame from the guest (without the virtio header).
    fn send(&mut self, frame: &[u8]);
    /// Frames for the guest; taken once, when the device is activated.
    fn take_receiver(&mut self) -> Option<Receiver<Vec<u8>>>;
}

/// "The guest posted receive buffers", for the receive thread.
#[derive(Debug, Default)]
struct Posted {
    flag: Mutex<bool>,
    wake: Condvar,
}

pub struct NetDevice {
    mac: [u8; 6],
    backend: Box<dyn NetBackend>,
    queues: Vec<Arc<DeviceQueue>>,
    posted: Arc<Posted>,
    /// Frames for the guest, shared with the receive thread of the current activation.
    frames: Option<Arc<Mutex<Receiver<Vec<u8>>>>>,
    /// Bumped on every activation and reset: a receive thread of an older one stops.
    generation: Arc<AtomicU64>,
}

impl std::fmt::Debug for NetDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetDevice").field("mac", &self.mac).finish()
    }
}

impl NetDevice {
    pub fn new(mac: [u8; 6], backend: Box<dyn NetBackend>) -> NetDevice {
        NetDevice {
            mac,
            backend,
            queues: Vec::new(),
            posted: Arc::default(),
            frames: None,
            generation: Arc::default(),
        }
    }
}

/// Puts each frame from the backend into the next receive buffer, waiting for one if needed.
fn receive(
    frames: Arc<Mutex<Receiver<Vec<u8>>>>,
    rx: Arc<DeviceQueue>,
    posted: Arc<Posted>,
    generation: Arc<AtomicU64>,
) {
    let mine = generation.load(Ordering::SeqCst);
    let running = || generation.load(Ordering::SeqCst) == mine;
    while running() {
        let next = lock(&frames).recv_timeout(Duration::from_millis(200));
        let frame = match next {
            Ok(frame) => frame,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut packet = vec![0u8; HEADER];
        packet[10] = 1; // num_buffers
        packet.extend_from_slice(&frame);
        loop {
            if !running() {
                return;
            }
            if let Some(request) = rx.pop_request(0) {
                let room =
                    request.writable.iter().fold(0usize, |n, (_, l)| n.saturating_add(*l as usize));
                // A buffer too small for the frame gets nothing: the frame is dropped, as a
                // NIC drops what does not fit.
                let len =
                    if room >= packet.len() { rx.write(&request.writable, &packet) } else { 0 };
                rx.complete(request.head, len);
                break;
            }
            let mut flag = lock(&posted.flag);
            if !*flag {
                flag = posted
                    .wake
                    .wait_timeout(flag, Duration::from_millis(200))
                    .map_or_else(|e| e.into_inner().0, |r| r.0);
            }
            *flag = false;
        }
    }
}

impl VirtioDevice for NetDevice {
    fn device_type(&self) -> u32 {
        virtio_bindings::virtio_ids::VIRTIO_ID_NET
    }
    fn features(&self) -> u64 {
        VERSION_1 | F_MAC
    }
    fn queue_sizes(&self) -> &[u16] {
        &[256, 256]
    }
    fn config(&self) -> Vec<u8> {
        self.mac.to_vec()
    }

    fn activate(&mut self, _features: u64, queues: Vec<Arc<DeviceQueue>>) -> Result<(), Error> {
        if queues.len() != 2 {
            return Err(Error::Queues { device: "virtio-net", wanted: 2, got: queues.len() });
        }
        if self.frames.is_none() {
            let frames = self.backend.take_receiver().ok_or(Error::NoFrames("virtio-net"))?;
            self.frames = Some(Arc::new(Mutex::new(frames)));
        }
        let frames = self.frames.clone().ok_or(Error::NoFrames("virtio-net"))?;
        self.generation.fetch_add(1, Ordering::SeqCst);
        let (rx, posted, generation) =
            (queues[0].clone(), self.posted.clone(), self.generation.clone());
        std::thread::Builder::new()
            .name("virtio-net-rx".into())
            .spawn(move || receive(frames, rx, posted, generation))
            .map_err(|source| Error::Thread { thread: "the virtio-net receive thread", source })?;
        self.queues = queues;
        Ok(())
    }

    fn notify(&mut self, queue: usize) {
        match queue {
            0 => {
                *lock(&self.posted.flag) = true;
                self.posted.wake.notify_all();
            }
            1 => {
                let Some(tx) = self.queues.get(1) else { return };
                while let Some(request) = tx.pop_request(MAX_FRAME) {
                    if let Some(frame) = request.readable.get(HEADER..) {
                        if !frame.is_empty() {
                            self.backend.send(frame);
                        }
                    }
                    tx.complete(request.head, 0);
                }
            }
            _ => {}
        }
    }

    fn reset(&mut self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.queues.clear();
    }
}
