//! What a connection holds between requests: its dialect and msize, its fids, and what each fid
//! has open.
//!
//! The session creates and resets it, the handlers read and change it; it lives here, below
//! both, so that neither has to reach into the other for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::dialect::Dialect;
use crate::errno::{Errno, EMFILE};

/// Fids one connection may hold: enough for the kernel's dentries of a large tree walked with
/// `ls -R`, few enough that a client cannot fill the server's memory with them.
pub const MAX_FIDS: usize = 65_536;

/// Locks one of the connection's mutexes. Each critical section is a single map update or a
/// copy, so a lock poisoned by a panic is still consistent and stays usable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a request's handler sees of its connection.
#[derive(Debug)]
pub(crate) struct State {
    pub dialect: Dialect,
    pub msize: u32,
    pub fids: HashMap<u32, Arc<FidCell>>,
    /// Tversion has been answered: until then nothing else is.
    pub versioned: bool,
    /// This connection's id (transactions belong to it).
    pub conn: u64,
}

impl State {
    /// Adds a fid, unless the connection already holds [`MAX_FIDS`].
    pub fn insert_fid(&mut self, fid: u32, cell: Arc<FidCell>) -> Result<(), Errno> {
        if self.fids.len() >= MAX_FIDS && !self.fids.contains_key(&fid) {
            return Err(EMFILE);
        }
        self.fids.insert(fid, cell);
        Ok(())
    }
}

/// A fid: where it points, and what opening it produced.
#[derive(Debug)]
pub(crate) struct FidCell {
    pub comps: Mutex<Vec<String>>,
    /// A tokio mutex: a read blocked on a stream holds this fid's lock only.
    pub open: tokio::sync::Mutex<Open>,
}

impl FidCell {
    /// A fid at `comps`, not open.
    pub fn new(comps: Vec<String>) -> Arc<FidCell> {
        Arc::new(FidCell { comps: Mutex::new(comps), open: tokio::sync::Mutex::new(Open::Closed) })
    }
}

/// The open state of a fid.
#[derive(Debug, Default)]
pub(crate) enum Open {
    #[default]
    Closed,
    /// A directory: its listing when opened, so readdir offsets stay stable.
    Dir(Vec<crate::fs::Child>),
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
pub(crate) struct Stream {
    pub heads: watch::Receiver<Option<cairn_db::ObjectId>>,
    /// The last value delivered, to wait for a different one.
    pub last: Option<Vec<u8>>,
    /// What is left of the current value for readers asking for fewer bytes than it has.
    pub pending: Vec<u8>,
    /// The current value has been read: the next read is the empty one.
    pub eof_next: bool,
}

impl Stream {
    /// A stream of the values `heads` announces, none read yet.
    pub fn new(heads: watch::Receiver<Option<cairn_db::ObjectId>>) -> Stream {
        Stream { heads, last: None, pending: Vec::new(), eof_next: false }
    }

    /// Up to `count` bytes of the pending value; the empty read follows its last byte.
    pub fn take(&mut self, count: u32) -> Vec<u8> {
        let n = (count as usize).min(self.pending.len());
        let out: Vec<u8> = self.pending.drain(..n).collect();
        if self.pending.is_empty() {
            self.eof_next = true;
        }
        out
    }
}
