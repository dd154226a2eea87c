//! The few port-I/O devices a direct-booted guest touches: COM1 (vm-superio's 16550 into the
//! bounded console log) and the ACPI sleep registers of the hardware-reduced FADT through
//! which the guest powers off; the i8042 has its own module.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::bus::BusDevice;
use super::console::ConsoleLog;
use super::layout;
use super::Exit;

/// Raises an interrupt line through an irqfd.
#[derive(Debug)]
pub struct IrqLine(pub EventFd);

impl Trigger for IrqLine {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// COM1.
pub struct SerialPort(pub Serial<IrqLine, vm_superio::serial::NoEvents, ConsoleLog>);

impl std::fmt::Debug for SerialPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialPort").finish_non_exhaustive()
    }
}

impl BusDevice for SerialPort {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if let [byte] = data {
            *byte = self.0.read(offset as u8);
        } else {
            data.fill(0xff);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let [byte] = data {
            // A failed write to the log or the irqfd loses console output, not the guest.
            let _ = self.0.write(offset as u8, *byte);
        }
    }
}

/// How the guest asked to stop, shared with the vCPU loops that end on it and with whoever
/// waits for the VM to end.
#[derive(Debug, Clone, Default)]
pub struct StopRequest(Arc<Requested>);

#[derive(Debug, Default)]
struct Requested {
    exit: Mutex<Option<Exit>>,
    changed: Condvar,
}

impl StopRequest {
    /// Records the first request; later ones (other vCPUs racing) do not replace it.
    pub fn set(&self, exit: Exit) {
        let mut slot = super::bus::lock(&self.0.exit);
        if slot.is_none() {
            *slot = Some(exit);
            self.0.changed.notify_all();
        }
    }

    pub fn get(&self) -> Option<Exit> {
        super::bus::lock(&self.0.exit).clone()
    }

    /// Waits up to `timeout` for a request.
    pub fn wait(&self, timeout: Duration) -> Option<Exit> {
        let slot = super::bus::lock(&self.0.exit);
        let waited = self.0.changed.wait_timeout_while(slot, timeout, |exit| exit.is_none());
        let (slot, _) = waited.unwrap_or_else(std::sync::PoisonError::into_inner);
        slot.clone()
    }
}

/// ACPI's sleep control (offset 0) and status (offset 1) registers.
#[derive(Debug)]
pub struct SleepRegisters(pub StopRequest);

/// SLP_EN and SLP_TYP in the sleep control register (ACPI 6, 4.8.3.7).
const SLP_EN: u8 = 1 << 5;
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0x7;

impl BusDevice for SleepRegisters {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        if offset == 0 && value & SLP_EN != 0 {
            let sleep_type = (value >> SLP_TYP_SHIFT) & SLP_TYP_MASK;
            if sleep_type == layout::S5_SLEEP_TYPE {
                self.0.set(Exit::PowerOff);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_s5_with_slp_en_powers_off() {
        let stop = StopRequest::default();
        SleepRegisters(stop.clone()).write(0, &[3 << SLP_TYP_SHIFT | SLP_EN]);
        assert_eq!(stop.get(), None, "S3 is not a poweroff");
        SleepRegisters(stop.clone()).write(0, &[5 << SLP_TYP_SHIFT]);
        assert_eq!(stop.get(), None, "no SLP_EN");
        SleepRegisters(stop.clone()).write(0, &[5 << SLP_TYP_SHIFT | SLP_EN]);
        assert_eq!(stop.get(), Some(Exit::PowerOff));
    }
}
