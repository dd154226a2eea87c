//! Can this host's KVM run a Linux kernel? Nested, software-assisted KVM (these build
//! machines) runs simple guests but fails on instructions a kernel executes in its first
//! milliseconds (DESIGN.md): `lock cmpxchg16b`, `xsave`/`xrstor`, `int3`. The probe boots a
//! few bytes of 64-bit code that executes each of them and reports its progress on an I/O
//! port, so `cairn up` and the tests can say exactly why the native backend cannot be used.
//!
//! The code, assembled with GNU as (`as --64`), loaded at guest address `0x10000` (`CODE`):
//!
//! ```text
//! 0x00 mov $1,%al; out %al,$0xf4            long mode reached
//! 0x04 mov $0x11000,%rsi; xor eax, edx, ecx; mov $1,%ebx
//! 0x16 lock cmpxchg16b (%rsi)
//! 0x1b mov $2,%al; out %al,$0xf4
//! 0x1f xor %ecx,%ecx; mov $3,%eax; xor %edx,%edx; xsetbv     XCR0 = x87 | SSE
//! 0x2b mov $0x12000,%rdi; mov $3,%eax; xor %edx,%edx
//! 0x39 xsave (%rdi); xrstor (%rdi)
//! 0x3f mov $3,%al; out %al,$0xf4
//! 0x43 int3                                  -> handler at 0x80: mov $4,%al; out; iretq
//! 0x44 mov $5,%al; out %al,$0xf4; mov $0xff,%al; out %al,$0xf4; 1: hlt; jmp 1b
//! ```

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuExit};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::Error;

const CODE: u64 = 0x10000;
const STACK: u64 = 0x8000;
/// After the GDT at 0x500 (four entries), as Firecracker places it.
const IDT: u64 = 0x520;
const PORT: u16 = 0xf4;
const DONE: u8 = 0xff;

#[rustfmt::skip]
const PROBE: [u8; 134] = [
    0xb0, 0x01, 0xe6, 0xf4, 0x48, 0xc7, 0xc6, 0x00, 0x10, 0x01, 0x00, 0x31,
    0xc0, 0x31, 0xd2, 0xbb, 0x01, 0x00, 0x00, 0x00, 0x31, 0xc9, 0xf0, 0x48,
    0x0f, 0xc7, 0x0e, 0xb0, 0x02, 0xe6, 0xf4, 0x31, 0xc9, 0xb8, 0x03, 0x00,
    0x00, 0x00, 0x31, 0xd2, 0x0f, 0x01, 0xd1, 0x48, 0xc7, 0xc7, 0x00, 0x20,
    0x01, 0x00, 0xb8, 0x03, 0x00, 0x00, 0x00, 0x31, 0xd2, 0x0f, 0xae, 0x27,
    0x0f, 0xae, 0x2f, 0xb0, 0x03, 0xe6, 0xf4, 0xcc, 0xb0, 0x05, 0xe6, 0xf4,
    0xb0, 0xff, 0xe6, 0xf4, 0xf4, 0xeb, 0xfd, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xb0, 0x04, 0xe6, 0xf4,
    0x48, 0xcf,
];
const HANDLER: u64 = CODE + 0x80;

/// What the step after the last one reported was doing.
fn step_name(last: u8) -> &'static str {
    match last {
        0 => "entering long mode",
        1 => "lock cmpxchg16b",
        2 => "xsetbv/xsave/xrstor",
        3 => "int3",
        4 => "iretq from the int3 handler",
        _ => "finishing",
    }
}

