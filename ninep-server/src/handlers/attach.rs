//! Tauth, Tattach and Tclunk: where a fid's life starts and ends.

use std::sync::{Arc, Mutex};

use super::inline;
use crate::codec::Fcall;
use crate::errno::*;
use crate::fs::Fs;
use crate::state::{lock, FidCell, State};

/// There is no authentication: Tattach needs no afid.
pub(super) fn auth() -> Result<Fcall, Errno> {
    Err(ENOENT)
}

/// Tattach: a new fid at the root.
pub(super) fn attach(fs: &Arc<Fs>, state: &Mutex<State>, fid: u32) -> Result<Fcall, Errno> {
    if lock(state).fids.contains_key(&fid) {
        return Err(EBADF);
    }
    lock(state).insert_fid(fid, FidCell::new(Vec::new()))?;
    let qid = inline(fs, |fs| Ok(fs.qid(&[], &fs.classify(&[])?)))?;
    Ok(Fcall::Rattach { qid })
}

pub(super) fn clunk(state: &Mutex<State>, fid: u32) -> Result<Fcall, Errno> {
    lock(state).fids.remove(&fid).map(|_| Fcall::Rclunk {}).ok_or(EBADF)
}
