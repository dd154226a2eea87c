//! Waits for Ctrl-Alt-Del on the i8042 keyboard (scancode set 2, untranslated), polling the
//! controller's status: the VMM's graceful shutdown request.

use crate::serial::inb;

const DATA: u16 = 0x60;
const STATUS: u16 = 0x64;
const OUTPUT_FULL: u8 = 1;

/// Set 2 codes: a release prefix, an extended-key prefix, and the three keys.
const RELEASE: u8 = 0xf0;
const EXTENDED: u8 = 0xe0;
const CTRL: u8 = 0x14;
const ALT: u8 = 0x11;
const DELETE: u8 = 0x71;

/// True when Delete is pressed with Ctrl and Alt held; false when nothing comes in some 10 s.
pub fn await_ctrl_alt_del() -> bool {
    let (mut ctrl, mut alt) = (false, false);
    let (mut releasing, mut extended) = (false, false);
    let start = crate::timestamp();
    while crate::timestamp() - start < 30_000_000_000 {
        if inb(STATUS) & OUTPUT_FULL == 0 {
            core::hint::spin_loop();
            continue;
        }
        match inb(DATA) {
            RELEASE => releasing = true,
            EXTENDED => extended = true,
            code => {
                let pressed = !releasing;
                match (code, extended) {
                    (CTRL, _) => ctrl = pressed,
                    (ALT, _) => alt = pressed,
                    (DELETE, true) if pressed && ctrl && alt => return true,
                    _ => {}
                }
                releasing = false;
                extended = false;
            }
        }
    }
    false
}
