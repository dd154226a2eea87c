//! The agent's part in published ports (see cairn_channel::ports): it relays the port proxies'
//! publish requests to the control plane, and carries the host's forwarded connections to the
//! containers.
//!
//! The proxies are processes of their own (dockerd starts one per published port), and the
//! channel is the agent's alone, so they reach it through a unix socket in /run/cairn, which is
//! root's and in no container's mount namespace.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use cairn_channel::ports::{self, Answer, Binding, Proto};
use cairn_channel::{Service, Session};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::say;

/// Where the port proxies reach the agent.
pub const LOCAL_SOCKET: &str = "/run/cairn/ports.sock";

/// How long a publish request waits for a session (the control plane may be restarting).
const WAIT_FOR_SESSION: Duration = Duration::from_secs(5);

/// Serves [`LOCAL_SOCKET`]: each connection is one proxy's publish stream, relayed to the
/// control plane for as long as both ends keep it.
pub async fn serve_local(sessions: watch::Receiver<Option<Session>>) {
    let listener = match bind_local() {
        Ok(listener) => listener,
        Err(e) => {
            say(&format!("ports: {LOCAL_SOCKET}: {e}; published ports stay in the guest"));
            return;
        }
    };
    loop {
        let Ok((local, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        tokio::spawn(relay_publish(local, sessions.clone()));
    }
}

fn bind_local() -> std::io::Result<tokio::net::UnixListener> {
    let path = std::path::Path::new(LOCAL_SOCKET);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

async fn relay_publish(
    mut local: tokio::net::UnixStream,
    mut sessions: watch::Receiver<Option<Session>>,
) {
    let service = match Service::receive(&mut local).await {
        Ok(service)
            if service.name == ports::PUBLISH && Binding::from_service(&service).is_some() =>
        {
            service
        }
        _ => return refuse(&mut local, "not a publish request".into()).await,
    };
    let session = tokio::time::timeout(WAIT_FOR_SESSION, async {
        loop {
            if let Some(session) = sessions.borrow_and_update().clone().filter(|s| !s.is_closed()) {
                return Some(session);
            }
            sessions.changed().await.ok()?;
        }
    })
    .await;
    let Ok(Some(session)) = session else {
        return refuse(&mut local, "no session with the control plane".into()).await;
    };
    match session.open(&service).await {
        Ok(mut stream) => {
            // Ends when the proxy exits (its port is unpublished) or the session ends.
            let _ = tokio::io::copy_bidirectional(&mut local, &mut stream).await;
        }
        Err(e) => refuse(&mut local, format!("opening a publish stream: {e}")).await,
    }
}

async fn refuse(local: &mut tokio::net::UnixStream, why: String) {
    let _ = local.write_all(Answer::Refused(why).line().as_bytes()).await;
}

/// Serves a forward stream the host opened: one connection (or one peer's datagrams) to a
/// container's address.
pub async fn serve_forward(service: Service, mut stream: cairn_channel::Stream) {
    let Some((proto, target)) = ports::forward_target(&service) else {
        say(&format!("ports: a forward stream with a bad header {:?}", service.args));
        return;
    };
    let result = match proto {
        Proto::Tcp => forward_tcp(&mut stream, target).await,
        Proto::Udp => forward_udp(&mut stream, target).await,
    };
    if let Err(e) = result {
        // The stream is dropped: the host's peer sees its connection closed.
        tracing::debug!(error = %e, %target, "a forwarded connection");
    }
}

async fn forward_tcp(
    stream: &mut cairn_channel::Stream,
    target: SocketAddr,
) -> std::io::Result<()> {
    let mut container = tokio::net::TcpStream::connect(target).await?;
    container.set_nodelay(true)?;
    tokio::io::copy_bidirectional(stream, &mut container).await.map(|_| ())
}

/// How long a UDP flow without traffic in either direction lives.
const UDP_IDLE: Duration = Duration::from_secs(120);

async fn forward_udp(
    stream: &mut cairn_channel::Stream,
    target: SocketAddr,
) -> std::io::Result<()> {
    let any: SocketAddr = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
        .parse()
        .map_err(|_| std::io::Error::other("an address"))?;
    let socket = tokio::net::UdpSocket::bind(any).await?;
    socket.connect(target).await?;
    let (mut from_host, mut to_host) = tokio::io::split(stream);
    let mut inbound = Vec::new();
    let mut outbound = vec![0u8; ports::MAX_DATAGRAM];
    loop {
        tokio::select! {
            frame = ports::read_datagram(&mut from_host, &mut inbound) => {
                let Some(n) = frame? else { return Ok(()) };
                socket.send(&inbound[..n]).await?;
            }
            received = socket.recv(&mut outbound) => match received {
                Ok(n) => ports::write_datagram(&mut to_host, &outbound[..n]).await?,
                // The container's port is closed (an ICMP error came back): UDP says nothing.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(e),
            },
            () = tokio::time::sleep(UDP_IDLE) => return Ok(()),
        }
    }
}
