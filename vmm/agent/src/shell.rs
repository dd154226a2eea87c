//! `cairn shell` in the guest: one process per [`SERVICE`](cairn_channel::shell::SERVICE)
//! stream, in the agent's own namespaces (the VM's, not a container's), as root.
//!
//! With a terminal the process gets a pseudo-terminal of its own and leads a new session on it,
//! so the guest's line discipline does what a terminal does: Ctrl-C (a byte from the host's
//! raw terminal) interrupts the foreground job, a new size raises SIGWINCH, job control works.
//! Without one it gets three pipes, binary-safe, so that `cairn shell -- tar -c ... | tar -x`
//! carries exact bytes. Either way it is started through the agent's child registry (PID 1's
//! reaper must not take its exit status), its code is the stream's last frame, and a host that
//! goes away hangs its session up.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn_channel::shell::{exit_code, Decoder, Frame, Request, Tty, MAX_PAYLOAD};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::fd_stream::{set_nonblocking, FdStream};

/// PATH for the shell's programs: the system disk's and busybox's.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// root's home, made when first needed (the initramfs has none).
const HOME: &str = "/root";
/// After the process has ended, its output is read until its pipes close, or until they have
/// been quiet this long (a background job it left may hold them open for ever).
const DRAIN_QUIET: Duration = Duration::from_millis(250);
/// After the host went away, how long a hung-up session has before it is killed.
const HANGUP_GRACE: Duration = Duration::from_secs(2);

/// Serves one shell stream: reads the request, runs it, relays until it ends.
pub async fn serve<S>(stream: S)
where
    S: tokio::io::AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut from_host, to_host) = tokio::io::split(stream);
    let (frames, outbox) = mpsc::channel::<Frame>(16);
    let writer = tokio::spawn(write_frames(to_host, outbox));
    let mut decoder = Decoder::default();
    let request = loop {
        match next_frame(&mut from_host, &mut decoder).await {
            Some(Frame::Start(request)) => break request,
            Some(_) => continue,
            None => return,
        }
    };
    let session = match Session::start(&request) {
        Ok(session) => session,
        Err(why) => {
            let _ = frames.send(Frame::Failed(why)).await;
            drop(frames);
            let _ = writer.await;
            return;
        }
    };
    session.run(from_host, decoder, frames).await;
    let _ = writer.await;
}

/// Reads until a whole frame is there; `None` when the stream ended or broke.
async fn next_frame<R: tokio::io::AsyncRead + Unpin>(
    from: &mut R,
    decoder: &mut Decoder,
) -> Option<Frame> {
    let mut buf = vec![0u8; MAX_PAYLOAD];
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => return Some(frame),
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(error = %e, "a shell stream");
                return None;
            }
        }
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => decoder.push(&buf[..n]),
        }
    }
}

