//! Tread, Treaddir and Treadlink: reads serve what opening the fid produced (see `open`).

use std::sync::{Arc, Mutex};

use super::{cell_of, comps_of, inline};
use crate::codec::{DirEntry, Fcall};
use crate::errno::*;
use crate::fs::Fs;
use crate::state::{lock, Open, State};
use crate::wire::Qid;

/// The size of Rread's and Rreaddir's header and count: what a reply has beyond its data.
const IOHDRSZ: u32 = 11;

pub(super) async fn read(
    fs: &Arc<Fs>,
    state: &Mutex<State>,
    fid: u32,
    offset: u64,
    count: u32,
) -> Result<Fcall, Errno> {
    let max = lock(state).msize.saturating_sub(IOHDRSZ);
    let data = read_fid(fs, state, fid, offset, count.min(max)).await?;
    Ok(Fcall::Rread { data })
}

/// Treaddir: entries of the listing taken at open, as many whole ones as fit in `count`.
pub(super) async fn readdir(
    state: &Mutex<State>,
    fid: u32,
    offset: u64,
    count: u32,
) -> Result<Fcall, Errno> {
    let max = lock(state).msize.saturating_sub(IOHDRSZ);
    let cell = cell_of(state, fid)?;
    let open = cell.open.lock().await;
    let Open::Dir(children) = &*open else { return Err(EBADF) };
    let mut data = Vec::new();
    let start = usize::try_from(offset).unwrap_or(usize::MAX);
    for (i, child) in children.iter().enumerate().skip(start) {
        let entry = DirEntry {
            qid: child.qid,
            offset: i as u64 + 1,
            kind: if child.qid.kind == Qid::DIR {
                4
            } else if child.qid.kind == Qid::SYMLINK {
                10
            } else {
                8
            },
            name: child.name.clone().into_bytes(),
        };
        if data.len() + entry.size() > count.min(max) as usize {
            break;
        }
        entry.encode(&mut data);
    }
    Ok(Fcall::Rreaddir { data })
}

pub(super) fn readlink(fs: &Arc<Fs>, state: &Mutex<State>, fid: u32) -> Result<Fcall, Errno> {
    let comps = comps_of(state, fid)?;
    let target = inline(fs, move |fs| fs.readlink(&fs.classify(&comps)?))?;
    Ok(Fcall::Rreadlink { target })
}

/// Up to `count` bytes at `offset` of what the fid has open. A stream waits for a value
/// different from the last one it delivered, and answers each value's end with an empty read.
async fn read_fid(
    fs: &Arc<Fs>,
    state: &Mutex<State>,
    fid: u32,
    offset: u64,
    count: u32,
) -> Result<Vec<u8>, Errno> {
    let cell = cell_of(state, fid)?;
    let mut open = cell.open.lock().await;
    let slice = |bytes: &[u8]| {
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
        let end = start.saturating_add(count as usize).min(bytes.len());
        bytes[start..end].to_vec()
    };
    match &mut *open {
        Open::Closed => Err(EBADF),
        Open::Dir(_) => Err(EISDIR),
        Open::DirStats(bytes) => {
            // Whole stat records only: cut at the last record that fits.
            let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
            let mut end = start;
            while end + 2 <= bytes.len() {
                let len = u16::from_le_bytes([bytes[end], bytes[end + 1]]) as usize + 2;
                if end + len - start > count as usize {
                    break;
                }
                end += len;
            }
            Ok(bytes[start..end].to_vec())
        }
        Open::Snapshot(bytes) => Ok(slice(bytes)),
        Open::Live => {
            let comps = lock(&cell.comps).clone();
            let bytes = inline(fs, move |fs| fs.read_file(&fs.classify(&comps)?))?;
            Ok(slice(&bytes))
        }
        Open::Stream(stream) => {
            if !stream.pending.is_empty() {
                return Ok(stream.take(count));
            }
            if stream.eof_next {
                stream.eof_next = false;
                return Ok(Vec::new());
            }
            let comps = lock(&cell.comps).clone();
            loop {
                stream.heads.borrow_and_update();
                let c = comps.clone();
                let value = inline(fs, move |fs| {
                    let node = fs.classify(&c)?;
                    fs.read_file(&node)
                })?;
                if stream.last.as_ref() != Some(&value) {
                    stream.last = Some(value.clone());
                    stream.pending = value;
                    return Ok(stream.take(count));
                }
                stream.heads.changed().await.map_err(|_| EIO)?;
            }
        }
    }
}
