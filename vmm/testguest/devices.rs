//! What the guest does with each device, printing one line per thing the test checks.

use crate::ninep;
use crate::println;
use crate::virtio::{alloc, Buffer, Device};

const NET: u32 = 1;
const BLK: u32 = 2;
const RNG: u32 = 4;
const NINEP: u32 = 9;
const VSOCK: u32 = 19;

/// What the command line asks of the exercises.
pub struct Options {
    /// The host port to connect to over vsock (`cairn.vsock_port=`).
    pub vsock_port: u32,
    /// How many more times to read the hostname over 9P (`cairn.bench_9p=`).
    pub ninep_reads: u32,
    /// How many more times to read random bytes (`cairn.bench_rng=`): the transport's own
    /// round trip, with a device that does next to nothing.
    pub rng_reads: u32,
}

/// The devices found, by type.
#[derive(Default)]
pub struct Found {
    rng: Option<Device>,
    net: Option<Device>,
    blk: Option<Device>,
    ninep: Option<Device>,
    vsock: Option<Device>,
}

impl Found {
    pub fn add(&mut self, device: Device) {
        match device.id() {
            RNG => self.rng = Some(device),
            NET => self.net = Some(device),
            BLK => self.blk = Some(device),
            NINEP => self.ninep = Some(device),
            VSOCK => self.vsock = Some(device),
            other => println!("testguest: no driver for device type {other}"),
        }
    }

    /// Runs each device's exercise; a failure is printed and the next one runs.
    pub fn exercise(&self, options: &Options) {
        let report = |name: &str, result: Result<(), &str>| {
            if let Err(e) = result {
                println!("{name}: failed: {e}");
            }
        };
        if let Some(device) = &self.rng {
            report("rng", rng(device, options.rng_reads));
        }
        if let Some(device) = &self.net {
            report("net", arp(device));
        }
        if let Some(device) = &self.blk {
            report("blk", crate::blk::write_flush_read(device));
        }
        if let Some(device) = &self.ninep {
            report("9p", ninep::read_hostname(device, options.ninep_reads));
        }
        if let Some(device) = &self.vsock {
            report("vsock", vsock(device, options.vsock_port));
        }
    }
}

/// Prints 16 bytes from virtio-rng as hex, then reads `again` more times.
fn rng(device: &Device, again: u32) -> Result<(), &'static str> {
    device.start(0)?;
    let mut queue = device.queue(0, 16)?;
    device.ready()?;
    let buffer = alloc(16);
    queue.submit(&[Buffer::writable(buffer)])?;
    device.notify(&queue);
    let used = queue.wait("random bytes")?;
    crate::print!("rng: ");
    for byte in used.bytes() {
        crate::print!("{byte:02x}");
    }
    println!();
    if again > 0 {
        for _ in 0..again {
            queue.submit(&[Buffer::writable(&mut *buffer)])?;
            device.notify(&queue);
            queue.wait("random bytes")?;
        }
        println!("rng: read {again} more times");
    }
    Ok(())
}

/// virtio_net_hdr_v1, zero: no offloads.
const NET_HEADER: usize = 12;
const F_MAC: u64 = 1 << 5;
const GUEST_IP: [u8; 4] = [10, 0, 2, 15];
const GATEWAY_IP: [u8; 4] = [10, 0, 2, 2];

/// Asks for the gateway's MAC with an ARP broadcast and prints the answer.
fn arp(device: &Device) -> Result<(), &'static str> {
    if device.start(F_MAC)? & F_MAC == 0 {
        return Err("no MAC address offered");
    }
    let mac: [u8; 6] = core::array::from_fn(|i| device.config(i));
    let mut rx = device.queue(0, 16)?;
    let mut tx = device.queue(1, 16)?;
    device.ready()?;
    for _ in 0..4 {
        rx.submit(&[Buffer::writable(alloc(NET_HEADER + 1514))])?;
    }
    device.notify(&rx);

    let frame = alloc(NET_HEADER + 42);
    let arp = &mut frame[NET_HEADER..];
    arp[0..6].fill(0xff);
    arp[6..12].copy_from_slice(&mac);
    arp[12..22].copy_from_slice(&[8, 6, 0, 1, 8, 0, 6, 4, 0, 1]);
    arp[22..28].copy_from_slice(&mac);
    arp[28..32].copy_from_slice(&GUEST_IP);
    arp[38..42].copy_from_slice(&GATEWAY_IP);
    tx.submit(&[Buffer::readable(frame)])?;
    device.notify(&tx);
    tx.wait("the device to take the ARP request")?;
    println!("net: sent arp who-has 10.0.2.2");

    loop {
        let used = rx.wait("an ARP reply")?;
        let reply = used.bytes().get(NET_HEADER..).unwrap_or_default();
        let is_reply = reply.len() >= 42 && reply[12..14] == [8, 6] && reply[20..22] == [0, 2];
        if is_reply && reply[28..32] == GATEWAY_IP {
            let m = &reply[22..28];
            println!(
                "net: 10.0.2.2 is at {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                m[0], m[1], m[2], m[3], m[4], m[5]
            );
            return Ok(());
        }
        println!("net: ignored a frame of {} bytes", reply.len());
        rx.submit(&[Buffer::writable(alloc(NET_HEADER + 1514))])?;
        device.notify(&rx);
    }
}

