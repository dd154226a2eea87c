//! Debian's kernel on the embedded VMM. The bzImage and the guest image's initramfs are loaded
//! through the Linux boot protocol and the zero page is checked field by field; then, where
//! the KVM probe passes, the kernel must boot to its init. Where the probe fails (nested,
//! software-assisted KVM such as these build machines: a kernel dies on the instructions the
//! probe executes), the boot is skipped with the probe's reason.

use std::time::Duration;

use cairn_vmm::machine::{boot, layout, probe, Config, Machine};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

fn cache() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-cache/debs")
}

fn image(dir: &std::path::Path) -> cairn_image::Image {
    // Any static binary does as the agent here: busybox.
    let inputs = cairn_image::Inputs {
        dir: dir.join("guest"),
        cache: cache(),
        agent: "/bin/busybox".into(),
        flavour: cairn_image::Flavour::Base,
        layout: cairn_image::Layout::Initramfs,
        resolve: cairn_image::Resolve::IfMissing,
    };
    cairn_image::ensure(&inputs, &mut |_| {}).expect("the guest image builds")
}

const CMDLINE: &str = "console=ttyS0 panic=-1 reboot=k";

#[test]
fn debian_bzimage_is_loaded_by_the_linux_boot_protocol() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = image(dir.path());
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 256 << 20)]).expect("memory");
    let kernel =
        boot::Kernel { kernel: &image.kernel, initrd: Some(&image.initrd), cmdline: CMDLINE };
    let entry = boot::load(&mem, &kernel).expect("loads");
    assert_eq!(
        entry,
        boot::Entry::Linux64 { entry: layout::KERNEL + 0x200, zero_page: layout::ZERO_PAGE }
    );
    let mut page = vec![0u8; 4096];
    mem.read_slice(&mut page, GuestAddress(layout::ZERO_PAGE)).expect("reads");
    let u32_at = |i: usize| u32::from_le_bytes(page[i..i + 4].try_into().expect("4 bytes"));
    assert_eq!(&page[0x202..0x206], b"HdrS");
    assert_eq!(&page[0x1fe..0x200], &[0x55, 0xaa]);
    assert_eq!(page[0x210], 0xff, "type_of_loader");
    assert_eq!(u32_at(0x228), layout::CMDLINE as u32);
    let initrd_len = std::fs::metadata(&image.initrd).expect("initrd").len();
    assert_eq!(u64::from(u32_at(0x21c)), initrd_len);
    let ramdisk = u64::from(u32_at(0x218));
    let mut start = vec![0u8; 6];
    mem.read_slice(&mut start, GuestAddress(ramdisk)).expect("reads");
    assert_eq!(&start, b"070701", "the initramfs (newc cpio) is where the zero page says");
    assert!(page[0x1e8] >= 3, "e820 entries");
    let mut cmdline = vec![0u8; CMDLINE.len() + 1];
    mem.read_slice(&mut cmdline, GuestAddress(layout::CMDLINE)).expect("reads");
    assert_eq!(&cmdline[..CMDLINE.len()], CMDLINE.as_bytes());
    assert_eq!(u64::from_le_bytes(page[0x70..0x78].try_into().expect("8")), layout::RSDP);
}

#[test]
#[ignore = "needs a KVM that runs Linux (cairn-vmm's probe passes): tests/run.sh runs it there"]
fn debian_kernel_boots_where_kvm_can_run_linux() {
    probe::can_run_linux().expect("this host's KVM runs Linux");
    let dir = tempfile::tempdir().expect("tempdir");
    let image = image(dir.path());
    let console = dir.path().join("console.log");
    let mut machine = Machine::start(Config {
        memory_mib: 256,
        ncpu: 1,
        kernel: image.kernel.clone(),
        initrd: Some(image.initrd.clone()),
        cmdline: CMDLINE.into(),
        console: console.clone(),
        console_limit: 4 << 20,
        devices: Vec::new(),
        devices_on_cmdline: false,
    })
    .expect("the VM starts");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let booted = || {
        std::fs::read_to_string(&console).unwrap_or_default().contains("Run /init as init process")
    };
    while machine.running() && !booted() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let ok = booted();
    let exit = machine.stop();
    let text = std::fs::read_to_string(&console).unwrap_or_default();
    assert!(ok, "{exit}; console:\n{text}");
    assert!(text.contains("Linux version"), "{text}");
}
