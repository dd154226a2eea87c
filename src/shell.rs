//! `cairn shell`'s host end: a process in the VM through the running control plane's
//! `run/shell.sock`, each connection of which is a shell stream of the guest agent's channel
//! (cairn-channel's [`shell`](cairn_channel::shell) frames; no TCP port anywhere).
//!
//! Interactive, the local terminal goes raw for the session (every key, Ctrl-C included, is a
//! byte for the guest's own terminal, whose line discipline acts on it), its size follows
//! SIGWINCH, and it is put back however the session ends. With pipes, standard input, output
//! and error are carried as bytes, and the exit code comes back as the guest's process gave it.
//! Plain threads: standard input is a blocking read that nothing could cancel anyway.

use std::io::{IsTerminal, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use cairn_channel::shell::{Decoder, Frame, Request, Tty, MAX_PAYLOAD};

use crate::Error;

/// What `cairn shell` runs and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// The program and its arguments; empty: root's login shell.
    pub argv: Vec<String>,
    /// A terminal in the guest: `Some(true)` always, `Some(false)` never, `None` when no
    /// program is named and standard input is a terminal (as ssh decides).
    pub tty: Option<bool>,
}

/// Runs a session through `socket`; the guest process's exit code.
pub fn run(socket: &Path, options: Options) -> Result<i32, Error> {
    let stdin_is_terminal = std::io::stdin().is_terminal();
    let tty = options.tty.unwrap_or(options.argv.is_empty() && stdin_is_terminal);
    let stream = UnixStream::connect(socket).map_err(|e| Error::io(socket, e))?;
    let writer = Arc::new(Mutex::new(stream.try_clone().map_err(|e| Error::io(socket, e))?));
    let request = Request {
        argv: options.argv,
        tty: tty.then(|| {
            let (rows, cols) = terminal_size().unwrap_or((24, 80));
            Tty { rows, cols, term: std::env::var("TERM").unwrap_or_default() }
        }),
    };
    send(&writer, &Frame::Start(request)).map_err(|e| Error::io(socket, e))?;
    // Put back when this function returns, whatever ends the session.
    let _raw = if tty && stdin_is_terminal { RawTerminal::enter() } else { None };
    forward_stdin(writer.clone());
    if tty {
        follow_window_size(writer);
    }
    let (mut stdout, mut stderr) = (std::io::stdout().lock(), std::io::stderr().lock());
    receive(stream, socket, &mut stdout, &mut stderr)
}

/// Writes one frame; the stdin and window threads share the socket's write side.
fn send(writer: &Mutex<UnixStream>, frame: &Frame) -> std::io::Result<()> {
    writer.lock().unwrap_or_else(PoisonError::into_inner).write_all(&frame.encode())
}

/// Standard input as frames, then its end, on a thread of its own.
fn forward_stdin(writer: Arc<Mutex<UnixStream>>) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; MAX_PAYLOAD];
        loop {
            let frame = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => Frame::StdinEnd,
                Ok(n) => Frame::Stdin(buf[..n].to_vec()),
            };
            let last = frame == Frame::StdinEnd;
            if send(&writer, &frame).is_err() || last {
                return;
            }
        }
    });
}

/// The terminal's size as a Resize frame each time SIGWINCH says it changed.
fn follow_window_size(writer: Arc<Mutex<UnixStream>>) {
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return;
        };
        runtime.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut changes) = signal(SignalKind::window_change()) else { return };
            while changes.recv().await.is_some() {
                let Some((rows, cols)) = terminal_size() else { continue };
                if send(&writer, &Frame::Resize { rows, cols }).is_err() {
                    return;
                }
            }
        });
    });
}

/// Hands what the guest's process writes to `out` and `err` until its exit code comes.
fn receive(
    mut stream: UnixStream,
    socket: &Path,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<i32, Error> {
    let mut decoder = Decoder::default();
    let mut buf = vec![0u8; MAX_PAYLOAD];
    loop {
        while let Some(frame) =
            decoder.next_frame().map_err(|e| Error::ShellCut(format!("the guest sent {e}")))?
        {
            match frame {
                Frame::Stdout(data) => write_out(out, &data)?,
                Frame::Stderr(data) => write_out(err, &data)?,
                Frame::Exit(code) => return Ok(code),
                Frame::Failed(why) => return Err(Error::ShellFailed(why)),
                // The host's own frames never come back.
                _ => {}
            }
        }
        match stream.read(&mut buf) {
            Ok(0) => {
                return Err(Error::ShellCut("the VM's end closed before the process ended".into()))
            }
            Ok(n) => decoder.push(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(Error::ShellCut("the process did not end in time".into()))
            }
            Err(e) => return Err(Error::io(socket, e)),
        }
    }
}

fn write_out(to: &mut dyn Write, data: &[u8]) -> Result<(), Error> {
    // A reader that went away (`cairn shell -- cat big | head`) ends the session as a
    // pipe would.
    to.write_all(data).and_then(|()| to.flush()).map_err(|e| Error::io(Path::new("output"), e))
}

/// What a command run with [`capture`] gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs `argv` in the VM without a terminal, with nothing on its standard input, and collects
/// its output (for `cairn diagnose`); gives up after `within`.
pub fn capture(
    socket: &Path,
    argv: &[&str],
    within: std::time::Duration,
) -> Result<Captured, Error> {
    let mut stream = UnixStream::connect(socket).map_err(|e| Error::io(socket, e))?;
    stream.set_read_timeout(Some(within)).map_err(|e| Error::io(socket, e))?;
    let request = Request { argv: argv.iter().map(|a| (*a).to_owned()).collect(), tty: None };
    let mut hello = Frame::Start(request).encode();
    hello.extend(Frame::StdinEnd.encode());
    stream.write_all(&hello).map_err(|e| Error::io(socket, e))?;
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let code = receive(stream, socket, &mut stdout, &mut stderr)?;
    Ok(Captured { code, stdout, stderr })
}

/// The size of the terminal on standard output, or else standard input.
fn terminal_size() -> Option<(u16, u16)> {
    let size = rustix::termios::tcgetwinsize(std::io::stdout())
        .or_else(|_| rustix::termios::tcgetwinsize(std::io::stdin()))
        .ok()?;
    (size.ws_row > 0 && size.ws_col > 0).then_some((size.ws_row, size.ws_col))
}

/// Standard input's terminal in raw mode, put back as it was when dropped.
struct RawTerminal {
    saved: rustix::termios::Termios,
}

impl RawTerminal {
    fn enter() -> Option<RawTerminal> {
        use rustix::termios::{tcgetattr, tcsetattr, OptionalActions};
        let saved = tcgetattr(std::io::stdin()).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(std::io::stdin(), OptionalActions::Now, &raw).ok()?;
        Some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        use rustix::termios::{tcsetattr, OptionalActions};
        let _ = tcsetattr(std::io::stdin(), OptionalActions::Now, &self.saved);
    }
}
