//! Just enough of a 9P2000.L client to read one file: version, attach, walk, lopen, read,
//! clunk, each request one descriptor chain (request out, reply in) on the device's queue.

use crate::println;
use crate::virtio::{alloc, Buffer, Device, Queue};

const F_MOUNT_TAG: u64 = 1;
const MSIZE: u32 = 8192;
const NOFID: u32 = !0;
const RLERROR: u8 = 7;
const TLOPEN: u8 = 12;
const TVERSION: u8 = 100;
const TATTACH: u8 = 104;
const TWALK: u8 = 110;
const TREAD: u8 = 116;
const TCLUNK: u8 = 120;

/// The path of the hostname key in the database's filesystem.
const HOSTNAME: [&str; 5] = ["branch", "master", "ro", "etc", "hostname"];

/// A request being written.
struct Message {
    bytes: &'static mut [u8],
    len: usize,
}

impl Message {
    fn new(bytes: &'static mut [u8], kind: u8, tag: u16) -> Message {
        let mut message = Message { bytes, len: 4 };
        message.u8(kind).u16(tag);
        message
    }
    fn put(&mut self, data: &[u8]) -> &mut Message {
        self.bytes[self.len..self.len + data.len()].copy_from_slice(data);
        self.len += data.len();
        self
    }
    fn u8(&mut self, v: u8) -> &mut Message {
        self.put(&[v])
    }
    fn u16(&mut self, v: u16) -> &mut Message {
        self.put(&v.to_le_bytes())
    }
    fn u32(&mut self, v: u32) -> &mut Message {
        self.put(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> &mut Message {
        self.put(&v.to_le_bytes())
    }
    fn str(&mut self, s: &str) -> &mut Message {
        self.u16(s.len() as u16).put(s.as_bytes())
    }
}

/// One request at a time, in two buffers used over and over.
struct Client<'a> {
    device: &'a Device,
    queue: Queue,
    next_tag: u16,
    /// The request buffer, lent to the [`Message`] being written.
    request: Option<&'static mut [u8]>,
    reply: &'static mut [u8],
}

impl Client<'_> {
    fn message(&mut self, kind: u8) -> Message {
        let tag = if kind == TVERSION { !0 } else { self.next_tag };
        // Tags run through 0..0xfffe: 0xffff is NOTAG.
        self.next_tag = self.next_tag.wrapping_add(1) % 0xffff;
        let bytes = self.request.take().unwrap_or_else(|| alloc(MSIZE as usize));
        Message::new(bytes, kind, tag)
    }

    /// Sends `message`, returns the reply's body (after size, type and tag), valid until the
    /// next call.
    fn call(&mut self, message: Message) -> Result<&[u8], &'static str> {
        let Message { bytes, len } = message;
        bytes[0..4].copy_from_slice(&(len as u32).to_le_bytes());
        let (kind, tag) = (bytes[4], [bytes[5], bytes[6]]);
        let submitted =
            self.queue.submit(&[Buffer::readable(&bytes[..len]), Buffer::writable(self.reply)]);
        self.request = Some(bytes);
        submitted?;
        self.device.notify(&self.queue);
        let used = self.queue.wait("a 9P reply")?;
        let reply = self.reply.get(..used.len as usize).ok_or("a reply longer than msize")?;
        if reply.len() < 7 || reply[5..7] != tag {
            return Err("a reply without the request's tag");
        }
        let size = u32::from_le_bytes([reply[0], reply[1], reply[2], reply[3]]) as usize;
        let body = reply.get(7..size).ok_or("a reply shorter than its size")?;
        if reply[4] == RLERROR {
            let errno = body.get(..4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            println!("9p: error errno {errno} for message type {kind}");
            return Err("the server answered Rlerror");
        }
        if reply[4] != kind + 1 {
            return Err("a reply of the wrong type");
        }
        Ok(body)
    }
}

/// Prints the tag, then the hostname read from the database over 9P; then reads it `again`
/// more times, for the VMM's 9P benchmark (vmm/examples/ninep_bench.rs).
pub fn read_hostname(device: &Device, again: u32) -> Result<(), &'static str> {
    if device.start(F_MOUNT_TAG)? & F_MOUNT_TAG == 0 {
        return Err("no mount tag offered");
    }
    let tag_len = u16::from_le_bytes([device.config(0), device.config(1)]) as usize;
    let mut tag = [0u8; 64];
    for (i, byte) in tag.iter_mut().enumerate().take(tag_len) {
        *byte = device.config(2 + i);
    }
    println!("9p: tag {}", core::str::from_utf8(&tag[..tag_len.min(64)]).unwrap_or("?"));
    let queue = device.queue(0, 16)?;
    device.ready()?;
    let reply = alloc(MSIZE as usize);
    let mut client = Client { device, queue, next_tag: 1, request: None, reply };

    let mut version = client.message(TVERSION);
    version.u32(MSIZE).str("9P2000.L");
    let reply = client.call(version)?;
    if reply.get(6..) != Some(&b"9P2000.L"[..]) {
        return Err("the server did not agree on 9P2000.L");
    }
    let mut attach = client.message(TATTACH);
    attach.u32(0).u32(NOFID).str("root").str("").u32(0);
    client.call(attach)?;
    let mut walk = client.message(TWALK);
    walk.u32(0).u32(1).u16(HOSTNAME.len() as u16);
    for name in HOSTNAME {
        walk.str(name);
    }
    let reply = client.call(walk)?;
    if reply.get(..2) != Some(&(HOSTNAME.len() as u16).to_le_bytes()[..]) {
        return Err("the walk stopped short of the hostname");
    }
    let mut open = client.message(TLOPEN);
    open.u32(1).u32(0);
    client.call(open)?;
    let mut read = client.message(TREAD);
    read.u32(1).u64(0).u32(MSIZE - 11);
    let data = client.call(read)?.get(4..).unwrap_or_default();
    let mut hostname = [0u8; 256];
    let len = data.len().min(hostname.len());
    hostname[..len].copy_from_slice(&data[..len]);
    let text = core::str::from_utf8(&hostname[..len]).map_err(|_| "the hostname is not UTF-8")?;
    println!("9p: hostname {}", text.trim_end());
    if again > 0 {
        for _ in 0..again {
            let mut read = client.message(TREAD);
            read.u32(1).u64(0).u32(MSIZE - 11);
            if client.call(read)?.get(4..) != Some(&hostname[..len]) {
                return Err("the hostname changed between reads");
            }
        }
        println!("9p: read it {again} more times");
    }
    for fid in [1, 0] {
        let mut clunk = client.message(TCLUNK);
        clunk.u32(fid);
        client.call(clunk)?;
    }
    Ok(())
}
