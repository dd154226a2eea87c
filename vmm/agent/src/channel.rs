//! The agent's end of the channel to the control plane (see cairn-channel): a virtio-serial
//! port on qemu, a vsock connection on the native VMM. A thread of its own runs a small tokio
//! runtime that keeps a session up (the port is reopened and the handshake redone whenever the
//! control plane goes away and a new one connects) and serves the agent's synchronous code:
//! [`Channel::connect`] opens a stream for a service and hands back one end of a socketpair
//! relayed to it, an ordinary file descriptor that the kernel's 9P client can mount.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use cairn_channel::session::End;
use cairn_channel::{handshake, Service, Session};
use tokio::sync::{mpsc, oneshot, watch};

use super::{say, Error};
use crate::fd_stream::{set_nonblocking, FdStream};

/// Where the channel is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Device {
    /// The virtio-serial port with this name (qemu).
    Port(String),
    /// The host's vsock port (the native VMM; the host is CID 2).
    Vsock(u32),
}

impl Device {
    /// `virtio-serial:NAME` or `vsock:PORT`.
    pub fn parse(text: &str) -> Option<Device> {
        if let Some(name) = text.strip_prefix("virtio-serial:") {
            return (!name.is_empty()).then(|| Device::Port(name.to_owned()));
        }
        text.strip_prefix("vsock:")?.parse().ok().map(Device::Vsock)
    }
}

/// How long [`Channel::connect`] waits for a session (the control plane may be restarting).
const WAIT_FOR_SESSION: Duration = Duration::from_secs(5);
/// Pause before the device is opened again after a session ended.
const REOPEN_AFTER: Duration = Duration::from_millis(200);

type Request = (Service, oneshot::Sender<Result<UnixStream, Error>>);

/// The agent's handle on the channel.
#[derive(Debug, Clone)]
pub struct Channel {
    requests: mpsc::Sender<Request>,
}

impl Channel {
    /// Starts the channel's thread for `device`.
    pub fn start(device: Device) -> Result<Channel, Error> {
        let (requests, receiver) = mpsc::channel(16);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Boot(format!("the channel's runtime: {e}")))?;
        std::thread::Builder::new()
            .name("channel".into())
            .spawn(move || runtime.block_on(run(device, receiver)))
            .map_err(|e| Error::Boot(format!("the channel's thread: {e}")))?;
        Ok(Channel { requests })
    }

    /// Opens a stream to the control plane for `service`; blocks until it is open (or fails
    /// when no session comes up in a few seconds).
    pub fn connect(&self, service: &Service) -> Result<UnixStream, Error> {
        let (tx, rx) = oneshot::channel();
        self.requests.blocking_send((service.clone(), tx)).map_err(|_| Error::ChannelGone)?;
        rx.blocking_recv().map_err(|_| Error::ChannelGone)?
    }
}

