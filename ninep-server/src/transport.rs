//! Byte-stream transports: a unix socket (mode 0600) and TCP. Each connection is a
//! [`Session`]; a client that sends garbage is disconnected and nobody else notices.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::mpsc;

use crate::fs::Fs;
use crate::session::Session;
use crate::wire::DecodeError;
use crate::Frame;

/// Why a transport stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listening on {address}")]
    Listen {
        address: String,
        #[source]
        source: std::io::Error,
    },
}

/// Serves one connection until the peer leaves or breaks the protocol.
///
/// One task reads requests and writes replies: a request answered inline (most are) has its
/// reply written by the same task right after, with no hand-off to a writer task, which
/// measurably cut the latency of small reads. Replies from requests that had to wait arrive
/// on the same channel and are written as soon as they come.
pub async fn serve_connection<S>(fs: Arc<Fs>, stream: S, peer: String)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (reader, mut writer) = tokio::io::split(stream);
    let (replies, mut outgoing) = mpsc::unbounded_channel::<Vec<u8>>();
    let session = Session::new(fs, replies);
    let credits = session.credits();
    let mut frames = Frames::new(reader);
    let mut room = false;
    let outcome: Result<(), ReadError> = 'connection: loop {
        while let Ok(frame) = outgoing.try_recv() {
            if let Err(e) = writer.write_all(&frame).await {
                break 'connection Err(e.into());
            }
            credits.delivered();
        }
        tokio::select! {
            biased;
            Some(frame) = outgoing.recv() => {
                if let Err(e) = writer.write_all(&frame).await {
                    break 'connection Err(e.into());
                }
                credits.delivered();
            }
            next = async {
                // Reads only while the connection has room for one more request in flight.
                if !room {
                    session.ready().await;
                    room = true;
                }
                frames.next(session.msize()).await
            } => match next {
                Ok(Some(frame)) => {
                    room = false;
                    if let Err(e) = session.dispatch(&frame) {
                        break 'connection Err(e.into());
                    }
                }
                Ok(None) => break 'connection Ok(()),
                Err(e) => break 'connection Err(e),
            },
        }
    };
    match outcome {
        Ok(()) => tracing::debug!(%peer, "client left"),
        Err(e) => crate::log::dropping_a_client(&peer, &e),
    }
    session.close();
}

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("connection")]
    Io(#[from] std::io::Error),
    #[error("bad frame")]
    Decode(#[from] DecodeError),
    #[error("the connection ended inside a frame")]
    Truncated,
}

/// How much is asked of the socket per read.
const READ_CHUNK: usize = 64 << 10;

/// Whole frames from a byte stream, through a buffer: a small request costs one read, and
/// requests sent back to back arrive together. Cancel-safe, since bytes read stay in the
/// buffer, so the connection can wait for a request and for replies at once.
struct Frames<R> {
    inner: R,
    buf: Vec<u8>,
    /// Where the first unconsumed byte of `buf` is.
    start: usize,
}

impl<R: AsyncRead + Unpin> Frames<R> {
    fn new(inner: R) -> Self {
        Frames { inner, buf: Vec::with_capacity(READ_CHUNK), start: 0 }
    }

    /// The next frame, `None` when the peer closed the connection between frames.
    async fn next(&mut self, msize: u32) -> Result<Option<Vec<u8>>, ReadError> {
        loop {
            let available = &self.buf[self.start..];
            let mut wanted = 4;
            if let Some(prefix) = available.first_chunk::<4>() {
                // Checked against msize before anything is allocated for it.
                wanted = Frame::size(*prefix, msize)?;
                if available.len() >= wanted {
                    let frame = available[..wanted].to_vec();
                    self.start += wanted;
                    return Ok(Some(frame));
                }
            }
            self.buf.drain(..self.start);
            self.start = 0;
            self.buf.reserve(READ_CHUNK.max(wanted - self.buf.len()));
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() { Ok(None) } else { Err(ReadError::Truncated) };
            }
        }
    }
}

/// Binds a unix socket at `path` (replacing a stale one), readable by its owner only.
pub fn bind_unix(path: &Path) -> Result<UnixListener, Error> {
    let listen_err = |source| Error::Listen { address: path.display().to_string(), source };
    if path.exists() {
        std::fs::remove_file(path).map_err(listen_err)?;
    }
    let listener = UnixListener::bind(path).map_err(listen_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(listen_err)?;
    Ok(listener)
}

/// Connections one listener serves at once; more are closed as they come.
pub const MAX_CONNECTIONS: usize = 128;

/// Accepts for ever: an accept that fails (out of descriptors, most likely) is retried after
/// a pause that grows to a few seconds, so that a burst of clients cannot end the listener;
/// past [`MAX_CONNECTIONS`] a new connection is closed at once.
async fn accept_loop<L, S, F, Fut>(what: &str, mut accept: F, mut serve: L)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<(S, String)>>,
    L: FnMut(S, String, tokio::sync::OwnedSemaphorePermit),
{
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut pause = std::time::Duration::from_millis(50);
    loop {
        match accept().await {
            Ok((stream, peer)) => {
                pause = std::time::Duration::from_millis(50);
                match slots.clone().try_acquire_owned() {
                    Ok(slot) => serve(stream, peer, slot),
                    Err(_) => crate::log::refused_a_client(what, MAX_CONNECTIONS),
                }
            }
            Err(e) => {
                crate::log::accept_failed(what, &e, pause);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(5));
            }
        }
    }
}

/// Serves connections on a bound unix socket, for ever.
pub async fn serve_unix_listener(fs: Arc<Fs>, listener: UnixListener) -> Result<(), Error> {
    let accept = || async { listener.accept().await.map(|(s, _)| (s, "unix".to_owned())) };
    accept_loop("the unix socket", accept, |stream, peer, slot| {
        let fs = fs.clone();
        tokio::spawn(async move {
            serve_connection(fs, stream, peer).await;
            drop(slot);
        });
    })
    .await;
    Ok(())
}

/// Binds and serves a unix socket at `path`.
pub async fn serve_unix(fs: Arc<Fs>, path: &Path) -> Result<(), Error> {
    let listener = bind_unix(path)?;
    tracing::info!(socket = %path.display(), "serving 9P");
    serve_unix_listener(fs, listener).await
}

/// Listens on TCP at `listener` (bound by the caller, loopback unless the user said otherwise).
pub async fn serve_tcp(fs: Arc<Fs>, listener: TcpListener) -> Result<(), Error> {
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "serving 9P");
    }
    let accept = || async { listener.accept().await.map(|(s, peer)| (s, peer.to_string())) };
    accept_loop("the TCP listener", accept, |stream, peer, slot| {
        let _ = stream.set_nodelay(true);
        let fs = fs.clone();
        tokio::spawn(async move {
            serve_connection(fs, stream, peer).await;
            drop(slot);
        });
    })
    .await;
    Ok(())
}