/// Writes each frame as it comes; ends when every sender is gone.
async fn write_frames<W: AsyncWrite + Unpin>(mut to: W, mut outbox: mpsc::Receiver<Frame>) {
    while let Some(frame) = outbox.recv().await {
        if to.write_all(&frame.encode()).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

/// A started process and the host ends of its standard streams.
struct Session {
    child: Child,
    /// Its standard input: the pipe, or the terminal's master side.
    input: Option<FdStream>,
    /// Its output: (the pipe or the terminal's master, whether it is standard error).
    outputs: Vec<(FdStream, bool)>,
    /// The terminal's master side, for its size.
    terminal: Option<OwnedFd>,
}

impl Session {
    fn start(request: &Request) -> Result<Session, String> {
        let _ = std::fs::create_dir_all(HOME);
        let (program, args): (&str, &[String]) = match request.argv.split_first() {
            Some((program, args)) => (program, args),
            None => ("/bin/sh", &[]),
        };
        let mut command = Command::new(program);
        command.args(args);
        if request.argv.is_empty() {
            // A login shell, as `ssh` and `limactl shell` give.
            command.arg0("-sh");
        }
        command
            .current_dir(HOME)
            .env_clear()
            .env("PATH", PATH)
            .env("HOME", HOME)
            .env("USER", "root")
            .env("LOGNAME", "root")
            .env("SHELL", "/bin/sh")
            .env("PS1", "\\h:\\w# ");
        crate::power::default_signals(&mut command);
        let started = match &request.tty {
            Some(tty) => Session::with_terminal(command, tty),
            None => Session::with_pipes(command),
        };
        started.map_err(|e| format!("{program}: {e}"))
    }

    fn with_terminal(mut command: Command, tty: &Tty) -> std::io::Result<Session> {
        let (master, slave) = open_pty(tty.rows, tty.cols)?;
        command
            .env("TERM", if tty.term.is_empty() { "vt100" } else { &tty.term })
            .stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave));
        // SAFETY: between fork and exec the closure calls only setsid(2) and ioctl(2), which
        // are async-signal-safe, on the child's own standard input.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        // The slave's copies in `command` are closed when it is dropped, after the spawn, so
        // that the master reads EIO once the session's last process has let go of it.
        let child = crate::children::spawn(&mut command)?;
        drop(command);
        set_nonblocking(&master)?;
        let input = FdStream::new(master.try_clone()?)?;
        let output = FdStream::new(master.try_clone()?)?;
        Ok(Session {
            child,
            input: Some(input),
            outputs: vec![(output, false)],
            terminal: Some(master),
        })
    }

    fn with_pipes(mut command: Command) -> std::io::Result<Session> {
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        // A session of its own, so that a host that goes away can hang up all of it.
        // SAFETY: setsid(2) is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = crate::children::spawn(&mut command)?;
        let missing = || std::io::Error::other("a standard stream was not piped");
        let stream = |fd: OwnedFd| -> std::io::Result<FdStream> {
            set_nonblocking(&fd)?;
            FdStream::new(fd)
        };
        let input = stream(OwnedFd::from(child.stdin.take().ok_or_else(missing)?))?;
        let stdout = stream(OwnedFd::from(child.stdout.take().ok_or_else(missing)?))?;
        let stderr = stream(OwnedFd::from(child.stderr.take().ok_or_else(missing)?))?;
        Ok(Session {
            child,
            input: Some(input),
            outputs: vec![(stdout, false), (stderr, true)],
            terminal: None,
        })
    }

    /// Relays until the process has ended and its output is read; the exit code goes last.
    async fn run<R: tokio::io::AsyncRead + Unpin>(
        self,
        mut from_host: R,
        mut decoder: Decoder,
        frames: mpsc::Sender<Frame>,
    ) {
        let Session { mut child, mut input, outputs, terminal } = self;
        let pid = child.id();
        let (exited_tx, mut exited) = oneshot::channel();
        std::thread::spawn(move || {
            let code = crate::children::wait(&mut child).map_or(1, exit_code);
            let _ = exited_tx.send(code);
        });
        let read = Arc::new(AtomicU64::new(0));
        let mut pumps = tokio::task::JoinSet::new();
        for (output, is_stderr) in outputs {
            pumps.spawn(pump(output, is_stderr, frames.clone(), read.clone()));
        }
        let code = loop {
            tokio::select! {
                code = &mut exited => break code.unwrap_or(1),
                frame = next_frame(&mut from_host, &mut decoder) => match frame {
                    Some(Frame::Stdin(data)) => {
                        if let Some(to) = input.as_mut() {
                            if to.write_all(&data).await.is_err() {
                                input = None;
                            }
                        }
                    }
                    // A terminal has no end of input of its own: its programs read ^D.
                    Some(Frame::StdinEnd) if terminal.is_none() => input = None,
                    Some(Frame::Resize { rows, cols }) => {
                        if let Some(master) = &terminal {
                            let _ = set_size(master, rows, cols);
                        }
                    }
                    Some(_) => {}
                    None => {
                        // The host went away: its session is hung up, then killed.
                        hang_up(pid, &mut exited).await;
                        return;
                    }
                },
            }
        };
        drop(input);
        // Everything it wrote before it ended, unless something it left keeps writing.
        loop {
            let before = read.load(Ordering::Relaxed);
            tokio::select! {
                done = pumps.join_next() => if done.is_none() { break },
                () = tokio::time::sleep(DRAIN_QUIET) => {
                    if read.load(Ordering::Relaxed) == before {
                        break;
                    }
                }
            }
        }
        pumps.abort_all();
        let _ = frames.send(Frame::Exit(code)).await;
    }
}

