//! Primitive 9P encodings: little-endian integers, `u16`-length strings, qids, stat records.
//!
//! Decoding never trusts a length it read: every count is checked against the bytes left in the
//! frame before anything is allocated, so a hostile frame costs at most its own size.

use crate::dialect::Dialect;

/// Why a frame could not be decoded. The connection that sent it is closed; others carry on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame ends inside {what}")]
    Truncated { what: &'static str },
    #[error("frame size {size} is below the 7-byte header or above the negotiated {max}")]
    BadSize { size: u32, max: u32 },
    #[error("unknown message type {0}")]
    UnknownType(u8),
    #[error("{extra} bytes left over after a {name}")]
    Trailing { name: &'static str, extra: usize },
    #[error("a walk of {0} names (at most 16)")]
    TooManyNames(u16),
}

/// A cursor over one frame's bytes.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len()
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError::Truncated { what });
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1, "a u8")?[0])
    }

    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2, "a u16")?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4, "a u32")?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8, "a u64")?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A string: `u16` length and bytes. Names stay bytes: a name that is not UTF-8 is the
    /// filesystem's business (an ENOENT), not a reason to drop the connection.
    pub fn string(&mut self) -> Result<Vec<u8>, DecodeError> {
        let n = self.u16()? as usize;
        Ok(self.take(n, "a string")?.to_vec())
    }

    /// Data: `u32` count and bytes.
    pub fn data(&mut self) -> Result<Vec<u8>, DecodeError> {
        let n = self.u32()? as usize;
        Ok(self.take(n, "data")?.to_vec())
    }

    pub fn qid(&mut self) -> Result<Qid, DecodeError> {
        Ok(Qid { kind: self.u8()?, version: self.u32()?, path: self.u64()? })
    }

    /// A `u16` count of items of at least `min_size` bytes each, checked against what is left.
    pub fn count(&mut self, min_size: usize, what: &'static str) -> Result<u16, DecodeError> {
        let n = self.u16()?;
        if (n as usize) * min_size > self.remaining() {
            return Err(DecodeError::Truncated { what });
        }
        Ok(n)
    }

    pub fn stat(&mut self, dialect: Dialect) -> Result<Stat, DecodeError> {
        let size = self.u16()? as usize;
        let mut r = Reader::new(self.take(size, "a stat")?);
        let mut stat = Stat {
            kind: r.u16()?,
            dev: r.u32()?,
            qid: r.qid()?,
            mode: r.u32()?,
            atime: r.u32()?,
            mtime: r.u32()?,
            length: r.u64()?,
            name: r.string()?,
            uid: r.string()?,
            gid: r.string()?,
            muid: r.string()?,
            ..Stat::default()
        };
        if dialect == Dialect::U {
            stat.extension = r.string()?;
            stat.n_uid = r.u32()?;
            stat.n_gid = r.u32()?;
            stat.n_muid = r.u32()?;
        }
        Ok(stat)
    }

    /// Fails unless the frame was consumed exactly.
    pub fn finish(&self, name: &'static str) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(DecodeError::Trailing { name, extra }),
        }
    }
}

/// Appends encodings to a buffer.
#[derive(Debug, Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Writes a string, cut at 65535 bytes (the most a `u16` length can say).
    pub fn string(&mut self, s: &[u8]) {
        let s = &s[..s.len().min(u16::MAX as usize)];
        self.u16(s.len() as u16);
        self.buf.extend_from_slice(s);
    }

    pub fn data(&mut self, d: &[u8]) {
        self.u32(u32::try_from(d.len()).unwrap_or(u32::MAX));
        self.buf.extend_from_slice(&d[..d.len().min(u32::MAX as usize)]);
    }

    pub fn qid(&mut self, q: &Qid) {
        self.u8(q.kind);
        self.u32(q.version);
        self.u64(q.path);
    }

    pub fn stat(&mut self, s: &Stat, dialect: Dialect) {
        let mut inner = Writer::default();
        inner.u16(s.kind);
        inner.u32(s.dev);
        inner.qid(&s.qid);
        inner.u32(s.mode);
        inner.u32(s.atime);
        inner.u32(s.mtime);
        inner.u64(s.length);
        inner.string(&s.name);
        inner.string(&s.uid);
        inner.string(&s.gid);
        inner.string(&s.muid);
        if dialect == Dialect::U {
            inner.string(&s.extension);
            inner.u32(s.n_uid);
            inner.u32(s.n_gid);
            inner.u32(s.n_muid);
        }
        self.u16(inner.buf.len() as u16);
        self.buf.extend_from_slice(&inner.buf);
    }
}

/// A qid: the server's identity of a file. `path` is the inode, `version` changes with content.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Qid {
    /// QTDIR (0x80), QTFILE (0), QTSYMLINK (0x02), ...
    pub kind: u8,
    pub version: u32,
    pub path: u64,
}

impl Qid {
    pub const DIR: u8 = 0x80;
    pub const FILE: u8 = 0x00;
    pub const SYMLINK: u8 = 0x02;
}

/// A 9P2000 stat record (with the 9P2000.u fields, zero or empty for plain 9P2000).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stat {
    pub kind: u16,
    pub dev: u32,
    pub qid: Qid,
    pub mode: u32,
    pub atime: u32,
    pub mtime: u32,
    pub length: u64,
    pub name: Vec<u8>,
    pub uid: Vec<u8>,
    pub gid: Vec<u8>,
    pub muid: Vec<u8>,
    pub extension: Vec<u8>,
    pub n_uid: u32,
    pub n_gid: u32,
    pub n_muid: u32,
}
