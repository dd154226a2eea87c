//! COM1 output and port I/O.

use core::arch::asm;
use core::fmt::{self, Write};

const COM1: u16 = 0x3f8;
/// Line status register: bit 5, the transmit holding register is empty.
const LSR: u16 = COM1 + 5;

/// # Safety
/// Writes to an I/O port: the caller knows what the port does.
pub unsafe fn outb(port: u16, value: u8) {
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack)) };
}

pub fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: the ports read here (the UART's status, the i8042's) have no side effect
    // beyond handing over the byte that is asked for.
    unsafe { asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack)) };
    value
}

pub struct Serial;

impl Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for byte in s.bytes() {
            while inb(LSR) & 0x20 == 0 {}
            // SAFETY: COM1's transmit register.
            unsafe { outb(COM1, byte) };
        }
        Ok(())
    }
}

#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::serial::Serial, $($arg)*);
    }};
}

#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = write!($crate::serial::Serial, $($arg)*);
    }};
}
