//! Every 9P message, as one enum, decoded from and encoded to frames.
//!
//! A frame is `size[4] type[1] tag[2] body`, little-endian, `size` counting itself. 9P2000.L
//! (Linux's dialect) adds messages (numbers below 100) and takes the 9P2000.u attach; 9P2000.u
//! extends stat, Tcreate and Rerror; plain 9P2000 is the base. The [`Dialect`] negotiated by
//! Tversion decides how the fields that differ are read and written.
//!
//! The table below is the whole protocol: one line per message, its number, its fields.

pub use crate::dialect::Dialect;
use crate::wire::{DecodeError, Qid, Reader, Stat, Writer};

/// `n_uname` when the client has none.
pub const NONUNAME: u32 = u32::MAX;
/// The tag of Tversion.
pub const NOTAG: u16 = u16::MAX;
/// "No fid" (afid of an unauthenticated attach).
pub const NOFID: u32 = u32::MAX;
/// The size of `size[4] type[1] tag[2]`.
pub const HEADER: usize = 7;
/// Most names one walk may carry.
pub const MAXWELEM: u16 = 16;

macro_rules! field_type {
    (u8) => { u8 };
    (u16) => { u16 };
    (u32) => { u32 };
    (u64) => { u64 };
    (str) => { Vec<u8> };
    (data) => { Vec<u8> };
    (qid) => { Qid };
    (names) => { Vec<Vec<u8>> };
    (qids) => { Vec<Qid> };
    (stat) => { Stat };
    // u32 present in 9P2000.u and 9P2000.L (n_uname), NONUNAME otherwise.
    (nuname) => { u32 };
    // Present in 9P2000.u only (Tcreate's extension, Rerror's errno); empty or 0 otherwise.
    (ustr) => { Vec<u8> };
    (uu32) => { u32 };
}

macro_rules! get {
    ($r:ident, $d:ident, u8) => {
        $r.u8()?
    };
    ($r:ident, $d:ident, u16) => {
        $r.u16()?
    };
    ($r:ident, $d:ident, u32) => {
        $r.u32()?
    };
    ($r:ident, $d:ident, u64) => {
        $r.u64()?
    };
    ($r:ident, $d:ident, str) => {
        $r.string()?
    };
    ($r:ident, $d:ident, data) => {
        $r.data()?
    };
    ($r:ident, $d:ident, qid) => {
        $r.qid()?
    };
    ($r:ident, $d:ident, names) => {{
        let n = $r.count(2, "walk names")?;
        if n > MAXWELEM {
            return Err(DecodeError::TooManyNames(n));
        }
        (0..n).map(|_| $r.string()).collect::<Result<Vec<_>, _>>()?
    }};
    ($r:ident, $d:ident, qids) => {{
        let n = $r.count(13, "walk qids")?;
        if n > MAXWELEM {
            return Err(DecodeError::TooManyNames(n));
        }
        (0..n).map(|_| $r.qid()).collect::<Result<Vec<_>, _>>()?
    }};
    ($r:ident, $d:ident, stat) => {{
        // Rstat and Twstat wrap the stat (which has its own size) in one more size field.
        let n = $r.u16()? as usize;
        if n > $r.remaining() {
            return Err(DecodeError::Truncated { what: "a stat" });
        }
        $r.stat($d)?
    }};
    ($r:ident, $d:ident, nuname) => {
        if $d == Dialect::Plain {
            NONUNAME
        } else {
            $r.u32()?
        }
    };
    ($r:ident, $d:ident, ustr) => {
        if $d == Dialect::U {
            $r.string()?
        } else {
            Vec::new()
        }
    };
    ($r:ident, $d:ident, uu32) => {
        if $d == Dialect::U {
            $r.u32()?
        } else {
            0
        }
    };
}

macro_rules! put {
    ($w:ident, $d:ident, u8, $v:expr) => {
        $w.u8(*$v)
    };
    ($w:ident, $d:ident, u16, $v:expr) => {
        $w.u16(*$v)
    };
    ($w:ident, $d:ident, u32, $v:expr) => {
        $w.u32(*$v)
    };
    ($w:ident, $d:ident, u64, $v:expr) => {
        $w.u64(*$v)
    };
    ($w:ident, $d:ident, str, $v:expr) => {
        $w.string($v)
    };
    ($w:ident, $d:ident, data, $v:expr) => {
        $w.data($v)
    };
    ($w:ident, $d:ident, qid, $v:expr) => {
        $w.qid($v)
    };
    ($w:ident, $d:ident, names, $v:expr) => {{
        $w.u16($v.len() as u16);
        for name in $v.iter() {
            $w.string(name);
        }
    }};
    ($w:ident, $d:ident, qids, $v:expr) => {{
        $w.u16($v.len() as u16);
        for qid in $v.iter() {
            $w.qid(qid);
        }
    }};
    ($w:ident, $d:ident, stat, $v:expr) => {{
        let mut inner = Writer::default();
        inner.stat($v, $d);
        $w.u16(inner.buf.len() as u16);
        $w.buf.extend_from_slice(&inner.buf);
    }};
    ($w:ident, $d:ident, nuname, $v:expr) => {
        if $d != Dialect::Plain {
            $w.u32(*$v)
        }
    };
    ($w:ident, $d:ident, ustr, $v:expr) => {
        if $d == Dialect::U {
            $w.string($v)
        }
    };
    ($w:ident, $d:ident, uu32, $v:expr) => {
        if $d == Dialect::U {
            $w.u32(*$v)
        }
    };
}

