//! `cairn serve`: the database over 9P, on a unix socket and optionally TCP, until interrupted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use cairn_db::Db;

use crate::Error;

/// Where to listen.
#[derive(Debug, Clone, Default)]
pub struct Listeners {
    /// A unix socket (created mode 0600).
    pub socket: Option<PathBuf>,
    /// A TCP address; port 0 picks a free port.
    pub tcp: Option<SocketAddr>,
}

/// Serves until SIGINT or SIGTERM. Prints one line per listener on stdout (`unix PATH`,
/// `tcp ADDRESS`) once it accepts connections, so that scripts can wait for it and find a
/// port chosen by the system.
pub fn run(db: Db, listeners: Listeners) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("cairn-9p")
        .build()
        .map_err(Error::Runtime)?;
    runtime.block_on(async move {
        let fs = Arc::new(cairn_9p::Fs::new(Arc::new(db)));
        // Everything that takes a descriptor is set up before the first line is printed and
        // before any listener accepts: a burst of clients at the announced port could
        // otherwise use up the descriptors while the unix socket or the signal handlers were
        // still to come, and the server would end instead of waiting for them to go.
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt()).map_err(Error::Runtime)?;
        let mut terminate = signal(SignalKind::terminate()).map_err(Error::Runtime)?;
        let tcp = match listeners.tcp {
            Some(address) => Some(bind_tcp(address).await?),
            None => None,
        };
        let unix = match &listeners.socket {
            Some(path) => Some((cairn_9p::transport::bind_unix(path)?, path)),
            None => None,
        };
        let mut tasks = tokio::task::JoinSet::new();
        if let Some((listener, bound)) = tcp {
            announce(&format!("tcp {bound}"));
            tasks.spawn(cairn_9p::transport::serve_tcp(fs.clone(), listener));
        }
        if let Some((listener, path)) = unix {
            announce(&format!("unix {}", path.display()));
            tasks.spawn(cairn_9p::transport::serve_unix_listener(fs.clone(), listener));
        }
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("interrupted"),
            _ = terminate.recv() => tracing::info!("terminated"),
            Some(done) = tasks.join_next() => {
                if let Ok(Err(e)) = done {
                    return Err(e.into());
                }
            }
        }
        Ok(())
    })
}

/// Binds the TCP listener, warning that 9P has no authentication: whoever reaches the port
/// reads and changes the configuration, other users of this host included.
async fn bind_tcp(address: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), Error> {
    if address.ip().is_loopback() {
        tracing::warn!(%address, "serving 9P on TCP, as asked: every user of this host can reach it; the unix socket is private to you");
    } else {
        tracing::warn!(%address, "serving 9P beyond loopback, as asked: anyone who reaches it can change the configuration");
    }
    let listen_err = |source| Error::Listen { address: address.to_string(), source };
    let listener = tokio::net::TcpListener::bind(address).await.map_err(listen_err)?;
    let bound = listener.local_addr().map_err(listen_err)?;
    Ok((listener, bound))
}

/// Prints a listener's line for scripts. A reader that went away is no reason to stop
/// serving (println! would panic on the closed pipe).
fn announce(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// The 9P server for `cairn up`, on its own threads: the unix socket at `socket` for the
/// host's own tools, and the filesystem that the guest reaches through the channel (qemu) or
/// the native VMM's virtio-9p device. No network listener: any user of the host could reach
/// one. SIGINT, SIGTERM and SIGHUP call `on_stop`. The thread ends with the process.
pub fn spawn_for_vm(
    db: Arc<Db>,
    socket: &std::path::Path,
    on_stop: Box<dyn Fn() + Send>,
) -> Result<VmServer, Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("cairn-9p")
        .build()
        .map_err(Error::Runtime)?;
    let fs = Arc::new(cairn_9p::Fs::new(db));
    let unix = {
        let _guard = runtime.enter();
        cairn_9p::transport::bind_unix(socket)?
    };
    let handle = runtime.handle().clone();
    let served = fs.clone();
    let thread = std::thread::Builder::new()
        .name("cairn-9p".into())
        .spawn(move || {
            runtime.block_on(async move {
                tokio::spawn(cairn_9p::transport::serve_unix_listener(fs, unix));
                use tokio::signal::unix::{signal, SignalKind};
                let signals = signal(SignalKind::terminate())
                    .and_then(|t| Ok((t, signal(SignalKind::hangup())?)));
                let Ok((mut terminate, mut hangup)) = signals else {
                    return std::future::pending().await;
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                    _ = hangup.recv() => {}
                }
                on_stop();
                // Keep serving while the control loop stops the VM.
                std::future::pending::<()>().await
            })
        })
        .map_err(Error::Runtime)?;
    Ok(VmServer { fs: served, runtime: handle, _thread: thread })
}

/// The server `cairn up` runs: the filesystem that the guest's channel and the native VMM's
/// virtio-9p device serve, and the runtime they run on.
#[derive(Debug)]
pub struct VmServer {
    pub fs: Arc<cairn_9p::Fs>,
    pub runtime: tokio::runtime::Handle,
    _thread: std::thread::JoinHandle<()>,
}
