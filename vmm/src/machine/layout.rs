//! Where things live in the guest's physical address space. One fixed map for every VM: the
//! guest finds its memory in the e820 map, its devices in ACPI (and on the command line), so
//! nothing here is negotiated.

/// A GDT for the 32-bit PVH entry (the kernel loads its own soon after).
pub const GDT: u64 = 0x500;
/// Page tables for a 64-bit entry: PML4, PDPT, one page directory of 2 MiB pages (1 GiB).
pub const PML4: u64 = 0x9000;
pub const PDPT: u64 = 0xa000;
pub const PD: u64 = 0xb000;
/// PVH `hvm_start_info`, then its memory map.
pub const START_INFO: u64 = 0x6000;
pub const MEMMAP: u64 = 0x7000;
/// The Linux zero page (`boot_params`) for a bzImage boot.
pub const ZERO_PAGE: u64 = 0x7000;
/// The kernel command line, NUL-terminated.
pub const CMDLINE: u64 = 0x20000;
pub const CMDLINE_MAX: usize = 4096;
/// ACPI tables: RSDP where a BIOS would put it (the kernel scans 0xe0000..0x100000), the
/// other tables right after.
pub const RSDP: u64 = 0xe0000;
pub const ACPI_TABLES: u64 = 0xe1000;
pub const ACPI_TABLES_END: u64 = 0x100000;
/// Kernels are loaded here (the Linux boot protocol's and PVH's customary 1 MiB).
pub const KERNEL: u64 = 0x100000;
/// Below this, the e820 map reports RAM only up to the EBDA, as real firmware would.
pub const EBDA: u64 = 0x9fc00;
/// RAM stops here below 4 GiB; the hole up to 4 GiB holds the devices.
pub const MMIO_HOLE: u64 = 0xc000_0000;
/// virtio-mmio devices: one 4 KiB window each, from here.
pub const VIRTIO_MMIO: u64 = 0xd000_0000;
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// Their interrupts: GSI 5 upwards (below are the legacy ISA lines: 4 is COM1).
pub const VIRTIO_IRQ: u32 = 5;
pub const SERIAL_IRQ: u32 = 4;
/// The i8042 keyboard's ISA line.
pub const KEYBOARD_IRQ: u32 = 1;
pub const IOAPIC: u64 = 0xfec0_0000;
pub const LAPIC: u64 = 0xfee0_0000;
/// RAM above the hole.
pub const HIGH_RAM: u64 = 1 << 32;
/// KVM's TSS and identity-map pages (Intel needs them inside the 4 GiB space, unused by RAM).
pub const KVM_TSS: u64 = 0xfffb_d000;
pub const KVM_IDENTITY_MAP: u64 = 0xfffb_c000;
/// The ACPI sleep control and status registers of the hardware-reduced FADT: writing
/// SLP_TYP=5 with SLP_EN powers off.
pub const SLEEP_CONTROL_PORT: u16 = 0x3c0;
pub const SLEEP_STATUS_PORT: u16 = 0x3c1;
pub const S5_SLEEP_TYPE: u8 = 5;
/// The 16550 UART on COM1.
pub const COM1: u16 = 0x3f8;
/// The i8042 controller's command port: 0xfe there resets the machine.
pub const I8042_COMMAND: u16 = 0x64;
pub const I8042_DATA: u16 = 0x60;

/// The guest RAM regions for `memory` bytes: below the hole, then above 4 GiB.
pub fn ram_regions(memory: u64) -> Vec<(u64, u64)> {
    if memory <= MMIO_HOLE {
        vec![(0, memory)]
    } else {
        vec![(0, MMIO_HOLE), (HIGH_RAM, memory - MMIO_HOLE)]
    }
}

/// The address of the `index`th virtio-mmio device and its GSI.
pub fn virtio_slot(index: usize) -> (u64, u32) {
    (VIRTIO_MMIO + index as u64 * VIRTIO_MMIO_SIZE, VIRTIO_IRQ + index as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_skips_the_device_hole() {
        assert_eq!(ram_regions(512 << 20), vec![(0, 512 << 20)]);
        assert_eq!(ram_regions(4 << 30), vec![(0, MMIO_HOLE), (HIGH_RAM, (4 << 30) - MMIO_HOLE)]);
        assert_eq!(virtio_slot(2), (VIRTIO_MMIO + 0x2000, VIRTIO_IRQ + 2));
    }
}
