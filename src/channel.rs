//! The control plane's end of the channel to the guest agent (see cairn-channel): qemu's
//! virtio-serial port, whose host side is a unix socket qemu listens on in the run directory,
//! or the native VMM's vsock, whose guest connections arrive at a unix socket of ours. Both
//! live in the run directory, which only the user running `cairn up` can enter: nothing here
//! is a network port.
//!
//! One session at a time: when it ends (the guest rebooted, qemu went away, or this process
//! is new and adopted a running VM) the next one is made as soon as the other end is back.
//! Streams the guest opens are served here (its /Database mount is one); streams to the guest
//! are opened through the current session of [`Sessions`], which outlives the VMs: the docker
//! socket, opened once, reaches the guest of whichever boot is current.

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

/// The session with the guest agent of the current VM, if there is one, for the control
/// plane's whole life: each VM's [`HostChannel`] publishes its sessions here, so that whoever
/// follows it (the docker socket, the status) sees the next boot's session without being told
/// of the new VM.
#[derive(Debug, Clone)]
pub struct Sessions(Arc<watch::Sender<Option<Session>>>);

impl Default for Sessions {
    fn default() -> Self {
        Sessions(Arc::new(watch::channel(None).0))
    }
}

impl Sessions {
    /// Follows the session as it comes and goes.
    pub fn subscribe(&self) -> watch::Receiver<Option<Session>> {
        self.0.subscribe()
    }

    /// The current session, if the guest's end is there.
    pub fn current(&self) -> Option<Session> {
        self.0.borrow().clone().filter(|s| !s.is_closed())
    }
}

/// What the control plane serves to the guest on the channel: its /Database, and the ports
/// its containers publish.
#[derive(Debug, Clone)]
pub struct Services {
    pub fs: Arc<cairn_9p::Fs>,
    pub published: crate::net::published::Published,
}

/// The host's end of the channel of one VM; dropping it ends the channel (and its session).
#[derive(Debug)]
pub struct HostChannel {
    publisher: Publisher,
    task: JoinHandle<()>,
}

impl Drop for HostChannel {
    fn drop(&mut self) {
        self.task.abort();
        self.publisher.withdraw();
    }
}

/// One channel's side of [`Sessions`]: what it withdraws is only what it published, so the
/// channel of a VM that is gone never hides the session of the VM that followed it (the old
/// channel is dropped after the new one starts when the control plane starts a VM again).
#[derive(Debug, Clone)]
struct Publisher {
    sessions: Sessions,
    mine: Arc<std::sync::Mutex<Option<Session>>>,
}

impl Publisher {
    fn new(sessions: &Sessions) -> Self {
        Publisher { sessions: sessions.clone(), mine: Arc::default() }
    }

    fn publish(&self, session: Session) {
        *self.mine.lock().unwrap_or_else(|e| e.into_inner()) = Some(session.clone());
        self.sessions.0.send_replace(Some(session));
    }

    fn withdraw(&self) {
        let Some(mine) = self.mine.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        self.sessions.0.send_if_modified(|current| {
            let ours = current.as_ref().is_some_and(|c| c.same(&mine));
            if ours {
                *current = None;
            }
            ours
        });
    }
}

impl HostChannel {
    /// The channel through qemu's virtio-serial port, whose chardev listens at `path`; its
    /// sessions are published in `sessions`.
    pub fn qemu(
        path: PathBuf,
        services: Services,
        runtime: &tokio::runtime::Handle,
        sessions: &Sessions,
    ) -> Self {
        let publisher = Publisher::new(sessions);
        let tx = publisher.clone();
        let task = runtime.spawn(async move {
            loop {
                if let Ok(stream) = tokio::net::UnixStream::connect(&path).await {
                    run_session(stream, &services, &tx).await;
                }
                tokio::time::sleep(RETRY).await;
            }
        });
        HostChannel { publisher, task }
    }

    /// The channel through the native VMM's vsock: the guest's connections to
    /// [`VSOCK_PORT`] arrive at the unix socket `path` (created here, mode 0600).
    pub fn vsock(
        path: &Path,
        services: Services,
        runtime: &tokio::runtime::Handle,
        sessions: &Sessions,
    ) -> Result<Self, crate::Error> {
        let listener = {
            let _entered = runtime.enter();
            cairn_9p::transport::bind_unix(path)?
        };
        let publisher = Publisher::new(sessions);
        let tx = publisher.clone();
        let task = runtime.spawn(async move {
            loop {
                match listener.accept().await {
                    // One session at a time: the agent is the only peer, and it connects again
                    // when its session ends.
                    Ok((stream, _)) => run_session(stream, &services, &tx).await,
                    Err(e) => {
                        tracing::debug!(error = %e, "accepting the guest's channel");
                        tokio::time::sleep(RETRY).await;
                    }
                }
            }
        });
        Ok(HostChannel { publisher, task })
    }
}

/// Handshakes on `io` and serves the session until it ends.
async fn run_session<S>(mut io: S, services: &Services, current: &Publisher)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if let Err(e) = handshake::host(&mut io).await {
        tracing::debug!(error = %e, "the channel's handshake");
        return;
    }
    let (session, mut inbound, driver) = Session::start(io, End::Host);
    current.publish(session.clone());
    tracing::info!("channel: the guest agent is connected");
    let serve = async {
        while let Some((service, stream)) = inbound.next().await {
            match service.name.as_str() {
                Service::NINEP => {
                    tokio::spawn(cairn_9p::transport::serve_connection(
                        services.fs.clone(),
                        stream,
                        "guest".into(),
                    ));
                }
                cairn_channel::ports::PUBLISH => {
                    let (published, session) = (services.published.clone(), session.clone());
                    tokio::spawn(async move { published.serve(service, stream, session).await });
                }
                other => tracing::warn!(service = other, "the guest asked for an unknown service"),
            }
        }
    };
    tokio::select! {
        ended = driver => tracing::info!(?ended, "channel: the session ended"),
        () = serve => {}
    }
    current.withdraw();
}

/// How long a connection made while the guest's end is away waits for it (the control plane
/// just adopted a VM, or the guest is rebooting) before it is closed.
const WAIT_FOR_SESSION: Duration = Duration::from_secs(120);

/// Says whether a connection is turned away before it reaches the guest, and with what bytes
/// (the docker socket answers for a paused VM itself, rather than leave the client hanging).
pub type Gate = Arc<dyn Fn() -> Option<Vec<u8>> + Send + Sync>;

/// Serves a unix socket whose every connection becomes a stream of `service` to the guest
/// (the docker socket: each client reaches dockerd's own socket in the guest), unless `gate`
/// turns it away. A connection made while there is no session waits for one a while. Runs
/// until aborted.
pub async fn serve_unix(
    listener: tokio::net::UnixListener,
    service: Service,
    sessions: watch::Receiver<Option<Session>>,
    gate: Option<Gate>,
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
        if let Some(refusal) = gate.as_ref().and_then(|gate| gate()) {
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let _ = client.write_all(&refusal).await;
                let _ = client.shutdown().await;
            });
            continue;
        }
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
