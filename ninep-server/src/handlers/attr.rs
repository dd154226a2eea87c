//! Attributes: Tgetattr and Tsetattr (9P2000.L), Tstat and Twstat (9P2000 and .u), Tstatfs.
//!
//! Git stores no owners, modes beyond the executable bit, or times: setting them is accepted
//! and ignored, and only a size (truncation) or, through Twstat, a name (rename) changes
//! anything.

use std::sync::{Arc, Mutex};

use super::{blocking, cell_of, comps_of, inline, name_of};
use crate::codec::{Dialect, Fcall};
use crate::errno::*;
use crate::fs::{Fs, Node};
use crate::state::{lock, State};
use crate::wire::Stat;

/// A 9P2000 mode's directory bit.
pub(super) const DMDIR: u32 = 0x8000_0000;
/// A 9P2000.u mode's symlink bit.
pub(super) const DMSYMLINK: u32 = 0x0200_0000;
const S_IFMT: u32 = 0o170000;
const P9_ATTR_SIZE: u32 = 0x8;
const P9_GETATTR_BASIC: u64 = 0x7ff;
const V9FS_MAGIC: u32 = 0x0102_1997;

pub(super) fn getattr(fs: &Arc<Fs>, state: &Mutex<State>, fid: u32) -> Result<Fcall, Errno> {
    let comps = comps_of(state, fid)?;
    let attr = inline(fs, move |fs| fs.attr(&comps, &fs.classify(&comps)?))?;
    let dir = attr.mode & S_IFMT == 0o040000;
    let secs = attr.mtime.max(0) as u64;
    Ok(Fcall::Rgetattr {
        valid: P9_GETATTR_BASIC,
        qid: attr.qid,
        mode: attr.mode,
        uid: 0,
        gid: 0,
        nlink: if dir { 2 } else { 1 },
        rdev: 0,
        size: attr.size,
        blksize: 4096,
        blocks: attr.size.div_ceil(512),
        atime_sec: secs,
        atime_nsec: 0,
        mtime_sec: secs,
        mtime_nsec: 0,
        ctime_sec: secs,
        ctime_nsec: 0,
        btime_sec: 0,
        btime_nsec: 0,
        gen: 0,
        data_version: 0,
    })
}

pub(super) async fn setattr(
    fs: &Arc<Fs>,
    state: &Mutex<State>,
    fid: u32,
    valid: u32,
    size: u64,
) -> Result<Fcall, Errno> {
    let comps = comps_of(state, fid)?;
    blocking(fs, move |fs| {
        let node = fs.classify(&comps)?;
        if valid & P9_ATTR_SIZE != 0 {
            fs.truncate(&node, size)?;
        } else if matches!(node, Node::Git { .. } | Node::EmptyRo(_)) && valid != 0 {
            return Err(EROFS);
        }
        // Mode, owner and times are not stored in git: accepted and ignored elsewhere.
        Ok(())
    })
    .await?;
    Ok(Fcall::Rsetattr {})
}

pub(super) fn statfs(state: &Mutex<State>, fid: u32) -> Result<Fcall, Errno> {
    cell_of(state, fid)?;
    Ok(Fcall::Rstatfs {
        kind: V9FS_MAGIC,
        bsize: 4096,
        blocks: 0,
        bfree: 0,
        bavail: 0,
        files: 0,
        ffree: 0,
        fsid: 0,
        namelen: 255,
    })
}

pub(super) fn stat(
    fs: &Arc<Fs>,
    state: &Mutex<State>,
    fid: u32,
    dialect: Dialect,
) -> Result<Fcall, Errno> {
    let comps = comps_of(state, fid)?;
    let stat = inline(fs, move |fs| stat_of(fs, &comps, dialect))?;
    Ok(Fcall::Rstat { stat })
}

/// Twstat: a length other than "don't touch" (all ones) truncates; a new name renames within
/// the same directory, and the fid follows the file.
pub(super) async fn wstat(
    fs: &Arc<Fs>,
    state: &Mutex<State>,
    fid: u32,
    stat: Stat,
) -> Result<Fcall, Errno> {
    let cell = cell_of(state, fid)?;
    let comps = lock(&cell.comps).clone();
    let new_name = (!stat.name.is_empty()).then(|| name_of(&stat.name)).transpose()?;
    let renamed = blocking(fs, move |fs| {
        let node = fs.classify(&comps)?;
        if stat.length != u64::MAX {
            fs.truncate(&node, stat.length)?;
        }
        match new_name {
            Some(name) if comps.last() != Some(&name) => {
                let mut dir = comps.clone();
                let old = dir.pop().ok_or(EBUSY)?;
                let parent = fs.classify(&dir)?;
                fs.rename(&parent, &old, &parent, &name)?;
                dir.push(name);
                Ok(Some(dir))
            }
            _ => Ok(None),
        }
    })
    .await?;
    if let Some(comps) = renamed {
        *lock(&cell.comps) = comps;
    }
    Ok(Fcall::Rwstat {})
}

/// A 9P2000(.u) stat record for the node at `comps`.
pub(super) fn stat_of(fs: &Fs, comps: &[String], dialect: Dialect) -> Result<Stat, Errno> {
    let node = fs.classify(comps)?;
    let attr = fs.attr(comps, &node)?;
    let mut mode = attr.mode & 0o777;
    if node.is_dir() {
        mode |= DMDIR;
    } else if node.is_symlink() && dialect == Dialect::U {
        mode |= DMSYMLINK;
    }
    let extension =
        if node.is_symlink() && dialect == Dialect::U { fs.readlink(&node)? } else { Vec::new() };
    Ok(Stat {
        kind: 0,
        dev: 0,
        qid: attr.qid,
        mode,
        atime: attr.mtime as u32,
        mtime: attr.mtime as u32,
        length: attr.size,
        name: comps.last().map_or_else(|| b"/".to_vec(), |n| n.clone().into_bytes()),
        uid: b"root".to_vec(),
        gid: b"root".to_vec(),
        muid: b"root".to_vec(),
        extension,
        n_uid: 0,
        n_gid: 0,
        n_muid: 0,
    })
}
