//! vCPUs: their CPUID (KVM's supported set, with each vCPU's APIC id and the hypervisor bit),
//! the local APIC's LINT pins as a PC wires them, the PVH entry state of the boot vCPU, and
//! the run loop that hands port and MMIO exits to the buses.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::bus::Bus;
use super::layout;
use super::legacy::StopRequest;
use super::{Error, Exit};

/// CPUID for vCPU `id` of `count`.
pub fn cpuid(kvm: &Kvm, id: u8, count: u8) -> Result<CpuId, Error> {
    let mut cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(Error::kvm("KVM_GET_SUPPORTED_CPUID"))?;
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            1 => {
                // Initial APIC id, logical processor count; the hypervisor bit so that the
                // kernel uses paravirtual clocks.
                entry.ebx =
                    (entry.ebx & 0x0000_ffff) | (u32::from(id) << 24) | (u32::from(count) << 16);
                entry.ecx |= 1 << 31;
            }
            0xb | 0x1f => entry.edx = u32::from(id),
            _ => {}
        }
    }
    Ok(cpuid)
}

/// 32-bit and 64-bit flat code descriptors, and flat data.
const CODE32: u64 = 0x00cf_9b00_0000_ffff;
pub(super) const CODE64: u64 = 0x00af_9b00_0000_ffff;
const DATA: u64 = 0x00cf_9300_0000_ffff;

/// Writes the GDT the entry state refers to: null, null, code (selector 0x10), data (0x18),
/// the layout both PVH and the Linux boot protocol expect.
pub(super) fn write_gdt(mem: &GuestMemoryMmap, code: u64) -> Result<(), Error> {
    let gdt: [u64; 4] = [0, 0, code, DATA];
    for (i, entry) in gdt.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(layout::GDT + 8 * i as u64))
            .map_err(Error::memory("the GDT"))?;
    }
    Ok(())
}

/// Identity-maps the first 1 GiB with 2 MiB pages, for a 64-bit entry.
pub fn write_page_tables(mem: &GuestMemoryMmap) -> Result<(), Error> {
    let write = |value: u64, at: u64| {
        mem.write_obj(value, GuestAddress(at)).map_err(Error::memory("the page tables"))
    };
    write(layout::PDPT | 0x3, layout::PML4)?;
    write(layout::PD | 0x3, layout::PDPT)?;
    for i in 0..512u64 {
        write((i << 21) | 0x83, layout::PD + i * 8)?;
    }
    Ok(())
}

