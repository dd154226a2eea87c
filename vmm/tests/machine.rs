//! The embedded VMM under real KVM with the tests' own freestanding guest (vmm/testguest),
//! booted through its PVH entry: it prints on the serial port, finds the virtio-mmio devices,
//! reads /branch/master/ro/etc/hostname from the real cairn-9p server over virtio-9p, sends an
//! ARP request on virtio-net and gets the test backend's reply, reads virtio-rng, talks to a
//! host listener over vsock, writes, flushes, reads back and discards sectors of a data disk
//! on virtio-blk, and powers off through the ACPI sleep register; and a graceful
//! shutdown from the VMM (Ctrl-Alt-Del on the i8042) that the guest answers by powering off.

#[path = "support/testguest.rs"]
mod testguest;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use cairn_vmm::machine::{Config, Exit, Machine};
use cairn_vmm::virtio::{
    blk::BlkDevice, net, ninep::NinePDevice, rng::Rng, vsock::VsockDevice, VirtioDevice,
};

/// The gateway's MAC in the test network.
const GATEWAY_MAC: [u8; 6] = [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02];

/// A backend that answers ARP requests for 10.0.2.2 and records every frame.
struct ArpResponder {
    to_guest: mpsc::Sender<Vec<u8>>,
    incoming: Option<mpsc::Receiver<Vec<u8>>>,
    seen: mpsc::Sender<Vec<u8>>,
}

impl net::NetBackend for ArpResponder {
    fn send(&mut self, frame: &[u8]) {
        let _ = self.seen.send(frame.to_vec());
        let is_arp_request =
            frame.len() >= 42 && frame[12..14] == [8, 6] && frame[20..22] == [0, 1];
        if is_arp_request && frame[38..42] == [10, 0, 2, 2] {
            let mut reply = Vec::new();
            reply.extend_from_slice(&frame[6..12]); // to the asker
            reply.extend_from_slice(&GATEWAY_MAC);
            reply.extend_from_slice(&[8, 6, 0, 1, 8, 0, 6, 4, 0, 2]);
            reply.extend_from_slice(&GATEWAY_MAC);
            reply.extend_from_slice(&[10, 0, 2, 2]);
            reply.extend_from_slice(&frame[22..32]); // the asker's MAC and address
            reply.resize(60, 0);
            let _ = self.to_guest.send(reply);
        }
    }
    fn take_receiver(&mut self) -> Option<mpsc::Receiver<Vec<u8>>> {
        self.incoming.take()
    }
}