/// Runs the probe: `Ok` when every instruction ran, else why not.
pub fn can_run_linux() -> Result<(), Error> {
    let kvm = Kvm::new().map_err(Error::kvm("/dev/kvm"))?;
    let vm = kvm.create_vm().map_err(Error::kvm("KVM_CREATE_VM"))?;
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 21)])
        .map_err(Error::memory("the probe's"))?;
    let host = mem.get_host_address(GuestAddress(0)).map_err(Error::memory("the probe's"))?;
    let region = kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: 0,
        memory_size: 1 << 21,
        userspace_addr: host as u64,
        flags: 0,
    };
    // SAFETY: `mem` outlives the VM, which is dropped at the end of this function.
    unsafe { vm.set_user_memory_region(region) }
        .map_err(Error::kvm("KVM_SET_USER_MEMORY_REGION"))?;
    write_guest(&mem)?;

    let mut vcpu = vm.create_vcpu(0).map_err(Error::kvm("KVM_CREATE_VCPU"))?;
    let cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(Error::kvm("KVM_GET_SUPPORTED_CPUID"))?;
    vcpu.set_cpuid2(&cpuid).map_err(Error::kvm("KVM_SET_CPUID2"))?;
    super::cpu::enter_long_mode(&vcpu, CODE, 0)?;
    // What the probed instructions need on top: SSE and XSAVE enabled, an IDT, a stack.
    let mut sregs = vcpu.get_sregs().map_err(Error::kvm("KVM_GET_SREGS"))?;
    sregs.cr4 |= 0x200 | 0x400 | 0x4_0000; // OSFXSR, OSXMMEXCPT, OSXSAVE
    sregs.cr0 |= 0x2 | 0x20; // MP, NE
    sregs.idt.base = IDT;
    sregs.idt.limit = 4 * 16 - 1;
    vcpu.set_sregs(&sregs).map_err(Error::kvm("KVM_SET_SREGS"))?;
    let mut regs = vcpu.get_regs().map_err(Error::kvm("KVM_GET_REGS"))?;
    regs.rsp = STACK;
    vcpu.set_regs(&regs).map_err(Error::kvm("KVM_SET_REGS"))?;

    let mut last = 0u8;
    for _ in 0..64 {
        match vcpu.run() {
            Ok(VcpuExit::IoOut(PORT, [DONE])) => return Ok(()),
            Ok(VcpuExit::IoOut(PORT, [step])) => last = *step,
            Ok(VcpuExit::InternalError) => return Err(Error::CannotEmulate(step_name(last))),
            Ok(other) => {
                let exit = format!("{other:?}");
                return Err(Error::ProbeStopped { step: step_name(last), exit });
            }
            Err(source) => return Err(Error::Kvm { op: "KVM_RUN", source }),
        }
    }
    Err(Error::ProbeUnfinished(step_name(last)))
}

/// The code, the GDT and page tables of a 64-bit entry, and the IDT with the int3 gate.
fn write_guest(mem: &GuestMemoryMmap) -> Result<(), Error> {
    let err = |e: vm_memory::GuestMemoryError| Error::memory("the probe's")(e);
    mem.write_slice(&PROBE, GuestAddress(CODE)).map_err(err)?;
    super::cpu::write_gdt(mem, super::cpu::CODE64)?;
    super::cpu::write_page_tables(mem)?;
    // An interrupt gate (present, DPL 0, type 0xe, code selector 0x10) for vector 3.
    let gate_low =
        (HANDLER & 0xffff) | (0x10 << 16) | (0x8e00 << 32) | ((HANDLER >> 16) & 0xffff) << 48;
    mem.write_obj(gate_low, GuestAddress(IDT + 3 * 16)).map_err(err)?;
    mem.write_obj(HANDLER >> 32, GuestAddress(IDT + 3 * 16 + 8)).map_err(err)
}

#[cfg(test)]
mod tests {
    /// Runs the probe for real where /dev/kvm opens, and prints the verdict: both answers are
    /// correct answers (this host's nested KVM fails it, a bare-metal host passes).
    #[test]
    fn the_probe_gives_a_verdict_with_a_reason() {
        if std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_err() {
            eprintln!("skipped: no /dev/kvm");
            return;
        }
        match super::can_run_linux() {
            Ok(()) => eprintln!("KVM runs the instructions Linux needs"),
            Err(why) => {
                let why = why.to_string();
                eprintln!("{why}");
                assert!(
                    !why.contains("entering long mode"),
                    "the probe itself must get to long mode: {why}"
                );
            }
        }
    }
}
