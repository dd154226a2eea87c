//! Direct kernel boot through the PVH entry: the ELF kernel (Linux's vmlinux, or the tests'
//! guest) is loaded at its physical addresses, the initramfs high in low memory, and the
//! `hvm_start_info` with the command line and the memory map tells the guest where it all is.
//! No firmware runs: the vCPU starts at the PVH entry in 32-bit protected mode.

use std::fs::File;
use std::path::Path;

use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::elf::start_info::{hvm_memmap_table_entry, hvm_start_info};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::KernelLoader;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::layout;
use super::Error;

const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;

/// Where the boot vCPU starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub pvh: u64,
    pub start_info: u64,
}

/// What to boot.
#[derive(Debug)]
pub struct Kernel<'a> {
    pub kernel: &'a Path,
    pub initrd: Option<&'a Path>,
    pub cmdline: &'a str,
}

/// Loads the kernel, the initramfs and the boot information into `mem`.
pub fn load(mem: &GuestMemoryMmap, boot: &Kernel<'_>) -> Result<Entry, Error> {
    let open = |p: &Path| File::open(p).map_err(|e| Error::io(p, e));
    let mut image = open(boot.kernel)?;
    let loaded =
        Elf::load(mem, None, &mut image, Some(GuestAddress(layout::KERNEL))).map_err(|e| {
            Error::Kernel(format!(
                "{}: {e} (an ELF kernel with a PVH note is needed)",
                boot.kernel.display()
            ))
        })?;
    let PvhBootCapability::PvhEntryPresent(entry) = loaded.pvh_boot_cap else {
        return Err(Error::Kernel(format!(
            "{}: no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)",
            boot.kernel.display()
        )));
    };
    let mut cmdline = Cmdline::new(layout::CMDLINE_MAX)
        .map_err(|e| Error::Kernel(format!("command line: {e}")))?;
    cmdline
        .insert_str(boot.cmdline)
        .map_err(|e| Error::Kernel(format!("command line {:?}: {e}", boot.cmdline)))?;
    linux_loader::loader::load_cmdline(mem, GuestAddress(layout::CMDLINE), &cmdline)
        .map_err(|e| Error::Kernel(format!("command line: {e}")))?;

    let mut start_info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: layout::CMDLINE,
        rsdp_paddr: layout::RSDP,
        ..Default::default()
    };
    let mut params = BootParams::new(&start_info, GuestAddress(layout::START_INFO));
    if let Some(initrd) = boot.initrd {
        let (addr, size) = load_initrd(mem, initrd, loaded.kernel_end)?;
        let module = linux_loader::loader::elf::start_info::hvm_modlist_entry {
            paddr: addr,
            size,
            ..Default::default()
        };
        // Modules go after the memory map; placed below.
        params.add_module(&module, Some(GuestAddress(layout::MEMMAP + 0x800))).map_err(boot_err)?;
        start_info.nr_modules = 1;
        start_info.modlist_paddr = layout::MEMMAP + 0x800;
    }
    let memmap = memory_map(mem);
    start_info.memmap_paddr = layout::MEMMAP;
    start_info.memmap_entries = memmap.len() as u32;
    params.header = vm_memory::ByteValued::as_slice(&start_info).to_vec();
    params.set_sections(&memmap, GuestAddress(layout::MEMMAP));
    PvhBootConfigurator::write_bootparams::<GuestMemoryMmap>(&params, mem).map_err(boot_err)?;
    Ok(Entry { pvh: entry.raw_value(), start_info: layout::START_INFO })
}

fn boot_err(e: impl std::fmt::Display) -> Error {
    Error::Kernel(format!("boot information: {e}"))
}

/// Puts the initramfs at the top of low RAM (page aligned), above the kernel.
fn load_initrd(mem: &GuestMemoryMmap, path: &Path, kernel_end: u64) -> Result<(u64, u64), Error> {
    let data = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let size = data.len() as u64;
    let low_end = mem
        .iter()
        .map(|r| vm_memory::GuestMemoryRegion::last_addr(r).raw_value() + 1)
        .filter(|end| *end <= layout::MMIO_HOLE)
        .max()
        .unwrap_or(0);
    let addr = low_end.checked_sub(size).map(|a| a & !0xfff).filter(|a| *a > kernel_end);
    let Some(addr) = addr else {
        return Err(Error::Kernel(format!(
            "{}: {} MiB does not fit in guest memory above the kernel",
            path.display(),
            size >> 20
        )));
    };
    mem.write_slice(&data, GuestAddress(addr))
        .map_err(|e| Error::Kernel(format!("{}: {e}", path.display())))?;
    Ok((addr, size))
}

/// The e820 map: RAM below the EBDA, the BIOS area reserved, RAM from 1 MiB, RAM above 4 GiB.
fn memory_map(mem: &GuestMemoryMmap) -> Vec<hvm_memmap_table_entry> {
    let entry = |addr: u64, size: u64, type_: u32| hvm_memmap_table_entry {
        addr,
        size,
        type_,
        reserved: 0,
    };
    let mut map = vec![
        entry(0, layout::EBDA, E820_RAM),
        entry(layout::EBDA, layout::KERNEL - layout::EBDA, E820_RESERVED),
    ];
    for region in mem.iter() {
        let start = vm_memory::GuestMemoryRegion::start_addr(region).raw_value();
        let end = vm_memory::GuestMemoryRegion::last_addr(region).raw_value() + 1;
        let start = start.max(layout::KERNEL);
        if end > start {
            map.push(entry(start, end - start, E820_RAM));
        }
    }
    map
}
