//! The control plane's end of the channel to the guest agent (see cairn-channel): qemu's
//! virtio-serial port, whose host side is a unix socket qemu listens on in the run directory,
//! or the native VMM's vsock, whose guest connections arrive at a unix socket of ours. Both
//! live in the run directory, which only the user running `cairn up` can enter: nothing here
//! is a network port.
//!
//! One session at a time: when it ends (the guest rebooted, qemu went away, or this process
//! is new and adopted a running VM) the next one is made as soon as the other end is back.
//! Streams the guest opens are served here (its /Database mount is one); streams to the guest
//! are opened through [`HostChannel::session`], e.g. for each connection to the docker socket.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cairn_channel::session::End;
use cairn_channel::{handshake, Service, Session};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The guest's vsock port for the channel on the native VMM.
pub const VSOCK_PORT: u32 = 1024;
/// The name of qemu's virtio-serial port for the channel.
pub const PORT_NAME: &str = "cairn.channel";
/// Pause between attempts to reach the other end.
const RETRY: Duration = Duration::from_millis(200);

/// The host's end of the channel of one VM; dropping it ends the channel.
#[derive(Debug)]
pub struct HostChannel {
    sessions: watch::Receiver<Option<Session>>,
    task: JoinHandle<()>,
}

impl Drop for HostChannel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HostChannel {
    /// The channel through qemu's virtio-serial port, whose chardev listens at `path`.
    pub fn qemu(path: PathBuf, fs: Arc<cairn_9p::Fs>, runtime: &tokio::runtime::Handle) -> Self {
        let (tx, sessions) = watch::channel(None);
        let task = runtime.spawn(async move {
            loop {
                if let Ok(stream) = tokio::net::UnixStream::connect(&path).await {
                    run_session(stream, &fs, &tx).await;
                }
                tokio::time::sleep(RETRY).await;
            }
        });
        HostChannel { sessions, task }
    }

    /// The channel through the native VMM's vsock: the guest's connections to
    /// [`VSOCK_PORT`] arrive at the unix socket `path` (created here, mode 0600).
    pub fn vsock(
        path: &Path,
        fs: Arc<cairn_9p::Fs>,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Self, crate::Error> {
        let listener = {
            let _entered = runtime.enter();
            cairn_9p::transport::bind_unix(path)?
        };
        let (tx, sessions) = watch::channel(None);
        let task = runtime.spawn(async move {
            loop {
                match listener.accept().await {
                    // One session at a time: the agent is the only peer, and it connects again
                    // when its session ends.
                    Ok((stream, _)) => run_session(stream, &fs, &tx).await,
                    Err(e) => {
                        tracing::debug!(error = %e, "accepting the guest's channel");
                        tokio::time::sleep(RETRY).await;
                    }
                }
            }
        });
        Ok(HostChannel { sessions, task })
    }

    /// The current session, if the guest's end is there.
    pub fn session(&self) -> Option<Session> {
        self.sessions.borrow().clone().filter(|s| !s.is_closed())
    }

    /// Follows the session as it comes and goes.
    pub fn sessions(&self) -> watch::Receiver<Option<Session>> {
        self.sessions.clone()
    }
}

/// Handshakes on `io` and serves the session until it ends.
async fn run_session<S>(mut io: S, fs: &Arc<cairn_9p::Fs>, current: &watch::Sender<Option<Session>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if let Err(e) = handshake::host(&mut io).await {
        tracing::debug!(error = %e, "the channel's handshake");
        return;
    }
    let (session, mut inbound, driver) = Session::start(io, End::Host);
    current.send_replace(Some(session));
    tracing::info!("channel: the guest agent is connected");
    let serve = async {
        while let Some((service, stream)) = inbound.next().await {
            match service.name.as_str() {
                Service::NINEP => {
                    tokio::spawn(cairn_9p::transport::serve_connection(
                        fs.clone(),
                        stream,
                        "guest".into(),
                    ));
                }
                other => tracing::warn!(service = other, "the guest asked for an unknown service"),
            }
        }
    };
    tokio::select! {
        ended = driver => tracing::info!(?ended, "channel: the session ended"),
        () = serve => {}
    }
    current.send_replace(None);
}

/// How long a connection made while the guest's end is away waits for it (the control plane
/// just adopted a VM, or the guest is rebooting) before it is closed.
const WAIT_FOR_SESSION: Duration = Duration::from_secs(30);

/// Serves a unix socket whose every connection becomes a stream of `service` to the guest
/// (the docker socket: each client reaches dockerd's own socket in the guest). A connection
/// made while there is no session waits for one a while. Runs until aborted.
pub async fn serve_unix(
    listener: tokio::net::UnixListener,
    service: Service,
    sessions: watch::Receiver<Option<Session>>,
) {
    loop {
        let mut client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(e) => {
                // Out of descriptors, most likely: wait rather than spin.
                tracing::debug!(error = %e, service = %service.name, "accepting");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let service = service.clone();
        let mut sessions = sessions.clone();
        tokio::spawn(async move {
            let waited = tokio::time::timeout(WAIT_FOR_SESSION, async {
                loop {
                    if let Some(session) = sessions.borrow_and_update().clone() {
                        if !session.is_closed() {
                            return Some(session);
                        }
                    }
                    sessions.changed().await.ok()?;
                }
            });
            // No session in time: the client sees its connection closed.
            let Ok(Some(session)) = waited.await else { return };
            match session.open(&service).await {
                Ok(mut stream) => {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut stream).await;
                }
                Err(e) => tracing::debug!(error = %e, service = %service.name, "opening a stream"),
            }
        });
    }
}