fn flat_segment(selector: u16, type_: u8, long: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: u8::from(!long),
        s: 1,
        l: u8::from(long),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Sets the boot vCPU up for `entry`, writing the GDT (and page tables) it needs.
pub fn enter(vcpu: &VcpuFd, mem: &GuestMemoryMmap, entry: super::boot::Entry) -> Result<(), Error> {
    match entry {
        super::boot::Entry::Pvh { entry, start_info } => {
            write_gdt(mem, CODE32)?;
            enter_pvh(vcpu, entry, start_info)
        }
        super::boot::Entry::Linux64 { entry, zero_page } => {
            write_gdt(mem, CODE64)?;
            write_page_tables(mem)?;
            enter_long_mode(vcpu, entry, zero_page)
        }
    }
}

/// Control registers of an entry state.
struct Mode {
    long: bool,
    cr0: u64,
    cr3: u64,
    cr4: u64,
    efer: u64,
}

/// Loads an entry state: flat segments (code 0x10, data 0x18) from our GDT, `mode`'s control
/// registers, `regs`, and x87/SSE in their reset state (FCW 0x37f, MXCSR 0x1f80).
fn load_state(vcpu: &VcpuFd, mode: Mode, regs: kvm_regs) -> Result<(), Error> {
    let mut sregs = vcpu.get_sregs().map_err(Error::kvm("KVM_GET_SREGS"))?;
    sregs.cs = flat_segment(0x10, 0xb, mode.long);
    let data = flat_segment(0x18, 0x3, false);
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.gdt.base = layout::GDT;
    sregs.gdt.limit = 4 * 8 - 1;
    (sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer) = (mode.cr0, mode.cr3, mode.cr4, mode.efer);
    vcpu.set_sregs(&sregs).map_err(Error::kvm("KVM_SET_SREGS"))?;
    vcpu.set_regs(&regs).map_err(Error::kvm("KVM_SET_REGS"))?;
    let fpu = kvm_fpu { fcw: 0x37f, mxcsr: 0x1f80, ..Default::default() };
    vcpu.set_fpu(&fpu).map_err(Error::kvm("KVM_SET_FPU"))
}

/// The Linux 64-bit boot protocol's entry state: long mode, paging on with the identity map,
/// __BOOT_CS 0x10 and __BOOT_DS 0x18, RSI = the zero page.
pub(super) fn enter_long_mode(vcpu: &VcpuFd, entry: u64, zero_page: u64) -> Result<(), Error> {
    // PG | ET | PE; PAE; LME | LMA.
    let mode = Mode { long: true, cr0: 0x8000_0011, cr3: layout::PML4, cr4: 0x20, efer: 0x500 };
    load_state(
        vcpu,
        mode,
        kvm_regs { rip: entry, rsi: zero_page, rflags: 0x2, ..Default::default() },
    )
}

/// The PVH entry state (Xen's PVH ABI): 32-bit protected mode, paging off, flat segments,
/// EBX = the start info, interrupts off.
fn enter_pvh(vcpu: &VcpuFd, entry: u64, start_info: u64) -> Result<(), Error> {
    let mode = Mode { long: false, cr0: 0x11, cr3: 0, cr4: 0, efer: 0 }; // PE | ET
    load_state(
        vcpu,
        mode,
        kvm_regs { rip: entry, rbx: start_info, rflags: 0x2, ..Default::default() },
    )
}

/// The MSRs firmware would have set: memory write-back by default (without it the guest's
/// memory is uncached and a kernel crawls), fast string operations. Says how many took.
pub fn set_msrs(vcpu: &VcpuFd) -> Result<(), Error> {
    const IA32_MTRR_DEF_TYPE: u32 = 0x2ff;
    const IA32_MISC_ENABLE: u32 = 0x1a0;
    let entries = [
        kvm_bindings::kvm_msr_entry {
            index: IA32_MTRR_DEF_TYPE,
            data: (1 << 11) | 6,
            ..Default::default()
        },
        kvm_bindings::kvm_msr_entry { index: IA32_MISC_ENABLE, data: 1, ..Default::default() },
    ];
    let msrs = kvm_bindings::Msrs::from_entries(&entries).map_err(Error::memory("the MSR list"))?;
    let set = vcpu.set_msrs(&msrs).map_err(Error::kvm("KVM_SET_MSRS"))?;
    if set != entries.len() {
        // This host refuses some MSRs (REFERENCE.md): the first refused one is named.
        return Err(Error::MsrRefused { set, of: entries.len(), index: entries[set].index });
    }
    Ok(())
}

/// LINT0 as ExtINT and LINT1 as NMI, as a PC's board wires them.
pub fn wire_lints(vcpu: &VcpuFd) -> Result<(), Error> {
    const LVT_LINT0: usize = 0x350;
    const LVT_LINT1: usize = 0x360;
    const EXTINT: u32 = 0x7 << 8;
    const NMI: u32 = 0x4 << 8;
    let mut lapic = vcpu.get_lapic().map_err(Error::kvm("KVM_GET_LAPIC"))?;
    let mut set = |offset: usize, mode: u32| {
        let bytes: Vec<u8> = lapic.regs[offset..offset + 4].iter().map(|b| *b as u8).collect();
        let old = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let new = (old & !0x700) | mode;
        for (i, b) in new.to_le_bytes().iter().enumerate() {
            lapic.regs[offset + i] = *b as libc::c_char;
        }
    };
    set(LVT_LINT0, EXTINT);
    set(LVT_LINT1, NMI);
    vcpu.set_lapic(&lapic).map_err(Error::kvm("KVM_SET_LAPIC"))
}

/// What KVM's internal error was (kvm-ioctls' exit carries no data: it is in kvm_run).
fn internal_error(vcpu: &mut VcpuFd) -> String {
    let rip = vcpu.get_regs().map(|r| r.rip).unwrap_or_default();
    // SAFETY: after a KVM_EXIT_INTERNAL_ERROR exit, `internal` is the union member KVM wrote.
    let suberror = unsafe { vcpu.get_kvm_run().__bindgen_anon_1.internal.suberror };
    let what = match suberror {
        kvm_bindings::KVM_INTERNAL_ERROR_EMULATION => "emulation failure",
        kvm_bindings::KVM_INTERNAL_ERROR_SIMUL_EX => "exception while delivering an exception",
        kvm_bindings::KVM_INTERNAL_ERROR_DELIVERY_EV => "event delivery failed",
        _ => "other",
    };
    format!("KVM internal error: {what} (suberror {suberror}) at rip {rip:#x}")
}

/// Runs `vcpu` until the guest stops or `stop` is set by someone else (the vCPU is kicked out
/// of KVM_RUN with a signal, see `Machine::stop`); waits at `gate` while the VM is paused.
pub fn run(
    vcpu: &mut VcpuFd,
    io: &Bus,
    mmio: &Bus,
    stop: &StopRequest,
    gate: &super::pause::PauseGate,
) -> Exit {
    loop {
        gate.park_while_paused(stop);
        if let Some(exit) = stop.get() {
            return exit;
        }
        let exit = match vcpu.run() {
            Ok(VcpuExit::IoIn(port, data)) => {
                io.read(u64::from(port), data);
                None
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                io.write(u64::from(port), data);
                None
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                mmio.read(addr, data);
                None
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                mmio.write(addr, data);
                None
            }
            Ok(VcpuExit::Hlt) => Some(Exit::Halted),
            Ok(VcpuExit::Shutdown) => Some(Exit::Reboot("triple fault".into())),
            Ok(VcpuExit::SystemEvent(kind, _)) => Some(match kind {
                kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => Exit::PowerOff,
                _ => Exit::Reboot(format!("system event {kind}")),
            }),
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                Some(Exit::Crashed(format!("KVM entry failed: reason {reason:#x} on cpu {cpu}")))
            }
            Ok(VcpuExit::InternalError) => Some(Exit::Crashed(internal_error(vcpu))),
            Ok(other) => Some(Exit::Crashed(format!("unexpected vCPU exit {other:?}"))),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                vcpu.set_kvm_immediate_exit(0);
                None
            }
            Err(e) => Some(Exit::Crashed(format!("KVM_RUN: {e}"))),
        };
        if let Some(exit) = exit {
            stop.set(exit);
        }
    }
}