macro_rules! fcalls {
    ($($name:ident = $id:literal { $($field:ident : $kind:tt),* })*) => {
        /// One 9P message (T: from the client, R: the reply). Names and strings are bytes.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Fcall {
            $($name { $($field: field_type!($kind)),* },)*
        }

        impl Fcall {
            /// The message's number on the wire.
            pub fn type_id(&self) -> u8 {
                match self { $(Fcall::$name { .. } => $id,)* }
            }

            /// The message's name, for logs.
            pub fn name(&self) -> &'static str {
                match self { $(Fcall::$name { .. } => stringify!($name),)* }
            }

            fn decode_body(id: u8, r: &mut Reader<'_>, d: Dialect) -> Result<Fcall, DecodeError> {
                let fcall = match id {
                    $($id => Fcall::$name { $($field: get!(r, d, $kind)),* },)*
                    other => return Err(DecodeError::UnknownType(other)),
                };
                Ok(fcall)
            }

            #[allow(unused_variables)]
            fn encode_body(&self, w: &mut Writer, d: Dialect) {
                match self {
                    $(Fcall::$name { $($field),* } => { $(put!(w, d, $kind, $field);)* })*
                }
            }
        }
    };
}

fcalls! {
    Rlerror = 7 { ecode: u32 }
    Tstatfs = 8 { fid: u32 }
    Rstatfs = 9 { kind: u32, bsize: u32, blocks: u64, bfree: u64, bavail: u64, files: u64, ffree: u64, fsid: u64, namelen: u32 }
    Tlopen = 12 { fid: u32, flags: u32 }
    Rlopen = 13 { qid: qid, iounit: u32 }
    Tlcreate = 14 { fid: u32, name: str, flags: u32, mode: u32, gid: u32 }
    Rlcreate = 15 { qid: qid, iounit: u32 }
    Tsymlink = 16 { fid: u32, name: str, target: str, gid: u32 }
    Rsymlink = 17 { qid: qid }
    Tmknod = 18 { dfid: u32, name: str, mode: u32, major: u32, minor: u32, gid: u32 }
    Rmknod = 19 { qid: qid }
    Trename = 20 { fid: u32, dfid: u32, name: str }
    Rrename = 21 {}
    Treadlink = 22 { fid: u32 }
    Rreadlink = 23 { target: str }
    Tgetattr = 24 { fid: u32, request_mask: u64 }
    Rgetattr = 25 { valid: u64, qid: qid, mode: u32, uid: u32, gid: u32, nlink: u64, rdev: u64, size: u64, blksize: u64, blocks: u64, atime_sec: u64, atime_nsec: u64, mtime_sec: u64, mtime_nsec: u64, ctime_sec: u64, ctime_nsec: u64, btime_sec: u64, btime_nsec: u64, gen: u64, data_version: u64 }
    Tsetattr = 26 { fid: u32, valid: u32, mode: u32, uid: u32, gid: u32, size: u64, atime_sec: u64, atime_nsec: u64, mtime_sec: u64, mtime_nsec: u64 }
    Rsetattr = 27 {}
    Txattrwalk = 30 { fid: u32, newfid: u32, name: str }
    Rxattrwalk = 31 { size: u64 }
    Txattrcreate = 32 { fid: u32, name: str, attr_size: u64, flags: u32 }
    Rxattrcreate = 33 {}
    Treaddir = 40 { fid: u32, offset: u64, count: u32 }
    Rreaddir = 41 { data: data }
    Tfsync = 50 { fid: u32, datasync: u32 }
    Rfsync = 51 {}
    Tlock = 52 { fid: u32, kind: u8, flags: u32, start: u64, length: u64, proc_id: u32, client_id: str }
    Rlock = 53 { status: u8 }
    Tgetlock = 54 { fid: u32, kind: u8, start: u64, length: u64, proc_id: u32, client_id: str }
    Rgetlock = 55 { kind: u8, start: u64, length: u64, proc_id: u32, client_id: str }
    Tlink = 70 { dfid: u32, fid: u32, name: str }
    Rlink = 71 {}
    Tmkdir = 72 { dfid: u32, name: str, mode: u32, gid: u32 }
    Rmkdir = 73 { qid: qid }
    Trenameat = 74 { olddirfid: u32, oldname: str, newdirfid: u32, newname: str }
    Rrenameat = 75 {}
    Tunlinkat = 76 { dirfid: u32, name: str, flags: u32 }
    Runlinkat = 77 {}
    Tversion = 100 { msize: u32, version: str }
    Rversion = 101 { msize: u32, version: str }
    Tauth = 102 { afid: u32, uname: str, aname: str, n_uname: nuname }
    Rauth = 103 { aqid: qid }
    Tattach = 104 { fid: u32, afid: u32, uname: str, aname: str, n_uname: nuname }
    Rattach = 105 { qid: qid }
    Rerror = 107 { ename: str, errno: uu32 }
    Tflush = 108 { oldtag: u16 }
    Rflush = 109 {}
    Twalk = 110 { fid: u32, newfid: u32, names: names }
    Rwalk = 111 { qids: qids }
    Topen = 112 { fid: u32, mode: u8 }
    Ropen = 113 { qid: qid, iounit: u32 }
    Tcreate = 114 { fid: u32, name: str, perm: u32, mode: u8, extension: ustr }
    Rcreate = 115 { qid: qid, iounit: u32 }
    Tread = 116 { fid: u32, offset: u64, count: u32 }
    Rread = 117 { data: data }
    Twrite = 118 { fid: u32, offset: u64, data: data }
    Rwrite = 119 { count: u32 }
    Tclunk = 120 { fid: u32 }
    Rclunk = 121 {}
    Tremove = 122 { fid: u32 }
    Rremove = 123 {}
    Tstat = 124 { fid: u32 }
    Rstat = 125 { stat: stat }
    Twstat = 126 { fid: u32, stat: stat }
    Rwstat = 127 {}
}

