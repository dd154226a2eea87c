//! The i8042 keyboard controller, for its two jobs on a VM without firmware: the guest resets
//! the machine through it (command 0xfe), and the VMM asks the guest to shut down by typing
//! Ctrl-Alt-Del, which Linux turns into a signal to init (the guest agent then syncs, unmounts
//! /Database and powers off, as it does for QEMU's ctrl-alt-del). Enough of the controller's
//! and keyboard's command set is answered for Linux's i8042 and atkbd drivers to take it
//! (with `i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd`, as under Firecracker).
//!
//! Scancodes are set 2, untranslated: the controller reports translation off in its command
//! byte, so the guest decodes set 2 itself.

use std::collections::VecDeque;

use super::bus::BusDevice;
use super::legacy::{IrqLine, StopRequest};
use super::Exit;

/// Status register bits: a byte waits in the output buffer; the system flag (self-test passed).
const STATUS_OUTPUT_FULL: u8 = 1;
const STATUS_SYSTEM: u8 = 1 << 2;
/// Status bit 3: the last write was a command (port 0x64), not data.
const STATUS_COMMAND: u8 = 1 << 3;

/// Controller commands (port 0x64).
const READ_COMMAND_BYTE: u8 = 0x20;
const WRITE_COMMAND_BYTE: u8 = 0x60;
const DISABLE_AUX: u8 = 0xa7;
const ENABLE_AUX: u8 = 0xa8;
const TEST_AUX: u8 = 0xa9;
const SELF_TEST: u8 = 0xaa;
const TEST_KEYBOARD: u8 = 0xab;
const DISABLE_KEYBOARD: u8 = 0xad;
const ENABLE_KEYBOARD: u8 = 0xae;
const READ_OUTPUT_PORT: u8 = 0xd0;
const WRITE_OUTPUT_PORT: u8 = 0xd1;
const PULSE_RESET: u8 = 0xfe;

/// Command byte: keyboard interrupt on, system flag; translation and the aux port off.
const DEFAULT_COMMAND_BYTE: u8 = 0x05;

/// Keyboard answers.
const ACK: u8 = 0xfa;
const SELF_TEST_PASSED: u8 = 0xaa;
const KEYBOARD_RESET: u8 = 0xff;
const KEYBOARD_IDENTIFY: u8 = 0xf2;

/// Ctrl, Alt and Delete pressed, then released, in scancode set 2.
pub const CTRL_ALT_DEL: [u8; 11] =
    [0x14, 0x11, 0xe0, 0x71, 0xe0, 0xf0, 0x71, 0xf0, 0x11, 0xf0, 0x14];

/// The controller, with the keyboard behind it.
#[derive(Debug)]
pub struct I8042 {
    stop: StopRequest,
    /// The keyboard's interrupt (IRQ 1); none in unit tests.
    irq: Option<IrqLine>,
    output: VecDeque<u8>,
    command_byte: u8,
    /// A controller command that takes a data byte next (0x60, 0xd1).
    awaiting: Option<u8>,
    last_was_command: bool,
}

impl I8042 {
    pub fn new(stop: StopRequest, irq: Option<IrqLine>) -> I8042 {
        I8042 {
            stop,
            irq,
            output: VecDeque::new(),
            command_byte: DEFAULT_COMMAND_BYTE,
            awaiting: None,
            last_was_command: false,
        }
    }

    /// Types Ctrl-Alt-Del: the guest's request to shut down.
    pub fn ctrl_alt_del(&mut self) {
        self.output.extend(CTRL_ALT_DEL);
        self.interrupt();
    }

    fn push(&mut self, bytes: &[u8]) {
        self.output.extend(bytes);
        self.interrupt();
    }

    /// Tells the guest a byte waits, if it has the keyboard interrupt on.
    fn interrupt(&self) {
        if self.command_byte & 1 != 0 && !self.output.is_empty() {
            if let Some(irq) = &self.irq {
                // A lost interrupt leaves the byte for the guest's next status poll.
                let _ = vm_superio::Trigger::trigger(irq);
            }
        }
    }

    fn status(&self) -> u8 {
        let mut status = STATUS_SYSTEM;
        if !self.output.is_empty() {
            status |= STATUS_OUTPUT_FULL;
        }
        if self.last_was_command {
            status |= STATUS_COMMAND;
        }
        status
    }

