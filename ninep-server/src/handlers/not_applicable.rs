//! What Linux asks for that a git tree has nothing to do with: Tfsync (every change is
//! committed, or held in a transaction, before its reply), locks, xattrs, hard links and device
//! nodes. Those that need a fid still check it exists.

use std::sync::Mutex;

use super::cell_of;
use crate::codec::Fcall;
use crate::errno::*;
use crate::state::State;

pub(super) fn fsync(state: &Mutex<State>, fid: u32) -> Result<Fcall, Errno> {
    cell_of(state, fid).map(|_| Fcall::Rfsync {})
}

pub(super) fn lock(state: &Mutex<State>, fid: u32) -> Result<Fcall, Errno> {
    cell_of(state, fid).map(|_| Fcall::Rlock { status: 0 })
}

pub(super) fn getlock(
    state: &Mutex<State>,
    fid: u32,
    start: u64,
    length: u64,
    proc_id: u32,
    client_id: Vec<u8>,
) -> Result<Fcall, Errno> {
    cell_of(state, fid)?;
    // Nothing is ever locked against another client: report the range as unlocked.
    Ok(Fcall::Rgetlock { kind: 2, start, length, proc_id, client_id })
}

/// No file has extended attributes.
pub(super) fn xattrwalk() -> Result<Fcall, Errno> {
    Err(ENODATA)
}

/// Txattrcreate, Tlink, Tmknod.
pub(super) fn unsupported() -> Result<Fcall, Errno> {
    Err(EOPNOTSUPP)
}