/// A vsock packet header (virtio 1.2, 5.10.6), little-endian.
const VSOCK_HEADER: usize = 44;
const HOST_CID: u64 = 2;
const GUEST_PORT: u32 = 50_000;
const OP_REQUEST: u16 = 1;
const OP_RESPONSE: u16 = 2;
const OP_RST: u16 = 3;
const OP_SHUTDOWN: u16 = 4;
const OP_RW: u16 = 5;

fn vsock_packet(cid: u64, port: u32, op: u16, payload: &[u8]) -> &'static [u8] {
    let packet = alloc(VSOCK_HEADER + payload.len());
    packet[0..8].copy_from_slice(&cid.to_le_bytes());
    packet[8..16].copy_from_slice(&HOST_CID.to_le_bytes());
    packet[16..20].copy_from_slice(&GUEST_PORT.to_le_bytes());
    packet[20..24].copy_from_slice(&port.to_le_bytes());
    packet[24..28].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    packet[28..30].copy_from_slice(&1u16.to_le_bytes()); // stream
    packet[30..32].copy_from_slice(&op.to_le_bytes());
    if op == OP_SHUTDOWN {
        packet[32..36].copy_from_slice(&3u32.to_le_bytes()); // no more receiving or sending
    }
    packet[36..40].copy_from_slice(&(64u32 * 1024).to_le_bytes()); // buf_alloc
    packet[VSOCK_HEADER..].copy_from_slice(payload);
    packet
}

/// Connects to the host's `port`, says hello, prints the host's line, and shuts down.
fn vsock(device: &Device, port: u32) -> Result<(), &'static str> {
    device.start(0)?;
    let cid = u64::from_le_bytes(core::array::from_fn(|i| device.config(i)));
    println!("vsock: cid {cid}");
    let mut rx = device.queue(0, 16)?;
    let mut tx = device.queue(1, 16)?;
    let _events = device.queue(2, 16)?;
    device.ready()?;
    for _ in 0..8 {
        rx.submit(&[Buffer::writable(alloc(VSOCK_HEADER + 4096))])?;
    }
    device.notify(&rx);

    let mut send = |op, payload: &[u8]| -> Result<(), &'static str> {
        tx.submit(&[Buffer::readable(vsock_packet(cid, port, op, payload))])?;
        device.notify(&tx);
        tx.wait("the device to take a vsock packet").map(|_| ())
    };
    send(OP_REQUEST, b"")?;
    let mut received = [0u8; 256];
    let mut len = 0;
    let mut connected = false;
    while !received[..len].contains(&b'\n') {
        let used = rx.wait("a vsock packet from the host")?;
        let packet = used.bytes();
        if packet.len() < VSOCK_HEADER {
            return Err("a short vsock packet");
        }
        let op = u16::from_le_bytes([packet[30], packet[31]]);
        match op {
            OP_RESPONSE if !connected => {
                connected = true;
                println!("vsock: connected");
                send(OP_RW, b"hello from the guest\n")?;
            }
            OP_RW => {
                let payload = &packet[VSOCK_HEADER..];
                let take = payload.len().min(received.len() - len);
                received[len..len + take].copy_from_slice(&payload[..take]);
                len += take;
            }
            OP_RST => return Err("the host reset the connection"),
            _ => {}
        }
        rx.submit(&[Buffer::writable(alloc(VSOCK_HEADER + 4096))])?;
        device.notify(&rx);
    }
    let line = core::str::from_utf8(&received[..len]).unwrap_or("(not UTF-8)");
    println!("vsock: received {}", line.trim_end());
    send(OP_SHUTDOWN, b"")
}
