//! What each request does: fids, walks, opens, reads and writes, mapped onto [`Fs`].

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::codec::{Dialect, DirEntry, Fcall};
use crate::errno::*;
use crate::fs::{Child, File, Fs, Node};
use crate::session::{State, MAX_FIDS};
use crate::wire::{Qid, Stat, Writer};

/// A fid: where it points, and what opening it produced.
#[derive(Debug)]
pub struct FidCell {
    pub comps: Mutex<Vec<String>>,
    /// A tokio mutex: a read blocked on a stream holds this fid's lock only.
    pub open: tokio::sync::Mutex<Open>,
}

/// The open state of a fid.
#[derive(Debug, Default)]
pub enum Open {
    #[default]
    Closed,
    /// A directory: its listing when opened, so readdir offsets stay stable.
    Dir(Vec<Child>),
    /// 9P2000(.u) directory reads: the listing encoded as stat records.
    DirStats(Vec<u8>),
    /// A file whose content is fixed once opened (git blobs), read from memory.
    Snapshot(Arc<Vec<u8>>),
    /// A file read afresh at each read (working tree, control files).
    Live,
    /// A stream: each new value is one read, then an empty read.
    Stream(Stream),
}

#[derive(Debug)]
pub struct Stream {
    heads: watch::Receiver<Option<cairn_db::ObjectId>>,
    /// The last value delivered, to wait for a different one.
    last: Option<Vec<u8>>,
    /// What is left of the current value for readers asking for fewer bytes than it has.
    pending: Vec<u8>,
    /// The current value has been read: the next read is the empty one.
    eof_next: bool,
}

impl Stream {
    /// Up to `count` bytes of the pending value; the empty read follows its last byte.
    fn take(&mut self, count: u32) -> Vec<u8> {
        let n = (count as usize).min(self.pending.len());
        let out: Vec<u8> = self.pending.drain(..n).collect();
        if self.pending.is_empty() {
            self.eof_next = true;
        }
        out
    }
}

const S_IFMT: u32 = 0o170000;
const DMDIR: u32 = 0x8000_0000;
const DMSYMLINK: u32 = 0x0200_0000;
const O_ACCMODE: u32 = 3;
const O_EXCL: u32 = 0o200;
const O_TRUNC: u32 = 0o1000;
const AT_REMOVEDIR: u32 = 0x200;
const P9_ATTR_SIZE: u32 = 0x8;
const P9_GETATTR_BASIC: u64 = 0x7ff;
const V9FS_MAGIC: u32 = 0x0102_1997;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn fid(state: &Mutex<State>, fid: u32) -> Result<Arc<FidCell>, u32> {
    lock(state).fids.get(&fid).cloned().ok_or(EBADF)
}

fn new_cell(comps: Vec<String>) -> Arc<FidCell> {
    Arc::new(FidCell { comps: Mutex::new(comps), open: tokio::sync::Mutex::new(Open::Closed) })
}

fn name_of(bytes: &[u8]) -> Result<String, u32> {
    let name = std::str::from_utf8(bytes).map_err(|_| ENOENT)?;
    if name.is_empty() || name.contains(['/', '\0']) || name == "." || name == ".." {
        return Err(EINVAL);
    }
    Ok(name.to_owned())
}

/// Adds a fid, unless the connection already holds [`MAX_FIDS`].
fn insert_fid(state: &Mutex<State>, f: u32, cell: Arc<FidCell>) -> Result<(), u32> {
    let mut st = lock(state);
    if st.fids.len() >= MAX_FIDS && !st.fids.contains_key(&f) {
        return Err(EMFILE);
    }
    st.fids.insert(f, cell);
    Ok(())
}

/// Runs filesystem reads inline on the request's task. They are short (an object-cache hit, or
/// one small decompression), and handing them to a blocking thread and back cost more than the
/// read itself: two context switches per request dominated a profile of 1,000 small reads.
fn inline<R>(fs: &Arc<Fs>, f: impl FnOnce(&Fs) -> Result<R, u32>) -> Result<R, u32> {
    f(fs)
}

/// Runs filesystem changes on a blocking thread: a commit waits for fsync.
async fn blocking<R: Send + 'static>(
    fs: &Arc<Fs>,
    f: impl FnOnce(&Fs) -> Result<R, u32> + Send + 'static,
) -> Result<R, u32> {
    let fs = fs.clone();
    tokio::task::spawn_blocking(move || f(&fs)).await.map_err(|_| EIO)?
}

