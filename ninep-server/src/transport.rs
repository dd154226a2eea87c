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
    #[error("accepting a connection")]
    Accept(#[source] std::io::Error),
}

/// Serves one connection until the peer leaves or breaks the protocol.
pub async fn serve_connection<S>(fs: Arc<Fs>, stream: S, peer: String)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (replies, mut outgoing) = mpsc::unbounded_channel::<Vec<u8>>();
    let session = Session::new(fs, replies);
    let credits = session.credits();
    let writing = tokio::spawn(async move {
        while let Some(frame) = outgoing.recv().await {
            if writer.write_all(&frame).await.is_err() {
                break;
            }
            credits.delivered();
        }
    });
    let outcome = read_frames(&session, &mut reader).await;
    match outcome {
        Ok(()) => tracing::debug!(%peer, "client left"),
        Err(e) => tracing::warn!(%peer, error = %e, "dropping a client"),
    }
    session.shutdown();
    drop(session);
    // The writer ends once every reply sender (the session's and its tasks') is gone.
    let _ = writing.await;
}

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("reading")]
    Io(#[from] std::io::Error),
    #[error("bad frame")]
    Decode(#[from] DecodeError),
}

async fn read_frames<R: AsyncRead + Unpin>(
    session: &Session,
    reader: &mut R,
) -> Result<(), ReadError> {
    loop {
        session.ready().await;
        let mut prefix = [0u8; 4];
        match reader.read_exact(&mut prefix).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        // Checked against msize before anything is allocated.
        let size = Frame::size(prefix, session.msize())?;
        let mut frame = vec![0u8; size];
        frame[..4].copy_from_slice(&prefix);
        reader.read_exact(&mut frame[4..]).await?;
        session.dispatch(&frame)?;
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

/// Serves connections on a bound unix socket.
pub async fn serve_unix_listener(fs: Arc<Fs>, listener: UnixListener) -> Result<(), Error> {
    loop {
        let (stream, _) = listener.accept().await.map_err(Error::Accept)?;
        tokio::spawn(serve_connection(fs.clone(), stream, "unix".into()));
    }
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
    loop {
        let (stream, peer) = listener.accept().await.map_err(Error::Accept)?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(fs.clone(), stream, peer.to_string()));
    }
}