    fn command(&mut self, command: u8) {
        match command {
            READ_COMMAND_BYTE => self.push(&[self.command_byte]),
            WRITE_COMMAND_BYTE | WRITE_OUTPUT_PORT => self.awaiting = Some(command),
            SELF_TEST => self.push(&[0x55]),
            TEST_KEYBOARD => self.push(&[0x00]),
            // No aux port: its test reports a clock line stuck low.
            TEST_AUX => self.push(&[0x01]),
            READ_OUTPUT_PORT => self.push(&[0x01]),
            DISABLE_KEYBOARD => self.command_byte |= 1 << 4,
            ENABLE_KEYBOARD => self.command_byte &= !(1 << 4),
            DISABLE_AUX | ENABLE_AUX => {}
            PULSE_RESET => self.stop.set(Exit::Reboot("i8042 reset".into())),
            _ => {}
        }
    }

    fn data(&mut self, value: u8) {
        match self.awaiting.take() {
            Some(WRITE_COMMAND_BYTE) => self.command_byte = value,
            // Bit 0 of the output port is the reset line: clearing it resets the machine.
            Some(_) if value & 1 == 0 => self.stop.set(Exit::Reboot("i8042 reset".into())),
            Some(_) => {}
            // A command for the keyboard itself.
            None => match value {
                KEYBOARD_RESET => self.push(&[ACK, SELF_TEST_PASSED]),
                KEYBOARD_IDENTIFY => self.push(&[ACK, 0xab, 0x83]),
                _ => self.push(&[ACK]),
            },
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            0 => {
                let byte = self.output.pop_front().unwrap_or(0);
                self.interrupt();
                byte
            }
            4 => self.status(),
            _ => 0xff,
        };
        data.fill(value);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        match offset {
            0 => {
                self.last_was_command = false;
                self.data(value);
            }
            4 => {
                self.last_was_command = true;
                self.command(value);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(device: &mut I8042, offset: u64) -> u8 {
        let mut byte = [0];
        device.read(offset, &mut byte);
        byte[0]
    }

    #[test]
    fn ctrl_alt_del_is_typed_byte_by_byte() {
        let mut device = I8042::new(StopRequest::default(), None);
        assert_eq!(read(&mut device, 4) & STATUS_OUTPUT_FULL, 0);
        device.ctrl_alt_del();
        let mut typed = Vec::new();
        while read(&mut device, 4) & STATUS_OUTPUT_FULL != 0 {
            typed.push(read(&mut device, 0));
        }
        assert_eq!(typed, CTRL_ALT_DEL);
    }

    #[test]
    fn the_controller_answers_linux_probes() {
        let mut device = I8042::new(StopRequest::default(), None);
        device.write(4, &[SELF_TEST]);
        assert_eq!(read(&mut device, 0), 0x55);
        device.write(4, &[WRITE_COMMAND_BYTE]);
        device.write(0, &[0x47]);
        device.write(4, &[READ_COMMAND_BYTE]);
        assert_eq!(read(&mut device, 0), 0x47);
        device.write(0, &[KEYBOARD_RESET]);
        assert_eq!((read(&mut device, 0), read(&mut device, 0)), (ACK, SELF_TEST_PASSED));
        device.write(0, &[0xf4]); // enable scanning
        assert_eq!(read(&mut device, 0), ACK);
        assert_eq!(read(&mut device, 4) & STATUS_OUTPUT_FULL, 0);
        assert_eq!(device.stop.get(), None);
    }

    #[test]
    fn both_reset_paths_reboot() {
        let mut device = I8042::new(StopRequest::default(), None);
        device.write(4, &[PULSE_RESET]);
        assert_eq!(device.stop.get(), Some(Exit::Reboot("i8042 reset".into())));

        let mut device = I8042::new(StopRequest::default(), None);
        device.write(4, &[WRITE_OUTPUT_PORT]);
        device.write(0, &[0x01]);
        assert_eq!(device.stop.get(), None, "the reset line stays high");
        device.write(4, &[WRITE_OUTPUT_PORT]);
        device.write(0, &[0x00]);
        assert_eq!(device.stop.get(), Some(Exit::Reboot("i8042 reset".into())));
    }
}
