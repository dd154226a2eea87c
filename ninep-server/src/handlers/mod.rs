//! What each request does: fids, walks, opens, reads and writes, mapped onto [`Fs`].
//!
//! [`handle`] only dispatches; each message group has a file of its own:
//! - `attach`: Tauth, Tattach, Tclunk (a fid's first and last request).
//! - `walk`: Twalk.
//! - `open`: Tlopen, Topen and the calls that make a file and open it or return its qid
//!   (Tlcreate, Tcreate, Tmkdir, Tsymlink).
//! - `read`: Tread, Treaddir, Treadlink.
//! - `write`: Twrite.
//! - `attr`: Tgetattr, Tsetattr, Tstat, Twstat, Tstatfs.
//! - `remove`: Tremove, Tunlinkat, Trename, Trenameat.
//! - `not_applicable`: Tfsync, locks, xattrs: what Linux asks that a git tree has nothing for.

use std::sync::{Arc, Mutex};

use crate::codec::Fcall;
use crate::errno::*;
use crate::fs::Fs;
use crate::state::{lock, FidCell, State};
use crate::wire::Qid;

mod attach;
mod attr;
mod not_applicable;
mod open;
mod read;
mod remove;
mod walk;
mod write;

/// Answers one request (everything but Tversion and Tflush, which the session handles).
pub(crate) async fn handle(
    fs: &Arc<Fs>,
    state: &Arc<Mutex<State>>,
    fcall: Fcall,
) -> Result<Fcall, Errno> {
    let (dialect, versioned) = {
        let st = lock(state);
        (st.dialect, st.versioned)
    };
    if !versioned {
        // Every session starts with Tversion: nothing before it has a dialect or an msize.
        return Err(EPROTO);
    }
    match fcall {
        Fcall::Tauth { .. } => attach::auth(),
        Fcall::Tattach { fid, .. } => attach::attach(fs, state, fid),
        Fcall::Tclunk { fid } => attach::clunk(state, fid),
        Fcall::Twalk { fid, newfid, names } => walk::walk(fs, state, fid, newfid, names),
        Fcall::Tlopen { fid, flags } => open::lopen(fs, state, fid, flags).await,
        Fcall::Topen { fid, mode } => open::open(fs, state, fid, mode).await,
        Fcall::Tlcreate { fid, name, flags, .. } => {
            open::lcreate(fs, state, fid, name, flags).await
        }
        Fcall::Tcreate { fid, name, perm, mode, extension } => {
            open::create(fs, state, fid, name, perm, mode, extension).await
        }
        Fcall::Tmkdir { dfid, name, .. } => open::mkdir(fs, state, dfid, name).await,
        Fcall::Tsymlink { fid, name, target, .. } => {
            open::symlink(fs, state, fid, name, target).await
        }
        Fcall::Tread { fid, offset, count } => read::read(fs, state, fid, offset, count).await,
        Fcall::Treaddir { fid, offset, count } => read::readdir(state, fid, offset, count).await,
        Fcall::Treadlink { fid } => read::readlink(fs, state, fid),
        Fcall::Twrite { fid, offset, data } => write::write(fs, state, fid, offset, data).await,
        Fcall::Tgetattr { fid, .. } => attr::getattr(fs, state, fid),
        Fcall::Tsetattr { fid, valid, size, .. } => {
            attr::setattr(fs, state, fid, valid, size).await
        }
        Fcall::Tstatfs { fid } => attr::statfs(state, fid),
        Fcall::Tstat { fid } => attr::stat(fs, state, fid, dialect),
        Fcall::Twstat { fid, stat } => attr::wstat(fs, state, fid, stat).await,
        Fcall::Tunlinkat { dirfid, name, flags } => {
            remove::unlinkat(fs, state, dirfid, name, flags).await
        }
        Fcall::Tremove { fid } => remove::remove(fs, state, fid).await,
        Fcall::Trenameat { olddirfid, oldname, newdirfid, newname } => {
            remove::renameat(fs, state, olddirfid, oldname, newdirfid, newname).await
        }
        Fcall::Trename { fid, dfid, name } => remove::rename(fs, state, fid, dfid, name).await,
        Fcall::Tfsync { fid, .. } => not_applicable::fsync(state, fid),
        Fcall::Tlock { fid, .. } => not_applicable::lock(state, fid),
        Fcall::Tgetlock { fid, start, length, proc_id, client_id, .. } => {
            not_applicable::getlock(state, fid, start, length, proc_id, client_id)
        }
        Fcall::Txattrwalk { .. } => not_applicable::xattrwalk(),
        Fcall::Txattrcreate { .. } | Fcall::Tlink { .. } | Fcall::Tmknod { .. } => {
            not_applicable::unsupported()
        }
        other => {
            tracing::debug!(message = other.name(), "a reply type sent as a request");
            Err(EOPNOTSUPP)
        }
    }
}

/// The fid `fid` of this connection.
fn cell_of(state: &Mutex<State>, fid: u32) -> Result<Arc<FidCell>, Errno> {
    lock(state).fids.get(&fid).cloned().ok_or(EBADF)
}

/// Where the fid `fid` points.
fn comps_of(state: &Mutex<State>, fid: u32) -> Result<Vec<String>, Errno> {
    let cell = cell_of(state, fid)?;
    let comps = lock(&cell.comps).clone();
    Ok(comps)
}

/// A name a request creates or renames to: one component, not `.` or `..`.
fn name_of(bytes: &[u8]) -> Result<String, Errno> {
    let name = std::str::from_utf8(bytes).map_err(|_| ENOENT)?;
    if name.is_empty() || name.contains(['/', '\0']) || name == "." || name == ".." {
        return Err(EINVAL);
    }
    Ok(name.to_owned())
}

/// The qid of `name` in the directory at `dir`.
fn child_qid(fs: &Fs, dir: &[String], name: &str) -> Result<Qid, Errno> {
    let mut comps = dir.to_vec();
    comps.push(name.to_owned());
    let node = fs.classify(&comps)?;
    Ok(fs.qid(&comps, &node))
}

/// Runs filesystem reads inline on the request's task. They are short (an object-cache hit, or
/// one small decompression), and handing them to a blocking thread and back cost more than the
/// read itself: two context switches per request dominated a profile of 1,000 small reads.
fn inline<R>(fs: &Arc<Fs>, f: impl FnOnce(&Fs) -> Result<R, Errno>) -> Result<R, Errno> {
    f(fs)
}

/// Runs filesystem changes on a blocking thread: a commit waits for fsync.
async fn blocking<R: Send + 'static>(
    fs: &Arc<Fs>,
    f: impl FnOnce(&Fs) -> Result<R, Errno> + Send + 'static,
) -> Result<R, Errno> {
    let fs = fs.clone();
    tokio::task::spawn_blocking(move || f(&fs)).await.map_err(|_| EIO)?
}