/// Answers one request (everything but Tversion and Tflush, which the session handles).
pub async fn handle(fs: &Arc<Fs>, state: &Arc<Mutex<State>>, fcall: Fcall) -> Result<Fcall, u32> {
    let (dialect, versioned) = {
        let st = lock(state);
        (st.dialect, st.versioned)
    };
    if !versioned {
        // Every session starts with Tversion: nothing before it has a dialect or an msize.
        return Err(EPROTO);
    }
    match fcall {
        Fcall::Tauth { .. } => Err(ENOENT),
        Fcall::Tattach { fid: f, .. } => {
            if lock(state).fids.contains_key(&f) {
                return Err(EBADF);
            }
            insert_fid(state, f, new_cell(Vec::new()))?;
            let qid = inline(fs, |fs| Ok(fs.qid(&[], &fs.classify(&[])?)))?;
            Ok(Fcall::Rattach { qid })
        }
        Fcall::Twalk { fid: f, newfid, names } => walk(fs, state, f, newfid, names).await,
        Fcall::Tclunk { fid: f } => {
            lock(state).fids.remove(&f).map(|_| Fcall::Rclunk {}).ok_or(EBADF)
        }
        Fcall::Tlopen { fid: f, flags } => {
            let (qid, _) = open(fs, state, f, flags).await?;
            Ok(Fcall::Rlopen { qid, iounit: 0 })
        }
        Fcall::Topen { fid: f, mode } => {
            let flags = u32::from(mode & 3) | if mode & 0x10 != 0 { O_TRUNC } else { 0 };
            let (qid, _) = open(fs, state, f, flags).await?;
            Ok(Fcall::Ropen { qid, iounit: 0 })
        }
        Fcall::Tread { fid: f, offset, count } => {
            let max = lock(state).msize.saturating_sub(11);
            let data = read(fs, state, f, offset, count.min(max)).await?;
            Ok(Fcall::Rread { data })
        }
        Fcall::Treaddir { fid: f, offset, count } => {
            let max = lock(state).msize.saturating_sub(11);
            let cell = fid(state, f)?;
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
        Fcall::Twrite { fid: f, offset, data } => {
            let comps = comps_of(state, f)?;
            let count =
                blocking(fs, move |fs| fs.write(&fs.classify(&comps)?, offset, &data)).await?;
            Ok(Fcall::Rwrite { count })
        }
        Fcall::Tgetattr { fid: f, .. } => {
            let comps = comps_of(state, f)?;
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
        Fcall::Tsetattr { fid: f, valid, size, .. } => {
            let comps = comps_of(state, f)?;
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
        Fcall::Tstatfs { fid: f } => {
            fid(state, f)?;
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
        Fcall::Tlcreate { fid: f, name, flags, .. } => {
            let name = name_of(&name)?;
            let cell = fid(state, f)?;
            let dir = lock(&cell.comps).clone();
            let exclusive = flags & O_EXCL != 0;
            let child = blocking(fs, {
                let name = name.clone();
                move |fs| fs.create(&fs.classify(&dir)?, &name, exclusive)
            })
            .await;
            child?;
            lock(&cell.comps).push(name);
            let (qid, _) = open(fs, state, f, flags & !O_TRUNC).await?;
            Ok(Fcall::Rlcreate { qid, iounit: 0 })
        }
        Fcall::Tcreate { fid: f, name, perm, mode, extension } => {
            let name = name_of(&name)?;
            let cell = fid(state, f)?;
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
            let (qid, _) = open(fs, state, f, flags).await?;
            Ok(Fcall::Rcreate { qid, iounit: 0 })
        }
        Fcall::Tmkdir { dfid, name, .. } => {
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
        Fcall::Tsymlink { fid: f, name, target, .. } => {
            let name = name_of(&name)?;
            let dir = comps_of(state, f)?;
            let qid = blocking(fs, move |fs| {
                fs.symlink(&fs.classify(&dir)?, &name, &target)?;
                child_qid(fs, &dir, &name)
            })
            .await?;
            Ok(Fcall::Rsymlink { qid })
        }
        Fcall::Treadlink { fid: f } => {
            let comps = comps_of(state, f)?;
            let target = inline(fs, move |fs| fs.readlink(&fs.classify(&comps)?))?;
            Ok(Fcall::Rreadlink { target })
        }
        Fcall::Tunlinkat { dirfid, name, flags } => {
            let name = name_of(&name)?;
            let dir = comps_of(state, dirfid)?;
            let rmdir = flags & AT_REMOVEDIR != 0;
            blocking(fs, move |fs| fs.remove(&fs.classify(&dir)?, &name, Some(rmdir))).await?;
            Ok(Fcall::Runlinkat {})
        }
        Fcall::Tremove { fid: f } => {
            // The fid is clunked whatever the outcome.
            let cell = lock(state).fids.remove(&f).ok_or(EBADF)?;
            let mut comps = lock(&cell.comps).clone();
            let name = comps.pop().ok_or(EBUSY)?;
            blocking(fs, move |fs| fs.remove(&fs.classify(&comps)?, &name, None)).await?;
            Ok(Fcall::Rremove {})
        }
        Fcall::Trenameat { olddirfid, oldname, newdirfid, newname } => {
            let (from, to) = (name_of(&oldname)?, name_of(&newname)?);
            let (a, b) = (comps_of(state, olddirfid)?, comps_of(state, newdirfid)?);
            blocking(fs, move |fs| fs.rename(&fs.classify(&a)?, &from, &fs.classify(&b)?, &to))
                .await?;
            Ok(Fcall::Rrenameat {})
        }
        Fcall::Trename { fid: f, dfid, name } => {
            let to = name_of(&name)?;
            let cell = fid(state, f)?;
            let mut from_dir = lock(&cell.comps).clone();
            let from = from_dir.pop().ok_or(EBUSY)?;
            let to_dir = comps_of(state, dfid)?;
            let (td, tn) = (to_dir.clone(), to.clone());
            blocking(fs, move |fs| {
                fs.rename(&fs.classify(&from_dir)?, &from, &fs.classify(&td)?, &tn)
            })
            .await?;
            let mut comps = to_dir;
            comps.push(to);
            *lock(&cell.comps) = comps;
            Ok(Fcall::Rrename {})
        }
        Fcall::Tfsync { fid: f, .. } => fid(state, f).map(|_| Fcall::Rfsync {}),
        Fcall::Tlock { fid: f, .. } => fid(state, f).map(|_| Fcall::Rlock { status: 0 }),
        Fcall::Tgetlock { fid: f, start, length, proc_id, client_id, .. } => {
            fid(state, f)?;
            // Nothing is ever locked against another client: report the range as unlocked.
            Ok(Fcall::Rgetlock { kind: 2, start, length, proc_id, client_id })
        }
        Fcall::Txattrwalk { .. } => Err(ENODATA),
        Fcall::Txattrcreate { .. } | Fcall::Tlink { .. } | Fcall::Tmknod { .. } => Err(EOPNOTSUPP),
        Fcall::Tstat { fid: f } => {
            let comps = comps_of(state, f)?;
            let stat = inline(fs, move |fs| stat_of(fs, &comps, dialect))?;
            Ok(Fcall::Rstat { stat })
        }
        Fcall::Twstat { fid: f, stat } => {
            let cell = fid(state, f)?;
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
        other => {
            tracing::debug!(message = other.name(), "a reply type sent as a request");
            Err(EOPNOTSUPP)
        }
    }
}

fn comps_of(state: &Mutex<State>, f: u32) -> Result<Vec<String>, u32> {
    let cell = fid(state, f)?;
    let comps = lock(&cell.comps).clone();
    Ok(comps)
}

fn child_qid(fs: &Fs, dir: &[String], name: &str) -> Result<Qid, u32> {
    let mut comps = dir.to_vec();
    comps.push(name.to_owned());
    let node = fs.classify(&comps)?;
    Ok(fs.qid(&comps, &node))
}

/// Twalk, as DataKit's server answers it: all the names or an error, never a partial walk.
/// go-datakit walks a fid onto itself and takes a missing path from the error; a partial
/// Rwalk (which the 9P manual allows, and which leaves the fid where it was) made its next
/// request act on the wrong file. The Linux client and diod's tools take either answer.
async fn walk(
    fs: &Arc<Fs>,
    state: &Arc<Mutex<State>>,
    f: u32,
    newfid: u32,
    names: Vec<Vec<u8>>,
) -> Result<Fcall, u32> {
    let start = comps_of(state, f)?;
    if newfid != f && lock(state).fids.contains_key(&newfid) {
        return Err(EBADF);
    }
    let (comps, qids) = inline(fs, move |fs| {
        let mut comps = start;
        let mut here = fs.classify(&comps)?;
        let mut qids = Vec::with_capacity(names.len());
        for name in &names {
            here = match std::str::from_utf8(name) {
                Ok("..") => {
                    comps.pop();
                    fs.classify(&comps)?
                }
                _ if !here.is_dir() => return Err(WALK_FROM_FILE),
                Ok(".") => here,
                Ok(name) if !name.is_empty() && !name.contains(['/', '\0']) => {
                    comps.push(name.to_owned());
                    fs.classify(&comps)?
                }
                _ => return Err(ENOENT),
            };
            qids.push(fs.qid(&comps, &here));
        }
        Ok((comps, qids))
    })?;
    insert_fid(state, newfid, new_cell(comps))?;
    Ok(Fcall::Rwalk { qids })
}

async fn open(
    fs: &Arc<Fs>,
    state: &Arc<Mutex<State>>,
    f: u32,
    flags: u32,
) -> Result<(Qid, ()), u32> {
    let cell = fid(state, f)?;
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
            Open::Stream(Stream {
                heads: fs.subscribe(&branch)?,
                last: None,
                pending: Vec::new(),
                eof_next: false,
            })
        } else if let Node::Git { .. } = node {
            Open::Snapshot(Arc::new(fs.read_file(&node)?))
        } else {
            Open::Live
        };
        Ok((qid, open))
    })?;
    *cell.open.lock().await = open;
    Ok((qid, ()))
}

async fn read(
    fs: &Arc<Fs>,
    state: &Arc<Mutex<State>>,
    f: u32,
    offset: u64,
    count: u32,
) -> Result<Vec<u8>, u32> {
    let cell = fid(state, f)?;
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

/// A 9P2000(.u) stat record for the node at `comps`.
fn stat_of(fs: &Fs, comps: &[String], dialect: Dialect) -> Result<Stat, u32> {
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