/// Copies one of the process's outputs into frames until it ends (EOF, or EIO from a
/// terminal whose last process let go of it).
async fn pump(
    mut from: FdStream,
    is_stderr: bool,
    frames: mpsc::Sender<Frame>,
    read: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; MAX_PAYLOAD];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        read.fetch_add(n as u64, Ordering::Relaxed);
        let data = buf[..n].to_vec();
        let frame = if is_stderr { Frame::Stderr(data) } else { Frame::Stdout(data) };
        if frames.send(frame).await.is_err() {
            return;
        }
    }
}

/// SIGHUP to the session `pid` leads, then SIGKILL if it is still there after a grace.
async fn hang_up(pid: u32, exited: &mut oneshot::Receiver<i32>) {
    let Ok(group) = libc::pid_t::try_from(pid) else { return };
    // SAFETY: kill(2) of the process group the session's leader made with setsid.
    unsafe {
        libc::kill(-group, libc::SIGHUP);
    }
    if tokio::time::timeout(HANGUP_GRACE, exited).await.is_err() {
        // SAFETY: as above.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
    }
}

/// A pseudo-terminal of `rows` x `cols`: (master, slave), both close-on-exec.
fn open_pty(rows: u16, cols: u16) -> std::io::Result<(OwnedFd, OwnedFd)> {
    let size = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty(3) writes two descriptors into the integers passed; the name is not
    // asked for, the size is read from `size`, alive for the call.
    let rc = unsafe {
        libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size)
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just opened by openpty and are ours alone.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    for fd in [&master, &slave] {
        // SAFETY: fcntl(F_SETFD) on a descriptor we own.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((master, slave))
}

/// Gives the terminal a new size; the kernel tells its foreground job (SIGWINCH).
fn set_size(master: &OwnedFd, rows: u16, cols: u16) -> std::io::Result<()> {
    let size = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one winsize, alive for the call, on a terminal we own.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `request` through a stream pair as the host would; (stdout, stderr, exit frame).
    async fn session(request: Request, stdin: &[u8]) -> (Vec<u8>, Vec<u8>, Frame) {
        let (host, guest) = tokio::io::duplex(1 << 20);
        let served = tokio::spawn(serve(guest));
        let (mut from_guest, mut to_guest) = tokio::io::split(host);
        to_guest.write_all(&Frame::Start(request).encode()).await.expect("start");
        for chunk in stdin.chunks(MAX_PAYLOAD) {
            to_guest.write_all(&Frame::Stdin(chunk.to_vec()).encode()).await.expect("stdin");
        }
        to_guest.write_all(&Frame::StdinEnd.encode()).await.expect("end");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut decoder = Decoder::default();
        let last = loop {
            match next_frame(&mut from_guest, &mut decoder).await.expect("a frame") {
                Frame::Stdout(data) => out.extend(data),
                Frame::Stderr(data) => err.extend(data),
                last => break last,
            }
        };
        served.await.expect("joins");
        (out, err, last)
    }

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[tokio::test]
    async fn pipes_carry_bytes_exactly_and_the_exit_code() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let request =
            Request { argv: argv(&["sh", "-c", "cat; echo oops >&2; exit 7"]), tty: None };
        let (out, err, last) = session(request, &data).await;
        assert_eq!(out, data);
        assert_eq!(err, b"oops\n");
        assert_eq!(last, Frame::Exit(7));
    }

    #[tokio::test]
    async fn a_terminal_has_the_size_asked_for() {
        let tty = Some(Tty { rows: 33, cols: 101, term: "xterm".into() });
        let request = Request { argv: argv(&["sh", "-c", "stty size; echo $TERM; tty -s"]), tty };
        let (out, _, last) = session(request, b"").await;
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("33 101"), "{text}");
        assert!(text.contains("xterm"), "{text}");
        assert_eq!(last, Frame::Exit(0), "{text}");
    }

    #[tokio::test]
    async fn a_program_that_does_not_exist_fails_by_name() {
        let request = Request { argv: argv(&["/no/such/program"]), tty: None };
        let (_, _, last) = session(request, b"").await;
        match last {
            Frame::Failed(why) => assert!(why.starts_with("/no/such/program: "), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
