//! yamux over a handshaken byte stream. The [`Connection`](yamux::Connection) does nothing
//! unless polled, so one task (the driver, [`Session::start`]) owns it: it hands inbound
//! streams to an [`Inbound`] and opens outbound ones on request from any [`Session`] handle.
//! The driver ends when the byte stream does (the other end went away), and every stream of
//! the session ends with it.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::task::Poll;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};

use crate::{Error, Service};

/// A stream of a session, for tokio.
pub type Stream = Compat<yamux::Stream>;

/// Streams open at once per session. Each holds a 256 KiB window at most, so this bounds what
/// a peer can make the other end buffer.
pub const MAX_STREAMS: usize = 256;

/// Which end: the host starts sessions (yamux's client), the guest answers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Host,
    Guest,
}

type OpenRequest = oneshot::Sender<Result<yamux::Stream, Error>>;

/// Opens streams on a session; cheap to clone.
#[derive(Debug, Clone)]
pub struct Session {
    opens: mpsc::Sender<OpenRequest>,
}

/// Streams the other end opened, with their service.
#[derive(Debug)]
pub struct Inbound {
    streams: mpsc::UnboundedReceiver<yamux::Stream>,
}

impl Inbound {
    /// The next stream and the service it asks for; `None` once the session has ended. A
    /// stream whose header is unreadable is dropped (reset) and the next one taken.
    pub async fn next(&mut self) -> Option<(Service, Stream)> {
        loop {
            let mut stream = self.streams.recv().await?.compat();
            match Service::receive(&mut stream).await {
                Ok(service) => return Some((service, stream)),
                Err(e) => tracing::debug!(error = %e, "a channel stream without a header"),
            }
        }
    }
}

impl Session {
    /// Starts a session on `io` (handshaken already). Returns the handle, the inbound streams
    /// and the driver, which the caller spawns; the driver's result says how the session ended.
    pub fn start<S>(
        io: S,
        end: End,
    ) -> (Session, Inbound, impl std::future::Future<Output = Result<(), Error>> + Send)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut config = yamux::Config::default();
        config.set_max_num_streams(MAX_STREAMS);
        let mode = match end {
            End::Host => yamux::Mode::Client,
            End::Guest => yamux::Mode::Server,
        };
        let connection = yamux::Connection::new(io.compat(), config, mode);
        let (opens_tx, opens) = mpsc::channel(16);
        let (inbound_tx, streams) = mpsc::unbounded_channel();
        let driver = drive(connection, opens, inbound_tx);
        (Session { opens: opens_tx }, Inbound { streams }, driver)
    }

    /// Opens a stream for `service` (its header already sent).
    pub async fn open(&self, service: &Service) -> Result<Stream, Error> {
        let (tx, rx) = oneshot::channel();
        self.opens.send(tx).await.map_err(|_| Error::Closed)?;
        let mut stream = rx.await.map_err(|_| Error::Closed)??.compat();
        service.send(&mut stream).await?;
        Ok(stream)
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.opens.is_closed()
    }

    /// Whether `other` is a handle of this same session.
    pub fn same(&self, other: &Session) -> bool {
        self.opens.same_channel(&other.opens)
    }
}

async fn drive<T>(
    mut connection: yamux::Connection<T>,
    mut opens: mpsc::Receiver<OpenRequest>,
    inbound: mpsc::UnboundedSender<yamux::Stream>,
) -> Result<(), Error>
where
    T: futures::AsyncRead + futures::AsyncWrite + Unpin,
{
    let mut waiting: VecDeque<OpenRequest> = VecDeque::new();
    let mut handles_gone = false;
    let result = poll_fn(|cx| loop {
        while !handles_gone {
            match opens.poll_recv(cx) {
                Poll::Ready(Some(request)) => waiting.push_back(request),
                Poll::Ready(None) => handles_gone = true,
                Poll::Pending => break,
            }
        }
        while !waiting.is_empty() {
            match connection.poll_new_outbound(cx) {
                Poll::Ready(result) => {
                    if let Some(request) = waiting.pop_front() {
                        let _ = request.send(result.map_err(Error::from));
                    }
                }
                Poll::Pending => break,
            }
        }
        if handles_gone && inbound.is_closed() {
            // Nobody can use the session any more.
            return Poll::Ready(Ok(()));
        }
        match connection.poll_next_inbound(cx) {
            Poll::Ready(Some(Ok(stream))) => {
                // Dropped (and so reset) when nobody accepts streams any more.
                let _ = inbound.send(stream);
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(Error::from(e))),
            Poll::Ready(None) => return Poll::Ready(Err(Error::Closed)),
            Poll::Pending => return Poll::Pending,
        }
    })
    .await;
    // Let the other end know, if the byte stream still carries anything.
    let _ = poll_fn(|cx| connection.poll_close(cx)).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn both_ends_open_streams_by_service() {
        let (a, b) = tokio::io::duplex(64 << 10);
        let (host, mut host_in, host_driver) = Session::start(a, End::Host);
        let (guest, mut guest_in, guest_driver) = Session::start(b, End::Guest);
        let host_driver = tokio::spawn(host_driver);
        tokio::spawn(guest_driver);
        let mut up = guest.open(&Service::new(Service::NINEP, &[])).await.expect("open");
        up.write_all(b"Tversion").await.expect("write");
        let (service, mut accepted) = host_in.next().await.expect("inbound");
        assert_eq!(service.name, "9p");
        let mut buf = [0u8; 8];
        accepted.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"Tversion");
        let mut down = host.open(&Service::new("shell", &["-c", "true"])).await.expect("open");
        let writer = tokio::spawn(async move {
            // More than one window: the writer waits for the reader.
            down.write_all(&[7u8; 300_000]).await.expect("write");
            down.shutdown().await.expect("close");
        });
        let (service, mut got) = guest_in.next().await.expect("inbound");
        assert_eq!(service.args, ["-c", "true"]);
        let mut all = Vec::new();
        got.read_to_end(&mut all).await.expect("read to the end");
        assert_eq!(all.len(), 300_000);
        writer.await.expect("the writer finished");
        // The guest end going away ends the host's session and its streams.
        drop((guest, guest_in, up));
        let ended = host_driver.await.expect("joins");
        assert!(ended.is_ok() || matches!(ended, Err(Error::Closed)), "{ended:?}");
        let mut rest = Vec::new();
        let _ = accepted.read_to_end(&mut rest).await;
        assert!(host.open(&Service::new("9p", &[])).await.is_err());
    }
}
