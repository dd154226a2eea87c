//! The virtio-mmio transport, version 2 (virtio 1.2, section 4.2.2): the register window of
//! one device. The driver negotiates features, sets up each queue's three rings, and sets
//! DRIVER_OK; then the device is activated with its queues.

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::{DeviceQueue, Interrupt, VirtioDevice, VERSION_1};
use crate::machine::bus::BusDevice;

const MAGIC: u32 = 0x7472_6976; // "virt"
/// The QueueNotify register, which the VMM may route through an ioeventfd.
pub const QUEUE_NOTIFY: u64 = VIRTIO_MMIO_QUEUE_NOTIFY as u64;
/// The transport's version: 2, the modern (non-legacy) register layout.
const MMIO_VERSION: u32 = 2;
const VENDOR: u32 = 0x4e52_4143; // "CARN"

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE as ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER as DRIVER,
    VIRTIO_CONFIG_S_DRIVER_OK as DRIVER_OK, VIRTIO_CONFIG_S_FAILED as FAILED,
    VIRTIO_CONFIG_S_FEATURES_OK as FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET as NEEDS_RESET,
};
use virtio_bindings::virtio_mmio::*;

/// The register window of one virtio device.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    queues: Vec<Queue>,
    active: bool,
    config_generation: u32,
}

impl std::fmt::Debug for MmioTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmioTransport")
            .field("device_type", &self.device.device_type())
            .field("status", &self.status)
            .field("active", &self.active)
            .finish()
    }
}

