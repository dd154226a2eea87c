//! Removing and renaming: Tremove and Trename (by fid), Tunlinkat and Trenameat (by directory
//! fid and name, as 9P2000.L prefers).

use std::sync::{Arc, Mutex};

use super::{blocking, cell_of, comps_of, name_of};
use crate::codec::Fcall;
use crate::errno::*;
use crate::fs::Fs;
use crate::state::{lock, State};

const AT_REMOVEDIR: u32 = 0x200;

pub(super) async fn unlinkat(
    fs: &Arc<Fs>,
    state: &Mutex<State>,
    dirfid: u32,
    name: Vec<u8>,
    flags: u32,
) -> Result<Fcall, Errno> {
    let name = name_of(&name)?;
    let dir = comps_of(state, dirfid)?;
    let rmdir = flags & AT_REMOVEDIR != 0;
    blocking(fs, move |fs| fs.remove(&fs.classify(&dir)?, &name, Some(rmdir))).await?;
    Ok(Fcall::Runlinkat {})
}

pub(super) async fn remove(fs: &Arc<Fs>, state: &Mutex<State>, fid: u32) -> Result<Fcall, Errno> {
    // The fid is clunked whatever the outcome.
    let cell = lock(state).fids.remove(&fid).ok_or(EBADF)?;
    let mut comps = lock(&cell.comps).clone();
    let name = comps.pop().ok_or(EBUSY)?;
    blocking(fs, move |fs| fs.remove(&fs.classify(&comps)?, &name, None)).await?;
    Ok(Fcall::Rremove {})
}

pub(super) async fn renameat(
    fs: &Arc<Fs>,
    state: &Mutex<State>,
    olddirfid: u32,
    oldname: Vec<u8>,
    newdirfid: u32,
    newname: Vec<u8>,
) -> Result<Fcall, Errno> {
    let (from, to) = (name_of(&oldname)?, name_of(&newname)?);
    let (a, b) = (comps_of(state, olddirfid)?, comps_of(state, newdirfid)?);
    blocking(fs, move |fs| fs.rename(&fs.classify(&a)?, &from, &fs.classify(&b)?, &to)).await?;
    Ok(Fcall::Rrenameat {})
}

/// Trename: the fid's file moves into `dfid`'s directory as `name`, and the fid follows it.
pub(super) async fn rename(
    fs: &Arc<Fs>,
    state: &Mutex<State>,
    fid: u32,
    dfid: u32,
    name: Vec<u8>,
) -> Result<Fcall, Errno> {
    let to = name_of(&name)?;
    let cell = cell_of(state, fid)?;
    let mut from_dir = lock(&cell.comps).clone();
    let from = from_dir.pop().ok_or(EBUSY)?;
    let to_dir = comps_of(state, dfid)?;
    let (td, tn) = (to_dir.clone(), to.clone());
    blocking(fs, move |fs| fs.rename(&fs.classify(&from_dir)?, &from, &fs.classify(&td)?, &tn))
        .await?;
    let mut comps = to_dir;
    comps.push(to);
    *lock(&cell.comps) = comps;
    Ok(Fcall::Rrename {})
}