/// A tagged message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub tag: u16,
    pub fcall: Fcall,
}

impl Frame {
    /// Reads the size field of a frame and checks it against the negotiated `msize`.
    pub fn size(prefix: [u8; 4], msize: u32) -> Result<usize, DecodeError> {
        let size = u32::from_le_bytes(prefix);
        if (size as usize) < HEADER || size > msize {
            return Err(DecodeError::BadSize { size, max: msize });
        }
        Ok(size as usize)
    }

    /// Decodes one whole frame (size field included).
    pub fn decode(bytes: &[u8], dialect: Dialect) -> Result<Frame, DecodeError> {
        let mut r = Reader::new(bytes);
        let size = r.u32()?;
        if size as usize != bytes.len() {
            return Err(DecodeError::BadSize { size, max: bytes.len() as u32 });
        }
        let id = r.u8()?;
        let tag = r.u16()?;
        let fcall = Fcall::decode_body(id, &mut r, dialect)?;
        r.finish(fcall.name())?;
        Ok(Frame { tag, fcall })
    }

    /// Encodes the frame, size field included.
    pub fn encode(&self, dialect: Dialect) -> Vec<u8> {
        let mut w = Writer { buf: Vec::with_capacity(64) };
        w.u32(0);
        w.u8(self.fcall.type_id());
        w.u16(self.tag);
        self.fcall.encode_body(&mut w, dialect);
        let size = w.buf.len() as u32;
        w.buf[..4].copy_from_slice(&size.to_le_bytes());
        w.buf
    }
}

/// One entry of an Rreaddir: `qid[13] offset[8] type[1] name[s]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub qid: Qid,
    /// The cookie a client passes to continue after this entry.
    pub offset: u64,
    /// The `d_type` (DT_DIR = 4, DT_REG = 8, DT_LNK = 10).
    pub kind: u8,
    pub name: Vec<u8>,
}

impl DirEntry {
    /// The encoded size, to fill a reply up to the client's count.
    pub fn size(&self) -> usize {
        13 + 8 + 1 + 2 + self.name.len()
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer { buf: std::mem::take(out) };
        w.qid(&self.qid);
        w.u64(self.offset);
        w.u8(self.kind);
        w.string(&self.name);
        *out = w.buf;
    }

    /// Decodes the data of an Rreaddir.
    pub fn decode_all(data: &[u8]) -> Result<Vec<DirEntry>, DecodeError> {
        let mut r = Reader::new(data);
        let mut out = Vec::new();
        while r.remaining() > 0 {
            out.push(DirEntry {
                qid: r.qid()?,
                offset: r.u64()?,
                kind: r.u8()?,
                name: r.string()?,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
