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

/// Writes the flat GDT the PVH entry state refers to: null, null, 32-bit code, data.
pub fn write_gdt(mem: &GuestMemoryMmap) -> Result<(), Error> {
    let gdt: [u64; 4] = [0, 0, 0x00cf_9b00_0000_ffff, 0x00cf_9300_0000_ffff];
    for (i, entry) in gdt.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(layout::GDT + 8 * i as u64))
            .map_err(|e| Error::Kernel(format!("writing the GDT: {e}")))?;
    }
    Ok(())
}

fn flat_segment(selector: u16, type_: u8) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: 1,
        s: 1,
        l: 0,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// The PVH entry state (Xen's PVH ABI): 32-bit protected mode, paging off, flat segments,
/// EBX = the start info, interrupts off.
pub fn enter_pvh(vcpu: &VcpuFd, entry: u64, start_info: u64) -> Result<(), Error> {
    let mut sregs = vcpu.get_sregs().map_err(Error::kvm("KVM_GET_SREGS"))?;
    sregs.cs = flat_segment(0x10, 0xb);
    let data = flat_segment(0x18, 0x3);
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.gdt.base = layout::GDT;
    sregs.gdt.limit = 4 * 8 - 1;
    sregs.cr0 = 0x11; // PE | ET
    sregs.cr4 = 0;
    sregs.efer = 0;
    vcpu.set_sregs(&sregs).map_err(Error::kvm("KVM_SET_SREGS"))?;
    let regs = kvm_regs { rip: entry, rbx: start_info, rflags: 0x2, ..Default::default() };
    vcpu.set_regs(&regs).map_err(Error::kvm("KVM_SET_REGS"))?;
    // x87 and SSE in their reset state (FCW 0x37f, MXCSR 0x1f80).
    let fpu = kvm_fpu { fcw: 0x37f, mxcsr: 0x1f80, ..Default::default() };
    vcpu.set_fpu(&fpu).map_err(Error::kvm("KVM_SET_FPU"))
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

/// Runs `vcpu` until the guest stops or `stop` is set by someone else (the vCPU is kicked out
/// of KVM_RUN with a signal, see `Machine::stop`).
pub fn run(vcpu: &mut VcpuFd, io: &Bus, mmio: &Bus, stop: &StopRequest) -> Exit {
    loop {
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
            Ok(VcpuExit::InternalError) => Some(Exit::Crashed("KVM internal error".into())),
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