#[test]
#[ignore = "needs a usable /dev/kvm: tests/run.sh runs it where one opens"]
fn the_test_guest_uses_every_device_and_powers_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let guest = testguest::build(dir.path());

    // The database, with a hostname the guest will read over virtio-9p.
    let host = cairn_schema::Host { ram_mib: 8192, cores: 4, disk_mib: 0 };
    let db = Arc::new(cairn_db::Db::init(&dir.path().join("db"), host).expect("init"));
    let mut tx = db.transaction(cairn_db::CONFIG_BRANCH).expect("transaction");
    tx.set_key("hostname", b"kvm-guest").expect("a valid hostname");
    tx.commit().expect("commits");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let fs = Arc::new(cairn_9p::Fs::new(db));

    // The vsock listener the guest connects to (host port 1234).
    let vsock = dir.path().join("vsock.sock");
    let listener = UnixListener::bind(format!("{}_1234", vsock.display())).expect("binds");
    let host_side = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("the guest connects");
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).expect("reads");
        (&stream).write_all(b"hello from the host\n").expect("writes");
        line
    });

    // The data disk: 4 MiB, with 1 MiB of data where the guest discards.
    let disk = dir.path().join("data.img");
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::create(&disk).expect("disk");
        file.set_len(4 << 20).expect("size");
        file.write_all_at(&vec![0xaa; 1 << 20], 1 << 20).expect("fill");
        file.sync_all().expect("sync");
    }
    let allocated = |path: &std::path::Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).expect("stat").blocks() * 512
    };
    assert!(allocated(&disk) >= 1 << 20);

    let (to_guest, incoming) = mpsc::channel();
    let (seen, frames) = mpsc::channel();
    let backend = ArpResponder { to_guest, incoming: Some(incoming), seen };
    let devices: Vec<Box<dyn VirtioDevice>> = vec![
        Box::new(Rng::default()),
        Box::new(net::NetDevice::new([0x52, 0x54, 0, 0x12, 0x34, 0x56], Box::new(backend))),
        Box::new(NinePDevice::new("db", fs, runtime.handle().clone())),
        Box::new(VsockDevice::new(3, &vsock).expect("vsock")),
        Box::new(BlkDevice::new(&disk, "cairn-test-disk").expect("disk")),
    ];
    let console = dir.path().join("console.log");
    let mut machine = Machine::start(Config {
        memory_mib: 128,
        ncpu: 1,
        kernel: guest,
        initrd: None,
        cmdline: "console=ttyS0 cairn.poweroff=0x3c0 cairn.vsock_port=1234".into(),
        console: console.clone(),
        console_limit: 1 << 20,
        devices,
        devices_on_cmdline: true,
    })
    .expect("the VM starts");

    let (done_tx, done) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let exit = machine.wait();
        let _ = done_tx.send(());
        exit
    });
    if done.recv_timeout(Duration::from_secs(120)).is_err() {
        let text = std::fs::read_to_string(&console).unwrap_or_default();
        panic!("the guest did not power off within 120 s; console:\n{text}");
    }
    let exit = waiter.join().expect("the waiter");
    let text = std::fs::read_to_string(&console).expect("the console log");
    assert_eq!(exit, Exit::PowerOff, "console:\n{text}");

    for line in [
        "testguest: hello",
        "cairn.vsock_port=1234",
        "testguest: device 0xd0000000 id 4",
        "net: sent arp who-has 10.0.2.2",
        "net: 10.0.2.2 is at 52:55:0a:00:02:02",
        "9p: tag db",
        "9p: hostname kvm-guest",
        "vsock: cid 3",
        "vsock: connected",
        "vsock: received hello from the host",
        "blk: capacity 8192 sectors",
        "blk: id cairn-test-disk",
        "blk: wrote, flushed and read back 4 sectors at 8",
        "blk: a read past the end is an I/O error",
        "blk: discarded 2048 sectors at 2048",
        "testguest: poweroff",
    ] {
        assert!(text.contains(line), "{line:?} missing from the console:\n{text}");
    }
    let rng = text.lines().find_map(|l| l.strip_prefix("rng: ")).expect("rng bytes");
    assert!(rng.len() == 32 && rng != "0".repeat(32), "{rng}");
    assert_eq!(host_side.join().expect("host side"), "hello from the guest\n");
    let frame = frames.recv_timeout(Duration::from_secs(1)).expect("the guest sent a frame");
    assert_eq!(&frame[0..6], &[0xff; 6], "the ARP request is a broadcast");
    assert_eq!(&frame[6..12], &[0x52, 0x54, 0, 0x12, 0x34, 0x56], "from the MAC the device gave");
    // What the guest wrote is in the file, at its sector; the discarded range is a hole.
    let bytes = std::fs::read(&disk).expect("the disk");
    let expected: Vec<u8> = (0..2048).map(|i| (i % 251) as u8).collect();
    assert_eq!(&bytes[8 * 512..8 * 512 + 2048], &expected[..]);
    assert!(bytes[1 << 20..2 << 20].iter().all(|b| *b == 0), "the discarded range reads as zeroes");
    assert!(allocated(&disk) < 512 << 10, "the hole gave the space back: {}", allocated(&disk));
}

#[test]
#[ignore = "needs a usable /dev/kvm: tests/run.sh runs it where one opens"]
fn a_graceful_shutdown_reaches_the_guest_as_ctrl_alt_del() {
    let dir = tempfile::tempdir().expect("tempdir");
    let console = dir.path().join("console.log");
    let mut machine = Machine::start(Config {
        memory_mib: 64,
        ncpu: 1,
        kernel: testguest::build(dir.path()),
        initrd: None,
        cmdline: "cairn.poweroff=0x3c0 cairn.await_ctrl_alt_del".into(),
        console: console.clone(),
        console_limit: 1 << 20,
        devices: Vec::new(),
        devices_on_cmdline: true,
    })
    .expect("the VM starts");
    let waiting = || std::fs::read_to_string(&console).unwrap_or_default();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !waiting().contains("testguest: waiting for ctrl-alt-del") {
        assert!(std::time::Instant::now() < deadline, "the guest never waited:\n{}", waiting());
        std::thread::sleep(Duration::from_millis(10));
    }
    // The guest powers off on its own once it sees the keys: no forced stop.
    let exit = machine.shutdown(Duration::from_secs(60));
    let text = waiting();
    assert_eq!(exit, Exit::PowerOff, "console:\n{text}");
    assert!(text.contains("testguest: ctrl-alt-del\ntestguest: poweroff\n"), "{text}");
}
