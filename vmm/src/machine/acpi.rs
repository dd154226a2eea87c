//! ACPI tables, so that a stock kernel (Debian's has no virtio-mmio command-line devices built
//! in, only ACPI discovery) finds the virtio-mmio devices, its CPUs and the I/O APIC, and can
//! power off. The platform is hardware-reduced: no PM timer or GPE blocks, just the sleep
//! control and status registers. Each virtio device is described as Firecracker and
//! cloud-hypervisor do: `LNRO0005` with its 4 KiB window and an edge-triggered interrupt.

use acpi_tables::{aml, fadt, gas, madt, rsdp::Rsdp, sdt::Sdt, xsdt::XSDT, Aml};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout;
use super::Error;

const OEM_ID: [u8; 6] = *b"CAIRN ";
const OEM_TABLE: [u8; 8] = *b"CAIRNVMM";

/// A virtio-mmio device as the DSDT describes it.
#[derive(Debug, Clone, Copy)]
pub struct MmioDevice {
    pub base: u64,
    pub gsi: u32,
}

fn bytes(table: &dyn Aml) -> Vec<u8> {
    let mut out = Vec::new();
    table.to_aml_bytes(&mut out);
    out
}

/// The DSDT: one device per virtio-mmio window, and `_S5_` so that poweroff writes SLP_TYP 5.
fn dsdt(devices: &[MmioDevice]) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, device) in devices.iter().enumerate() {
        let memory =
            aml::Memory32Fixed::new(true, device.base as u32, layout::VIRTIO_MMIO_SIZE as u32);
        let irq = aml::Interrupt::new(true, true, false, false, device.gsi);
        let crs = aml::ResourceTemplate::new(vec![&memory, &irq]);
        let hid = aml::Name::new("_HID".into(), &"LNRO0005");
        let uid = aml::Name::new("_UID".into(), &(i as u32));
        let cca = aml::Name::new("_CCA".into(), &aml::ONE);
        let crs = aml::Name::new("_CRS".into(), &crs);
        let path = format!("_SB_.V{i:03X}");
        aml::Device::new(path.as_str().into(), vec![&hid, &uid, &cca, &crs])
            .to_aml_bytes(&mut body);
    }
    let sleep_type = layout::S5_SLEEP_TYPE;
    let s5 = aml::Package::new(vec![&sleep_type, &aml::ZERO]);
    aml::Name::new("_S5_".into(), &s5).to_aml_bytes(&mut body);
    let mut table = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE, 1);
    table.append_slice(&body);
    bytes(&table)
}

fn fadt(dsdt: u64) -> Vec<u8> {
    let mut builder = fadt::FADTBuilder::new(OEM_ID, OEM_TABLE, 1)
        .flag(fadt::Flags::HwReducedAcpi)
        .flag(fadt::Flags::PwrButton)
        .flag(fadt::Flags::SlpButton)
        .dsdt_64(dsdt);
    let register = |port: u16| {
        gas::GAS::new(
            gas::AddressSpace::SystemIo,
            8,
            0,
            gas::AccessSize::ByteAccess,
            u64::from(port),
        )
    };
    builder.sleep_control_reg = register(layout::SLEEP_CONTROL_PORT);
    builder.sleep_status_reg = register(layout::SLEEP_STATUS_PORT);
    bytes(&builder.finalize())
}

fn madt(ncpu: u8) -> Vec<u8> {
    let mut table = madt::MADT::new(
        OEM_ID,
        OEM_TABLE,
        1,
        madt::LocalInterruptController::Address(layout::LAPIC as u32),
    );
    for id in 0..ncpu {
        table.add_structure(madt::ProcessorLocalApic::new(id, id, madt::EnabledStatus::Enabled));
    }
    table.add_structure(madt::IoApic::new(0, layout::IOAPIC as u32, 0));
    bytes(&table)
}