impl MmioTransport {
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        interrupt: Arc<Interrupt>,
    ) -> MmioTransport {
        let queues = Self::fresh_queues(device.as_ref());
        MmioTransport {
            device,
            mem,
            interrupt,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            queues,
            active: false,
            config_generation: 0,
        }
    }

    fn fresh_queues(device: &dyn VirtioDevice) -> Vec<Queue> {
        device.queue_sizes().iter().filter_map(|size| Queue::new(*size).ok()).collect()
    }

    fn queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn reset(&mut self) {
        if self.active {
            self.device.reset();
        }
        self.active = false;
        self.status = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.queues = Self::fresh_queues(self.device.as_ref());
        self.interrupt.acknowledge(u32::MAX);
    }

    fn set_status(&mut self, status: u32) {
        if status == 0 {
            self.reset();
            return;
        }
        let mut status = status;
        if status & FEATURES_OK != 0 && self.status & FEATURES_OK == 0 {
            let offered = self.device.features();
            let acceptable =
                self.driver_features & !offered == 0 && self.driver_features & VERSION_1 != 0;
            if !acceptable {
                // The driver reads FEATURES_OK back and gives up (legacy drivers included).
                status &= !FEATURES_OK;
            }
        }
        if status & DRIVER_OK != 0 && !self.active {
            status = self.activate(status);
        }
        self.status = status;
    }

    fn activate(&mut self, status: u32) -> u32 {
        let needed = ACKNOWLEDGE | DRIVER | FEATURES_OK;
        if status & needed != needed {
            return status | FAILED;
        }
        if self.queues.iter().any(|q| !q.ready() || !q.is_valid(&self.mem)) {
            return status | NEEDS_RESET;
        }
        // The device owns the queues from now on; a reset gives the transport fresh ones.
        let queues = std::mem::take(&mut self.queues)
            .into_iter()
            .map(|q| Arc::new(DeviceQueue::new(q, self.mem.clone(), self.interrupt.clone())))
            .collect();
        match self.device.activate(self.driver_features, queues) {
            Ok(()) => {
                self.active = true;
                status
            }
            Err(e) => {
                tracing::warn!(device = self.device.device_type(), error = %e, "activating");
                status | NEEDS_RESET
            }
        }
    }

    /// The driver made buffers available in queue `queue` (a QueueNotify write, from an MMIO
    /// exit or an ioeventfd).
    pub fn queue_notify(&mut self, queue: u32) {
        if self.active {
            self.device.notify(queue as usize);
        }
    }

    fn read_register(&self, offset: u32) -> u32 {
        let queue = self.queues.get(self.queue_sel as usize);
        match offset {
            VIRTIO_MMIO_MAGIC_VALUE => MAGIC,
            VIRTIO_MMIO_VERSION => MMIO_VERSION,
            VIRTIO_MMIO_DEVICE_ID => self.device.device_type(),
            VIRTIO_MMIO_VENDOR_ID => VENDOR,
            VIRTIO_MMIO_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            VIRTIO_MMIO_QUEUE_NUM_MAX => queue.map_or(0, |q| u32::from(q.max_size())),
            VIRTIO_MMIO_QUEUE_READY => queue.map_or(0, |q| u32::from(q.ready())),
            VIRTIO_MMIO_INTERRUPT_STATUS => self.interrupt.status(),
            VIRTIO_MMIO_STATUS => self.status,
            VIRTIO_MMIO_CONFIG_GENERATION => self.config_generation,
            _ => 0,
        }
    }

    fn write_register(&mut self, offset: u32, value: u32) {
        // Queue and feature registers may change only before DRIVER_OK (4.2.2.2).
        let setting_up = self.status & DRIVER_OK == 0;
        match offset {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_sel = value,
            VIRTIO_MMIO_DRIVER_FEATURES if setting_up => match self.driver_features_sel {
                0 => {
                    self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(value)
                }
                1 => {
                    self.driver_features =
                        (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32)
                }
                _ => {}
            },
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            VIRTIO_MMIO_QUEUE_SEL => self.queue_sel = value,
            VIRTIO_MMIO_QUEUE_NUM if setting_up => {
                if let Some(q) = self.queue() {
                    q.set_size(value as u16);
                }
            }
            VIRTIO_MMIO_QUEUE_READY if setting_up => {
                if let Some(q) = self.queue() {
                    q.set_ready(value == 1);
                }
            }
            VIRTIO_MMIO_QUEUE_NOTIFY => self.queue_notify(value),
            VIRTIO_MMIO_INTERRUPT_ACK => self.interrupt.acknowledge(value),
            VIRTIO_MMIO_STATUS => self.set_status(value),
            VIRTIO_MMIO_QUEUE_DESC_LOW
            | VIRTIO_MMIO_QUEUE_DESC_HIGH
            | VIRTIO_MMIO_QUEUE_AVAIL_LOW
            | VIRTIO_MMIO_QUEUE_AVAIL_HIGH
            | VIRTIO_MMIO_QUEUE_USED_LOW
            | VIRTIO_MMIO_QUEUE_USED_HIGH
                if setting_up =>
            {
                let (low, high) =
                    if offset & 4 == 0 { (Some(value), None) } else { (None, Some(value)) };
                if let Some(q) = self.queue() {
                    match offset & !4 {
                        VIRTIO_MMIO_QUEUE_DESC_LOW => q.set_desc_table_address(low, high),
                        VIRTIO_MMIO_QUEUE_AVAIL_LOW => q.set_avail_ring_address(low, high),
                        _ => q.set_used_ring_address(low, high),
                    }
                }
            }
            _ => {}
        }
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= u64::from(VIRTIO_MMIO_CONFIG) {
            let config = self.device.config();
            let start = (offset - u64::from(VIRTIO_MMIO_CONFIG)) as usize;
            for (i, byte) in data.iter_mut().enumerate() {
                *byte = config.get(start + i).copied().unwrap_or(0);
            }
        } else if data.len() == 4 {
            data.copy_from_slice(&self.read_register(offset as u32).to_le_bytes());
        } else {
            data.fill(0);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Ok(bytes) = <[u8; 4]>::try_from(data) {
            if offset < u64::from(VIRTIO_MMIO_CONFIG) {
                self.write_register(offset as u32, u32::from_le_bytes(bytes));
            }
        }
    }
}
