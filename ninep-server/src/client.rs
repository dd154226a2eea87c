//! A small 9P2000.L client: the project's own, for tests, benchmarks and diagnostics.
//!
//! Requests can be sent without waiting ([`Client::send`]) so that tests can keep a stream read
//! blocked and flush it; [`Client::rpc`] is the plain request-and-answer.

use std::collections::HashMap;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::codec::{Dialect, DirEntry, Fcall, Frame, NOFID, NOTAG};
use crate::errno::Errno;
use crate::wire::Qid;

/// What went wrong on the client side.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("talking to the server")]
    Io(#[from] std::io::Error),
    #[error("decoding a reply")]
    Decode(#[from] crate::wire::DecodeError),
    /// The server answered with an error number.
    #[error("the server answered errno {0}")]
    Errno(Errno),
    #[error("unexpected reply {0}")]
    Unexpected(&'static str),
}

impl Error {
    /// The errno, if the server sent one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Errno(e) => Some(*e),
            _ => None,
        }
    }
}

/// A connection speaking 9P2000.L.
#[derive(Debug)]
pub struct Client<S> {
    stream: S,
    msize: u32,
    next_tag: u16,
    next_fid: u32,
    early: HashMap<u16, Fcall>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Negotiates 9P2000.L with `msize` and attaches fid 0 to the root.
    pub async fn connect(stream: S, msize: u32) -> Result<Self, Error> {
        let mut client = Client { stream, msize, next_tag: 0, next_fid: 1, early: HashMap::new() };
        client.write(NOTAG, Fcall::Tversion { msize, version: b"9P2000.L".to_vec() }).await?;
        match client.recv().await?.fcall {
            Fcall::Rversion { msize, version } if version == b"9P2000.L" => client.msize = msize,
            _ => return Err(Error::Unexpected("Rversion")),
        }
        let attach = Fcall::Tattach {
            fid: 0,
            afid: NOFID,
            uname: b"root".to_vec(),
            aname: Vec::new(),
            n_uname: 0,
        };
        client.rpc(attach).await?;
        Ok(client)
    }

    pub fn msize(&self) -> u32 {
        self.msize
    }

    async fn write(&mut self, tag: u16, fcall: Fcall) -> Result<(), Error> {
        self.stream.write_all(&Frame { tag, fcall }.encode(Dialect::L)).await?;
        Ok(())
    }

    /// Sends a request and returns its tag without waiting for the answer.
    pub async fn send(&mut self, fcall: Fcall) -> Result<u16, Error> {
        let tag = self.next_tag;
        self.next_tag = self.next_tag.wrapping_add(1) % NOTAG;
        self.write(tag, fcall).await?;
        Ok(tag)
    }

    async fn recv(&mut self) -> Result<Frame, Error> {
        let mut prefix = [0u8; 4];
        self.stream.read_exact(&mut prefix).await?;
        let size = Frame::size(prefix, self.msize.max(crate::session::MAX_MSIZE))?;
        let mut bytes = vec![0u8; size];
        bytes[..4].copy_from_slice(&prefix);
        self.stream.read_exact(&mut bytes[4..]).await?;
        Ok(Frame::decode(&bytes, Dialect::L)?)
    }

    /// Waits for the answer to `tag`, keeping answers to other tags for later.
    pub async fn wait(&mut self, tag: u16) -> Result<Fcall, Error> {
        let fcall = match self.early.remove(&tag) {
            Some(fcall) => fcall,
            None => loop {
                let frame = self.recv().await?;
                if frame.tag == tag {
                    break frame.fcall;
                }
                self.early.insert(frame.tag, frame.fcall);
            },
        };
        match fcall {
            Fcall::Rlerror { ecode } => Err(Error::Errno(Errno::from_wire(ecode))),
            other => Ok(other),
        }
    }

    /// Sends a request and waits for its answer.
    pub async fn rpc(&mut self, fcall: Fcall) -> Result<Fcall, Error> {
        let tag = self.send(fcall).await?;
        self.wait(tag).await
    }

    /// A new fid for `path` (`/`-separated, from the root).
    pub async fn walk(&mut self, path: &str) -> Result<u32, Error> {
        let fid = self.next_fid;
        self.next_fid += 1;
        let names: Vec<Vec<u8>> =
            path.split('/').filter(|s| !s.is_empty()).map(|s| s.as_bytes().to_vec()).collect();
        let wanted = names.len();
        match self.rpc(Fcall::Twalk { fid: 0, newfid: fid, names }).await? {
            Fcall::Rwalk { qids } if qids.len() == wanted => Ok(fid),
            Fcall::Rwalk { .. } => Err(Error::Errno(crate::errno::ENOENT)),
            _ => Err(Error::Unexpected("Rwalk")),
        }
    }

    pub async fn clunk(&mut self, fid: u32) -> Result<(), Error> {
        self.rpc(Fcall::Tclunk { fid }).await.map(drop)
    }

    pub async fn open(&mut self, fid: u32, flags: u32) -> Result<Qid, Error> {
        match self.rpc(Fcall::Tlopen { fid, flags }).await? {
            Fcall::Rlopen { qid, .. } => Ok(qid),
            _ => Err(Error::Unexpected("Rlopen")),
        }
    }