/// Writes RSDP, XSDT, FADT, DSDT and MADT; the RSDP at [`layout::RSDP`].
pub fn write(mem: &GuestMemoryMmap, ncpu: u8, devices: &[MmioDevice]) -> Result<(), Error> {
    let mut at = layout::ACPI_TABLES;
    let mut place = |table: Vec<u8>| -> Result<u64, Error> {
        let addr = at;
        if addr + table.len() as u64 > layout::ACPI_TABLES_END {
            return Err(Error::AcpiTooLarge);
        }
        mem.write_slice(&table, GuestAddress(addr)).map_err(Error::memory("the ACPI tables"))?;
        at = (addr + table.len() as u64 + 15) & !15;
        Ok(addr)
    };
    let dsdt = place(dsdt(devices))?;
    let fadt = place(fadt(dsdt))?;
    let madt = place(madt(ncpu))?;
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE, 1);
    xsdt.add_entry(fadt);
    xsdt.add_entry(madt);
    let xsdt = place(bytes(&xsdt))?;
    mem.write_slice(&bytes(&Rsdp::new(OEM_ID, xsdt)), GuestAddress(layout::RSDP))
        .map_err(Error::memory("the RSDP"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum_ok(table: &[u8]) -> bool {
        table.iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0
    }

    #[test]
    fn tables_are_well_formed() {
        let dsdt = dsdt(&[MmioDevice { base: layout::VIRTIO_MMIO, gsi: 5 }]);
        assert_eq!(&dsdt[0..4], b"DSDT");
        assert_eq!(
            u32::from_le_bytes(dsdt[4..8].try_into().expect("4 bytes")) as usize,
            dsdt.len()
        );
        assert!(checksum_ok(&dsdt));
        assert!(dsdt.windows(8).any(|w| w == b"LNRO0005"));
        assert!(dsdt.windows(4).any(|w| w == b"_S5_"));
        let fadt = fadt(0x1234);
        assert_eq!(&fadt[0..4], b"FACP");
        assert!(checksum_ok(&fadt));
        let flags = u32::from_le_bytes(fadt[112..116].try_into().expect("4 bytes"));
        assert_ne!(flags & (1 << 20), 0, "hardware-reduced");
        let madt = madt(2);
        assert_eq!(&madt[0..4], b"APIC");
        assert!(checksum_ok(&madt));
    }

    #[test]
    fn the_rsdp_points_at_the_xsdt() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 21)]).expect("memory");
        write(&mem, 1, &[MmioDevice { base: layout::VIRTIO_MMIO, gsi: 5 }]).expect("writes");
        let mut rsdp = [0u8; 36];
        mem.read_slice(&mut rsdp, GuestAddress(layout::RSDP)).expect("reads");
        assert_eq!(&rsdp[0..8], b"RSD PTR ");
        assert!(checksum_ok(&rsdp[..20]) && checksum_ok(&rsdp));
        let xsdt = u64::from_le_bytes(rsdp[24..32].try_into().expect("8 bytes"));
        let mut signature = [0u8; 4];
        mem.read_slice(&mut signature, GuestAddress(xsdt)).expect("reads");
        assert_eq!(&signature, b"XSDT");
    }

    /// ACPICA's disassembler (acpica-tools, installed by tests/run.sh) reads every table back.
    #[test]
    fn iasl_disassembles_the_tables() {
        let dir = tempfile::tempdir().expect("tempdir");
        let devices = [
            MmioDevice { base: layout::VIRTIO_MMIO, gsi: 5 },
            MmioDevice { base: layout::VIRTIO_MMIO + 0x1000, gsi: 6 },
        ];
        for (name, table) in [("dsdt", dsdt(&devices)), ("facp", fadt(0xe1000)), ("apic", madt(2))]
        {
            let file = dir.path().join(format!("{name}.dat"));
            std::fs::write(&file, &table).expect("writes");
            let out = std::process::Command::new("iasl")
                .arg("-d")
                .arg(&file)
                .output()
                .expect("iasl runs (apt-get install acpica-tools)");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{name}: {stderr}");
            let text = std::fs::read_to_string(dir.path().join(format!("{name}.dsl")))
                .expect("disassembly");
            if name == "dsdt" {
                for needle in [
                    "LNRO0005",
                    "_S5_",
                    "0xD0001000",
                    "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )",
                ] {
                    assert!(text.contains(needle), "{needle} not in:\n{text}");
                }
            }
            if name == "facp" {
                assert!(text.contains("Hardware Reduced (V5) : 1"), "{text}");
                assert!(text.contains("Sleep Control Register"), "{text}");
            }
        }
    }
}
