//! Opening a fid (Tlopen, Topen), and the calls that make a file: Tlcreate and Tcreate, which
//! also open it, and Tmkdir and Tsymlink, which answer with its qid.
//!
//! What opening produces depends on the node: a directory's listing is taken once so readdir
//! offsets stay stable, a git blob is read once, a stream subscribes to its branch's head.

use std::sync::{Arc, Mutex};

use super::attr::{stat_of, DMDIR, DMSYMLINK};
use super::{blocking, cell_of, child_qid, comps_of, inline, name_of};
use crate::codec::{Dialect, Fcall};
use crate::errno::*;
use crate::fs::{File, Fs, Node};
use crate::state::{lock, Open, State, Stream};
use crate::wire::{Qid, Writer};

const O_ACCMODE: u32 = 3;
const O_EXCL: u32 = 0o200;
const O_TRUNC: u32 = 0o1000;

pub(super) async fn lopen(
    fs: &Arc<Fs>,
    state: &Mutex<State>,
    fid: u32,
    flags: u32,
) -> Result<Fcall, Errno> {
    let qid = open_fid(fs, state, fid, flags).await?;
    Ok(Fcall::Rlopen { qid, iounit: 0 })
}

/// Topen: the 9P2000 mode's access bits and OTRUNC (0x10) as Linux flags.
pub(super) async fn open(
    fs: &Arc<Fs>,
    state: &Mutex<State>,
    fid: u32,
    mode: u8,
) -> Result<Fcall, Errno> {
    let flags = u32::from(mode & 3) | if mode & 0x10 != 0 { O_TRUNC } else { 0 };
    let qid = open_fid(fs, state, fid, flags).await?;
    Ok(Fcall::Ropen { qid, iounit: 0 })
}

/// Tlcreate: a file in the fid's directory, then the fid moves to it and opens it.
pub(super) async fn lcreate(
    fs: &Arc<Fs>,
    state: &Mutex<State>,
    fid: u32,
    name: Vec<u8>,
    flags: u32,
) -> Result<Fcall, Errno> {
    let name = name_of(&name)?;
    let cell = cell_of(state, fid)?;
    let dir = lock(&cell.comps).clone();
    let exclusive = flags & O_EXCL != 0;
    blocking(fs, {
        let name = name.clone();
        move |fs| fs.create(&fs.classify(&dir)?, &name, exclusive)
    })
    .await?;
    lock(&cell.comps).push(name);
    let qid = open_fid(fs, state, fid, flags & !O_TRUNC).await?;
    Ok(Fcall::Rlcreate { qid, iounit: 0 })
}

/// Tcreate: a file, directory or (9P2000.u) symlink, which the fid then opens.
pub(super) async fn create(
    fs: &Arc<Fs>,
    state: &Mutex<State>,
    fid: u32,
    name: Vec<u8>,
    perm: u32,
    mode: u8,
    extension: Vec<u8>,
) -> Result<Fcall, Errno> {
    let name = name_of(&name)?;
    let cell = cell_of(state, fid)?;
    let dir = lock(&cell.comps).clone();
    let n = name.clone();
    let conn = lock(state).conn;
    blocking(fs, move |fs| {
        let node = fs.classify(&dir)?;
        if perm & DMDIR != 0 {
            fs.mkdir(&node, &n, conn)
        } else if perm & DMSYMLINK != 0 {
            fs.symlink(&node, &n, &extension)
        } else {
            // DataKit's clients write a key by creating it: an existing file is emptied.
            fs.create(&node, &n, false)
        }
    })
    .await?;
    lock(&cell.comps).push(name);
    let flags = u32::from(mode & 3);
    let qid = open_fid(fs, state, fid, flags).await?;
    Ok(Fcall::Rcreate { qid, iounit: 0 })
}

pub(super) async fn mkdir(
    fs: &Arc<Fs>,
    state: &Mutex<State>,
    dfid: u32,
    name: Vec<u8>,
) -> Result<Fcall, Errno> {
    let name = name_of(&name)?;
    let dir = comps_of(state, dfid)?;
    let conn = lock(state).conn;
    let qid = blocking(fs, move |fs| {
        fs.mkdir(&fs.classify(&dir)?, &name, conn)?;
        child_qid(fs, &dir, &name)
    })
    .await?;
    Ok(Fcall::Rmkdir { qid })
}

pub(super) async fn symlink(
    fs: &Arc<Fs>,
    state: &Mutex<State>,
    fid: u32,
    name: Vec<u8>,
    target: Vec<u8>,
) -> Result<Fcall, Errno> {
    let name = name_of(&name)?;
    let dir = comps_of(state, fid)?;
    let qid = blocking(fs, move |fs| {
        fs.symlink(&fs.classify(&dir)?, &name, &target)?;
        child_qid(fs, &dir, &name)
    })
    .await?;
    Ok(Fcall::Rsymlink { qid })
}

/// Opens the fid with Linux open flags.
async fn open_fid(fs: &Arc<Fs>, state: &Mutex<State>, fid: u32, flags: u32) -> Result<Qid, Errno> {
    let cell = cell_of(state, fid)?;
    let comps = lock(&cell.comps).clone();
    let dialect = lock(state).dialect;
    let c = comps.clone();
    let (qid, open) = inline(fs, move |fs| {
        let node = fs.classify(&c)?;
        let qid = fs.qid(&c, &node);
        let writing = flags & O_ACCMODE != 0;
        if writing && matches!(node, Node::Git { .. } | Node::EmptyRo(_)) {
            return Err(EROFS);
        }
        if writing && node.is_dir() {
            return Err(EISDIR);
        }
        if flags & O_TRUNC != 0 {
            fs.truncate(&node, 0)?;
        }
        let open = if node.is_dir() {
            let children = fs.list(&c, &node)?;
            if dialect == Dialect::L {
                Open::Dir(children)
            } else {
                let mut w = Writer::default();
                for child in &children {
                    let mut comps = c.clone();
                    comps.push(child.name.clone());
                    w.stat(&stat_of(fs, &comps, dialect)?, dialect);
                }
                Open::DirStats(w.buf)
            }
        } else if node.is_stream() {
            let branch = match &node {
                Node::File(File::HeadLive(b) | File::TreeLive(b, _)) => b.clone(),
                _ => return Err(EIO),
            };
            Open::Stream(Stream::new(fs.subscribe(&branch)?))
        } else if let Node::Git { .. } = node {
            Open::Snapshot(Arc::new(fs.read_file(&node)?))
        } else {
            Open::Live
        };
        Ok((qid, open))
    })?;
    *cell.open.lock().await = open;
    Ok(qid)
}
