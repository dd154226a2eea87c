//! The VMM tests' own guest: a freestanding x86-64 program booted through the PVH entry. It
//! says hello on COM1, finds the virtio-mmio devices the command line lists, exercises each
//! one (rng, net, 9p, vsock) and prints what came back, then powers off through the ACPI
//! sleep register the command line names. vmm/tests/machine.rs builds it with rustc and ld
//! (vmm/tests/support/testguest.rs) and reads the console.
//!
//! Built without SSE (the x86_64-unknown-none target, or the host target with SSE turned off;
//! see tests/support/testguest.rs): on nested KVM without full hardware assistance, KVM's
//! instruction emulator runs some guest instructions after an MMIO exit, and it has no SSE
//! arithmetic, so an `xorps` there ends the VM with an emulation failure. Interrupts stay
//! off: the drivers poll the used rings.

#![no_std]
#![no_main]

mod blk;
mod devices;
mod keyboard;
mod ninep;
mod serial;
mod virtio;

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU16, Ordering};

global_asm!(include_str!("entry.S"), options(att_syntax));

/// Where the embedded VMM puts its virtio-mmio devices (vmm/src/machine/layout.rs).
const VIRTIO_WINDOW: usize = 0xd000_0000;

/// `hvm_start_info.cmdline_paddr` (the PVH start info, Xen's arch-x86/hvm/start_info.h).
const CMDLINE_OFFSET: usize = 24;

/// The ACPI sleep control port from the command line, once read: a panic powers off through
/// it too, so that a failing test ends at once with the console telling why.
static POWEROFF_PORT: AtomicU16 = AtomicU16::new(0);

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("testguest: panic: {info}");
    power_off()
}

fn power_off() -> ! {
    let port = POWEROFF_PORT.load(Ordering::SeqCst);
    if port != 0 {
        // SLP_TYP 5 (S5) | SLP_EN to the hardware-reduced sleep control register.
        // SAFETY: the port the VMM named for exactly this.
        unsafe { serial::outb(port, 0x34) };
    }
    halt()
}

fn halt() -> ! {
    loop {
        // SAFETY: interrupts are off; the VMM sees a halted vCPU.
        unsafe { asm!("hlt") };
    }
}

/// The command line the VMM wrote, as text.
///
/// # Safety
/// `start_info` is the address the VMM passed in %ebx.
unsafe fn command_line(start_info: usize) -> &'static str {
    let address = unsafe { core::ptr::read_unaligned((start_info + CMDLINE_OFFSET) as *const u64) };
    let start = address as usize as *const u8;
    let mut len = 0;
    while len < 4096 && unsafe { *start.add(len) } != 0 {
        len += 1;
    }
    core::str::from_utf8(unsafe { core::slice::from_raw_parts(start, len) }).unwrap_or("")
}

/// The value of `key=` on the command line.
fn option<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline.split(' ').find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
}

/// The time-stamp counter: timeouts of some seconds, whatever the exact frequency.
fn timestamp() -> u64 {
    // SAFETY: rdtsc only reads the counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// A number written in decimal or with 0x.
fn number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

#[no_mangle]
extern "C" fn guest_main(start_info: usize) -> ! {
    println!("testguest: hello");
    // SAFETY: entry.S passes the VMM's start info through.
    let cmdline = unsafe { command_line(start_info) };
    println!("testguest: cmdline {cmdline}");
    match option(cmdline, "cairn.poweroff").and_then(number) {
        Some(port) => POWEROFF_PORT.store(port as u16, Ordering::SeqCst),
        None => println!("testguest: no cairn.poweroff= on the command line"),
    }

    let mut found = devices::Found::default();
    // `virtio_mmio.device=4K@0xd0000000:5`, as Linux reads them.
    let listed = cmdline.split(' ').filter_map(|word| {
        let spec = word.strip_prefix("virtio_mmio.device=")?;
        number(spec.split('@').nth(1)?.split(':').next()?)
    });
    let mut any = false;
    for base in listed {
        any = true;
        match virtio::Device::probe(base as usize) {
            Some(device) => {
                println!("testguest: device {base:#x} id {}", device.id());
                found.add(device);
            }
            None => println!("testguest: nothing at {base:#x}"),
        }
    }
    if !any {
        // Listed only in ACPI (as for Linux under `cairn up`), which this guest does not
        // read: scan the VMM's device window, one 4 KiB slot per device, up to the first gap.
        for slot in 0..32 {
            let base = VIRTIO_WINDOW + slot * 0x1000;
            let Some(device) = virtio::Device::probe(base) else { break };
            println!("testguest: device {base:#x} id {} (scanned)", device.id());
            found.add(device);
        }
    }
    let count = |key| option(cmdline, key).and_then(number).map(|n| n as u32);
    found.exercise(&devices::Options {
        vsock_port: count("cairn.vsock_port").unwrap_or(1234),
        ninep_reads: count("cairn.bench_9p").unwrap_or(0),
        rng_reads: count("cairn.bench_rng").unwrap_or(0),
    });

    if cmdline.split(' ').any(|word| word == "cairn.await_ctrl_alt_del") {
        println!("testguest: waiting for ctrl-alt-del");
        if keyboard::await_ctrl_alt_del() {
            println!("testguest: ctrl-alt-del");
        } else {
            println!("testguest: no ctrl-alt-del came");
        }
    }
    println!("testguest: poweroff");
    power_off()
}

// The compiler calls these for copies and fills; the host target expects them from libc,
// which this guest does not have (x86_64-unknown-none's compiler_builtins has its own, and
// the linker takes ours first). String instructions keep LLVM from turning the loops
// back into calls to themselves.

#[no_mangle]
unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dest => _, inout("rsi") src => _,
            options(nostack, preserves_flags));
    }
    dest
}

#[no_mangle]
unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize) <= (src as usize) || (dest as usize) >= (src as usize + n) {
        return unsafe { memcpy(dest, src, n) };
    }
    // Overlapping with the destination above: copy backwards.
    unsafe {
        asm!("std", "rep movsb", "cld", inout("rcx") n => _,
            inout("rdi") dest.add(n - 1) => _, inout("rsi") src.add(n - 1) => _,
            options(nostack));
    }
    dest
}

#[no_mangle]
unsafe extern "C" fn memset(dest: *mut u8, value: i32, n: usize) -> *mut u8 {
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dest => _, in("al") value as u8,
            options(nostack, preserves_flags));
    }
    dest
}

#[no_mangle]
unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

#[no_mangle]
unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    unsafe { memcmp(a, b, n) }
}