    /// Reads a whole file (or one stream value) through `fid`, opened for reading.
    pub async fn read_to_end(&mut self, fid: u32) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        loop {
            let count = self.msize - 11;
            match self.rpc(Fcall::Tread { fid, offset: out.len() as u64, count }).await? {
                Fcall::Rread { data } if data.is_empty() => return Ok(out),
                Fcall::Rread { data } => out.extend_from_slice(&data),
                _ => return Err(Error::Unexpected("Rread")),
            }
        }
    }

    /// One read at `offset`.
    pub async fn read_at(&mut self, fid: u32, offset: u64) -> Result<Vec<u8>, Error> {
        match self.rpc(Fcall::Tread { fid, offset, count: self.msize - 11 }).await? {
            Fcall::Rread { data } => Ok(data),
            _ => Err(Error::Unexpected("Rread")),
        }
    }

    /// Reads the file at `path`.
    pub async fn cat(&mut self, path: &str) -> Result<Vec<u8>, Error> {
        let fid = self.walk(path).await?;
        self.open(fid, 0).await?;
        let data = self.read_to_end(fid).await;
        self.clunk(fid).await?;
        data
    }

    /// Writes `data` to the existing file at `path` (truncating it first), in msize chunks.
    pub async fn write_file(&mut self, path: &str, data: &[u8]) -> Result<(), Error> {
        let fid = self.walk(path).await?;
        let outcome = self.write_fid(fid, data, 0o1001).await;
        self.clunk(fid).await?;
        outcome
    }

    async fn write_fid(&mut self, fid: u32, data: &[u8], flags: u32) -> Result<(), Error> {
        self.open(fid, flags).await?;
        let chunk = (self.msize - 23) as usize;
        let mut offset = 0;
        loop {
            let end = (offset + chunk).min(data.len());
            let part = data[offset..end].to_vec();
            match self.rpc(Fcall::Twrite { fid, offset: offset as u64, data: part }).await? {
                Fcall::Rwrite { count } if count as usize == end - offset => {}
                _ => return Err(Error::Unexpected("Rwrite")),
            }
            offset = end;
            if offset >= data.len() {
                return Ok(());
            }
        }
    }

    /// Creates the file `name` in the directory `dir` and writes `data` to it.
    pub async fn create(&mut self, dir: &str, name: &str, data: &[u8]) -> Result<(), Error> {
        let fid = self.walk(dir).await?;
        let created = self
            .rpc(Fcall::Tlcreate {
                fid,
                name: name.as_bytes().to_vec(),
                flags: 1,
                mode: 0o644,
                gid: 0,
            })
            .await;
        if let Err(e) = created {
            self.clunk(fid).await?;
            return Err(e);
        }
        let chunk = (self.msize - 23) as usize;
        let mut offset = 0;
        while offset < data.len() {
            let end = (offset + chunk).min(data.len());
            self.rpc(Fcall::Twrite {
                fid,
                offset: offset as u64,
                data: data[offset..end].to_vec(),
            })
            .await?;
            offset = end;
        }
        self.clunk(fid).await
    }

    pub async fn mkdir(&mut self, dir: &str, name: &str) -> Result<Qid, Error> {
        let fid = self.walk(dir).await?;
        let made = self
            .rpc(Fcall::Tmkdir { dfid: fid, name: name.as_bytes().to_vec(), mode: 0o755, gid: 0 })
            .await;
        self.clunk(fid).await?;
        match made? {
            Fcall::Rmkdir { qid } => Ok(qid),
            _ => Err(Error::Unexpected("Rmkdir")),
        }
    }

    pub async fn unlink(&mut self, dir: &str, name: &str, flags: u32) -> Result<(), Error> {
        let fid = self.walk(dir).await?;
        let done =
            self.rpc(Fcall::Tunlinkat { dirfid: fid, name: name.as_bytes().to_vec(), flags }).await;
        self.clunk(fid).await?;
        done.map(drop)
    }

    /// The names in the directory at `path`, all of them (several readdirs when needed).
    pub async fn ls(&mut self, path: &str) -> Result<Vec<String>, Error> {
        Ok(self.readdir(path).await?.into_iter().map(|(name, _)| name).collect())
    }

    /// The entries of the directory at `path` with the qids readdir gives them.
    pub async fn readdir(&mut self, path: &str) -> Result<Vec<(String, Qid)>, Error> {
        let fid = self.walk(path).await?;
        self.open(fid, 0).await?;
        let mut out = Vec::new();
        let mut offset = 0;
        loop {
            let reply = self.rpc(Fcall::Treaddir { fid, offset, count: self.msize - 11 }).await?;
            let Fcall::Rreaddir { data } = reply else { return Err(Error::Unexpected("Rreaddir")) };
            let entries = DirEntry::decode_all(&data)?;
            let Some(last) = entries.last() else { break };
            offset = last.offset;
            out.extend(
                entries.into_iter().map(|e| (String::from_utf8_lossy(&e.name).into_owned(), e.qid)),
            );
        }
        self.clunk(fid).await?;
        Ok(out)
    }

    /// getattr of `path`: (qid, mode, size).
    pub async fn stat(&mut self, path: &str) -> Result<(Qid, u32, u64), Error> {
        let fid = self.walk(path).await?;
        let reply = self.rpc(Fcall::Tgetattr { fid, request_mask: 0x7ff }).await;
        self.clunk(fid).await?;
        match reply? {
            Fcall::Rgetattr { qid, mode, size, .. } => Ok((qid, mode, size)),
            _ => Err(Error::Unexpected("Rgetattr")),
        }
    }
}
