//! The data disk's exercise: the disk's size and id, sectors written, flushed and read back,
//! a read past the end that must fail, and a discard.

use crate::println;
use crate::virtio::{alloc, Buffer, Device};

const F_FLUSH: u64 = 1 << 9;
const F_DISCARD: u64 = 1 << 13;
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
const T_DISCARD: u32 = 11;
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
/// Where the pattern goes, and how many sectors of it: the host test reads it from the file.
const SECTOR: u64 = 8;
const BYTES: usize = 2048;
/// Where a discarded sector range lies (the host test finds a hole there).
const DISCARD_AT: u64 = 2048;
const DISCARD_SECTORS: u32 = 2048;

/// One request: a header, the data buffers, the status; the status the device gave.
fn request(
    device: &Device,
    queue: &mut crate::virtio::Queue,
    kind: u32,
    sector: u64,
    data: Option<Buffer>,
) -> Result<u8, &'static str> {
    let header = alloc(16);
    header[0..4].copy_from_slice(&kind.to_le_bytes());
    header[8..16].copy_from_slice(&sector.to_le_bytes());
    let status = alloc(1);
    status[0] = 0xff;
    let status_at = status.as_ptr();
    match data {
        Some(data) => queue.submit(&[Buffer::readable(header), data, Buffer::writable(status)])?,
        None => queue.submit(&[Buffer::readable(header), Buffer::writable(status)])?,
    }
    device.notify(queue);
    queue.wait("a block request")?;
    // SAFETY: the status byte is ours, in the arena, and the device has used the chain.
    Ok(unsafe { core::ptr::read_volatile(status_at) })
}

/// Prints what the host test checks: capacity, id, the pattern read back, and the refusals.
pub fn write_flush_read(device: &Device) -> Result<(), &'static str> {
    let features = device.start(F_FLUSH | F_DISCARD)?;
    if features & F_FLUSH == 0 || features & F_DISCARD == 0 {
        return Err("flush or discard not offered");
    }
    let capacity = u64::from_le_bytes(core::array::from_fn(|i| device.config(i)));
    println!("blk: capacity {capacity} sectors");
    let mut queue = device.queue(0, 16)?;
    device.ready()?;

    let id = alloc(20);
    let id_at = id.as_ptr();
    if request(device, &mut queue, T_GET_ID, 0, Some(Buffer::writable(id)))? != S_OK {
        return Err("get-id failed");
    }
    // SAFETY: the device has written the id into our arena buffer.
    let id = unsafe { core::slice::from_raw_parts(id_at, 20) };
    let end = id.iter().position(|b| *b == 0).unwrap_or(20);
    println!("blk: id {}", core::str::from_utf8(&id[..end]).unwrap_or("(not UTF-8)"));

    let pattern = alloc(BYTES);
    for (i, byte) in pattern.iter_mut().enumerate() {
        *byte = (i % 251) as u8;
    }
    if request(device, &mut queue, T_OUT, SECTOR, Some(Buffer::readable(pattern)))? != S_OK {
        return Err("the write failed");
    }
    if request(device, &mut queue, T_FLUSH, 0, None)? != S_OK {
        return Err("the flush failed");
    }
    let back = alloc(BYTES);
    let back_at = back.as_ptr();
    if request(device, &mut queue, T_IN, SECTOR, Some(Buffer::writable(back)))? != S_OK {
        return Err("the read failed");
    }
    // SAFETY: the device has filled our arena buffer.
    let back = unsafe { core::slice::from_raw_parts(back_at, BYTES) };
    if back != &pattern[..] {
        return Err("what was read back differs from what was written");
    }
    println!("blk: wrote, flushed and read back {} sectors at {SECTOR}", BYTES / 512);

    let past = request(device, &mut queue, T_IN, capacity, Some(Buffer::writable(alloc(512))))?;
    if past != S_IOERR {
        return Err("a read past the end did not fail");
    }
    println!("blk: a read past the end is an I/O error");

    let range = alloc(16);
    range[0..8].copy_from_slice(&DISCARD_AT.to_le_bytes());
    range[8..12].copy_from_slice(&DISCARD_SECTORS.to_le_bytes());
    if request(device, &mut queue, T_DISCARD, 0, Some(Buffer::readable(range)))? != S_OK {
        return Err("the discard failed");
    }
    println!("blk: discarded {DISCARD_SECTORS} sectors at {DISCARD_AT}");
    Ok(())
}