/// Keeps a session up and answers requests with streams on it.
async fn run(device: Device, mut requests: mpsc::Receiver<Request>) {
    let (current, mut sessions) = watch::channel::<Option<Session>>(None);
    tokio::spawn(keep_up(device, current));
    tokio::spawn(super::ports::serve_local(sessions.clone()));
    while let Some((service, reply)) = requests.recv().await {
        let session = tokio::time::timeout(WAIT_FOR_SESSION, async {
            loop {
                if let Some(session) = sessions.borrow_and_update().clone() {
                    if !session.is_closed() {
                        return Some(session);
                    }
                }
                if sessions.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        let Ok(Some(session)) = session else {
            let _ = reply.send(Err(Error::NoSession));
            continue;
        };
        tokio::spawn(async move {
            let _ = reply.send(open_relayed(&session, &service).await);
        });
    }
}

/// Opens `service` and relays it to one end of a socketpair; returns the other end.
async fn open_relayed(session: &Session, service: &Service) -> Result<UnixStream, Error> {
    let mut stream = session
        .open(service)
        .await
        .map_err(|source| Error::OpenService { service: service.name.clone(), source })?;
    let pair = |source| Error::Device { device: "a socketpair".into(), source };
    let (ours, theirs) = UnixStream::pair().map_err(pair)?;
    ours.set_nonblocking(true).map_err(pair)?;
    let mut ours = tokio::net::UnixStream::from_std(ours).map_err(pair)?;
    tokio::spawn(async move {
        // Ends when either side closes: the mount went away, or the session did.
        let _ = tokio::io::copy_bidirectional(&mut ours, &mut stream).await;
    });
    Ok(theirs)
}

/// Opens the device, handshakes, runs the session until it ends; again, for ever.
async fn keep_up(device: Device, current: watch::Sender<Option<Session>>) {
    let mut complained = false;
    loop {
        let mut io = match open(&device) {
            Ok(io) => io,
            Err(e) => {
                if !complained {
                    say(&format!("channel: {e}; retrying"));
                    complained = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if handshake::guest(&mut io).await.is_err() {
            // The host went away mid-handshake: reopening the device drops what it left.
            tokio::time::sleep(REOPEN_AFTER).await;
            continue;
        }
        complained = false;
        let (session, mut inbound, driver) = Session::start(io, End::Guest);
        current.send_replace(Some(session));
        say("channel: connected to the control plane");
        let serve = async {
            while let Some((service, stream)) = inbound.next().await {
                tokio::spawn(serve_inbound(service, stream));
            }
        };
        tokio::select! {
            ended = driver => {
                if let Err(e) = ended {
                    say(&format!("channel: the session ended ({e})"));
                }
            }
            () = serve => {}
        }
        current.send_replace(None);
        tokio::time::sleep(REOPEN_AFTER).await;
    }
}

/// The guest's unix sockets that the control plane reaches through the channel, by service.
const SOCKETS: &[(&str, &str)] = &[(DOCKER, super::engine::SOCKET)];

/// The docker API: each stream is one connection to dockerd's socket.
pub const DOCKER: &str = "docker";

/// Serves a stream the control plane opened.
async fn serve_inbound(service: Service, mut stream: cairn_channel::Stream) {
    if service.name == cairn_channel::ports::FORWARD {
        return super::ports::serve_forward(service, stream).await;
    }
    if service.name == cairn_channel::file_events::SERVICE {
        return super::file_events::serve(stream).await;
    }
    if service.name == cairn_channel::shell::SERVICE {
        return super::shell::serve(stream).await;
    }
    if service.name == cairn_channel::clock::SERVICE {
        return super::clock::serve(stream).await;
    }
    let Some((_, socket)) = SOCKETS.iter().find(|(name, _)| *name == service.name) else {
        say(&format!("channel: no service {:?} in the guest", service.name));
        return;
    };
    match connect_when_listening(socket).await {
        Ok(mut local) => {
            let _ = tokio::io::copy_bidirectional(&mut stream, &mut local).await;
        }
        // The stream is dropped: the host's client sees its connection closed.
        Err(e) => tracing::debug!(error = %e, socket, "connecting a channel stream"),
    }
}

/// How long a connection waits for dockerd to listen: a `docker` command run while the VM
/// boots or the engine restarts is answered once it is up (dockerd's own start limit).
const WAIT_FOR_ENGINE: std::time::Duration = super::engine::START_TIMEOUT;

/// Connects to `socket`, waiting while the engine that will listen there is on its way.
async fn connect_when_listening(socket: &str) -> std::io::Result<tokio::net::UnixStream> {
    let deadline = tokio::time::Instant::now() + WAIT_FOR_ENGINE;
    loop {
        match tokio::net::UnixStream::connect(socket).await {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) && super::engine::expected()
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            result => return result,
        }
    }
}

/// Opens the channel's device.
fn open(device: &Device) -> Result<FdStream, Error> {
    match device {
        Device::Port(name) => {
            let path = port_path(name).ok_or_else(|| Error::NoPort(name.clone()))?;
            let err = |source| Error::Device { device: path.display().to_string(), source };
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(&path)
                .map_err(err)?;
            FdStream::new(file.into()).map_err(err)
        }
        Device::Vsock(port) => {
            let err = |source| Error::Device { device: format!("vsock port {port}"), source };
            FdStream::new(vsock_connect(*port).map_err(err)?).map_err(err)
        }
    }
}

use std::os::unix::fs::OpenOptionsExt;

/// The device node of the virtio-serial port called `name` (/sys/class/virtio-ports/vportNpM/name).
fn port_path(name: &str) -> Option<std::path::PathBuf> {
    let ports = std::fs::read_dir("/sys/class/virtio-ports").ok()?;
    ports.flatten().find_map(|entry| {
        let found = std::fs::read_to_string(entry.path().join("name")).ok()?;
        (found.trim() == name).then(|| std::path::Path::new("/dev").join(entry.file_name()))
    })
}

/// A stream socket to the host's (CID 2) vsock `port`, non-blocking once connected.
fn vsock_connect(port: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor we just created and own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_vm is plain data; all-zero is a valid start.
    let mut address: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    address.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    address.svm_cid = libc::VMADDR_CID_HOST;
    address.svm_port = port;
    // SAFETY: the address is a sockaddr_vm of the size passed, alive for the call.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&address as *const libc::sockaddr_vm).cast(),
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    set_nonblocking(&fd)?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_from_the_command_line() {
        assert_eq!(
            Device::parse("virtio-serial:cairn.channel"),
            Some(Device::Port("cairn.channel".into()))
        );
        assert_eq!(Device::parse("vsock:1024"), Some(Device::Vsock(1024)));
        assert_eq!(Device::parse("virtio-serial:"), None);
        assert_eq!(Device::parse("vsock:lots"), None);
        assert_eq!(Device::parse("tcp:1.2.3.4:5"), None);
    }

    #[tokio::test]
    async fn an_fd_stream_carries_a_handshake() {
        let (a, b) = UnixStream::pair().expect("pair");
        a.set_nonblocking(true).expect("nonblocking");
        let mut guest_end = FdStream::new(OwnedFd::from(a)).expect("registers");
        b.set_nonblocking(true).expect("nonblocking");
        let mut host_end = tokio::net::UnixStream::from_std(b).expect("registers");
        let host =
            tokio::spawn(async move { handshake::host(&mut host_end).await.map(|()| host_end) });
        handshake::guest(&mut guest_end).await.expect("guest side");
        host.await.expect("joins").expect("host side");
    }
}
