//! Direct kernel boot, no firmware. Two ways in:
//! - PVH: an ELF kernel (Linux's vmlinux, or the tests' guest) is loaded at its physical
//!   addresses and `hvm_start_info` (command line, memory map, initramfs) tells it where
//!   everything is; the vCPU starts at the PVH entry in 32-bit protected mode.
//! - The Linux boot protocol: a bzImage is loaded at 1 MiB with its zero page (`boot_params`:
//!   setup header, e820 map, command line, initramfs, RSDP) and the vCPU starts at the 64-bit
//!   entry (load address + 0x200) in long mode with RSI pointing at the zero page.
//!
//! The kernel's format decides, by its magic.

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

/// Where the boot vCPU starts, and in which mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// 32-bit protected mode at `entry`, EBX = `start_info`.
    Pvh { entry: u64, start_info: u64 },
    /// 64-bit long mode at `entry`, RSI = `zero_page`.
    Linux64 { entry: u64, zero_page: u64 },
}

/// bzImage's setup header magic ("HdrS") at offset 0x202.
fn is_bzimage(path: &Path) -> Result<bool, Error> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut magic = [0u8; 4];
    let read = file.seek(SeekFrom::Start(0x202)).and_then(|_| file.read_exact(&mut magic));
    Ok(read.is_ok() && &magic == b"HdrS")
}

fn command_line(mem: &GuestMemoryMmap, text: &str) -> Result<(), Error> {
    let mut cmdline = Cmdline::new(layout::CMDLINE_MAX).map_err(Error::load("the command line"))?;
    cmdline.insert_str(text).map_err(Error::load(format!("the command line {text:?}")))?;
    linux_loader::loader::load_cmdline(mem, GuestAddress(layout::CMDLINE), &cmdline)
        .map_err(Error::load("the command line"))
}

/// Loads a bzImage with its zero page.
fn load_bzimage(mem: &GuestMemoryMmap, boot: &Kernel<'_>) -> Result<Entry, Error> {
    use linux_loader::configurator::linux::LinuxBootConfigurator;
    use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
    let mut image = File::open(boot.kernel).map_err(|e| Error::io(boot.kernel, e))?;
    let loaded = linux_loader::loader::BzImage::load(
        mem,
        None,
        &mut image,
        Some(GuestAddress(layout::KERNEL)),
    )
    .map_err(Error::load(boot.kernel.display()))?;
    let header = loaded.setup_header.ok_or_else(|| Error::NoSetupHeader(boot.kernel.into()))?;
    command_line(mem, boot.cmdline)?;
    let mut params =
        boot_params { hdr: header, acpi_rsdp_addr: layout::RSDP, ..Default::default() };
    params.hdr.type_of_loader = 0xff; // "undefined" loader
    params.hdr.boot_flag = 0xaa55;
    params.hdr.header = 0x5372_6448;
    params.hdr.cmd_line_ptr = layout::CMDLINE as u32;
    params.hdr.cmdline_size = boot.cmdline.len() as u32 + 1;
    params.hdr.kernel_alignment = 0x100_0000;
    if let Some(initrd) = boot.initrd {
        let (addr, size) = load_initrd(mem, initrd, loaded.kernel_end)?;
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    let map = memory_map(mem);
    if map.len() > params.e820_table.len() {
        return Err(Error::MemoryMap(map.len()));
    }
    for (slot, entry) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry { addr: entry.addr, size: entry.size, r#type: entry.type_ };
    }
    params.e820_entries = map.len() as u8;
    let zero_page = BootParams::new(&params, GuestAddress(layout::ZERO_PAGE));
    LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(&zero_page, mem)
        .map_err(boot_err)?;
    Ok(Entry::Linux64 {
        entry: loaded.kernel_load.raw_value() + 0x200,
        zero_page: layout::ZERO_PAGE,
    })
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
    if is_bzimage(boot.kernel)? {
        return load_bzimage(mem, boot);
    }
    let open = |p: &Path| File::open(p).map_err(|e| Error::io(p, e));
    let mut image = open(boot.kernel)?;
    let loaded = Elf::load(mem, None, &mut image, Some(GuestAddress(layout::KERNEL))).map_err(
        Error::load(format!("{} (an ELF kernel with a PVH note is needed)", boot.kernel.display())),
    )?;
    let PvhBootCapability::PvhEntryPresent(entry) = loaded.pvh_boot_cap else {
        return Err(Error::NoPvhEntry(boot.kernel.into()));
    };
    command_line(mem, boot.cmdline)?;

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
    Ok(Entry::Pvh { entry: entry.raw_value(), start_info: layout::START_INFO })
}

fn boot_err<E: std::error::Error + Send + Sync + 'static>(e: E) -> Error {
    Error::load("the boot information")(e)
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
        return Err(Error::InitrdTooLarge { path: path.into(), mib: size >> 20 });
    };
    mem.write_slice(&data, GuestAddress(addr)).map_err(Error::load(path.display()))?;
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
